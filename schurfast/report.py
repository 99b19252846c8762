"""Tables, figures and a plain-words report from the stored results of a protocol run.

:func:`build_report` reads ``results.parquet``, ``models.parquet``, ``spectra.parquet`` and
``manifest.json`` from a run directory and (re)writes ``summary.md``, ``report.md`` and
``figures/*.png`` there. Across seeds a value is shown as mean +- SEM (sample standard deviation
with ddof=1 over sqrt(n); no SEM for a single seed). Matched-norm controls are pooled over seeds
and draws and shown as median [5%, 95%].
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from schurfast.ablation import BLOCKS

logger = logging.getLogger(__name__)

FIGURES = ("copy_accuracy_vs_mass.png", "block_effects.png", "eigenvalue_moduli.png")


def reference_alpha(alphas) -> float:
    """The threshold the per-block tables use: 0.9 when it was run, else the middle one."""
    alphas = sorted(set(float(a) for a in alphas))
    for a in alphas:
        if abs(a - 0.9) < 1e-12:
            return a
    return alphas[len(alphas) // 2]


def _mean_sem(values, fmt: str = "{:.3g}") -> str:
    v = pd.Series(values, dtype=float).dropna()
    if v.empty:
        return "n/a"
    if len(v) == 1:
        return fmt.format(v.iloc[0])
    return f"{fmt.format(v.mean())} ± {fmt.format(v.std(ddof=1) / np.sqrt(len(v)))}"


def _quantiles(values, fmt: str = "{:.3g}") -> str:
    v = pd.Series(values, dtype=float).dropna()
    if v.empty:
        return "n/a"
    lo, med, hi = np.quantile(v.to_numpy(), [0.05, 0.5, 0.95])
    return f"{fmt.format(med)} [{fmt.format(lo)}, {fmt.format(hi)}]"


def _n_R(values) -> str:
    v = pd.Series(values).astype(int)
    lo, hi = v.min(), v.max()
    return f"{lo}" if lo == hi else f"{v.mean():.1f} ({lo}-{hi})"


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _groups(results: pd.DataFrame) -> list[tuple[str, str]]:
    """(task, construction) pairs in the order they appear."""
    return list(dict.fromkeys(zip(results["task"], results["construction"], strict=True)))


def _group_rows(results: pd.DataFrame, alpha: float):
    """(task, construction, rows at threshold alpha) for every group, in order."""
    for task, construction in _groups(results):
        part = results[
            (results["task"] == task)
            & (results["construction"] == construction)
            & (results["alpha"] == alpha)
        ]
        yield task, construction, part


def copy_threshold_table(results: pd.DataFrame) -> str | None:
    """alpha x construction: n_R, and replay accuracy intact, without N_CC, without N_RC."""
    copy = results[(results["task"] == "copy") & (results["kind"] == "ablation")]
    if copy.empty:
        return None
    rows = []
    for alpha in sorted(copy["alpha"].unique()):
        for construction in dict.fromkeys(copy["construction"]):
            part = copy[(copy["alpha"] == alpha) & (copy["construction"] == construction)]

            def acc(subset, part=part):
                return _mean_sem(part.loc[part["subset"] == subset, "metric"], "{:.4f}")

            n_R = _n_R(part.loc[part["subset"] == "none", "n_R"])
            rows.append([f"{alpha:g}", construction, n_R, acc("none"), acc("CC"), acc("RC")])
    return _markdown(["alpha", "construction", "n_R", "full", "-CC", "-RC"], rows)


def block_table(results: pd.DataFrame, alpha: float) -> str:
    """Per task and construction, per single block: Delta and S, against matched-norm controls."""
    rows = []
    for task, construction, part in _group_rows(results, alpha):
        metric = part["metric_name"].iloc[0]
        for block in BLOCKS:
            abl = part[(part["kind"] == "ablation") & (part["subset"] == block)]
            ctl = part[(part["kind"] == "control") & (part["subset"] == block)]
            rows.append(
                [
                    task,
                    construction,
                    metric,
                    block,
                    _n_R(abl["n_R"]),
                    _mean_sem(abl["mass"]),
                    _mean_sem(abl["delta"]),
                    _mean_sem(abl["S"]),
                    _quantiles(ctl["delta"]),
                ]
            )
    header = [
        "task",
        "construction",
        "metric",
        "block",
        "n_R",
        "mass removed",
        "Δ metric",
        "S",
        "control Δ median [5%, 95%]",
    ]
    return _markdown(header, rows)


def copy_subset_table(results: pd.DataFrame, alpha: float) -> str | None:
    """Copy replay accuracy for all 8 subsets at one threshold, per construction."""
    copy = results[
        (results["task"] == "copy") & (results["kind"] == "ablation") & (results["alpha"] == alpha)
    ]
    if copy.empty:
        return None
    rows = []
    for construction in dict.fromkeys(copy["construction"]):
        part = copy[copy["construction"] == construction]
        for subset in dict.fromkeys(part["subset"]):
            s = part[part["subset"] == subset]
            rows.append(
                [
                    construction,
                    subset,
                    _mean_sem(s["mass"]),
                    _mean_sem(s["metric"], "{:.4f}"),
                    _mean_sem(s["delta"]),
                    _mean_sem(s["S"]),
                ]
            )
    return _markdown(
        ["construction", "subset", "mass removed", "accuracy", "Δ accuracy", "S"], rows
    )


def models_table(models: pd.DataFrame) -> str:
    """The models of a run (rows of ``models.parquet``) as a markdown table."""
    rows = []
    for r in models.itertuples():
        solved = getattr(r, "solved", None)
        solved = "n/a" if solved is None or pd.isna(solved) else ("yes" if solved else "no")
        held = getattr(r, "heldout_metric", None)
        held = "n/a" if held is None or pd.isna(held) else f"{held:.4f}"
        steps = getattr(r, "steps", None)
        steps = "n/a" if steps is None or pd.isna(steps) else str(int(steps))
        rows.append(
            [
                r.task,
                r.construction,
                r.hidden_size,
                r.seed,
                steps,
                held,
                solved,
                f"{r.rho:.4f}",
                r.schur_status,
            ]
        )
    header = [
        "task",
        "construction",
        "H",
        "seed",
        "steps",
        "held-out metric",
        "solved (copy)",
        "rho",
        "Schur status",
    ]
    return _markdown(header, rows)


def _figure_copy(results: pd.DataFrame, alpha: float, path: Path) -> bool:
    import matplotlib.pyplot as plt

    copy = results[
        (results["task"] == "copy") & (results["kind"] == "ablation") & (results["alpha"] == alpha)
    ]
    if copy.empty:
        return False
    constructions = list(dict.fromkeys(copy["construction"]))
    subsets = list(dict.fromkeys(copy["subset"]))
    colors = dict(zip(subsets, plt.cm.tab10(np.arange(len(subsets))), strict=True))
    fig, axes = plt.subplots(
        1, len(constructions), figsize=(3.2 * len(constructions), 3.2), sharey=True, squeeze=False
    )
    for ax, construction in zip(axes[0], constructions, strict=True):
        part = copy[copy["construction"] == construction]
        # a thin line joins each subset to the same subset with N_CC also removed
        for seed in part["seed"].unique():
            by = part[part["seed"] == seed].set_index("subset")
            for base in ("none", "RR", "RC", "RR+RC"):
                plus = "CC" if base == "none" else base + "+CC"
                if base in by.index and plus in by.index:
                    ax.plot(
                        [by.at[base, "mass"], by.at[plus, "mass"]],
                        [by.at[base, "metric"], by.at[plus, "metric"]],
                        color="0.6",
                        lw=0.8,
                        zorder=1,
                    )
        for subset in subsets:
            s = part[part["subset"] == subset]
            ax.scatter(s["mass"], s["metric"], s=18, color=colors[subset], label=subset, zorder=2)
        ax.axhline(0.5, color="0.8", ls=":", lw=0.8)
        ax.set_title(construction, fontsize=9)
        ax.set_xlabel("Schur mass removed", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0, 0].set_ylabel(f"copy accuracy (alpha={alpha:g})", fontsize=8)
    axes[0, -1].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return True


def _figure_blocks(results: pd.DataFrame, alpha: float, path: Path) -> None:
    import matplotlib.pyplot as plt

    groups = _groups(results)
    fig, axes = plt.subplots(2, len(groups), figsize=(2.1 * len(groups) + 0.6, 4.4), squeeze=False)
    x = np.arange(len(BLOCKS))
    for k, (task, construction) in enumerate(groups):
        part = results[
            (results["task"] == task)
            & (results["construction"] == construction)
            & (results["alpha"] == alpha)
        ]
        for row, column in enumerate(("delta", "S")):
            ax = axes[row, k]
            mean, sem, med, lo, hi = [], [], [], [], []
            for block in BLOCKS:
                a = part[(part["kind"] == "ablation") & (part["subset"] == block)][column]
                a = a.dropna()
                mean.append(a.mean() if len(a) else np.nan)
                sem.append(a.std(ddof=1) / np.sqrt(len(a)) if len(a) > 1 else 0.0)
                c = part[(part["kind"] == "control") & (part["subset"] == block)][column]
                c = c.dropna().to_numpy()
                q = np.quantile(c, [0.05, 0.5, 0.95]) if len(c) else [np.nan] * 3
                lo.append(q[0])
                med.append(q[1])
                hi.append(q[2])
            ax.bar(
                x - 0.17,
                mean,
                0.34,
                yerr=sem,
                color="tab:blue",
                capsize=2,
                label="ablation (mean ± SEM)",
            )
            med, lo, hi = map(np.asarray, (med, lo, hi))
            ax.errorbar(
                x + 0.17,
                med,
                yerr=[med - lo, hi - med],
                fmt="o",
                color="k",
                ms=3,
                capsize=2,
                label="control (median, 5-95%)",
            )
            ax.axhline(0, color="0.5", lw=0.6)
            ax.set_xticks(x, BLOCKS, fontsize=7)
            ax.tick_params(labelsize=7)
            if row == 0:
                ax.set_title(f"{task}\n{construction}", fontsize=8)
            if k == 0:
                name = "Δ metric" if column == "delta" else "S = Δ / mass"
                ax.set_ylabel(f"{name} (alpha={alpha:g})", fontsize=8)
    axes[0, -1].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _figure_moduli(spectra: pd.DataFrame, models: pd.DataFrame, alpha: float, path: Path) -> None:
    import matplotlib.pyplot as plt

    groups = list(dict.fromkeys(zip(models["task"], models["construction"], strict=True)))
    ncol = min(4, len(groups))
    nrow = -(-len(groups) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(2.8 * ncol, 2.4 * nrow), squeeze=False)
    for ax in axes.flat[len(groups) :]:
        ax.axis("off")
    for ax, (task, construction) in zip(axes.flat, groups, strict=False):
        members = models[(models["task"] == task) & (models["construction"] == construction)]
        for i, r in enumerate(members.itertuples()):
            s = spectra[spectra["model"] == r.model].sort_values("index")
            color = plt.cm.tab10(i % 10)
            ax.plot(s["index"], s["modulus"], color=color, lw=1, label=f"seed {r.seed}")
            ax.axhline(alpha * r.rho, color=color, ls="--", lw=0.7)
        ax.set_title(f"{task} {construction}", fontsize=8)
        ax.set_xlabel("index (ordered)", fontsize=7)
        ax.set_ylabel("|lambda|", fontsize=7)
        ax.tick_params(labelsize=6)
    axes[0, 0].legend(fontsize=6, title=f"dashed: {alpha:g} rho", title_fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _verdict(abl: pd.Series, ctl: pd.Series, metric: str) -> str:
    """How the ablation's mean damage compares with random changes of the same norm."""
    if ctl.empty or abl.empty:
        return "has no control to compare with"
    # damage is a drop in accuracy or a rise in FVU
    sign = -1.0 if metric == "accuracy" else 1.0
    lo, hi = np.quantile(sign * ctl.to_numpy(), [0.05, 0.95])
    damage = sign * abl.mean()
    if damage > hi:
        return "more damage than 95% of random changes of the same norm"
    if damage < lo:
        return "less damage than 95% of random changes of the same norm"
    return "damage within the 5-95% range of random changes of the same norm"


def _words(results: pd.DataFrame, models: pd.DataFrame, alpha: float) -> list[str]:
    from schurfast.protocol import MIN_MASS

    lines = []
    for task, construction, part in _group_rows(results, alpha):
        metric = part["metric_name"].iloc[0]
        intact = part[(part["kind"] == "ablation") & (part["subset"] == "none")]["metric"]
        sentence = [
            f"- **{task}, {construction}** (intact {metric} {_mean_sem(intact, '{:.4f}')}):"
        ]
        for block in BLOCKS:
            abl = part[(part["kind"] == "ablation") & (part["subset"] == block)]
            ctl = part[(part["kind"] == "control") & (part["subset"] == block)]
            if (abl["mass"] < MIN_MASS).all():
                sentence.append(f"N_{block} holds no mass (n_R = {_n_R(abl['n_R'])});")
                continue
            verdict = _verdict(abl["delta"].dropna(), ctl["delta"].dropna(), metric)
            sentence.append(
                f"removing N_{block} ({_mean_sem(abl['mass'])} of the Schur mass) changes "
                f"{metric} by {_mean_sem(abl['delta'])}: {verdict} "
                f"(control Δ {_quantiles(ctl['delta'])});"
            )
        lines.append(" ".join(sentence).rstrip(";") + ".")
    return lines


# the columns the report reads from each stored table; the numeric ones must be numbers
_COLUMNS = {
    "results.parquet": (
        ("task", "construction", "seed", "kind", "subset", "metric_name"),
        ("alpha", "n_R", "mass", "metric", "delta", "S"),
    ),
    "models.parquet": (
        ("model", "task", "construction", "hidden_size", "seed", "schur_status"),
        ("rho",),
    ),
    "spectra.parquet": (("model",), ("index", "modulus")),
}
# entries of manifest.json the report reads: JSON objects, the last three of numbers
_MANIFEST_OBJECTS = ("config", "timings_s", "units_computed", "units_reused")


def _read_run(out: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict]:
    """The stored tables and manifest of a run directory, each checked for what the report
    reads; errors name the file and what is wrong with it."""
    if not out.exists():
        raise ValueError(f"{str(out)!r} does not exist; expected a run directory")
    if not out.is_dir():
        raise ValueError(f"{str(out)!r} is not a directory; expected a run directory")
    missing = [name for name in _COLUMNS if not (out / name).is_file()]
    if missing:
        raise ValueError(f"{str(out)!r} holds no complete run: missing {', '.join(missing)}")

    tables = []
    for name, (columns, numeric) in _COLUMNS.items():
        path = out / name
        try:
            table = pd.read_parquet(path)
        except Exception as err:
            raise ValueError(f"{str(path)!r} could not be read as a table ({err})") from None
        lacking = [c for c in columns + numeric if c not in table.columns]
        if lacking:
            raise ValueError(
                f"{str(path)!r} is not a table of a run: it lacks the column(s)"
                f" {', '.join(lacking)}"
            )
        if table.empty:
            raise ValueError(f"{str(path)!r} is not a table of a run: it has no rows")
        wrong = [c for c in numeric if not pd.api.types.is_numeric_dtype(table[c])]
        if wrong:
            raise ValueError(
                f"{str(path)!r}: column(s) {', '.join(wrong)} must be numeric, got "
                + ", ".join(f"{c} of dtype {table[c].dtype}" for c in wrong)
            )
        tables.append(table)

    path = out / "manifest.json"
    if not path.is_file():
        return (*tables, {})
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{str(path)!r} is not valid JSON ({err})") from None
    if not isinstance(manifest, dict):
        raise ValueError(
            f"{str(path)!r} must hold a JSON object, got {type(manifest).__name__} {manifest!r:.60}"
        )
    for key in _MANIFEST_OBJECTS:
        entry = manifest.get(key, {})
        if not isinstance(entry, dict):
            raise ValueError(
                f"{str(path)!r}: {key} must be a JSON object, got {type(entry).__name__}"
                f" {entry!r:.60}"
            )
        if key == "config":
            continue
        bad = [k for k, v in entry.items() if isinstance(v, bool) or not isinstance(v, int | float)]
        if bad:
            raise ValueError(
                f"{str(path)!r}: {key} must map names to numbers, got {bad[0]}:"
                f" {entry[bad[0]]!r:.60}"
            )
    return (*tables, manifest)


def build_report(out: str | os.PathLike) -> Path:
    """Write ``summary.md``, ``report.md`` and ``figures/`` from a run directory's tables.

    Args:
        out: a directory written by :func:`schurfast.protocol.run` or ``ablate --out``.

    Returns:
        The path of ``report.md``.

    Raises:
        ValueError: ``out`` is not a directory or holds no results of a run, or a stored
            file (named in the message) is unreadable, lacks columns the report needs, has no
            rows, or (``manifest.json``) is not a JSON object of the expected form.
    """
    import matplotlib

    matplotlib.use("Agg")
    from schurfast.protocol import write_text

    out = Path(out)
    results, models, spectra, manifest = _read_run(out)
    alpha = reference_alpha(results["alpha"].unique())

    figures = out / "figures"
    figures.mkdir(exist_ok=True)
    has_copy = _figure_copy(results, alpha, figures / FIGURES[0])
    _figure_blocks(results, alpha, figures / FIGURES[1])
    _figure_moduli(spectra, models, alpha, figures / FIGURES[2])

    summary = ["# Summary\n"]
    threshold = copy_threshold_table(results)
    if threshold:
        summary += [
            "## Copy task: replay accuracy by threshold\n",
            "Accuracy of the intact rebuilt network (full), without N_CC (-CC) and "
            "without N_RC (-RC); n_R is the leading sector's size.\n",
            threshold,
        ]
    summary += [
        f"## Single-block ablations (alpha = {alpha:g})\n",
        "Δ metric = metric(ablated) - metric(intact): FVU (higher is worse) for the "
        "neuroscience tasks, replay accuracy (lower is worse) for copy. S = Δ / (mass "
        "removed). Mean ± SEM over seeds; control: random changes of W_hh with the "
        "same Frobenius norm, pooled over seeds and draws.\n",
        block_table(results, alpha),
    ]
    subsets = copy_subset_table(results, alpha)
    if subsets:
        summary += [f"## Copy task: all 8 subsets (alpha = {alpha:g})\n", subsets]
    summary += ["## Models\n", models_table(models)]
    write_text(out / "summary.md", "\n".join(summary))

    cfg = manifest.get("config", {})
    timings = manifest.get("timings_s", {})
    report = [
        "# Report\n",
        f"Configuration `{cfg.get('name', 'unknown')}`: {len(models)} trained network(s), "
        f"tasks {', '.join(dict.fromkeys(models['task']))}, thresholds alpha in "
        f"{sorted(results['alpha'].unique().tolist())}, {len(results)} evaluated variants "
        f"(of which {int((results['kind'] == 'control').sum())} matched-norm controls). The "
        "full configuration, versions, timings and checkpoint hashes are in `manifest.json`; "
        "every number is in `results.parquet`; the tables are in `summary.md`.\n",
    ]
    if "solved" in models and models["solved"].notna().any():
        copy = models[models["solved"].notna()]
        threshold = cfg.get("copy_solved", "the target")
        report.append(
            f"{int(copy['solved'].astype(bool).sum())} of {len(copy)} copy controllers reached "
            f"held-out replay accuracy >= {threshold} within the step budget; the others are "
            "reported as they are (see the models table in `summary.md`).\n"
        )
    report += [
        "## What each ablation does\n",
        f"At alpha = {alpha:g}, per task and construction; Δ is the change of the task metric "
        "against the intact network rebuilt from its Schur form, mean ± SEM over seeds, "
        "followed by the matched-norm control's median [5%, 95%].\n",
        *_words(results, models, alpha),
        "",
        "## Figures\n",
        "Δ and S per block with SEM bars, next to the matched-norm controls:\n",
        f"![block effects](figures/{FIGURES[1]})\n",
    ]
    if has_copy:
        report += [
            "Copy accuracy against the fraction of Schur mass removed, for all 8 subsets; "
            "grey lines join subsets that differ only by N_CC, so a flat line means removing "
            "N_CC on top changes nothing:\n",
            f"![copy accuracy](figures/{FIGURES[0]})\n",
        ]
    report += [
        "Eigenvalue moduli of every trained W_hh in Schur order; the dashed line marks "
        f"{alpha:g} rho, the edge of the leading sector R:\n",
        f"![eigenvalue moduli](figures/{FIGURES[2]})\n",
    ]
    if timings:
        parts = ", ".join(f"{k.removesuffix('_s')} {v:.1f} s" for k, v in timings.items())
        computed = sum(manifest.get("units_computed", {}).values())
        reused = sum(manifest.get("units_reused", {}).values())
        report.append(
            f"Wall time of the last run: {parts} ({computed} units computed, {reused} reused "
            "from earlier runs in this directory).\n"
        )
    path = out / "report.md"
    write_text(path, "\n".join(report))
    logger.info("report written to %s", path)
    return path


def ablate_table(results: pd.DataFrame) -> str:
    """The per-subset table of one model: Delta and S, with the matched-norm controls."""
    rows = []
    for alpha in sorted(results["alpha"].unique()):
        part = results[results["alpha"] == alpha]
        metric = part["metric_name"].iloc[0]
        for r in part[part["kind"] == "ablation"].itertuples():
            ctl = part[(part["kind"] == "control") & (part["subset"] == r.subset)]
            S = "n/a" if pd.isna(r.S) else f"{r.S:.3g}"
            rows.append(
                [
                    f"{alpha:g}",
                    r.subset,
                    r.n_R,
                    f"{r.mass:.4f}",
                    f"{r.metric:.4f}",
                    f"{r.delta:+.4f}",
                    S,
                    _quantiles(ctl["delta"], "{:+.4f}") if len(ctl) else "",
                ]
            )
    header = [
        "alpha",
        "subset",
        "n_R",
        "mass removed",
        metric,
        f"Δ {metric}",
        "S",
        "control Δ median [5%, 95%]",
    ]
    return _markdown(header, rows)
