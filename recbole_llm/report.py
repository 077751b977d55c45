"""The report: tables and plots from finished runs (``experiment`` writes them).

From a folder of ``<label>__seed<s>.json`` / ``.npz`` files it writes ``results.csv``, ``leaderboard.md``
(mean ± std over seeds, sorted by NDCG@20), the paper comparison and PNG plots.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .analysis import CUT_POSITIONS, has_session_analysis, hits_per_session, ndcg_per_session
from .errors import MissingFileError

METRICS = [
    "ndcg@10", "ndcg@20", "hit@10", "hit@20", "mrr@10", "mrr@20", "catalogcoverage@10", "catalogcoverage@20",
    "serendipity@10", "serendipity@20", "novelty@10", "novelty@20", "intralistdiversity@10", "intralistdiversity@20",
]
POPULARITY_BINS = 5


def load_runs(out_dir: Path) -> list[dict]:
    runs = []
    for file in sorted(Path(out_dir).glob("*__seed*.json")):
        if not file.name.split("__seed")[-1][:-len(".json")].isdigit():
            continue  # <label>__seed<s>.stale-<time>.json: kept, made under other settings, not a run of this table
        run = json.loads(file.read_text())
        run["label"] = file.name.split("__seed")[0]
        npz = file.with_suffix(".npz")
        run["sessions"] = dict(np.load(npz)) if npz.exists() else None
        runs.append(run)
    return runs


def provenance_of(run: dict) -> str:
    """``clean <commit>``, ``dirty <commit>`` (made from a tree with uncommitted changes) or ``none`` (made before
    runs recorded their provenance)."""
    made = run.get("provenance") or {}
    sha = (made.get("git_sha") or "")[:7]
    if not sha:
        return "none"
    return f"{'dirty' if made.get('git_dirty') else 'clean'} {sha}"


def provenance_cell(runs: list[dict]) -> str:
    """The provenance of a row's runs in one cell: ``clean abc1234`` or e.g. ``dirty 2, none 1``."""
    states = [provenance_of(r) for r in runs]
    if all(s.startswith("clean") for s in states):
        return ", ".join(sorted(set(states)))
    kinds = [s.split()[0] for s in states]
    return ", ".join(f"{kind} {kinds.count(kind)}" for kind in ("clean", "dirty", "none") if kind in kinds)


def headline_rows(runs: list[dict], unclean: dict | None) -> tuple[list[dict], list[str]]:
    """A headline table shows a row only if every run of it was made from a clean commit, or if the experiment marks
    it (``unclean: {label: reason}``); the marked rows' footnotes."""
    unclean = unclean or {}
    kept, notes = [], []
    for label in dict.fromkeys(r["label"] for r in runs):
        mine = [r for r in runs if r["label"] == label]
        if all(provenance_of(r).startswith("clean") for r in mine):
            kept += mine
        elif label in unclean:
            kept += mine
            notes.append(f"{label}†: {provenance_cell(mine)}; {unclean[label]}")
    return kept, notes


def write_tables(runs: list[dict], out_dir: Path, headline: bool = False, unclean: dict | None = None) -> str:
    """``results.csv`` and ``leaderboard.md``; ``headline``: only rows of clean runs, or rows the experiment marks."""
    import pandas as pd

    notes = []
    if headline:
        runs, notes = headline_rows(runs, unclean)

    rows = [{"model": r["label"], "seed": r["seed"], **r["test"], "sec_per_epoch": r["sec_per_epoch"],
             "epochs": r["epochs"], "eval_seconds": r["eval_seconds"], "wall_seconds": r["wall_seconds"]}
            for r in runs]
    frame = pd.DataFrame(rows)
    frame.to_csv(out_dir / "results.csv", index=False)
    labels = sorted({r["label"] for r in runs},  # ties by name: the same table from the same runs, every time
                    key=lambda m: (-np.mean([r["test"]["ndcg@20"] for r in runs if r["label"] == m]), m))
    header = ["model", "seeds", "test sessions"] + [m.replace("catalogcoverage", "coverage").replace(
        "intralistdiversity", "ILD") for m in METRICS]
    header += ["s/epoch", "eval s/session", "provenance"]
    order_test = any("test_shuffled" in r for r in runs)
    if order_test:  # report_order_test: the same sessions with every prompt's items shuffled
        header += ["NDCG@20, shuffled prompts", "change"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label in labels:
        mine = [r for r in runs if r["label"] == label]
        sessions = sorted({str(r.get("test_sessions", "-")) for r in mine})
        marked = "†" if any(note.startswith(f"{label}†") for note in notes) else ""
        cells = [label + marked, str(len(mine)), "/".join(sessions)] + [_mean_std([r["test"].get(m) for r in mine])
                                                                       for m in METRICS]
        cells.append(f"{np.mean([r['sec_per_epoch'] for r in mine]):.1f}")
        cells.append(f"{np.mean([r['eval_seconds'] / max(r.get('test_sessions') or 1, 1) for r in mine]):.3f}")
        cells.append(provenance_cell(mine))
        if order_test:
            tested = [r for r in mine if "test_shuffled" in r]
            base = np.mean([r["test"]["ndcg@20"] for r in tested]) if tested else 0.0
            shuffled = [r["test_shuffled"]["ndcg@20"] for r in tested]
            cells.append(_mean_std(shuffled))
            cells.append(f"{(np.mean(shuffled) - base) / base:+.1%}" if base else "-")
        lines.append("| " + " | ".join(cells) + " |")
    table = "\n".join(lines) + ("\n\n" + "\n".join(f"- {note}" for note in notes) if notes else "")
    (out_dir / "leaderboard.md").write_text(
        "# Leaderboard (test split, mean ± std over seeds, sorted by NDCG@20)\n\n"
        "Models whose every score is an LLM call are evaluated on a seeded sample of the test sessions "
        "(`test sessions` column); compare them with care. Provenance: the commit each run was made from "
        "(`clean`), or `dirty` (uncommitted changes) / `none` (not recorded).\n\n" + table + "\n")
    return table


MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")
PANEL_SIZE = 8  # series per panel: more lines than this in one plot cannot be told apart
ERROR_BARS = "error bars: std over seeds"


def series_style(index: int) -> dict:
    """Colour and marker of the index-th series of a panel: distinct hues (tab10) for up to ten series, then the
    markers tell the next ten apart."""
    import matplotlib

    return {"color": matplotlib.colormaps["tab10"](index % 10), "marker": MARKERS[(index // 10 + index) % len(MARKERS)]}


def panels(labels: list[str], size: int = PANEL_SIZE) -> list[list[str]]:
    """The labels in panels of at most ``size``, families kept together (labels sorted, so that variants of one
    model, which share its name, sit in one panel)."""
    labels = sorted(labels)
    count = max(1, -(-len(labels) // size))
    per = -(-len(labels) // count)
    return [labels[i:i + per] for i in range(0, len(labels), per)]


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


def _plot_panels(with_sessions, labels, xs, values_of, xticks, xlabel, ylabel, path):
    """One row of panels (at most ``PANEL_SIZE`` series each) of a per-session curve: mean over seeds, error bars the
    std over seeds."""
    import matplotlib.pyplot as plt

    groups = panels(labels)
    fig, axes = plt.subplots(len(groups), 1, figsize=(9, 4.2 * len(groups)), squeeze=False)
    for ax, group in zip(axes[:, 0], groups):
        for index, label in enumerate(group):
            mean, std = _seed_curves(with_sessions, label, values_of)
            ax.errorbar(xs, mean, yerr=std, capsize=3, label=label, **series_style(index))
        ax.set_xticks(xs, xticks)
        ax.set_ylabel(f"{ylabel}\n({ERROR_BARS})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    axes[-1, 0].set_xlabel(xlabel)
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def write_plots(runs: list[dict], out_dir: Path, k: int = 20) -> list[Path]:
    """HR@k and NDCG@k by popularity of the prompt's last item, HR@k by cut position (mean over seeds, error bars:
    the std over seeds; panels of at most 8 models); LLMSeqPrompt's hallucinations."""
    import matplotlib

    matplotlib.use("Agg")

    paths = write_hallucination_plots(runs, out_dir)
    with_sessions = [r for r in runs if has_session_analysis(r)]
    if not with_sessions:
        return paths
    labels = sorted({r["label"] for r in with_sessions})
    pop = with_sessions[0]["sessions"]["last_item_popularity"]
    edges = np.unique(np.quantile(pop, np.linspace(0, 1, POPULARITY_BINS + 1)))
    n_bins = len(edges) - 1

    def bins_of(sessions):
        return np.clip(np.searchsorted(edges, sessions["last_item_popularity"], side="right") - 1, 0, n_bins - 1)

    def by_popularity(per_session):
        def values(sessions):
            scores, bins = per_session(sessions["rank_cut1"], k), bins_of(sessions)
            return [scores[bins == b].mean() if (bins == b).any() else np.nan for b in range(n_bins)]
        return values

    counts = np.bincount(bins_of(with_sessions[0]["sessions"]), minlength=n_bins)
    ticks = [f"{edges[b]:.0f}-{edges[b + 1]:.0f}\nn={counts[b]}" for b in range(n_bins)]
    xlabel = "training popularity of the prompt's last item (quantile bins; n sessions)"
    paths.append(_plot_panels(with_sessions, labels, list(range(n_bins)), by_popularity(hits_per_session), ticks,
                              xlabel, f"HR@{k}", out_dir / "hit_rate_by_last_item_popularity.png"))
    paths.append(_plot_panels(with_sessions, labels, list(range(n_bins)), by_popularity(ndcg_per_session), ticks,
                              xlabel, f"NDCG@{k}", out_dir / "ndcg_by_last_item_popularity.png"))

    def by_position(sessions):
        values = []
        for p in CUT_POSITIONS:
            rank = sessions[f"rank_cut{p}"]
            values.append(hits_per_session(rank, k).sum() / max((rank >= 1).sum(), 1))
        return values

    cut_counts = [int((with_sessions[0]["sessions"][f"rank_cut{p}"] >= 1).sum()) for p in CUT_POSITIONS]
    paths.append(_plot_panels(with_sessions, labels, CUT_POSITIONS, by_position,
                              [f"{p}\nn={n}" for p, n in zip(CUT_POSITIONS, cut_counts)],
                              "position treated as the prompt's last item (1 = the real last item; n sessions)",
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
                alternative_name: str = "alternative", marked: set | None = None) -> str:
    """Our test figures at k = 20 beside the paper's (``reference``: model -> name, ndcg, hit, coverage), with
    our/paper NDCG@20, in the paper's order; ``alternative`` runs add one NDCG@20 column (e.g. shuffled ties)."""
    header = ["model (paper's row)", "seeds", "NDCG@20", "paper", "ours/paper", "HR@20", "paper",
              "CatCov@20", "paper", "provenance"]
    if alternative is not None:
        header.append(f"NDCG@20, {alternative_name}")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    ours = [label for label in dict.fromkeys(r["label"] for r in runs) if label not in reference]
    rows = list(reference.items()) + [(label, None) for label in sorted(ours)]  # ours without a paper row: last
    for model, ref in rows:
        mine = [r for r in runs if r["label"] == model]
        ndcg = [r["test"]["ndcg@20"] for r in mine]
        paper = (lambda key: f"{ref[key]:.3f}") if ref else (lambda key: "-")
        mark = "†" if model in (marked or ()) else ""
        cells = [f"{model}{mark} ({ref['name']})" if ref else f"{model}{mark} (-)", str(len(mine)), _mean_std(ndcg),
                 paper("ndcg"), f"{np.mean(ndcg) / ref['ndcg']:.2f}" if mine and ref else "-",
                 _mean_std([r["test"]["hit@20"] for r in mine]), paper("hit"),
                 _mean_std([r["test"]["catalogcoverage@20"] for r in mine]), paper("coverage"),
                 provenance_cell(mine) if mine else "-"]
        if alternative is not None:
            cells.append(_mean_std([r["test"]["ndcg@20"] for r in alternative if r["label"] == model]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_convergence(runs: list[dict], out_dir: Path, reference: str | None = None) -> str | None:
    """``convergence.md``: for runs with a validation curve (score and wall time after each epoch), seconds per
    training epoch, epochs, best validation score, and the first epoch (and wall time) at which each run reaches
    a validation level, with each run's ratio to the first row. The level: the best score of the ``reference`` run
    (an experiment's ``convergence_reference`` label, first row; a run that never reaches it says so), else the
    lowest of the runs' best scores, a level every run reaches."""
    curves = [r for r in runs if len(r.get("valid_curve") or []) > 1]  # trained runs (a one-pass fit has one point)
    if len(curves) < 2:
        return None
    best = {id(r): max(c["valid_score"] for c in r["valid_curve"]) for r in curves}
    anchor = [r for r in curves if r["label"] == reference]
    if reference is not None and not anchor:
        raise MissingFileError(f"convergence_reference {reference!r}: no finished run with that label in {out_dir}")
    level = min(best[id(r)] for r in anchor) if anchor else min(best.values())
    title = (f"Validation level: the best score of {reference}: {level:.4f}" if anchor else
             f"Validation level every run reaches (the lowest best score): {level:.4f}")
    lines = [title, "",
             "| run | seed | s/epoch (training) | epochs | best valid | first epoch at the level | wall s to the level "
             "| s/epoch ratio | wall ratio |", "|---|---|---|---|---|---|---|---|---|"]
    first = None
    for r in sorted(curves, key=lambda r: (r["label"] != reference, r["label"], r["seed"])):
        reach = next((c for c in r["valid_curve"] if c["valid_score"] >= level), None)
        first = first or (r["sec_per_epoch"], reach["wall_seconds"])
        reached = (f"{reach['epoch']} | {reach['wall_seconds']:.0f}" if reach else "never | -")
        wall_ratio = f"{reach['wall_seconds'] / first[1]:.3f}" if reach else "-"
        lines.append(f"| {r['label']} | {r['seed']} | {r['sec_per_epoch']:.1f} | {r['epochs']} | "
                     f"{best[id(r)]:.4f} | {reached} | {r['sec_per_epoch'] / first[0]:.3f} | {wall_ratio} |")
    text = "\n".join(lines)
    (Path(out_dir) / "convergence.md").write_text(text + "\n")
    return text


def write_fold_table(runs: list[dict], out_dir: Path, metric: str = "ndcg@20") -> str | None:
    """``folds.md``: each candidate (a label without its ``-fold<k>``) by its mean over the temporal folds of
    ``metric``. A run with ``temporal_fold`` set validates and "tests" on the fold's later bin, so every figure
    here is a validation figure: this is the table to choose on. A candidate missing a fold has no mean."""
    import re

    folded = [r for r in runs if r.get("overrides", {}).get("temporal_fold") is not None]
    if not folded:
        return None
    scores: dict[str, dict[int, list[float]]] = {}
    for r in folded:
        candidate = re.sub(r"-fold\d+$", "", r["label"])
        scores.setdefault(candidate, {}).setdefault(int(r["overrides"]["temporal_fold"]), []).append(r["test"][metric])
    folds = sorted({f for per_fold in scores.values() for f in per_fold})
    means = {c: float(np.mean([np.mean(per_fold[f]) for f in folds])) if all(f in per_fold for f in folds) else None
             for c, per_fold in scores.items()}
    order = sorted(scores, key=lambda c: (means[c] is None, -(means[c] or 0.0), c))
    lines = [f"| candidate | {' | '.join(f'fold {f}' for f in folds)} | mean |", "|---|" + "---|" * (len(folds) + 1)]
    for candidate in order:
        cells = [f"{np.mean(scores[candidate][f]):.4f}" if f in scores[candidate] else "-" for f in folds]
        m = means[candidate]
        lines.append(f"| {candidate} | {' | '.join(cells)} | {'-' if m is None else f'{m:.4f}'} |")
    table = "\n".join(lines)
    (Path(out_dir) / "folds.md").write_text(
        f"# Validation {metric.upper()} on the temporal folds, best mean first\n\n"
        "Each run trains on a fold's earlier sessions and is scored on its later bin: validation figures, never "
        "the test split. Choose on the mean.\n\n" + table + "\n")
    return table


def build_report(out_dir: Path, headline: bool = False, unclean: dict | None = None,
                 convergence_reference: str | None = None) -> str:
    out_dir = Path(out_dir)
    runs = load_runs(out_dir)
    if not runs:
        raise MissingFileError(f"no finished runs in {out_dir}")
    table = write_tables(runs, out_dir, headline, unclean)
    if headline:  # the plots show what the headline table shows
        runs, _ = headline_rows(runs, unclean)
    write_plots(runs, out_dir)
    write_convergence(runs, out_dir, convergence_reference)
    write_fold_table(runs, out_dir)
    return table


def write_paper_comparison(experiment: dict, command: str) -> str:
    """``leaderboard.md`` of an experiment with a ``paper`` table: our rows beside the paper's, in the paper's
    order, with each ``compare`` folder as one more NDCG@20 column and the ``notes`` appended."""
    import yaml

    out = Path(experiment["out"])
    reference = yaml.safe_load(Path(experiment["paper"]).read_text())
    runs, notes = load_runs(out), []
    if experiment.get("headline"):
        runs, notes = headline_rows(runs, experiment.get("unclean"))
    table = paper_table(runs, reference, marked={note.split("†")[0] for note in notes})
    for name, folder in experiment["compare"].items():
        other = load_runs(folder) if Path(folder).exists() else []
        labels = set(reference) | {r["label"] for r in runs}
        table = _add_column(table, name, {label: _mean_std([r["test"]["ndcg@20"] for r in other if r["label"] == label])
                                          for label in labels})
    sessions = sorted({str(r.get("test_sessions")) for r in runs})
    notes_text = Path(experiment["notes"]).read_text() if experiment.get("notes") else ""
    text = (f"# {experiment.get('title') or experiment['dataset']}\n\nRebuild: `{command} --tables_only` (runs: the "
            f"same without `--tables_only`). Test split, {'/'.join(sessions)} sessions; `ours/paper` compares "
            f"NDCG@20; trained rows are mean ± std over seeds (`seeds`), one-pass models one run.\n\n"
            f"{table}\n\n" + "".join(f"- {note}\n" for note in notes) + f"\n{notes_text}")
    (out / "leaderboard.md").write_text(text)
    return text


def _add_column(table: str, name: str, values: dict) -> str:
    lines = table.splitlines()
    lines[0] += f" NDCG@20, {name} |"
    lines[1] += "---|"
    for i, line in enumerate(lines[2:], start=2):
        label = line.split("|")[1].strip().split(" (")[0]
        lines[i] += f" {values.get(label, '-')} |"
    return "\n".join(lines)
