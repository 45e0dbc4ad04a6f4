"""Executor benchmark for adcli (issue 11; run by hand, never in the tests).

Measures adcli through its public Python API (`adcli.load(...).jacobian(...)`, the
whole call) against the same derivative written by hand in NumPy, and against
PyTorch eager and JAX where they can be imported (a line says so where not).
Every adcli result is checked against every contender: the tables give the largest
absolute difference.

Cases and targets (ratio = adcli ÷ NumPy by hand, on the fastest run):
  deep     h = tanh(W·h) repeated L times (n = 100, one shared W, L = 50..400), loss
           sum(h²), gradient w.r.t. x and W in reverse mode
           (benchmarks/programs/deep_chain.ad). Target: ≤ 1.1× hand NumPy (layer by
           layer backprop, as reverse mode does it) and faster than PyTorch eager.
  mlp      samples/mlp.ad, batch 64, n = h = 256, 1024, 4096, reverse mode, against
           bench_cpu.numpy_backprop. Target: ≤ 1.1× hand at every width.
  jac      full Jacobian of y = tanh(A·x) * x, R^200 → R^200
           (benchmarks/programs/square_map.ad), forward and reverse mode, against the
           Jacobian written out directly. Target: both modes ≤ 1.2× hand.
  fwd      forward-mode Jacobian of y = a·exp(−k·t)·cos(3t), t of N = 10^6 points,
           inputs a and k (benchmarks/programs/damped_wave.ad). Target: ≤ 1.1× hand.
  startup  the whole process `adcli grad samples/seed_example.ad --json` against a
           NumPy-only `python -c` script doing the same arithmetic. Target: about
           0.14 s or less, and ≤ 1.5× the NumPy-only script.

Method: in one process per thread count, the contenders run interleaved round by
round (the order rotates each round), after one warm-up call each; the tables give
the fastest and the median run. Each thread count runs in its own process with
OMP_NUM_THREADS, OPENBLAS_NUM_THREADS and MKL_NUM_THREADS set before NumPy starts.
Read the "min" column: with 2 threads on a 2-core machine, PyTorch's OpenMP workers
spin between ops and take the cores from OpenBLAS's threads (and the reverse), which
made some medians 100× the minimum in a run (PyTorch eager, deep chain L = 400: min
9.8 ms, median 3.2 s). `OMP_WAIT_POLICY=PASSIVE` in the environment (it is passed on)
tames the medians, at a cost to PyTorch's minimum (there: 26 ms).

    python benchmarks/bench_executor.py [--threads 1,2] [--repeat 11]
                                        [--cases deep,mlp,jac,fwd,startup] [--quick]

--quick runs small sizes and 3 rounds: a smoke test of the script, in seconds.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROGRAMS = Path(__file__).resolve().parent / "programs"
sys.path.insert(0, str(ROOT))          # the working tree's adcli, whatever is installed

CASES = ("deep", "mlp", "jac", "fwd", "startup")
HAND = "NumPy by hand"

SIZES = {   # case -> sizes; --quick uses the second set
    "full": {"deep_n": 100, "depths": (50, 100, 200, 400), "widths": (256, 1024, 4096),
             "batch": 64, "jac_n": 200, "fwd_N": 10**6},
    "quick": {"deep_n": 100, "depths": (10, 20), "widths": (64, 128),
              "batch": 64, "jac_n": 50, "fwd_N": 10**4},
}


# -- measuring ----------------------------------------------------------------------------

def measure(contenders: dict, repeat: int) -> tuple[dict, dict]:
    """Time every contender `repeat` times, interleaved round by round (the starting
    contender rotates). Returns ({name: [seconds]}, {name: result of the warm-up call})."""
    first = {name: fn() for name, fn in contenders.items()}   # warm-up, kept for the check
    samples = {name: [] for name in contenders}
    names = list(contenders)
    for r in range(repeat):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            start = time.perf_counter()
            contenders[name]()
            samples[name].append(time.perf_counter() - start)
    return samples, first


def largest_difference(ours, theirs) -> float:
    import numpy as np

    return max(float(np.max(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))))
               for a, b in zip(ours, theirs, strict=True))


class AdcliRun:
    """One adcli call, as a contender: `program.jacobian(**options)`, returning the
    blocks named by `pick` and keeping each run's cost.time_s["sweeps"]."""

    def __init__(self, program, pick, **options):
        self.program, self.pick, self.options = program, pick, options
        self.sweeps = []

    def __call__(self):
        result = self.program.jacobian(measure_memory=False, **self.options)
        self.sweeps.append(result.cost.time_s["sweeps"])
        return tuple(result.blocks[out][inp] for out, inp in self.pick)


def run_case(title, contenders: dict, repeat: int, hand=HAND, per=None, target=None, check=None):
    """Measure, check every contender against the first adcli one, print the table."""
    samples, first = measure(contenders, repeat)
    adcli_names = [n for n, fn in contenders.items() if isinstance(fn, AdcliRun)]
    reference = first[adcli_names[0]] if adcli_names else None
    convert = check or (lambda result: result)
    diffs = {name: (None if name == adcli_names[0] else largest_difference(convert(reference), convert(res)))
             for name, res in first.items()} if reference is not None else {}
    for name in adcli_names:   # the sweeps alone, from the same calls (warm-up dropped)
        samples[f"  {name}: sweeps alone"] = contenders[name].sweeps[1:]
    rows = {}
    for name in contenders:   # each adcli row followed by its sweeps
        rows[name] = samples[name]
        if name in adcli_names:
            rows[f"  {name}: sweeps alone"] = samples[f"  {name}: sweeps alone"]
    print_table(title, rows, diffs, hand, per)
    if target:
        print_target(target, samples, hand)
    return samples


def print_table(title, samples: dict, diffs: dict, hand: str, per=None):
    base = min(samples[hand]) if hand in samples else None
    unit, scale = ("ms", 1e3) if max(min(t) for t in samples.values()) < 1.0 else ("s", 1.0)
    header = f"  {'contender':34s} {'min':>10s} {'median':>10s} {'min ÷ hand':>10s}"
    if per:
        header += f" {'µs/' + per[0]:>12s}"
    header += f" {'max |Δ| vs adcli':>17s}"
    print(f"\n{title}\n{header}")
    for name, times in samples.items():
        fastest, median = min(times), statistics.median(times)
        ratio = f"{fastest / base:9.2f}×" if base else f"{'—':>10s}"
        row = f"  {name:34s} {fastest * scale:7.3f} {unit:2s} {median * scale:7.3f} {unit:2s} {ratio}"
        if per:
            row += f" {fastest / per[1] * 1e6:12.2f}"
        diff = diffs.get(name)
        row += f" {'—' if diff is None else f'{diff:.2e}':>17s}"
        print(row)


def print_target(target: tuple, samples: dict, hand: str):
    """target = (contender, limit, words): is min(contender) ÷ min(hand) within limit?"""
    name, limit, words = target
    if name not in samples or hand not in samples:
        return
    ratio = min(samples[name]) / min(samples[hand])
    print(f"  target {words}: {ratio:.2f}× → {'met' if ratio <= limit else 'NOT met'}")


# -- optional contenders -------------------------------------------------------------------

def optional_frameworks(threads: int) -> dict:
    """{"torch": module or None, "jax": (jax, jnp, lax) or None}, with a printed line each."""
    found = {"torch": None, "jax": None}
    try:
        import torch
        torch.set_num_threads(threads)
        found["torch"] = torch
        print(f"PyTorch {torch.__version__} ({torch.get_num_threads()} thread(s))")
    except ImportError:
        print("PyTorch: not importable here, its contenders are skipped")
    try:
        import jax
        jax.config.update("jax_enable_x64", True)
        import jax.numpy as jnp
        from jax import lax
        found["jax"] = (jax, jnp, lax)
        print(f"JAX {jax.__version__} (float64, {jax.devices()[0].platform})")
    except ImportError:
        print("JAX: not importable here, its contenders are skipped")
    return found


def recipe(seed, shape, scale=1.0):
    """`randn(seed=S)` of the .ad language (docs/language.md), times scale."""
    import numpy as np

    return np.random.default_rng(seed).standard_normal(shape) * scale


# -- case 1: deep chain ----------------------------------------------------------------------

def hand_deep(x, W, depth):
    """Reverse mode by hand, layer by layer: keep every h, then walk back."""
    import numpy as np

    hs = [x]
    for _ in range(depth):
        hs.append(np.tanh(W @ hs[-1]))
    g = 2.0 * hs[-1]
    gW = np.zeros_like(W)
    for layer in range(depth, 0, -1):
        gz = g * (1.0 - hs[layer] * hs[layer])
        gW += np.outer(gz, hs[layer - 1])
        g = W.T @ gz
    return g, gW


def hand_deep_stacked(x, W, depth):
    """The same, with W's gradient as one GEMM over all layers (what no per-node
    interpreter can do; shown for scale, not a target)."""
    import numpy as np

    H = np.empty((depth + 1, x.size))
    H[0] = x
    for layer in range(1, depth + 1):
        H[layer] = np.tanh(W @ H[layer - 1])
    G = np.empty((depth, x.size))
    g = 2.0 * H[-1]
    for layer in range(depth, 0, -1):
        gz = g * (1.0 - H[layer] * H[layer])
        G[layer - 1] = gz
        g = W.T @ gz
    return g, G.T @ H[:-1]


def torch_deep(torch, x, W, depth):
    xt = torch.tensor(x, requires_grad=True)
    Wt = torch.tensor(W, requires_grad=True)

    def run():
        h = xt
        for _ in range(depth):
            h = torch.tanh(Wt @ h)
        gx, gW = torch.autograd.grad((h * h).sum(), (xt, Wt))
        return gx.numpy(), gW.numpy()
    return run


def jax_deep(jax_mods, x, W, depth):
    jax, jnp, lax = jax_mods

    def loss(x, W):
        h, _ = lax.scan(lambda h, _: (jnp.tanh(W @ h), None), x, None, length=depth)
        return jnp.sum(h * h)
    grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
    xj, Wj = jnp.asarray(x), jnp.asarray(W)
    return lambda: jax.block_until_ready(grad(xj, Wj))


def case_deep(sizes, repeat, fw):
    import adcli

    n = sizes["deep_n"]
    for depth in sizes["depths"]:
        program = adcli.load(PROGRAMS / "deep_chain.ad", set={"n": n, "depth": depth})
        inputs = program.resolve_inputs()
        x, W = inputs["x"], inputs["W"]
        contenders = {"adcli reverse": AdcliRun(program, [("loss", "x"), ("loss", "W")],
                                                mode="reverse", wrt=["x", "W"]),
                      HAND: lambda: hand_deep(x, W, depth),
                      "NumPy by hand, one GEMM for dW": lambda: hand_deep_stacked(x, W, depth)}
        if fw["torch"]:
            contenders["PyTorch eager"] = torch_deep(fw["torch"], x, W, depth)
        if fw["jax"]:
            contenders["JAX jit(grad), lax.scan"] = jax_deep(fw["jax"], x, W, depth)
        samples = run_case(f"deep chain: n = {n}, depth L = {depth}, gradient w.r.t. x and W "
                           f"(reverse mode; {repeat} rounds)", contenders, repeat,
                           per=("layer", depth),
                           target=("adcli reverse", 1.1, "adcli ≤ 1.1× NumPy by hand"))
        if "PyTorch eager" in samples:
            ratio = min(samples["adcli reverse"]) / min(samples["PyTorch eager"])
            print(f"  target adcli faster than PyTorch eager: {ratio:.2f}× → "
                  f"{'met' if ratio < 1 else 'NOT met'}")


# -- case 2: MLP ------------------------------------------------------------------------------

def torch_mlp(torch, X, target, inputs):
    Xt, tt = torch.tensor(X), torch.tensor(target)
    params = [torch.tensor(inputs[k], requires_grad=True) for k in ("W1", "b1", "w2", "b2")]

    def run():
        W1, b1, w2, b2 = params
        hidden = torch.tanh(Xt @ W1 + b1)
        loss = ((hidden @ w2 + b2 - tt) ** 2).mean()
        return tuple(g.numpy() for g in torch.autograd.grad(loss, params))
    return run


def case_mlp(sizes, repeat, fw):
    import adcli
    from bench_cpu import numpy_backprop

    batch = sizes["batch"]
    for width in sizes["widths"]:
        n = width
        program = adcli.load(ROOT / "samples" / "mlp.ad", set={"n": n, "h": width, "batch": batch})
        inputs = program.resolve_inputs()
        X, target = recipe(1, (batch, n)), recipe(2, (batch,))   # the file's consts, remade
        names = ("W1", "b1", "w2", "b2")
        contenders = {"adcli reverse": AdcliRun(program, [("loss", k) for k in names], mode="reverse"),
                      HAND: lambda: numpy_backprop(X, target, inputs["W1"], inputs["b1"],
                                                   inputs["w2"], float(inputs["b2"]))[1:]}
        if fw["torch"]:
            contenders["PyTorch eager"] = torch_mlp(fw["torch"], X, target, inputs)
        params = sum(inputs[k].size for k in names)
        run_case(f"MLP loss gradient: samples/mlp.ad, batch {batch}, n = h = {width} "
                 f"({params:,} parameters; reverse mode; {repeat} rounds)", contenders, repeat,
                 target=("adcli reverse", 1.1, "adcli ≤ 1.1× NumPy by hand"))


# -- case 3: full square Jacobian ----------------------------------------------------------------

def hand_square_jacobian(A, x):
    """J of y = tanh(A·x) * x: diag((1 - t²) * x) · A + diag(t), t = tanh(A·x)."""
    import numpy as np

    t = np.tanh(A @ x)
    J = ((1.0 - t * t) * x)[:, None] * A
    J[np.diag_indices_from(J)] += t
    return (J,)


def case_jac(sizes, repeat, fw):
    import adcli
    import numpy as np

    n = sizes["jac_n"]
    program = adcli.load(PROGRAMS / "square_map.ad", set={"n": n})
    x = program.resolve_inputs()["x"]
    A = recipe(1, (n, n)) / np.sqrt(n)   # the file's const, remade
    pick = [("y", "x")]
    contenders = {"adcli forward": AdcliRun(program, pick, mode="forward"),
                  "adcli reverse": AdcliRun(program, pick, mode="reverse"),
                  HAND: lambda: hand_square_jacobian(A, x)}
    if fw["jax"]:
        jax, jnp, _ = fw["jax"]
        Aj, xj = jnp.asarray(A), jnp.asarray(x)
        f = lambda v: jnp.tanh(Aj @ v) * v   # noqa: E731
        jacfwd, jacrev = jax.jit(jax.jacfwd(f)), jax.jit(jax.jacrev(f))
        contenders["JAX jit(jacfwd)"] = lambda: (jax.block_until_ready(jacfwd(xj)),)
        contenders["JAX jit(jacrev)"] = lambda: (jax.block_until_ready(jacrev(xj)),)
    samples = run_case(f"full Jacobian of y = tanh(A·x) * x, R^{n} → R^{n} ({repeat} rounds)",
                       contenders, repeat)
    print_target(("adcli forward", 1.2, "adcli forward ≤ 1.2× NumPy by hand"), samples, HAND)
    print_target(("adcli reverse", 1.2, "adcli reverse ≤ 1.2× NumPy by hand"), samples, HAND)


# -- case 4: forward mode, two inputs, a million outputs ------------------------------------------

def hand_damped(t, a, k):
    """Both columns of the Jacobian of y = a·exp(−k·t)·cos(3t), y computed too."""
    import numpy as np

    wave = np.exp(-k * t) * np.cos(3.0 * t)
    y = a * wave
    return wave, -t * y


def hand_damped_once(t, cos3t, a, k):
    """hand_damped with cos(3t) computed once, outside the call, as adcli's plan has it
    (t is a const of the file): the like-for-like comparison."""
    import numpy as np

    wave = np.exp(-k * t) * cos3t
    y = a * wave
    return wave, -t * y


def case_fwd(sizes, repeat, fw):
    import adcli
    import numpy as np

    N = sizes["fwd_N"]
    program = adcli.load(PROGRAMS / "damped_wave.ad", set={"N": N})
    inputs = program.resolve_inputs()
    a, k = float(inputs["a"]), float(inputs["k"])
    t = np.linspace(0.0, 10.0, N)   # the file's const: linspace(0, 10)
    cos3t = np.cos(3.0 * t)
    once = "NumPy by hand, cos(3t) once"
    contenders = {"adcli forward": AdcliRun(program, [("y", "a"), ("y", "k")], mode="forward"),
                  HAND: lambda: hand_damped(t, a, k),
                  once: lambda: hand_damped_once(t, cos3t, a, k)}
    samples = run_case(f"forward Jacobian of y = a·exp(−k·t)·cos(3t), N = {N:,} points, inputs a and k "
                       f"({repeat} rounds)", contenders, repeat,
                       target=("adcli forward", 1.1, "adcli forward ≤ 1.1× NumPy by hand"))
    # adcli computes cos(3t) of the const t once, while compiling: against a hand version
    # that does so too, what is left is the derivative's own passes
    print_target(("adcli forward", 1.1, "adcli forward ≤ 1.1× NumPy by hand with cos(3t) once"),
                 samples, once)


# -- case 5: whole process -------------------------------------------------------------------------

NUMPY_ONLY = """\
import json, sys
import numpy as np
x1, x2 = np.float64(2.0), np.float64(3.0)
f = x1 * x2 + np.sin(x1)
json.dump({"value": {"f": float(f)}, "jacobian": [[float(x2 + np.cos(x1)), float(x1)]]}, sys.stdout)
"""


def adcli_command() -> list[str]:
    exe = Path(sys.executable).with_name("adcli")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "adcli.cli"]


def case_startup(sizes, repeat, fw):
    # As installed: with bytecode (PYTHONDONTWRITEBYTECODE makes every start compile adcli).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    adcli_cmd = adcli_command() + ["grad", "samples/seed_example.ad", "--json"]   # run in ROOT
    numpy_cmd = [sys.executable, "-c", NUMPY_ONLY]

    def process(command):
        return lambda: subprocess.run(command, check=True, capture_output=True, env=env, cwd=ROOT).stdout

    def numbers(stdout):
        data = json.loads(stdout)
        return [data["value"]["f"]], data["jacobian"]

    contenders = {"adcli grad --json": process(adcli_cmd), "NumPy-only script": process(numpy_cmd)}
    samples, first = measure(contenders, repeat)
    diff = largest_difference(numbers(first["adcli grad --json"]), numbers(first["NumPy-only script"]))
    print_table(f"whole process: adcli {' '.join(adcli_cmd[-3:])} ({' '.join(adcli_cmd[:-3])}; {repeat} rounds)",
                samples, {"NumPy-only script": diff}, "NumPy-only script")
    fastest, median = min(samples["adcli grad --json"]), statistics.median(samples["adcli grad --json"])
    print(f"  target ≤ 0.14 s: min {fastest:.3f} s, median {median:.3f} s → "
          f"{'met' if fastest <= 0.14 else 'NOT met'} (on the min)")
    print_target(("adcli grad --json", 1.5, "adcli ≤ 1.5× the NumPy-only script"), samples,
                 "NumPy-only script")


# -- driver ------------------------------------------------------------------------------------

def blas_line() -> str:
    try:
        import numpy as np
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return f"{blas.get('name')} {blas.get('version')}" + (
            f" ({blas['openblas configuration']})" if blas.get("openblas configuration") else "")
    except Exception:   # older NumPy: no dicts mode
        return "unknown"


def child(args):
    """One thread count: every case, in this process."""
    import numpy as np

    import adcli

    threads = int(args.threads)
    print(f"NumPy {np.__version__}, BLAS {blas_line()}; adcli {adcli.__version__} from "
          f"{Path(adcli.__file__).parent}; Python {sys.executable}")
    fw = optional_frameworks(threads)
    sizes = SIZES["quick" if args.quick else "full"]
    for name in args.cases.split(","):
        try:
            CASE_FUNCTIONS[name](sizes, args.repeat, fw)
        except Exception as exc:   # someone else's work in progress should not hide the others
            print(f"\ncase {name} failed: {type(exc).__name__}: {exc}")
            traceback.print_exc(limit=-4, file=sys.stdout)   # the innermost frames
        sys.stdout.flush()


CASE_FUNCTIONS = {"deep": case_deep, "mlp": case_mlp, "jac": case_jac, "fwd": case_fwd,
                  "startup": case_startup}


def thread_env(threads: str) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=threads, OPENBLAS_NUM_THREADS=threads,
               MKL_NUM_THREADS=threads, JAX_PLATFORMS="cpu")
    if threads == "1":   # XLA's own pool
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                            " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1").strip()
    return env


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    parser.add_argument("--repeat", type=int, default=None, help="rounds per case (default 11; 3 with --quick)")
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of {','.join(CASES)}")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test of the script")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.repeat is None:
        args.repeat = 3 if args.quick else 11
    unknown = [c for c in args.cases.split(",") if c not in CASES]
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}; choose from {', '.join(CASES)}")
    if args.child:
        child(args)
        return
    print(f"machine: {platform.platform()}, {platform.machine()}, {os.cpu_count()} cores "
          f"({len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else '?'} usable), "
          f"Python {platform.python_version()}")
    failed = 0
    for threads in args.threads.split(","):
        threads = threads.strip()
        print(f"\n==== {threads} thread(s): OMP/OPENBLAS/MKL_NUM_THREADS={threads} ====", flush=True)
        command = [sys.executable, __file__, "--child", "--threads", threads, "--repeat", str(args.repeat),
                   "--cases", args.cases] + (["--quick"] if args.quick else [])
        failed |= subprocess.run(command, env=thread_env(threads)).returncode != 0
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
