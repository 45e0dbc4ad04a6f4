"""A small machine model: the predicted time of a run from its counts.

    time = ops × op_s  +  values_moved × itemsize / bandwidth  +  gemm_flops / gemm_rate

- ``op_s``: the fixed cost of one array operation: the interpreter's own work
  around it and the library's dispatch (or a kernel launch on a GPU);
- ``bandwidth``: bytes per second that elementwise work and reductions stream;
- ``gemm_rate``: flops per second of matmul-like work (contractions).

The counts (``Cost.ops``, ``values_moved``, ``gemm_flops``) are exact and come
from the graph before anything runs (docs/counting.md); only the three
constants depend on the machine. ``adcli calibrate`` measures them in a few
seconds by timing adcli's own runs on three small programs, and caches them per
machine and backend in the user's cache directory (``$ADCLI_CACHE_DIR``, else
``$XDG_CACHE_HOME/adcli``, else ``~/.cache/adcli``). Until then the documented
defaults below apply.
"""
from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:   # (pathlib is imported where a Path is made, not at every start)
    from pathlib import Path

CACHE_NAME = "machine.json"


@dataclass(frozen=True)
class MachineModel:
    """What an array operation, a byte moved and a GEMM flop cost on one backend here
    (adcli calibrate measures them)."""

    backend: str
    op_s: float          # seconds per array operation
    bandwidth: float     # bytes per second, elementwise work and reductions
    gemm_rate: float     # flops per second, matmul-like work
    source: str = "default"

    def time(self, cost, itemsize: int) -> float:
        """Predicted seconds of the sweeps whose counts are `cost` (a run too large to
        compile, `cost.interpreted`, pays the interpreter's own work per operation too)."""
        per_op = self.op_s + (INTERPRETER_OP_S if getattr(cost, "interpreted", False) else 0.0)
        return (cost.ops * per_op + cost.values_moved * itemsize / self.bandwidth
                + cost.gemm_flops / self.gemm_rate)

    def to_json(self) -> dict:
        return asdict(self)


# A run too large to keep as compiled plans (adcli.execute.MAX_CACHED_EQUATIONS) is run by
# the interpreter, which counts and keeps liveness node by node: 8.5-10.7 µs per array
# operation on the reference machine against about 1 µs compiled (a 100-wide tanh layer
# as a loop, 2,000-5,000 steps, reverse mode with and without checkpoints), so about
# this much more per operation.
INTERPRETER_OP_S = 8e-6

# What a run costs besides its sweeps, per array operation, for the time guard
# (Program.check_time): a mode's first run stages and compiles its sweeps into plans
# (unrolled loops of 3,000-30,000 steps of sin(x) * 0.999: 60-100 µs per operation on the
# reference machine), and tracing allocations (measure_memory, as the CLI does for
# peak_bytes) slows each allocation (27-34 µs per operation on the same programs, against
# about 1 µs untraced). A guard that left them out let a 30,000-step run predicted at
# 0.15 s take 18 s.
COMPILE_OP_S = 8e-5
TRACED_OP_S = 3e-5


def overheads(ops: int, compile: bool, traced: bool) -> float:
    """Predicted seconds a run of `ops` array operations spends besides its sweeps."""
    return ops * ((COMPILE_OP_S if compile else 0.0) + (TRACED_OP_S if traced else 0.0))

# Measured with `adcli calibrate` on the project's reference machine (a 2-core
# x86_64 VM, NumPy 2.4, one thread; benchmarks/README.md). CuPy's are set from the
# H100 profile in benchmarks/README.md (≈ 40 µs of host work per array operation,
# device bandwidth and float64 GEMM rate) until a GPU run calibrates them.
DEFAULTS = {
    "numpy": MachineModel("numpy", op_s=1e-6, bandwidth=6e9, gemm_rate=3e10),
    "cupy": MachineModel("cupy", op_s=4e-5, bandwidth=2e12, gemm_rate=5e13),
}


def cache_dir_name() -> str:
    """The cache directory, as text: reading the model at start-up does not import pathlib."""
    if os.environ.get("ADCLI_CACHE_DIR"):
        return os.environ["ADCLI_CACHE_DIR"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "adcli")


def cache_dir() -> Path:
    from pathlib import Path

    return Path(cache_dir_name())


def machine_key(backend: str) -> str:
    """What a calibration is valid for: this kind of machine, this backend."""
    import numpy

    return (f"{backend}|{platform.node()}|{platform.machine()}|{os.cpu_count()}|"
            f"numpy {numpy.__version__}")


_loaded: dict = {}


def model_for(backend: str) -> MachineModel:
    """The calibrated model for `backend` on this machine, else the default."""
    if backend in _loaded:
        return _loaded[backend]
    model = DEFAULTS.get(backend, DEFAULTS["numpy"])
    try:
        with open(os.path.join(cache_dir_name(), CACHE_NAME)) as cache:
            data = json.load(cache)
        entry = data.get(machine_key(backend))
        if entry:
            model = MachineModel(**entry)
    except (OSError, ValueError, TypeError):
        pass   # no cache, or one we cannot read: the defaults are documented
    _loaded[backend] = model
    return model


def save(model: MachineModel) -> Path:
    """Write `model` into the cache atomically (a temporary file renamed into place)."""
    directory = cache_dir()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / CACHE_NAME
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            data = {}
    except (OSError, ValueError):
        data = {}
    data[machine_key(model.backend)] = model.to_json()
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_text(json.dumps(data, indent=1))
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()
    _loaded[model.backend] = model
    return path


# -- calibration ------------------------------------------------------------------------------

# Three programs, each dominated by one term: a long chain of scalar operations
# (per-operation cost), wide elementwise work (bandwidth), and matrix products
# (GEMM rate). Each is differentiated by adcli itself, so the constants include
# exactly the overheads a real run has.
OVERHEAD_PROGRAM = """
input x = 0.3
h = x
repeat 150 {
    h = sin(h) * 0.9 + 0.05
}
output y = h
"""
# Bandwidth-bound work of three kinds, each in the mode that makes it so: wide
# elementwise work in reverse mode; forward mode's dense n × n tangents of a scalar
# loss; reverse mode's k × T cotangents of a map with many outputs. Their implied
# bandwidths differ with how much transcendental work rides along (3.5–9 GB/s
# measured on the reference VM); the median is the one the model uses.
BANDWIDTH_PROGRAMS = [
    ("elementwise", "reverse", """
dim n = 1000000
input x: vec[n] = rand(seed=1)
output y = sum((x * 0.5 + 0.25) * x - tanh(x))
"""),
    ("dense tangents", "forward", """
dim n = 2500
input x: vec[n] = randn(seed=1)
output f = sum(tanh(x)) + sum(exp(x))
"""),
    ("wide cotangents", "reverse", """
dim T = 2500
const t: vec[T] = linspace(0, 10)
input k: vec[2] = [0.5, 2.0]
output y = exp(-k[0] * t) * cos(k[1] * t)
"""),
]
GEMM_PROGRAM = """
dim n = {n}
input A: mat[n, n] = rand(seed=1)
const B: mat[n, n] = rand(seed=2)
output y = sum((A @ B) @ B)
"""


def _best_time(program, mode, repeats: int, backend) -> tuple[float, object]:
    """The fastest of `repeats` runs (min: this machine is noisy), and the run's cost."""
    times, cost = [], None
    for _ in range(repeats):
        result = program.jacobian(mode=mode, backend=backend, measure_memory=False, warmup=False)
        times.append(result.cost.time_s["sweeps"])
        cost = result.cost
    return min(times), cost


def calibrate(backend: str = "numpy", budget_s: float = 4.0, dtype: str = "float64") -> dict:
    """Measure the three constants on this machine; returns the model and the runs
    it was fitted from (each with its predicted and measured time)."""
    from .api import DTYPES, loads
    from .backends import get_backend

    import numpy

    be = get_backend(backend)
    itemsize = numpy.dtype(DTYPES[dtype]).itemsize
    repeats = max(3, int(budget_s / 0.4))
    started = time.perf_counter()
    runs = []

    # 1. per-operation cost: both modes on a chain of tiny scalar operations
    chain = loads(OVERHEAD_PROGRAM, "<calibrate: overhead>")
    per_op = []
    for mode in ("forward", "reverse"):
        seconds, cost = _best_time(chain, mode, repeats, be)
        per_op.append(seconds / cost.ops)
        runs.append(("overhead", mode, cost, seconds))
    import statistics   # (calibrate only: not imported at every start)

    op_s = statistics.median(per_op)

    # 2. bandwidth: the median over three bandwidth-bound programs
    rates = []
    for name, mode, source in BANDWIDTH_PROGRAMS:
        program = loads(source, f"<calibrate: {name}>")
        seconds, cost = _best_time(program, mode, max(3, repeats // 3), be)
        streaming = max(seconds - cost.ops * op_s, seconds * 0.1)
        rates.append(cost.values_moved * itemsize / streaming)
        runs.append((name, mode, cost, seconds))
    bandwidth = statistics.median(rates)

    # 3. GEMM rate: chained matrix products, reverse mode
    gemm = loads(GEMM_PROGRAM.replace("{n}", "384"), "<calibrate: gemm>")
    seconds, cost = _best_time(gemm, "reverse", max(3, repeats // 2), be)
    computing = max(seconds - cost.ops * op_s - cost.values_moved * itemsize / bandwidth, seconds * 0.1)
    gemm_rate = cost.gemm_flops / computing
    runs.append(("gemm", "reverse", cost, seconds))

    model = MachineModel(be.name, op_s=op_s, bandwidth=bandwidth, gemm_rate=gemm_rate,
                         source=f"calibrated {time.strftime('%Y-%m-%d')}")
    checks = [{"program": name, "mode": mode, "measured_s": seconds,
               "predicted_s": model.time(cost, itemsize)} for name, mode, cost, seconds in runs]
    return {"model": model, "checks": checks, "seconds": time.perf_counter() - started}
