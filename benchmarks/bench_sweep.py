"""Wall time of the `make quick` grid run serially and through `lth sweep`, in one run, with the ratio.

The grid: LeNet-300-100 on MNIST, quick profile, 2 trials, winning tickets and random reinitialization
(`make quick`). Three whole processes, each in a fresh run store, one after the other:
  - serial:     `lth run` in one process with --threads (default 2, the cores of the machine this
                package is built on) torch threads;
  - sweep:      `lth sweep` with 1 thread per Ray task, tasks in parallel on the machine's cores
                (Ray's start-up included: a user waits for it too);
  - serial x1:  `lth run` at 1 thread, the runs the sweep's tasks make (the thread count is part of a
                run's key), to check that the sweep's metrics are exactly a serial run's.
Prints the three wall times, serial / sweep, and whether the sweep's summary equals the 1-thread one.

Usage: python benchmarks/bench_sweep.py [--threads 2] [--rounds N] [--iterations N]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed(command: list[str], threads: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    started = time.perf_counter()
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def runs(path: Path) -> list:
    return json.loads(path.read_text())["runs"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the serial run")
    parser.add_argument("--rounds", type=int, help="pruning rounds (default: the quick profile's)")
    parser.add_argument("--iterations", type=int, help="iterations per round (default: the quick profile's)")
    args = parser.parse_args()
    lth = [sys.executable, "-m", "lth_tutorial.cli"]
    grid = ["lenet-mnist", "--profile", "quick", "--control", "reinit", "--trials", "2"]
    grid += ["--rounds", str(args.rounds)] if args.rounds is not None else []
    grid += ["--iterations", str(args.iterations)] if args.iterations is not None else []
    work = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    out = {name: work / f"{name}.json" for name in ("serial", "sweep", "serial1")}
    seconds = {
        "serial": timed(lth + ["run", *grid, "--store", str(work / "s"), "--json", str(out["serial"])], args.threads),
        "sweep": timed(lth + ["sweep", *grid, "--cpus-per-task", "1", "--store", str(work / "w"),
                              "--json", str(out["sweep"])], 1),
        "serial1": timed(lth + ["run", *grid, "--store", str(work / "s1"), "--json", str(out["serial1"])], 1),
    }
    print(f"make quick grid (LeNet quick, 2 trials, reinit), {os.cpu_count()} cores, results in {work}")
    print(f"{'serial, ' + str(args.threads) + ' threads':<28} {seconds['serial']:8.1f} s")
    print(f"{'lth sweep, 1 thread per task':<28} {seconds['sweep']:8.1f} s")
    print(f"{'serial, 1 thread':<28} {seconds['serial1']:8.1f} s")
    print(f"serial ({args.threads} threads) / sweep: {seconds['serial'] / seconds['sweep']:.2f}x; "
          f"serial (1 thread) / sweep: {seconds['serial1'] / seconds['sweep']:.2f}x")
    print(f"sweep metrics identical to the 1-thread serial run: {runs(out['sweep']) == runs(out['serial1'])}")
    print(f"({args.threads}-thread serial identical too: {runs(out['serial']) == runs(out['serial1'])}; "
          f"CPU results depend on the thread count)")


if __name__ == "__main__":
    main()
