"""Student initialisation in a recipe run: `student.model: from_teacher` (the recipe teacher's layers, DistilBERT
style) and `student.pretrain` (well-read students, Turc et al. 2019), on tiny random-weight BERTs, no downloads.

The data are two `text:` sources registered for these tests only: a two-class sequence task and masked-LM rows
of arithmetic token runs (predictable from their neighbours, so pre-training can lower its loss)."""

import json
import shutil

import pytest
import torch

from kdforge.app import pretrain as app_pretrain
from kdforge.app import run as app_run
from kdforge.app import rundir
from kdforge.app import student as app_student
from kdforge.app import teacher as app_teacher
from kdforge.app.run import run_recipe
from kdforge.data import TEXT_DATASETS
from kdforge.data.tensors import TensorData
from kdforge.errors import RecipeError
from kdforge.evaluate import predict_logits
from kdforge.export import export_student
from kdforge.models import load_saved_model
from kdforge.recipe import recipe_from_dict
from tests.test_cli import run_cli

transformers = pytest.importorskip("transformers")
llm_data = pytest.importorskip("kdforge.llm.data")

VOCAB, SEQ, MASK_ID = 40, 8, 3
INPUTS = ["input_ids", "attention_mask"]
KIT = "kdf_student_init_kit"
KIT_SOURCE = '''import torch
import transformers


def _config(layers, **kw):
    return transformers.BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=layers, num_attention_heads=2,
                                   intermediate_size=32, max_position_embeddings=16, hidden_dropout_prob=0.0,
                                   attention_probs_dropout_prob=0.0, **kw)


def classifier(layers=4):
    return transformers.BertForSequenceClassification(_config(layers, num_labels=2))


def mlm(layers=2):
    return transformers.BertForMaskedLM(_config(layers))


def unrelated():
    return torch.nn.Sequential(torch.nn.Embedding(40, 5), torch.nn.Linear(5, 40))
'''


def _classification(test_size, val_size, seed, n=96):
    """Random token rows; the class is whether token 1 is in the upper half of the vocabulary."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, VOCAB, (n, SEQ), generator=g)
    rows = TensorData({"input_ids": ids, "attention_mask": torch.ones_like(ids),
                       "labels": (ids[:, 1] >= (5 + VOCAB) // 2).long()})
    return llm_data.split_rows(rows, test_size, val_size, seed), None


def _masked_lm(test_size, val_size, seed, n=256):
    """Runs 5+s, 6+s, ... (wrapping) with BERT's 80/10/10 corruption of 30 % of the positions."""
    from kdforge.models.hf_student import mlm_mask

    g = torch.Generator().manual_seed(seed)
    start = torch.randint(0, VOCAB - 5, (n, 1), generator=g)
    ids = 5 + (start + torch.arange(SEQ)) % (VOCAB - 5)
    batch = mlm_mask({"input_ids": ids, "attention_mask": torch.ones_like(ids)}, MASK_ID, VOCAB,
                     special_ids=(), probability=0.3, generator=g)
    rows = TensorData({k: batch[k] for k in ("input_ids", "attention_mask", "labels")})
    return llm_data.split_rows(rows, test_size, val_size, seed), None


@pytest.fixture
def kit(tmp_path):
    (tmp_path / f"{KIT}.py").write_text(KIT_SOURCE)
    # test-only text sources; override=True lets every test of the module register them again
    TEXT_DATASETS.register("kdf_test_cls", override=True)(_classification)
    TEXT_DATASETS.register("kdf_test_mlm", override=True)(_masked_lm)
    return tmp_path


def _recipe_dict(student, **changes):
    return {
        "name": "student-init", "seeds": [0],
        "data": {"source": "text:kdf_test_cls", "test_size": 0.25, "val_size": 0.15},
        "teacher": {"model": f"py:{KIT}:classifier", "args": {"layers": 4}, "inputs": INPUTS,
                    "train": {"max_steps": 6, "batch_size": 16, "lr": 3e-3, "progress": False}},
        "student": student,
        "losses": [{"name": "kd", "weight": 0.5, "temperature": 2.0}, {"name": "ce", "weight": 0.5}],
        "train": {"max_steps": 4, "batch_size": 16, "lr": 1e-3, "progress": False},
        **changes,
    }


def _pretrain(model="mlm", steps=40):
    return {"model": f"py:{KIT}:{model}", "args": {"layers": 2} if model == "mlm" else {}, "inputs": INPUTS,
            "data": {"source": "text:kdf_test_mlm", "test_size": 0.1, "val_size": 0.2},
            "train": {"max_steps": steps, "batch_size": 32, "lr": 1e-2, "progress": False}}


def _spy_starts(monkeypatch):
    """The state dict of every student `build_student` hands to training (distilled and scratch), at that time."""
    starts = []
    build = app_student.build_student

    def spy(*args, **kwargs):
        student, spec, model_args = build(*args, **kwargs)
        starts.append({k: v.clone() for k, v in student.state_dict().items()})
        return student, spec, model_args

    monkeypatch.setattr(app_run, "build_student", spy)  # the distilled student
    monkeypatch.setattr(app_student, "build_student", spy)  # the scratch twin
    return starts


def test_from_teacher_student_starts_from_the_teachers_layers_and_rebuilds_without_it(kit, monkeypatch, capsys):
    recipe = recipe_from_dict(_recipe_dict({"model": "from_teacher", "args": {"layers": [1, 3]}, "inputs": INPUTS}),
                              base_dir=kit)
    starts = _spy_starts(monkeypatch)
    run = kit / "run"
    result = run_recipe(recipe, run)
    teacher = load_saved_model(run / "teacher", "teacher", kit, trust_code=True)[0].state_dict()
    assert len(starts) == 2  # the distilled student and its scratch twin
    layer = "bert.encoder.layer."
    for start in starts:
        assert {k for k in start if k.startswith(layer)} == {
            k.replace(f"{layer}{j}.", f"{layer}{i}.") for i, j in [(0, 1), (1, 3)] for k in teacher
            if k.startswith(f"{layer}{j}.")}
        for key, value in start.items():
            if key.startswith(layer):
                i, rest = key[len(layer):].split(".", 1)
                key = f"{layer}{[1, 3][int(i)]}.{rest}"
            assert torch.equal(value, teacher[key]), key
    # the saved student names its class and config, not the teacher
    meta = json.loads((run / "seed-0" / "student" / "model.json").read_text())
    assert meta["model"] == "hf_config:BertForSequenceClassification"
    assert meta["args"]["config"]["num_hidden_layers"] == 2
    assert result.report["student_init"]["init"] == "from_teacher"
    assert "built from the teacher" in (run / "report.md").read_text()
    code, _, err = run_cli(["eval", str(run), "--no-cost", "-q", "--trust-code"], capsys)  # py: teacher of our own
    assert code in (0, None), err
    exported = export_student(run, "safetensors", kit / "export", seed=0, trust_code=True)
    assert exported.info["check"].startswith("reloaded")
    shutil.rmtree(run / "teacher")
    ids = torch.randint(5, VOCAB, (6, SEQ))
    batch = TensorData({"input_ids": ids, "attention_mask": torch.ones_like(ids)})
    expected = predict_logits(result.students[0].model, batch, INPUTS)
    for folder in (run / "seed-0" / "student", kit / "export"):
        reloaded, _ = load_saved_model(folder, str(folder))
        assert torch.equal(predict_logits(reloaded, batch, INPUTS), expected)


def _bert_keys(model):
    return {k for k in model.state_dict() if k.startswith("bert.")}


def test_pretrained_student_starts_from_the_pretrained_encoder(kit, monkeypatch):
    student = {"model": f"py:{KIT}:classifier", "args": {"layers": 2}, "inputs": INPUTS,
               "pretrain": _pretrain(steps=60)}
    recipe = recipe_from_dict(_recipe_dict(student), base_dir=kit)
    starts = _spy_starts(monkeypatch)
    run = kit / "run"
    result = run_recipe(recipe, run)
    pretrained, meta = load_saved_model(run / "pretrain", "pretrain", kit, trust_code=True)
    assert type(pretrained).__name__ == "BertForMaskedLM"
    shared = _bert_keys(pretrained) & _bert_keys(result.students[0].model)
    init = json.loads((run / "student_init.json").read_text())
    assert init["copied"] == len(shared) > 0 and init["prefixes"] == ["", ""]
    assert init["student_tensors"] == len(result.students[0].model.state_dict())
    reference = pretrained.state_dict()
    assert len(starts) == 2
    for start in starts:
        for key in shared:
            assert torch.equal(start[key], reference[key]), key
        assert not torch.equal(start["bert.pooler.dense.weight"], torch.zeros_like(start["bert.pooler.dense.weight"]))
    assert all(torch.equal(starts[0][k], starts[1][k]) for k in starts[0])  # scratch starts where distilled starts
    # masked-LM pre-training learned something: its loss fell, and the report says the student was pre-trained
    log = [r["train/loss"] for r in rundir.load_log(run / "pretrain" / "log.jsonl") if "train/loss" in r]
    assert len(log) == 60 and sum(log[-5:]) / 5 < 0.8 * sum(log[:5]) / 5
    metrics = result.report["student_init"]["pretrain"]
    assert metrics["steps"] == 60 and metrics["val_positions"] > 0 and metrics["val_loss"] < 0.9 * log[0]
    assert "pre-trained (well-read student" in (run / "report.md").read_text()


def test_resume_skips_a_completed_pretraining(kit, monkeypatch):
    student = {"model": f"py:{KIT}:classifier", "args": {"layers": 2}, "inputs": INPUTS,
               "pretrain": _pretrain(steps=5)}
    recipe = recipe_from_dict(_recipe_dict(student), base_dir=kit)
    run = kit / "run"
    first = run_recipe(recipe, run)
    pretrain_bytes = (run / "pretrain" / "model.safetensors").read_bytes()
    shutil.rmtree(run / "seed-0" / "scratch")  # as if the run was killed before the baseline
    trained = []
    plain = app_student.plain_training
    for stage in (app_teacher, app_student, app_pretrain):  # every stage that trains with cross-entropy
        monkeypatch.setattr(stage, "plain_training", lambda *a, **k: trained.append(a[8]) or plain(*a, **k))
    second = run_recipe(recipe, run, resume=True)
    assert trained == ["scratch seed 0"]  # no pre-training (and no teacher, no student) again
    assert (run / "pretrain" / "model.safetensors").read_bytes() == pretrain_bytes
    assert second.scratch[0].metrics["accuracy"] == first.scratch[0].metrics["accuracy"]
    ids = torch.randint(5, VOCAB, (6, SEQ))
    batch = TensorData({"input_ids": ids, "attention_mask": torch.ones_like(ids)})
    assert torch.equal(predict_logits(second.scratch[0].model, batch, INPUTS),
                       predict_logits(first.scratch[0].model, batch, INPUTS))


def test_pretraining_that_shares_no_tensor_with_the_student_is_refused(kit):
    student = {"model": f"py:{KIT}:classifier", "args": {"layers": 2}, "inputs": INPUTS,
               "pretrain": {**_pretrain("unrelated", steps=1), "inputs": ["input_ids"]}}
    recipe = recipe_from_dict(_recipe_dict(student), base_dir=kit)
    with pytest.raises(RecipeError, match="recipe.student.pretrain.model: no tensor of the pre-trained Sequential"):
        run_recipe(recipe, kit / "run")


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d["student"].update(pretrain=_pretrain()), "are two alternative initialisations"),
    (lambda d: d.update(teacher={"members": [d["teacher"], d["teacher"]]}), "recipe.teacher is an ensemble"),
    (lambda d: d["teacher"].update(online=True, train=None), "recipe.teacher is an online peer"),
    (lambda d: d["teacher"].update(model="from_teacher"), "recipe.teacher.model: 'from_teacher' builds the student"),
    (lambda d: d["student"].update(checkpoint="w.safetensors"), "recipe.student.checkpoint: a 'from_teacher'"),
])
def test_from_teacher_recipe_errors(change, message):
    data = _recipe_dict({"model": "from_teacher", "inputs": INPUTS})
    change(data)
    with pytest.raises(RecipeError, match=message):
        recipe_from_dict(data)


def test_pretrain_with_a_saved_student_is_refused():
    data = _recipe_dict({"path": "somewhere", "inputs": INPUTS, "pretrain": _pretrain()})
    with pytest.raises(RecipeError, match="recipe.student.pretrain: the student's weights already come from 'path'"):
        recipe_from_dict(data)


def test_hf_config_spec_builds_a_model_from_its_config():
    from kdforge.models import build_model
    from kdforge.models.hf import config_spec

    model = transformers.BertForMaskedLM(transformers.BertConfig(vocab_size=30, hidden_size=8, num_hidden_layers=1,
                                                                 num_attention_heads=2, intermediate_size=16))
    spec, args = config_spec(model)
    rebuilt, _ = build_model(spec, json.loads(json.dumps(args)), None, "recipe.student")
    assert type(rebuilt) is type(model) and rebuilt.config.to_dict() == model.config.to_dict()
    for bad, message in [("hf_config:os", "is not a transformers model class"),
                         ("hf_config:BertModel", "needs the model's config as a mapping")]:
        with pytest.raises(RecipeError, match=message):
            build_model(bad, {}, None, "recipe.student")


def test_copy_matching_weights_aligns_the_base_model_prefix():
    from kdforge.models import copy_matching_weights

    config = transformers.BertConfig(vocab_size=30, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=16, num_labels=3)
    base = transformers.BertModel(config, add_pooling_layer=False)  # names without the `bert.` prefix
    target = transformers.BertForSequenceClassification(config)
    copied = copy_matching_weights(base.state_dict(), target)
    assert (copied.source_prefix, copied.target_prefix) == ("", "bert.")
    assert len(copied.names) == len(base.state_dict())
    assert torch.equal(target.bert.encoder.layer[0].output.dense.weight, base.encoder.layer[0].output.dense.weight)
