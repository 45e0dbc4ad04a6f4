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
from .show import cache_plan, expression, plan_marks, fmt_number, index_array_text, partial_text

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

def row_name(row) -> str:
    """A row's name for --node: its var, and for a loop body's row the iteration: v3.2@1."""
    return f"{row['var']}@{row['iteration']}" if "iteration" in row else row["var"]


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
    # the rows in evaluation order (reverse mode's values table); None: `rows` are
    evaluation: list | None = None

    def in_evaluation_order(self) -> list:
        return self.rows if self.evaluation is None else self.evaluation

    def row(self, var: str) -> dict:
        """A row by its var (v7), or a loop body's by var and iteration (v3.2@1)."""
        for row in self.rows:
            if row.get("kind") is None and row_name(row) == var:
                return row
        named = [row for row in self.rows if row["var"] == var and "iteration" in row]
        if named:
            shown = " or ".join(row_name(r) for r in named)
            raise UsageProblem(f"--node {var}: {var} is in the body of loop {named[0]['loop']}, shown in "
                               f"more than one iteration; name one: {shown}")
        outer = [row["var"] for row in self.rows if row.get("kind") is None and "iteration" not in row]
        known = f"{outer[0]} … {outer[-1]}" if outer else "none"
        if len(outer) < len(self.rows):
            known += ", and a loop body's as v3.2@1 (the iteration as shown)"
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
            values += cached.get("values", 0)   # a loop's iterations not shown, in one row
            inputs += cached.get("inputs", 0)
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
            if row.get("kind") == "iterations":   # (checked by the rows shown only)
                return f"{row['expression']} at {place} {what}"
            return f"{row_name(row)} = {row['op']}{source} at {place} {what}"

        for row in self.in_evaluation_order():
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
    from .tangents import Counter, Linear, ScaledDense, structured

    if structured(t) or isinstance(t, ScaledDense):   # made dense for display: a scratch counter, not the run's
        t = Linear(runner.xp, t.k, Counter(), runner.dtype).dense(t)
    return _host(runner, t)


def _counters(runner):
    return (runner.primal.mults, runner.primal.flops, runner.derivative.mults, runner.derivative.flops)


def _delta(now, before):
    return tuple(a - b for a, b in zip(now, before))


def _plus(a, b):
    return b if a is None else tuple(x + y for x, y in zip(a, b))


def _where(runner):
    """Where a runner's sweep is: (scope, middle). The scope is ((loop node id, iteration), ...)
    from the outer graph in; middle is (scope, loop node id) when some loop on the way runs
    an iteration between its first and its last (whose rows are summed, not kept), else None."""
    path = []
    while runner.loop is not None:
        path.append((runner.loop.id, runner.iteration, runner.loop.attrs["count"]))
        runner = runner.parent
    scope = []
    for loop_id, iteration, count in reversed(path):
        if 0 < iteration < count - 1:
            return tuple(scope), (tuple(scope), loop_id)
        scope.append((loop_id, iteration))
    return tuple(scope), None


class _Order(list):
    """Row keys in the order they are met: ("row", (scope, node id)), ("middle", key) once
    per loop; a loop's own row comes before its first iteration's."""

    def __init__(self):
        super().__init__()
        self.seen = set()

    def note(self, entry):
        if entry not in self.seen:
            self.seen.add(entry)
            self.append(entry)

    def scope(self, scope):
        for n in range(len(scope)):
            self.note(("row", (scope[:n], scope[n][0])))


class _ForwardRecorder:
    into_loops = True   # called from inside loop bodies too (Runner._child)

    def __init__(self):
        self.values, self.tangents, self.work = {}, {}, {}   # by (scope, node id)
        self.middle = {}   # (scope, loop id) -> the work of the iterations between first and last
        self.order = _Order()
        self.last = (0, 0, 0, 0)

    def __call__(self, runner, event, node, value, derivative):
        if event != "forward":
            return
        now = _counters(runner)
        delta = _delta(now, self.last)
        self.last = now
        scope, middle = _where(runner)
        if middle is not None:
            self.order.scope(middle[0] + ((middle[1], 0),))
            self.order.note(("middle", middle))
            self.middle[middle] = _plus(self.middle.get(middle), delta)
            return
        key = (scope, node.id)
        self.order.scope(scope)
        self.order.note(("row", key))
        self.work[key] = delta
        self.values[key] = _host(runner, value)
        self.tangents[key] = _directions(runner, derivative)


class _ReverseRecorder:
    into_loops = True   # called from inside loop bodies too (Runner._child)

    def __init__(self):
        self.values, self.adjoints, self.forward_work, self.backward_work = {}, {}, {}, {}
        self.middle = {}   # (scope, loop id) -> [forward work, backward work]
        self.order = _Order()           # the backward sweep's
        self.forward_order = _Order()   # the forward sweep's (evaluation order)
        self.last = (0, 0, 0, 0)
        self.current = None        # the row (or middle) whose VJP the counters are now running
        self.unattributed = (0, 0, 0, 0)

    def _settle(self, runner):
        now = _counters(runner)
        delta = _delta(now, self.last)
        self.last = now
        if self.current is None:
            self.unattributed = _plus(self.unattributed, delta)
        elif self.current[0] == "middle":
            work = self.middle.setdefault(self.current[1], [(0, 0, 0, 0), (0, 0, 0, 0)])
            work[1] = _plus(work[1], delta)
        else:
            self.backward_work[self.current[1]] = _plus(self.backward_work.get(self.current[1]), delta)

    def __call__(self, runner, event, node, value, derivative):
        if event == "reverse-forward":
            now = _counters(runner)
            delta = _delta(now, self.last)
            self.last = now
            scope, middle = _where(runner)
            if middle is not None:
                self.forward_order.scope(middle[0] + ((middle[1], 0),))
                self.forward_order.note(("middle", middle))
                work = self.middle.setdefault(middle, [(0, 0, 0, 0), (0, 0, 0, 0)])
                work[0] = _plus(work[0], delta)
                return
            key = (scope, node.id)
            self.forward_work[key] = _plus(self.forward_work.get(key), delta)
            if value is None and node.op != "loop":   # a body node this iteration does not compute
                return
            self.forward_order.scope(scope)
            self.forward_order.note(("row", key))
            self.values[key] = _host(runner, value)
        elif event == "backward":
            self._settle(runner)
            scope, middle = _where(runner)
            if middle is not None:
                self.current = ("middle", middle)
                self.order.note(self.current)
                return
            key = (scope, node.id)
            self.current = ("row", key)
            self.order.note(self.current)
            self.adjoints[key] = _first(runner, derivative)
        elif event == "backward-end":
            self._settle(runner)
            if runner.loop is None:
                self.current = None
                return
            # what the loop does after a body's sweep (sums into its inputs' adjoints): its row's
            scope, middle = _where(runner)
            self.current = ("middle", middle) if middle is not None else \
                ("row", (scope[:-1], runner.loop.id))


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


def tangent_text(graph, node, active: list, name=None) -> str:
    """How the tangent is formed from the inputs' tangents: 'v̇1·v2 + v1·v̇2', 'cos(v1)·v̇1'.
    `name(i)` names node i (default its var; a loop body's rows: v3.2)."""
    name = name or (lambda j: graph.nodes[j].var)
    op = node.op
    prim = REGISTRY.get(op)
    if prim is not None and prim.movement:
        ids = {node.inputs[i] for i in active}
        return expression(graph, node, lambda j: dot_var(name(j)) if j in ids else "0")
    terms = []
    for i in active:
        d = dot_var(name(node.inputs[i]))
        other = name(node.inputs[1 - i]) if len(node.inputs) == 2 else ""
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
            p = partial_text(graph, node, i, name)
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


def adjoint_term(graph, consumer, i, name=None) -> str:
    """One consumer's contribution to an input's adjoint: 'v̄3·v2', 'v̄4·cos(v1)', '-v̄5', 'v9ᵀ·v̄10'."""
    name = name or (lambda j: graph.nodes[j].var)
    op = consumer.op
    b = bar_var(name(consumer.id))
    src = graph.nodes[consumer.inputs[i]]
    prim = REGISTRY.get(op)
    if prim is not None and prim.movement:
        if op == "index":
            return f"scatter({b}, [{expression(graph, consumer, name).split('[', 1)[1]})"
        if op == "gather":   # repeated indices add
            return f"scatter_add({b}, [{expression(graph, consumer, name).split('[', 1)[1]})"
        if op == "transpose":
            axes = consumer.attrs.get("axes")
            if axes is None:
                return f"{b}ᵀ"
            back = sorted(range(len(axes)), key=lambda a: axes[a])   # the inverse permutation
            return f"transpose({b}, [{', '.join(map(str, back))}])"
        if op == "reshape":
            return f"reshape({b}, {', '.join(map(str, src.shape)) or '()'})"
        if op == "stack":
            return f"{b}[{i}]"
        if op == "concat":
            lo = sum(graph.nodes[j].shape[0] for j in consumer.inputs[:i])
            return f"{b}[{lo}:{lo + src.shape[0]}]"
        return f"{op}ᵀ({b})"
    if op == "matmul":
        a, c = (name(j) for j in consumer.inputs)
        return f"{b}·{c}ᵀ" if i == 0 else f"{a}ᵀ·{b}"
    if op == "scatter_add":   # the transpose of a scatter-add: the gather by its targets
        return f"{b}[{index_array_text(consumer.attrs['targets'])}]"
    if op == "sum":
        term = b
    else:
        p = partial_text(graph, consumer, i, name)
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


def _array_partial(graph, node, i, values, text, name=None):
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
    name = name or (lambda j: graph.nodes[j].var)
    for j in list(node.inputs) + [node.id]:
        if name(j) == text:
            return values[j]
    return None


def _base_row(graph, node, value, name=None) -> dict:
    name = name or (lambda j: graph.nodes[j].var)
    source = node.text.strip()
    if node.op in ("loop", "loop_out") or node.attrs.get("carried") is not None:
        source = source.splitlines()[0] if source else source   # `repeat 4 {`, not the whole body
    return {"var": name(node.id), "op": node.op, "expression": expression(graph, node, name),
            "source": source, "line": node.line, "shape": list(node.shape),
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


# -- loops: scopes and their names ---------------------------------------------------------------

class _Scopes:
    """The graph and the row names of each scope a trace shows: the outer graph (scope ()),
    and an iteration of a loop's body ((loop node id, iteration), ... from the outer graph
    in). A body's node j of loop v3 is v3.<j+1> in every iteration; rows say which."""

    def __init__(self, graph):
        self.root = graph
        self._cache = {(): (graph, lambda j: graph.nodes[j].var)}

    def get(self, scope) -> tuple:
        """(graph, name) of a scope."""
        if scope not in self._cache:
            outer, name = self.get(scope[:-1])
            loop_id = scope[-1][0]
            prefix = name(loop_id)
            self._cache[scope] = (outer.nodes[loop_id].attrs["body"], lambda j: f"{prefix}.{j + 1}")
        return self._cache[scope]

    def loop(self, scope, loop_id):
        graph, name = self.get(scope)
        return graph.nodes[loop_id], name(loop_id)


def _loop_expression(loop, name, outer_name) -> str:
    """'repeat ×4 (v3.1 … v3.5): h carried, v2 read'."""
    body, count, nc = loop.attrs["body"], loop.attrs["count"], loop.attrs["carried"]
    parts = [f"{n} carried" for n in loop.attrs["results"][:nc]]
    parts += [f"{outer_name(i)} read" for i in dict.fromkeys(loop.inputs[nc:])]
    return f"repeat ×{count:,} ({name}.1 … {name}.{len(body.nodes)}): " + ", ".join(parts)


def _loop_row(scopes, scope, loop_id) -> dict:
    graph, name = scopes.get(scope)
    loop = graph.nodes[loop_id]
    row = _base_row(graph, loop, None, name)
    row["expression"] = _loop_expression(loop, name(loop_id), name)
    row["count"] = loop.attrs["count"]
    row["carried"] = list(loop.attrs["results"][:loop.attrs["carried"]])
    return row


def _param_text(scopes, scope, node, mark) -> str:
    """Where a body param's value (mark: '' or its tangent's dot, its adjoint's bar) comes from:
    'h ← v1' (carried, first iteration), 'h ← v3.5 of iteration 3', 'v2' (read, w)."""
    (loop_id, it), outer_scope = scope[-1], scope[:-1]
    loop, _ = scopes.loop(outer_scope, loop_id)
    _, outer_name = scopes.get(outer_scope)
    _, name = scopes.get(scope)
    p = node.id
    mark = mark or (lambda text: text)
    if p >= len(loop.inputs):   # a param after the loop's inputs: its index, a number
        return f"the loop's index: {it:,}"
    if p < loop.attrs["carried"]:
        carried = node.attrs.get("carried", f"${p}")
        if it == 0:
            return f"{carried} ← {mark(outer_name(loop.inputs[p]))}"
        result = loop.attrs["body"].outputs[loop.attrs["results"][p]]
        return f"{carried} ← {mark(name(result))} of iteration {it}"
    outer = outer_name(loop.inputs[p])
    named = node.attrs.get("outer")
    return mark(outer) + (f" ({named})" if named and named != outer else "")


def _loop_out_text(scopes, scope, node, mark=None) -> str:
    """'h = v3.5 of iteration 4': the last iteration's result a loop_out reads."""
    graph, name = scopes.get(scope)
    loop = graph.nodes[node.inputs[0]]
    count, position = loop.attrs["count"], node.attrs["position"]
    _, inner = scopes.get(scope + ((loop.id, count - 1),))
    result = loop.attrs["body"].outputs[loop.attrs["results"][position]]
    mark = mark or (lambda text: text)
    return f"{node.attrs['name']} = {mark(inner(result))} of iteration {count:,}"


def _middle_row(scopes, middle, k: int, work) -> dict:
    """The iterations between a loop's first and last, in one row: their count and work."""
    scope, loop_id = middle
    loop, name = scopes.loop(scope, loop_id)
    count = loop.attrs["count"]
    first, last = 2, count - 1
    span = f"iteration {first}" if first == last else f"iterations {first} … {last:,}"
    return {"kind": "iterations", "var": "⋮", "op": "loop", "loop": name,
            "expression": f"{span}, not shown", "source": "",
            "line": loop.line, "shape": [], "size": 0, "value": None, "first": first, "last": last,
            "iterations": last - first + 1, **({"tangents": [None] * k, "partials": [], "tangent_text": ""}
                                                if k else {})}


def _in_loop(row, scopes, scope):
    """Mark a body row with its loop and iteration (1-based, as shown)."""
    if scope:
        loop_id, it = scope[-1]
        row["loop"] = scopes.loop(scope[:-1], loop_id)[1]
        row["iteration"] = it + 1
    return row


def _by_scope(data: dict) -> dict:
    grouped: dict = {}
    for (scope, node_id), value in data.items():
        grouped.setdefault(scope, {})[node_id] = value
    return grouped


# -- building traces -----------------------------------------------------------------------------------

def forward_trace(program, seeds: list, at=None, backend="numpy", dtype="float64",
                  dual: bool = False) -> Trace:
    """Forward mode with seeds = [(label, {input: direction array})]: one forward sweep
    carrying every direction (vector forward mode: f evaluated once). A loop shows its
    first and last iterations' rows and one row for the iterations between."""
    graph = program.graph
    recorder = _ForwardRecorder()
    cost, outputs, inputs = vector_jvp(program, [d for _, d in seeds], at=at, backend=backend,
                                       dtype=dtype, observer=recorder)
    k = len(seeds)
    scopes = _Scopes(graph)
    values, tangents = _by_scope(recorder.values), _by_scope(recorder.tangents)
    varying = {}

    def tangents_of(scope, node_id):
        t = tangents.get(scope, {}).get(node_id)
        return [None] * k if t is None else [t[i] for i in range(k)]

    def node_row(scope, node_id):
        g, name = scopes.get(scope)
        if scope not in varying:
            varying[scope] = _varying(g)
        node, vals, ts = g.nodes[node_id], values.get(scope, {}), tangents.get(scope, {})
        if node.op == "loop":
            row = _loop_row(scopes, scope, node_id)
            row.update(tangents=[None] * k, partials=[], tangent_text="")
            row.update(_work(recorder.work.get((scope, node_id), (0, 0, 0, 0))))
            if dual:
                row["dual"] = ""
            return _in_loop(row, scopes, scope)
        row = _base_row(g, node, vals.get(node.id), name)
        row["tangents"] = tangents_of(scope, node.id)
        carrying = [i for i, j in enumerate(node.inputs) if ts.get(j) is not None]
        partials = []
        if node.op == "loop_out":
            row["expression"] = _loop_out_text(scopes, scope, node)
            row["tangent_text"] = _loop_out_text(scopes, scope, node, dot_var) \
                if ts.get(node.id) is not None else ""
        elif node.op == "input" and scope:
            row["expression"] = _param_text(scopes, scope, node, None)
            row["tangent_text"] = _param_text(scopes, scope, node, dot_var) if ts.get(node.id) is not None else ""
        elif node.op == "input":
            row["tangent_text"] = "seed" if any(t is not None for t in row["tangents"]) else ""
        else:
            for i, j in enumerate(node.inputs):
                if not varying[scope][j]:
                    continue   # a const's partial is never needed
                text = partial_text(g, node, i, name)
                value = _scalar_partial(g, node, i, vals)
                if value is None and node.size > 0:
                    value = _array_partial(g, node, i, vals, text, name)
                partials.append({"wrt": name(j), "text": text, "value": value, "used": i in carrying})
            row["tangent_text"] = tangent_text(g, node, carrying, name) if carrying else ""
        row["partials"] = partials
        row.update(_work(recorder.work.get((scope, node.id), (0, 0, 0, 0))))
        if dual:
            row["dual"] = dual_text(row["value"], row["tangents"]) if row["value"] is not None else ""
        return _in_loop(row, scopes, scope)

    rows = []
    for what, key in recorder.order:
        if what == "middle":
            row = _middle_row(scopes, key, k, None)
            row.update(_work(recorder.middle[key]))
            if dual:
                row["dual"] = ""
        else:
            row = node_row(*key)
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


class _ReversePlans:
    """Per scope: what the backward sweep reads (the residual plan, as the run made it) and
    the rows' marks, so that the marks add up to the cost panel's cached values and inputs
    as Runner._loop_reverse_forward counts them, loops included."""

    def __init__(self, scopes, wrt, outputs):
        self.scopes = scopes
        root = cache_plan(scopes.root, wrt, outputs)
        self.plans = {(): (root["plan"], root["nodes"], root["analysis"], root["runner"])}
        self.middle = {}    # (scope, loop id) -> cached values of the iterations not shown
        self._loops(())

    def get(self, scope):
        """(plan, marks) of a scope: marks as plan_marks, params' marks as the loop counts them."""
        plan, marks = self.plans[scope][:2]
        return plan, marks

    def _loops(self, scope):
        """Walk the loops of a scope before its rows are read: a loop can move a mark of its
        scope (a result kept both inside and outside it)."""
        graph = self.scopes.get(scope)[0]
        plan = self.plans[scope][0]
        for node in graph.nodes:
            if node.op == "loop" and node.id in plan:
                self._walk(scope, node.id)

    def _walk(self, outer_scope, loop_id):
        """Every iteration of one loop: which carried params it keeps that the loop made (the
        loop counts those; the others are its inputs, marked on their rows outside)."""
        _, outer_marks, analysis, runner = self.plans[outer_scope]
        loop = self.scopes.get(outer_scope)[0].nodes[loop_id]
        child, sched = runner._child(loop), runner._schedule(loop, analysis)
        nc, count, body = sched.carried, sched.count, loop.attrs["body"]
        owned = [False] * nc
        base = {}
        middle = middle_inputs = 0
        for it in range(count):
            an = sched.analysis(it)
            scope = outer_scope + ((loop_id, it),)
            if id(an) not in base:
                plan = child.residual_plan(an)
                keys = {key for entries in plan.values() for _, ks in entries for key in ks}
                base[id(an)] = (plan, keys, plan_marks(body, plan, self.scopes.get(scope)[1]))
            plan, keys, marks = base[id(an)]
            mine = [p for p in range(nc) if owned[p] and p in keys]
            shown = it in (0, count - 1)
            if shown:
                marks = {n: dict(m, partials=list(m["partials"])) for n, m in marks.items()}
                for p in range(sched.n_params):
                    marks[p]["value"] = "intermediate" if p in mine else None
                self.plans[scope] = (plan, marks, an, child)
            else:
                middle += sum(body.nodes[n].size if m["value"] == "intermediate" else 0
                              for n, m in marks.items() if n >= sched.n_params)
                middle += sum(size for m in marks.values() for *_, size in m["partials"])
                middle += sum(body.nodes[p].size for p in mine)
                # the index, where a backward reads it: a number kept per iteration (cached_inputs)
                middle_inputs += sum(body.nodes[n].size for n, m in marks.items()
                                     if n >= sched.n_params and m["value"] == "input")
            wanted = sched.live[it]
            owned = [q in wanted and sched.out_ids[q] not in keys and
                     (o >= sched.n_params or (o < nc and owned[o] and o not in mine))
                     for q, o in enumerate(sched.out_ids)][:nc]
        if count > 2:
            self.middle[(outer_scope, loop_id)] = (middle, middle_inputs)
        # a result the last iteration keeps that the caller keeps too is one value, counted once
        last = self.plans[outer_scope + ((loop_id, count - 1),)][1]
        for q, out_id in analysis.loop_outs.get(loop_id, {}).items():
            if outer_marks[out_id]["value"] == "intermediate" and last[sched.out_ids[q]]["value"] == "intermediate":
                outer_marks[out_id]["value"] = None
        for it in sorted({0, count - 1}):
            self._loops(outer_scope + ((loop_id, it),))


def reverse_trace(program, cotangent: dict | None = None, at=None, wrt=None, backend="numpy",
                  dtype="float64") -> Trace:
    """One reverse pass; cotangent = {output: array}, default 1 on every element of every
    output (the gradient of the sum of the outputs). A loop shows its last and first
    iterations' rows (in the order the backward sweep runs them) and one row between."""
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
    scopes = _Scopes(graph)
    plans = _ReversePlans(scopes, list(result.wrt), outputs)
    seeded = {graph.outputs[n] for n in outputs}
    adjoints = _by_scope(recorder.adjoints)
    texts = {}

    def scope_texts(scope):
        """Per node of a scope: the terms of its adjoint, and whether an adjoint reaches it."""
        if scope in texts:
            return texts[scope]
        g, name = scopes.get(scope)
        plan, _ = plans.get(scope)
        got = adjoints.get(scope, {})
        terms: dict = {}
        taken = set()   # adjoints a loop was given as its params' sums: later consumers' terms are in them
        for node in g.nodes:   # consumers in evaluation order: v̄3·v2 before v̄4·cos(v1)
            if node.id not in plan or node.op == "loop_out" or (got.get(node.id) is None and node.op != "loop"):
                continue
            for i, _ in plan[node.id]:
                src = node.inputs[i]
                if src in taken or (node.op == "loop" and not plans.plans[scope][2].depends[src]):
                    continue
                if node.op == "loop":
                    terms.setdefault(src, []).append(_loop_term(scopes, scope, node, i))
                else:
                    terms.setdefault(src, []).append(adjoint_term(g, node, i, name))
            if node.op == "loop":
                taken.update(src for _, src in ((i, node.inputs[i]) for i, _ in plan[node.id])
                             if list(node.inputs).count(src) == 1)
        depends = plans.plans[scope][2].depends
        needed = set(plan)
        for j, entries in plan.items():   # (a loop keeps inputs that get no adjoint: a const W)
            needed.update(g.nodes[j].inputs[i] for i, _ in entries
                          if g.nodes[j].op != "loop" or depends[g.nodes[j].inputs[i]])
        if scope:   # results: the next iteration's params, or the loop's outputs after the last
            (loop_id, it), outer_scope = scope[-1], scope[:-1]
            loop, _ = scopes.loop(outer_scope, loop_id)
            _, outer_name = scopes.get(outer_scope)
            outer_plan, _ = plans.get(outer_scope)
            body = loop.attrs["body"]
            nc, count = loop.attrs["carried"], loop.attrs["count"]
            outs = {n.attrs["position"]: n.id for n in scopes.get(outer_scope)[0].nodes
                    if n.op == "loop_out" and n.inputs[0] == loop_id}
            for q, result_name in enumerate(loop.attrs["results"]):
                result = body.outputs[result_name]
                if it < count - 1 and q < nc:
                    terms.setdefault(result, []).append(f"{bar_var(name(q))} of iteration {it + 2:,}")
                elif it == count - 1 and q in outs and outs[q] in outer_plan:
                    terms.setdefault(result, []).append(bar_var(outer_name(outs[q])))
            for p, outer_id in enumerate(loop.inputs):   # a sum the loop adds to, so far
                if (p >= nc or it == 0) and list(loop.inputs).count(outer_id) == 1 and p in needed:
                    terms.setdefault(p, []).insert(0, f"{bar_var(outer_name(outer_id))} so far")
        texts[scope] = (terms, needed)
        return texts[scope]

    def node_row(scope, node_id):
        g, name = scopes.get(scope)
        node = g.nodes[node_id]
        if node.op == "loop":
            row = _loop_row(scopes, scope, node_id)
        else:
            row = _base_row(g, node, recorder.values.get((scope, node_id)), name)
            if node.op == "loop_out":
                row["expression"] = _loop_out_text(scopes, scope, node)
            elif node.op == "input" and scope:
                row["expression"] = _param_text(scopes, scope, node, None)
        terms, needed = scope_texts(scope)
        _, marks = plans.get(scope)
        row["adjoint"] = recorder.adjoints.get((scope, node_id))
        parts = (["seed"] if not scope and node_id in seeded else []) + terms.get(node_id, [])
        row["adjoint_text"] = _join(parts) if row["adjoint"] is not None or node.op != "loop" else ""
        row["needed"] = node_id in needed or (not scope and node_id in seeded)
        entry = marks[node_id]
        row["cached"] = {"value": entry["value"],
                         "partials": [{"wrt": name(node.inputs[i]), "text": text, "size": size}
                                      for i, text, size in entry["partials"]]}
        row.update(_work(recorder.forward_work.get((scope, node_id), (0, 0, 0, 0)),
                         recorder.backward_work.get((scope, node_id), (0, 0, 0, 0))))
        return _in_loop(row, scopes, scope)

    made = {}

    def row_of(entry):
        if entry not in made:
            what, key = entry
            if what == "middle":
                row = _middle_row(scopes, key, 0, None)
                fwd, bwd = recorder.middle.get(key, [(0, 0, 0, 0), (0, 0, 0, 0)])
                kept, read = plans.middle.get(key, (0, 0))
                row.update(adjoint=None, adjoint_text="", needed=False,
                           cached={"value": None, "partials": [], "values": kept, "inputs": read})
                row.update(_work(fwd, bwd))
            else:
                row = node_row(*key)
            made[entry] = row
        return made[entry]

    # (the backward sweep passes a body's nodes an iteration does not compute: no rows)
    rows = [row_of(entry) for entry in recorder.order if entry[0] == "middle" or entry[1] in recorder.values]
    shown = {id(row) for row in rows}
    evaluation = [row_of(entry) for entry in recorder.forward_order if id(row_of(entry)) in shown]
    gradient = {name: result.cotangent[name] for name in result.wrt}
    trace = Trace("reverse", graph.filename, rows, result.cost, result.inputs,
                  cotangent={k: np.asarray(v, dtype=np.float64) for k, v in cotangent.items()},
                  cotangent_note=note, results=gradient, wrt=list(result.wrt))
    trace.evaluation = evaluation
    u = recorder.unattributed
    trace.extra = {"mults": [u[0], u[2]], "flops": [u[1], u[3]]}
    return trace


def _loop_term(scopes, scope, loop, i) -> str:
    """A loop's contribution to its input i's adjoint: the first iteration's param's (carried),
    or the sum over the iterations (read in each)."""
    _, name = scopes.get(scope + ((loop.id, 0),))
    if i < loop.attrs["carried"]:
        return f"{bar_var(name(i))} of iteration 1"
    if list(loop.inputs).count(loop.inputs[i]) == 1:   # the params' sum, added to in place
        return f"{bar_var(name(i))} of iteration 1"
    return f"Σ {bar_var(name(i))} over the iterations"


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
