"""The label-budget sweep's outputs: a CSV of every run, a markdown table and a plot."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure  # not pyplot: no global figure state, no display backend

EVALUATORS = ("linear probe", "kNN")
SUPERVISED = "supervised"  # the baseline's evaluator and model name in the table
SUPERVISED_LABEL = "supervised baseline\n(trained end to end\non the same labels)"


def markdown_table(table: pd.DataFrame) -> str:
    """Test accuracy in %, mean ± std over seeds: a row per (model, evaluator), a column per budget."""
    table = table.assign(budget=table["labels_per_class"].astype(str))
    budgets = list(dict.fromkeys(table["budget"]))
    summary = table.groupby(
        ["model", "evaluator", "budget"], sort=False
    )["test_acc"].agg(["mean", "std", "count"])
    lines = ["| model | evaluator | " + " | ".join(budgets) + " |", "|---|---|" + "---:|" * len(budgets)]
    for (model, evaluator), group in summary.groupby(level=[0, 1], sort=False):
        cells = []
        for budget in budgets:
            if (model, evaluator, budget) not in group.index:
                cells.append("")
                continue
            mean, std, count = group.loc[(model, evaluator, budget)]
            cells.append(f"{100 * mean:.1f} ± {100 * std:.1f}" if count > 1 else f"{100 * mean:.1f}")
        lines.append(f"| {model} | {evaluator} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def label_efficiency_figure(table: pd.DataFrame, per_class_all: float) -> Figure:
    """Test accuracy against labelled images per class (log axis), a panel per evaluator on the
    frozen features, a line per model, ± std shaded. The supervised baseline, which trains its own
    encoder, is drawn in the linear-probe panel only (black, dashed)."""
    data = table.assign(x=table["labels_per_class"].map(lambda b: per_class_all if b == "all" else float(b)))
    models = [m for m in dict.fromkeys(data["model"]) if m != SUPERVISED]  # the same colour per model in both panels
    supervised = data[data["evaluator"] == SUPERVISED]
    figure = Figure(figsize=(12, 4.8))
    axes = figure.subplots(1, 2, sharey=True)
    ticks = sorted(data["x"].unique())
    for axis, name in zip(axes, EVALUATORS):
        sns.lineplot(data[data["evaluator"] == name], x="x", y="test_acc", hue="model", hue_order=models, errorbar="sd",
                     marker="o", ax=axis)
        if name == EVALUATORS[0] and len(supervised):
            sns.lineplot(supervised, x="x", y="test_acc", errorbar="sd", marker="s", color="black", linestyle="--",
                         label=SUPERVISED_LABEL, ax=axis)
        axis.set(xscale="log", title=f"{name} on frozen features", xlabel="labelled images per class", ylabel="test accuracy")
        axis.set_xticks(ticks, [("all" if x == per_class_all else f"{x:g}") for x in ticks])
        axis.legend(title="model", fontsize=8, title_fontsize=8)
        axis.grid(alpha=0.3)
    draws = data[data["labels_per_class"] != "all"].groupby(["model", "evaluator", "labels_per_class"]).size()
    spread = "mean ± std over label draws" if len(draws) and draws.max() > 1 else "one label draw per budget"
    figure.suptitle(f"Test accuracy with few labels ({spread})")
    figure.tight_layout()
    return figure


def plot(table: pd.DataFrame, path: Path, per_class_all: float) -> None:
    """``label_efficiency_figure`` as a PNG."""
    label_efficiency_figure(table, per_class_all).savefig(path, dpi=120)


def write_report(table: pd.DataFrame, output_dir: Path, per_class_all: float) -> None:
    """``results.csv`` (every run), ``results.md`` (the summary table) and ``label_efficiency.png``."""
    output_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(output_dir / "results.csv", index=False)
    (output_dir / "results.md").write_text(markdown_table(table))
    plot(table, output_dir / "label_efficiency.png", per_class_all)
