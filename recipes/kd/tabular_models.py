"""User-defined models for the breast-cancer recipe: any module-level factory returning an nn.Module works.

The recipe names them explicitly (`py:tabular_models:make_teacher`); kdforge imports nothing else.
"""

from torch import nn


def make_teacher(in_features: int = 30, hidden: int = 256, num_classes: int = 2) -> nn.Module:
    return nn.Sequential(
        nn.Linear(in_features, hidden), nn.ReLU(), nn.Dropout(0.2),
        nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(0.2),
        nn.Linear(hidden, num_classes),
    )


def make_student(in_features: int = 30, hidden: int = 8, num_classes: int = 2) -> nn.Module:
    return nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))
