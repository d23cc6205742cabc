"""Loading models and weights from files the tests write: safetensors, weights-only torch files, saved
kdforge folders, and Hugging Face folders."""

import pytest
import torch
from safetensors.torch import save_file

from kdforge.app.teacher import obtain_teacher
from kdforge.errors import KDForgeError, RecipeError
from kdforge.models import DataInfo, build_model, load_saved_model, save_model
from kdforge.models.builtin import MLP
from kdforge.recipe import recipe_from_dict

INFO = DataInfo((4,), 3)


def test_builtin_models_size_themselves_from_the_data():
    model, args = build_model("builtin:cnn", {"channels": [4, 8]}, DataInfo((1, 8, 8), 10), "recipe.student")
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    assert args["input_shape"] == [1, 8, 8] and args["num_classes"] == 10


def test_bad_builtin_arguments_name_the_field():
    with pytest.raises(RecipeError, match=r"recipe.student.args: builtin:mlp does not accept"):
        build_model("builtin:mlp", {"width": 3}, INFO, "recipe.student")


def test_saved_folder_round_trip_and_corruption(tmp_path):
    model, args = build_model("builtin:mlp", {"hidden": [5]}, INFO, "m")
    save_model(model, tmp_path / "m", "builtin:mlp", args, ["x"])
    loaded, meta = load_saved_model(tmp_path / "m", "recipe.teacher")
    x = torch.randn(3, 4)
    assert torch.equal(model(x), loaded(x)) and meta["params"] == sum(p.numel() for p in model.parameters())
    blob = bytearray((tmp_path / "m" / "model.safetensors").read_bytes())
    blob[-1] ^= 0xFF
    (tmp_path / "m" / "model.safetensors").write_bytes(bytes(blob))
    with pytest.raises(KDForgeError, match="corrupted"):
        load_saved_model(tmp_path / "m", "recipe.teacher")


def _recipe(teacher):
    return recipe_from_dict({
        "data": {"source": "sklearn:iris"}, "teacher": teacher, "student": {"model": "builtin:mlp"},
        "losses": [{"name": "kd"}],
    }, base_dir=None)


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_teacher_from_a_checkpoint_file(tmp_path, suffix):
    from kdforge.data import load_data

    torch.manual_seed(3)
    reference = MLP(input_shape=(4,), num_classes=3, hidden=(7,))
    path = tmp_path / f"teacher{suffix}"
    if suffix == ".safetensors":
        save_file(reference.state_dict(), str(path))
    else:
        torch.save(reference.state_dict(), path)
    recipe = _recipe({"model": "builtin:mlp", "args": {"hidden": [7]}, "checkpoint": str(path)})
    data = load_data(recipe.data)
    teacher = obtain_teacher(recipe, data, tmp_path / "run", resume=False)
    x = torch.randn(2, 4)
    assert torch.equal(teacher(x), reference(x))


def test_checkpoint_that_does_not_fit_names_the_keys(tmp_path):
    from kdforge.data import load_data

    save_file(MLP(input_shape=(4,), num_classes=3, hidden=(9,)).state_dict(), str(tmp_path / "t.safetensors"))
    recipe = _recipe({"model": "builtin:mlp", "args": {"hidden": [7]}, "checkpoint": str(tmp_path / "t.safetensors")})
    expected = r"recipe.teacher.checkpoint: the weights do not fit the model.*wrong shapes"
    with pytest.raises(KDForgeError, match=expected):
        obtain_teacher(recipe, load_data(recipe.data), tmp_path / "run", resume=False)


def test_pickled_object_in_a_torch_file_is_refused(tmp_path):
    from kdforge.io import load_weights_file

    torch.save({"weights": torch.zeros(2), "extra": object()}, tmp_path / "w.pt")
    with pytest.raises(KDForgeError, match="weights_only=True"):
        load_weights_file(tmp_path / "w.pt", "recipe.teacher.checkpoint")


def test_hf_model_from_a_local_folder(tmp_path):
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=16, num_labels=3)
    torch.manual_seed(0)
    original = transformers.BertForSequenceClassification(config).eval()
    original.save_pretrained(tmp_path / "bert")
    loaded, _ = build_model("hf:bert", {"task": "sequence_classification"}, None, "recipe.teacher",
                            base_dir=tmp_path)
    ids = torch.randint(0, 50, (2, 6))
    assert torch.allclose(original(input_ids=ids).logits, loaded.eval()(input_ids=ids).logits)
    with pytest.raises(KDForgeError, match="cannot load hf:missing"):
        build_model("hf:missing", {}, None, "recipe.teacher", base_dir=tmp_path)
