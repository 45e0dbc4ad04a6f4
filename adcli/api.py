"""The library API: ``load`` a file, then ``jacobian``, ``jvp``, ``vjp``, ``predict``.

    >>> import adcli
    >>> program = adcli.load("samples/seed_example.ad")
    >>> result = program.jacobian(mode="reverse")
    >>> result.jacobian, result.cost.passes

The CLI (adcli.cli) is a thin layer over this module.
"""
from __future__ import annotations

import functools
import os
import re
import time
from dataclasses import dataclass, field
from math import prod

import numpy as np

from .build import DEFAULT_NODE_LIMIT, Builder, Data
from .parser import MAX_SOURCE_BYTES
from .errors import AdError, ResourceProblem, SourceLocation, UsageProblem, ValueProblem
from .memory import (ARRAY_HEADER_BYTES, BASE_BYTES, INDEXING_SCRATCH_BYTES, LOOP_BYTES,  # noqa: F401 (re-exported)
                     JSON_BYTES_PER_LABEL, JSON_BYTES_PER_NUMBER, PER_NODE_BYTES, SCHEDULE_LEVEL_BYTES,
                     SCHEDULE_STATE_BYTES, SEED_INDEX_BYTES, SPLIT_ENV_BYTES, SPLIT_NODES,
                     TEMPORARY_FACTOR, available_memory, cgroup_available, default_memory_limit,
                     rlimit_available)
from . import execute
from .execute import (MAX_CACHED_CONSTANT_BYTES, MAX_CACHED_RUNS, CompiledRun, Replay,
                      RunTooLarge, Stager)
from .checkpoint import repetitions
from .interpret import PLAN_RECORD_WIDE, Analysis, Cost, Runner, block_layouts, layout_groups
from .ir import element_labels, format_shape
from .ops import REGISTRY, Residuals
from .backends import NumpyBackend
from .tangents import Abstract, Counter, Linear, Scaled, ScaledDense, Seed, structured

MODES = ("forward", "reverse")
DTYPES = {"float64": np.float64, "float32": np.float32}
RETIME_BELOW_S = 0.5   # a traced run faster than this is timed again without tracing
RETIMES_SMALL, RETIME_SMALL_S = 5, 0.002   # ... up to 5 times while those take under 2 ms
MAX_REPEATS = 64       # records of repeat calls kept per program (_Repeat; several option sets may share a run)


def same_to_roundoff(xp, a, b) -> bool:
    """Equal shapes, the same non-finite entries, and finite entries within a few units of
    round-off of the largest magnitude (1e-12 relative in float64, 1e-5 in float32)."""
    a, b = xp.asarray(a), xp.asarray(b)
    if a.shape != b.shape:
        return False
    finite = xp.isfinite(b)
    if not bool((xp.isfinite(a) == finite).all()) or \
            not bool(xp.array_equal(a[~finite], b[~finite], equal_nan=True)):
        return False
    if not bool(finite.any()):
        return True
    scale = max(1.0, float(xp.abs(b[finite]).max()))
    tolerance = 1e-5 if b.dtype == xp.float32 else 1e-12
    return float(xp.abs(a[finite] - b[finite]).max()) <= tolerance * scale


class PlanMismatch(AssertionError):
    """The checking mode found a compiled run that disagrees with the interpreter: a bug in
    adcli, never to be swallowed."""


@dataclass(eq=False)   # (arrays inside: a field-by-field == could not say True or False)
class Derivative:
    """A Jacobian, JVP or VJP with the value of f and the cost of getting it."""

    kind: str                       # "jacobian", "jvp" or "vjp"
    mode: str                       # the mode that ran
    mode_requested: str
    value: dict                     # output name -> host array
    row_spec: list                  # [(name, shape)] whose elements label the rows
    column_spec: list               # the same for the columns
    outputs: list
    wrt: list
    cost: Cost
    backend: str
    device: str
    dtype: str
    inputs: dict                    # input name -> host array used
    blocks: dict = field(default_factory=dict)   # output -> input -> array
    matrix: np.ndarray | None = None             # the 2-D Jacobian, when made directly
    tangent: dict | None = None     # jvp: output name -> array shaped like the output
    cotangent: dict | None = None   # vjp: input name -> array shaped like the input
    note: str = ""                  # how auto mode or the chunk was chosen
    chunk_note: str = ""
    given: dict | None = None       # jvp/vjp: the direction or cotangent given, as host arrays
    consts: dict = field(default_factory=dict)   # const name -> host array, for consts the run changed
    consts_set: tuple = ()          # of those, the ones the run set (at=), not computed from them

    @functools.cached_property
    def jacobian(self) -> np.ndarray:
        """2-D: rows = output elements, columns = wrt elements (assembled from the
        blocks on first use, so a gradient never pays for a copy it does not need)."""
        if self.matrix is not None:
            return self.matrix
        out_shapes = dict(self.row_spec)
        rows = []
        for o in self.outputs:
            size = prod(out_shapes[o])
            parts = [self.blocks[o][w].reshape(size, prod(dict(self.column_spec)[w])) for w in self.wrt]
            rows.append(parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1))
        return rows[0] if len(rows) == 1 else np.concatenate(rows, axis=0)

    @property
    def shape(self) -> tuple:
        """(m, n) of the Jacobian, without assembling it."""
        if self.matrix is not None:
            return self.matrix.shape
        return (sum(prod(shape) for _, shape in self.row_spec),
                sum(prod(shape) for _, shape in self.column_spec))

    def entry(self, i: int, j: int) -> float:
        """J[i, j], read from its block: a display of a few entries need not assemble
        (and hold a second copy of) an m × n Jacobian."""
        if self.matrix is not None or "jacobian" in self.__dict__:
            return float(self.jacobian[i, j])
        (o, oshape, r), (w, ishape, c) = _locate(self.row_spec, i), _locate(self.column_spec, j)
        return float(self.blocks[o][w][np.unravel_index(r, oshape) + np.unravel_index(c, ishape)])

    @functools.cached_property
    def rows(self) -> list:
        """Row labels (made on first use: a million-parameter gradient has a million)."""
        return _labels(self.row_spec)

    @functools.cached_property
    def columns(self) -> list:
        return _labels(self.column_spec)

    @property
    def gradient(self):
        """For one scalar output: {input: gradient shaped like the input}."""
        if len(self.outputs) != 1:
            raise ValueError("gradient needs exactly one output")
        return self.blocks[self.outputs[0]]



@dataclass(eq=False)   # (arrays inside: a field-by-field == could not say True or False)
class Hessian:
    """The Hessian of a scalar output (or one Hessian-vector product), with f's value and
    gradient, the cost of getting it, and its check against differences of the gradient."""

    output: str                 # the scalar output differentiated twice
    wrt: list                   # the inputs, in declaration order
    value: np.ndarray           # the output's value
    program: "Program"          # the gradient program (its outputs: d<output>/d<input>)
    result: Derivative          # its Jacobian (the Hessian, n × n) or its JVP (H·v)
    check: dict                 # central differences of the gradient (_hessian_check)

    @property
    def gradient(self) -> dict:
        """{input: the gradient shaped like the input}."""
        return {w: self.result.value[f"d{self.output}/d{w}"] for w in self.wrt}

    @property
    def matrix(self) -> np.ndarray:
        """n × n (rows: the gradient's elements, columns: the inputs'), or n × 1 for H·v."""
        return self.result.jacobian


def _hessian_check(gradient: Program, result: Derivative, wrt, at, direction, dtype) -> dict:
    """Central differences of the gradient (adcli.fd's steps): column j of H is
    (g(x + h e_j) - g(x - h e_j)) / 2h, or H·v is (g(x + h v) - g(x - h v)) / 2h; compared
    norm-wise, relative to H, with adcli.fd's tolerance. A disagreement is reported."""
    from .fd import TOLERANCE, step_sizes

    base = {name: np.array(v, dtype=np.float64) for name, v in gradient.resolve_inputs(at).items()}
    outputs = gradient.output_names

    def g(values) -> np.ndarray:
        evaluated = gradient.evaluate(at={**at, **values}, dtype=dtype)
        return np.concatenate([np.asarray(evaluated[o], dtype=np.float64).reshape(-1) for o in outputs])

    columns = []
    if direction is not None:
        scale = max(1.0, max(float(np.abs(base[w]).max(initial=0)) for w in direction))
        size = max(float(np.abs(np.asarray(v)).max(initial=0)) for v in direction.values()) or 1.0
        h = float(step_sizes(np.array([scale]), dtype)[0]) / size
        plus = {w: base[w] + h * np.asarray(v, dtype=np.float64) for w, v in direction.items()}
        minus = {w: base[w] - h * np.asarray(v, dtype=np.float64) for w, v in direction.items()}
        columns.append((g(plus) - g(minus)) / (2 * h))
    else:
        for w in wrt:
            x = base[w]
            steps = step_sizes(x, dtype)
            for j in range(x.size):
                plus, minus = x.copy(), x.copy()
                plus.flat[j] += steps.flat[j]
                minus.flat[j] -= steps.flat[j]
                columns.append((g({w: plus}) - g({w: minus})) / (2 * steps.flat[j]))
    fd = np.stack(columns, axis=1) if columns else np.zeros(result.shape)
    ad = result.jacobian
    error = float(np.abs(ad - fd).max(initial=0))
    scale = float(np.linalg.norm(ad)) or 1.0
    relative = float(np.linalg.norm(ad - fd)) / scale
    tolerance = TOLERANCE[dtype]
    agrees = bool(relative <= tolerance)
    return {"evaluations": 2 * len(columns), "max_abs_error": error, "relative_error": relative,
            "tolerance": tolerance, "agrees": agrees, "skipped": None,
            "message": None if agrees else
            (f"the Hessian and central differences of the gradient disagree beyond the tolerance of "
             f"{tolerance:g} (relative error {relative:.1e}, largest entry error {error:.1e}): the "
             "function may have a kink near this point, or be badly conditioned for differences")}


def _hessian_check_skipped(dtype, why: str) -> dict:
    """A check not run (its evaluations would pass the time limit): `skipped` says why,
    `agrees` is None (neither a pass nor a failure)."""
    from .fd import TOLERANCE

    return {"evaluations": 0, "max_abs_error": None, "relative_error": None, "tolerance": TOLERANCE[dtype],
            "agrees": None, "skipped": why, "message": None}


def _given_value(kind: str, name: str, raw, shape) -> np.ndarray:
    """A value given for an input or const (at=, --at, --inputs) as float64 of its shape;
    a scalar for a vector, say, is broadcast (a copy)."""
    try:
        value = np.asarray(raw, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueProblem(f"the value given for {kind} {name} is not numeric") from None
    try:
        if value.shape != shape:
            value = np.array(np.broadcast_to(value, shape))
    except ValueError:
        raise ValueProblem(f"the value given for {kind} {name} is {format_shape(value.shape)}, "
                           f"but {name} is {format_shape(shape)}") from None
    return value

def _linear_algebra_problems(method):
    """A matrix a linear algebra op cannot take where the program runs (singular, not
    positive definite) is one sentence naming the node and its place, not NumPy's
    LinAlgError (Program.linear_algebra_problem finds the node)."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except np.linalg.LinAlgError as exc:
            import inspect   # (here, not at import: inspecting ten methods is ~1 ms of every start)

            bound = inspect.signature(method).bind(self, *args, **kwargs).arguments
            raise self.linear_algebra_problem(exc, bound.get("at"), bound.get("dtype", "float64")) from None
    return wrapper


class Program:
    """A parsed, built .ad file, ready to differentiate."""

    def __init__(self, graph, times: dict):
        self.graph = graph
        self.times = times
        self._const_cache = {}
        self._peak_cache = {}       # predicted peak live values per (mode, wrt, outputs, chunk)
        self._analyses = {}         # static facts per (wrt, outputs)
        self._decisions = {}        # adcli.decide: the mode choice per (wrt, chunk, limit, backend, ...)
        self._decided = {}          # jacobian()'s decisions per set of arguments (_jacobian_decisions)
        self._default_limits = {}   # backend name -> default memory limit, read once per program
        self._compiled = {}         # adcli.execute.CompiledRun per (mode, wrt, outputs, chunk, backend, ...)
        self._repeats = {}          # jacobian()'s _Repeat per set of options: a repeat call's short path
        self._last_compiled = None  # the plans of the last run (adcli.codegen reads them)
        self._too_large = set()     # runs whose plans are not kept: each call stages them
        self._static = {}           # sums over the graph's nodes that do not change (resident bytes)
        self.const_defaults = {}    # const name -> host array set for every run (set_defaults)
        # what the file's consts alone make (cos(3 * t) of a const t) is computed once per
        # compiled run, not on every call; adcli.codegen and show turn it off, so that the
        # derivative program they print computes it (and a const can be set there)
        self.fold_consts = True
        # the checking mode: every run also runs the reference interpreter and compares
        # (tests; ADCLI_CHECK_PLANS=1 turns it on for every program)
        self.check_plans = os.environ.get("ADCLI_CHECK_PLANS") == "1"

    def _analysis(self, wrt, outputs) -> Analysis:
        key = (tuple(wrt or ()), tuple(outputs or ()))
        if key not in self._analyses:
            self._analyses[key] = Analysis(self.graph, list(key[0]), list(key[1]))
        return self._analyses[key]

    # -- inputs ---------------------------------------------------------------------
    @property
    def input_names(self) -> list:
        return list(self.graph.inputs)

    @property
    def output_names(self) -> list:
        return list(self.graph.outputs)

    def input_shape(self, name):
        return self.graph.nodes[self.graph.inputs[name]].shape

    def output_shape(self, name):
        return self.graph.nodes[self.graph.outputs[name]].shape

    def parse_value(self, name: str, text: str) -> np.ndarray:
        """A constant expression (as in an initial value) for input or const `name`."""
        self._check_settable(name, "--at")
        shape = self.input_shape(name) if name in self.graph.inputs else self.const_shape(name)
        return self._constant_for(name, text, shape, "--at")

    @property
    def const_names(self) -> list:
        """Every const the file declares (those no output reads included), in order."""
        return list(self.graph.builder.const_values)

    def const_shape(self, name):
        return self.graph.builder.const_values[name].shape

    def parse_any_value(self, name: str, text: str) -> np.ndarray:
        """A constant expression shaped like input or output `name` (--direction, --cotangent)."""
        if name in self.graph.inputs:
            return self._constant_for(name, text, self.input_shape(name), "--direction")
        if name in self.graph.outputs:
            return self._constant_for(name, text, self.output_shape(name), "--cotangent")
        raise UsageProblem(f"'{name}' is neither an input nor an output "
                           f"(inputs: {', '.join(self.graph.inputs)}; outputs: {', '.join(self.graph.outputs)})")

    def _constant_for(self, name, text, shape, option):
        from .parser import parse

        prefix = "input __value__ = "   # parsed as an input's initial value
        line = prefix + text
        where, shown = f"{option} {name}", f"{option} {name}={text}"

        def place(exc):
            """The caret under the option as typed, not under the line adcli parsed."""
            loc = exc.location
            if loc is None or loc.line != 1 or "\n" in text:
                return None
            return SourceLocation(where, 1, max(loc.column - len(prefix), 1) + len(shown) - len(text),
                                  shown)

        try:
            statements = parse(line + "\n", where)
        except AdError as exc:
            message = exc.message.replace(" (an unclosed bracket or block?)", "")
            message = message.replace("end of file", "end of the value").replace("end of line",
                                                                                 "end of the value")
            raise ValueProblem(f"{shown} is not a constant expression: {message}", place(exc)) from None
        if len(statements) != 1:
            raise ValueProblem(f"{shown} is not a constant expression")
        builder = self.graph.builder
        saved = builder.filename, builder.lines, builder.base_dir
        # load("x.npy") in an option reads from the working directory, as a shell path does
        builder.filename, builder.lines, builder.base_dir = where, [line], None
        try:
            return builder.constant(statements[0].args[2], shape, name)
        except AdError as exc:
            exc.location = place(exc)
            raise
        except RecursionError:
            raise ValueProblem(f"{where}: the value nests too deeply") from None
        finally:
            builder.filename, builder.lines, builder.base_dir = saved

    def _check_input(self, name, option: str | None = None):
        if name not in self.graph.inputs:
            known = ", ".join(self.graph.inputs) or "none"
            where = f"{option} {name}: " if option else ""
            if name in self.graph.builder.const_values:
                raise UsageProblem(f"{where}'{name}' is a const, which is not differentiated "
                                   f"(inputs: {known})", hint=f"declare it `input {name}` to differentiate it")
            raise UsageProblem(f"{where}there is no input named '{name}' (inputs: {known})")

    def _check_settable(self, name, option: str | None = None):
        """--at, --inputs and at= may set an input or a const, not integer data: a gather's
        index maps are made from its values when the file is built."""
        indices = self.graph.builder.int_consts.get(name)
        if indices is not None:
            from .build import _int_type

            where = f"{option} {name}: " if option else ""
            raise UsageProblem(f"{where}'{name}' is integer data ({_int_type(indices.shape)}), which a run "
                               "cannot set: the program's gathers are built from its values when the file "
                               "is read", hint=f"change {name} in the .ad file, or load it there from a data file")
        if name not in self.graph.inputs and name not in self.graph.builder.const_values:
            known = ", ".join(self.graph.inputs) or "none"
            consts = ", ".join(self.const_names)
            where = f"{option} {name}: " if option else ""
            raise UsageProblem(f"{where}there is no input or const named '{name}' (inputs: {known}"
                               + (f"; consts: {consts})" if consts else ")"))

    def set_defaults(self, at: dict):
        """Make values of `at` (inputs and consts) the defaults of every later run. An input
        `at` leaves out keeps its default, the file's recipe included: one computed from a
        const follows that const when a later call sets it."""
        consts = self.resolve_consts(at, only_given=True)
        given = self.resolve_inputs(at)
        self.graph.input_defaults.update({name: value for name, value in given.items() if name in at})
        self.const_defaults.update(consts)

    def resolve_consts(self, at: dict | None = None, only_given: bool = False) -> dict:
        """{const name: host float64 array} for every const whose value in this run is not
        the file's: those `at` (over set_defaults) sets, each checked against its type, and
        (unless `only_given`) the consts computed from them, made again from their recipes."""
        given = dict(self.const_defaults)
        for name, raw in (at or {}).items():
            if name in self.graph.inputs:
                continue
            self._check_settable(name)
            given[name] = _given_value("const", name, raw, self.const_shape(name))
        if not given or only_given:
            return given
        return self.graph.builder.remake_consts(given)
    def resolve_inputs(self, at: dict | None = None) -> dict:
        """Input values: `at` over the file's defaults; each checked against its type."""
        at = dict(at or {})
        for name in at:
            self._check_settable(name)
        changed = None   # consts this run sets, when an input's default is computed from them
        values = {}
        for name in self.graph.inputs:
            shape = self.input_shape(name)
            if name in at:
                value = _given_value("input", name, at[name], shape)
            else:
                value = self.graph.input_defaults.get(name)
                if isinstance(value, Data):   # the file's recipe, made now
                    if changed is None:
                        changed = self.resolve_consts(at)
                    value = (self.graph.builder.remake(value, changed)
                             if changed and self.graph.builder.reads(value.ast, changed) else value.value)
                if value is None:
                    line = self.graph.input_lines.get(name, 0)
                    lines = self.graph.source.splitlines()
                    loc = SourceLocation(self.graph.filename, line, 1,
                                         lines[line - 1] if 0 < line <= len(lines) else "")
                    raise ValueProblem(f"input {name} has no value; give one with --at {name}=... "
                                       "or --inputs", loc)
            values[name] = value
        return values

    def _wrt(self, wrt) -> list:
        if wrt is None or wrt == [] or wrt == ():
            names = list(self.graph.inputs)
        else:
            if isinstance(wrt, str):
                wrt = [wrt]
            requested = []
            for item in wrt:
                requested.extend(part.strip() for part in item.split(",") if part.strip())
            for name in requested:
                self._check_input(name, "--wrt")
            names = [n for n in self.graph.inputs if n in requested]   # declaration order
        if not names and self.graph.inputs:
            raise UsageProblem(f"--wrt names no input (inputs: {', '.join(self.graph.inputs)})")
        if not names:
            raise ValueProblem("the file declares no input to differentiate with respect to")
        return names

    # -- running ----------------------------------------------------------------------
    def _setup(self, backend, dtype, at, memory_limit: int | None = None, moves: bool = False):
        """The run's data: input values (`at` over the file's defaults) and consts on the
        backend, made from their recipes only now, after a check that they fit the memory
        limit (default: the default limit); with `moves`, the index maps too."""
        from .backends import get_backend

        if dtype not in DTYPES:
            raise UsageProblem(f"unknown dtype '{dtype}'; choose float64 or float32")
        be = backend if not isinstance(backend, str) else get_backend(backend)
        np_dtype = DTYPES[dtype]
        itemsize = np.dtype(np_dtype).itemsize
        limit = self.default_limit(be) if memory_limit is None else memory_limit
        need = self.resident_bytes(itemsize) if moves else self.resident_bytes(itemsize) - self.index_bytes()
        need += self.making_bytes()
        if need > limit:
            raise ResourceProblem(
                f"the file's data (inputs, consts{' and index maps' if moves else ''}) needs about "
                f"{_bytes(need)}, over the memory limit of {_bytes(limit)}",
                hint="lower a dim with --set, or raise --memory-limit")
        host_inputs = self.resolve_inputs(at)
        xp_dtype = getattr(be.xp, dtype)
        inputs = {k: be.asarray(v, xp_dtype) for k, v in host_inputs.items()}
        # the file's consts, made once per backend and dtype; a const this run sets (and
        # one computed from it) replaces the file's value for this run only. Plans take
        # consts as arguments, in graph order, so a compiled run is never stale.
        changed = self.resolve_consts(at)
        cache = self._const_cache.setdefault((be.name, dtype), {})
        consts = {}
        for node in self._const_nodes():
            name = node.attrs.get("name")
            if name in changed:
                consts[node.id] = be.asarray(changed[name], xp_dtype)
                continue
            if node.id not in cache:
                cache[node.id] = be.asarray(np.asarray(node.attrs["value"]), xp_dtype)
            consts[node.id] = cache[node.id]
        if moves and not self._static.get("moves_made"):   # made here, not inside the timed sweeps
            for node in self.graph.nodes:
                if REGISTRY.get(node.op) is not None and REGISTRY[node.op].movement:
                    node.moves
            self._static["moves_made"] = True   # kept by their nodes from then on
        return be, xp_dtype, host_inputs, inputs, consts, np_dtype, changed

    def _const_nodes(self) -> list:
        if "const_nodes" not in self._static:
            self._static["const_nodes"] = [n for n in self.graph.nodes if n.op == "const"]
        return self._static["const_nodes"]

    def const_value(self, node, changed: dict):
        """A const node's host value in a run whose changed consts are `changed`
        (resolve_consts)."""
        name = node.attrs.get("name")
        return changed[name] if name in changed else node.attrs["value"]

    @_linear_algebra_problems
    def evaluate(self, at=None, backend="numpy", dtype="float64") -> dict:
        be, xp_dtype, _, inputs, consts, _, _ = self._setup(backend, dtype, at)
        values = self.primal_plan(be, xp_dtype, inputs, consts)(inputs)
        return {name: be.to_host(values[i]) for name, i in self.graph.outputs.items()}

    def primal_plan(self, be, xp_dtype, inputs, consts):
        """The primal sweep compiled (once per backend and dtype): a function of the input
        values {name: array} returning {output node: value}. Its counts, primal mults and
        flops and the peak live values, are the attributes `mults`, `flops`, `peak`."""
        key = ("evaluate", be.name, str(xp_dtype))
        staged = self._compiled.get(key)
        if staged is None and (self._loop_work() > execute.MAX_CACHED_EQUATIONS
                               or len(self.graph.nodes) > execute.MAX_CACHED_EQUATIONS
                               or self._static.get("primal_too_large")):
            return self._interpreted_primal(be, xp_dtype, consts)
        if staged is None:
            stager = Stager(self.graph, be.xp, xp_dtype, inputs, consts)
            stager.run_primal(self._analysis([], []))
            if not stager.plans:
                # over MAX_CACHED_EQUATIONS (an unrolled program this large): nothing was kept,
                # so this program's primal is interpreted from now on, as a long loop's is
                self._static["primal_too_large"] = True
                return self._interpreted_primal(be, xp_dtype, consts)
            staged = self._compiled[key] = (stager.plans[0], stager.primal.mults, stager.primal.flops,
                                            stager.live.peak)
        plan = staged[0]
        const_values = list(consts.values())   # this run's consts: a const set by at= differs

        def compiled(values: dict) -> dict:
            return plan(list(values.values()) + const_values)

        compiled.mults, compiled.flops, compiled.peak = staged[1:]
        return compiled

    def _interpreted_primal(self, be, xp_dtype, consts):
        """The primal sweep run by the interpreter, node by node or iteration by iteration
        (what primal_plan gives where a plan would be too large to keep: staging 10^9 loop
        steps never ends), with the same attributes as a compiled one."""
        analysis = self._analysis([], [])

        def interpreted(values: dict) -> dict:
            runner = Runner(self.graph, be.xp, xp_dtype, values, consts)
            env = runner.run_primal(analysis)
            interpreted.mults, interpreted.flops = runner.primal.mults, runner.primal.flops
            interpreted.peak = max(interpreted.peak, runner.live.peak)
            return env

        interpreted.mults = interpreted.flops = interpreted.peak = 0
        return interpreted

    def _sizes(self, names, shape_of):
        return [prod(shape_of(n)) for n in names]

    def predict(self, mode: str, wrt=None, chunk: int | None = None, outputs=None,
                single: bool = False, checkpoints: int | None = None) -> Cost:
        """The counts `mode` will report, from shapes alone (no arithmetic). `checkpoints`:
        reverse mode keeping at most that many states per loop (binomial checkpointing)."""
        wrt = self._wrt(wrt)
        outputs = list(outputs or self.graph.outputs)
        if mode == "forward":
            sizes = [1] if single else self._sizes(wrt, self.input_shape)
        else:
            sizes = [1] if single else self._sizes(outputs, self.output_shape)
        passes = sum(sizes)
        chunk = passes if chunk is None else max(1, min(chunk, passes))
        return self._run(mode, wrt, outputs, chunk, sizes, None, single=single, checkpoints=checkpoints)

    def _jacobian_shape(self, wrt, outputs) -> tuple[int, int]:
        """(m, n): output scalars of `outputs`, input scalars of `wrt`."""
        return sum(self._sizes(outputs, self.output_shape)), sum(self._sizes(wrt, self.input_shape))

    def _pass_sizes(self, mode, wrt, outputs) -> list:
        return self._sizes(wrt, self.input_shape) if mode == "forward" else \
            self._sizes(outputs, self.output_shape)

    def predicted_peak_bytes(self, mode, wrt, outputs, chunk, itemsize, single=False,
                             checkpoints=None, interpreted=None) -> int:
        """The bytes a run of `mode` with `chunk` directions per sweep (`single`: one
        given JVP or VJP) is predicted to need at its peak: what the chunk choice, the
        refusal and --mode auto use. `interpreted`: whether the reference interpreter runs
        it (its loops' per-iteration records and LOOP_BYTES a loop counted) rather than
        compiled plans, which hold neither; None: as far as is known before compiling
        (interpreted_before_compiling)."""
        checkpoints = checkpoints if mode == "reverse" and self._loop_count() else None
        if not self._loop_count():
            interpreted = False   # (the same prediction either way: no loop, no records)
        elif self.check_plans:
            interpreted = True   # the checking mode runs the interpreter after the plans, both measured
        elif interpreted is None:
            interpreted = self.interpreted_before_compiling(mode, wrt, outputs, chunk, single, checkpoints)
        # the prediction depends on the graph alone: made once per program and layout
        key = (mode, tuple(wrt), tuple(outputs), chunk, single, itemsize, checkpoints, interpreted)
        if key not in self._peak_cache:
            sizes = [1] if single else self._pass_sizes(mode, wrt, outputs)
            cost = self._run(mode, wrt, outputs, chunk, sizes, None, single=single, itemsize=itemsize,
                             checkpoints=checkpoints, records=interpreted)
            m, n = self._jacobian_shape(wrt, outputs)
            result = 0 if single or cost.sweeps == 1 else m * n
            seeded = 0 if single else max(sizes, default=0)
            self._peak_cache[key] = (cost.peak_values_with_temporaries, result, seeded, cost.indexed,
                                     cost.peak_arrays)

        values, result, seeded, indexed, arrays = self._peak_cache[key]
        # compiled plans are as long as the loops unrolled, and split as such (SPLIT_ENV_BYTES)
        plan_nodes = len(self.graph.nodes) if interpreted else self._unrolled_nodes()
        return int(TEMPORARY_FACTOR * values * itemsize + result * itemsize + SEED_INDEX_BYTES * seeded
                   + PER_NODE_BYTES * len(self.graph.nodes) + BASE_BYTES
                   + (ARRAY_HEADER_BYTES + (SPLIT_ENV_BYTES if plan_nodes > SPLIT_NODES else 0)) * arrays
                   + (LOOP_BYTES * self._loop_count() + SCHEDULE_LEVEL_BYTES * self._schedule_depth(checkpoints)
                      + SCHEDULE_STATE_BYTES * self._states_kept(checkpoints) if interpreted else 0)
                   + (INDEXING_SCRATCH_BYTES if indexed else 0))

    def interpreted_before_compiling(self, mode, wrt, outputs, chunk, single=False, checkpoints=None) -> bool:
        """Whether a run is interpreted whatever compiling it would find: its loops' work
        or its predicted operations pass execute.MAX_CACHED_EQUATIONS (every operation is
        an equation at least), so its plans would never be kept (_run). A run that passes
        the plans' limits only while compiling (equations, constants: execute.Stager) is
        interpreted too, found then (_run checks its memory again)."""
        if self._loop_work() > execute.MAX_CACHED_EQUATIONS:
            return True
        sizes = [1] if single else self._pass_sizes(mode, wrt, outputs)
        chunk = max(1, min(chunk, sum(sizes) or 1))
        return self._predicted_ops(mode, wrt, outputs, chunk, sizes, single, checkpoints) > \
            execute.MAX_CACHED_EQUATIONS

    def _loop_work(self) -> int:
        """Body nodes the loops of the graph run, over all their iterations."""
        if "loop_work" not in self._static:
            self._static["loop_work"] = sum(
                n.attrs["count"] * sum(b.op not in ("input", "const") for b in n.attrs["body"].nodes)
                for n in self.graph.nodes if n.op == "loop")
        return self._static["loop_work"]

    def _schedule_depth(self, checkpoints) -> int:
        """The most generators checkpoint.actions nests at once reversing the graph's loops
        keeping `checkpoints` states (None: no schedule), one loop at a time: r + S for r
        repetitions of the binomial schedule (tests/test_memory_prediction.py checks the
        bound against the schedule), 1 with a single slot."""
        if checkpoints is None:
            return 0
        counts = [n.attrs["count"] for n in self.graph.nodes if n.op == "loop" and n.attrs["count"] >= 2]
        return max((1 if checkpoints == 1 else min(count, repetitions(count, checkpoints) + checkpoints)
                    for count in counts), default=0)

    def _states_kept(self, checkpoints) -> int:
        """The most states reversing the graph's loops keeping `checkpoints` keeps at once:
        S, or a loop's count where that is less (one loop is reversed at a time)."""
        if checkpoints is None:
            return 0
        return max((min(n.attrs["count"], checkpoints) for n in self.graph.nodes
                    if n.op == "loop" and n.attrs["count"] >= 2), default=0)

    def _unrolled_nodes(self) -> int:
        """The graph's nodes with every loop's body counted once per iteration (a body's
        params left out): as many as the compiled plans, which unroll the loops, stage."""
        if "unrolled_nodes" not in self._static:
            def unrolled(graph) -> int:
                return sum(n.attrs["count"] * unrolled(n.attrs["body"]) if n.op == "loop" else
                           int(graph is self.graph or n.op != "input") for n in graph.nodes)
            self._static["unrolled_nodes"] = unrolled(self.graph)
        return self._static["unrolled_nodes"]

    def _loop_count(self) -> int:
        """Loop nodes in the graph (repeats that stayed loops), counted once."""
        if "loops" not in self._static:
            self._static["loops"] = sum(n.op == "loop" for n in self.graph.nodes)
        return self._static["loops"]

    def check_time(self, mode, wrt, outputs, chunk, sizes, itemsize, backend, time_limit, single=False,
                   checkpoints=None, traced=False, keeping_all=False):
        """Refuse a run whose predicted time passes `time_limit` seconds (None: no limit): a
        loop of 10^12 steps would otherwise start without a word and never end. The time is
        the machine model's on the predicted counts, as cost.predicted reports it, plus what
        the run costs besides its sweeps: compiling them on a mode's first run, and tracing
        allocations when `traced` (measure_memory; the CLI's runs), adcli.machine.overheads."""
        if time_limit is None:
            return
        from .machine import model_for, overheads

        name = backend_name(backend)
        key = ("time", mode, tuple(wrt), tuple(outputs), chunk, tuple(sizes), single, itemsize, checkpoints, name)
        if key not in self._peak_cache:
            cost = self._run(mode, wrt, outputs, chunk, sizes, None, single=single, itemsize=itemsize,
                             checkpoints=checkpoints)
            self._peak_cache[key] = (model_for(name).time(cost, itemsize), cost.ops, cost.recomputed_steps,
                                     cost.interpreted)
        seconds, ops, recomputed, interpreted = self._peak_cache[key]
        compiled = any(isinstance(k, tuple) and k[:2] == (mode, tuple(wrt)) for k in self._compiled)
        compiling = not (compiled or interpreted)
        seconds += overheads(ops, compile=compiling, traced=traced)
        besides = [what for what, on in (("compiling them", compiling), ("tracing memory", traced)) if on]
        besides = f", {' and '.join(besides)} included" if besides else ""
        if seconds > time_limit:
            again = f", {recomputed:,} loop steps run again" if recomputed else ""
            even = " even keeping every step's residuals, which runs no step again," if keeping_all else ","
            other = "reverse" if mode == "forward" else "forward"
            if recomputed:
                instead = ", or keep more states with --checkpoints"
            elif single or self._model_seconds(other, wrt, outputs, itemsize, name, compiling, traced) > time_limit:
                instead = ""   # (the other mode is past the limit too: not a way out)
            else:
                instead = ", or try the other --mode"
            why = (f"is predicted to take about {duration(seconds)} ({ops:,} array operations{again}{besides})"
                   f"{even} over the time limit of {duration(time_limit)}")
            refusal = ResourceProblem(f"{mode} mode {why}", self._longest_loop_location(),
                                      hint="raise --time-limit (0 for none), or lower a repeat count, or a dim "
                                           "with --set" + instead)
            refusal.over_time_limit = f"it {why}"
            raise refusal

    def _model_seconds(self, mode, wrt, outputs, itemsize, backend_name_, compiling, traced) -> float:
        """The machine model's seconds for a run of `mode`, all directions at once, with
        compiling and tracing as check_time adds them."""
        from .machine import model_for, overheads

        sizes = self._pass_sizes(mode, wrt, outputs)
        cost = self._run(mode, wrt, outputs, max(1, sum(sizes)), sizes, None, itemsize=itemsize)
        return model_for(backend_name_).time(cost, itemsize) + \
            overheads(cost.ops, compile=compiling and not cost.interpreted, traced=traced)

    def _check_time_keeping_all(self, wrt, chunk, dtype, backend, time_limit, traced, single=False):
        """Reverse mode with --checkpoints: checkpointing only runs steps again, so a run past
        the time limit keeping every residual is past it keeping fewer. Refused here, before
        choosing S (--checkpoints auto's search took 24 s on a 10^12-step loop) or walking
        a schedule."""
        if time_limit is None or not self._loop_count():
            return
        wrt = self._wrt(wrt)
        outputs = list(self.graph.outputs)
        sizes = [1] if single else self._sizes(outputs, self.output_shape)
        chunk = 1 if single else sum(sizes) if chunk is None else max(1, min(chunk, sum(sizes)))
        self.check_time("reverse", wrt, outputs, chunk, sizes, np.dtype(DTYPES.get(dtype, np.float64)).itemsize,
                        backend, time_limit, single=single, traced=traced, keeping_all=True)

    def _past_time_keeping_all(self, wrt, chunk, dtype, backend, time_limit, traced) -> bool:
        """Whether reverse mode keeping every residual is predicted past `time_limit`."""
        try:
            self._check_time_keeping_all(wrt, chunk, dtype, backend, time_limit, traced)
        except ResourceProblem:
            return True
        return False

    def _memory_refusal(self, exc: ResourceProblem, mode, wrt, dtype, backend, time_limit,
                        traced) -> ResourceProblem:
        """A memory refusal of a run of `mode` (as requested) as the user should read it: at
        the longest repeat's place (for a program with a loop), its hint without a way out
        that `time_limit` refuses too (keeping fewer loop states when reverse mode keeping
        all is past it already; the other mode when that is past it)."""
        if exc.location is None:
            exc.location = self._longest_loop_location()
        if time_limit is None or not exc.hint:
            return exc
        hint = exc.hint
        wrt_names, outputs = self._wrt(wrt), list(self.graph.outputs)
        itemsize = np.dtype(DTYPES.get(dtype, np.float64)).itemsize
        name = backend_name(backend)
        if "--checkpoints" in hint and self._past_time_keeping_all(wrt, None, dtype, backend, time_limit, traced):
            hint = re.sub(r"keep fewer loop states (with|than) --checkpoints \S+, ", "", hint)
        if "or try the other --mode" in hint:
            other = {"forward": "reverse", "reverse": "forward"}.get(mode)
            if other and self._model_seconds(other, wrt_names, outputs, itemsize, name, True, traced) > time_limit:
                hint = hint.replace(", or try the other --mode", "").replace("or try the other --mode", "")
                hint = hint.rstrip(", ")
        exc.hint = hint
        return exc

    def _abstract_runner(self, itemsize, records=True) -> Runner:
        """A Runner on shapes alone (xp None): the prediction's, counting in `itemsize`'s
        values, and loops' per-iteration records as the interpreter keeps them (`records`)."""
        runner = Runner(self.graph, None, None)
        runner.moves = lambda node: node.abstract_moves()   # counts only: no index maps made
        runner.live.wide = max(1, 8 // itemsize)
        if not records:
            runner.live.records = PLAN_RECORD_WIDE
        return runner

    def predicted_primal_time(self, itemsize, backend="numpy") -> float:
        """Predicted seconds of one primal evaluation (finite differences make 2n of them):
        the primal sweep walked on shapes, priced by the machine model."""
        from .machine import model_for

        name = backend_name(backend)
        key = ("primal time", itemsize, name)
        if key not in self._peak_cache:
            runner = self._abstract_runner(itemsize)
            runner.run_primal(self._analysis([], []))
            cost = Cost(ops=runner.primal.ops, values_moved=runner.primal.moved, gemm_flops=runner.primal.gemm)
            cost.interpreted = cost.ops > execute.MAX_CACHED_EQUATIONS
            self._peak_cache[key] = model_for(name).time(cost, itemsize)
        return self._peak_cache[key]

    def _keeping(self, mode, checkpoints) -> str:
        """For a refusal: the states it was predicted keeping, when --checkpoints set them."""
        if mode != "reverse" or not isinstance(checkpoints, int) or not self._loop_count():
            return ""
        return f" keeping at most {checkpoints:,} state{'s' if checkpoints != 1 else ''} per loop"

    def _fewer_states(self, mode, checkpoints) -> str:
        """For a refusal's hint: keeping fewer loop states, where that can help."""
        could = self._loop_count() or any(why.startswith("is written out") for _, why in self.graph.unrolled)
        if mode != "reverse" or not could or checkpoints == 1:
            return ""
        if checkpoints is None:
            return "keep fewer loop states with --checkpoints auto, "
        return f"keep fewer loop states than --checkpoints {checkpoints}, "

    def checkpoints_note(self, checkpoints) -> str:
        """Why `checkpoints` change nothing for this program ("" when they do): it has no
        repeat that stayed a loop (each one written out iteration by iteration, and why);
        or what a number of states as large as every loop's count does (it keeps every
        step's state, not its residuals: each step still runs once more)."""
        if checkpoints is None:
            return ""
        if self._loop_count():
            counts = [n.attrs["count"] for n in self.graph.nodes if n.op == "loop"]
            if not isinstance(checkpoints, int) or checkpoints < max(counts) - 1:
                return ""   # (l − 1 states are every state a step of an l-step loop starts from)
            steps = sum(c - 1 for c in counts)
            return (f"--checkpoints {checkpoints} keeps the state every step starts from (no loop has more "
                    f"than {max(counts):,} steps), not its residuals: {steps:,} step{'s' if steps != 1 else ''} "
                    f"still run{'s' if steps == 1 else ''} again to make them; without --checkpoints every "
                    f"step's residuals are kept and none runs again")
        unrolled = self.graph.unrolled
        shown = "auto" if checkpoints == "auto" else f"{checkpoints}"
        if not unrolled:
            return f"--checkpoints {shown} changes nothing: this program has no repeat"
        line, why = unrolled[0]
        more = "" if len(unrolled) == 1 else f" (and {len(unrolled) - 1} more repeat{'s' if len(unrolled) > 2 else ''})"
        return f"--checkpoints {shown} changes nothing: the repeat at line {line} {why}{more}"

    def resident_bytes(self, itemsize) -> int:
        """In memory before the sweeps start, and through them: inputs and consts (made
        on the host in float64, and copied to the run's dtype unless that is float64) and
        the index maps of data-movement nodes."""
        if "data" not in self._static:   # static facts of the graph, summed once
            self._static["data"] = sum(n.size for n in self.graph.nodes if n.op in ("input", "const"))
        data = self._static["data"]
        return data * itemsize + (8 * data if itemsize != 8 else 0) + self.index_bytes()

    def making_bytes(self) -> int:
        """Room to make the data not made yet: an input's or const's recipe may hold one
        more array of its size while it is evaluated (0.1 * randn(seed=3): the draw and
        the product)."""
        if "recipes" not in self._static:
            recipes = [n.attrs.get("value") for n in self.graph.nodes if n.op == "const"]
            recipes += list(self.graph.input_defaults.values())
            self._static["recipes"] = [d for d in recipes if isinstance(d, Data)]
        return max((d.nbytes for d in self._static["recipes"] if not d.made), default=0)

    def index_bytes(self) -> int:
        """Bytes of the index maps of data-movement nodes (made before a run's sweeps) and
        of scatter-adds' targets."""
        if "index_bytes" not in self._static:
            self._static["index_bytes"] = sum(
                n.index_bytes() if REGISTRY[n.op].movement else n.attrs["targets"].nbytes
                for n in self.graph.nodes
                if REGISTRY.get(n.op) is not None and (REGISTRY[n.op].movement or n.op == "scatter_add"))
        return self._static["index_bytes"]

    def required_bytes(self, mode, wrt, outputs, chunk, itemsize, checkpoints=None) -> int:
        """What the memory limit is checked against: the sweeps' predicted peak and the
        inputs and consts they read."""
        return (self.predicted_peak_bytes(mode, wrt, outputs, chunk, itemsize, checkpoints=checkpoints)
                + self.resident_bytes(itemsize))

    def choose_chunk(self, mode, wrt, outputs, memory_limit, itemsize, checkpoints=None):
        """The largest chunk whose predicted memory fits the limit, and a note."""
        passes = sum(self._pass_sizes(mode, wrt, outputs))
        if not passes:   # every output empty (reverse mode): no directions, no sweep
            return 0, ""

        def need(chunk):
            return self.required_bytes(mode, wrt, outputs, chunk, itemsize, checkpoints)

        if need(passes) <= memory_limit:
            return passes, ""
        if need(1) > memory_limit:
            raise ResourceProblem(
                f"{mode} mode needs about {_bytes(need(1))} even one direction at a time"
                f"{self._keeping(mode, checkpoints)}, over the memory limit of {_bytes(memory_limit)}",
                hint="raise --memory-limit, lower a dim with --set, " + self._fewer_states(mode, checkpoints)
                     + "or try the other --mode")
        lo, hi = 1, passes
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if need(mid) <= memory_limit:
                lo = mid
            else:
                hi = mid
        return lo, (f"chunk {lo} of {passes} directions per sweep: all at once would need about "
                    f"{_bytes(need(passes))}, over the memory limit of {_bytes(memory_limit)}")

    def _run(self, mode, wrt, outputs, chunk, sizes, run_inputs, single=False, seeds_single=None,
             observer=None, compile_only=False, itemsize=8, checkpoints=None, records=True):
        """Run (or, with run_inputs None, predict) one mode. Returns a Cost, and with
        run_inputs also hands the derivative arrays to run_inputs['store'].

        A run is compiled on first use (adcli.execute.Stager: its sweeps become plans and
        its counts are taken) and replayed from then on (Replay). `compile_only`: make
        sure it is compiled; returns None when it already was. `itemsize`: of the dtype a
        prediction's temporaries are counted in (an int64 index is 8 / itemsize values).
        `checkpoints`: reverse mode keeps at most that many states per loop. `records`: a
        prediction's live values count loops' per-iteration records (the interpreter's)."""
        abstract = run_inputs is None
        checkpoints = checkpoints if mode == "reverse" and self._loop_count() else None
        if self.check_plans and not abstract and observer is None and not compile_only:
            return self._checked_run(mode, wrt, outputs, chunk, sizes, run_inputs, single, seeds_single,
                                     checkpoints)
        compiled = key = None
        if abstract:
            runner = self._abstract_runner(itemsize, records)
        elif observer is not None:   # watched node by node: the reference interpreter
            runner = Runner(self.graph, run_inputs["xp"], run_inputs["dtype"],
                            run_inputs["inputs"], run_inputs["consts"])
            runner.observer = observer
        else:
            key = self._run_key(mode, wrt, outputs, chunk, sizes, single, seeds_single, run_inputs["backend"],
                                run_inputs["dtype"], checkpoints, run_inputs.get("fold_consts", False))
            compiled = self._last_compiled = self._compiled.get(key)
            if compiled is None and self._loop_work() > execute.MAX_CACHED_EQUATIONS:
                # staged, a loop's every iteration records at least an equation per body
                # node: plans this large are never kept, so it is interpreted at once
                self._too_large.add(key)
            if compile_only and compiled is None and key not in self._too_large and \
                    self._predicted_ops(mode, wrt, outputs, chunk, sizes, single, checkpoints) > execute.MAX_CACHED_EQUATIONS:
                self._too_large.add(key)   # every operation is an equation at least: never kept
            if compile_only and (compiled is not None or key in self._too_large):
                if compiled is None:   # checked (and its prediction made) here, not inside a measured run
                    self._check_interpreted(mode, wrt, outputs, chunk, single, checkpoints, run_inputs)
                return None   # compiled already, or too large to keep: interpreted by the run itself
            if compiled is not None:
                runner = Replay(compiled, run_inputs["xp"], run_inputs["dtype"],
                                run_inputs["inputs"], run_inputs["consts"])
            elif key in self._too_large:
                # Interpreted: values are freed at their last use, as the memory prediction
                # (the same walk) assumes; a Stager would keep the constants it folds
                # until each sweep ends, and its plans until it passes the limits.
                self._check_interpreted(mode, wrt, outputs, chunk, single, checkpoints, run_inputs)
                runner = Runner(self.graph, run_inputs["xp"], run_inputs["dtype"],
                                run_inputs["inputs"], run_inputs["consts"])
            else:
                runner = Stager(self.graph, run_inputs["xp"], run_inputs["dtype"],
                                run_inputs["inputs"], run_inputs["consts"], give_up=compile_only,
                                constant_budget=run_inputs.get("constant_budget", MAX_CACHED_CONSTANT_BYTES),
                                fold_consts=run_inputs.get("fold_consts", False))
        analysis = self._analysis(wrt, outputs)
        cost = Cost(passes=sum(sizes), chunk=chunk, checkpoints=checkpoints)
        if not isinstance(runner, Replay):
            runner.checkpoints = checkpoints
        block_names = wrt if mode == "forward" else outputs
        shape_of = self.input_shape if mode == "forward" else self.output_shape
        if single:
            sweeps = [(((None, 0, 1),), 1)]
        elif abstract:
            groups = layout_groups(sizes, chunk)
            sweeps = []
            for index, (key, times) in enumerate(groups):
                sweeps.append((tuple((b, 0, k) for b, k in key), times))
        else:   # lazily: a million sweeps are not a million tuples kept at once
            sweeps = ((layout, 1) for layout in block_layouts(sizes, chunk))
        try:
            if mode == "forward":
                self._forward(runner, analysis, sweeps, block_names, shape_of, cost, run_inputs,
                              seeds_single)
            else:
                self._reverse(runner, analysis, sweeps, block_names, shape_of, cost, run_inputs,
                              seeds_single, outputs, wrt)
        except RunTooLarge:   # only when compile_only: the run itself will interpret it
            self._too_large.add(key)
            # the interpreted prediction walks every iteration: made now, while compiling,
            # it is not counted in the measured run's peak (a first call measured 2.2 MB
            # against 1.3 MB for the same run after it)
            self._check_interpreted(mode, wrt, outputs, chunk, single, checkpoints, run_inputs)
            return cost
        if isinstance(runner, Replay):   # its counts are the compiled run's, taken once
            return compiled.counted()
        cost.mults_primal, cost.flops_primal = runner.primal.mults, runner.primal.flops
        cost.mults_derivative, cost.flops_derivative = runner.derivative.mults, runner.derivative.flops
        cost.ops = runner.primal.ops + runner.derivative.ops
        cost.values_moved = runner.primal.moved + runner.derivative.moved
        cost.gemm_flops = runner.primal.gemm + runner.derivative.gemm
        cost.peak_live_values = runner.live.peak
        cost.peak_values_with_temporaries = runner.live.peak_with_temporaries
        cost.peak_arrays = runner.live.peak_arrays
        cost.indexed = runner.derivative.indexed
        cost.recomputed_steps = runner.recomputed_steps
        # what the time model charges: the interpreter's own work per operation, when the
        # run is too large for compiled plans (predicted: its operations alone pass the limit)
        cost.interpreted = cost.ops > execute.MAX_CACHED_EQUATIONS if abstract else \
            (type(runner) is Runner and observer is None)
        if isinstance(runner, Stager):
            self._last_compiled = None
            if runner.keep:   # (MAX_CACHED_EQUATIONS, MAX_CACHED_CONSTANT_BYTES)
                if len(self._compiled) >= MAX_CACHED_RUNS:
                    dropped = self._compiled.pop(next(iter(self._compiled)))
                    # a record of a repeat call must not keep the dropped run's plans alive
                    for gone in [k for k, record in self._repeats.items() if record.compiled is dropped]:
                        del self._repeats[gone]
                self._compiled[key] = self._last_compiled = CompiledRun(cost.copy(), runner.plans,
                                                                        runner.folded_bytes)
            else:
                self._too_large.add(key)
        return cost

    def _check_interpreted(self, mode, wrt, outputs, chunk, single, checkpoints, run_inputs):
        """Refuse an interpreted run whose need passes the memory limit it was given
        (run_inputs["memory_limit"]). The limit was checked against the compiled plans'
        need where nothing said the run would be interpreted; compiling found it too large
        to keep (its equations, or the constants the limit leaves room for), and the
        interpreter keeps a record per loop iteration that the plans do not."""
        limit = run_inputs.get("memory_limit")
        if limit is None:
            return
        itemsize = np.dtype(run_inputs["dtype"]).itemsize
        need = (self.predicted_peak_bytes(mode, wrt, outputs, chunk, itemsize, single, checkpoints, interpreted=True)
                + self.resident_bytes(itemsize))
        if need <= limit:
            return
        what = ("one JVP" if mode == "forward" else "one VJP") if single else f"{mode} mode"
        hint = ("raise --memory-limit, " + ("lower --chunk, " if chunk > 1 else "") + "lower a dim with --set, "
                + self._fewer_states(mode, checkpoints) + ("" if single else "or try the other --mode"))
        raise ResourceProblem(f"{what} is too large to keep as compiled plans, and run by the interpreter it needs "
                              f"about {_bytes(need)}{self._keeping(mode, checkpoints)}, over the memory limit of "
                              f"{_bytes(limit)}", self._longest_loop_location(), hint=hint.rstrip(", "))

    @staticmethod
    def _run_key(mode, wrt, outputs, chunk, sizes, single, seeds_single, backend: str, xp_dtype, checkpoints,
                 folds_consts: bool):
        """A compiled run's key in _compiled (checkpoints as _run has them: None but for
        reverse mode through a loop; folds_consts: whether its plans computed what the
        file's consts alone make while compiling, so that a run setting a const needs others)."""
        return (mode, tuple(wrt), tuple(outputs), chunk, tuple(sizes), single, tuple(seeds_single or ()),
                backend, str(xp_dtype), checkpoints, folds_consts)

    def _predicted_ops(self, mode, wrt, outputs, chunk, sizes, single, checkpoints) -> int:
        """The array operations a run will execute, predicted (cached per run kind)."""
        key = ("ops", mode, tuple(wrt), tuple(outputs), chunk, tuple(sizes), single, checkpoints)
        if key not in self._peak_cache:
            self._peak_cache[key] = self._run(mode, wrt, outputs, chunk, sizes, None, single=single,
                                              checkpoints=checkpoints).ops
        return self._peak_cache[key]

    def _checked_run(self, mode, wrt, outputs, chunk, sizes, run_inputs, single, seeds_single, checkpoints):
        """The checking mode (check_plans): the compiled run, then the reference interpreter
        (counting and keeping liveness as it goes) on the same inputs; their results must be
        equal to round-off (same_to_roundoff) and their counts equal, or PlanMismatch is raised.
        Not bit for bit: the same operations on the same numbers can round differently when
        their arrays sit at different addresses (SIMD and BLAS kernels split sums by alignment)."""
        got, want = [], []
        dense = lambda k, t: Linear(run_inputs["xp"], k, Counter(), run_inputs["dtype"]).dense(t)  # noqa: E731
        keep = lambda into: lambda name, block, offset, k, t: into.append(   # noqa: E731
            (name, block, offset, k, None if t is None else dense(k, t)))
        self.check_plans = False
        try:
            mine = dict(run_inputs, store=keep(got))
            cost = self._run(mode, wrt, outputs, chunk, sizes, mine, single, seeds_single,
                             checkpoints=checkpoints)
            values = mine["values"]
            reference = dict(run_inputs, store=keep(want))
            ref_cost = self._run(mode, wrt, outputs, chunk, sizes, reference, single, seeds_single,
                                 observer=lambda *args: None, checkpoints=checkpoints)
        finally:
            self.check_plans = True
        xp = run_inputs["xp"]
        problems = []
        if cost.counts() != ref_cost.counts():
            problems.append(f"counts {cost.counts()} != {ref_cost.counts()}")
        for a, b in zip(got, want):
            if a[:4] != b[:4] or (a[4] is None) != (b[4] is None) or (
                    a[4] is not None and not same_to_roundoff(xp, a[4], b[4])):
                problems.append(f"the derivative for {a[:4]} differs from the interpreter's")
        if len(got) != len(want):
            problems.append(f"{len(got)} results, the interpreter made {len(want)}")
        for i, value in values.items():
            if i in reference["values"] and not same_to_roundoff(xp, value, reference["values"][i]):
                problems.append(f"the value of node {i} differs from the interpreter's")
        if problems:
            raise PlanMismatch(f"{mode} mode: " + "; ".join(problems))
        for item in got:
            run_inputs["store"](*item)
        run_inputs["values"] = values
        return cost

    def _seeds(self, runner, layout, block_names, shape_of, seeds_single):
        seeds = {}
        for b, offset, k in layout:
            if b is None:   # one given direction / cotangent
                if seeds_single is None:   # predicting: a dense direction on every block
                    seeds_single = {n: Abstract((1,) + tuple(shape_of(n))) for n in block_names}
                for name, value in seeds_single.items():
                    seeds.setdefault(name, {})["given"] = value
                continue
            name = block_names[b]
            seeds.setdefault(name, {})[name] = runner.seed(shape_of(name), offset, k)
        return seeds

    def _forward(self, runner, analysis, sweeps, wrt, shape_of, cost, run, seeds_single):
        out_ids = self.graph.outputs
        for layout, times in sweeps:
            before = runner.primal.snapshot(), runner.derivative.snapshot()
            runner.live.reset()
            seeds = self._seeds(runner, layout, wrt, shape_of, seeds_single)
            tangents, values = runner.forward_sweep(analysis, seeds)
            if run is not None:
                run["values"] = values
                _hand_over(run["store"], layout, tangents, wrt, out_ids.items())
            if times > 1:   # identical sweeps: count the rest without running them
                runner.primal.repeat(before[0], times - 1)
                runner.derivative.repeat(before[1], times - 1)
            cost.sweeps += times
            cost.primal_sweeps += times

    def _reverse(self, runner, analysis, sweeps, outputs_blocks, shape_of, cost, run,
                 seeds_single, outputs, wrt):
        # one backward sweep (a gradient, a VJP): partials of the output are remade from it
        plan = runner.residual_plan(analysis, recompute=cost.chunk >= cost.passes)
        values, residuals, refs, cached_values, cached_inputs = runner.reverse_forward_sweep(analysis, plan)
        cost.primal_sweeps = 1
        cost.cached_values, cost.cached_inputs = cached_values, cached_inputs
        if run is not None:
            run["values"] = values
        wrt_ids = {self.graph.inputs[n]: n for n in wrt}
        targets = [(n, i) for i, n in wrt_ids.items()]
        # The last sweep frees residuals as it goes, so its peak differs: when
        # predicting, split the final composition's last sweep off to run on its own.
        if run is None:
            sweeps = list(sweeps)
            if sweeps and sweeps[-1][1] > 1:
                layout, times = sweeps[-1]
                sweeps[-1:] = [(layout, times - 1), (layout, 1)]
        total = 0
        for (layout, times), final in _with_last(sweeps):
            total += times
            before = runner.derivative.snapshot(), runner.primal.snapshot(), runner.recomputed_steps
            seeds = {}
            for name, blocks in self._seeds(runner, layout, outputs_blocks, shape_of, seeds_single).items():
                target = seeds.setdefault(self.graph.outputs[name], {})
                for block, ct in blocks.items():
                    if block in target and ct is not None:   # two outputs are one node: their
                        T = Linear(runner.xp, ct.shape[0], runner.derivative, runner.dtype)   # cotangents add
                        ct = T.add(target[block], ct)
                    target[block] = ct
            results = runner.backward_sweep(analysis, plan, residuals, refs, seeds, set(wrt_ids), final)
            if run is not None:
                _hand_over(run["store"], layout, results, outputs_blocks, targets)
            if times > 1:   # identical sweeps: count the rest without running them
                runner.derivative.repeat(before[0], times - 1)
                runner.primal.repeat(before[1], times - 1)   # steps of a loop run again
                runner.recomputed_steps += (runner.recomputed_steps - before[2]) * (times - 1)
        cost.sweeps = total
        cost.cached_values += runner.cached_extra

    # -- public entry points ---------------------------------------------------------------
    def _prepare(self, backend, dtype, at, memory_limit: int | None = None):
        be, xp_dtype, host_inputs, inputs, consts, _, changed = self._setup(backend, dtype, at, memory_limit,
                                                                            moves=True)
        given = set(self.const_defaults) | {name for name in (at or {}) if name not in self.graph.inputs}
        return be, {"xp": be.xp, "dtype": xp_dtype, "inputs": inputs, "consts": consts,
                    "backend": be.name, "changed_consts": changed,
                    # no const changes in this run: its plans may fold the consts' values
                    "fold_consts": self.fold_consts and not changed,
                    "consts_set": tuple(name for name in changed if name in given)}, host_inputs

    def json_values(self, kind: str = "jacobian", wrt=None, outputs=None) -> tuple:
        """(numbers, labels) that writing a `kind` result as JSON writes: the value of every
        output, every input's value, the Jacobian (and its blocks), the JVP's tangent or
        the VJP's cotangent, and a label per row and column."""
        wrt = self._wrt(wrt)
        outputs = list(outputs or self.graph.outputs)
        m, n = self._jacobian_shape(wrt, outputs)
        numbers = (sum(self._sizes(self.graph.outputs, self.output_shape))
                   + sum(self._sizes(self.graph.inputs, self.input_shape)))
        if kind == "jacobian":
            return numbers + 2 * m * n, m + n
        if kind == "jvp":
            return numbers + 2 * m, m + 1
        return numbers + 2 * n, n + 1

    def json_bytes(self, kind: str = "jacobian", wrt=None, outputs=None, streamed: bool = True) -> int:
        """The bytes writing a `kind` result ("jacobian", "jvp", "vjp") as JSON needs
        besides the result itself: JSON_BYTES_PER_NUMBER per number written and
        JSON_BYTES_PER_LABEL per label, all of them at once for json.dumps(derivative_json(…))
        (streamed=False), one chunk at a time for report.derivative_json_pieces (the CLI)."""
        from .report import JSON_CHUNK

        numbers, labels = self.json_values(kind, wrt, outputs)
        if streamed:
            numbers, labels = min(numbers, JSON_CHUNK), min(labels, JSON_CHUNK)
        return JSON_BYTES_PER_NUMBER * numbers + JSON_BYTES_PER_LABEL * labels

    def check_json(self, limit: int, kind, wrt, outputs, itemsize: int = 8):
        """Refuse a run whose result could not then be written as JSON within `limit`.
        The JSON is written after the sweeps, whose working memory is gone by then: what
        is alive is the data (resident_bytes), the result on the host in float64 (the
        blocks and, with several, the Jacobian assembled from them; the values) and
        what writing takes (json_bytes)."""
        wrt = self._wrt(wrt)
        outputs = list(outputs or self.graph.outputs)
        m, n = self._jacobian_shape(wrt, outputs)
        values = sum(self._sizes(self.graph.outputs, self.output_shape))
        if kind == "jacobian":
            result = m * n * (2 if len(outputs) * len(wrt) > 1 else 1)
        else:
            result = 2 * (m if kind == "jvp" else n)
        writing = self.json_bytes(kind, wrt, outputs)
        need = self.resident_bytes(itemsize) + 8 * (result + values) + writing
        if need > limit:
            raise ResourceProblem(f"keeping the result and writing it as JSON needs about {_bytes(need)} "
                                  f"with the file's data, over the memory limit of {_bytes(limit)}",
                                  hint="differentiate fewer inputs with --wrt, lower a dim with --set, "
                                       "or raise --memory-limit")

    def _jacobian_decisions(self, mode, wrt, chunk, backend, dtype, memory_limit, checkpoints, json):
        """What a jacobian() call decides before it runs (the inputs named, the mode, the
        chunk, the checks against the memory limit): the same for every call with the same
        arguments, since it reads shapes and the memory limit alone, so it is kept per
        program (a cached call then costs its sweeps, not these decisions again)."""
        try:
            key = (mode, wrt if wrt is None or isinstance(wrt, str) else tuple(wrt), chunk,
                   backend if isinstance(backend, str) else id(backend), dtype, memory_limit,
                   checkpoints, bool(json))
            hash(key)
        except TypeError:   # an argument that cannot be a key: decided every time
            key = None
        if key is not None and key in self._decided:
            return self._decided[key]
        wrt = self._wrt(wrt)
        outputs = list(self.graph.outputs)
        note = ""
        if mode not in ("auto",) + MODES:
            raise UsageProblem(f"unknown mode '{mode}'; choose forward, reverse or auto")
        if chunk is not None and chunk < 1:
            raise UsageProblem("--chunk must be at least 1")
        _check_checkpoints(checkpoints)
        itemsize = np.dtype(DTYPES.get(dtype, np.float64)).itemsize
        if isinstance(backend, str):
            from .backends import get_backend
            backend = get_backend(backend)
        limit = self.default_limit(backend) if memory_limit is None else memory_limit
        in_sizes = self._sizes(wrt, self.input_shape)
        out_sizes = self._sizes(outputs, self.output_shape)
        m, n = sum(out_sizes), sum(in_sizes)
        if m * n * itemsize > limit:   # its blocks are all kept, whatever the mode and chunk
            raise ResourceProblem(
                f"the {m:,}×{n:,} Jacobian alone needs {_bytes(m * n * itemsize)}, over the memory "
                f"limit of {_bytes(limit)}", hint="differentiate fewer inputs with --wrt, or compute "
                "one JVP or VJP with --direction or --cotangent")
        if mode == "auto":
            decision = self.decide(wrt, chunk, limit, backend, dtype, checkpoints=checkpoints)
            if decision.mode is None:
                raise ResourceProblem(decision.reason, hint="raise --memory-limit, lower a dim with "
                                      "--set, or differentiate fewer inputs with --wrt")
            mode, note = decision.mode, "auto picked " + decision.reason
        sizes = in_sizes if mode == "forward" else out_sizes
        passes = sum(sizes)
        if mode == "reverse":   # (say so when there is no loop to checkpoint)
            note = _joined(note, self.checkpoints_note(checkpoints))
        if mode == "forward" or not self._loop_count():   # nothing to checkpoint
            checkpoints = None
        elif checkpoints == "auto":
            checkpoints = self.choose_checkpoints(wrt, outputs, limit, itemsize, chunk)
        chunk_note = ""
        if chunk is None:
            chunk, chunk_note = self.choose_chunk(mode, wrt, outputs, limit, itemsize, checkpoints)
        else:   # a chunk given: checked too, never run past the limit
            need = self.required_bytes(mode, wrt, outputs, min(chunk, passes), itemsize, checkpoints)
            if need > limit:
                raise ResourceProblem(f"{mode} mode with --chunk {chunk} needs about {_bytes(need)}, over "
                                      f"the memory limit of {_bytes(limit)}",
                                      hint="lower --chunk (or leave it out to fit the limit)")
        chunk = min(chunk, passes)
        if json:
            self.check_json(limit, "jacobian", wrt, outputs, itemsize)
        constant_budget = limit - self.required_bytes(mode, wrt, outputs, chunk, itemsize, checkpoints)
        decided = (wrt, outputs, mode, note, itemsize, backend, limit, sizes, checkpoints, chunk, chunk_note,
                   constant_budget)
        if key is not None and isinstance(backend, NumpyBackend):   # (a GPU's free memory moves)
            self._decided[key] = decided
        return decided

    @_linear_algebra_problems
    def jacobian(self, mode: str = "auto", wrt=None, at=None, chunk: int | None = None,
                 backend="numpy", dtype: str = "float64", memory_limit: int | None = None,
                 measure_memory: bool = False, warmup: bool | None = None,
                 json: bool = False, checkpoints: int | str | None = None,
                 time_limit: float | None = None) -> Derivative:
        """The full Jacobian of all outputs w.r.t. `wrt` (default: all inputs).
        `time_limit` (seconds): refused when the run is predicted to take longer.
        `checkpoints` (reverse mode): reverse each loop keeping at most that many states
        (binomial checkpointing; "auto": none while every residual fits the memory limit,
        else the most states that fit).
        `warmup` (default: the backend's choice, on for CuPy) runs the sweeps once
        before the measured run and reports that run's time as cost.time_s["warmup"].
        `json`: the result will be written as JSON (report.derivative_json_pieces): refused
        when that would not fit the memory limit (check_json)."""
        repeat_key = _repeat_key(mode, wrt, chunk, backend, dtype, memory_limit, json, checkpoints, time_limit,
                                 self.fold_consts)
        if repeat_key is not None and not (measure_memory or warmup or self.check_plans or self.const_defaults):
            record = self._repeats.get(repeat_key)
            if record is not None:
                result = self._jacobian_again(record, at)
                if result is not None:
                    return result
        mode_requested = mode
        if mode == "reverse" and checkpoints is not None:
            self._check_time_keeping_all(wrt, chunk, dtype, backend, time_limit, measure_memory)
        elif mode == "auto" and checkpoints is not None and self._past_time_keeping_all(
                wrt, chunk, dtype, backend, time_limit, measure_memory):
            checkpoints = None   # reverse mode is past the time limit with any S: no S to search for
        try:
            (wrt, outputs, mode, note, itemsize, backend, limit, sizes, checkpoints, chunk, chunk_note,
             constant_budget) = self._jacobian_decisions(mode, wrt, chunk, backend, dtype, memory_limit,
                                                         checkpoints, json)
        except ResourceProblem as exc:
            raise self._memory_refusal(exc, mode_requested, wrt, dtype, backend, time_limit,
                                       measure_memory) from None
        self.check_time(mode, wrt, outputs, chunk, sizes, itemsize, backend, time_limit, checkpoints=checkpoints,
                        traced=measure_memory)
        be, run, host_inputs = self._prepare(backend, dtype, at, limit)
        stacked = _JacobianBlocks(be.xp, run["dtype"], mode, self._directions(mode, wrt, outputs))
        run["store"] = stacked.store
        run["constant_budget"] = constant_budget
        run["memory_limit"] = limit   # (an interpreted run is checked against it again: _check_interpreted)
        cost = self._measured(be, measure_memory, warmup,
                              lambda r, observer, only=False: self._run(mode, wrt, outputs, chunk, sizes, r,
                                                                   compile_only=only, checkpoints=checkpoints),
                              run)
        self._predicted(cost, be, mode, wrt, outputs, chunk, itemsize, checkpoints=checkpoints)
        result = self._jacobian_result(be, mode, mode_requested, run["values"], stacked, outputs, wrt, cost,
                                       dtype, host_inputs, note, chunk_note, run["changed_consts"],
                                       run["consts_set"], self._spec(outputs, self.output_shape),
                                       self._spec(wrt, self.input_shape))
        if repeat_key is not None and isinstance(be, NumpyBackend) and not self.check_plans \
                and not run["changed_consts"]:   # (a GPU's free memory moves, as in _jacobian_decisions)
            self._remember(repeat_key, result, be, run, sizes, chunk, checkpoints)
        return result

    def _jacobian_result(self, be, mode, mode_requested, run_values, stacked, outputs, wrt, cost, dtype,
                         host_inputs, note, chunk_note, consts, consts_set, rows, columns) -> Derivative:
        values = {name: np.asarray(be.to_host(run_values[i])) for name, i in self.graph.outputs.items()}
        blocks = stacked.on_host(be, outputs, wrt, self.output_shape, self.input_shape, DTYPES[dtype])
        return Derivative("jacobian", mode, mode_requested, values, rows, columns, outputs, wrt, cost,
                          be.name, be.device, dtype, host_inputs, blocks=blocks, note=note,
                          consts=consts, consts_set=consts_set, chunk_note=chunk_note)

    def _remember(self, repeat_key, result: Derivative, be, run, sizes, chunk, checkpoints):
        """Keep what this jacobian() call worked out for a repeat call with the same options
        (_Repeat), when its run was compiled and kept."""
        from .machine import model_for

        mode, wrt, outputs = result.mode, result.wrt, result.outputs
        run_key = self._run_key(mode, wrt, outputs, chunk, sizes, False, None, be.name, run["dtype"], checkpoints,
                                run["fold_consts"])
        compiled = self._compiled.get(run_key)
        layouts = list(block_layouts(sizes, chunk))
        staged = len(layouts) + (mode == "reverse")   # a plan per sweep; reverse mode's primal sweep
        if compiled is None or len(compiled.plans) != staged or not layouts:
            return
        if mode == "forward":
            block_names, targets = wrt, list(self.graph.outputs.items())
        else:
            block_names, targets = outputs, [(n, self.graph.inputs[n]) for n in wrt]
        if len(self._repeats) >= MAX_REPEATS:
            self._repeats.pop(next(iter(self._repeats)))
        self._repeats[repeat_key] = _Repeat(
            run_key=run_key, compiled=compiled, model_for=model_for, model=model_for(be.name), be=be,
            xp_dtype=run["dtype"], consts=list(run["consts"].values()), layouts=layouts,
            block_names=block_names, targets=targets, directions=self._directions(mode, wrt, outputs),
            predicted=dict(result.cost.predicted), inputs=[(name, self.input_shape(name)) for name in self.graph.inputs],
            said=(result.mode, result.mode_requested, result.outputs, result.wrt, result.dtype, result.note,
                  result.chunk_note, result.row_spec, result.column_spec))

    def _directions(self, mode, wrt, outputs) -> dict:
        """{block: directions}: the elements of each input (forward mode) or output (reverse)."""
        names, shape_of = (wrt, self.input_shape) if mode == "forward" else (outputs, self.output_shape)
        return {name: prod(shape_of(name)) for name in names}

    def _replay_leaves(self, record: "_Repeat", at) -> tuple | None:
        """(host inputs, the plans' leaves: the inputs converted, then the file's consts) of a
        repeat call from its record; None when the record cannot answer it (its compiled run
        gone from the cache, the machine model calibrated since, a const set by `at`, an
        input whose recipe is not made yet)."""
        if self._compiled.get(record.run_key) is not record.compiled or \
                record.model_for(record.be.name) is not record.model:
            return None
        host_inputs = self._repeat_inputs(record, at)
        if host_inputs is None:
            return None
        return host_inputs, [record.be.asarray(v, record.xp_dtype) for v in host_inputs.values()] + record.consts

    def _jacobian_again(self, record: "_Repeat", at) -> Derivative | None:
        """A repeat jacobian() call answered from its record: the inputs converted, the plans
        run, the blocks wrapped. None when the record cannot answer it (its compiled run gone
        from the cache, the machine model calibrated since, a const set by `at`, an input
        whose recipe is not made yet): the whole call then runs, and decides anew."""
        replayed = self._replay_leaves(record, at)
        if replayed is None:
            return None
        host_inputs, leaves = replayed
        be, xp_dtype = record.be, record.xp_dtype
        mode, mode_requested, outputs, wrt, dtype, note, chunk_note, rows, columns = record.said
        stacked = _JacobianBlocks(be.xp, xp_dtype, mode, record.directions)
        store, layouts, block_names, targets = stacked.store, record.layouts, record.block_names, record.targets

        def hand_over(sweep, derivatives):
            _hand_over(store, layouts[sweep], derivatives, block_names, targets)

        start = time.perf_counter()
        values = execute.replay_plans(record.compiled, mode, leaves, [], hand_over)
        seconds = time.perf_counter() - start
        self._last_compiled = record.compiled
        cost = record.compiled.counted()
        cost.time_s = {"parse": self.times["parse"], "build": self.times["build"], "sweeps": seconds}
        cost.predicted = dict(record.predicted)
        return self._jacobian_result(be, mode, mode_requested, values, stacked, outputs, wrt, cost, dtype,
                                     host_inputs, note, chunk_note, {}, (), rows, columns)

    def _repeat_inputs(self, record: "_Repeat", at) -> dict | None:
        """resolve_inputs(at) for a repeat call when `at` sets inputs alone and every default
        it reads is made (else None: resolve_inputs and the memory check decide)."""
        defaults = self.graph.input_defaults
        host = {}
        if at:
            for name in at:
                if name not in self.graph.inputs:   # a const (or a name to refuse)
                    return None
        for name, shape in record.inputs:
            if at and name in at:
                host[name] = _given_value("input", name, at[name], shape)
                continue
            value = defaults.get(name)
            if isinstance(value, Data):
                if not value.made:
                    return None
                value = value.value
            elif value is None:
                return None
            host[name] = value
        return host

    def default_limit(self, backend) -> int:
        """The default memory limit (adcli.memory.default_memory_limit), read once per program
        and backend: it reads the system's figures, and a decision cached per limit must
        not be remade because free memory moved by a page."""
        name = backend_name(backend)
        if name not in self._default_limits:
            self._default_limits[name] = default_memory_limit(None if isinstance(backend, str) else backend)
        return self._default_limits[name]

    def decide(self, wrt=None, chunk=None, memory_limit=None, backend="numpy", dtype="float64",
               exclude=(), checkpoints=None):
        """The mode --mode auto runs, and why (adcli.decide): the least predicted time
        among the modes predicted to fit the memory limit."""
        from .decide import decide

        return decide(self, wrt, chunk, memory_limit, backend, dtype, exclude=exclude, checkpoints=checkpoints)

    def choose_checkpoints(self, wrt, outputs, memory_limit, itemsize, chunk=None, single=False):
        """--checkpoints auto: None (every iteration's residuals kept) when reverse mode
        fits the memory limit so, else the most states per loop (the fewest recomputed
        steps) whose predicted need fits, at `chunk` directions per sweep (None: one)."""
        chunk = max(1, min(chunk or 1, sum(self._pass_sizes("reverse", wrt, outputs)) or 1))

        def need(states):
            return (self.predicted_peak_bytes("reverse", wrt, outputs, chunk, itemsize, single, states)
                    + self.resident_bytes(itemsize))

        def fits(states):
            return need(states) <= memory_limit

        if not self._loop_count() or fits(None):
            return None
        most = max(n.attrs["count"] for n in self.graph.nodes if n.op == "loop")
        if not fits(1):
            raise ResourceProblem(f"reverse mode needs about {_bytes(need(1))} even keeping one state per loop, "
                                  f"over the memory limit of {_bytes(memory_limit)}",
                                  hint="raise --memory-limit, lower a dim with --set, or try --mode forward")
        lo, hi = 1, min(most, MAX_AUTO_STATES)   # more states: fewer recomputations, more memory
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if fits(mid):
                lo = mid
            else:
                hi = mid - 1
        return lo

    def _predicted(self, cost, be, mode, wrt, outputs, chunk, itemsize, single=False, checkpoints=None):
        """cost.predicted: the time the machine model predicts for these very counts
        (prediction = count, so they are the predicted counts) and the predicted peak."""
        from .machine import model_for

        model = model_for(be.name)
        # the same counts and the same model predict the same: kept per run kind (a cached
        # call does not work its prediction out again)
        key = ("predicted", mode, tuple(wrt), tuple(outputs), chunk, itemsize, single, checkpoints,
               id(model), cost.ops, cost.values_moved, cost.gemm_flops, bool(getattr(cost, "interpreted", False)))
        predicted = self._peak_cache.get(key)
        if predicted is None or predicted[0] is not model:
            predicted = self._peak_cache[key] = (model, model.time(cost, itemsize), self.predicted_peak_bytes(
                mode, wrt, outputs, chunk, itemsize, single=single, checkpoints=checkpoints,
                interpreted=bool(getattr(cost, "interpreted", False))))
        cost.predicted = {"time_s": predicted[1], "peak_bytes": predicted[2]}

    def _measured(self, be, measure_memory, warmup, go, run, observer=None):
        """go(run, observer) under be.measure; with a warm-up (default: be.warmup),
        once before with results discarded, its time kept as time_s["warmup"]."""
        times = {"parse": self.times["parse"], "build": self.times["build"]}
        if observer is None:   # compiled first, so that what is timed is the compiled run
            with be.measure(False) as report:
                staged = go(dict(run, store=lambda *args: None), None, True)
            if staged is not None:
                times["compile"] = report["seconds"]
        if be.warmup if warmup is None else warmup:
            with be.measure(False) as report:
                go(dict(run, store=lambda *args: None), None)
            times["warmup"] = report["seconds"]
        with be.measure(measure_memory) as report:
            cost = go(run, observer)
        cost.peak_bytes = report["peak_bytes"]
        if cost.peak_bytes is not None and observer is None and self._last_compiled is not None:
            # what the plans folded from the consts while compiling (cos(3t) of a const t) is
            # memory the sweeps use that they did not allocate
            cost.peak_bytes += self._last_compiled.folded_bytes
        sweeps = report["seconds"]
        if report["peak_bytes"] is not None and sweeps < RETIME_BELOW_S:
            # Tracing allocations (for peak_bytes) slows small runs 5-10×: time them
            # again untraced, so time_s.sweeps is the time the sweeps really take.
            # A run of microseconds is timed a few times (the fastest of up to
            # RETIMES_SMALL within RETIME_SMALL_S): its first untraced run pays for cold
            # caches, 2-3× its steady time (seed_example: 35 µs against 10 µs).
            times["traced"] = sweeps
            retimed = []
            while not retimed or (len(retimed) < RETIMES_SMALL and sum(retimed) < RETIME_SMALL_S):
                with be.measure(False) as again:
                    go(dict(run, store=lambda *args: None), None)
                retimed.append(again["seconds"])
            sweeps = min(retimed)
        cost.time_s = {**times, "sweeps": sweeps}
        return cost

    def _single_limit(self, kind, given, wrt_names, backend, dtype, memory_limit, json,
                      checkpoints=None) -> tuple:
        """The memory limit of one JVP or VJP, checked against its prediction (and, with
        `json`, what writing it as JSON takes) before any data is made; and what the limit
        leaves above that prediction (for the compiled plans' constants)."""
        limit = self.default_limit(backend) if memory_limit is None else memory_limit
        names = [n for n in (self.graph.inputs if kind == "jvp" else self.graph.outputs) if n in given]
        if not names:   # the usual errors follow
            return limit, 0, None
        wrt = names if kind == "jvp" else wrt_names
        outputs = list(self.graph.outputs) if kind == "jvp" else names
        itemsize = np.dtype(DTYPES.get(dtype, np.float64)).itemsize
        mode = "forward" if kind == "jvp" else "reverse"
        if checkpoints == "auto":
            checkpoints = self.choose_checkpoints(wrt, outputs, limit, itemsize, 1, single=True)
        need = (self.predicted_peak_bytes(mode, wrt, outputs, 1, itemsize, single=True, checkpoints=checkpoints)
                + self.resident_bytes(itemsize))
        if need > limit:
            raise ResourceProblem(f"one {kind.upper()} needs about {_bytes(need)}{self._keeping(mode, checkpoints)}, "
                                  f"over the memory limit of {_bytes(limit)}",
                                  hint="lower a dim with --set, " + self._fewer_states(mode, checkpoints)
                                       + "or raise --memory-limit")
        if json:
            self.check_json(limit, kind, wrt, outputs, itemsize)
        return limit, limit - need, checkpoints

    def _single(self, kind, given: dict, at, backend, dtype, measure_memory, wrt=None, observer=None,
                warmup=None, memory_limit=None, json=False, checkpoints=None, time_limit=None):
        """One JVP (kind 'jvp': given = input directions) or VJP (given = output cotangents)."""
        repeat_key = None
        if observer is None and isinstance(given, dict):   # (the given names are part of the key)
            repeat_key = _repeat_key((kind, tuple(given)), wrt if kind == "vjp" else None, None, backend, dtype,
                                     memory_limit, json, checkpoints, time_limit, self.fold_consts)
        if repeat_key is not None and not (measure_memory or warmup or self.check_plans or self.const_defaults):
            record = self._repeats.get(repeat_key)
            if record is not None:
                result = self._single_again(record, kind, given, at)
                if result is not None:
                    return result
        mode = "forward" if kind == "jvp" else "reverse"
        wrt_names = self._wrt(wrt) if kind == "vjp" else None
        _check_checkpoints(checkpoints)
        note = self.checkpoints_note(checkpoints) if kind == "vjp" else ""
        if kind == "vjp" and checkpoints is not None:
            self._check_time_keeping_all(wrt_names, 1, dtype, backend, time_limit, measure_memory, single=True)
        if kind == "jvp" or not self._loop_count():
            checkpoints = None
        limit, headroom, checkpoints = self._single_limit(kind, given, wrt_names, backend, dtype, memory_limit,
                                                          json, checkpoints)
        be, run, host_inputs = self._prepare(backend, dtype, at, limit)
        run["constant_budget"] = headroom
        run["memory_limit"] = limit
        seeds = self._single_seeds(kind, given, be, run["dtype"])
        if kind == "jvp":
            wrt_names = [n for n in self.graph.inputs if n in seeds]
            outputs = list(self.graph.outputs)
        else:
            outputs = [n for n in self.graph.outputs if n in seeds]
        if not seeds:
            raise UsageProblem(f"give at least one {'--direction' if kind == 'jvp' else '--cotangent'}")
        collected = {}

        def store(name, block, offset, k, t):
            if t is not None:
                collected[name] = t

        run["store"] = store
        self.check_time(mode, wrt_names, outputs, 1, [1], np.dtype(DTYPES[dtype]).itemsize, be, time_limit,
                        single=True, checkpoints=checkpoints, traced=measure_memory)
        cost = self._measured(be, measure_memory, warmup,
                              lambda r, obs, only=False: self._run(mode, wrt_names, outputs, 1, [1], r, single=True,
                                                                  seeds_single=seeds, observer=obs,
                                                                  compile_only=only, checkpoints=checkpoints),
                              run, observer)
        itemsize = np.dtype(DTYPES[dtype]).itemsize
        self._predicted(cost, be, mode, wrt_names, outputs, 1, itemsize, single=True, checkpoints=checkpoints)
        result = self._single_result(kind, be, dtype, run["values"], collected, seeds, cost, host_inputs,
                                     wrt_names, outputs, note, run["changed_consts"], run["consts_set"])
        if repeat_key is not None and isinstance(be, NumpyBackend) and not self.check_plans \
                and not run["changed_consts"]:
            self._remember_single(repeat_key, result, be, run, seeds, checkpoints)
        return result

    def _single_seeds(self, kind, given: dict, be, xp_dtype) -> dict:
        """The given directions (jvp) or cotangents (vjp) on the backend, each broadcast to its
        input's or output's shape (a copy: the caller's array stays the caller's), as one
        direction: {name: array of shape (1,) + shape}."""
        names = self.graph.inputs if kind == "jvp" else self.graph.outputs
        shape_of = self.input_shape if kind == "jvp" else self.output_shape
        what = "input" if kind == "jvp" else "output"
        seeds = {}
        for name, raw in given.items():
            if name not in names:
                known = ", ".join(names)
                raise UsageProblem(f"there is no {what} named '{name}' ({what}s: {known})")
            value = np.asarray(raw, dtype=np.float64)
            shape = shape_of(name)
            try:   # a copy either way (broadcast_to alone costs a few µs a call)
                value = np.array(value if value.shape == shape else np.broadcast_to(value, shape))
            except ValueError:
                raise ValueProblem(f"the {'direction' if kind == 'jvp' else 'cotangent'} for {name} "
                                   f"is {format_shape(value.shape)}, but {name} is "
                                   f"{format_shape(shape_of(name))}") from None
            seeds[name] = be.asarray(value[None, ...], xp_dtype)
        return seeds

    def _single_result(self, kind, be, dtype, run_values, collected, seeds, cost, host_inputs, wrt_names,
                       outputs, note, consts, consts_set) -> Derivative:
        mode = "forward" if kind == "jvp" else "reverse"
        values = {name: np.asarray(be.to_host(run_values[i])) for name, i in self.graph.outputs.items()}
        result_names = list(self.graph.outputs) if kind == "jvp" else wrt_names
        shapes = {n: (self.output_shape(n) if kind == "jvp" else self.input_shape(n)) for n in result_names}
        arrays = {}
        for name in result_names:
            t = collected.get(name)
            arrays[name] = (np.zeros(shapes[name]) if t is None
                            else np.asarray(be.to_host(t)).reshape(shapes[name]))
        flat = np.concatenate([arrays[n].reshape(-1) for n in result_names]) if result_names else np.zeros(0)
        if kind == "jvp":
            jac, rows, cols = flat.reshape(-1, 1), self._spec(result_names, self.output_shape), [("direction", None)]
        else:
            jac, rows, cols = flat.reshape(1, -1), [("cotangent", None)], self._spec(result_names, self.input_shape)
        result = Derivative(kind, mode, mode, values, rows, cols, outputs,
                            wrt_names, cost, be.name, be.device, dtype, host_inputs, matrix=jac, note=note,
                            consts=consts, consts_set=consts_set,
                            given={name: np.asarray(be.to_host(v[0])) for name, v in seeds.items()})
        if kind == "jvp":
            result.tangent = arrays
        else:
            result.cotangent = arrays
        return result

    def _remember_single(self, repeat_key, result: Derivative, be, run, seeds, checkpoints):
        """_remember for one JVP or VJP: kept when its run was compiled and kept, and (VJP)
        no two outputs given a cotangent are one node (the driver adds their cotangents)."""
        from .machine import model_for

        mode, wrt, outputs = result.mode, result.wrt, result.outputs
        run_key = self._run_key(mode, wrt, outputs, 1, [1], True, seeds, be.name, run["dtype"], checkpoints,
                                run["fold_consts"])
        compiled = self._compiled.get(run_key)
        if compiled is None or len(compiled.plans) != 1 + (mode == "reverse"):
            return
        if mode == "forward":
            targets = list(self.graph.outputs.items())
        else:
            targets = [(n, self.graph.inputs[n]) for n in wrt]
            if len({self.graph.outputs[n] for n in seeds}) != len(seeds):
                return
        if len(self._repeats) >= MAX_REPEATS:
            self._repeats.pop(next(iter(self._repeats)))
        self._repeats[repeat_key] = _Repeat(
            run_key=run_key, compiled=compiled, model_for=model_for, model=model_for(be.name), be=be,
            xp_dtype=run["dtype"], consts=list(run["consts"].values()), layouts=[((None, 0, 1),)],
            block_names=[], targets=targets, directions={}, predicted=dict(result.cost.predicted),
            inputs=[(name, self.input_shape(name)) for name in self.graph.inputs],
            said=(mode, mode, outputs, wrt, result.dtype, result.note, "", None, None))

    def _single_again(self, record: "_Repeat", kind, given: dict, at) -> Derivative | None:
        """A repeat jvp() or vjp() call answered from its record (as _jacobian_again), the
        given directions or cotangents converted as the whole call converts them."""
        replayed = self._replay_leaves(record, at)
        if replayed is None:
            return None
        host_inputs, leaves = replayed
        be, xp_dtype = record.be, record.xp_dtype
        mode, _, outputs, wrt, dtype, note, _, _, _ = record.said
        seeds = self._single_seeds(kind, given, be, xp_dtype)
        collected = {}

        def store(name, block, offset, k, t):
            if t is not None:
                collected[name] = t

        def hand_over(sweep, derivatives):
            _hand_over(store, record.layouts[sweep], derivatives, record.block_names, record.targets)

        start = time.perf_counter()
        values = execute.replay_plans(record.compiled, mode, leaves, list(seeds.values()), hand_over)
        seconds = time.perf_counter() - start
        self._last_compiled = record.compiled
        cost = record.compiled.counted()
        cost.time_s = {"parse": self.times["parse"], "build": self.times["build"], "sweeps": seconds}
        cost.predicted = dict(record.predicted)
        return self._single_result(kind, be, dtype, values, collected, seeds, cost, host_inputs, wrt, outputs,
                                   note, {}, ())

    @_linear_algebra_problems
    def jvp(self, direction: dict, at=None, backend="numpy", dtype="float64",
            measure_memory=False, observer=None, warmup: bool | None = None,
            memory_limit: int | None = None, json: bool = False, time_limit: float | None = None) -> Derivative:
        """J·v for a direction {input: array} (inputs left out get no tangent): one forward pass.
        `observer(runner, event, node, value, derivative)` sees every node as the sweep runs
        (not the warm-up run: see jacobian's `warmup`). Refused when predicted to exceed
        `memory_limit` or `time_limit`; `json` as in jacobian."""
        return self._single("jvp", direction, at, backend, dtype, measure_memory, observer=observer,
                            warmup=warmup, memory_limit=memory_limit, json=json, time_limit=time_limit)

    @_linear_algebra_problems
    def vjp(self, cotangent: dict, at=None, wrt=None, backend="numpy", dtype="float64",
            measure_memory=False, observer=None, warmup: bool | None = None,
            memory_limit: int | None = None, json: bool = False,
            checkpoints: int | str | None = None, time_limit: float | None = None) -> Derivative:
        """uᵀ·J for a cotangent {output: array} (outputs left out get none): one reverse pass.
        `checkpoints` and `time_limit` as in jacobian."""
        return self._single("vjp", cotangent, at, backend, dtype, measure_memory, wrt, observer,
                            warmup=warmup, memory_limit=memory_limit, json=json, checkpoints=checkpoints,
                            time_limit=time_limit)

    # -- the Hessian: forward over reverse --------------------------------------------------
    def gradient_program(self, output: str | None = None, wrt=None) -> "Program":
        """The program whose outputs are the gradient of the scalar output `output` (default:
        the only output) with respect to `wrt` (default: all inputs), written out as nodes
        (one reverse sweep, adcli.derive), named d<output>/d<input>. Its Jacobian is the
        Hessian. Built again from the file's text, every repeat unrolled."""
        output = self._scalar_output(output)
        wrt = self._wrt(wrt)
        b = self.graph.builder
        t0 = time.perf_counter()
        builder = Builder(b.text, b.filename, b.dim_overrides, b.node_limit, b.base_dir, loops="never")
        builder.gradient_of = (output, wrt)
        graph = builder.build()
        program = Program(graph, {"parse": self.times.get("parse", 0.0), "build": time.perf_counter() - t0})
        program.const_defaults = dict(self.const_defaults)
        return program

    def _scalar_output(self, output: str | None) -> str:
        if output is None:
            if len(self.graph.outputs) != 1:
                raise UsageProblem(f"the file has {len(self.graph.outputs)} outputs "
                                   f"({', '.join(self.graph.outputs)}); name one with --of")
            output = next(iter(self.graph.outputs))
        if output not in self.graph.outputs:
            raise UsageProblem(f"--of {output}: the file has no output '{output}' "
                               f"(outputs: {', '.join(self.graph.outputs)})")
        return output

    def hessian(self, output: str | None = None, wrt=None, at=None, direction: dict | None = None,
                mode: str = "forward", chunk: int | None = None, backend="numpy", dtype="float64",
                memory_limit: int | None = None, measure_memory: bool = False,
                json: bool = False, time_limit: float | None = None) -> "Hessian":
        """The Hessian of a scalar output (or one Hessian-vector product, for a `direction`
        {input: array}): the Jacobian of its gradient, the gradient written out as nodes.
        Forward mode (the default) is forward over reverse: one forward pass per wrt scalar,
        each a Hessian-vector product; `mode="reverse"` is reverse over reverse. The result
        is checked against central differences of the gradient (Hessian.check). `time_limit`
        (seconds): the run is refused, and the check skipped (saying so), when predicted to
        take longer."""
        output = self._scalar_output(output)
        wrt = self._wrt(wrt)
        gradient = self.gradient_program(output, wrt)
        at = dict(at or {})
        try:
            if direction is not None:
                result = gradient.jvp(direction, at=at, backend=backend, dtype=dtype, measure_memory=measure_memory,
                                      memory_limit=memory_limit, json=json, time_limit=time_limit)
            else:
                result = gradient.jacobian(mode=mode, wrt=wrt, at=at, chunk=chunk, backend=backend, dtype=dtype,
                                           memory_limit=memory_limit, measure_memory=measure_memory, json=json,
                                           time_limit=time_limit)
        except ResourceProblem as exc:   # said of the Hessian, at the file's first repeat (every
            for run in ("forward", "reverse"):   # repeat is written out in the gradient's nodes)
                if exc.message.startswith(f"{run} mode "):
                    exc.message = f"the Hessian, {run} over reverse, " + exc.message[len(f"{run} mode "):]
                    exc.args = (exc.message,)
            if exc.location is None and self.graph.unrolled:
                line = self.graph.unrolled[0][0]
                lines = self.graph.source.splitlines() if self.graph.source else []
                source = lines[line - 1] if 0 < line <= len(lines) else ""
                exc.location = SourceLocation(self.graph.filename, line, len(source) - len(source.lstrip()) + 1,
                                              source)
            raise
        value = self.evaluate(at=at, backend=backend, dtype=dtype)[output]
        evaluations = 2 * (1 if direction is not None else sum(self._sizes(wrt, self.input_shape)))
        check_time = evaluations * gradient.predicted_primal_time(np.dtype(DTYPES[dtype]).itemsize, backend)
        if time_limit is not None and check_time > time_limit:
            check = _hessian_check_skipped(
                dtype, f"not checked: its {evaluations:,} evaluations of the gradient are predicted to take "
                       f"about {duration(check_time)}, over the time limit of {duration(time_limit)}")
        else:
            check = _hessian_check(gradient, result, wrt, at, direction, dtype)
        return Hessian(output, wrt, np.asarray(value), gradient, result, check)

    @staticmethod
    def _spec(names, shape_of) -> list:
        return [(name, shape_of(name)) for name in names]

    def find_nonfinite(self, at=None, dtype="float64", result: Derivative | None = None):
        """Why a result holds nan or infinity, described: the first node whose value,
        or whose local partial with respect to a differentiated operand, is not finite;
        failing that (every local factor finite, their product not: an overflow along
        the chain), the first node whose derivative is not finite as `result`'s sweeps
        reach it. None when nothing is found."""
        loop = self._first_loop()
        if loop is not None:   # the node-by-node search needs the program unrolled
            kept = getattr(getattr(self.graph, "builder", None), "loops", "auto") == "always"
            how = ("run it without --checkpoints, which keeps it a loop (and raise --node-limit if it "
                   "is long), to unroll it and see where" if kept else
                   "raise --node-limit to unroll it and see where")
            return (f"a value or derivative is not finite; the program has a loop (the repeat at line "
                    f"{loop.line}), inside which adcli does not name the node: {how}")
        wrt = result.wrt if result is not None else list(self.graph.inputs)
        outputs = result.outputs if result is not None else list(self.graph.outputs)
        analysis = self._analysis(wrt, outputs)
        values = {}
        with np.errstate(all="ignore"):
            for node in self.host_nodes(at, dtype, values):
                if node.op in ("input", "const"):
                    if not np.all(np.isfinite(values[node.id])):   # e.g. --at x=1e400
                        name = node.attrs.get("name")
                        return (f"{node.op} {name} holds a non-finite value" if name
                                else f"{self.describe_node(node)} holds a non-finite value")
                    continue
                prim = REGISTRY[node.op]
                args = [values[i] for i in node.inputs]
                out = np.asarray(prim.evaluate(np, *args, **node.attrs))
                values[node.id] = out
                where = self.describe_node(node)
                if not np.all(np.isfinite(out)):
                    return f"{where} produced a non-finite value"
                if not analysis.active[node.id]:
                    continue
                r = Residuals(args, out, None, node.attrs, [self.graph.nodes[i].shape for i in node.inputs],
                              node.shape)
                for i, spec in enumerate(prim.partials):
                    # a partial the sweeps never use (x^3: ∂/∂3) cannot spoil the result
                    if spec is not None and analysis.depends[node.inputs[i]]:
                        p = np.asarray(spec.compute(np, r))
                        if not np.all(np.isfinite(p)):
                            return f"{where} has a non-finite local derivative"
            if result is not None:
                node = self._first_nonfinite_derivative(result, at, dtype)
                if node is not None:
                    what, sweep = (("tangent", "forward") if result.mode == "forward"
                                   else ("adjoint", "backward"))
                    return (f"the {what} of {self.describe_node(node)} is not finite, although every "
                            f"local derivative is: their product overflows along the {sweep} sweep")
        return None

    def _first_nonfinite_derivative(self, result: Derivative, at, dtype):
        """Rerun `result`'s sweeps with an observer; the first node (in sweep order)
        whose tangent or adjoint holds nan or infinity."""
        class Found(Exception):
            pass

        def observer(runner, event, node, value, derivative):
            if event not in ("forward", "backward") or not derivative:
                return
            for t in derivative.values():
                if isinstance(t, Scaled):   # its scale holds its values
                    t = t.scale
                elif isinstance(t, ScaledDense):   # its values: the product, not yet made
                    t = t.scale * t.base
                if t is not None and not isinstance(t, Seed) and not bool(runner.xp.isfinite(t).all()):
                    raise Found(node)

        try:
            if result.kind == "jvp":
                self.jvp(result.given, at=at, dtype=dtype, measure_memory=False, observer=observer)
            elif result.kind == "vjp":
                self.vjp(result.given, at=at, wrt=result.wrt, dtype=dtype, measure_memory=False,
                         observer=observer)
            else:
                _, run, _ = self._prepare("numpy", dtype, at)
                run["store"] = lambda *args: None
                shape_of = self.input_shape if result.mode == "forward" else self.output_shape
                sizes = self._sizes(result.wrt if result.mode == "forward" else result.outputs, shape_of)
                self._run(result.mode, result.wrt, result.outputs, result.cost.chunk or sum(sizes), sizes,
                          run, observer=observer)
        except Found as found:
            return found.args[0]
        return None

    def _first_loop(self):
        """The first loop node of the graph (a repeat that stayed a loop), or None."""
        return next((n for n in self.graph.nodes if n.op == "loop"), None)

    def host_nodes(self, at, dtype, values: dict):
        """The graph's nodes in order for a diagnosis that evaluates them one by one on the
        host: inputs and consts are put in `values` (at `at`) as they come, the caller
        evaluates the rest. It stops at a loop: naming one node of one iteration needs
        the program unrolled (the diagnosis then finds nothing)."""
        host = self.resolve_inputs(at)
        changed = self.resolve_consts(at)
        for node in self.graph.nodes:
            if node.op in ("loop", "loop_out"):
                return
            if node.op in ("input", "const"):
                value = host[node.attrs["name"]] if node.op == "input" else self.const_value(node, changed)
                values[node.id] = np.asarray(value, dtype=DTYPES[dtype])
            yield node

    def linear_algebra_problem(self, exc, at=None, dtype="float64") -> AdError:
        """The problem behind a LinAlgError of a run: the first linear algebra node whose
        value, or whose local partial (an inverse), cannot be made at the run's point,
        found by evaluating the graph node by node on the host."""
        loop = self._first_loop()
        if loop is not None:   # the node-by-node search needs the program unrolled
            return self._node_problem(loop, f"a matrix is singular where the program runs ({exc}), inside "
                                            "this loop, where adcli does not name the node; raise "
                                            "--node-limit to unroll it and see where")
        values = {}
        with np.errstate(all="ignore"):
            for node in self.host_nodes(at, dtype, values):
                if node.op in ("input", "const"):
                    continue
                prim = REGISTRY[node.op]
                args = [values[i] for i in node.inputs]
                what = "not positive definite" if node.op == "cholesky" else "singular"
                try:
                    out = np.asarray(prim.evaluate(np, *args, **node.attrs))
                except np.linalg.LinAlgError:
                    return self._node_problem(node, f"{node.op}'s matrix is {what} at this point")
                values[node.id] = out
                r = Residuals(args, out, None, node.attrs, [self.graph.nodes[i].shape for i in node.inputs],
                              node.shape)
                for spec in {id(spec): spec for spec in prim.partials if spec is not None}.values():
                    try:
                        spec.compute(np, r)
                    except np.linalg.LinAlgError:
                        return self._node_problem(node, f"{node.op}'s derivative needs the inverse of its "
                                                        f"matrix, which is singular at this point")
        return ValueProblem(f"a matrix is singular where the program runs ({exc})",
                            hint="keep matrices well conditioned, e.g. add a multiple of eye(n)")

    def _node_location(self, node) -> SourceLocation:
        lines = self.graph.source.splitlines() if self.graph.source else []
        line = lines[node.line - 1] if 0 < node.line <= len(lines) else ""
        return SourceLocation(self.graph.filename, node.line, node.column, line)

    def _longest_loop_location(self) -> SourceLocation | None:
        """Where the repeat that stayed a loop with the most steps is (a time refusal's place)."""
        loops = [n for n in self.graph.nodes if n.op == "loop"]
        return self._node_location(max(loops, key=lambda n: n.attrs["count"])) if loops else None

    def _node_problem(self, node, what: str) -> AdError:
        return ValueProblem(f"{what} (node {node.var})", self._node_location(node),
                            hint="keep matrices well conditioned, e.g. add a multiple of eye(n) "
                                 "(an SPD matrix for cholesky: X @ X.T + eye(n))")

    def describe_node(self, node) -> str:
        place = f"{self.graph.filename}:{node.line}" if node.line else self.graph.filename
        text = f" ({node.text.strip()})" if node.text else ""
        return f"{node.var} = {node.op}{text} at {place}"


# --checkpoints auto looks for S up to this many states per loop: beyond it a step is run
# again at most about twice (10^6 steps at 4,096 states: 1.9·10^6 steps again), and each
# state is a step of a prediction's walk down to the first reversed step.
MAX_AUTO_STATES = 4096


def backend_name(backend) -> str:
    """The name of a backend given by name or as a Backend object."""
    return backend if isinstance(backend, str) else backend.name


def duration(t: float) -> str:
    """Seconds as a person reads them (adcli.decide.seconds)."""
    from .decide import seconds

    return seconds(t)


def _joined(note: str, more: str) -> str:
    """`note`, and `more` after it unless it says it already (auto mode's reason may)."""
    return note if not more or more in note else f"{note}; {more}" if note else more


def _check_checkpoints(checkpoints):
    if checkpoints is None or checkpoints == "auto":
        return
    if isinstance(checkpoints, bool) or not isinstance(checkpoints, int) or checkpoints < 1:
        raise UsageProblem(f"--checkpoints must be a whole number of states of at least 1, or auto; "
                           f"got {checkpoints!r}")


def _locate(spec, index: int) -> tuple:
    """(name, shape, flat position inside it) of element `index` of a row or column spec."""
    for name, shape in spec:
        size = prod(shape)
        if index < size:
            return name, shape, index
        index -= size
    raise IndexError(index)


def _with_last(items):
    """(item, is_last) for each item of an iterable, looking one ahead."""
    iterator = iter(items)
    try:
        current = next(iterator)
    except StopIteration:
        return
    for following in iterator:
        yield current, False
        current = following
    yield current, True


@dataclass(eq=False)
class _Repeat:
    """What a jacobian() call worked out that a repeat call with the same options would work
    out again, to the same end (its decisions, its checks against the memory and time limits,
    the compiled run, the file's consts on the backend, the sweeps' layouts, the prediction):
    a repeat call then converts its inputs, runs the plans and wraps the blocks
    (Program._jacobian_again). Kept per program and options, for NumPy runs without a const
    set (a GPU's free memory moves)."""

    run_key: tuple              # the compiled run's key in Program._compiled
    compiled: CompiledRun
    model_for: object           # adcli.machine.model_for, and the model the prediction priced
    model: object
    be: object
    xp_dtype: object
    consts: list                # the file's consts on the backend, in graph order (the plans' leaves)
    layouts: list               # each sweep's (block, offset, count)s
    block_names: list
    targets: list               # [(name, node)] each sweep hands over (_hand_over)
    directions: dict            # block -> its directions (_JacobianBlocks)
    predicted: dict
    inputs: list                # [(input name, shape)]
    said: tuple                 # what the first result said: mode, mode requested, outputs, wrt, dtype,
                                # notes, row and column specs (not its arrays: they are the caller's)


def _repeat_key(mode, wrt, chunk, backend, dtype, memory_limit, json, checkpoints, time_limit, fold_consts):
    """jacobian()'s options (and Program.fold_consts) as a key of Program._repeats, or None
    (a Backend object, an argument that cannot be hashed: such calls are worked out in full
    every time)."""
    if not isinstance(backend, str):
        return None
    try:
        key = (mode, wrt if wrt is None or isinstance(wrt, str) else tuple(wrt), chunk, backend, dtype,
               memory_limit, bool(json), checkpoints, time_limit, fold_consts)
        hash(key)
    except TypeError:
        return None
    return key


class _JacobianBlocks:
    """jacobian()'s store: each sweep's derivatives written into place (a Seed is made dense
    here), then handed back on the host, a block per output and input (on_host)."""

    __slots__ = ("xp", "dtype", "mode", "directions", "stacked")

    def __init__(self, xp, dtype, mode, directions: dict):
        self.xp, self.dtype, self.mode = xp, dtype, mode
        self.directions = directions   # block (an input, forward mode; an output, reverse) -> its size
        self.stacked = {}   # (output, input) -> derivatives of all directions: (directions,) + node shape

    def store(self, name, block, offset, k, t):
        """Write one sweep's derivatives into place. A block made in one sweep is kept as it
        is (a gradient is the cotangent, no copy); sweeps of a chunked block fill one array
        allocated on first use, so the Jacobian costs its m·n values and nothing per sweep."""
        if t is None:
            return
        dense = Linear(self.xp, k, Counter(), self.dtype).dense(t) if structured(t) else t   # not the run's work
        key = (name, block) if self.mode == "forward" else (block, name)
        total = self.directions[block]
        stacked = self.stacked
        if offset == 0 and k == total:
            stacked[key] = dense
            return
        if key not in stacked:
            stacked[key] = self.xp.zeros((total,) + tuple(dense.shape[1:]), dtype=dense.dtype)
        stacked[key][offset:offset + k] = dense

    def on_host(self, be, outputs, wrt, output_shape, input_shape, host_dtype) -> dict:
        """{output: {input: block shaped output + input}}; zeros where no sweep reached."""
        stacked = self.stacked
        blocks = {}
        for o in outputs:
            oshape = output_shape(o)
            blocks[o] = {}
            for w in wrt:
                ishape = input_shape(w)
                if (o, w) not in stacked:
                    blocks[o][w] = np.zeros(oshape + ishape, dtype=host_dtype)
                    continue
                host = np.asarray(be.to_host(stacked.pop((o, w))))
                if self.mode == "forward":   # directions are the input's elements
                    block = host.reshape(prod(ishape), prod(oshape)).T.reshape(oshape + ishape)
                else:                        # directions are the output's elements
                    block = host.reshape(oshape + ishape)
                blocks[o][w] = block
        return blocks


def _hand_over(store, layout, derivatives: dict, block_names, targets):
    """Give one sweep's derivatives to `store`: for each block the sweep seeded (`layout`:
    (block, offset, count), block None for a given direction or cotangent), the derivative
    of each target [(name, node)] (forward mode: the outputs; reverse: the wrt inputs)."""
    for b, offset, k in layout:
        block = "given" if b is None else block_names[b]
        for name, node_id in targets:
            store(name, block, offset, k, derivatives.get(node_id, {}).get(block))


def _labels(spec) -> list:
    return [label for name, shape in spec
            for label in ([name] if shape is None else element_labels(name, shape))]


def _count(n: int, noun: str) -> str:
    """'1 pass', '2 passes', '1,000 derivative mults'."""
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}{'es' if noun.endswith('s') else 's'}"


def _bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000
    return f"{n} B"


def loads(text: str, filename: str = "<input>", set: dict | None = None,
          node_limit: int = DEFAULT_NODE_LIMIT, max_source_bytes: int | None = MAX_SOURCE_BYTES,
          base_dir=None, loops: str = "auto") -> Program:
    """Build a Program from source text. Text over `max_source_bytes` characters (None:
    no limit), or of more statements than `node_limit`, is refused before it is parsed.
    load("data.npy") in the text reads a relative path from `base_dir` (default: the
    working directory). `loops`: which repeats stay loops in the graph rather than being
    unrolled ("auto": those whose unrolling would pass the node limit; "always": every
    one that can; "never"), see docs/language.md."""
    from .parser import parse, strip_bom

    text = strip_bom(text)
    if max_source_bytes is not None and len(text) > max_source_bytes:
        _too_large(filename, len(text), max_source_bytes)
    t0 = time.perf_counter()
    statements = parse(text, filename, max_statements=node_limit)
    t1 = time.perf_counter()
    graph = Builder(text, filename, set, node_limit, base_dir, loops).build(statements)
    t2 = time.perf_counter()
    return Program(graph, {"parse": t1 - t0, "build": t2 - t1})


def _too_large(filename, size: int, limit: int, more: bool = False):
    raise ResourceProblem(f"{filename} is {'more than ' if more else ''}{_bytes(size)} of source, "
                          f"over the limit of {_bytes(limit)}",
                          hint="raise --max-source-bytes if the file really is that large")


def load(path, set: dict | None = None, node_limit: int = DEFAULT_NODE_LIMIT,
         max_source_bytes: int | None = MAX_SOURCE_BYTES, loops: str = "auto") -> Program:
    """Load a .ad file. `set` overrides dims: load("mlp.ad", set={"n": 200}). A file over
    `max_source_bytes` (default 10 MB; None: no limit) is refused before it is read."""
    try:
        with open(path, encoding="utf-8") as f:
            if max_source_bytes is not None:
                size = os.fstat(f.fileno()).st_size
                if size > max_source_bytes:
                    _too_large(path, size, max_source_bytes)
                text = f.read(max_source_bytes + 1)   # a file that grows while read, or a pipe
                if len(text) > max_source_bytes:
                    _too_large(path, max_source_bytes, max_source_bytes, more=True)
            else:
                text = f.read()
    except FileNotFoundError:
        raise UsageProblem(f"no such file: {path}") from None
    except IsADirectoryError:
        raise UsageProblem(f"{path} is a directory, not an .ad file") from None
    except UnicodeDecodeError:
        raise UsageProblem(f"{path} is not a UTF-8 text file") from None
    except OSError as exc:
        raise UsageProblem(f"cannot read {path}: {exc.strerror}") from None
    # load("data.npy") in the file reads relative paths from the file's own directory
    return loads(text, str(path), set, node_limit, max_source_bytes,
                 base_dir=os.path.dirname(os.path.abspath(path)), loops=loops)
