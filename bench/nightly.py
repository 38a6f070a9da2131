"""Benchmark: a scheduled night's cost as days accumulate, against a full run on all days so far.

Prints ONE JSON line. Not a test. In a temp folder, with real ``spark-submit.sh`` jobs:

1. ``generate_data`` writes ``--days`` days of sample inputs (the demo's impressions per
   day unless ``--impressions-per-day``) into a staging folder.
2. Night 0 (full): the first ``--first`` days are copied into the inputs folder and the
   ``pipeline`` job runs (no table and no model yet: every date, every stage from scratch).
3. Nights 1..: one more day's click log and LR features arrive (are copied in) and the
   ``pipeline`` job runs with no dates and the default ``train.mode`` (incremental), as cron
   or the scheduled job does.
4. For contrast, on the first and the last incremental night, a full run on all days so far:
   the same inputs copied to another folder, ``pipeline --all-dates`` with ``train.mode=full``
   on empty storage.

Per night and per task: seconds (from the run record's ``tasks``), input rows read and rows
written (from the record's figures where the task reports them), how each stage trained
(``mode``), and the peak resident memory of the whole process tree (JVM, Python workers,
Horovod ranks), sampled every 0.2 s.

Nights are of two kinds. On an *ordinary* night every stage continues its newest version
(or keeps it) and the lists are updated. On a *stage-1 night*, when stage 1's period
(``train.pairwise_every_days``, 7 by default) ends, stage 1 trains on the week that arrived, so
the catalog is re-embedded and stage 3 and the lists are computed in full (a new embedding
model): the weekly cost the issue's policy asks for, bounded by ``train.window_days`` and the
catalog, not by the night. ``stage1_nights`` names them with their seconds. With the default 15
days and 7 in the first night, the 7th of 8 incremental nights is one and 7 are ordinary.

Figures (over the ordinary nights): ``nightly_ratio`` = the last ordinary night's seconds / the
first's, ``max_nightly_ratio`` the largest ordinary night's / the first's (and ``full_ratio``, the
last full contrast run's / the first's); ``incremental_over_full`` = the last night's seconds /
the full run's on the same day (and ``_first`` on the first night); ``auc_gap`` = held-out AUC
(LR and best joint module, overall and cold start) of the incremental chain minus the full
run's on the same final day; ``peak_ratio`` = the last night's peak memory / the first
incremental night's. Targets (issue 23): nightly_ratio <= 1.2 over >= 7 incremental nights,
incremental_over_full <= 0.5, auc_gap >= -0.005, peak_ratio <= 1.1.

Usage: ``.venv/bin/python bench/nightly.py [--days 15] [--first 7] [--impressions-per-day N] [--conf conf/local.yaml]
[--set key=value] [--full-on first,last]``
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from adrank.orchestration.nights import best_joint
from peak_rss import tree_rss  # bench/ is the script's folder, first on sys.path

REPO = Path(__file__).resolve().parents[1]
DATED = ("click_log", "lr_features")
RECORD_PREFIX = "record: "


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=15, help="days generated")
    parser.add_argument("--first", type=int, default=7, help="days of the first (full) night")
    parser.add_argument("--impressions-per-day", type=int, default=200_000 // 7)
    parser.add_argument("--conf", default=str(REPO / "conf" / "local.yaml"))
    parser.add_argument("--set", action="append", default=[], help="extra config overrides for every job")
    parser.add_argument("--full-on", default="first,last",
                        help="the incremental nights that get a full run for contrast: first, last or both")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder")
    return parser.parse_args(argv)


class PeakSampler:
    """The peak summed RSS of a process tree, sampled every 0.2 s on a thread."""

    def __init__(self, pid: int) -> None:
        self.process, self.peak = psutil.Process(pid), 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._done.is_set():
            try:
                self.peak = max(self.peak, tree_rss(self.process))
            except psutil.Error:
                pass
            time.sleep(0.2)

    def stop(self) -> float:
        self._done.set()
        self._thread.join()
        return round(self.peak / 2**30, 2)


def run_job(job: str, conf: str, storage: Path, inputs: Path, overrides: list[str], *args: str,
            log: Path) -> tuple[dict[str, Any], float, float]:
    """``spark-submit.sh job``: its run record, wall seconds and peak tree memory (GB)."""
    command = [str(REPO / "spark-submit.sh"), job, "--conf-file", conf, "--set", f"storage.root={storage}",
               "--set", f"inputs.root={inputs}", *(x for o in overrides for x in ("--set", o)), *args]
    start = time.perf_counter()
    with log.open("a") as out:
        child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=out, text=True)
        sampler = PeakSampler(child.pid)
        stdout, _ = child.communicate()
        peak = sampler.stop()
        out.write(stdout)
    wall = round(time.perf_counter() - start, 1)
    if child.returncode != 0:
        raise SystemExit(f"{job} failed (exit {child.returncode}); see {log}")
    last = stdout.strip().splitlines()[-1]
    return json.loads(Path(last.removeprefix(RECORD_PREFIX)).read_text()), wall, peak


def arrive(staging: Path, inputs: Path, days: list[str]) -> None:
    """Copy the dated folders of ``days`` (and, the first time, the undated sources) into ``inputs``."""
    if not inputs.exists():
        for source in staging.iterdir():
            if source.name not in DATED and source.is_dir():
                shutil.copytree(source, inputs / source.name)
    for source in DATED:
        for day in days:
            shutil.copytree(staging / source / f"date={day}", inputs / source / f"date={day}")


def night_row(name: str, record: dict[str, Any], wall: float, peak: float) -> dict[str, Any]:
    """One night: per task seconds and status, rows read and written, training modes, headline AUCs."""
    tasks = {task: {"seconds": outcome.get("seconds"), "status": outcome.get("status")}
             for task, outcome in (record.get("tasks") or {}).items()}
    sources = record.get("sources") or {}
    tasks.setdefault("build_tables", {})["rows_read"] = sum(
        int(s.get("input") or 0) for s in sources.values() if isinstance(s, dict))
    tasks["build_tables"]["rows_written"] = (record.get("training_examples") or {}).get("rows_written")
    for stage in ("pairwise", "lr", "joint"):
        figures = record.get(stage) or {}
        training = figures.get("training") or {}
        entry = tasks.setdefault(f"train_{stage}", {})
        entry.update({key: training.get(key) for key in ("mode", "mode_reason", "rows", "steps") if key in training})
        entry.update({key: figures.get(key) for key in ("mode", "mode_reason", "dates_trained") if key in figures})
    return {"night": name, "wall_s": wall, "peak_rss_gb": peak, "tasks": tasks, "auc": aucs(record)}


def aucs(record: dict[str, Any]) -> dict[str, float | None]:
    """Held-out AUC of the LR and the best joint module, overall and cold start."""
    lr = (record.get("lr") or {}).get("metrics") or {}
    best = best_joint(record)
    return {"lr": lr.get("auc"), "lr_cold": lr.get("cold_auc"), "joint": best.get("auc"), "joint_cold": best.get("cold_auc")}


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="adrank-nightly-"))
    log = work / "jobs.log"
    overrides = [f"sample.num_days={args.days}", f"sample.num_impressions={args.impressions_per_day * args.days}",
                 *args.set]
    staging = work / "staging"
    run_job("generate_data", args.conf, work / "gen-tables", staging, overrides, log=log)
    days = sorted(p.name.removeprefix("date=") for p in (staging / "click_log").iterdir() if p.name.startswith("date="))
    inputs, storage = work / "inputs", work / "tables"
    arrive(staging, inputs, days[:args.first])
    nights = [night_row("0 (full)", *run_job("pipeline", args.conf, storage, inputs, overrides, log=log))]
    print(f"night 0: {nights[0]['wall_s']} s", file=sys.stderr)
    fulls: dict[int, dict[str, Any]] = {}
    incremental = list(range(args.first, len(days)))
    positions = {"first": 1, "last": len(incremental)}
    contrasted = {positions[name] for name in args.full_on.split(",") if name}
    for number, index in enumerate(incremental, start=1):
        arrive(staging, inputs, [days[index]])
        nights.append(night_row(str(number), *run_job("pipeline", args.conf, storage, inputs, overrides, log=log)))
        print(f"night {number} ({days[index]}): {nights[-1]['wall_s']} s", file=sys.stderr)
        if number in contrasted:
            full_inputs = work / f"full-inputs-{number}"
            shutil.copytree(inputs, full_inputs)
            fulls[number] = night_row(f"full on night {number}", *run_job(
                "pipeline", args.conf, work / f"full-tables-{number}", full_inputs,
                [*overrides, "train.mode=full"], "--all-dates", log=log))
            print(f"full run on night {number}: {fulls[number]['wall_s']} s", file=sys.stderr)
            shutil.rmtree(full_inputs)
            shutil.rmtree(work / f"full-tables-{number}", ignore_errors=True)
    first, last = nights[1], nights[-1]
    last_full, first_full = fulls.get(len(incremental)), fulls.get(1)
    stage1 = [n for n in nights[1:] if n["tasks"].get("train_pairwise", {}).get("mode") != "kept"]
    ordinary = [n for n in nights[1:] if n not in stage1]
    figures = {
        "days": args.days, "first_night_days": args.first, "incremental_nights": len(incremental),
        "impressions_per_day": args.impressions_per_day, "overrides": args.set,
        "ordinary_nights": len(ordinary),
        "stage1_nights": {n["night"]: n["wall_s"] for n in stage1},  # train.pairwise_every_days
        "nightly_ratio": ratio(ordinary[-1]["wall_s"], ordinary[0]["wall_s"]) if ordinary else None,
        "max_nightly_ratio": ratio(max(n["wall_s"] for n in ordinary), ordinary[0]["wall_s"]) if ordinary else None,
        "stage1_night_ratio": ratio(max(n["wall_s"] for n in stage1), first["wall_s"]) if stage1 else None,
        "full_ratio": ratio(last_full["wall_s"], first_full["wall_s"]) if last_full and first_full else None,
        "incremental_over_full": ratio(last["wall_s"], last_full["wall_s"]) if last_full else None,
        "incremental_over_full_first": ratio(first["wall_s"], first_full["wall_s"]) if first_full else None,
        "auc_gap": {key: (round(last["auc"][key] - last_full["auc"][key], 4)
                          if last_full and last["auc"][key] is not None and last_full["auc"][key] is not None
                          else None) for key in last["auc"]},
        "peak_ratio": ratio(last["peak_rss_gb"], first["peak_rss_gb"]),
        "nights": nights, "full_runs": list(fulls.values()),
    }
    print(json.dumps(figures))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
