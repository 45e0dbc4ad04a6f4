"""Loop benchmark for adcli (issue 12; run by hand, never in the tests).

Cases:
  checkpoint  h = tanh(W·h) for l steps (n = 100, benchmarks/programs/deep_chain.ad kept
              as a loop), gradient of sum(h²) w.r.t. x and W in reverse mode keeping at
              most S states (--checkpoints S) for S = 10, 100 and without checkpoints:
              recomputed steps, cached values, predicted and measured peak bytes (the
              sweeps, tracemalloc), the whole call's time and the sweeps' alone, and
              how long the prediction takes. One call each (a 10^5-step loop at S = 10
              runs 932,040 body steps forward).
  build       a 10^6-step `repeat { x = sin(x) }`: the time to build it (it stays a
              loop node) and to predict both modes.
  per_step    the deep chain's gradient at L = 1,000 and 10,000 layers, adcli (the
              loop: compiled while its plans stay under the plan limit, interpreted
              past it) against NumPy by hand, PyTorch eager and JAX lax.scan where
              importable, interleaved round by round: per-layer cost.

    python benchmarks/bench_loops.py [--threads 1,2] [--repeat 5] [--cases checkpoint,build,per_step]
                                     [--steps 100000] [--quick]

Each thread count runs in its own process (OMP/OPENBLAS/MKL_NUM_THREADS set before
NumPy starts), as benchmarks/bench_executor.py does.
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))   # the working tree's adcli
sys.path.insert(0, str(HERE))

CASES = ("checkpoint", "build", "per_step")


def case_checkpoint(args, fw):
    import adcli

    steps = args.steps
    print(f"\ncheckpointing: n = 100, l = {steps:,} steps, gradient w.r.t. x and W, reverse mode")
    program = adcli.load(HERE / "programs" / "deep_chain.ad", set={"depth": steps}, loops="always")
    print(f"  {'states':>8s} {'recomputed':>12s} {'cached':>11s} {'peak bytes':>12s} {'predicted':>12s} "
          f"{'call s':>9s} {'sweeps s':>9s} {'predict s':>10s}")
    reference = None
    for states in (10, 100, None):
        start = time.perf_counter()
        program.predict("reverse", checkpoints=states)
        predict_s = time.perf_counter() - start
        start = time.perf_counter()
        result = program.jacobian(mode="reverse", checkpoints=states, measure_memory=True)
        call_s = time.perf_counter() - start
        cost = result.cost
        gradient = result.jacobian
        if reference is None:
            reference = gradient
        diff = float(abs(gradient - reference).max())
        print(f"  {'all' if states is None else states:>8} {cost.recomputed_steps:>12,} {cost.cached_values:>11,} "
              f"{cost.peak_bytes:>12,} {cost.predicted['peak_bytes']:>12,} {call_s:>9.2f} "
              f"{cost.time_s['sweeps']:>9.2f} {predict_s:>10.2f}   (max |Δ| vs S = 10: {diff:.1e})", flush=True)


def case_build(args, fw):
    import adcli

    steps = 10**6 if not args.quick else 10**5
    source = f"input x: scalar = 0.5\nrepeat {steps} {{\n  x = sin(x)\n}}\noutput y = x\n"
    start = time.perf_counter()
    program = adcli.loads(source)
    build_s = time.perf_counter() - start
    loops = sum(n.op == "loop" for n in program.graph.nodes)
    times = {}
    for mode in ("forward", "reverse"):
        start = time.perf_counter()
        program.predict(mode)
        times[mode] = time.perf_counter() - start
    print(f"\nbuild: repeat {steps:,} {{ x = sin(x) }}: {len(program.graph.nodes)} nodes ({loops} loop), "
          f"built in {build_s * 1e3:.1f} ms; predicted forward in {times['forward']:.3f} s, "
          f"reverse in {times['reverse']:.3f} s")


def case_per_step(args, fw):
    import adcli
    from bench_executor import HAND, AdcliRun, hand_deep, jax_deep, run_case, torch_deep

    for depth in ((1000, 10000) if not args.quick else (200,)):
        program = adcli.load(HERE / "programs" / "deep_chain.ad", set={"depth": depth}, loops="always")
        inputs = program.resolve_inputs()
        x, W = inputs["x"], inputs["W"]
        contenders = {"adcli reverse (loop)": AdcliRun(program, [("loss", "x"), ("loss", "W")],
                                                       mode="reverse", wrt=["x", "W"]),
                      HAND: lambda: hand_deep(x, W, depth)}
        if fw["torch"]:
            contenders["PyTorch eager"] = torch_deep(fw["torch"], x, W, depth)
        if fw["jax"]:
            contenders["JAX jit(grad), lax.scan"] = jax_deep(fw["jax"], x, W, depth)
        run_case(f"deep chain as a loop: n = 100, L = {depth:,} ({args.repeat} rounds)", contenders,
                 args.repeat, per=("layer", depth))


FUNCTIONS = {"checkpoint": case_checkpoint, "build": case_build, "per_step": case_per_step}


def child(args):
    import numpy as np

    import adcli
    from bench_executor import blas_line, optional_frameworks

    print(f"NumPy {np.__version__}, BLAS {blas_line()}; adcli {adcli.__version__} from "
          f"{Path(adcli.__file__).parent}")
    fw = optional_frameworks(int(args.threads))
    for name in args.cases.split(","):
        FUNCTIONS[name](args, fw)
        sys.stdout.flush()


def main():
    from bench_executor import thread_env

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--repeat", type=int, default=None, help="rounds of per_step (default 5; 3 with --quick)")
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--steps", type=int, default=None, help="the checkpoint case's l (default 100,000)")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test of the script")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.repeat = args.repeat or (3 if args.quick else 5)
    args.steps = args.steps or (2000 if args.quick else 100_000)
    unknown = [c for c in args.cases.split(",") if c not in CASES]
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}; choose from {', '.join(CASES)}")
    if args.child:
        child(args)
        return
    print(f"machine: {platform.platform()}, {platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}")
    failed = 0
    for threads in args.threads.split(","):
        print(f"\n==== {threads} thread(s) ====", flush=True)
        command = [sys.executable, __file__, "--child", "--threads", threads, "--repeat", str(args.repeat),
                   "--cases", args.cases, "--steps", str(args.steps)] + (["--quick"] if args.quick else [])
        failed |= subprocess.run(command, env=thread_env(threads)).returncode != 0
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
