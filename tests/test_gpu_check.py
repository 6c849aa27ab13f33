"""bench/gpu_check.py --smoke: the GPU check's code runs on a CPU, so it still works the day a GPU is lent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("tiny", "vae", "steps", "memory")
GPU_ONLY = ("offload model", "offload sequential", "quantize int8", "quantize nf4")
"""Memory modes that cannot run without CUDA: their rows must say so."""


def table_rows(text: str) -> list[list[str]]:
    lines = [line for line in text.splitlines() if line.startswith("|")]
    assert lines[0].split("|")[1].strip() == "part" and set(lines[1]) <= set("|-"), lines[:2]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]


def test_smoke_run_writes_one_table_with_every_part_and_says_why_gpu_rows_did_not_run(tmp_path):
    rates = tmp_path / "skip_rates.json"  # as bench/cache.py --skip-rates writes it
    rates.write_text(json.dumps({"full": {"blocks": 1.0, "attention": 1.0}, "pab": {"blocks": 1.0, "attention": 0.6}}))
    out = tmp_path / "check.md"
    command = [sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--smoke", "--skip-rates", str(rates)]
    env = {**os.environ, "PYTHONPATH": "", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run([*command, "--out", str(out)], cwd=tmp_path, env=env, capture_output=True, timeout=600)
    assert done.returncode == 0, done.stderr.decode()[-3000:]

    rows = table_rows(out.read_text())
    assert all(len(row) == 5 for row in rows), rows
    assert {row[0] for row in rows} >= set(PARTS)
    errors = [row for row in rows if row[2] == "error"]
    assert not errors, errors
    for mode in GPU_ONLY:
        (row,) = [row for row in rows if row[:2] == ["memory", mode]]
        assert row[2] == "not run" and "GPU" in row[3], row
    ran = {row[1] for row in rows if row[2] != "not run"}
    assert {"offload none: one step", "offload none: 2-step generation 9x64x96", "step with reference, compiled"} <= ran
    assert "cache speed-up, pab (ESTIMATE)" in ran
    printed = [line for line in done.stdout.decode().splitlines() if line.startswith("|")]
    assert printed == out.read_text().splitlines()  # the same table on the terminal as in the file
