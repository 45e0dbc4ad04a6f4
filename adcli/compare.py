"""Forward vs reverse vs central differences on one function, a recommendation
that names its numbers, and scaling sweeps over a dim.

The library side of `adcli compare`: `compare(program, ...)` runs every
method and returns a `Comparison`; `scale(path, name, values, ...)` reruns it
per value of a dim and fits log-log slopes. Rendering lives in
adcli.render_compare; JSON in `Comparison.to_json` / `Sweep.to_json`.
"""
from __future__ import annotations

import os
import statistics
from dataclasses import dataclass, field
from math import log, prod

import numpy as np

from .api import _bytes
from .einsum import report as contraction_report
from .errors import AdError, ResourceProblem, UsageProblem

# Methods and figures by their keys: snake_case, as every JSON document spells them
# (`jq .slopes.reverse.cached_values`); LABELS are what tables and charts print.
METHODS = ("forward", "reverse", "central_differences")
FIGURES = ("passes", "derivative_mults", "cached_values", "peak_live_values", "peak_bytes", "time_s")
LABELS = {"forward": "forward", "reverse": "reverse", "central_differences": "central differences",
          "passes": "passes", "sweeps": "sweeps", "derivative_mults": "derivative mults",
          "derivative_flops": "derivative flops", "primal_flops": "primal flops",
          "cached_values": "cached values", "peak_live_values": "peak live values",
          "peak_bytes": "peak bytes", "time_s": "time", "predicted_peak_bytes": "predicted peak bytes",
          "predicted_time_s": "predicted time"}


def label(key: str) -> str:
    """The printed name of a method or figure key ('central_differences' -> 'central differences')."""
    return LABELS.get(key, key.replace("_", " "))


@dataclass
class MethodRun:
    name: str                        # a METHODS key
    result: object = None            # a Derivative, or None when skipped
    times: list = field(default_factory=list)
    predicted_bytes: int | None = None
    skipped: str | None = None
    over_time_limit: str | None = None   # when skipped for the time limit: why, as a clause
    accuracy: dict = field(default_factory=dict)   # reference name -> {max_abs, max_rel}
    backend: str | None = None       # the backend it ran on (its key names it with several)

    @property
    def cost(self):
        return None if self.result is None else self.result.cost

    @property
    def time(self) -> float | None:
        return statistics.median(self.times) if self.times else None

    def figure(self, name):
        cost = self.cost
        if cost is None:
            return None
        return {"passes": cost.passes, "sweeps": cost.sweeps, "derivative_mults": cost.mults_derivative,
                "derivative_flops": cost.flops_derivative, "primal_flops": cost.flops_primal,
                "cached_values": cost.cached_values, "peak_live_values": cost.peak_live_values,
                "peak_bytes": cost.peak_bytes, "time_s": self.time,
                "predicted_peak_bytes": cost.predicted.get("peak_bytes"),
                "predicted_time_s": cost.predicted.get("time_s")}[name]


def difference(a: np.ndarray, reference: np.ndarray) -> dict:
    """Largest absolute difference, and that over the largest finite |reference| entry.
    Entries that are equal, or nan in both, differ by 0 (a non-finite point is
    reported on its own); any other nan or inf makes the difference nan."""
    if a.size == 0:
        return {"max_abs": 0.0, "max_rel": 0.0}
    with np.errstate(invalid="ignore"):
        gap = np.abs(a - reference)
    gap[(a == reference) | (np.isnan(a) & np.isnan(reference))] = 0.0
    if not np.all(np.isfinite(gap)):
        return {"max_abs": float("nan"), "max_rel": float("nan")}
    diff = float(np.max(gap))
    finite = np.abs(reference[np.isfinite(reference)])
    scale = float(np.max(finite)) if finite.size else 0.0
    return {"max_abs": diff, "max_rel": diff / scale if scale > 0 else diff}


FD = "central_differences"


def agreement(runs, dtype: str) -> dict:
    """Every pair of methods that ran, against the documented tolerance (adcli.fd.TOLERANCE,
    norm-wise relative), and which methods disagree with the others.

    Forward and reverse mode must agree to round-off; when they do not, central
    differences decide which one is wrong (the one FD backs is trusted); when FD
    backs neither or did not run, neither is. FD alone disagreeing with two modes
    that agree points at FD (a kink, or an ill-conditioned function), not at AD."""
    from .fd import TOLERANCE

    tolerance = TOLERANCE[dtype]
    jac = {k: r.result.jacobian for k, r in runs.items() if r.result is not None}
    pairs = {}
    for a, b in (("forward", "reverse"), (FD, "reverse"), (FD, "forward")):
        if a in jac and b in jac:   # _accuracy has made most of these already
            d = runs[a].accuracy.get(b) or _judged(jac[a], jac[b], tolerance)
            pairs[(a, b)] = {"methods": [a, b], **d}

    def agrees(a, b):
        entry = pairs.get((a, b)) or pairs.get((b, a))
        return None if entry is None else entry["within_tolerance"]

    disagreeing, message = [], None
    if agrees("forward", "reverse") is False:
        backed = [m for m in ("forward", "reverse") if agrees(FD, m)]
        disagreeing = ["reverse" if backed == ["forward"] else "forward"] if len(backed) == 1 \
            else ["forward", "reverse"]
        d = pairs[("forward", "reverse")]
        message = (f"forward and reverse mode disagree beyond the tolerance of {tolerance:g} "
                   f"(max rel diff {d['max_rel']:.1e}, max abs diff {d['max_abs']:.1e}); ")
        message += (f"central differences agree with {backed[0]}, so {disagreeing[0]} mode is wrong here"
                    if len(backed) == 1 else
                    "central differences cannot tell which is right") 
        message += ": this is a bug in adcli, please report it with this file"
    elif any(agrees(FD, m) is False for m in ("forward", "reverse")):
        disagreeing = [FD]
        worst = max((pairs[p] for p in pairs if p[0] == FD), key=lambda e: _nan_high(e["max_rel"]))
        message = (f"central differences disagree with {worst['methods'][1]} mode beyond the tolerance "
                   f"of {tolerance:g} (max rel diff {worst['max_rel']:.1e}, max abs diff "
                   f"{worst['max_abs']:.1e}), while the AD modes agree: the function may have a kink "
                   "or be ill-conditioned at this point, where a finite-difference step is unreliable")
    return {"tolerance": tolerance, "pairs": list(pairs.values()), "disagreeing": disagreeing,
            "message": message}


def _key(text: str) -> str:
    """A snake_case key: 'numpy-copy' -> 'numpy_copy'."""
    import re

    return re.sub(r"[^0-9a-z]+", "_", text.lower()).strip("_")


def _nan_high(x: float) -> float:
    return float("inf") if x != x else x


@dataclass
class Comparison:
    file: str
    wrt: list
    outputs: list
    n: int
    m: int
    runs: dict
    backend: str
    device: str
    dtype: str
    repeat: int
    memory_limit: int
    recommendation: dict = field(default_factory=dict)
    theory: dict = field(default_factory=dict)
    agreement: dict = field(default_factory=dict)
    frontier: list = field(default_factory=list)   # FrontierPoint per states kept (loops only)
    # per einsum of the program: the contraction order chosen and the left-to-right one
    # (adcli.einsum.report): what a chain of products costs depends on its order
    contractions: list = field(default_factory=list)

    def run_of(self, method: str):
        """The run of a METHODS key (on the first backend, with several), or None."""
        return self.runs.get(method) or next((r for r in self.runs.values() if r.name == method), None)

    def to_json(self) -> dict:
        methods = {}
        for name, run in self.runs.items():
            methods[name] = {
                "method": run.name,
                "backend": run.backend,
                "skipped": run.skipped,
                "cost": None if run.cost is None else run.cost.to_json(),
                "time_s_median": run.time,
                "times_s": run.times,
                "predicted_bytes": run.predicted_bytes,
                "accuracy": run.accuracy,
            }
        return {"kind": "compare", "file": self.file, "wrt": self.wrt, "outputs": self.outputs,
                "n": self.n, "m": self.m, "backend": self.backend, "device": self.device,
                "dtype": self.dtype, "repeat": self.repeat, "memory_limit": self.memory_limit,
                "methods": methods, "agreement": self.agreement, "recommendation": self.recommendation,
                "theory": self.theory, "frontier": [point.to_json() for point in self.frontier],
                "contractions": self.contractions}


def predicted_bytes(program, mode, wrt, itemsize) -> int:
    """What the memory check predicts a method needs at the least (one direction per
    sweep), inputs and consts included. Central differences evaluate f 2n times and
    keep the Jacobian: forward mode with one direction per sweep bounds that."""
    outputs = program.output_names
    return program.required_bytes("forward" if mode == FD else mode, program._wrt(wrt), outputs, 1,
                                  itemsize)


def compare(program, wrt=None, at=None, repeat: int = 3, backend="numpy", dtype="float64",
            memory_limit: int | None = None, fd_max_inputs: int = 5000,
            methods=METHODS, looped=None, time_limit: float | None = None) -> Comparison:
    """Run every method (on every backend, when `backend` is a list) and compare.
    `time_limit` (seconds): a mode predicted to take longer is skipped, saying so.
    `looped`: the same file loaded with every repeat that can stay a loop a loop
    (loads(..., loops="always")), for the checkpointing frontier; the methods run on
    `program`, as adcli grad loads it."""
    from .api import DTYPES, default_memory_limit

    if repeat < 1:
        raise UsageProblem("--repeat must be at least 1")
    backends = [backend] if isinstance(backend, str) else list(dict.fromkeys(backend))
    wrt = program._wrt(wrt)
    outputs = program.output_names
    n = sum(prod(program.input_shape(w)) for w in wrt)
    m = sum(prod(program.output_shape(o)) for o in outputs)
    limit = default_memory_limit() if memory_limit is None else memory_limit
    itemsize = np.dtype(DTYPES[dtype]).itemsize
    runs, groups, devices = {}, [], []
    for be in backends:
        group = _run_methods(program, wrt, at, repeat, be, dtype, limit, itemsize, n,
                             fd_max_inputs, methods, time_limit)
        _accuracy(group, dtype)
        groups.append(group)
        done = next((r.result for r in group.values() if r.result is not None), None)
        be_name = done.backend if done is not None else str(getattr(be, "name", be))
        devices.append((be_name, done.device if done is not None else _device(be)))
        for name, run in group.items():
            run.backend = be_name
            runs[name if len(backends) == 1 else f"{name}_{_key(be_name)}"] = run
    comparison = Comparison(program.graph.filename, wrt, outputs, n, m, runs,
                            ", ".join(b for b, _ in devices), ", ".join(d for _, d in devices),
                            dtype, repeat, limit)
    # The counts are the same on every backend; the first one's runs explain the choice.
    comparison.agreement = agreement(groups[0], dtype)
    for group in groups[1:]:   # a backend whose methods disagree is reported too
        other = agreement(group, dtype)
        if other["message"] and not comparison.agreement["message"]:
            comparison.agreement = other
    if comparison.agreement["disagreeing"] == [FD]:
        kinks = kinks_at(program, wrt, at)
        if kinks:   # name the kink instead of guessing at one
            head = comparison.agreement["message"].split(": the function may have a kink")[0]
            extra = len(kinks) - 1
            more = f" (and {extra} more kink{'s' if extra > 1 else ''})" if extra else ""
            comparison.agreement["message"] = f"{head}: {kinks[0]}{more}"
    looped = looped if looped is not None and looped._loop_count() else \
        program if program._loop_count() else None
    if "reverse" in methods and looped is not None:
        comparison.frontier = frontier(looped, wrt, at, repeat, backends[0], dtype, limit, itemsize,
                                       groups[0].get("reverse") if looped is program else None, time_limit)
    comparison.recommendation = recommend(program, groups[0], limit, comparison.agreement, wrt,
                                          backends[0], dtype, looped, time_limit)
    comparison.theory = theory(groups[0], n, m)
    comparison.contractions = contraction_report(program.graph)
    return comparison


# The frontier leaves out a number of states whose recomputation would run the loops'
# steps more than this many times over (S = 1 on a 10,000-step loop: 5,000 times).
MAX_RECOMPUTATION_FACTOR = 20


@dataclass
class FrontierPoint:
    """Reverse mode with at most `checkpoints` states per loop (None: every iteration's
    residuals kept): what it was predicted and measured to cost."""
    checkpoints: int | None
    recomputed_steps: int | None = None
    cached_values: int | None = None
    predicted_peak_bytes: int | None = None
    peak_bytes: int | None = None
    predicted_time_s: float | None = None
    times: list = field(default_factory=list)
    skipped: str | None = None

    @property
    def time_s(self) -> float | None:
        return statistics.median(self.times) if self.times else None

    def to_json(self) -> dict:
        return {"checkpoints": self.checkpoints, "recomputed_steps": self.recomputed_steps,
                "cached_values": self.cached_values, "predicted_peak_bytes": self.predicted_peak_bytes,
                "peak_bytes": self.peak_bytes, "predicted_time_s": self.predicted_time_s,
                "time_s": self.time_s, "times_s": self.times, "skipped": self.skipped}


# The frontier's largest S (a 10^12-step loop would otherwise be tried at S = 2^39): each saved
# state is a step of a prediction's walk down to the first reversed step, each a bisection over
# binomial counts (10^12 steps at S = 65,536: 20 s to predict)
MAX_FRONTIER_STATES = 2 ** 10


def frontier_states(program) -> list:
    """The numbers of states the frontier tries: 1, 2, 4, … below the longest loop's count
    (and MAX_FRONTIER_STATES),
    leaving out those that would recompute more than MAX_RECOMPUTATION_FACTOR times the
    loops' steps; then None (no checkpointing)."""
    from .checkpoint import recomputations

    counts = [node.attrs["count"] for node in program.graph.nodes if node.op == "loop"]
    states, s = [], 1
    while s < min(max(counts), MAX_FRONTIER_STATES):
        if sum(recomputations(c, s) for c in counts) <= MAX_RECOMPUTATION_FACTOR * sum(counts):
            states.append(s)
        s *= 2
    return states + [None]


def frontier(program, wrt, at, repeat, backend, dtype, limit, itemsize, reverse_run, time_limit=None) -> list:
    """Reverse mode at each of frontier_states: the time–memory trade-off of checkpointing.
    The run without checkpoints is the method table's reverse run (not run again)."""
    from .api import backend_name
    from .machine import model_for

    outputs = program.output_names
    points = []
    be_name = backend_name(backend)
    model = model_for("numpy" if be_name == "auto" else be_name)
    for states in frontier_states(program):
        point = FrontierPoint(states)
        points.append(point)
        # predicted at one direction per sweep (what the memory check needs at the least);
        # a run replaces these with its own figures at the chunk it ran
        need = program.required_bytes("reverse", wrt, outputs, 1, itemsize, states)
        cost = program.predict("reverse", wrt, chunk=1, outputs=outputs, checkpoints=states)
        point.recomputed_steps, point.cached_values = cost.recomputed_steps, cost.cached_values
        point.predicted_peak_bytes = program.predicted_peak_bytes("reverse", wrt, outputs, 1, itemsize,
                                                                  checkpoints=states)
        point.predicted_time_s = model.time(cost, itemsize)
        if states is None and reverse_run is not None:
            if reverse_run.cost is None:
                point.skipped = reverse_run.skipped
            else:
                _measured_point(point, reverse_run.cost)
                point.times = list(reverse_run.times)
            continue
        if need > limit:
            point.skipped = (f"skipped: predicted to need {_bytes(need)}, over the memory limit of "
                             f"{_bytes(limit)}")
            continue
        try:
            for attempt in range(repeat):
                traced = attempt == 0
                result = program.jacobian(mode="reverse", wrt=wrt, at=at, backend=backend, dtype=dtype,
                                          memory_limit=limit, warmup=None if traced else False,
                                          measure_memory=traced, checkpoints=states, time_limit=time_limit)
                if traced:
                    _measured_point(point, result.cost)
                point.times.append(result.cost.time_s["sweeps"])
        except ResourceProblem as exc:
            point.times, point.skipped = [], f"skipped: {exc.message}"
    return points


def _measured_point(point, cost):
    point.peak_bytes = cost.peak_bytes
    point.predicted_peak_bytes = cost.predicted.get("peak_bytes")
    point.predicted_time_s = cost.predicted.get("time_s")
    point.recomputed_steps, point.cached_values = cost.recomputed_steps, cost.cached_values


# What adcli takes at each kink (docs/language.md, "Derivatives at non-differentiable points").
KINK_VALUES = {"relu": "0", "abs": "0", "sign": "0", "heaviside": "0", "norm": "0",
               "maximum": "½ for each side", "minimum": "½ for each side",
               "clip": "1 (towards x)", "max": "an equal share for each tied element",
               "min": "an equal share for each tied element"}
SYMBOL_OF = {"less": "<", "less_equal": "<=", "greater": ">", "greater_equal": ">=", "equal": "==",
             "not_equal": "!="}


def kinks_at(program, wrt, at) -> list[str]:
    """Sentences naming each op that sits exactly on a kink at the point, among the nodes
    that depend on the `wrt` inputs: 'x = 0 is a kink of abs at f.ad:3, where central
    differences average the two one-sided slopes and adcli takes 0'."""
    from .ops import REGISTRY

    graph = program.graph
    wrt_ids = {graph.inputs[name] for name in wrt}
    values, varies, found = {}, {}, []

    def text(i):
        node = graph.nodes[i]
        return node.attrs["name"] if node.op in ("input", "const") and "name" in node.attrs \
            else (node.text.strip() or node.var)

    with np.errstate(all="ignore"):
        for node in program.host_nodes(at, "float64", values):   # (stops at a loop)
            if node.op in ("input", "const"):
                varies[node.id] = node.id in wrt_ids
                continue
            args = [values[i] for i in node.inputs]
            values[node.id] = np.asarray(REGISTRY[node.op].evaluate(np, *args, **node.attrs))
            varies[node.id] = any(varies[i] for i in node.inputs)
            if not varies[node.id]:
                continue
            op, where = node.op, f"{os.path.basename(graph.filename)}:{node.line}"
            what = None
            if op in ("relu", "abs", "sign", "heaviside") and np.any(args[0] == 0):
                what = f"{text(node.inputs[0])} = 0 is a kink of {op} at {where}"
            elif op == "norm" and not np.any(args[0]):
                what = f"{text(node.inputs[0])} = 0 is a kink of norm at {where}"
            elif op in ("maximum", "minimum") and np.any(args[0] == args[1]):
                what = f"{text(node.inputs[0])} = {text(node.inputs[1])} is a kink of {op} at {where}"
            elif op == "clip" and np.any((args[0] == args[1]) | (args[0] == args[2])):
                what = f"{text(node.inputs[0])} at an end of [lo, hi] is a kink of clip at {where}"
            elif op in ("max", "min"):
                axis = node.attrs.get("axis")
                hits = np.sum(args[0] == _kept(values[node.id], args[0], axis), axis=axis)
                if np.any(hits > 1):
                    what = f"a tie in {op}({text(node.inputs[0])}) at {where} is a kink"
            elif op in SYMBOL_OF and np.any(args[0] == args[1]):
                # a jump goes first: it makes the largest disagreement
                found.insert(0, f"{text(node.inputs[0])} = {text(node.inputs[1])} is where the mask of "
                                f"'{SYMBOL_OF[op]}' at {where} jumps, which central differences see as a "
                                "huge slope; adcli takes 0")
            if what:
                found.append(f"{what}, where central differences average the two one-sided slopes "
                             f"and adcli takes {KINK_VALUES[op]}")
    return found


def _kept(out, x, axis):
    """A reduction's result shaped to broadcast against its input."""
    return np.reshape(out, tuple(1 if axis is None or i == axis else d for i, d in enumerate(x.shape)))


def _run_methods(program, wrt, at, repeat, backend, dtype, limit, itemsize, n, fd_max_inputs,
                 methods, time_limit=None) -> dict:
    from .fd import finite_differences

    runs = {}
    for name in methods:
        run = MethodRun(name)
        runs[name] = run
        run.predicted_bytes = predicted_bytes(program, name, wrt, itemsize)
        if name == FD and n > fd_max_inputs:
            run.skipped = (f"skipped: {n:,} inputs would take {2 * n:,} evaluations "
                           f"(more than --fd-max-inputs {fd_max_inputs:,})")
            continue
        if run.predicted_bytes > limit:
            run.skipped = (f"skipped: predicted to need {_bytes(run.predicted_bytes)} even one direction "
                           f"at a time, over the memory limit of {_bytes(limit)}")
            continue
        if name == FD and time_limit is not None:
            from .api import duration

            fd_time = (2 * n + 1) * program.predicted_primal_time(itemsize, backend)
            if fd_time > time_limit:
                run.skipped = (f"skipped: {2 * n:,} evaluations are predicted to take about {duration(fd_time)}, "
                               f"over the time limit of {duration(time_limit)}")
                continue
        try:
            # The first run traces allocations for peak_bytes; the others are timed
            # without tracing, which slows small runs 5-10× (an AD run's first time
            # is already re-timed untraced by Program.jacobian).
            for attempt in range(repeat if name != FD or repeat == 1 else repeat + 1):
                traced = attempt == 0
                if name == FD:
                    result = finite_differences(program, wrt, at, backend, dtype, measure_memory=traced)
                else:   # warm up (where the backend wants it) before the first run only
                    result = program.jacobian(mode=name, wrt=wrt, at=at, backend=backend, dtype=dtype,
                                              memory_limit=limit, warmup=None if traced else False,
                                              measure_memory=traced, time_limit=time_limit)
                if traced:
                    run.result = result
                if not (traced and name == FD and repeat > 1):
                    run.times.append(result.cost.time_s["sweeps"])
        except ResourceProblem as exc:
            run.result, run.times = None, []
            run.skipped, run.over_time_limit = f"skipped: {exc.message}", exc.over_time_limit
    return runs


def _accuracy(runs, dtype="float64"):
    """Forward and finite differences against reverse, reverse against forward
    (finite differences against forward when reverse did not run), each with
    whether it is within the documented tolerance."""
    from .fd import TOLERANCE

    jac = {k: r.result.jacobian for k, r in runs.items() if r.result is not None}
    pairs = [("forward", "reverse"), (FD, "reverse"), ("reverse", "forward")]
    if "reverse" not in jac:
        pairs.append((FD, "forward"))
    for name, reference in pairs:
        if name in jac and reference in jac:
            runs[name].accuracy[reference] = _judged(jac[name], jac[reference], TOLERANCE[dtype])


def _judged(a: np.ndarray, reference: np.ndarray, tolerance: float) -> dict:
    """`difference`, and whether it is within the tolerance (a nan difference is not)."""
    d = difference(a, reference)
    d["within_tolerance"] = bool(d["max_rel"] <= tolerance)
    return d


def _device(backend) -> str:
    """The device a backend runs on, when no run said so (every method skipped)."""
    from .backends import get_backend

    if not isinstance(backend, str):
        return backend.device
    try:
        return get_backend(backend).device
    except AdError:   # (cupy without a GPU: its runs said why already)
        return "?"


def recommend(program, runs, limit, agreed: dict | None = None, wrt=None, backend="numpy",
              dtype="float64", looped=None, time_limit: float | None = None) -> dict:
    """The mode to recommend: the decision --mode auto makes (adcli.decide: least
    predicted time among the modes predicted to fit the limit), leaving out a mode
    whose Jacobian disagrees with the other methods (`agreed`, from `agreement`), whose
    measured peak exceeded the limit, or whose predicted time passes `time_limit`
    (seconds). Then the measured times set beside the prediction: where they contradict
    it, the recommendation says so and by how much."""
    from .api import duration
    wrong = set((agreed or {}).get("disagreeing", ()))
    mismatch = (agreed or {}).get("message") if wrong & {"forward", "reverse"} else None
    exclude = {}
    for name in ("forward", "reverse"):
        run = runs.get(name)
        if name in wrong:
            exclude[name] = "its Jacobian disagrees with the other methods"
        elif run is not None and run.cost is not None and run.cost.peak_bytes is not None \
                and run.cost.peak_bytes > limit:
            exclude[name] = (f"it measured a peak of {_bytes(run.cost.peak_bytes)}, over the memory "
                             f"limit of {_bytes(limit)}")
    be = backend if isinstance(backend, str) else backend[0]
    decision = program.decide(wrt, None, limit, be, dtype, exclude=exclude)   # as adcli grad --mode auto
    if time_limit is not None:   # (compare did not run these: a mode it skipped is not recommended)
        # a mode compare skipped for the time limit, for the reason its skip gave (the same
        # figure: the sweeps with compiling and tracing, as adcli grad's guard counts them);
        # a mode it did not try, by the decision's predicted time of its sweeps
        slow = {}
        for m, plan in decision.plans.items():
            run = runs.get(m)
            if m in exclude or not plan.fits:
                continue
            if getattr(run, "over_time_limit", None):
                slow[m] = run.over_time_limit
            elif run is None and plan.time_s > time_limit:
                slow[m] = (f"it is predicted to take about {duration(plan.time_s)}, over the time limit of "
                           f"{duration(time_limit)}")
        if slow:
            exclude.update(slow)
            decision = program.decide(wrt, None, limit, be, dtype, exclude=exclude)
    if decision.mode is None and mismatch and len(wrong & {"forward", "reverse"}) == 2:
        reason = "neither mode can be trusted here: " + mismatch + "."
    else:
        reason = decision.reason[:1].upper() + decision.reason[1:] + "."
    disagreement = _timing_contradiction(runs, decision)
    if disagreement:
        reason += " Note: " + disagreement + "."
    checkpointed = None
    if looped is not None and "reverse" not in exclude:
        checkpointed = _checkpointed_reverse(looped, decision, wrt, limit, be, dtype, time_limit)
        if checkpointed:
            reason += " " + checkpointed + "."
    if mismatch and decision.mode is not None:
        reason += " Warning: " + mismatch + "."
    return {"mode": decision.mode, "reason": reason, "disagreement": disagreement, "mismatch": mismatch,
            "checkpointed": checkpointed, "predicted": decision.to_json()}


def _checkpointed_reverse(looped, decision, wrt, limit, backend, dtype, time_limit=None) -> str | None:
    """A sentence when reverse mode keeping fewer states per loop (--checkpoints auto) fits
    the limit where keeping every residual does not, and is predicted faster than what
    the decision picked (or when it is the only way to run at all, or would be but for
    `time_limit`); None otherwise."""
    from .api import duration
    from .decide import NEAR_TIE, seconds

    if decision.plans.get("reverse") is not None and decision.plans["reverse"].fits:
        return None   # every residual fits: nothing to trade
    if time_limit is not None:   # checkpointing only runs steps again: past the limit keeping
        from .api import DTYPES, backend_name   # every residual, no S is worth searching for

        wrt_names, outputs = looped._wrt(wrt), looped.output_names
        fastest = looped._model_seconds("reverse", wrt_names, outputs, np.dtype(DTYPES[dtype]).itemsize,
                                        backend_name(backend), True, True)   # (as compare runs it: traced)
        if fastest > time_limit:
            return None if decision.mode is not None else \
                (f"Checkpointing cannot help: reverse mode is predicted to take about {duration(fastest)} "
                 f"({'' if looped.predict('reverse', wrt_names).interpreted else 'compiling and '}tracing memory "
                 f"included) even keeping every step's residuals, which runs no step again, over the time limit "
                 f"of {duration(time_limit)}")
    plan = looped.decide(wrt, None, limit, backend, dtype, checkpoints="auto").plans["reverse"]
    if not plan.fits or plan.checkpoints is None:
        return None
    how = (f"reverse mode keeping at most {plan.checkpoints:,} states per loop (adcli grad --mode reverse "
           f"--checkpoints {plan.checkpoints}, or --checkpoints auto) fits the memory limit, running "
           f"{plan.cost.recomputed_steps:,} loop steps again, predicted {seconds(plan.time_s)}")
    if time_limit is not None and plan.time_s > time_limit:
        return None if decision.mode is not None else \
            f"Checkpointing would fit: {how}, over the time limit of {duration(time_limit)}"
    if decision.mode is None:
        return "Checkpointing runs it: " + how
    picked = decision.plans[decision.mode]
    if plan.time_s < (1 - NEAR_TIE) * picked.time_s:
        return (f"Checkpointing beats it: {how}, against {seconds(picked.time_s)} for {decision.mode} "
                f"({plan.time_s and picked.time_s / plan.time_s:.2g}× faster)")
    return None


# Measured times below this do not contradict a prediction: per-call overhead, the
# timer and the machine's noise decide the order of two runs that short.
MIN_JUDGED_S = 1e-3


def _timing_contradiction(runs, decision) -> str | None:
    """A sentence when the measured times order the modes against the prediction by
    more than the near-tie margin, with both ratios; None when they agree."""
    from .decide import NEAR_TIE, seconds

    f, r = runs.get("forward"), runs.get("reverse")
    plans = decision.plans
    if not (f and r and f.time and r.time and plans["forward"].fits and plans["reverse"].fits
            and plans["forward"].time_s and plans["reverse"].time_s):
        return None
    predicted = plans["forward"].time_s / plans["reverse"].time_s
    measured = f.time / r.time
    if min(f.time, r.time) < MIN_JUDGED_S:   # the order of two sub-millisecond runs is noise
        return None
    if (predicted < 1) == (measured < 1) or abs(log(measured)) <= log(1 + NEAR_TIE) \
            or abs(log(predicted)) <= log(1 + NEAR_TIE):
        return None
    fast_p, slow_p = ("forward", "reverse") if predicted < 1 else ("reverse", "forward")
    factor_p = max(predicted, 1 / predicted)
    factor_m = max(measured, 1 / measured)
    return (f"the measured times contradict the prediction: {fast_p} was predicted {factor_p:,.2g}× "
            f"faster than {slow_p} but measured {factor_m:,.2g}× slower "
            f"({seconds(runs[fast_p].time)} vs {seconds(runs[slow_p].time)})")


def theory(runs, n, m) -> dict:
    """The rule of thumb next to the measurement (ratios forward / reverse)."""
    f, r = runs.get("forward"), runs.get("reverse")
    data = {"rule": "forward mode needs n passes (one per input scalar), reverse mode m (one per output "
                    "scalar); reverse mode's cached values grow with the length of the program, "
                    "forward mode keeps none",
            "n": n, "m": m, "predicted_pass_ratio": n / m if m else None,
            "measured_pass_ratio": None, "measured_mult_ratio": None, "measured_time_ratio": None}
    if f and r and f.cost and r.cost:
        data["measured_pass_ratio"] = f.cost.passes / r.cost.passes if r.cost.passes else None
        data["measured_mult_ratio"] = (f.cost.mults_derivative / r.cost.mults_derivative
                                       if r.cost.mults_derivative else None)
        data["measured_time_ratio"] = f.time / r.time if f.time and r.time else None
    return data


# -- scaling sweeps -----------------------------------------------------------------------

def parse_scale(text: str) -> tuple[str, list]:
    name, sep, values = text.partition("=")
    name = name.strip()
    if not sep or not name:
        raise UsageProblem(f"--scale expects NAME=v1,v2,..., got {text!r}")
    try:
        numbers = [int(v) for v in values.split(",") if v.strip()]
    except ValueError:
        raise UsageProblem(f"--scale {name}: values must be whole numbers, got {values!r}") from None
    if len(numbers) < 2 or any(v < 1 for v in numbers):
        raise UsageProblem(f"--scale {name}: give two or more positive whole numbers, got {values!r}")
    return name, sorted(set(numbers))


def fit_slope(xs, ys) -> float | None:
    """The least-squares slope of log y on log x; a constant series (zeros too) has slope 0."""
    pairs = [(x, y) for x, y in zip(xs, ys) if y is not None]
    if len(pairs) < 2:
        return None
    values = [y for _, y in pairs]
    if all(v == values[0] for v in values):
        return 0.0
    pairs = [(log(x), log(y)) for x, y in pairs if y > 0 and x > 0]
    if len(pairs) < 2:
        return None
    mx = sum(x for x, _ in pairs) / len(pairs)
    my = sum(y for _, y in pairs) / len(pairs)
    sxx = sum((x - mx) ** 2 for x, _ in pairs)
    if sxx == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in pairs) / sxx


@dataclass
class Sweep:
    name: str
    values: list
    points: list          # [(value, Comparison or None, note)]
    slopes: dict          # method -> figure -> slope
    notes: list

    def series(self, method, figure):
        xs, ys = [], []
        for value, comparison, _ in self.points:
            run = None if comparison is None else comparison.run_of(method)
            if run is None:
                continue
            y = run.figure(figure)
            if y is not None:
                xs.append(value)
                ys.append(y)
        return xs, ys

    def recommended(self) -> list:
        """[(value, mode or None)] for the values that ran."""
        return [(value, comparison.recommendation.get("mode")) for value, comparison, _ in self.points
                if comparison is not None]

    def crossovers(self) -> list:
        """Where the recommended mode changes between two neighbouring values that ran:
        [{"between": [a, b], "from": mode at a, "to": mode at b}]."""
        done = self.recommended()
        return [{"between": [a, b], "from": ma, "to": mb}
                for (a, ma), (b, mb) in zip(done, done[1:]) if ma != mb]

    def to_json(self) -> dict:
        points = []
        for value, comparison, note in self.points:
            entry = {"value": value, "note": note}
            if comparison is not None:
                data = comparison.to_json()
                entry["methods"] = data["methods"]
                entry["recommendation"] = data["recommendation"]
            points.append(entry)
        return {"kind": "compare-scale", "scale": {"name": self.name, "values": self.values},
                "points": points, "slopes": self.slopes, "crossovers": self.crossovers(),
                "notes": self.notes}


def scale(load, name: str, values: list, dims: dict, memory_limit=None, **options) -> Sweep:
    """Rerun `compare` for each value of dim `name`. `load(dims)` builds the program."""
    from .api import DTYPES, default_memory_limit

    limit = default_memory_limit() if memory_limit is None else memory_limit
    itemsize = np.dtype(DTYPES[options.get("dtype", "float64")]).itemsize
    points, notes = [], []
    known = load(dims).graph.dims
    if name not in known:
        raise UsageProblem(f"--scale {name}: the file has no dim named '{name}' "
                           f"(dims: {', '.join(known) or 'none'})")
    for value in values:
        program = load({**dims, name: value})
        over = [m for m in METHODS if predicted_bytes(program, m, options.get("wrt"), itemsize) > limit]
        if len(over) == len(METHODS):
            note = (f"{name}={value} skipped: every method is predicted to exceed the memory limit of "
                    f"{_bytes(limit)}")
            notes.append(note)
            points.append((value, None, note))
            continue
        comparison = compare(program, memory_limit=limit, **options)
        note = "; ".join(f"{label(r.name)} {r.skipped}" for r in comparison.runs.values() if r.skipped) or None
        if note:
            notes.append(f"{name}={value}: {note}")
        points.append((value, comparison, note))
    sweep = Sweep(name, values, points, {}, notes)
    for method in METHODS:
        sweep.slopes[method] = {fig: fit_slope(*sweep.series(method, fig)) for fig in FIGURES}
    return sweep


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise AdError("--plot needs matplotlib, which is not installed; install it with "
                      "pip install 'adcli[plot]' (from a clone: pip install '.[plot]')") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save_figure(plt, fig, path):
    try:
        fig.savefig(path)
    except (OSError, ValueError) as exc:
        raise UsageProblem(f"--plot: cannot write {path} ({exc})") from None
    finally:
        plt.close(fig)


def plot_frontier(comparison: Comparison, path: str):
    """Peak bytes against time for reverse mode at each number of states kept (measured,
    and predicted), forward mode beside them."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for which, style in (("measured", "o-"), ("predicted", "s--")):
        pts = []
        for p in comparison.frontier:
            t, b = (p.time_s, p.peak_bytes) if which == "measured" else (p.predicted_time_s, p.predicted_peak_bytes)
            if t and b:
                pts.append((t, b, "all" if p.checkpoints is None else f"S={p.checkpoints}"))
        if pts:
            ax.plot([q[0] for q in pts], [q[1] for q in pts], style, label=f"reverse, {which}",
                    color="tab:purple", alpha=1.0 if which == "measured" else 0.5)
            if which == "measured":
                for t, b, name in pts:
                    ax.annotate(name, (t, b), textcoords="offset points", xytext=(5, 4), fontsize=8)
    forward = comparison.run_of("forward")
    if forward is not None and forward.cost is not None and forward.time and forward.cost.peak_bytes:
        ax.plot([forward.time], [forward.cost.peak_bytes], "^", color="tab:cyan", markersize=9,
                label="forward mode (measured)")
    ax.axhline(comparison.memory_limit, color="tab:red", lw=1, ls=":", label="memory limit")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("time of the sweeps (s)")
    ax.set_ylabel("peak bytes")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"adcli compare: checkpointing {os.path.basename(comparison.file)}")
    fig.tight_layout()
    _save_figure(plt, fig, path)


def plot_image(sweep: Sweep, path: str):
    """A log-log chart per figure, one line per method, written by matplotlib."""
    plt = _pyplot()

    figures = [f for f in FIGURES]
    fig, axes = plt.subplots(2, 3, figsize=(13, 7.5))
    for ax, figure in zip(axes.flat, figures):
        drawn = False
        for method, marker in zip(METHODS, "o^s"):
            xs, ys = sweep.series(method, figure)
            pts = [(x, y) for x, y in zip(xs, ys) if y and y > 0]
            if not pts:
                continue
            slope = sweep.slopes[method][figure]
            name = label(method) + ("" if slope is None else f" (slope {slope:.2f})")
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=marker, label=name)
            drawn = True
        if not drawn:
            ax.text(0.5, 0.5, "0 for every method", ha="center", va="center", transform=ax.transAxes)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(sweep.name)
        ax.set_title(label(figure) + (" (s)" if figure == "time_s" else ""))
        ax.grid(True, which="both", alpha=0.3)
        if drawn:
            ax.legend(fontsize=7)
    fig.suptitle(f"adcli compare: scaling with {sweep.name}")
    fig.tight_layout()
    _save_figure(plt, fig, path)
