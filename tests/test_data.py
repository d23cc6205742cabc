import numpy as np
import pytest
import torch

from kdforge.data import load_data
from kdforge.data.tensors import TensorData, epoch_order, iterate_batches
from kdforge.errors import KDForgeError, RecipeError, UnknownNameError
from kdforge.losses.base import IGNORE_INDEX
from kdforge.recipe import DataSpec


def test_digits_splits_and_shapes():
    data = load_data(DataSpec(source="sklearn:digits", test_size=0.2, val_size=0.1))
    assert data.info.input_shape == (1, 8, 8) and data.info.num_classes == 10
    assert len(data.teacher_train) + len(data.val) + len(data.test) == 1797
    assert len(data.test) == 360
    assert float(data.test.tensors["x"].max()) <= 1.0


def test_student_labels_and_transfer_set():
    data = load_data(DataSpec(source="sklearn:digits", student_labels=100))
    labels = data.student_train.tensors["labels"]
    assert len(data.student_train) == len(data.teacher_train)
    assert int((labels != IGNORE_INDEX).sum()) == 100
    assert len(data.scratch_train) == 100
    # the scratch set is exactly the student's labelled rows, and covers every class
    assert set(data.scratch_train.tensors["index"].tolist()) == set(
        data.student_train.tensors["index"][labels != IGNORE_INDEX].tolist())
    assert len(torch.unique(data.scratch_train.tensors["labels"])) == 10


def test_no_transfer_set_keeps_only_labelled_rows():
    data = load_data(DataSpec(source="sklearn:digits", student_labels=50, transfer_set=False))
    assert len(data.student_train) == 50


def test_tabular_sources_are_standardised_on_train():
    data = load_data(DataSpec(source="sklearn:breast_cancer"))
    x = data.teacher_train.tensors["x"]
    assert torch.allclose(x.mean(0), torch.zeros(30), atol=1e-4)


def test_py_source(tmp_path):
    (tmp_path / "my_data.py").write_text(
        "import numpy as np\n"
        "def make(n=40):\n"
        "    rng = np.random.default_rng(0)\n"
        "    x = rng.normal(size=(n, 3)).astype('float32')\n"
        "    return x, (x[:, 0] > 0).astype('int64')\n"
    )
    data = load_data(DataSpec(source="py:my_data:make", args={"n": 60}, val_size=0.0), base_dir=tmp_path)
    assert len(data.teacher_train) + len(data.test) == 60 and data.val is None


def test_bad_sources():
    with pytest.raises(UnknownNameError, match="unknown dataset 'sklearn:digit'. Did you mean 'sklearn:digits'"):
        load_data(DataSpec(source="sklearn:digit"))
    with pytest.raises(RecipeError, match="cannot import module 'no_such_module'"):
        load_data(DataSpec(source="py:no_such_module:f"))
    with pytest.raises(RecipeError, match="cannot cover 10 classes"):
        load_data(DataSpec(source="sklearn:digits", student_labels=5))


def test_empty_and_ragged_data_are_errors():
    with pytest.raises(KDForgeError, match="empty"):
        TensorData({"x": torch.zeros(0, 2)})
    with pytest.raises(KDForgeError, match="different lengths"):
        TensorData({"x": torch.zeros(3, 2), "labels": torch.zeros(2)})


def test_epoch_order_depends_only_on_seed_and_epoch():
    assert torch.equal(epoch_order(50, 3, 7), epoch_order(50, 3, 7))
    assert not torch.equal(epoch_order(50, 3, 7), epoch_order(50, 3, 8))


def test_resumed_stream_continues_the_same_sequence():
    data = TensorData({"x": torch.arange(10).float()[:, None]})
    full = iterate_batches(data, 4, seed=1)
    first = [next(full)["index"].tolist() for _ in range(7)]
    resumed = iterate_batches(data, 4, seed=1, start_step=4)
    assert [next(resumed)["index"].tolist() for _ in range(3)] == first[4:]


def test_processes_split_each_global_batch():
    data = TensorData({"x": torch.arange(8).float()[:, None]})
    whole = next(iterate_batches(data, 8, seed=0))["index"]
    parts = [next(iterate_batches(data, 8, seed=0, process_index=i, num_processes=2))["index"] for i in range(2)]
    assert torch.equal(torch.cat(parts), whole)
    assert np.intersect1d(parts[0].numpy(), parts[1].numpy()).size == 0


def _text_recipe(folder, tokenizer: str):
    """A recipe file in `folder` whose text data names `tokenizer` (a path or module beside the recipe)."""
    import yaml

    encoder = {"model": "py:kdforge.models.sentence:sentence_encoder",
               "args": {"encoder": "builtin:bert", "encoder_args": {"task": "base", "vocab_size": 100,
                                                                    "input_shape": [8], "num_classes": 0,
                                                                    "layers": 1, "hidden": 8, "heads": 1}},
               "inputs": ["input_ids", "attention_mask"]}
    recipe = {"name": "text-base-dir", "seeds": [0], "baseline": False,
              "data": {"source": "text:stdlib_sentences", "args": {"tokenizer": tokenizer, "seq_len": 8, "limit": 20}},
              "teacher": encoder, "student": encoder, "losses": [{"name": "embed_mse"}],
              "train": {"max_steps": 1, "progress": False}}
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def _load_from_elsewhere(path, elsewhere, monkeypatch):
    from kdforge.recipe import load_recipe

    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the recipe's neighbours are not in the working directory
    recipe = load_recipe(path)
    return load_data(recipe.data, recipe._base_dir)


def test_text_recipe_finds_a_py_tokenizer_module_beside_it(tmp_path, monkeypatch):
    pytest.importorskip("tokenizers")
    module = f"beside_tok_{tmp_path.name.replace('-', '_')}"  # unique: sys.modules outlives the test
    (tmp_path / "recipe").mkdir()
    (tmp_path / "recipe" / f"{module}.py").write_text(
        "from kdforge.models.sentence import char_tokenizer\n\ndef make():\n    return char_tokenizer()\n")
    data = _load_from_elsewhere(_text_recipe(tmp_path / "recipe", f"py:{module}:make"), tmp_path / "cwd",
                                monkeypatch)
    assert data.test.tensors["input_ids"].shape[1] == 8
    assert int(data.test.tensors["input_ids"].max()) < 100  # the character vocabulary's ids, not a wordpiece's


def test_text_recipe_finds_an_hf_tokenizer_folder_beside_it(tmp_path, monkeypatch):
    transformers = pytest.importorskip("transformers")
    from kdforge.models.sentence import char_tokenizer

    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=char_tokenizer(), pad_token="[PAD]",
                                                unk_token="[UNK]")
    fast.save_pretrained(tmp_path / "recipe" / "tok")
    data = _load_from_elsewhere(_text_recipe(tmp_path / "recipe", "hf:tok"), tmp_path / "cwd", monkeypatch)
    assert int(data.test.tensors["input_ids"].max()) < 100
    assert not (tmp_path / "cwd" / "tok").exists()
