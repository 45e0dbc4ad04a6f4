"""Which mode to run: one decision for `--mode auto`, `adcli compare` and the API.

For each mode, from the graph alone: the chunk the memory limit forces (the
largest number of directions per sweep whose predicted peak fits), the counts at
that chunk, the predicted time under the machine model (adcli.machine) and the
predicted peak bytes. Among the modes that fit, the least predicted time wins;
times within NEAR_TIE of each other go to the mode that needs less memory, when
the memory differs by more than NEAR_TIE too, else to the one making fewer
derivative mults (then to forward, which keeps nothing for a backward sweep). The reason names the
figures that decided and nothing else.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .errors import ResourceProblem

MODES = ("forward", "reverse")
NEAR_TIE = 0.10   # predicted times within 10% of each other count as a tie


@dataclass(eq=False)   # compared by identity (no field-by-field __eq__ to generate at start-up)
class ModePlan:
    """One mode, predicted: what it would cost under the memory limit."""

    mode: str
    fits: bool
    chunk: int | None = None
    cost: object = None              # adcli.interpret.Cost from predict()
    time_s: float | None = None
    peak_bytes: int | None = None
    refusal: str | None = None       # why it does not fit
    checkpoints: int | None = None   # reverse mode: states kept per loop (None: every residual)

    def to_json(self) -> dict:
        return {"fits": self.fits, "chunk": self.chunk, "checkpoints": self.checkpoints, "time_s": self.time_s,
                "peak_bytes": self.peak_bytes, "refusal": self.refusal,
                "passes": None if self.cost is None else self.cost.passes,
                "sweeps": None if self.cost is None else self.cost.sweeps,
                "mults_derivative": None if self.cost is None else self.cost.mults_derivative,
                "values_moved": None if self.cost is None else self.cost.values_moved,
                "ops": None if self.cost is None else self.cost.ops}


@dataclass(eq=False)   # compared by identity (no field-by-field __eq__ to generate at start-up)
class Decision:
    """The mode --mode auto picks (None: none fits), the sentence saying why, and each
    mode's ModePlan."""

    mode: str | None
    reason: str
    plans: dict = field(default_factory=dict)     # mode -> ModePlan
    model: object = None                          # the MachineModel used
    memory_limit: int | None = None

    def to_json(self) -> dict:
        return {"mode": self.mode, "reason": self.reason, "near_tie": NEAR_TIE,
                "memory_limit": self.memory_limit,
                "machine_model": None if self.model is None else self.model.to_json(),
                "modes": {m: p.to_json() for m, p in self.plans.items()}}


def plan_mode(program, mode, wrt, outputs, memory_limit, itemsize, model, chunk=None,
              checkpoints=None) -> ModePlan:
    """Predict one mode under the memory limit (chunk None: the largest that fits);
    `checkpoints`: reverse mode's states kept per loop ("auto": as Program.choose_checkpoints)."""
    try:
        if mode == "forward" or not program._loop_count():
            checkpoints = None
        elif checkpoints == "auto":
            checkpoints = program.choose_checkpoints(wrt, outputs, memory_limit, itemsize, chunk)
        if chunk is None:
            chunk, _ = program.choose_chunk(mode, wrt, outputs, memory_limit, itemsize, checkpoints)
        else:
            chunk = max(1, min(chunk, sum(program._pass_sizes(mode, wrt, outputs))))
            need = program.required_bytes(mode, wrt, outputs, chunk, itemsize, checkpoints)
            if need > memory_limit:
                from .api import _bytes
                raise ResourceProblem(f"{mode} mode with --chunk {chunk} needs about {_bytes(need)}, "
                                      f"over the memory limit of {_bytes(memory_limit)}")
    except ResourceProblem as exc:
        return ModePlan(mode, False, refusal=exc.message)
    cost = program.predict(mode, wrt, chunk=chunk, outputs=outputs, checkpoints=checkpoints)
    return ModePlan(mode, True, chunk, cost, model.time(cost, itemsize),
                    program.predicted_peak_bytes(mode, wrt, outputs, chunk, itemsize, checkpoints=checkpoints),
                    checkpoints=checkpoints)


def decide(program, wrt=None, chunk=None, memory_limit=None, backend="numpy", dtype="float64",
           model=None, exclude=(), checkpoints=None) -> Decision:
    """The mode to run, and why. `exclude`: modes not to recommend (e.g. ones whose
    results disagreed with the others), each with its reason: {mode: reason}."""
    from .api import DTYPES, backend_name
    from .machine import model_for

    import numpy

    wrt = program._wrt(wrt)
    outputs = list(program.output_names)
    be_name = backend_name(backend)
    be_name = "numpy" if be_name == "auto" else be_name
    model = model or model_for(be_name)
    limit = program.default_limit(backend) if memory_limit is None else memory_limit
    itemsize = numpy.dtype(DTYPES[dtype]).itemsize
    key = ("decision", tuple(wrt), chunk, limit, be_name, dtype, model, tuple(sorted(dict(exclude))),
           checkpoints)
    cached = program._decisions.get(key)
    if cached is not None:
        return cached
    plans = {m: plan_mode(program, m, wrt, outputs, limit, itemsize, model, chunk, checkpoints) for m in MODES}
    exclude = dict(exclude)
    usable = [m for m in MODES if plans[m].fits and m not in exclude]
    notes = [f"{m} is out: {exclude[m]}" for m in MODES if m in exclude]
    notes += [f"{m} does not fit: {plans[m].refusal}" for m in MODES
              if not plans[m].fits and m not in exclude]
    if not usable:
        decision = Decision(None, "no mode can run: " + "; ".join(notes), plans, model, limit)
    else:
        mode, why = _choose(plans, usable)
        reverse = plans["reverse"]
        if "reverse" in usable and reverse.checkpoints is not None:
            from .api import _bytes

            kept = (f"reverse mode is predicted keeping at most {reverse.checkpoints:,} states per loop "
                    f"(--checkpoints {reverse.checkpoints}), running {reverse.cost.recomputed_steps:,} loop "
                    f"steps again")
            if checkpoints == "auto":   # chosen for the limit: say what keeping everything needs
                full = program.required_bytes("reverse", wrt, outputs, reverse.chunk, itemsize)
                kept += (f": keeping every step's residuals would need about {_bytes(full)}, over the "
                         f"memory limit of {_bytes(limit)}")
            notes.insert(0, kept)
        elif checkpoints is not None and program.checkpoints_note(checkpoints):
            notes.insert(0, program.checkpoints_note(checkpoints))
        reason = why + ("" if not notes else "; " + "; ".join(notes))
        decision = Decision(mode, reason, plans, model, limit)
    program._decisions[key] = decision
    return decision


def _choose(plans, usable) -> tuple[str, str]:
    from .api import _bytes

    if len(usable) == 1:
        p = plans[usable[0]]
        # (the other is out for a disagreement, or does not fit: then checkpointing may still
        # fit, which compare's recommendation weighs, so this does not say "can run")
        left = "left" if all(plan.fits for plan in plans.values()) else "that fits the memory limit"
        return p.mode, (f"{p.mode}, the only mode {left}: predicted {seconds(p.time_s)}, "
                        f"peak {_bytes(p.peak_bytes)}")
    f, r = plans["forward"], plans["reverse"]
    fast, slow = (f, r) if f.time_s <= r.time_s else (r, f)
    if slow.time_s - fast.time_s > NEAR_TIE * slow.time_s:
        return fast.mode, (f"{fast.mode}: predicted {seconds(fast.time_s)} against {seconds(slow.time_s)} "
                           f"for {slow.mode} ({_ratio(slow.time_s, fast.time_s)}× faster: "
                           f"{_why_faster(fast, slow)})")
    # The memory model is a bound (measured peak ≤ prediction ≤ 2× it), so memory decides a
    # tie only when it differs by more than NEAR_TIE too; otherwise the exact count does.
    small, large = (f, r) if f.peak_bytes <= r.peak_bytes else (r, f)
    within = (f"predicted times within {NEAR_TIE:.0%} (forward {seconds(f.time_s)}, "
              f"reverse {seconds(r.time_s)})")
    if large.peak_bytes - small.peak_bytes > NEAR_TIE * large.peak_bytes:
        return small.mode, (f"{small.mode}: predicted times within {NEAR_TIE:.0%} "
                            f"({seconds(small.time_s)} vs {seconds(large.time_s)} for {large.mode}), "
                            f"and it needs less memory ({_bytes(small.peak_bytes)} vs "
                            f"{_bytes(large.peak_bytes)})")
    fm, rm = f.cost.mults_derivative, r.cost.mults_derivative
    if fm != rm:
        few, many = (f, r) if fm < rm else (r, f)
        return few.mode, (f"{few.mode}: {within} and memory (forward {_bytes(f.peak_bytes)}, "
                          f"reverse {_bytes(r.peak_bytes)}), and it makes fewer derivative mults "
                          f"({few.cost.mults_derivative:,} vs {many.cost.mults_derivative:,})")
    return "forward", (f"forward: a tie (predicted {seconds(f.time_s)} vs {seconds(r.time_s)}, "
                       f"peak {_bytes(f.peak_bytes)} vs {_bytes(r.peak_bytes)}, equal derivative "
                       "mults); forward keeps nothing for a backward sweep")


def _why_faster(fast: ModePlan, slow: ModePlan) -> str:
    """The figures behind a predicted time gap, the largest terms first."""
    from .api import _count

    a, b = fast.cost, slow.cost
    parts = []
    if a.passes != b.passes:
        parts.append(f"{_count(a.passes, 'pass')} instead of {b.passes:,}")
    if a.sweeps != b.sweeps:
        parts.append(f"{_count(a.sweeps, 'sweep')} instead of {b.sweeps:,}")
    if a.values_moved != b.values_moved:
        parts.append(f"{a.values_moved:,} values moved instead of {b.values_moved:,}")
    if a.mults_derivative != b.mults_derivative:
        parts.append(f"{a.mults_derivative:,} derivative mults instead of {b.mults_derivative:,}")
    if a.ops != b.ops:
        parts.append(f"{a.ops:,} array operations instead of {b.ops:,}")
    return ", ".join(parts) or "the same counts, a different mix of work"


def _ratio(a, b) -> str:
    r = a / b if b else float("inf")
    return f"{r:,.0f}" if r >= 10 else f"{r:,.1f}"


def seconds(t: float) -> str:
    """Seconds as a person reads them: '40 ms', '12.50 s', '3.2 h', '41 days', '3.2e+04 years'."""
    for unit, size in (("years", 365.25 * 86400), ("days", 86400), ("h", 3600), ("min", 60)):
        if t >= size:
            return f"{t / size:.3g} {unit}"
    if t >= 1:
        return f"{t:,.2f} s"
    if t >= 1e-3:
        return f"{t * 1e3:.3g} ms"
    return f"{t * 1e6:.3g} µs"
