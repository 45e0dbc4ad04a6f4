"""Derivatives inside the language: grad(f)(x), jacobian(f)(x), hessian(f)(x), jvp(f, x, v)
and vjp(f, x, u) become ordinary graph nodes made of the registry's own ops.

Forward and reverse mode here are transformations of the graph being built: f's body is
inlined as usual, then its tangents (a JVP) or cotangents (a VJP) are emitted as more nodes
of the same IR, after it. The result is a value like any other, so the program's own modes
differentiate it again (forward over reverse for a Hessian-vector product, reverse over
reverse, ...) and count it with the machinery that counts everything else: its nodes are
primal nodes of the program.

How the derivative nodes are made. The op registry (adcli.ops) already holds every rule,
written against an array module ``xp`` (the local partials) and the counted linear maps of
adcli.tangents (``Linear``: scale, matmul_left, unbroadcast, ...). Rather than write each rule
a second time as IR-emitting code (two rule sets that could disagree: the worst bug there
is), the very same rules run here against stand-ins that emit nodes: ``NodeArrays`` is an
array module whose functions emit registry nodes (xp.cos → a `cos` node, xp.where → `where`,
xp.linalg.inv → `inv`), ``NodeValue`` a node seen as an array (its operators emit `add`,
`mul`, `greater`, ...), and ``NodeLinear`` has ``Linear``'s methods, each emitting the nodes
of its linear map for one direction (no direction axis: a derivative has its value's shape).
This is the route adcli.staging takes for compiled plans (the rules run on a recording
array module), with registry nodes instead of array calls as the record. Constants a rule
makes from shapes alone (a triangle mask, a diagonal's positions) are made on the host with
NumPy, as a real run makes them, and become const nodes.

Data-movement ops have no rules in the registry (the interpreters apply their index maps):
their JVP is the same movement of the tangent; their VJP the transpose of their index maps,
a gather then a scatter-add (a reshape or a transpose for those two).

A rule that needs an array function no node computes (prod's partial uses cumulative
products, digamma's the Hurwitz zeta function), and a loop that stayed a loop, cannot be
expressed: the call is refused in one sentence at its place (``NotExpressible``), never
given a wrong number.

Counting: a seed is a constant node (grad's cotangent 1, jacobian's unit vectors), so the
first products with it are counted as the multiplications the nodes do. Partials are made
once per call, in the order the rules need them, and shared by every pass of a jacobian, as
a forward sweep's residuals are shared by the backward sweeps.
"""
from __future__ import annotations

from math import prod

import numpy as np

from .ir import format_shape
from .ops import REGISTRY, Residuals
from .tangents import Linear, Shaped

# xp functions the rules call that are registry ops of the same name (elementwise, of one
# or two arrays): the partials of sin, sqrt, abs, erf, ... (adcli.ops)
_SAME_NAME = {"sin", "cos", "tan", "exp", "log", "log1p", "sqrt", "tanh", "sign", "abs", "expm1",
              "arcsin", "arccos", "arctan", "sinh", "cosh", "arcsinh", "arccosh", "arctanh",
              "log2", "log10", "maximum", "minimum", "arctan2", "hypot", "tril", "triu"}
_SPECIAL = {"erf", "erfc", "gammaln", "digamma"}
_COMPARE = {"gt": "greater", "lt": "less", "ge": "greater_equal", "le": "less_equal",
            "eq": "equal", "ne": "not_equal"}


class NotExpressible(Exception):
    """A derivative rule asked for something no graph node computes (said to the user): what
    it asked for, and the node whose rule asked (set where the rule ran)."""

    def __init__(self, what: str):
        super().__init__(what)
        self.what = what
        self.node = None


class Emitter:
    """Emits the nodes of one derivative call through the builder, all at the call's place."""

    def __init__(self, builder, ast):
        self.builder, self.ast = builder, ast

    def node(self, node_id: int) -> "NodeValue":
        return NodeValue(self, node_id)

    def emit(self, op: str, inputs, attrs=None) -> "NodeValue":
        ids = tuple(self.lift(x) for x in inputs)
        return self.node(self.builder.emit(op, ids, self.ast, attrs))

    def const(self, array) -> "NodeValue":
        array = np.asarray(array, dtype=np.float64)
        if array.ndim == 0:
            return self.node(self.builder.literal(float(array), self.ast))
        return self.node(self.builder.emit("const", (), self.ast, {"value": array}, shape=array.shape))

    def zeros(self, shape) -> "NodeValue":
        return self.const(np.zeros(shape))

    def lift(self, value) -> int:
        """A node id for a rule's operand: a node, a number, or a host array (a constant)."""
        if isinstance(value, NodeValue):
            return value.id
        if isinstance(value, (bool, int, float, np.generic, np.ndarray)):
            return self.const(value).id
        raise NotExpressible(f"a rule's operand of type {type(value).__name__}")

    def shape(self, value) -> tuple:
        return value.shape if isinstance(value, NodeValue) else tuple(np.shape(value))

    # -- shapes as movements (free, as in the interpreters) --------------------------------
    def reshape(self, value, shape) -> "NodeValue":
        value = value if isinstance(value, NodeValue) else self.const(value)
        shape = tuple(shape)
        if value.shape == shape:
            return value
        return self.emit("reshape", (value,), {"shape": shape})

    def gather(self, value, positions, shape) -> "NodeValue":
        """result.flat[i] = value.flat[positions[i]], in `shape`: one gather node, which the
        outer reverse mode turns into a scatter-add (its `adds` counted there)."""
        from .build import _adds

        positions = np.asarray(positions).reshape(-1).astype(np.intp)
        flat = self.reshape(value, (value.size,))
        picked = self.emit("gather", (flat,), {"key": (positions,), "result_shape": (positions.size,),
                                               "adds": _adds(positions)})
        return self.reshape(picked, shape)

    def broadcast(self, value, shape) -> "NodeValue":
        """NumPy's broadcast_to as a gather (a copy: no arithmetic, as in the interpreters)."""
        shape = tuple(shape)
        value = value if isinstance(value, NodeValue) else self.const(value)
        if value.shape == shape:
            return value
        source = np.broadcast_to(np.arange(value.size).reshape(value.shape), shape)
        return self.gather(value, source, shape)

    def scatter(self, value, targets, shape) -> "NodeValue":
        """zeros of `shape`, then value.flat[i] added at targets[i]: a scatter_add node."""
        from .build import _adds

        targets = np.asarray(targets).reshape(-1).astype(np.intp)
        flat = self.reshape(value, (value.size,))
        out = self.emit("scatter_add", (flat,), {"index": targets, "targets": targets,
                                                 "adds": _adds(targets), "shape": (prod(shape),)})
        return self.reshape(out, shape)


class NodeValue(Shaped):
    """A node seen as an array: its operators and methods emit nodes."""

    __slots__ = ("emitter", "id")
    __array_ufunc__ = None      # NumPy defers to the reflected operators below
    __array_priority__ = 1000

    def __init__(self, emitter: Emitter, node_id: int):
        self.emitter, self.id = emitter, node_id

    @property
    def shape(self) -> tuple:
        return self.emitter.builder.nodes[self.id].shape

    @property
    def dtype(self):
        return np.dtype(np.float64)

    @property
    def T(self) -> "NodeValue":
        return self.emitter.emit("transpose", (self,)) if self.ndim >= 2 else self

    def reshape(self, *shape) -> "NodeValue":
        shape = shape[0] if len(shape) == 1 and isinstance(shape[0], tuple) else shape
        return self.emitter.reshape(self, shape)

    def astype(self, dtype, copy=True) -> "NodeValue":
        return self   # masks are 0.0/1.0 values of the run's dtype already

    def _binary(self, op, other, reflected=False):
        a, b = (other, self) if reflected else (self, other)
        return self.emitter.emit(op, (a, b))

    def __neg__(self):
        return self.emitter.emit("neg", (self,))

    def __pos__(self):
        return self

    def __bool__(self):
        raise NotExpressible("a decision on a value")

    __float__ = __int__ = __index__ = __bool__

    def __repr__(self):
        return f"NodeValue(v{self.id + 1}, {format_shape(self.shape)})"


for _py, _op in (("add", "add"), ("sub", "sub"), ("mul", "mul"), ("truediv", "div"), ("pow", "pow"),
                 ("matmul", "matmul"), ("and", "logical_and"), ("or", "logical_or")):
    setattr(NodeValue, f"__{_py}__", (lambda op: lambda self, other: self._binary(op, other))(_op))
    setattr(NodeValue, f"__r{_py}__", (lambda op: lambda self, other: self._binary(op, other, True))(_op))
for _py, _op in _COMPARE.items():
    setattr(NodeValue, f"__{_py}__", (lambda op: lambda self, other: self._binary(op, other))(_op))
NodeValue.__hash__ = object.__hash__


class _Functions:
    """Functions of a module (linalg, the special functions) as nodes, by a table."""

    def __init__(self, emitter: Emitter, table: dict, module: str):
        self._emitter, self._table, self._module = emitter, table, module

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        op = self._table.get(name)
        if op is None:
            raise NotExpressible(f"{self._module}{name}")
        return lambda *args: self._emitter.emit(op, args)


class NodeArrays:
    """An array module whose functions emit registry nodes: the partials of adcli.ops run
    on it unchanged. A function no node computes raises NotExpressible."""

    def __init__(self, emitter: Emitter):
        self._emitter = emitter
        self.linalg = _Functions(emitter, {"inv": "inv"}, "linalg.")
        # what adcli.backends.special_functions returns for this module
        self.special = _Functions(emitter, {name: name for name in _SPECIAL}, "")
        self.float64 = np.float64

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        if name in _SAME_NAME:
            return lambda *args, **kwargs: self._emitter.emit(name, args, kwargs or None)
        raise NotExpressible(name)

    def where(self, cond, a, b):
        return self._emitter.emit("where", (cond, a, b))

    def broadcast_to(self, value, shape):
        return self._emitter.broadcast(value, shape)

    def sum(self, value, axis=None, keepdims=False):
        attrs = {"axis": axis}
        if keepdims:
            attrs["keepdims"] = True
        return self._emitter.emit("sum", (value,), attrs)


class NodeLinear:
    """adcli.tangents.Linear's methods for one direction, each emitting its linear map's
    nodes. A derivative value is a NodeValue of the node's shape, or None (a symbolic zero:
    no node). `xp` is NumPy: what rules make from shapes alone (masks, positions) is host
    data, as in a real run, and becomes const nodes where a product reads it."""

    k = 1
    dtype = np.float64
    xp = np

    def __init__(self, emitter: Emitter):
        self.e = emitter

    def dense(self, t):
        return t

    def node_shape(self, t) -> tuple:
        return t.shape

    def scale(self, p, t):
        return None if t is None else self.e.emit("mul", (p, t))

    def divide(self, t, q):
        return None if t is None else self.e.emit("div", (t, q))

    def add(self, a, b):
        if a is None:
            return b
        if b is None:
            return a
        return self.e.emit("add", (a, b))

    def sub(self, a, b):
        if b is None:
            return a
        if a is None:
            return self.neg(b)
        return self.e.emit("sub", (a, b))

    def neg(self, t):
        return None if t is None else self.e.emit("neg", (t,))

    def broadcast(self, t, shape):
        return None if t is None else self.e.broadcast(t, shape)

    def unbroadcast(self, t, shape):
        """The transpose of broadcast: sums over the broadcast axes."""
        shape = tuple(shape)
        if t is None or t.shape == shape:
            return t
        if prod(t.shape) == prod(shape):   # only axes of length 1 differ: the same elements
            return self.e.reshape(t, shape)
        if not shape:
            return self.e.emit("sum", (t,), {"axis": None})
        while t.ndim > len(shape):
            t = self.e.emit("sum", (t,), {"axis": 0})
        for axis, size in enumerate(shape):
            if size == 1 and t.shape[axis] != 1:
                t = self.e.emit("sum", (t,), {"axis": axis, "keepdims": True})
        return t

    def sum(self, t, axis=None):
        return None if t is None else self.e.emit("sum", (t,), {"axis": axis})

    # the transpose of sum: broadcast back, written with this class's reshape and broadcast
    expand = Linear.expand

    def reshape(self, t, shape):
        return None if t is None else self.e.reshape(t, shape)

    def transpose(self, t):
        return None if t is None else t.T

    def gather(self, t, positions, shape):
        return None if t is None else self.e.gather(t, positions, shape)

    def scatter(self, t, src_pos, dst_pos, adds, shape):
        if t is None:
            return None
        if src_pos is not None:
            t = self.e.gather(t, src_pos, (len(src_pos),))
        return self.e.scatter(t, dst_pos, shape)

    def matmul_left(self, a, t):
        return None if t is None else self.e.emit("matmul", (a, t))

    def matmul_right(self, t, b):
        return None if t is None else self.e.emit("matmul", (t, b))

    def outer(self, t, b, t_first: bool = True):
        """t ⊗ b (or b ⊗ t); a scalar on either side is a scale."""
        if t is None:
            return None
        b = b if isinstance(b, NodeValue) else self.e.const(b)
        first, second = (t, b) if t_first else (b, t)
        if first.ndim and second.ndim:
            first = self.e.reshape(first, first.shape + (1,) * second.ndim)
        return self.e.emit("mul", (first, second))

    def einsum(self, t, letters: str, residuals, result: str, sizes: dict):
        if t is None:
            return None
        subscripts = ",".join([letters] + [other for _, other in residuals]) + "->" + result
        return self.e.emit("einsum", [t] + [x for x, _ in residuals], {"subscripts": subscripts})


class Derivatives:
    """The derivative nodes of the nodes emitted since `start` (a def's body, inlined), with
    respect to one of them, the point. Partials are made once and shared by every pass."""

    def __init__(self, builder, ast, start: int, what: str):
        self.builder, self.ast, self.start, self.what = builder, ast, start, what
        self.e = Emitter(builder, ast)
        self.T = NodeLinear(self.e)
        self.xp = NodeArrays(self.e)
        self.partials: dict = {}

    def active(self, points, end: int) -> set:
        """Nodes before `end` whose value depends on the points through differentiable ops."""
        nodes = self.builder.nodes
        points = {points} if isinstance(points, int) else set(points)
        active = set(points)
        for node in nodes[min(points) + 1:end]:
            prim = REGISTRY.get(node.op)
            if any(i in active for i in node.inputs) and (prim is None or prim.differentiable):
                if prim is None:   # a loop that stayed a loop: its body has no rules here
                    problem = NotExpressible("a loop")
                    problem.node = node
                    raise problem
                active.add(node.id)
        return active

    def _residuals(self, node, needed):
        """A rule's Residuals, its partial made (once) for the inputs in `needed`."""
        prim = REGISTRY[node.op]
        x = [self.e.node(i) for i in node.inputs]
        in_shapes = [self.builder.nodes[i].shape for i in node.inputs]
        r = Residuals(x, self.e.node(node.id), None, node.attrs, in_shapes, node.shape)
        p = {}
        for i in needed:
            partial = prim.partial_for(i)
            if partial is None:
                continue
            key = (node.id, 0 if prim.shared_partial else i)
            if key not in self.partials:
                try:
                    self.partials[key] = partial.compute(self.xp, r)
                except NotExpressible as exc:
                    exc.node = exc.node or node
                    raise
            p[i] = self.partials[key]
        return r, p

    def _rule(self, node, rules, i, r, p, value):
        r.p = p.get(i)
        try:
            return rules[i](self.T, r, value)
        except NotExpressible as exc:
            exc.node = exc.node or node
            raise
        except (AttributeError, TypeError) as exc:   # a rule reaching past what nodes provide
            problem = NotExpressible(str(exc))
            problem.node = node
            raise problem from None

    # -- forward -----------------------------------------------------------------------------
    def jvp(self, point: int, tangent, out: int, end: int):
        """The tangent of `out` for `tangent` at the point (None: a symbolic zero)."""
        active = self.active(point, end)
        tangents = {point: tangent}
        for node in self.builder.nodes[point + 1:end]:
            if node.id not in active:
                continue
            given = [tangents.get(i) for i in node.inputs]
            tangents[node.id] = self._node_jvp(node, given)
        return tangents.get(out)

    def _node_jvp(self, node, given):
        prim = REGISTRY[node.op]
        if all(t is None for t in given):
            return None
        if prim.movement:   # the same movement of the tangents (zeros for inputs without one)
            ins = [t if t is not None else self.e.zeros(self.builder.nodes[i].shape)
                   for t, i in zip(given, node.inputs)]
            return self.e.emit(node.op, ins, dict(node.attrs))
        needed = [i for i, t in enumerate(given) if t is not None]
        r, p = self._residuals(node, needed)
        if prim.jvp_all is not None:
            if any(prim.partial_for(i) for i in range(len(given))):
                r.p = next(iter(p.values()), None)   # a shared partial (solve's A⁻¹)
            return prim.jvp_all(self.T, r, given)
        total = None
        for i in needed:
            total = self.T.add(total, self._rule(node, prim.jvp, i, r, p, given[i]))
        return total

    # -- reverse -----------------------------------------------------------------------------
    def vjp(self, point: int, out: int, cotangent, end: int):
        """The cotangent of the point for `cotangent` on `out` (None: a symbolic zero)."""
        return self.vjps([point], out, cotangent, end)[point]

    def vjps(self, points: list, out: int, cotangent, end: int) -> dict:
        """The cotangents of several points (a program's inputs) in one reverse sweep."""
        active = self.active(points, end)
        if out not in active:
            return {point: None for point in points}
        cotangents = {out: cotangent}
        wanted = set(points)
        for node in reversed(self.builder.nodes[min(points) + 1:out + 1]):
            if node.id in wanted:   # a point's cotangent is the result: nothing before it
                continue
            ct = cotangents.pop(node.id, None)
            if ct is None or node.id not in active:
                continue
            for x, contribution in self._node_vjp(node, ct, active):
                cotangents[x] = self.T.add(cotangents.get(x), contribution)
        return {point: cotangents.get(point) for point in points}

    def _node_vjp(self, node, ct, active):
        prim = REGISTRY[node.op]
        wanted = [i for i, x in enumerate(node.inputs) if x in active]
        if prim.movement:
            for i in wanted:
                yield node.inputs[i], self._movement_vjp(node, i, ct)
            return
        r, p = self._residuals(node, wanted)
        for i in wanted:
            yield node.inputs[i], self._rule(node, prim.vjp, i, r, p, ct)

    def _movement_vjp(self, node, i, ct):
        """The transpose of a data movement's index maps for input i."""
        in_shape = self.builder.nodes[node.inputs[i]].shape
        if node.op == "reshape":
            return self.e.reshape(ct, in_shape)
        if node.op == "transpose":   # the inverse permutation (.T, every axis reversed: itself)
            axes = node.attrs.get("axes")
            return ct.T if axes is None else self.e.emit("transpose", (ct,), {"axes": tuple(np.argsort(axes).tolist())})
        from .build import index_maps

        out_pos, in_pos = index_maps(node, [self.builder.nodes[x].shape for x in node.inputs])[i]
        size = prod(in_shape)
        picked = ct if np.array_equal(out_pos, np.arange(ct.size)) else self.e.gather(ct, out_pos, (len(out_pos),))
        if len(in_pos) == size and np.unique(in_pos).size == size:   # a permutation: a gather back
            return self.e.gather(picked, np.argsort(in_pos), in_shape)
        return self.e.scatter(picked, in_pos, in_shape)


def unit(index: int, shape) -> np.ndarray:
    """The index-th unit vector of a value of `shape` (row-major)."""
    e = np.zeros(prod(shape))
    e[index] = 1.0
    return e.reshape(shape)


def refusal(what: str, exc: NotExpressible) -> str:
    """The sentence that refuses a derivative call whose rules need what no node computes."""
    node = exc.node
    if node is not None and node.op in ("loop", "loop_out"):
        return (f"{what} cannot differentiate the repeat of line {node.line}, which stays a loop: "
                "derivatives inside the language need it unrolled (lower its count, or raise --node-limit)")
    where = f"{node.op} (line {node.line})" if node is not None else "a rule"
    needs = NEEDS.get(exc.what, exc.what)
    return (f"{what} cannot be made of graph nodes: the derivative of {where} needs {needs}, "
            "which no node computes yet")


# What a rule's array function is for, where its name alone would puzzle (docs/language.md
# names these refusals so)
NEEDS = {"moveaxis": "cumulative products", "cumprod": "cumulative products",
         "zeta": "the Hurwitz zeta function"}

