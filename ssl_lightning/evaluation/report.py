"""The label-budget sweep's outputs: a CSV of every run, a markdown table and a plot."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

EVALUATORS = ("linear probe", "kNN")


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


def plot(table: pd.DataFrame, path: Path, per_class_all: float) -> None:
    """Test accuracy against labelled images per class (log axis), a panel per evaluator, a line
    per model, ± std shaded; the supervised baseline is drawn in both panels."""
    data = table.assign(x=table["labels_per_class"].map(lambda b: per_class_all if b == "all" else float(b)))
    supervised = data[data["evaluator"] == "supervised"]
    panels = [pd.concat([data[data["evaluator"] == name], supervised]) for name in EVALUATORS]
    figure, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    ticks = sorted(data["x"].unique())
    for axis, name, panel in zip(axes, EVALUATORS, panels):
        sns.lineplot(panel, x="x", y="test_acc", hue="model", errorbar="sd", marker="o", ax=axis)
        axis.set(xscale="log", title=name, xlabel="labelled images per class", ylabel="test accuracy")
        axis.set_xticks(ticks, [("all" if x == per_class_all else f"{x:g}") for x in ticks])
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write_report(table: pd.DataFrame, output_dir: Path, per_class_all: float) -> None:
    """``results.csv`` (every run), ``results.md`` (the summary table) and ``label_efficiency.png``."""
    output_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(output_dir / "results.csv", index=False)
    (output_dir / "results.md").write_text(markdown_table(table))
    plot(table, output_dir / "label_efficiency.png", per_class_all)
