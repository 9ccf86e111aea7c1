"""Scaling benchmark: the report against the size of the prefecture, and several studies
against the number of Dask workers.

    .venv/bin/python benchmarks/scaling.py townships --sizes 64 250 1000 2000
    .venv/bin/python benchmarks/scaling.py dask --studies 4 --workers 1 2 4

``townships``: for each size a demo prefecture (``evaluation demo-data --townships N``,
96 months, 10 pilots) and a copy of ``studies/demo.yml`` reading it with one indicator
(``--indicator``, default the county-internal visit rate); the whole report (six chapters)
with ``evaluation batch STUDY --fast --jobs 2``, each repeat a fresh process into a fresh
output folder. Prints the wall time, the batch's own time and the peak memory per worker
from the manifest (``batch.memory``: the kernel's plus the worker process's peak resident
memory, the largest over the workers) with the load average before each run.

``dask``: ``--studies`` copies of the 64-township study (ids ``scale_1`` ...), all in one
``evaluation batch STUDY ... --fast --workers W`` (a Dask ``LocalCluster`` of W worker
processes, one thread each), for each W of ``--workers``.
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

import yaml

PROJECT = Path(__file__).resolve().parent.parent


def load() -> str:
    return " ".join(f"{v:.1f}" for v in os.getloadavg())


def make_study(root: Path, townships: int, study_id: str, indicator: str, data: Path | None = None) -> Path:
    """A demo prefecture of ``townships`` (unless ``data`` holds one) and a study file for it."""
    env = {**os.environ, "PYTHONPATH": str(PROJECT)}
    if data is None:
        data = root / f"data-{townships}"
        subprocess.run([sys.executable, "-m", "evaluation", "demo-data", "--townships", str(townships), "--out",
                        str(data)], cwd=PROJECT, env=env, check=True, capture_output=True)
    config = yaml.safe_load((PROJECT / "studies" / "demo.yml").read_text(encoding="utf-8"))
    config["id"] = study_id
    config["data"].update(panel=str(data / "panel.csv"), pilots=str(data / "pilots.csv"),
                          truth=str(data / "truth.csv"))
    config["indicators"] = [indicator]
    config["covariates"]["table"]["file"] = str(data / "townships.csv")  # the generator writes one per prefecture
    config["analysis"].pop("mechanisms", None)  # its channels are other indicators
    path = root / f"{study_id}.yml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def batch(studies: list[Path], extra: list[str]) -> dict:
    """One ``evaluation batch`` process into a fresh output root: wall seconds and the manifests."""
    with tempfile.TemporaryDirectory(prefix="scaling-out-") as out:
        env = {**os.environ, "EVALUATION_OUTPUT_ROOT": out, "PYTHONPATH": str(PROJECT)}
        before = load()
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "evaluation", "batch", *map(str, studies), "--fast", *extra],
                              cwd=PROJECT, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"batch exited {done.returncode}:\n{done.stderr[-3000:]}")
        manifests = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(Path(out).glob("*/manifest.json"))]
    return {"wall": wall, "manifests": manifests, "load": before}


def span(values: list[float], fmt: str = "{:.0f}") -> str:
    if len(values) == 1:
        return fmt.format(values[0])
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def townships(args) -> None:
    print("| townships x 96 months | runs | wall s | batch s | peak memory per worker, GiB (largest chapter) "
          "| load before |")
    print("| ---: | ---: | ---: | ---: | ---: | --- |")
    with tempfile.TemporaryDirectory(prefix="scaling-") as tmp:
        for n in args.sizes:
            study = make_study(Path(tmp), n, f"scale_{n}", args.indicator)
            results = [batch([study], ["--jobs", str(args.jobs)]) for _ in range(args.repeats)]
            walls = [r["wall"] for r in results]
            seconds = [r["manifests"][0]["seconds"] for r in results]
            peaks = [r["manifests"][0]["batch"]["memory"]["max_per_worker_bytes"] / 2**30 for r in results]
            runs = results[-1]["manifests"][0]["runs"]
            top = max(runs, key=lambda r: (r.get("memory") or {}).get("peak_bytes") or 0)
            print(f"| {n:,} | {len(runs)} | {span(walls)} | {span(seconds)} | {span(peaks, '{:.2f}')} "
                  f"({top['chapter']}) | {', '.join(r['load'] for r in results)} |", flush=True)


def dask(args) -> None:
    print("| studies | Dask workers | runs | wall s | peak memory per worker, GiB | load before |")
    print("| ---: | ---: | ---: | ---: | ---: | --- |")
    with tempfile.TemporaryDirectory(prefix="scaling-") as tmp:
        data = Path(tmp) / "data"
        first = make_study(Path(tmp), 64, "scale_1", args.indicator)
        os.replace(Path(tmp) / "data-64", data)
        studies = [make_study(Path(tmp), 64, f"scale_{i}", args.indicator, data=data)
                   for i in range(1, args.studies + 1)]
        assert studies[0] == first
        for w in args.workers:
            results = [batch(studies, ["--workers", str(w)]) for _ in range(args.repeats)]
            walls = [r["wall"] for r in results]
            runs = sum(len(m["runs"]) for m in results[-1]["manifests"])
            peak = max(m["batch"]["memory"]["max_per_worker_bytes"] for m in results[-1]["manifests"]) / 2**30
            print(f"| {args.studies} | {w} | {runs} | {span(walls)} | {peak:.2f} | "
                  f"{', '.join(r['load'] for r in results)} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    t = sub.add_parser("townships")
    t.add_argument("--sizes", type=int, nargs="+", default=[64, 250, 1000, 2000])
    t.add_argument("--jobs", type=int, default=2)
    d = sub.add_parser("dask")
    d.add_argument("--studies", type=int, default=4)
    d.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    for p in (t, d):
        p.add_argument("--repeats", type=int, default=1)
        p.add_argument("--indicator", default="county_internal_visit_rate")
    args = parser.parse_args()
    print(f"{os.cpu_count()} cores; {args.repeats} repeat(s) per row; fast mode, one indicator "
          f"({args.indicator})", flush=True)
    townships(args) if args.what == "townships" else dask(args)


if __name__ == "__main__":
    main()
