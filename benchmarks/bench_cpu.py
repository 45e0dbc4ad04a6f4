"""CPU benchmarks for adcli (run by hand; figures go in benchmarks/README.md).

1. Whole-process start-up: `adcli grad samples/seed_example.ad --json`,
   median wall time of repeated runs. Target: ≤ 0.3 s on a 2-core machine.
2. Through the Python API in one process: the reverse-mode gradient of an MLP
   loss with about a million parameters (samples/mlp.ad with n = h = 1024,
   batch 64) next to the same gradient written by hand in NumPy.
   Target: within 1.1× of the hand-written backprop.

    python benchmarks/bench_cpu.py [--repeat 7]
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def startup(repeat: int) -> list[float]:
    exe = shutil.which("adcli")
    command = [exe] if exe else [sys.executable, "-m", "adcli.cli"]
    command += ["grad", str(ROOT / "samples" / "seed_example.ad"), "--json"]
    # As installed: with bytecode. (Some shells set PYTHONDONTWRITEBYTECODE, which
    # makes every start compile adcli's modules again, about 70 ms.)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run(command, check=True, capture_output=True, env=env)   # warm the caches
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, env=env)
        times.append(time.perf_counter() - start)
    return times


def numpy_backprop(X, target, W1, b1, w2, b2):
    """The MLP loss gradient by hand: what reverse mode should cost."""
    import numpy as np

    hidden = np.tanh(X @ W1 + b1)
    residual = hidden @ w2 + b2 - target
    loss = np.mean(residual ** 2)
    d_pred = (2.0 / residual.size) * residual
    d_w2 = hidden.T @ d_pred
    d_b2 = d_pred.sum()
    d_z = np.outer(d_pred, w2) * (1.0 - hidden * hidden)
    d_W1 = X.T @ d_z
    d_b1 = d_z.sum(axis=0)
    return loss, d_W1, d_b1, d_w2, d_b2


def mlp(repeat: int, size: int, batch: int):
    import numpy as np

    import adcli

    program = adcli.load(ROOT / "samples" / "mlp.ad", set={"n": size, "h": size, "batch": batch})
    params = int(sum(np.prod(program.input_shape(n)) for n in program.input_names))
    inputs = program.resolve_inputs()
    consts = {program.graph.nodes[i].attrs["name"]: np.asarray(program.graph.nodes[i].attrs["value"])
              for i in program.graph.consts.values()}   # a const's value is a recipe (build.Data)
    X, target = consts["X"], consts["target"]

    def run_adcli(measure):
        return program.jacobian(mode="reverse", measure_memory=measure)

    def run_numpy():
        return numpy_backprop(X, target, inputs["W1"], inputs["b1"], inputs["w2"], float(inputs["b2"]))

    # check they agree before timing
    ours, ref = run_adcli(False), run_numpy()
    grads = ours.gradient
    err = max(float(np.max(np.abs(grads[name] - r))) for name, r in
              zip(["W1", "b1", "w2", "b2"], ref[1:]))
    timings = {"adcli (API, no memory tracing)": lambda: run_adcli(False),
               "adcli (API, measuring peak_bytes)": lambda: run_adcli(True),
               "NumPy by hand": run_numpy}
    # Interleaved rounds: every contender sees the same state of the allocator and
    # of OpenBLAS's threads. (Timing each in its own block measured page faults on
    # freshly mapped memory more than arithmetic: on a small VM one contender
    # could look 2× slower only because it ran first.)
    samples = {name: [] for name in timings}
    for fn in timings.values():
        fn()
    for _ in range(repeat):
        for name, fn in timings.items():
            start = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - start)
    results = {name: (statistics.median(t), min(t)) for name, t in samples.items()}
    return params, err, results, ours.cost


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--size", type=int, default=1024, help="n = h for the MLP")
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    try:
        import numpy
        print(f"numpy {numpy.__version__}")
    except ImportError:
        pass
    times = startup(args.repeat)
    print(f"\nwhole process `adcli grad samples/seed_example.ad --json`: median {statistics.median(times):.3f} s "
          f"(min {min(times):.3f}, max {max(times):.3f}, {len(times)} runs)")
    params, err, results, cost = mlp(args.repeat, args.size, args.batch)
    print(f"\nMLP loss gradient, {params:,} parameters, batch {args.batch} "
          f"({args.repeat} interleaved rounds):")
    base_median, base_min = results["NumPy by hand"]
    print(f"  {'':36s} {'median':>9s}       {'ratio':>5s}   {'min':>9s}      {'ratio':>5s}")
    for name, (median, fastest) in results.items():
        print(f"  {name:36s} {median * 1000:9.2f} ms   {median / base_median:5.2f}×  "
              f"{fastest * 1000:9.2f} ms   {fastest / base_min:5.2f}×")
    print(f"  largest difference from the hand-written gradient: {err:.2e}")
    print(f"  adcli counts: derivative mults {cost.mults_derivative:,}, primal mults {cost.mults_primal:,}, "
          f"cached values {cost.cached_values:,}, peak live values {cost.peak_live_values:,}")


if __name__ == "__main__":
    main()
