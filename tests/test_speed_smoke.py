"""benchmarks/speed.py runs end to end in its quick mode and writes its tables (no timing assertions)."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_speed_benchmark_quick_mode_writes_its_tables(tmp_path):
    spec = importlib.util.spec_from_file_location("speed_benchmark", ROOT / "benchmarks" / "speed.py")
    speed = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(speed)
    out = tmp_path / "speed.md"
    speed.main(["--quick", "--out", str(out)])
    text = out.read_text()
    for heading in ("## Epoch time, CPU (median)", "## Where a tiny-student step goes", "## Cache size at a 32k"):
        assert heading in text
    assert "| tiny (4,810 params) | 274x" in text
    ratio_row = next(line for line in text.splitlines() if line.startswith("| **ratio** |"))
    assert float(ratio_row.split("**")[3].rstrip("%")) < 1.0  # top-64 of a 32k vocabulary: bytes, not time
