"""One loss truth: every token-level loss path (kdforge.loss_paths.PATHS) against the float64 reference
(kdforge.losses.reference), on value and gradient, for every combination of option values; a value a path
does not honour must be refused (the loss raises, or its teacher format's preflight check gives a reason)."""

import itertools
from pathlib import Path

import pytest
import torch

from kdforge.errors import KDForgeError
from kdforge.loss_paths import OPTIONS, PATHS, LossPath, TeacherFormat, markdown_table
from kdforge.losses import LOSSES
from kdforge.losses import reference as ref
from kdforge.losses.base import Outputs, Targets
from kdforge.losses.fused_linear import LinearHead

B, T, H = 2, 5, 3
V, V_PADDED, V_REAL = 13, 15, 11  # "padded": the student has V, the teacher V_PADDED rows, vocab_size V_REAL
BETA, ALPHA, SOFTCAP, SCALE = 0.3, 0.2, 2.0, 0.6
DOCS = Path(__file__).resolve().parents[2] / "docs" / "llm.md"


class Refused(Exception):
    pass


def inputs(vocab: str, positions: str):
    g = torch.Generator().manual_seed(7)
    t_vocab = V_PADDED if vocab == "padded" else V
    leaves = {
        "h_s": torch.randn(B, T, H, generator=g, dtype=torch.float64),
        "w_s": torch.randn(V, H, generator=g, dtype=torch.float64) * 1.5,
        "b_s": torch.randn(V, generator=g, dtype=torch.float64),
    }
    for leaf in leaves.values():
        leaf.requires_grad_(True)
    teacher = (torch.randn(B, T, H, generator=g, dtype=torch.float64),
               torch.randn(t_vocab, H, generator=g, dtype=torch.float64) * 2, torch.randn(t_vocab, generator=g,
                                                                                          dtype=torch.float64))
    labels = torch.randint(0, V_REAL, (B, T), generator=g)
    mask = None
    if positions in ("mask", "ignore_index"):
        labels[0, 1] = labels[1, 3] = -100
    if positions == "mask":
        mask = labels != -100
        mask[1, 0] = False
    return leaves, teacher, labels, mask


def loss_arguments(path: LossPath, case: dict) -> dict:
    """Only the options that differ from a plain forward KL are passed, so a loss without them (kd) refuses."""
    args = {**path.args, "temperature": case["temperature"]}
    if case["divergence"] != "forward_kl":
        args["divergence"] = case["divergence"]
        args.update({"jsd": {"beta": BETA}, "skew_kl": {"alpha": ALPHA},
                     "skew_reverse_kl": {"alpha": ALPHA}}.get(case["divergence"], {}))
    if case["vocab"] == "padded":
        args["vocab_size"] = V_REAL
    return args


def run(path: LossPath, case: dict):
    """(value, gradients w.r.t. the student's h, W, b) of the path, and of the reference; Refused if refused."""
    leaves, (h_t, w_t, b_t), labels, mask = inputs(case["vocab"], case["positions"])
    softcap = SOFTCAP if case["logits"] == "softcap" else None
    scale = SCALE if case["logits"] == "scale" else 1.0
    s_logits = ref.model_logits(leaves["h_s"].flatten(0, 1), leaves["w_s"], leaves["b_s"], softcap, scale)
    t_logits = ref.model_logits(h_t.flatten(0, 1), w_t, b_t, softcap, scale)
    teacher_signal = t_logits.reshape(B, T, -1)
    want_teacher = t_logits
    if isinstance(path.teacher, TeacherFormat):
        teacher_signal = path.teacher.encode(teacher_signal)
        want_teacher = path.teacher.reference(teacher_signal)
    elif path.teacher == "head":
        teacher_signal = LinearHead(h_t, w_t, b_t, softcap, scale)
    counted = ref.counted_tokens((B, T), labels, mask)
    want = ref.token_loss(s_logits, want_teacher, counted, case["divergence"], case["temperature"], BETA, ALPHA,
                          V_REAL if case["vocab"] == "padded" else None)
    want_grads = torch.autograd.grad(want, list(leaves.values()))

    student = (LinearHead(leaves["h_s"], leaves["w_s"], leaves["b_s"], softcap, scale) if path.student == "head"
               else ref.model_logits(leaves["h_s"].flatten(0, 1), leaves["w_s"], leaves["b_s"], softcap,
                                     scale).reshape(B, T, -1))
    try:
        loss = LOSSES.get(path.loss)(**loss_arguments(path, case))
        if isinstance(path.teacher, TeacherFormat):
            reason = path.teacher.refusal(loss)
            if reason is not None:
                raise Refused(reason)
        got = loss(Outputs(logits=student), Outputs(logits=teacher_signal), Targets(labels=labels, mask=mask))
    except (TypeError, ValueError, KDForgeError) as exc:
        raise Refused(str(exc)) from exc
    got_grads = torch.autograd.grad(got, list(leaves.values()))
    return (got, got_grads), (want, want_grads)


def cases(divergence: str):
    rest = [option for option in OPTIONS if option != "divergence"]
    for values in itertools.product(*(OPTIONS[option] for option in rest)):
        yield {"divergence": divergence, **dict(zip(rest, values, strict=True))}


@pytest.mark.parametrize("divergence", OPTIONS["divergence"])
@pytest.mark.parametrize("path", PATHS, ids=[p.name for p in PATHS])
def test_every_path_matches_the_reference_or_refuses(path, divergence):
    checked = refused = 0
    for case in cases(divergence):
        honoured = all(path.supports(option, case[option]) for option in OPTIONS)
        gap = [text for (option, value), text in path.gaps.items() if case[option] == value]
        if not honoured:
            with pytest.raises(Refused):
                run(path, case)
            refused += 1
            continue
        (got, got_grads), (want, want_grads) = run(path, case)
        if gap:  # a documented gap: the path computes something else; fails once fixed, so the table is updated
            assert abs(float(got.detach()) - float(want.detach())) > 1e-6, (path.name, case, "gap closed: edit PATHS")
            continue
        assert float(got.detach()) == pytest.approx(float(want.detach()), rel=1e-9, abs=1e-12), (path.name, case)
        for name, g, w in zip(("h", "W", "b"), got_grads, want_grads, strict=True):
            torch.testing.assert_close(g, w, rtol=1e-8, atol=1e-11, msg=lambda m, n=name, c=case: f"{path.name} "
                                       f"{c} d/d{n}: {m}")
        checked += 1
    assert checked + refused > 0


def test_the_reference_is_not_trivially_matched():
    """The options move the reference: soft cap, scale, padding, masking and temperature all change the value."""
    base = {"divergence": "jsd", "temperature": 1.0, "positions": "all", "vocab": "same", "logits": "plain"}
    path = PATHS[0]
    (_, _), (want, _) = run(path, base)
    for option, value in (("logits", "softcap"), ("logits", "scale"), ("vocab", "padded"),
                          ("positions", "mask"), ("positions", "ignore_index"), ("temperature", 2.0)):
        (_, _), (other, _) = run(path, {**base, option: value})
        assert abs(float(other.detach()) - float(want.detach())) > 1e-4, (option, value)


def test_every_path_names_a_registered_loss_and_known_options():
    for path in PATHS:
        assert path.loss in LOSSES
        assert set(path.honours) <= set(OPTIONS)
        for option, values in path.honours.items():
            assert set(values) <= set(OPTIONS[option]), (path.name, option)


def test_the_command_prints_the_table(capsys):
    from kdforge.loss_paths import main

    main(["--markdown"])
    assert capsys.readouterr().out == markdown_table()


def test_docs_table_is_the_generated_one():
    text = DOCS.read_text()
    start = "<!-- generated by `python -m kdforge.loss_paths --markdown`: do not edit -->\n"
    end = "<!-- end of generated table -->"
    assert start in text and end in text, "docs/llm.md lost the markers of the generated paths table"
    table = text.split(start, 1)[1].split(end, 1)[0]
    assert table == markdown_table(), ("docs/llm.md's 'What each path supports' table differs from PATHS; "
                                       "regenerate it with python -m kdforge.loss_paths --markdown")
