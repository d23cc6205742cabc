"""An exported student answers raw data as the run's student answered standardised data (issue 16, item 1):
the run's standardisation statistics travel in model.json, export.json and the ONNX graph."""

import json

import numpy as np
import pytest
import torch
from sklearn.datasets import load_wine

from kdforge.app.run import run_recipe
from kdforge.cli import main
from kdforge.data.bundle import stratified_split
from kdforge.models import load_saved_model
from kdforge.recipe import recipe_from_dict

WINE = {
    "name": "wine-export",
    "seeds": [0],
    "data": {"source": "sklearn:wine", "test_size": 0.3, "val_size": 0.1, "split_seed": 3},
    "teacher": {"model": "builtin:mlp", "args": {"hidden": [32]},
                "train": {"epochs": 30, "lr": 0.01, "batch_size": 16, "progress": False}},
    "student": {"model": "builtin:mlp", "args": {"hidden": [8]}},
    "losses": [{"name": "kd", "weight": 0.9, "temperature": 2.0}, {"name": "ce", "weight": 0.1}],
    "train": {"epochs": 30, "batch_size": 16, "lr": 0.01, "progress": False},
    "baseline": False,
}


@pytest.fixture(scope="module")
def wine_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("wine") / "run"
    run_recipe(recipe_from_dict(json.loads(json.dumps(WINE))), out_dir=out)
    return out


def _raw_test_rows():
    """The run's test rows of scikit-learn's wine data, raw (the same stratified split the run made)."""
    x, y = load_wine(return_X_y=True)
    _, x_test, _, y_test = stratified_split(x, y, WINE["data"]["test_size"], WINE["data"]["split_seed"])
    return x_test.astype(np.float32), y_test


def test_the_onnx_export_reaches_the_runs_test_accuracy_on_raw_wine(wine_run, tmp_path):
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime not installed: pip install 'kdforge[onnx]'")
    with pytest.raises(SystemExit) as info:
        main(["export", str(wine_run), "--format", "onnx", "--out", str(tmp_path / "onnx")])
    assert info.value.code in (0, None)
    x, y = _raw_test_rows()
    assert np.abs(x).max() > 100  # raw wine: proline is in the hundreds; standardised features are not
    session = ort.InferenceSession(str(tmp_path / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"])
    predicted = session.run(["logits"], {"x": x})[0].argmax(axis=1)
    expected = json.loads((wine_run / "seed-0" / "student" / "test_metrics.json").read_text())["accuracy"]
    assert float((predicted == y).mean()) == pytest.approx(expected, abs=1e-9)
    assert expected > 0.8  # a real student, not chance (1/3)
    info = json.loads((tmp_path / "onnx" / "export.json").read_text())
    assert set(info["preprocess"]["standardize"]) == {"input", "mean", "std"}
    assert info["preprocess"] == json.loads((wine_run / "preprocess.json").read_text())


def test_the_safetensors_export_reloads_taking_raw_wine(wine_run, tmp_path):
    with pytest.raises(SystemExit) as info:
        main(["export", str(wine_run), "--out", str(tmp_path / "st")])
    assert info.value.code in (0, None)
    model, meta = load_saved_model(tmp_path / "st", "export")
    assert meta["preprocess"]["standardize"]["input"] == "x" and len(meta["preprocess"]["standardize"]["mean"]) == 13
    x, y = _raw_test_rows()
    with torch.no_grad():
        predicted = model.eval()(torch.from_numpy(x)).argmax(dim=1).numpy()
    expected = json.loads((wine_run / "seed-0" / "student" / "test_metrics.json").read_text())["accuracy"]
    assert float((predicted == y).mean()) == pytest.approx(expected, abs=1e-9)


def test_a_run_without_standardisation_records_none(tmp_path):
    data = json.loads(json.dumps(WINE))
    data["data"]["standardize"] = False
    data["teacher"]["train"]["epochs"] = data["train"]["epochs"] = 1
    run_recipe(recipe_from_dict(data), out_dir=tmp_path / "run")
    assert json.loads((tmp_path / "run" / "preprocess.json").read_text()) == {}


def test_a_text_export_ships_the_tokenizer_that_made_its_ids(tmp_path):
    recipe = {
        "name": "text-export", "seeds": [0],
        "data": {"source": "text:stdlib_topics", "args": {"vocab_size": 300, "seq_len": 16}},
        "teacher": {"model": "builtin:textcnn", "args": {"vocab_size": 300}, "inputs": ["input_ids"],
                    "train": {"max_steps": 2, "batch_size": 16, "progress": False}},
        "student": {"model": "builtin:textcnn", "args": {"vocab_size": 300}, "inputs": ["input_ids"]},
        "losses": [{"name": "kd"}],
        "train": {"max_steps": 2, "batch_size": 16, "progress": False},
        "baseline": False,
    }
    run_recipe(recipe_from_dict(recipe), out_dir=tmp_path / "run")
    with pytest.raises(SystemExit) as info:
        main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "st")])
    assert info.value.code in (0, None)
    shipped = tmp_path / "st" / "tokenizer.json"
    assert shipped.read_text() == (tmp_path / "run" / "tokenizer.json").read_text()
    meta = json.loads((tmp_path / "st" / "model.json").read_text())
    assert meta["preprocess"] == {"tokenizer": "tokenizer.json"}
    assert load_saved_model(tmp_path / "st", "export")[0] is not None
