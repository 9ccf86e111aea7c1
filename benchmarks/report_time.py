"""Report benchmark: wall time of ``evaluation batch STUDY --fast --jobs N`` against its floor.

    .venv/bin/python benchmarks/report_time.py                          # the demo, 3 repeats, 2 jobs
    .venv/bin/python benchmarks/report_time.py --repeats 1 --jobs 2 --json times.json

Each repeat runs the batch as its own process (``python -m evaluation batch``) into a fresh
temporary ``EVALUATION_OUTPUT_ROOT``, so nothing is reused. Printed per repeat and as the
median (min-max) over repeats:

- ``wall``: the batch's wall-clock time, start to exit (the kernels, the HTML export, the
  deliverables and the index included);
- ``cells``: the sum over all chapter runs of the time their cells ran in the kernel
  (papermill's ``duration`` of each cell, read from the executed notebooks): the
  computations, plus each kernel's first import of the package and its libraries;
- ``floor``: ``cells / min(jobs, cores)``, the time the computations take spread evenly
  over the workers; ``wall / floor`` is the overhead factor (the goal of issue 17: 1.3).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent


def cell_seconds(folder: Path) -> tuple[float, int]:
    """The sum of the cells' papermill durations over the executed notebooks in ``folder``."""
    total, runs = 0.0, 0
    for path in sorted(folder.glob("*.ipynb")):
        nb = json.loads(path.read_text(encoding="utf-8"))
        runs += 1
        for cell in nb.get("cells", []):
            duration = cell.get("metadata", {}).get("papermill", {}).get("duration")
            if duration is not None:
                total += float(duration)
    return total, runs


def one_batch(study: str, jobs: int, extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory(prefix="report-time-") as root:
        env = {**os.environ, "EVALUATION_OUTPUT_ROOT": root, "PYTHONPATH": str(PROJECT)}
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "evaluation", "batch", study, "--fast", "--jobs", str(jobs),
                               *extra], cwd=PROJECT, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"batch exited {done.returncode}:\n{done.stderr[-3000:]}")
        folders = [p for p in Path(root).iterdir() if p.is_dir() and not p.name.startswith(".")]
        manifest = json.loads((folders[0] / "manifest.json").read_text(encoding="utf-8"))
        cells, runs = cell_seconds(folders[0])
    workers = min(jobs, os.cpu_count() or 1)
    return {"wall": wall, "cells": cells, "runs": runs, "floor": cells / workers, "ratio": wall / (cells / workers),
            "run_seconds": sum(r.get("seconds", 0.0) for r in manifest["runs"])}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default="studies/demo.yml")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="also write the measurements to this file")
    parser.add_argument("extra", nargs="*", help="more arguments for evaluation batch (after --)")
    args = parser.parse_args(argv)
    rows = []
    for i in range(args.repeats):
        row = one_batch(args.study, args.jobs, args.extra)
        rows.append(row)
        print(f"repeat {i + 1}: wall {row['wall']:.1f} s, cells {row['cells']:.1f} s over {row['runs']} runs, "
              f"worker time {row['run_seconds']:.1f} s, floor {row['floor']:.1f} s, wall/floor {row['ratio']:.2f}",
              flush=True)
    for key in ("wall", "cells", "run_seconds", "floor", "ratio"):
        values = [r[key] for r in rows]
        print(f"{key:12s} median {statistics.median(values):8.2f}  min {min(values):8.2f}  max {max(values):8.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"jobs": args.jobs, "cores": os.cpu_count(), "repeats": rows},
                                              indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
