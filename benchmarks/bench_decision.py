"""Decision benchmark for --mode auto (run by hand; figures go in benchmarks/README.md).

A corpus of programs (the samples; scalar objectives at two sizes; chains with few
inputs, few outputs and square ones; few-in/many-out maps; deep repeats; matrix
inputs) is differentiated in both modes, interleaved round by round in one process.
For each program:
- regret = the time of the mode auto picks ÷ the time of the fastest mode (min of
  the rounds); a mode predicted over the memory limit is skipped and counted;
- predicted time (machine model) next to the measured time.
Then the rank correlation (Spearman) of predicted and measured times over every
run, and how many runs over 10 ms were predicted within 2×.

Each thread count runs in its own process (OMP_NUM_THREADS must be set before
NumPy starts): `python benchmarks/bench_decision.py` runs 1 and 2 threads.

    python benchmarks/bench_decision.py [--rounds 5] [--threads 1,2] [--limit 2GB]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

OBJECTIVES = ["sum(abs(x))", "sum(exp(x))", "sum(x^2)", "norm(x)", "logsumexp(x)", "max(x)",
              "-sum(log(x * x + 1))", "sum(tanh(x))", "sum(sqrt(x * x + 1))", "sum(abs(x)) + max(x)"]


def corpus() -> list[tuple[str, str, dict]]:
    """(name, source, dims) for every program of the benchmark."""
    programs = []
    for path in sorted((ROOT / "samples").glob("*.ad")):
        programs.append((path.stem, path.read_text(), {}))
    for n in (1000, 20000):
        for expr in OBJECTIVES:
            programs.append((f"{expr} n={n}", f"dim n = {n}\ninput x: vec[n] = randn(seed=1)\n"
                                                f"output f = {expr}\n", {}))
    chain = (ROOT / "samples" / "chain.ad").read_text()
    programs += [("chain few inputs", chain, {"n": 4, "p": 300, "q": 300, "m": 300}),
                 ("chain few outputs", chain, {"n": 300, "p": 300, "q": 300, "m": 4}),
                 ("chain square 100", chain, {"n": 100, "p": 100, "q": 100, "m": 100}),
                 ("chain square 300", chain, {"n": 300, "p": 300, "q": 300, "m": 300}),
                 ("chain few inputs, long outputs", chain, {"n": 2, "p": 50, "q": 50, "m": 2000})]
    sensitivity = (ROOT / "samples" / "sensitivity.ad").read_text()
    programs += [("sensitivity T=5000", sensitivity, {"T": 5000}),
                 ("sensitivity T=20000", sensitivity, {"T": 20000}),
                 ("damped wave 3 params", "dim m = 2000\ninput a = 1.5\ninput k = 0.3\ninput w = 3\n"
                  "const t: vec[m] = linspace(0, 10)\noutput y = a * exp(-k * t) * cos(w * t)\n", {})]
    deep = (ROOT / "samples" / "deep.ad").read_text()
    programs += [("deep depth 64", deep, {"depth": 64}),
                 ("deep n=64 depth 32", deep, {"n": 64, "depth": 32}),
                 ("tanh chain, W input", "dim n = 48\ndim depth = 20\ninput h0: mat[n, n] = randn(seed=1)\n"
                  "input W: mat[n, n] = randn(seed=2) / sqrt(n)\nh = h0\nrepeat depth {\n"
                  "    h = tanh(h @ W)\n}\noutput s = sum(h)\n", {})]
    mlp = (ROOT / "samples" / "mlp.ad").read_text()
    programs += [("mlp n=200", mlp, {"n": 200}),
                 ("mlp n=1000", mlp, {"n": 1000}),
                 ("matrix product loss", "dim n = 120\ninput A: mat[n, n] = randn(seed=1)\n"
                  "const B: mat[n, n] = randn(seed=2)\noutput f = sum((A @ B) @ B)\n", {}),
                 ("matrix map, few inputs", "dim n = 120\ninput s: vec[2] = [0.5, 2]\n"
                  "const B: mat[n, n] = randn(seed=2)\noutput F = B * s[0] + (B @ B) * s[1]\n", {})]
    return programs


def run_one_process(rounds: int, limit: int) -> dict:
    import adcli
    from adcli.api import loads
    from adcli.decide import decide
    from adcli.machine import calibrate

    model = calibrate("numpy", budget_s=3.0)["model"]
    rows, skipped = [], 0
    for name, source, dims in corpus():
        program = loads(source, name, dims or None)
        decision = decide(program, memory_limit=limit, model=model)
        modes = [m for m, plan in decision.plans.items() if plan.fits]
        skipped += 2 - len(modes)
        times = {m: [] for m in modes}
        for _ in range(rounds):   # interleaved: a thread pool left spinning slows the next alike
            for mode in modes:
                result = program.jacobian(mode=mode, memory_limit=limit, measure_memory=False,
                                          chunk=decision.plans[mode].chunk)
                times[mode].append(result.cost.time_s["sweeps"])
        best = {m: min(ts) for m, ts in times.items()}
        fastest = min(best.values())
        rows.append({"name": name, "pick": decision.mode, "reason": decision.reason,
                     "regret": best[decision.mode] / fastest if decision.mode in best else None,
                     "modes": {m: {"min_s": best[m], "median_s": statistics.median(times[m]),
                                   "predicted_s": decision.plans[m].time_s,
                                   "chunk": decision.plans[m].chunk} for m in modes},
                     "skipped": [m for m in decision.plans if m not in modes]})
    import numpy
    return {"model": model.to_json(), "rows": rows, "skipped": skipped, "numpy": numpy.__version__,
            "adcli": adcli.__version__}


def spearman(xs, ys) -> float:
    def ranks(values):
        order = sorted(range(len(values)), key=lambda i: values[i])
        r = [0.0] * len(values)
        for rank, i in enumerate(order):
            r[i] = rank
        return r
    rx, ry = ranks(xs), ranks(ys)
    mx, my = statistics.mean(rx), statistics.mean(ry)
    num = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    den = (sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry)) ** 0.5
    return num / den if den else float("nan")


def summary(data: dict) -> str:
    rows = data["rows"]
    regrets = [r["regret"] for r in rows if r["regret"] is not None]
    runs = [(m["predicted_s"], m["min_s"]) for r in rows for m in r["modes"].values()]
    slow = [(p, t) for p, t in runs if t > 0.010]
    within = [1 for p, t in slow if 0.5 <= p / t <= 2]
    lines = [f"programs {len(rows)}, modes skipped (predicted over the limit) {data['skipped']}",
             f"regret: max {max(regrets):.3f}, median {statistics.median(regrets):.3f}, "
             f"over 1.25: {sum(1 for x in regrets if x > 1.25)}",
             f"Spearman(predicted, measured) over {len(runs)} runs: {spearman(*zip(*runs)):.3f}",
             f"runs over 10 ms predicted within 2x: {len(within)} of {len(slow)}",
             "model: " + ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                                   for k, v in data["model"].items()),
             "",
             f"{'program':34s} {'pick':8s} {'regret':>6s}  {'forward min/pred':>22s}  {'reverse min/pred':>22s}"]
    for r in rows:
        cells = []
        for mode in ("forward", "reverse"):
            m = r["modes"].get(mode)
            cells.append("skipped" if m is None else f"{m['min_s'] * 1e3:9.3f}/{m['predicted_s'] * 1e3:9.3f} ms")
        regret = "—" if r["regret"] is None else f"{r['regret']:.2f}"
        lines.append(f"{r['name'][:34]:34s} {r['pick'] or '-':8s} {regret:>6s}  {cells[0]:>22s}  {cells[1]:>22s}")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--limit", default="2GB")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    from adcli.cli import parse_bytes
    limit = parse_bytes(args.limit)
    if args.child:
        print(json.dumps(run_one_process(args.rounds, limit)))
        return
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    for threads in args.threads.split(","):
        env = dict(os.environ, OMP_NUM_THREADS=threads, OPENBLAS_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
        out = subprocess.run([sys.executable, __file__, "--child", "--rounds", str(args.rounds),
                              "--limit", args.limit], env=env, check=True, capture_output=True, text=True)
        data = json.loads(out.stdout)
        print(f"\n== {threads} thread(s); NumPy {data['numpy']}, adcli {data['adcli']} ==")
        print(summary(data))


if __name__ == "__main__":
    main()
