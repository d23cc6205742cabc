"""kdforge export: the student alone, rebuildable, and checked (safetensors reload; ONNX via onnxruntime)."""

import json

import pytest
import torch
from safetensors.torch import load_file

from kdforge.app.run import run_recipe
from kdforge.cli import main
from kdforge.errors import KDForgeError
from kdforge.export import export_model, export_student
from kdforge.models import build_model, load_saved_model, save_model
from kdforge.models.builtin import ConvNet
from kdforge.recipe import recipe_from_dict

RECIPE = {
    "name": "tiny-export",
    "seeds": [0, 1],
    "data": {"source": "sklearn:iris", "test_size": 0.3, "val_size": 0.2},
    "teacher": {"model": "builtin:mlp", "args": {"hidden": [16]},
                "train": {"epochs": 2, "lr": 0.01, "batch_size": 16, "progress": False}},
    "student": {"model": "builtin:mlp", "args": {"hidden": [4]}},
    "losses": [{"name": "kd", "weight": 1.0, "temperature": 2.0}],
    "train": {"epochs": 1, "batch_size": 16, "lr": 0.01, "progress": False},
    "baseline": False,
}


def _standardized(x, meta):
    """x standardised with the statistics an export records (what the student saw during the run)."""
    spec = meta["preprocess"]["standardize"]
    return ((x.double() - torch.tensor(spec["mean"])) / torch.tensor(spec["std"])).float()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "run"
    run_recipe(recipe_from_dict(json.loads(json.dumps(RECIPE))), out_dir=out)
    return out


def test_safetensors_export_is_the_student_alone_and_reloads(run_dir, tmp_path):
    result = export_student(run_dir, "safetensors", tmp_path / "st", seed=1)
    assert sorted(p.name for p in (tmp_path / "st").iterdir()) == ["export.json", "model.json", "model.safetensors"]
    original, _ = load_saved_model(run_dir / "seed-1" / "student", "original")
    exported, meta = load_saved_model(tmp_path / "st", "exported")
    assert set(load_file(str(tmp_path / "st" / "model.safetensors"))) == set(original.state_dict())
    x = torch.randn(7, 4) * 2 + 4  # raw features: the export standardises them as the run did
    assert torch.allclose(original.eval()(_standardized(x, meta)), exported.eval()(x), atol=1e-5)
    info = json.loads((tmp_path / "st" / "export.json").read_text())
    assert info["source"]["seed"] == 1 and info["max_abs_diff"] < 1e-5 and result.max_abs_diff < 1e-5
    assert info["preprocess"] == meta["preprocess"] == json.loads((run_dir / "preprocess.json").read_text())
    assert info["outputs"]["logits"]["shape"] == ["batch", 3] and meta["model"] == "builtin:mlp"


def test_adapters_and_loss_state_stay_behind(run_dir, tmp_path):
    import shutil

    from safetensors.torch import save_file

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    # what a FitNets-style run leaves beside the student: the regressor lives in the loss state
    loss_state = copy / "seed-0" / "student" / "loss_state.safetensors"
    save_file({"fitnet.projector.weight": torch.randn(8, 4)}, str(loss_state))
    export_student(copy, "safetensors", tmp_path / "out", seed=0)
    exported = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert not any("projector" in key for key in exported)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["export.json", "model.json", "model.safetensors"]


def test_default_seed_is_the_reports_and_default_folder(run_dir):
    report = json.loads((run_dir / "report.json").read_text())
    result = export_student(run_dir, overwrite=True)
    assert result.out_dir == run_dir / "export" / "safetensors"
    assert result.info["source"]["seed"] == report["evaluated_seed"]


def test_refuses_to_overwrite_and_bad_arguments(run_dir, tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("keep")
    with pytest.raises(KDForgeError, match="is not empty. Pass --overwrite"):
        export_student(run_dir, "safetensors", tmp_path / "busy")
    with pytest.raises(KDForgeError, match="--format 'tflite': choose one of safetensors, onnx"):
        export_student(run_dir, "tflite", tmp_path / "f")
    with pytest.raises(KDForgeError, match="--seed 7: this run has seeds"):
        export_student(run_dir, "safetensors", tmp_path / "s", seed=7)
    with pytest.raises(SystemExit) as info:
        main(["export", str(tmp_path / "nothing-here")])
    assert info.value.code == 2


def test_onnx_missing_gives_an_install_hint(run_dir, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    with pytest.raises(KDForgeError, match=r"pip install 'kdforge\[onnx\]'"):
        export_student(run_dir, "onnx", tmp_path / "o")


def test_onnx_export_matches_pytorch_on_new_batch_sizes(run_dir, tmp_path):
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime not installed: pip install 'kdforge[onnx]'")
    result = export_student(run_dir, "onnx", tmp_path / "onnx", seed=0)
    assert result.max_abs_diff < 1e-4
    session = ort.InferenceSession(str(tmp_path / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"])
    student, _ = load_saved_model(run_dir / "seed-0" / "student", "student")
    for batch in (1, 13):  # the batch axis is dynamic
        x = torch.randn(batch, 4) * 2 + 4  # raw features
        got = session.run(["logits"], {"x": x.numpy()})[0]
        expected = student.eval()(_standardized(x, result.info)).detach()
        assert torch.allclose(torch.from_numpy(got), expected, atol=1e-5)


def test_onnx_export_of_a_cnn_with_batchnorm(tmp_path):
    pytest.importorskip("onnxruntime", reason="onnxruntime not installed: pip install 'kdforge[onnx]'")
    model, args = build_model("builtin:cnn", {"input_shape": [1, 8, 8], "num_classes": 4, "channels": [4, 8]},
                              None, "test")
    assert isinstance(model, ConvNet)
    model.train()
    model(torch.randn(16, 1, 8, 8))  # move the batch-norm statistics away from their initial values
    save_model(model, tmp_path / "saved", "builtin:cnn", args, ["x"])
    loaded, meta = load_saved_model(tmp_path / "saved", "saved")
    result = export_model(loaded, meta, {"x": torch.rand(9, 1, 8, 8)}, tmp_path / "out", "onnx")
    assert result.max_abs_diff < 1e-4 and result.info["check_rows"] == 9
