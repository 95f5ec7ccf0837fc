"""The downstream side: frozen features, linear probe, kNN, online evaluation, label-budget sweeps, transfer."""

from ssl_lightning.evaluation.features import cached_features, extract_features, loader_features
from ssl_lightning.evaluation.knn import knn_accuracy, knn_scores
from ssl_lightning.evaluation.linear_probe import LinearProbe, fit_linear_probe
from ssl_lightning.evaluation.online import OnlineEvaluation
from ssl_lightning.evaluation.transfer import TransferClassifier

__all__ = ["LinearProbe", "OnlineEvaluation", "TransferClassifier", "cached_features", "extract_features", "fit_linear_probe", "knn_accuracy", "knn_scores",
           "loader_features"]
