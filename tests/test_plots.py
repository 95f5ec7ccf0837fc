"""The pictures a reader sees: titles, axis labels and legends, and what each plot draws where."""

import numpy as np
import pandas as pd
import torch

from ssl_lightning.evaluation.report import SUPERVISED_LABEL, label_efficiency_figure
from ssl_lightning.evaluation.transfer_comparison import validation_figure
from ssl_lightning.visualize import pca_figure


def legend_texts(axis):
    return [text.get_text() for text in axis.get_legend().get_texts()]


def test_label_efficiency_draws_the_supervised_baseline_in_the_probe_panel_only():
    rows = [{"model": model, "evaluator": evaluator, "labels_per_class": budget, "seed": seed, "test_acc": accuracy + 0.01 * seed}
            for model, evaluators, accuracy in [("SimCLR", ["linear probe", "kNN"], 0.6), ("raw pixels", ["linear probe", "kNN"], 0.5),
                                                ("supervised", ["supervised"], 0.8)]
            for evaluator in evaluators for budget in [10, 100, "all"] for seed in range(2)]
    figure = label_efficiency_figure(pd.DataFrame(rows), per_class_all=5500)
    probe, knn = figure.axes
    assert "mean ± std over label draws" in figure.get_suptitle()
    assert probe.get_title() == "linear probe on frozen features" and knn.get_title() == "kNN on frozen features"
    assert probe.get_xlabel() == knn.get_xlabel() == "labelled images per class" and probe.get_ylabel() == "test accuracy"
    assert [t.get_text() for t in probe.get_xticklabels()] == ["10", "100", "all"]
    assert legend_texts(probe) == ["SimCLR", "raw pixels", SUPERVISED_LABEL]
    assert legend_texts(knn) == ["SimCLR", "raw pixels"]
    supervised_means = [0.805, 0.805, 0.805]  # the mean over the two seeds at each budget
    assert [line for line in probe.get_lines() if len(line.get_ydata()) == 3 and np.allclose(line.get_ydata(), supervised_means)]
    assert not [line for line in knn.get_lines() if len(line.get_ydata()) == 3 and np.allclose(line.get_ydata(), supervised_means)]


def test_pca_axes_say_how_much_variance_each_component_holds():
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(60) % 3
    features = torch.randn(3, 8, generator=g)[labels] * 3 + torch.randn(60, 8, generator=g)
    names = [["coat", "dress", "shirt"][i] for i in labels]
    axis = pca_figure(features, names, "test").axes[0]
    singular = torch.linalg.svdvals(features.double() - features.double().mean(0))
    shares = (singular**2 / (singular**2).sum())[:2]
    for number, label, share in zip([1, 2], [axis.get_xlabel(), axis.get_ylabel()], shares):
        assert label == f"PC{number} ({100 * share.item():.1f}% of variance)"
    assert axis.get_title() == "PCA of encoder features (test)"
    assert axis.get_legend().get_title().get_text() == "class" and legend_texts(axis) == ["coat", "dress", "shirt"]


def test_transfer_plot_pairs_each_sources_modes_by_colour_with_integer_epochs():
    runs = [("a finetune", "a", "finetune"), ("a feature_extract", "a", "feature_extract"),
            ("b finetune", "b", "finetune"), ("b feature_extract", "b", "feature_extract"), ("scratch", "random", "finetune")]
    table = pd.DataFrame([{"run": run, "source": source, "mode": mode} for run, source, mode in runs])
    history = pd.DataFrame([{"run": run, "mode": mode, "epoch": epoch, "val_acc": 0.1 * epoch + 0.01 * i}
                            for i, (run, _, mode) in enumerate(runs) for epoch in (1, 2, 3)])
    axis = validation_figure(table, history, "digits, 3 epochs").axes[0]
    lines = dict(zip(legend_texts(axis), axis.get_lines()))
    assert list(lines) == ["a, fine-tuned", "a, feature extraction", "b, fine-tuned", "b, feature extraction", "from scratch"]
    colour = {label: line.get_color() for label, line in lines.items()}
    assert colour["a, fine-tuned"] == colour["a, feature extraction"] != colour["b, fine-tuned"] == colour["b, feature extraction"]
    assert colour["from scratch"] not in (colour["a, fine-tuned"], colour["b, fine-tuned"])
    assert [line.get_linestyle() for line in lines.values()] == ["-", "--", "-", "--", ":"]
    assert list(lines["b, feature extraction"].get_ydata()) == list(history[history["run"] == "b feature_extract"]["val_acc"])
    ticks = [t for t in axis.get_xticks() if 1 <= t <= 3]
    assert ticks == [1, 2, 3]  # whole epochs, not 1.25, 1.5, ...
    assert axis.get_title() and axis.get_xlabel() == "epoch" and axis.get_ylabel() == "validation accuracy"


def test_label_efficiency_of_one_draw_per_budget_claims_no_spread():
    rows = [{"model": "SimCLR", "evaluator": evaluator, "labels_per_class": budget, "seed": 0, "test_acc": 0.6}
            for evaluator in ["linear probe", "kNN"] for budget in [10, "all"]]
    assert "one label draw per budget" in label_efficiency_figure(pd.DataFrame(rows), per_class_all=5500).get_suptitle()
