"""Evaluation traces: the table a course draws, for the user's own function.

``forward_trace`` runs one ``Program.jvp`` per seed direction and
``reverse_trace`` one ``Program.vjp``, each with an observer on the
interpreter (adcli.interpret.Runner.observer), so every row's primal value,
tangent or adjoint, and mults and flops come from the real sweep and its
counters: the rows add up to the cost panel of ``adcli grad --direction`` or
``--cotangent`` with the same direction or cotangent.

Rows are plain dicts (``Trace.to_json`` makes them JSON); adcli.render_trace
draws them.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from .errors import UsageProblem
from .interpret import Cost
from .ops import REGISTRY, Residuals
from .show import cache_plan, expression, fmt_number, index_array_text, partial_text

# Ops whose derivative is linear in the tangent with no local partial of its own.
LINEAR_REDUCTIONS = ("sum", "mean")
WEIGHTED_REDUCTIONS = ("max", "min", "prod", "logsumexp", "norm")
BROADCASTING = ("add", "sub", "mul", "div", "pow", "maximum", "minimum")
SUBSCRIPTS = str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉")


def dot_var(var: str) -> str:
    """v3 -> v̇3 (a tangent)."""
    return "v\u0307" + var[1:]


def bar_var(var: str) -> str:
    """v3 -> v̄3 (an adjoint)."""
    return "v\u0304" + var[1:]


def epsilon(k: int, count: int) -> str:
    """ε for one direction; ε₁, ε₂, ... for several."""
    return "ε" if count == 1 else "ε" + str(k + 1).translate(SUBSCRIPTS)


# -- seeds --------------------------------------------------------------------------------------

_SEED = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:\[([^\]]*)\])?\s*")


def parse_seed(program, text: str) -> tuple[str, dict]:
    """'x1' (1 on every element of input x1), 'x[2]' or 'W[1,0]' (one element): (label, direction)."""
    match = _SEED.fullmatch(text)
    if not match:
        raise UsageProblem(f"--seed {text!r} is not an input name such as x1, x[2] or W[1,0]")
    name, index = match.group(1), match.group(2)
    if name not in program.graph.inputs:
        known = ", ".join(program.graph.inputs) or "none"
        raise UsageProblem(f"--seed {text}: there is no input named '{name}' (inputs: {known})")
    shape = program.input_shape(name)
    if index is None:
        return name, {name: np.ones(shape)}
    try:
        position = tuple(int(part) for part in index.split(","))
    except ValueError:
        raise UsageProblem(f"--seed {text}: an element is given by whole numbers, e.g. {name}[0]") from None
    if len(position) != len(shape):
        raise UsageProblem(f"--seed {text}: {name} has {len(shape)} ax{'i' if len(shape) == 1 else 'e'}s, "
                           f"so it takes {len(shape)} ind{'ex' if len(shape) == 1 else 'ices'}"
                           if shape else f"--seed {text}: {name} is a scalar; write --seed {name}")
    for p, d in zip(position, shape):
        if not -d <= p < d:
            raise UsageProblem(f"--seed {text}: index {p} is out of range for an axis of length {d}")
    direction = np.zeros(shape)
    direction[position] = 1.0
    normal = tuple(p % d for p, d in zip(position, shape))
    return f"{name}[{','.join(map(str, normal))}]", {name: direction}


# -- the trace ---------------------------------------------------------------------------------------

@dataclass
class Trace:
    mode: str                     # "forward" or "reverse"
    file: str
    rows: list                    # dicts, in the order they are shown
    cost: Cost                    # the counts of the run(s): what `adcli grad` would report
    inputs: dict                  # input name -> host value used
    seeds: list = field(default_factory=list)        # forward: [{"label", "direction"}]
    cotangent: dict | None = None                     # reverse: output -> array
    cotangent_note: str = ""
    dual: bool = False
    results: dict = field(default_factory=dict)      # forward: output -> [J·v per seed]; reverse: input -> uᵀJ
    wrt: list = field(default_factory=list)
    extra: dict = field(default_factory=lambda: {"mults": [0, 0], "flops": [0, 0]})
    # forward: what `adcli grad --mode forward --wrt <the seeded inputs>` counts (identity seeds)
    jacobian_cost: dict | None = None

    def row(self, var: str) -> dict:
        for row in self.rows:
            if row["var"] == var:
                return row
        known = f"v1 … v{len(self.rows)}" if self.rows else "none"
        raise UsageProblem(f"--node {var}: there is no node named '{var}' (nodes: {known})")

    def totals(self) -> dict:
        """Sums of the rows' mults and flops: equal to the cost's."""
        total = {"mults": {"primal": 0, "derivative": 0}, "flops": {"primal": 0, "derivative": 0}}
        for row in self.rows:
            for what in ("mults", "flops"):
                for part in ("primal", "derivative"):
                    total[what][part] += row[what][part]
        for what in ("mults", "flops"):
            total[what]["primal"] += self.extra[what][0]
            total[what]["derivative"] += self.extra[what][1]
        return total

    def cached_marks(self) -> tuple[int, int]:
        """(kept intermediates and partials, inputs/consts read) summed over the marked rows."""
        values = inputs = 0
        for row in self.rows:
            cached = row.get("cached")
            if not cached:
                continue
            if cached["value"] == "intermediate":
                values += row["size"]
            elif cached["value"] == "input":
                inputs += row["size"]
            values += sum(p["size"] for p in cached["partials"])
        return values, inputs

    def nonfinite(self) -> str | None:
        """Where the first nan or infinity of the trace is ('v3 = log (log(x)) at f.ad:2 produced
        a non-finite value'): values, local derivatives and tangents in evaluation order, then
        adjoints in the backward sweep's; None when every number is finite."""
        def bad(value) -> bool:
            if value is None or isinstance(value, str):
                return False
            try:
                return not bool(np.all(np.isfinite(np.asarray(value, dtype=np.float64))))
            except (TypeError, ValueError):
                return False

        def where(row, what):
            source = f" ({row['source']})" if row.get("source") else ""
            place = f"{self.file}:{row['line']}" if row.get("line") else self.file
            return f"{row['var']} = {row['op']}{source} at {place} {what}"

        in_evaluation_order = sorted(self.rows, key=lambda row: int(row["var"][1:]))
        for row in in_evaluation_order:
            if bad(row.get("value")):
                return where(row, "produced a non-finite value")
            if any(bad(p.get("value")) for p in row.get("partials") or () if p.get("used", True)):
                return where(row, "has a non-finite local derivative")
            if any(bad(t) for t in row.get("tangents") or ()):
                return where(row, "has a non-finite tangent")
        for row in self.rows:   # reverse mode: in the order the backward sweep fills them
            if bad(row.get("adjoint")):
                return where(row, "has a non-finite adjoint")
        given = [v for s in self.seeds for v in s["direction"].values()] + list((self.cotangent or {}).values())
        if any(bad(v) for v in given):
            return "the given direction or cotangent holds a non-finite value"
        return None

    def to_json(self, node: str | None = None) -> dict:
        from .report import jsonable

        def conv(value):
            if value is None:
                return None
            if isinstance(value, np.ndarray) or isinstance(value, np.generic):
                return jsonable(value)
            return value

        rows = [self.row(node)] if node else self.rows
        out_rows = []
        for row in rows:
            data = {}
            for key, value in row.items():
                if key in ("value", "adjoint"):
                    data[key] = conv(value)
                elif key == "tangents":
                    data[key] = [conv(t) for t in value]
                elif key == "partials":
                    data[key] = [dict(p, value=conv(p["value"])) for p in value]
                else:
                    data[key] = value
            out_rows.append(data)
        data = {"kind": "trace", "mode": self.mode, "file": self.file, "dual": self.dual}
        if self.mode == "forward":
            data["seeds"] = [{"label": s["label"],
                              "direction": {k: jsonable(v) for k, v in s["direction"].items()}}
                             for s in self.seeds]
            data["tangent"] = {name: [conv(t) for t in ts] for name, ts in self.results.items()}
        else:
            data["cotangent"] = {k: jsonable(v) for k, v in self.cotangent.items()}
            data["cotangent_note"] = self.cotangent_note or None
            data["wrt"] = list(self.wrt)
            data["gradient"] = {name: conv(v) for name, v in self.results.items()}
        data["inputs"] = {k: jsonable(v) for k, v in self.inputs.items()}
        if self.mode == "forward":
            data["jacobian_cost"] = self.jacobian_cost
        data["rows"] = out_rows
        data["totals"] = self.totals()
        data["cost"] = self.cost.to_json()
        if self.mode == "reverse":
            data["cached"] = dict(zip(("values", "inputs"), self.cached_marks()))
        return data


# -- observers -----------------------------------------------------------------------------------------

def _host(runner, value):
    if value is None:
        return None
    asnumpy = getattr(runner.xp, "asnumpy", None)
    return np.array(asnumpy(value) if asnumpy is not None else value)


def _first(runner, blocks):
    """The one direction's derivative of a node, dense on the host, or None (a zero)."""
    every = _directions(runner, blocks)
    return None if every is None else every[0]


def _directions(runner, blocks):
    """Every direction's derivative of a node, dense on the host ((k,) + shape), or None."""
    if not blocks:
        return None
    t = blocks.get("given")
    if t is None:
        return None
    from .tangents import Counter, Linear, Seed

    if isinstance(t, Seed):   # made dense for display: a scratch counter, not the run's
        t = Linear(runner.xp, t.k, Counter(), runner.dtype).dense(t)
    return _host(runner, t)


def _counters(runner):
    return (runner.primal.mults, runner.primal.flops, runner.derivative.mults, runner.derivative.flops)


def _delta(now, before):
    return tuple(a - b for a, b in zip(now, before))


class _ForwardRecorder:
    def __init__(self):
        self.values, self.tangents, self.work = {}, {}, {}
        self.last = (0, 0, 0, 0)

    def __call__(self, runner, event, node, value, derivative):
        if event != "forward":
            return
        now = _counters(runner)
        self.work[node.id] = _delta(now, self.last)
        self.last = now
        self.values[node.id] = _host(runner, value)
        self.tangents[node.id] = _directions(runner, derivative)


class _ReverseRecorder:
    def __init__(self):
        self.values, self.adjoints, self.forward_work, self.backward_work = {}, {}, {}, {}
        self.order = []
        self.last = (0, 0, 0, 0)
        self.current = None        # the node whose VJP the counters are now running
        self.unattributed = (0, 0, 0, 0)

    def _settle(self, runner):
        now = _counters(runner)
        delta = _delta(now, self.last)
        self.last = now
        if self.current is None:
            self.unattributed = tuple(a + b for a, b in zip(self.unattributed, delta))
        else:
            self.backward_work[self.current] = delta

    def __call__(self, runner, event, node, value, derivative):
        if event == "reverse-forward":
            now = _counters(runner)
            self.forward_work[node.id] = _delta(now, self.last)
            self.last = now
            self.values[node.id] = _host(runner, value)
        elif event == "backward":
            self._settle(runner)
            self.current = node.id
            self.order.append(node.id)
            self.adjoints[node.id] = _first(runner, derivative)
        elif event == "backward-end":
            self._settle(runner)
            self.current = None


# -- row text --------------------------------------------------------------------------------------------

def _enclosed(text: str) -> bool:
    """'(1+v3)' is one parenthesised group; '(a)+(b)' is not."""
    if not (text.startswith("(") and text.endswith(")")):
        return False
    depth = 0
    for n, ch in enumerate(text):
        depth += ch == "("
        depth -= ch == ")"
        if depth == 0 and n < len(text) - 1:
            return False
    return True


def _wrap(text: str) -> str:
    """Parenthesise a factor that is more than one term (a sum, a difference, words)."""
    if _enclosed(text) or not re.search(r"[\s+\-]", text[1:]):
        return text
    return f"({text})"


def _join(terms: list) -> str:
    text = ""
    for term in terms:
        if not text:
            text = term
        elif term.startswith("-"):
            text += " - " + term[1:]
        else:
            text += " + " + term
    return text


def tangent_text(graph, node, active: list) -> str:
    """How the tangent is formed from the inputs' tangents: 'v̇1·v2 + v1·v̇2', 'cos(v1)·v̇1'."""
    op = node.op
    prim = REGISTRY.get(op)
    if prim is not None and prim.movement:
        ids = {node.inputs[i] for i in active}
        return expression(graph, node, lambda j: dot_var(graph.nodes[j].var) if j in ids else "0")
    terms = []
    for i in active:
        src = graph.nodes[node.inputs[i]]
        d = dot_var(src.var)
        other = graph.nodes[node.inputs[1 - i]].var if len(node.inputs) == 2 else ""
        if op in ("add",):
            terms.append(d)
        elif op == "sub":
            terms.append(d if i == 0 else "-" + d)
        elif op == "neg":
            terms.append("-" + d)
        elif op == "mul":
            terms.append(f"{d}·{other}" if i == 0 else f"{other}·{d}")
        elif op == "matmul":
            terms.append(f"{d} @ {other}" if i == 0 else f"{other} @ {d}")
        elif op in LINEAR_REDUCTIONS or op == "scatter_add":
            terms.append(expression(graph, node, lambda j: d))
        else:
            p = partial_text(graph, node, i)
            if op in WEIGHTED_REDUCTIONS:
                terms.append(f"sum({_wrap(p)}·{d})")
            elif p == "1":
                terms.append(d)
            elif p == "-1":
                terms.append("-" + d)
            elif p.startswith("1/"):
                terms.append(f"{d}/{_wrap(p[2:])}")
            elif p.startswith("-"):
                terms.append(f"-{_wrap(p[1:])}·{d}")
            else:
                terms.append(f"{_wrap(p)}·{d}")
    return _join(terms)


def adjoint_term(graph, consumer, i) -> str:
    """One consumer's contribution to an input's adjoint: 'v̄3·v2', 'v̄4·cos(v1)', '-v̄5', 'v9ᵀ·v̄10'."""
    op = consumer.op
    b = bar_var(consumer.var)
    src = graph.nodes[consumer.inputs[i]]
    prim = REGISTRY.get(op)
    if prim is not None and prim.movement:
        if op == "index":
            return f"scatter({b}, [{expression(graph, consumer).split('[', 1)[1]})"
        if op == "gather":   # repeated indices add
            return f"scatter_add({b}, [{expression(graph, consumer).split('[', 1)[1]})"
        if op == "transpose":
            return f"{b}ᵀ"
        if op == "reshape":
            return f"reshape({b}, {', '.join(map(str, src.shape)) or '()'})"
        if op == "stack":
            return f"{b}[{i}]"
        if op == "concat":
            lo = sum(graph.nodes[j].shape[0] for j in consumer.inputs[:i])
            return f"{b}[{lo}:{lo + src.shape[0]}]"
        return f"{op}ᵀ({b})"
    if op == "matmul":
        a, c = (graph.nodes[j].var for j in consumer.inputs)
        return f"{b}·{c}ᵀ" if i == 0 else f"{a}ᵀ·{b}"
    if op == "scatter_add":   # the transpose of a scatter-add: the gather by its targets
        return f"{b}[{index_array_text(consumer.attrs['targets'])}]"
    if op == "sum":
        term = b
    else:
        p = partial_text(graph, consumer, i)
        if p == "1":
            term = b
        elif p == "-1":
            term = "-" + b
        elif p.startswith("1/"):
            term = f"{b}/{_wrap(p[2:])}"
        elif p.startswith("-"):
            term = f"-{b}·{_wrap(p[1:])}"
        else:
            term = f"{b}·{_wrap(p)}"
    if op in BROADCASTING and src.shape != consumer.shape:
        negative = term.startswith("-")
        term = ("-" if negative else "") + f"Σ({term[1:] if negative else term})"
    return term


def _scalar_partial(graph, node, i, values):
    """∂node/∂input i as a number, for a scalar node of a scalar input, else None."""
    prim = REGISTRY.get(node.op)
    src = graph.nodes[node.inputs[i]]
    if prim is None or prim.movement or i >= len(prim.jvp) or node.shape != () or src.shape != ():
        return None
    from .tangents import Counter, Linear

    args = [np.asarray(values[j], dtype=np.float64) for j in node.inputs]
    out = np.asarray(values[node.id], dtype=np.float64)
    in_shapes = [graph.nodes[j].shape for j in node.inputs]
    r = Residuals(args, out, None, node.attrs, in_shapes, node.shape)
    spec = prim.partial_for(i)
    if spec is not None:
        r.p = spec.compute(np, r)
    with np.errstate(all="ignore"):
        result = prim.jvp[i](Linear(np, 1, Counter(), np.float64), r, np.ones((1,)))
    if result is None:   # a symbolic zero: a mask, sign, heaviside, where's condition
        return 0.0
    return float(np.asarray(result).reshape(-1)[0])


def _array_partial(graph, node, i, values, text):
    """The local partial as an array where the op computes one, or where it is an operand itself."""
    prim = REGISTRY.get(node.op)
    if prim is None or prim.movement:
        return None
    spec = prim.partial_for(i)
    if spec is not None:
        args = [values[j] for j in node.inputs]
        r = Residuals(args, values[node.id], None, node.attrs, [graph.nodes[j].shape for j in node.inputs],
                      node.shape)
        with np.errstate(all="ignore"):
            return np.asarray(spec.compute(np, r))
    for j in list(node.inputs) + [node.id]:
        if graph.nodes[j].var == text:
            return values[j]
    return None


def _base_row(graph, node, value) -> dict:
    return {"var": node.var, "op": node.op, "expression": expression(graph, node),
            "source": node.text.strip(), "line": node.line, "shape": list(node.shape),
            "size": node.size, "value": value}


def _work(fwd, bwd=(0, 0, 0, 0)) -> dict:
    return {"mults": {"primal": fwd[0] + bwd[0], "derivative": fwd[2] + bwd[2]},
            "flops": {"primal": fwd[1] + bwd[1], "derivative": fwd[3] + bwd[3]}}


def vector_jvp(program, directions: list, at=None, backend="numpy", dtype="float64", observer=None):
    """J·v for every direction in one forward sweep (vector forward mode): f is evaluated
    once and every tangent carries k = len(directions) components. One direction is
    exactly `Program.jvp` (the counts of `adcli grad --direction`). Several: each input
    named by some direction gets one dense (k,) + shape block (zero where a direction
    does not name it), so its zero entries are multiplied too, as a dense vector-mode
    implementation does; an input no direction names carries no tangent at all.
    Returns (cost, {output: [J·v per direction]}, inputs used)."""
    from .errors import ValueProblem
    from .ir import format_shape

    graph = program.graph
    if len(directions) == 1:
        result = program.jvp(directions[0], at=at, backend=backend, dtype=dtype, measure_memory=False,
                             observer=observer)
        return result.cost, {name: [result.tangent[name]] for name in graph.outputs}, result.inputs
    k = len(directions)
    names = [n for n in graph.inputs if any(n in d for d in directions)]
    blocks = {}
    for name in names:
        shape = program.input_shape(name)
        rows = []
        for d in directions:
            value = np.asarray(d.get(name, 0.0), dtype=np.float64)
            try:
                rows.append(np.broadcast_to(value, shape))
            except ValueError:
                raise ValueProblem(f"the direction for {name} is {format_shape(value.shape)}, but {name} "
                                   f"is {format_shape(shape)}") from None
        blocks[name] = np.stack(rows)
    be, run, host_inputs = program._prepare(backend, dtype, at)
    seeds = {name: be.asarray(block, run["dtype"]) for name, block in blocks.items()}
    collected = {}

    def store(name, block, offset, count, t):
        if t is not None:
            collected[name] = t

    run["store"] = store
    outputs = list(graph.outputs)
    cost = program._measured(be, False, False,
                             lambda r, obs: program._run("forward", names, outputs, k, [k], r, single=True,
                                                         seeds_single=seeds, observer=obs),
                             run, observer)
    tangents = {}
    for name in outputs:
        shape = program.output_shape(name)
        t = collected.get(name)
        host = np.zeros((k,) + tuple(shape)) if t is None else np.asarray(be.to_host(t)).reshape((k,) + tuple(shape))
        tangents[name] = [host[i] for i in range(k)]
    return cost, tangents, host_inputs


def _varying(graph) -> list:
    """Per node: whether it depends on an input (its partials can matter; a const's never do)."""
    varying = [False] * len(graph.nodes)
    for node in graph.nodes:
        prim = REGISTRY.get(node.op)   # a mask's value varies, but its derivative is zero
        varying[node.id] = node.op == "input" or (
            (prim is None or prim.differentiable) and any(varying[i] for i in node.inputs))
    return varying


# -- building traces -----------------------------------------------------------------------------------

def forward_trace(program, seeds: list, at=None, backend="numpy", dtype="float64",
                  dual: bool = False) -> Trace:
    """Forward mode with seeds = [(label, {input: direction array})]: one forward sweep
    carrying every direction (vector forward mode: f evaluated once)."""
    graph = program.graph
    recorder = _ForwardRecorder()
    cost, outputs, inputs = vector_jvp(program, [d for _, d in seeds], at=at, backend=backend,
                                       dtype=dtype, observer=recorder)
    k = len(seeds)
    values = recorder.values
    varying = _varying(graph)

    def tangents_of(node_id):
        t = recorder.tangents.get(node_id)
        return [None] * k if t is None else [t[i] for i in range(k)]

    rows = []
    for node in graph.nodes:
        row = _base_row(graph, node, values[node.id])
        tangents = tangents_of(node.id)
        row["tangents"] = tangents
        carrying = [i for i, j in enumerate(node.inputs) if recorder.tangents.get(j) is not None]
        partials = []
        for i, j in enumerate(node.inputs):
            if not varying[j]:
                continue   # a const's partial is never needed
            text = partial_text(graph, node, i)
            value = _scalar_partial(graph, node, i, values)
            if value is None and node.size > 0:
                value = _array_partial(graph, node, i, values, text)
            partials.append({"wrt": graph.nodes[j].var, "text": text, "value": value,
                             "used": i in carrying})
        row["partials"] = partials
        if node.op == "input":
            row["tangent_text"] = "seed" if any(t is not None for t in tangents) else ""
        else:
            row["tangent_text"] = tangent_text(graph, node, carrying) if carrying else ""
        row.update(_work(recorder.work.get(node.id, (0, 0, 0, 0))))
        if dual:
            row["dual"] = dual_text(row["value"], tangents)
        rows.append(row)
    trace = Trace("forward", graph.filename, rows, cost, inputs,
                  seeds=[{"label": label, "direction": d} for label, d in seeds],
                  dual=dual, results=outputs, wrt=[])
    trace.jacobian_cost = jacobian_cost(program, [d for _, d in seeds])
    return trace


def jacobian_cost(program, directions: list) -> dict:
    """The counts of `adcli grad --mode forward --wrt <the inputs the directions name>`, from
    the graph: its Jacobian seeds identity columns (Seeds), whose products are free, where a
    traced direction is a dense array multiplied like any tangent."""
    wrt = [n for n in program.graph.inputs if any(n in d for d in directions)]
    cost = program.predict("forward", wrt)
    return {"wrt": wrt, "passes": cost.passes,
            "mults": {"primal": cost.mults_primal, "derivative": cost.mults_derivative},
            "flops": {"primal": cost.flops_primal, "derivative": cost.flops_derivative}}


def reverse_trace(program, cotangent: dict | None = None, at=None, wrt=None, backend="numpy",
                  dtype="float64") -> Trace:
    """One reverse pass; cotangent = {output: array}, default 1 on every element of every
    output (the gradient of the sum of the outputs)."""
    graph = program.graph
    note = ""
    if cotangent is None:
        cotangent = {name: np.ones(program.output_shape(name)) for name in graph.outputs}
        note = ("1 on every element of every output: the gradient of the sum of the outputs"
                if len(graph.outputs) > 1 or any(program.output_shape(n) for n in graph.outputs)
                else "1: the gradient of the output")
    recorder = _ReverseRecorder()
    result = program.vjp(cotangent, at=at, wrt=wrt, backend=backend, dtype=dtype,
                         measure_memory=False, observer=recorder)
    outputs = [n for n in graph.outputs if n in cotangent]
    cache = cache_plan(graph, list(result.wrt), outputs)
    plan, info = cache["plan"], cache["nodes"]
    seeded = {graph.outputs[n] for n in outputs}
    terms: dict = {}
    for node in graph.nodes:   # consumers in evaluation order: v̄3·v2 before v̄4·cos(v1)
        if node.id not in plan or recorder.adjoints.get(node.id) is None:
            continue
        for i, _ in plan[node.id]:
            terms.setdefault(node.inputs[i], []).append(adjoint_term(graph, node, i))
    needed = set(plan)
    for j, entries in plan.items():
        needed.update(graph.nodes[j].inputs[i] for i, _ in entries)
    rows = []
    for node_id in recorder.order:
        node = graph.nodes[node_id]
        row = _base_row(graph, node, recorder.values.get(node_id))
        adjoint = recorder.adjoints.get(node_id)
        row["adjoint"] = adjoint
        parts = (["seed"] if node_id in seeded else []) + terms.get(node_id, [])
        row["adjoint_text"] = _join(parts)
        row["needed"] = node_id in needed or node_id in seeded
        entry = info[node_id]
        row["cached"] = {"value": entry["value"],
                         "partials": [{"wrt": graph.nodes[node.inputs[i]].var, "text": text, "size": size}
                                      for i, text, size in entry["partials"]]}
        row.update(_work(recorder.forward_work.get(node_id, (0, 0, 0, 0)),
                         recorder.backward_work.get(node_id, (0, 0, 0, 0))))
        rows.append(row)
    gradient = {name: result.cotangent[name] for name in result.wrt}
    trace = Trace("reverse", graph.filename, rows, result.cost, result.inputs,
                  cotangent={k: np.asarray(v, dtype=np.float64) for k, v in cotangent.items()},
                  cotangent_note=note, results=gradient, wrt=list(result.wrt))
    u = recorder.unattributed
    trace.extra = {"mults": [u[0], u[2]], "flops": [u[1], u[3]]}
    return trace


# -- dual numbers ------------------------------------------------------------------------------------------

def _dual_scalar(a, coefficients: list) -> str:
    text = fmt_number(a)
    count = len(coefficients)
    for k, c in enumerate(coefficients):
        if c is None or c == 0:
            continue
        eps = epsilon(k, count)
        magnitude = fmt_number(abs(c))
        term = eps if magnitude == "1" else f"{magnitude}{eps}"
        text += (" - " if c < 0 else " + ") + term
    return text


def dual_text(value, tangents: list):
    """'8 + 12ε' for a scalar; nested lists of such strings for an array."""
    value = np.asarray(value, dtype=np.float64)
    ts = [None if t is None else np.asarray(t, dtype=np.float64) for t in tangents]
    if value.ndim == 0:
        return _dual_scalar(float(value), [None if t is None else float(t) for t in ts])
    flat = [
        _dual_scalar(float(v), [None if t is None else float(t.reshape(-1)[n]) for t in ts])
        for n, v in enumerate(value.reshape(-1))
    ]
    return np.array(flat, dtype=object).reshape(value.shape).tolist()
