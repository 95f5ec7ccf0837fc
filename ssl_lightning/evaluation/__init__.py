"""The downstream side: frozen features, linear probe, kNN, online evaluation, label-budget sweeps."""

from ssl_lightning.evaluation.features import cached_features, extract_features
from ssl_lightning.evaluation.knn import knn_accuracy, knn_scores
from ssl_lightning.evaluation.linear_probe import LinearProbe, fit_linear_probe
from ssl_lightning.evaluation.online import OnlineEvaluation

__all__ = ["LinearProbe", "OnlineEvaluation", "cached_features", "extract_features", "fit_linear_probe", "knn_accuracy", "knn_scores"]
