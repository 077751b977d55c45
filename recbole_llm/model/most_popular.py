"""MostPopular: RecBole's Pop with every training interaction counted.

RecBole's Pop counts with ``item_cnt[item] = item_cnt[item] + 1``: an item that
occurs several times in one batch is counted once, so its "popularity" is the
number of batches it appears in; popular items saturate at the batch count and
their order follows the shuffle and the batch size (RecBole issues #1844,
#2198). MostPopular (the paper's name for the baseline) counts every
interaction. RecBole's own Pop is left as RecBole ships it."""
from __future__ import annotations

import torch
from recbole.model.general_recommender import Pop

from ..registry import register_model


@register_model
class MostPopular(Pop):
    @classmethod
    def fits_in_one_pass(cls, config) -> bool:
        return True  # one counting pass, nothing to early-stop

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.max_cnt = torch.ones(1, dtype=self.item_cnt.dtype)  # before counting (RecBole's FLOPs probe)

    def calculate_loss(self, interaction):
        item = interaction[self.ITEM_ID].long()
        ones = torch.ones(len(item), 1, dtype=self.item_cnt.dtype, device=self.item_cnt.device)
        self.item_cnt.index_add_(0, item, ones)
        self.max_cnt = torch.max(self.item_cnt, dim=0)[0]
        return torch.nn.Parameter(torch.zeros(1)).to(self.device)
