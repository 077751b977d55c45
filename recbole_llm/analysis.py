"""Per-session analysis of a trained model: target ranks with full and cut prompts, the order test
(shuffled prompts) and the paired bootstrap over test sessions. The report saves what ``session_analysis``
returns beside each run and plots it; the benchmarks compare runs with ``paired_bootstrap``."""
from __future__ import annotations

from contextlib import contextmanager

import numpy as np

from .errors import SettingError

CUT_POSITIONS = (1, 2, 3, 4, 5)  # 1: the real last item; p: the prompt ends p-1 items earlier


def session_analysis(model, test_data, dataset, k: int = 20, mask_prompts: bool = False) -> dict[str, np.ndarray]:
    """Per evaluated session: target rank with the full prompt and with cut prompts,
    and the training popularity of the prompt's last item. ``mask_prompts``: the
    protocol's prompt masking (the whole prompt for the full prompt, as the
    trainer; the cut prompt's items for a cut one)."""
    import torch

    from .data.protocol import mask_prompt_items

    prompts = getattr(test_data._dataset, "session_prompt_items", None) if mask_prompts else None

    pop = np.zeros(dataset.item_num)
    for item, count in getattr(dataset, "train_item_counter", dataset.item_counter).items():
        pop[int(item)] = count
    seq_field, len_field, item_field = model.ITEM_SEQ, model.ITEM_SEQ_LEN, model.ITEM_ID
    ranks = {p: [] for p in CUT_POSITIONS}
    last_pop, lengths = [], []
    model.eval()
    with torch.no_grad():
        for batch in test_data:
            interaction = batch[0].to(model.device)
            seq, length, target = interaction[seq_field], interaction[len_field], interaction[item_field]
            last = seq.gather(1, (length - 1).unsqueeze(1)).squeeze(1)
            last_pop.append(pop[last.cpu().numpy()])
            lengths.append(length.cpu().numpy())
            for p in CUT_POSITIONS:
                cut = (length - (p - 1)).clamp_min(0)
                rank = torch.full_like(length, -1)
                ok = cut >= 1
                if ok.any():
                    positions = torch.arange(seq.shape[1], device=seq.device).unsqueeze(0)
                    cut_seq = torch.where(positions < cut.unsqueeze(1), seq, torch.zeros_like(seq))
                    part = interaction[ok.nonzero().squeeze(1)]
                    part.interaction[seq_field] = cut_seq[ok]
                    part.interaction[len_field] = cut[ok]
                    scores = model.full_sort_predict(part).reshape(int(ok.sum()), -1).clone()
                    if prompts is not None and p == 1:
                        mask_prompt_items(scores, part[model.USER_ID], prompts)
                    elif mask_prompts:
                        scores.scatter_(1, cut_seq[ok], -torch.inf)
                    scores[:, 0] = -torch.inf
                    rank[ok] = target_ranks(scores, target[ok])
                ranks[p].append(rank.cpu().numpy())
    out = {f"rank_cut{p}": np.concatenate(r) for p, r in ranks.items()}
    out["last_item_popularity"] = np.concatenate(last_pop)
    out["prompt_length"] = np.concatenate(lengths)
    return out


def shuffle_items(seq, lengths, generator):
    """Each row's first ``length`` items in a random order (drawn from ``generator``), padding kept last."""
    import torch

    keys = torch.rand(seq.shape, generator=generator)
    keys[torch.arange(seq.shape[1]).unsqueeze(0) >= lengths.cpu().unsqueeze(1)] = 2.0  # padding stays last
    return seq.gather(1, keys.argsort(dim=1).to(seq.device))


@contextmanager
def shuffled_prompts(model, seed: int = 0):
    """Score every prompt with its items in a random order: the order test of LLM-SRec
    (a model that uses the order loses accuracy; one that treats the prompt as a set does not)."""
    import torch

    original = model.full_sort_predict
    generator = torch.Generator().manual_seed(seed)

    def shuffled(interaction):
        seq, lengths = interaction[model.ITEM_SEQ], interaction[model.ITEM_SEQ_LEN]
        interaction.interaction[model.ITEM_SEQ] = shuffle_items(seq, lengths, generator)
        return original(interaction)

    model.full_sort_predict = shuffled
    try:
        yield model
    finally:
        del model.full_sort_predict


def target_ranks(scores, targets):
    """Each row's 1-based rank of its target item; an item scored equal to the target counts above it, so a rank
    never depends on how ties happen to be ordered (the one convention of every run's per-session ranks)."""
    targets = targets.to(scores.device).reshape(-1, 1)
    return (scores >= scores.gather(1, targets)).sum(1)


def has_session_analysis(run: dict) -> bool:
    """Whether a loaded run kept the per-session analysis (target ranks with the full and the cut prompts, the
    popularity of the prompt's last item). Runs saved before it was kept have none; models scored only by LLM calls
    keep only ``rank_cut1``, the ranks of their one scoring pass (enough for a paired bootstrap)."""
    return run["sessions"] is not None and "last_item_popularity" in run["sessions"]


def hits_per_session(ranks: np.ndarray, k: int = 20) -> np.ndarray:
    """Whether each session's target is in the top k, from its saved 1-based rank (-1: the prompt was too short
    for that cut, so no rank)."""
    ranks = np.asarray(ranks)
    return (ranks >= 1) & (ranks <= k)


def ndcg_per_session(ranks: np.ndarray, k: int = 20) -> np.ndarray:
    """NDCG@k of each session from the target's 1-based rank (one relevant item)."""
    ranks = np.asarray(ranks)
    hit = hits_per_session(ranks, k)
    return np.where(hit, 1.0 / np.log2(np.where(hit, ranks, 1) + 1.0), 0.0)


def paired_bootstrap(ranks_a: np.ndarray, ranks_b: np.ndarray, k: int = 20, samples: int = 2000,
                     seed: int = 0) -> tuple[float, float, float]:
    """Mean NDCG@k difference a - b over the same test sessions, with a 95% percentile interval from
    resampling sessions. It measures how much a gap owes to which sessions were tested, not to training
    randomness (that is what several seeds are for).

    Ranks may be one run each (sessions,) or several paired seeds (seeds, sessions): every seed scores the same
    test sessions, so a resampled session is taken in all seeds at once and the interval is that of the
    seed-averaged gap."""
    ranks_a, ranks_b = np.atleast_2d(ranks_a), np.atleast_2d(ranks_b)
    if ranks_a.shape != ranks_b.shape:
        raise SettingError(f"paired runs must score the same sessions in the same seeds: {ranks_a.shape} vs "
                         f"{ranks_b.shape}")
    diff = (ndcg_per_session(ranks_a, k) - ndcg_per_session(ranks_b, k)).mean(axis=0)
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(samples, len(diff)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(diff.mean()), float(low), float(high)
