"""Run folders, exports, caches and checkpoints are data (issue 16, item 4): a hostile file that names code never
gets it run. Each hostile file would create a marker file if its code ran; `--trust-code` shows it would."""

import json
import os
import shutil

import numpy as np
import pytest
import torch
import yaml

from kdforge import io
from kdforge.app.run import run_recipe
from kdforge.cache.store import CacheError, CacheStore
from kdforge.errors import KDForgeError, TrainingError
from kdforge.export import export_student
from kdforge.imports import UntrustedCodeError
from kdforge.models import load_saved_model
from kdforge.recipe import recipe_from_dict
from kdforge.report.run import evaluate_run
from kdforge.train import checkpoint as ckpt
from tests.cache.test_pipeline import cli, iris_recipe
from tests.test_export import RECIPE


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("untrusted") / "run"
    run_recipe(recipe_from_dict(json.loads(json.dumps({**RECIPE, "seeds": [0]}))), out_dir=out)
    return out


def _hostile_copy(clean_run, tmp_path, member="teacher"):
    """A copy of the run whose `member/model.json` names os.system, which would create `marker`."""
    run, marker = tmp_path / "run", tmp_path / "pwned"
    shutil.copytree(clean_run, run)
    meta_path = run / member / "model.json"
    meta = json.loads(meta_path.read_text())
    meta.update(model="py:os:system", args={"command": f"touch {marker}"})
    meta_path.write_text(json.dumps(meta))
    return run, marker


@pytest.mark.parametrize(("command", "member"), [("eval", "teacher"), ("eval", "seed-0/student"),
                                                 ("report", "teacher"), ("export", "seed-0/student")])
def test_a_hostile_model_json_is_refused_by_every_command(clean_run, tmp_path, capsys, command, member):
    run, marker = _hostile_copy(clean_run, tmp_path, member)
    code, _, err = cli([command, str(run)], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "py:os:system" in err and "--trust-code" in err
    assert not marker.exists()


def test_trust_code_runs_it_which_is_why_it_is_refused_by_default(clean_run, tmp_path):
    run, marker = _hostile_copy(clean_run, tmp_path)
    with pytest.raises(UntrustedCodeError):
        evaluate_run(run, measure_cost=False)
    assert not marker.exists()
    with pytest.raises(KDForgeError):  # os.system returns an int, not a module: refused, after it ran
        evaluate_run(run, measure_cost=False, trust_code=True)
    assert marker.exists()


def test_load_saved_model_and_an_export_refuse_named_code(clean_run, tmp_path):
    run, marker = _hostile_copy(clean_run, tmp_path, member="seed-0/student")
    with pytest.raises(UntrustedCodeError, match="model.json' names code to import"):
        load_saved_model(run / "seed-0" / "student", "student")
    export = tmp_path / "export"
    export_student(clean_run, "safetensors", export)
    meta = json.loads((export / "model.json").read_text())
    meta.update(model="py:os:system", args={"command": f"touch {marker}"})
    (export / "model.json").write_text(json.dumps(meta))
    with pytest.raises(UntrustedCodeError):
        load_saved_model(export, "export")
    assert not marker.exists()


def test_a_run_recipe_naming_code_is_refused(clean_run, tmp_path, capsys):
    run, marker = tmp_path / "run", tmp_path / "pwned"
    shutil.copytree(clean_run, run)
    resolved = run / "recipe.resolved.yaml"
    recipe = yaml.safe_load(resolved.read_text())
    recipe["data"] = {**recipe["data"], "source": "py:os:system", "args": {"command": f"touch {marker}"}}
    resolved.write_text(yaml.safe_dump(recipe))
    for command in (["eval", str(run)], ["report", str(run)], ["export", str(run)]):
        code, _, err = cli(command, capsys)
        assert code == 2 and "names code to import" in err and "py:os:system" in err, err
    assert not marker.exists()


def test_the_recipe_the_user_runs_may_name_its_own_code_and_resume_it(tmp_path):
    """A `py:` model the recipe names is imported, and reloaded from the run folder on --resume."""
    data = json.loads(json.dumps({**RECIPE, "seeds": [0]}))
    data["student"] = {"model": "py:kdforge.models.builtin:MLP", "args": {"input_shape": [4], "num_classes": 3,
                                                                          "hidden": [4]}}
    first = run_recipe(recipe_from_dict(data), out_dir=tmp_path / "run")
    again = run_recipe(recipe_from_dict(data), out_dir=tmp_path / "run", resume=True)
    assert again.report["student"]["accuracy"] == first.report["student"]["accuracy"]
    with pytest.raises(UntrustedCodeError):  # the same folder opened as data, without the recipe
        load_saved_model(tmp_path / "run" / "seed-0" / "student", "student")
    assert load_saved_model(tmp_path / "run" / "seed-0" / "student", "student", trust_code=True)[0] is not None


def test_a_cache_array_holding_a_pickle_is_refused(tmp_path, capsys):
    marker = tmp_path / "pwned"

    class Hostile:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    recipe = iris_recipe(tmp_path, "teacher.safetensors")
    assert cli(["cache", str(recipe), "--quiet"], capsys)[0] == 0
    store = tmp_path / "cache"
    target = store / "test" / "logits.npy"
    np.save(target, np.array([Hostile()], dtype=object), allow_pickle=True)
    manifest = json.loads((store / "manifest.json").read_text())  # a forger fixes size and checksum too
    manifest["files"]["test/logits.npy"].update(bytes=target.stat().st_size, sha256=io.sha256_file(target))
    (store / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CacheError, match="not a plain numeric array"):
        CacheStore(store).split("test")
    assert not marker.exists()


def test_a_checkpoint_holding_a_pickle_is_refused(tmp_path):
    from accelerate import Accelerator

    from kdforge.train.loop import fit
    from tests.train.test_loop import make_job

    marker = tmp_path / "pwned"

    class Hostile:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    fit(make_job(tmp_path, total_steps=3), Accelerator())
    path = ckpt.latest_checkpoint(tmp_path / "checkpoints")
    torch.save({"optimizer": Hostile(), "scheduler": {}}, path / "optim.pt")
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["files"]["optim.pt"] = io.sha256_file(path / "optim.pt")
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(TrainingError) as info:
        fit(make_job(tmp_path, total_steps=6), Accelerator(), resume=True)
    assert "optim.pt" in str(info.value) and "False" not in str(info.value)
    assert not marker.exists()


def test_only_kdforges_own_public_model_factories_pass_without_trust(clean_run, tmp_path):
    """`py:kdforge.models.sentence:sentence_encoder` is kdforge's own factory; `py:kdforge.io:write_text` is kdforge
    code too, but one that writes files: refused."""
    from kdforge.imports import is_packaged_factory

    assert is_packaged_factory("py:kdforge.models.sentence:sentence_encoder")
    assert not is_packaged_factory("py:kdforge.io:write_text")
    assert not is_packaged_factory("py:kdforge.models:save_model")  # the package itself exports writers
    run = tmp_path / "run"
    shutil.copytree(clean_run, run)
    meta_path = run / "teacher" / "model.json"
    written = tmp_path / "written"
    meta = json.loads(meta_path.read_text())
    meta.update(model="py:kdforge.io:write_text", args={"path": str(written), "text": "x"})
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(UntrustedCodeError):
        load_saved_model(run / "teacher", "teacher")
    assert not written.exists()
