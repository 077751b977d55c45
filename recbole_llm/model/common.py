"""Small pieces shared by several models."""
from __future__ import annotations

import copy


class SharesHelpersOnCopy:
    """RecBole deep-copies a model once to count its FLOPs. Helpers named in
    ``shared_on_copy`` (a loaded LLM, open caches) are shared by the copy
    instead of duplicated."""

    shared_on_copy: tuple[str, ...] = ()

    def __deepcopy__(self, memo):
        for name in self.shared_on_copy:
            helper = self.__dict__.get(name)
            if helper is not None:
                memo[id(helper)] = helper
        clone = self.__class__.__new__(self.__class__)
        memo[id(self)] = clone
        clone.__dict__.update(copy.deepcopy(self.__dict__, memo))
        return clone


class ScoresFromFullSort:
    """``predict`` (score of given items) for models whose natural output is the full-catalog ranking."""

    def predict(self, interaction):
        scores = self.full_sort_predict(interaction)
        return scores.gather(1, interaction[self.ITEM_ID].unsqueeze(1)).squeeze(1)
