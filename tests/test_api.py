"""The Python API on modules the user already holds."""

import numpy as np
import pytest
import torch
from sklearn.datasets import load_wine
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from torch import nn

import kdforge
from kdforge.errors import ShapeMismatchError, UnknownNameError


def wine_splits():
    x, y = load_wine(return_X_y=True)
    x = StandardScaler().fit_transform(x).astype(np.float32)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.3, random_state=0, stratify=y)
    return {"train": (x_tr, y_tr), "test": (x_te, y_te)}


def trained_teacher(data):
    teacher = nn.Sequential(nn.Linear(13, 64), nn.ReLU(), nn.Linear(64, 3))
    kdforge.distill(teacher, teacher, data, losses=["ce"],
                    train=kdforge.TrainConfig(epochs=30, lr=0.01, batch_size=16, progress=False))
    return teacher


def test_distill_returns_student_and_measurements():
    data = wine_splits()
    teacher = trained_teacher(data)
    student = nn.Sequential(nn.Linear(13, 3))
    trained, result = kdforge.distill(
        teacher, student, data,
        losses=[{"name": "kd", "weight": 0.9, "temperature": 2.0}, {"name": "ce", "weight": 0.1}],
        train=kdforge.TrainConfig(epochs=20, lr=0.01, batch_size=16, progress=False),
    )
    assert trained is student
    assert result.teacher["accuracy"] > 0.9
    assert result.student["agreement"] > 0.85
    assert 0 < result.student["agreement_lower_95"] < result.student["agreement"]
    assert result.student["params"] == 42 and result.steps == 20 * 8


def test_feature_taps_are_captured_for_both_models():
    data = wine_splits()
    teacher = nn.Sequential(nn.Linear(13, 8), nn.ReLU(), nn.Linear(8, 3))
    student = nn.Sequential(nn.Linear(13, 8), nn.ReLU(), nn.Linear(8, 3))
    with pytest.raises(UnknownNameError, match="Did you mean '1'"):
        kdforge.distill(teacher, student, data, losses=["kd"], taps={"student": {"h": "11"}},
                        train=kdforge.TrainConfig(epochs=1, progress=False))


def test_mismatched_classes_fail_before_training():
    data = wine_splits()
    teacher = nn.Linear(13, 5)
    with pytest.raises(ShapeMismatchError, match=r"kd: student and teacher logits: shapes differ"):
        kdforge.distill(teacher, nn.Linear(13, 3), data, losses=["kd"], train=kdforge.TrainConfig(progress=False))


def test_labels_beyond_the_student_outputs_fail_before_training():
    data = wine_splits()
    with pytest.raises(ShapeMismatchError, match="labels go up to 2 but the student has 2 outputs"):
        kdforge.distill(nn.Linear(13, 2), nn.Linear(13, 2), data, losses=["kd", "ce"],
                        train=kdforge.TrainConfig(progress=False))


def test_source_name_as_data():
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    student, result = kdforge.distill(teacher, nn.Sequential(nn.Flatten(), nn.Linear(4, 3)), "sklearn:iris",
                                      losses=["logit_mse"], train=kdforge.TrainConfig(epochs=2, progress=False))
    assert 0.0 <= result.student["agreement"] <= 1.0 and result.evals
