"""The Python API as a first-class way in: the whole run from objects (`kdforge.Distiller` / `kdforge.run`), the
data forms it accepts, loss modules, on-policy steps through `kdforge.distill`, and hooks removed on error."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
import torch
from sklearn.datasets import load_wine
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

import kdforge
from kdforge.errors import KDForgeError
from kdforge.losses.kd import KDLoss
from tests.test_cli import run_cli

FAST = kdforge.TrainConfig(epochs=8, lr=0.01, batch_size=16, progress=False)


def wine_datasets() -> dict[str, TensorDataset]:
    """scikit-learn's wine data as the TensorDatasets a user builds by hand (standardised on the training rows)."""
    x, y = load_wine(return_X_y=True)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.3, random_state=0, stratify=y)
    scaler = StandardScaler().fit(x_tr)
    return {split: TensorDataset(torch.tensor(scaler.transform(xs), dtype=torch.float32), torch.tensor(ys))
            for split, xs, ys in (("train", x_tr, y_tr), ("test", x_te, y_te))}


def mlp(hidden: int) -> nn.Module:
    return nn.Sequential(nn.Linear(13, hidden), nn.ReLU(), nn.Linear(hidden, 3))


def key_paths(tree, prefix=""):
    """Dotted paths of every dict key in a report (list entries are not descended: their count varies by run)."""
    if not isinstance(tree, dict):
        return set()
    out = set()
    for key, value in tree.items():
        out.add(prefix + key)
        out |= key_paths(value, prefix + key + ".")
    return out


def test_the_wine_run_from_python_has_the_report_the_cli_writes(tmp_path, capsys):
    # Python: TensorDatasets, a teacher module trained first, a student module, the scratch twin, the report.
    torch.manual_seed(0)
    result = kdforge.Distiller(mlp(64), mlp(8), wine_datasets(), ["kd", "ce"], train=FAST, teacher_train=FAST,
                               name="wine").run(tmp_path / "python")
    assert result.out_dir == tmp_path / "python" and (result.out_dir / "report.html").is_file()
    assert result.teacher is not None and set(result.students) == {0} and set(result.scratch) == {0}
    assert result.report["teacher"]["accuracy"] > 0.85
    assert result.report["student"]["agreement"] > 0.8
    assert result.report == json.loads((tmp_path / "python" / "report.json").read_text())
    # The CLI: the same data from a `py:` source that returns TensorDatasets.
    (tmp_path / "wine_source.py").write_text(textwrap.dedent("""
        from tests.test_python_api import wine_datasets

        def datasets():
            return wine_datasets()
    """))
    (tmp_path / "wine.yaml").write_text(textwrap.dedent("""
        name: wine
        data: {source: "py:wine_source:datasets"}
        teacher: {model: "builtin:mlp", args: {hidden: [64]}, train: {epochs: 8, lr: 0.01, batch_size: 16}}
        student: {model: "builtin:mlp", args: {hidden: [8]}}
        losses: [{name: kd}, {name: ce}]
        train: {epochs: 8, lr: 0.01, batch_size: 16}
    """))
    code, _, err = run_cli(["distill", str(tmp_path / "wine.yaml"), "--out", str(tmp_path / "cli")], capsys)
    assert code == 0, err
    cli = json.loads((tmp_path / "cli" / "report.json").read_text())
    assert key_paths(result.report) == key_paths(cli)
    assert cli["data"]["train"] == result.report["data"]["train"] == 124
    # save() copies the run folder, which then reads back like any run
    saved = result.save(tmp_path / "kept")
    assert json.loads((saved / "report.json").read_text()) == result.report


def test_a_student_factory_gives_each_seed_its_own_initialisation(tmp_path):
    teacher = mlp(32)
    kdforge.distill(teacher, teacher, wine_datasets(), losses=["ce"], train=FAST)
    result = kdforge.run(teacher, lambda: mlp(8), wine_datasets(), ["kd"], out_dir=tmp_path / "run", train=FAST,
                         seeds=[0, 1], baseline=False)
    first, second = (result.students[s].model[0].weight for s in (0, 1))
    assert not torch.equal(first, second)
    assert set(json.loads((tmp_path / "run" / "report.json").read_text())["student"]) >= {"accuracy", "agreement"}


class MapStyle(Dataset):
    """A user's own map-style dataset returning dicts."""

    def __init__(self, data: TensorDataset) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        x, y = self.data[i]
        return {"x": x, "labels": y}


@pytest.mark.parametrize("form", ["tensordataset", "mapstyle", "dataloader", "arrays"])
def test_distill_takes_the_common_data_forms(form):
    splits = wine_datasets()
    if form == "mapstyle":
        splits = {k: MapStyle(v) for k, v in splits.items()}
    elif form == "dataloader":
        splits = {k: DataLoader(v, batch_size=32) for k, v in splits.items()}
    elif form == "arrays":
        splits = {k: (v.tensors[0].numpy(), v.tensors[1].numpy()) for k, v in splits.items()}
    teacher = mlp(32)
    kdforge.distill(teacher, teacher, splits, losses=["ce"], train=FAST)
    _, result = kdforge.distill(teacher, mlp(8), splits, losses=["kd", "ce"], train=FAST)
    assert result.teacher["accuracy"] > 0.85 and result.student["agreement"] > 0.8


def test_data_of_another_kind_is_refused_in_one_line():
    with pytest.raises(KDForgeError) as info:
        kdforge.distill(mlp(8), mlp(8), {"train": "not data", "test": "nor this"}, train=FAST)
    assert "\n" not in str(info.value) and "train" in str(info.value)
    with pytest.raises(KDForgeError) as info:
        kdforge.distill(mlp(8), mlp(8), 42, train=FAST)
    assert "\n" not in str(info.value)


class HalfMSE(nn.Module):
    """A user's own loss module with the loss contract's call."""

    def forward(self, student, teacher, targets):
        return 0.5 * (student.logits - teacher.logits).pow(2).mean()


def test_loss_instances_and_custom_modules_are_terms(tmp_path):
    data = wine_datasets()
    teacher = mlp(32)
    kdforge.distill(teacher, teacher, data, losses=["ce"], train=FAST)
    _, result = kdforge.distill(teacher, mlp(8), data, train=FAST, out_dir=tmp_path / "job",
                                losses=[KDLoss(temperature=2.0), {"loss": HalfMSE(), "weight": 0.5}, "ce"])
    assert result.student["agreement"] > 0.8
    logged = json.loads((tmp_path / "job" / "log.jsonl").read_text().splitlines()[-1])
    assert {"train/kd", "train/half_mse", "train/ce"} <= set(logged)
    assert logged["train/loss"] == pytest.approx(logged["train/kd"] + 0.5 * logged["train/half_mse"]
                                                 + logged["train/ce"], rel=1e-5)
    run = kdforge.Distiller(teacher, mlp(8), data, [KDLoss(temperature=2.0), HalfMSE()], train=FAST,
                            baseline=False).run()
    assert [term["name"] for term in run.report["losses"]] == ["kd", "half_mse"]


def test_distill_takes_gkd_on_policy_steps(monkeypatch):
    pytest.importorskip("transformers")
    import kdforge.losses.gkd as gkd
    from kdforge.app.data import load_recipe_data
    from kdforge.llm.data import tiny_causal_lm

    calls = []
    rollouts = gkd.student_rollouts
    monkeypatch.setattr(gkd, "student_rollouts", lambda *a, **k: calls.append(1) or rollouts(*a, **k))
    data = load_recipe_data(kdforge.DataSpec(source="text:stdlib_lm",
                                             args={"limit": 120, "vocab_size": 300, "seq_len": 16}), None)
    torch.manual_seed(0)
    teacher = tiny_causal_lm(layers=1, hidden=32, vocab_size=300)
    student = tiny_causal_lm(layers=1, hidden=32, vocab_size=300)
    kdforge.distill(teacher, student, data, losses=[{"name": "gkd", "lmbda": 1.0, "prompt_len": 3}],
                    inputs=["input_ids", "attention_mask"],
                    train=kdforge.TrainConfig(max_steps=3, batch_size=8, progress=False))
    assert len(calls) == 3  # every optimizer step was on-policy


class Explodes(nn.Module):
    needs_teacher = False

    def forward(self, student, teacher, targets):
        raise RuntimeError("boom")


def test_hooks_come_off_the_users_models_when_training_fails():
    teacher, student = mlp(8), mlp(8)
    with pytest.raises(RuntimeError, match="boom"):
        kdforge.distill(teacher, student, wine_datasets(), losses=["kd", Explodes()], train=FAST,
                        taps={"student": {"h": "1"}, "teacher": {"h": "1"}})
    for model in (teacher, student):
        assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_the_root_names_resolve():
    assert kdforge.Distiller is kdforge.api.Distiller and callable(kdforge.run)
    with pytest.raises(AttributeError):
        kdforge.no_such_name  # noqa: B018
    assert np.isfinite(len(kdforge.__all__))


def test_two_terms_that_each_change_the_step_are_refused(monkeypatch):
    from kdforge.app.build import step_function
    from kdforge.losses import LOSSES
    from kdforge.losses.gkd import GKDLoss
    from kdforge.registry import LossInfo

    info = LossInfo(summary="a second step-changing method", paper="-", example={}, step=lambda standard: standard)
    monkeypatch.setitem(LOSSES._entries, "kdf_test_step", (GKDLoss, info))
    assert step_function(["gkd"]) is not step_function(["kd"])
    with pytest.raises(kdforge.RecipeError, match=r"\['gkd', 'kdf_test_step'\] each change the training step"):
        step_function(["gkd", "kdf_test_step"])
