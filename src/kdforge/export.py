"""`kdforge export RUN_DIR --format safetensors|onnx`: the distilled student alone, ready to ship.

Only the student's own weights leave: whatever else training used (projection adapters, loss parameters,
the teacher, optimizer state, checkpoints) stays behind, because the student is rebuilt from its saved
architecture spec and loaded strictly. Every export is checked before it is reported:

- `safetensors`: `model.safetensors` + `model.json` (how to rebuild it: `kdforge.models.load_saved_model`, or
  `path:` in a recipe); reloaded and compared with the original on real inputs.
- `onnx` (needs `pip install 'kdforge[onnx]'`): `model.onnx` with a dynamic batch axis, run with
  onnxruntime on real inputs and compared with PyTorch's logits.

Both also write `export.json`: where the model came from, its inputs and outputs, and the check's result.

The preprocessing the run applied travels with the model (`preprocess` in model.json and export.json;
`kdforge.models.preprocess`): standardised features are standardised by the exported model itself (a module in
front of it, the first operations of the ONNX graph), so both formats take the raw features, and the check feeds
them raw inputs. A text run's tokenizer is copied beside the model as `tokenizer.json`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from kdforge import io
from kdforge.errors import KDForgeError
from kdforge.models import load_saved_model, save_model
from kdforge.models.forward import call_model, logits_of
from kdforge.models.preprocess import raw_inputs, with_preprocess

FORMATS = ("safetensors", "onnx")
ONNX_OPSET = 17


@dataclass
class ExportResult:
    """What `export_student` wrote and how closely the exported model reproduces the original."""

    out_dir: Path
    files: list[str]
    max_abs_diff: float
    info: dict[str, Any]


class _Positional(nn.Module):
    """The model with its batch keys as positional arguments and plain logits out (what ONNX export needs)."""

    def __init__(self, model: nn.Module, inputs: list[str]) -> None:
        super().__init__()
        self.model, self.inputs = model, list(inputs)

    def forward(self, *tensors: Tensor) -> Tensor:
        return logits_of(call_model(self.model, dict(zip(self.inputs, tensors, strict=True)), self.inputs))


@torch.no_grad()
def _torch_logits(model: nn.Module, batch: dict[str, Tensor], inputs: list[str]) -> Tensor:
    return logits_of(call_model(model, batch, inputs)).float()


def export_model(model: nn.Module, meta: dict[str, Any], example: dict[str, Tensor], out_dir: str | Path,
                 fmt: str = "safetensors", overwrite: bool = False, source: dict[str, Any] | None = None,
                 atol: float = 1e-4, base_dir: str | Path | None = None, preprocess: dict[str, Any] | None = None,
                 tokenizer: str | None = None) -> ExportResult:
    """Export one saved kdforge model (as `load_saved_model` returns it) and check the result.

    Args:
        model: The model.
        meta: Its `model.json` (architecture spec, args, inputs).
        example: A batch of real inputs (the checks run on it; ONNX tracing uses it).
        out_dir: Folder to write.
        fmt: `safetensors` or `onnx`.
        overwrite: Replace a non-empty `out_dir`.
        source: Provenance recorded in export.json (run folder, seed).
        atol: Largest absolute logit difference the check accepts (plus 1e-3 relative).
        base_dir: Folder `py:` model references resolve against (the recipe's folder).
        preprocess: What the run did to raw inputs (`DataBundle.preprocess`); the exported model does it too, so it
            takes raw inputs, and `example` (preprocessed, as the model saw it) is turned back into raw inputs for
            the check.
        tokenizer: A text run's tokenizer (tokenizer.json text), shipped beside the model.
    """
    if fmt not in FORMATS:
        raise KDForgeError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}.")
    out = Path(out_dir)
    inputs = list(meta["inputs"])
    model.eval()
    reference = _torch_logits(model, example, inputs)
    pre = {k: v for k, v in (preprocess or {}).items() if k == "standardize" and v}
    if tokenizer is not None:
        pre["tokenizer"] = "tokenizer.json"
    shipped = with_preprocess(model, pre, "export").eval()
    raw = raw_inputs(example, pre)  # what a user feeds the exported model
    if fmt == "onnx":
        ort = _onnx_modules()
    io.empty_dir(out, overwrite, "export folder")
    info: dict[str, Any] = {"format": fmt, "source": source or {}, "model": meta["model"], "args": meta["args"],
                            "inputs": {k: {"dtype": str(example[k].dtype).removeprefix("torch."),
                                           "shape": ["batch", *example[k].shape[1:]]} for k in inputs},
                            "outputs": {"logits": {"shape": ["batch", int(reference.shape[-1])]}},
                            "params": sum(p.numel() for p in model.parameters()), "preprocess": pre}
    files = []
    if tokenizer is not None:
        io.write_text(out / "tokenizer.json", tokenizer)
        files.append("tokenizer.json")
    if fmt == "safetensors":
        save_model(model, out, meta["model"], meta["args"], inputs, extra={"preprocess": pre} if pre else None)
        rebuilt, _ = load_saved_model(out, str(out), base_dir, trust_code=True)  # what this call just wrote
        got = _torch_logits(rebuilt.eval(), raw, inputs)
        files = ["model.safetensors", "model.json", *files]
        info["check"] = "reloaded with kdforge.models.load_saved_model"
    else:
        path = out / "model.onnx"
        wrapper = _Positional(shipped, inputs).eval()
        args = tuple(raw[k] for k in inputs)
        axes = {name: {0: "batch"} for name in [*inputs, "logits"]}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter announces its deprecation
            io.write_with(path, lambda tmp: torch.onnx.export(
                wrapper, args, str(tmp), input_names=inputs, output_names=["logits"], dynamic_axes=axes,
                opset_version=ONNX_OPSET, dynamo=False))
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        feed = {k: raw[k].numpy() for k in inputs}
        got = torch.from_numpy(session.run(["logits"], feed)[0]).float()
        files = ["model.onnx", *files]
        info.update(opset=ONNX_OPSET, check=f"onnxruntime {ort.__version__} vs PyTorch")
    max_diff = float((got - reference).abs().max()) if got.shape == reference.shape else float("inf")
    info.update(check_rows=int(reference.shape[0]), max_abs_diff=max_diff)
    if not torch.allclose(got, reference, atol=atol, rtol=1e-3):
        raise KDForgeError(f"export check failed: the {fmt} model's logits differ from PyTorch's by up to "
                           f"{max_diff:.3g} (allowed {atol:g}). The model may use an operation the exporter "
                           "does not support; export as safetensors instead.")
    io.write_json(out / "export.json", info)
    return ExportResult(out, [*files, "export.json"], max_diff, info)


def _onnx_modules() -> Any:
    try:
        import onnx  # noqa: F401
        import onnxruntime
    except ImportError:
        raise KDForgeError("--format onnx needs the onnx extra: pip install 'kdforge[onnx]' "
                           "(onnx and onnxruntime).") from None
    return onnxruntime


def export_student(run_dir: str | Path, fmt: str = "safetensors", out_dir: str | Path | None = None,
                   seed: int | None = None, kind: str = "student", overwrite: bool = False,
                   recipe_dir: str | Path | None = None, check_rows: int = 64,
                   trust_code: bool = False) -> ExportResult:
    """Export a run's student (default: the seed its report evaluated) and check it on test inputs.

    Args:
        run_dir: The run folder.
        fmt: `safetensors` or `onnx`.
        out_dir: Where to write (default: RUN_DIR/export/<format>).
        seed: Which seed's student.
        kind: `student` (distilled) or `scratch` (the baseline).
        overwrite: Replace a non-empty `out_dir`.
        recipe_dir: Where the recipe lived, for `py:` models (default: as recorded in report.json).
        check_rows: Test rows the exported model is checked on.
        trust_code: Import the `py:` code the run folder names (it is someone else's data otherwise).
    """
    from kdforge.app.data import saved_preprocess
    from kdforge.report.run import open_run, run_data, student_folder, trusting

    if kind not in ("student", "scratch"):
        raise KDForgeError(f"kind {kind!r}: choose 'student' or 'scratch'.")
    run = open_run(run_dir, recipe_dir, trust_code)
    seed, folder = student_folder(run, seed, kind)
    with trusting(run):
        model, meta = load_saved_model(folder, str(folder), run.base_dir, trust_code)
        data = run_data(run)
    test = data.test
    example = {k: v for k, v in test[slice(0, check_rows)].items() if k in meta["inputs"]}
    tokenizer_file = run.out_dir / "tokenizer.json"
    tokenizer = tokenizer_file.read_text(encoding="utf-8") if tokenizer_file.is_file() else None
    out = Path(out_dir) if out_dir is not None else run.out_dir / "export" / fmt
    source = {"run": str(run.out_dir.resolve()), "seed": seed, "kind": kind, "folder": str(folder.resolve())}
    if run.base_dir is not None:
        source["recipe_dir"] = run.base_dir  # `py:` models rebuild from there
    with trusting(run):
        return export_model(model, meta, example, out, fmt, overwrite, source, base_dir=run.base_dir,
                            preprocess=saved_preprocess(run.out_dir, data), tokenizer=tokenizer)
