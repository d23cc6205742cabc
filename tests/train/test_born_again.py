"""Born-again networks (Furlanello et al. 2018), driven through the loop directly: generation 1 learns from a
trained teacher, generation 2 (the same architecture) from generation 1 as an online teacher.

The recipe-level test (`generations: 3`) is tests/test_strategies.py::test_born_again_generations_teach_each_other.
"""

import contextlib
import json

import torch
import torch.nn.functional as F
from accelerate import Accelerator

from kdforge.losses.base import WeightedSum
from kdforge.losses.ce import CELoss
from kdforge.losses.kd import KDLoss
from kdforge.models.builtin import MLP
from kdforge.train.config import LoopConfig
from kdforge.train.loop import TrainJob, fit
from kdforge.train.module import DistillModule, OnlineTeacher
from kdforge.types import TensorData


def data(n=120, seed=0):
    """Three classes in 4-d, not linearly trivial: the label is which of three directions scores highest."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    return TensorData({"x": x, "labels": (x[:, :3] + 0.5 * x[:, 3:]).argmax(-1)})


CONFIG = LoopConfig(batch_size=20, lr=0.02, progress=False, checkpoint_every=1000)


def train(name, model, loss, teacher, train_data, folder, steps=60):
    source = OnlineTeacher(teacher, ["x"]) if teacher is not None else None
    with DistillModule(model, loss, ["x"]) as module, source or contextlib.nullcontext():
        return fit(TrainJob(name, module, source, train_data, CONFIG, steps, folder), Accelerator())


def predictions(model, x):
    model.eval()
    with torch.no_grad():
        return model(x)


def test_generation_two_learns_from_generation_one(tmp_path):
    train_data = data()
    x, labels = train_data.tensors["x"], train_data.tensors["labels"]
    torch.manual_seed(0)
    teacher = MLP(input_shape=(4,), num_classes=3, hidden=(32,))
    train("teacher", teacher, WeightedSum({"ce": CELoss()}, {"ce": 1.0}), None, train_data, tmp_path / "teacher")

    torch.manual_seed(1)
    generation_1 = MLP(input_shape=(4,), num_classes=3, hidden=(16,))
    kd_and_ce = WeightedSum({"kd": KDLoss(2.0), "ce": CELoss()}, {"kd": 0.9, "ce": 0.1})
    first = train("generation 1", generation_1, kd_and_ce, teacher, train_data, tmp_path / "generation-1")
    assert first.steps == 60

    torch.manual_seed(2)
    generation_2 = MLP(input_shape=(4,), num_classes=3, hidden=(16,))  # the same architecture, new weights
    teacher_logits = predictions(generation_1, x)
    before = F.kl_div(F.log_softmax(predictions(generation_2, x), -1), F.log_softmax(teacher_logits, -1),
                      log_target=True, reduction="batchmean").item()
    gen_1_weights = {k: v.clone() for k, v in generation_1.state_dict().items()}
    # generation 2 sees no label: everything it learns comes from generation 1's outputs
    train("generation 2", generation_2.train(), WeightedSum({"kd": KDLoss(1.0)}, {"kd": 1.0}), generation_1,
          train_data, tmp_path / "generation-2")

    assert all(torch.equal(gen_1_weights[k], v) for k, v in generation_1.state_dict().items())  # a frozen teacher
    after_logits = predictions(generation_2, x)
    after = F.kl_div(F.log_softmax(after_logits, -1), F.log_softmax(teacher_logits, -1), log_target=True,
                     reduction="batchmean").item()
    assert after < 0.2 * before
    agreement = (after_logits.argmax(-1) == teacher_logits.argmax(-1)).float().mean().item()
    assert agreement > 0.9
    assert (after_logits.argmax(-1) == labels).float().mean().item() > 0.8  # the task, learned through generation 1
    log = [json.loads(line) for line in (tmp_path / "generation-2" / "log.jsonl").read_text().splitlines()]
    assert set(log[0]) >= {"train/loss", "train/kd"} and "train/ce" not in log[0]
    assert sum(r["train/kd"] for r in log[-10:]) < 0.5 * sum(r["train/kd"] for r in log[:10])
