"""The reproduction report: models x seeds under the temporal protocol.

    python -m recbole_llm report --dataset beauty --models SASRec LLM2SASRec Pop ... --seeds 1 2 3 --out DIR

Each (model, seed) runs in its own process and leaves ``<label>__seed<s>.json``
(metrics, seconds per epoch, checkpoint) and ``.npz`` (per test session: rank of
the target, popularity of the prompt's last item, and the target's rank when
the prompt is cut so that an earlier position is its last item). A finished run
is never recomputed; a run that stops mid-training goes on from its last validated
epoch (``<label>__seed<s>.resume.pth``, removed once the run is complete). From those files
the report writes ``results.csv``, ``leaderboard.md`` (mean ± std over seeds,
sorted by NDCG@20) and PNG plots.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import yaml

METRICS = [
    "ndcg@10", "ndcg@20", "hit@10", "hit@20", "mrr@10", "mrr@20", "catalogcoverage@10", "catalogcoverage@20",
    "serendipity@10", "serendipity@20", "novelty@10", "novelty@20", "intralistdiversity@10", "intralistdiversity@20",
]
CUT_POSITIONS = (1, 2, 3, 4, 5)  # 1: the real last item; p: the prompt ends p-1 items earlier
POPULARITY_BINS = 5


def parse_model_spec(spec: str) -> tuple[str, str, dict]:
    """``Label=Model[key=value,key=value]`` | ``Model[...]`` | ``Model`` -> (label, model, overrides)."""
    match = re.fullmatch(r"(?:([\w.+-]+)=)?(\w+)(?:\[(.*)\])?", spec)
    if not match:
        raise ValueError(f"bad model spec {spec!r}: use Model, Model[key=value,...] or Label=Model[...]")
    label, model, body = match.groups()
    overrides = {}
    for item in filter(None, _top_level_items(body or "")):
        key, value = item.split("=", 1)
        overrides[key.strip()] = yaml.safe_load(value)
    return label or model, model, overrides


def _top_level_items(body: str) -> list[str]:
    """``a=1,b={x: 1, y: 2}`` -> ['a=1', 'b={x: 1, y: 2}']: commas inside braces/brackets stay."""
    items, depth, current = [], 0, ""
    for char in body:
        depth += char in "{["
        depth -= char in "}]"
        if char == "," and depth == 0:
            items.append(current)
            current = ""
        else:
            current += char
    return items + [current]


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
                    target_score = scores.gather(1, target[ok].unsqueeze(1))
                    rank[ok] = (scores >= target_score).sum(1)  # ties count against the target
                ranks[p].append(rank.cpu().numpy())
    out = {f"rank_cut{p}": np.concatenate(r) for p, r in ranks.items()}
    out["last_item_popularity"] = np.concatenate(last_pop)
    out["prompt_length"] = np.concatenate(lengths)
    return out


@contextmanager
def shuffled_prompts(model, seed: int = 0):
    """Score every prompt with its items in a random order: the order test of LLM-SRec
    (a model that uses the order loses accuracy; one that treats the prompt as a set does not)."""
    import torch

    original = model.full_sort_predict
    generator = torch.Generator().manual_seed(seed)

    def shuffled(interaction):
        seq, lengths = interaction[model.ITEM_SEQ], interaction[model.ITEM_SEQ_LEN]
        keys = torch.rand(seq.shape, generator=generator)
        keys[torch.arange(seq.shape[1]).unsqueeze(0) >= lengths.cpu().unsqueeze(1)] = 2.0  # padding stays last
        interaction.interaction[model.ITEM_SEQ] = seq.gather(1, keys.argsort(dim=1).to(seq.device))
        return original(interaction)

    model.full_sort_predict = shuffled
    try:
        yield model
    finally:
        del model.full_sort_predict


def run_single(model_name: str, dataset_name: str, seed: int, out: Path, overrides: dict | None = None,
               threads: int = 1, data_path: str | None = None, config_files_: list | None = None) -> dict:
    """Train and evaluate one (model, seed); write ``out`` (.json) and its .npz."""
    import torch

    torch.set_num_threads(threads)
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import init_logger, init_seed

    from .quick_start import config_files, prepare_dataset
    from .registry import get_model, get_trainer

    config_dict = {"seed": seed, "show_progress": False, "state": "INFO", **(overrides or {})}
    if data_path:
        config_dict["data_path"] = data_path
    files = config_files(config_files_, model_name, dataset_name)
    prepare_dataset(model_name, dataset_name, files, config_dict)
    config = Config(model=model_name, dataset=dataset_name, config_file_list=files, config_dict=config_dict)
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    started = time.perf_counter()
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    init_seconds = time.perf_counter() - started
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    out = Path(out)
    resume_file = out.with_suffix(".resume.pth")
    progress = {"epoch_seconds": [], "train_loss": [], "valid_curve": [], "wall_before": 0.0,
                "resumed_at_epoch": None}
    if resume_file.exists():
        progress = _restore_training(trainer, train_data, resume_file)
    epoch_seconds, train_loss = progress["epoch_seconds"], progress["train_loss"]
    train_epoch = trainer._train_epoch

    def timed_epoch(*args, **kwargs):
        t = time.perf_counter()
        loss = train_epoch(*args, **kwargs)
        epoch_seconds.append(time.perf_counter() - t)
        train_loss.append(float(sum(loss) if isinstance(loss, tuple) else loss))
        return loss

    def save_progress(epoch, score):
        wall = progress["wall_before"] + time.perf_counter() - started
        progress.setdefault("valid_curve", []).append({"epoch": epoch, "valid_score": float(score),
                                                      "wall_seconds": round(wall, 1)})
        _save_training(trainer, train_data, resume_file, epoch, {
            **progress, "wall_before": progress["wall_before"] + time.perf_counter() - started})

    trainer._train_epoch = timed_epoch
    resumable = getattr(model, "needs_training", True)  # fitted-once models have no epochs to go on from
    _, valid_result = trainer.fit(train_data, valid_data, saved=True, show_progress=False,
                                  callback_fn=save_progress if resumable else None)
    t = time.perf_counter()
    test_result = trainer.evaluate(test_data, load_best_model=True, show_progress=False)
    eval_seconds = time.perf_counter() - t
    # per-session analysis needs the prompt (general models such as Pop score users) and rescores the test
    # set five times: skipped for models whose every score is an LLM call
    model = trainer.model
    analysis = None
    if hasattr(model, "ITEM_SEQ") and not getattr(model, "expensive_scoring", False):
        analysis = session_analysis(model, test_data, train_data._dataset,
                                    mask_prompts=bool(config["exclude_session_items"]))
    details = model.evaluation_arrays() if hasattr(model, "evaluation_arrays") else {}
    if details:
        analysis = {**(analysis or {}), **details}
    result = {
        "model": model_name, "dataset": dataset_name, "seed": seed, "overrides": overrides or {},
        "valid": {k: float(v) for k, v in (valid_result or {}).items()},
        "test": {k: float(v) for k, v in test_result.items()},
        "epochs": len(epoch_seconds), "train_loss": train_loss,
        "sec_per_epoch": float(np.mean(epoch_seconds)) if epoch_seconds else 0.0,
        "init_seconds": init_seconds, "eval_seconds": eval_seconds,
        "wall_seconds": progress["wall_before"] + time.perf_counter() - started,
        "checkpoint": trainer.saved_model_file, "test_sessions": len(test_data.dataset.inter_feat),
        "valid_curve": progress.get("valid_curve", []),  # validation score and wall time after each epoch
    }
    if progress["resumed_at_epoch"] is not None:
        result["resumed_at_epoch"] = progress["resumed_at_epoch"]
    out.parent.mkdir(parents=True, exist_ok=True)
    if analysis is not None:
        np.savez_compressed(out.with_suffix(".npz"), **analysis)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(out)  # the JSON last: its presence means the run is complete
    resume_file.unlink(missing_ok=True)
    return result


def _save_training(trainer, train_data, path: Path, epoch: int, progress: dict) -> None:
    """After each validated epoch: RecBole's checkpoint fields (what its ``resume_checkpoint`` reads), plus
    what it leaves out but an exact continuation needs: the best result so far, where the best checkpoint
    is, and every random generator."""
    import random

    import torch

    state = {
        "config": trainer.config, "epoch": epoch, "cur_step": trainer.cur_step,
        "best_valid_score": trainer.best_valid_score, "state_dict": trainer.model.state_dict(),
        "other_parameter": trainer.model.other_parameter(), "optimizer": trainer.optimizer.state_dict(),
        "best_valid_result": trainer.best_valid_result, "best_checkpoint": trainer.saved_model_file,
        "progress": progress,
        "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
                "loader": train_data.generator.get_state()},
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def _restore_training(trainer, train_data, path: Path) -> dict:
    """Load what ``_save_training`` wrote into a fresh trainer; returns the saved progress."""
    import random

    import torch

    trainer.resume_checkpoint(path)  # model, optimizer, start epoch, early-stopping counters
    state = torch.load(path, map_location=trainer.device, weights_only=False)
    trainer.best_valid_result = state["best_valid_result"]
    trainer.saved_model_file = state["best_checkpoint"]  # resume_checkpoint pointed it at the resume file
    if trainer.cur_step > trainer.stopping_step:  # it had early-stopped: only the test evaluation was left
        trainer.start_epoch = trainer.epochs
    if trainer.start_epoch >= trainer.epochs:  # fit() then saves the model as is over the best checkpoint
        best = torch.load(trainer.saved_model_file, map_location=trainer.device, weights_only=False)
        trainer.model.load_state_dict(best["state_dict"])
    torch.set_rng_state(state["rng"]["torch"])
    np.random.set_state(state["rng"]["numpy"])
    random.setstate(state["rng"]["python"])
    train_data.generator.set_state(state["rng"]["loader"])
    return {**state["progress"], "resumed_at_epoch": state["epoch"] + 1}


def run_plan(out_dir: Path, dataset: str, specs: list[str], seeds: list[int], common: dict | None = None,
             threads: int = 1, data_path: str | None = None) -> None:
    """Run every missing (spec, seed), each in a subprocess, showing progress for the whole plan."""
    from tqdm.auto import tqdm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(seed, spec) for seed in seeds for spec in specs]
    with tqdm(total=len(jobs), desc="report plan") as bar:
        for seed, spec in jobs:
            label, model, overrides = parse_model_spec(spec)
            target = out_dir / f"{label}__seed{seed}.json"
            bar.set_postfix_str(f"{label} seed {seed}")
            if not target.exists():
                settings = {**(common or {}), **overrides}
                command = [sys.executable, "-m", "recbole_llm", "run-one", "--model", model, "--dataset", dataset,
                           "--seed", str(seed), "--out", str(target), "--threads", str(threads),
                           "--overrides", json.dumps(settings)]
                if data_path:
                    command += ["--data_path", str(data_path)]
                with open(target.with_suffix(".log"), "a") as log:  # a resumed run keeps its earlier log
                    code = subprocess.call(command, stdout=log, stderr=subprocess.STDOUT)
                if code != 0:
                    tqdm.write(f"{label} seed {seed} failed (exit {code}); see {target.with_suffix('.log')}")
            bar.update(1)


def load_runs(out_dir: Path) -> list[dict]:
    runs = []
    for file in sorted(Path(out_dir).glob("*__seed*.json")):
        run = json.loads(file.read_text())
        run["label"] = file.name.split("__seed")[0]
        npz = file.with_suffix(".npz")
        run["sessions"] = dict(np.load(npz)) if npz.exists() else None
        runs.append(run)
    return runs


def has_session_ranks(run: dict) -> bool:
    """Whether a loaded run kept per-session target ranks (runs saved before ranks were kept, and models scored
    only by LLM calls, have none)."""
    return run["sessions"] is not None and "rank_cut1" in run["sessions"]


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
        raise ValueError(f"paired runs must score the same sessions in the same seeds: {ranks_a.shape} vs "
                         f"{ranks_b.shape}")
    diff = (ndcg_per_session(ranks_a, k) - ndcg_per_session(ranks_b, k)).mean(axis=0)
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(samples, len(diff)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(diff.mean()), float(low), float(high)


def _fmt(values) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{np.mean(values):.4f} ± {np.std(values, ddof=1):.4f}"


def write_tables(runs: list[dict], out_dir: Path) -> str:
    import pandas as pd

    rows = [{"model": r["label"], "seed": r["seed"], **r["test"], "sec_per_epoch": r["sec_per_epoch"],
             "epochs": r["epochs"], "eval_seconds": r["eval_seconds"], "wall_seconds": r["wall_seconds"]}
            for r in runs]
    frame = pd.DataFrame(rows)
    frame.to_csv(out_dir / "results.csv", index=False)
    labels = sorted({r["label"] for r in runs},
                    key=lambda m: -np.mean([r["test"]["ndcg@20"] for r in runs if r["label"] == m]))
    header = ["model", "seeds", "test sessions"] + [m.replace("catalogcoverage", "coverage").replace(
        "intralistdiversity", "ILD") for m in METRICS]
    header.append("s/epoch")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label in labels:
        mine = [r for r in runs if r["label"] == label]
        sessions = sorted({str(r.get("test_sessions", "-")) for r in mine})
        cells = [label, str(len(mine)), "/".join(sessions)] + [_fmt([r["test"].get(m) for r in mine]) for m in METRICS]
        cells.append(f"{np.mean([r['sec_per_epoch'] for r in mine]):.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    (out_dir / "leaderboard.md").write_text(
        "# Leaderboard (test split, mean ± std over seeds, sorted by NDCG@20)\n\n"
        "Models whose every score is an LLM call are evaluated on a seeded sample of the test sessions "
        "(`test sessions` column); compare them with care.\n\n" + table + "\n")
    return table


MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")


def series_style(index: int) -> dict:
    """Colour and marker of the index-th series: 20 distinct combinations (tab20 colours, 10 markers)."""
    import matplotlib

    return {"color": matplotlib.colormaps["tab20"](index % 20), "marker": MARKERS[index % len(MARKERS)]}


def _finish(fig, ax, xlabel: str, ylabel: str, path: Path) -> Path:
    """Label, put the legend outside the data, save and close one plot."""
    import matplotlib.pyplot as plt

    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def write_hallucination_plots(runs: list[dict], out_dir: Path) -> list[Path]:
    """For LLMSeqPrompt runs: a table of hallucination figures per run (a two-bar chart says less), and a
    histogram of how close each hallucinated title was to the catalog item it was mapped to."""
    import matplotlib.pyplot as plt

    prompt_runs = [r for r in runs if "hallucination_rate" in r["test"]]
    if not prompt_runs:
        return []
    labels = sorted({r["label"] for r in prompt_runs})
    lines = ["| run | seeds | hallucination rate | unique recommendations | mean mapped similarity |",
             "|---|---|---|---|---|"]
    for label in labels:
        mine = [r["test"] for r in prompt_runs if r["label"] == label]
        lines.append(f"| {label} | {len(mine)} | {_mean_std([m.get('hallucination_rate') for m in mine])} | "
                     f"{_mean_std([m.get('unique_recommendations') for m in mine])} | "
                     f"{_mean_std([m.get('mean_mapped_similarity') for m in mine])} |")
    path_table = out_dir / "llmseqprompt_hallucination.md"
    path_table.write_text("\n".join(lines) + "\n")
    fig, ax = plt.subplots(figsize=(7, 4))
    for index, label in enumerate(labels):
        values = [r["sessions"]["mapped_similarity"] for r in prompt_runs
                  if r["label"] == label and r["sessions"] is not None and "mapped_similarity" in r["sessions"]]
        if values and len(np.concatenate(values)):
            ax.hist(np.concatenate(values), bins=20, range=(0, 1), alpha=0.6, label=label,
                    color=series_style(index)["color"])
    path_sim = _finish(fig, ax, "cosine similarity of a hallucinated title to its mapped catalog item",
                       "generated titles", out_dir / "llmseqprompt_mapped_similarity.png")
    return [path_table, path_sim]


def _seed_curves(with_sessions: list[dict], label: str, values_of) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std over the label's seeds of a per-run curve."""
    curves = np.array([values_of(r["sessions"]) for r in with_sessions if r["label"] == label], dtype=float)
    std = np.nanstd(curves, axis=0, ddof=1) if len(curves) > 1 else np.zeros(curves.shape[1])
    return np.nanmean(curves, axis=0), std


def write_plots(runs: list[dict], out_dir: Path, k: int = 20) -> list[Path]:
    """Hit rate by popularity of the prompt's last item, and by cut position (mean over seeds, error bars: the
    std over seeds); LLMSeqPrompt's hallucinations."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = write_hallucination_plots(runs, out_dir)
    with_sessions = [r for r in runs if has_session_ranks(r)]
    if not with_sessions:
        return paths
    labels = sorted({r["label"] for r in with_sessions})
    pop = with_sessions[0]["sessions"]["last_item_popularity"]
    edges = np.unique(np.quantile(pop, np.linspace(0, 1, POPULARITY_BINS + 1)))
    n_bins = len(edges) - 1

    def bins_of(sessions):
        return np.clip(np.searchsorted(edges, sessions["last_item_popularity"], side="right") - 1, 0, n_bins - 1)

    def by_popularity(sessions):
        hit, bins = hits_per_session(sessions["rank_cut1"], k), bins_of(sessions)
        return [hit[bins == b].mean() if (bins == b).any() else np.nan for b in range(n_bins)]

    counts = np.bincount(bins_of(with_sessions[0]["sessions"]), minlength=n_bins)
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for index, label in enumerate(labels):
        mean, std = _seed_curves(with_sessions, label, by_popularity)
        ax.errorbar(range(n_bins), mean, yerr=std, capsize=3, label=label, **series_style(index))
    ax.set_xticks(range(n_bins), [f"{edges[b]:.0f}-{edges[b + 1]:.0f}\nn={counts[b]}" for b in range(n_bins)])
    paths.append(_finish(fig, ax, "training popularity of the prompt's last item (quantile bins; n sessions)",
                         f"HR@{k}", out_dir / "hit_rate_by_last_item_popularity.png"))

    def by_position(sessions):
        values = []
        for p in CUT_POSITIONS:
            rank = sessions[f"rank_cut{p}"]
            values.append(hits_per_session(rank, k).sum() / max((rank >= 1).sum(), 1))
        return values

    cut_counts = [int((with_sessions[0]["sessions"][f"rank_cut{p}"] >= 1).sum()) for p in CUT_POSITIONS]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for index, label in enumerate(labels):
        mean, std = _seed_curves(with_sessions, label, by_position)
        ax.errorbar(CUT_POSITIONS, mean, yerr=std, capsize=3, label=label, **series_style(index))
    ax.set_xticks(CUT_POSITIONS, [f"{p}\nn={n}" for p, n in zip(CUT_POSITIONS, cut_counts)])
    paths.append(_finish(fig, ax, "position treated as the prompt's last item (1 = the real last item; n sessions)",
                         f"HR@{k} of the true next item", out_dir / "hit_rate_by_last_position.png"))
    return paths


def _mean_std(values: list[float]) -> str:
    """One run (or identical runs): the value; several: mean ± std."""
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    if len(values) == 1 or np.ptp(values) == 0:
        return f"{values[0]:.4f}"
    return f"{np.mean(values):.4f} ± {np.std(values, ddof=1):.4f}"


def paper_table(runs: list[dict], reference: dict, alternative: list[dict] | None = None,
                alternative_name: str = "alternative") -> str:
    """Our test figures at k = 20 beside the paper's (``reference``: model -> name, ndcg, hit, coverage), with
    our/paper NDCG@20, in the paper's order; ``alternative`` runs add one NDCG@20 column (e.g. shuffled ties)."""
    header = ["model (paper's row)", "seeds", "NDCG@20", "paper", "ours/paper", "HR@20", "paper",
              "CatCov@20", "paper"]
    if alternative is not None:
        header.append(f"NDCG@20, {alternative_name}")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for model, ref in reference.items():
        mine = [r for r in runs if r["label"] == model]
        ndcg = [r["test"]["ndcg@20"] for r in mine]
        cells = [f"{model} ({ref['name']})", str(len(mine)), _mean_std(ndcg), f"{ref['ndcg']:.3f}",
                 f"{np.mean(ndcg) / ref['ndcg']:.2f}" if mine else "-",
                 _mean_std([r["test"]["hit@20"] for r in mine]), f"{ref['hit']:.3f}",
                 _mean_std([r["test"]["catalogcoverage@20"] for r in mine]), f"{ref['coverage']:.3f}"]
        if alternative is not None:
            cells.append(_mean_std([r["test"]["ndcg@20"] for r in alternative if r["label"] == model]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def build_report(out_dir: Path) -> str:
    out_dir = Path(out_dir)
    runs = load_runs(out_dir)
    if not runs:
        raise FileNotFoundError(f"no finished runs in {out_dir}")
    table = write_tables(runs, out_dir)
    write_plots(runs, out_dir)
    return table
