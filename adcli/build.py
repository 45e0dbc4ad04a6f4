"""AST → graph IR: scopes, dims, constant data, inlining defs, unrolling repeats.

Shapes are checked here, as each node is made, so a shape error points at the
source expression before anything runs. Constant data (initial values of
inputs and consts) is checked here too, shapes and arguments, but made only
when a run needs it (``Data``, a recipe), after the run's memory check: then it
is evaluated on the host with NumPy in float64 (``randn(seed=S)`` is
``numpy.random.default_rng(S).standard_normal``). ``--at`` values are made at once.
"""
from __future__ import annotations

import dataclasses
import math
import sys
from contextlib import contextmanager
from math import prod

import numpy as np

from . import einsum as contraction
from .errors import (AdError, NameProblem, ResourceProblem, ShapeProblem, SourceLocation, SyntaxProblem,
                     ValueProblem)
from .ir import Graph, Node, broadcast_shapes, format_shape, with_article
from .ops import COMPARISONS, REGISTRY, ShapeError
from .tangents import axes_of
from .parser import Ast, parse, strip_bom

DEFAULT_NODE_LIMIT = 200_000
STEPS_PER_NODE = 10      # unrolled statements allowed per node of the node limit
# A repeat that stays a loop may run this many body nodes per node of --node-limit (the
# interpreter runs a loop node by node: about 0.1 ms each per sweep, see docs/language.md)
# Inlining emits no node for a def that only passes values on (def f(a) = a), so the
# node limit alone does not bound it: at most node_limit def calls are inlined, and
# at most STEPS_PER_NODE * node_limit expressions visited in all.
LARGE_BYTES = 2**26   # data smaller than this is never checked against the memory available
RECURSION_LIMIT = 10_000  # Python frames while building: about 5,000 levels of nesting
MAX_INTEGER = 2**53     # dims, sizes, counts, indices: beyond this they are surely a mistake

UNARY_FUNCTIONS = ("sin", "cos", "tan", "exp", "log", "log1p", "sqrt", "tanh",
                   "sigmoid", "relu", "abs", "square", "sign", "heaviside",
                   "arcsin", "arccos", "arctan", "sinh", "cosh", "arcsinh", "arccosh", "arctanh",
                   "expm1", "log2", "log10", "softplus", "erf", "erfc", "gammaln", "digamma")
BINARY_FUNCTIONS = ("maximum", "minimum", "arctan2", "hypot")
# Named constants: usable in any expression and in constant data, unless the file gives
# the name its own meaning (an input, const, value or parameter named `e` hides e).
CONSTANTS = {"pi": math.pi, "e": math.e}
TERNARY_FUNCTIONS = ("where", "clip")
REDUCTIONS = ("sum", "mean", "max", "min", "prod", "logsumexp", "softmax", "log_softmax")
TUPLE_PLACES = ("a tuple only lists axes or sizes, as NumPy writes them: axis=(0, 2), transpose(x, (1, 0)), "
                "reshape(x, (a, b)); a vector is a list, [a, b]")
NORMALIZATIONS = ("softmax", "log_softmax")   # take an axis, keep the shape: no keepdims
DATA_FUNCTIONS = ("zeros", "ones", "full", "randn", "rand", "linspace", "load")
# A value's sizes, whole numbers known when the file is built. Not reserved (not in BUILTINS):
# files name values `rows` and `cols`, and a call is told from a name by its parentheses.
SIZE_FUNCTIONS = ("rows", "cols")
OTHER_FUNCTIONS = ("norm", "dot", "outer", "concat", "stack", "reshape", "transpose", "multigammaln",
                   "einsum", "expand_dims", "squeeze")
MAX_MULTIGAMMALN_D = 10_000   # multigammaln(a, d) sums d gammaln terms: each is work per element
GATHER_FUNCTIONS = ("take_along_axis", "scatter_add")
MOVEMENT_FUNCTIONS = ("reshape", "transpose", "concat", "stack")   # of integer data: integer data
INDEX_DATA_RULE = ("as an index, integer data combines only with whole numbers, dims, loop indices and "
                   "other integer data, by + - *, slices, reshape, concat and .T")
LINALG_FUNCTIONS = ("solve", "inv", "det", "logdet", "cholesky", "triangular_solve", "trace", "diag", "eye",
                    "tril", "triu", "fill_tril")
INTEGER_DATA_FUNCTIONS = ("arange", "randint")   # the values of integer consts only
# Derivatives inside the language (adcli.derive): grad(f), jacobian(f) and hessian(f) are
# functions, called on f's arguments (grad(f)(x)); jvp(f, x, v) and vjp(f, x, u) are values.
DERIVATIVE_FUNCTIONS = ("grad", "jacobian", "hessian")
DERIVATIVE_PRODUCTS = ("jvp", "vjp")
BUILTINS = set(UNARY_FUNCTIONS + BINARY_FUNCTIONS + TERNARY_FUNCTIONS + REDUCTIONS + DATA_FUNCTIONS
               + OTHER_FUNCTIONS + GATHER_FUNCTIONS + INTEGER_DATA_FUNCTIONS + LINALG_FUNCTIONS
               + DERIVATIVE_FUNCTIONS + DERIVATIVE_PRODUCTS)
# reductions with no value over no elements (NumPy raises, or gives nan for mean)
NO_EMPTY_REDUCTIONS = ("mean", "max", "min", "logsumexp", "softmax", "log_softmax")
BINARY_OPS = {"+": "add", "-": "sub", "*": "mul", "/": "div", "@": "matmul", "^": "pow"}
COMPARE_OPS = {symbol: name for symbol, (name, _) in COMPARISONS.items()}   # "<": "less", ...


@contextmanager
def _deep_recursion():
    """Room for expressions nested up to parser.MAX_NESTING (built recursively)."""
    depth = sys.getrecursionlimit()
    sys.setrecursionlimit(max(depth, RECURSION_LIMIT))
    try:
        yield
    finally:
        sys.setrecursionlimit(depth)


class _Shape:
    """The shape of constant data not made yet (the static check of a recipe)."""

    __slots__ = ("shape",)

    def __init__(self, shape):
        self.shape = tuple(shape)


def _shape_of(value) -> tuple:
    return value.shape if isinstance(value, _Shape) else np.shape(value)


def _matmul_shape(a: tuple, b: tuple) -> tuple:
    """numpy.matmul's result shape (stacks included), or ValueError."""
    try:
        return tuple(REGISTRY["matmul"].shape([tuple(a), tuple(b)], {}))
    except ShapeError:
        raise ValueError from None


class Data:
    """Constant data as a recipe: the value of an input or const, checked (shape and
    arguments) when the file is built, made on the host in float64 only when a run
    reads `value` (after its memory check), then kept. `show` and `graph` never make it.
    numpy.asarray(data) makes it too."""

    __slots__ = ("builder", "ast", "shape", "hint", "declared", "name", "filename", "lines", "_value")

    def __init__(self, builder, ast, shape, hint, declared, name):
        self.builder, self.ast, self.shape, self.hint = builder, ast, tuple(shape), hint
        self.declared, self.name = declared, name
        self.filename, self.lines = builder.filename, builder.lines
        self._value = None

    @property
    def size(self) -> int:
        return prod(self.shape)

    @property
    def nbytes(self) -> int:
        return 8 * self.size

    @property
    def made(self) -> bool:
        return self._value is not None

    @property
    def value(self) -> np.ndarray:
        if self._value is None:
            self._value = self.builder.make_data(self)
        return self._value

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self.value, dtype=dtype)

    def __repr__(self) -> str:
        return f"Data({self.name}: {format_shape(self.shape)}{', made' if self.made else ''})"


class _Def:
    def __init__(self, ast: Ast, order: int):
        self.ast = ast
        self.name, self.params, self.body = ast.args
        self.order = order


def _order_text(order) -> str:
    """norm's ord as a file writes it: 'fro', inf, 3, 0.5."""
    if order in ("fro", "nuc"):
        return f"'{order}'"
    return order if isinstance(order, str) else f"{order:g}"


class _Scope:
    """Names visible to expressions: values (node ids) of this scope, and the indices of
    the repeats being unrolled in it (`repeat T as t`: name -> [iteration, repeat's line])."""

    def __init__(self, values: dict, in_def: _Def | None = None):
        self.values = values
        self.in_def = in_def
        self.indices: dict[str, list] = {}


class Builder:
    def __init__(self, text: str, filename: str = "<input>", dim_overrides=None,
                 node_limit: int = DEFAULT_NODE_LIMIT, base_dir=None, loops: str = "auto"):
        text = strip_bom(text)
        # which repeats stay loops (a `loop` node with a body graph) rather than being
        # unrolled: "auto", those whose unrolling passes the node limit; "always", every
        # one that can; "never". See Builder._loop.
        if loops not in ("auto", "always", "never"):
            raise ValueError(f"loops must be auto, always or never, not {loops!r}")
        self.loops = loops
        self.text = text
        self.filename = filename
        self.lines = text.splitlines()
        self.dim_overrides = dict(dim_overrides or {})
        self.node_limit = node_limit
        self.nodes: list[Node] = []
        self.dims: dict[str, int] = {}
        self.inputs: dict[str, int] = {}
        self.consts: dict[str, int] = {}
        self.const_values: dict[str, Data] = {}   # recipes, made when a run needs them
        self.int_consts: dict[str, np.ndarray] = {}   # integer data (indices), made at once
        self.outputs: dict[str, int] = {}
        self.defs: dict[str, _Def] = {}
        self.input_defaults: dict = {}
        self.input_types: dict = {}
        self.input_lines: dict = {}
        self.literals: dict = {}
        self.global_scope = _Scope({})
        self.inline_stack: list[str] = []
        self.repeat_stack: list[list] = []   # [repeat id, iteration, count, line, position]
        self.repeats_seen = 0
        self.rebinds = 0      # assignments that changed what a name refers to
        self.steps = 0        # statements run by unrolled repeats
        self.inlined = 0      # def calls inlined
        self.outer_call = None
        self.visits = 0       # expressions visited (inlining visits a def's body once per call)
        self.data_bytes = 0   # declared input and const data, float64 on the host
        self.memory_cap = None
        self.base_dir = base_dir   # where load()'s relative paths start (None: the working directory)
        self.loaded = {}      # (path, key) -> the shape seen when the file was built, or a parsed text file
        self.const_overrides = {}   # const name -> host array, while a run's changed consts are made
        # while a repeat's body is built once as a loop's (Builder._loop): (its index, count),
        # the first iteration whose position leaves its range (None: none does), and why the
        # last repeat that could not stay a loop could not
        self.loop_index = None
        self.loop_trouble = None
        self.loop_refusal = None
        self.unrolled = []   # (line, why) of each repeat written out iteration by iteration
        # (output, wrt inputs): make the outputs that output's gradient, as nodes (adcli hessian)
        self.gradient_of = None

    # -- locations and errors ----------------------------------------------------
    def loc(self, ast) -> SourceLocation | None:
        if ast is None or not getattr(ast, "line", 0):
            return None
        line = ast.line
        source = self.lines[line - 1] if 0 < line <= len(self.lines) else ""
        return SourceLocation(self.filename, line, ast.column, source)

    def fail(self, cls, message, ast, hint=None):
        raise cls(message, self.loc(ast), hint)

    # -- nodes ---------------------------------------------------------------------------
    def emit(self, op: str, inputs, ast, attrs=None, shape=None) -> int:
        if len(self.nodes) >= self.node_limit:
            raise _OverNodeLimit(
                f"the unrolled program exceeds the node limit of {self.node_limit:,} nodes",
                self.loc(ast), hint="lower a repeat count or a dim, or raise --node-limit")
        attrs = dict(attrs or {})
        if shape is None:
            in_shapes = [self.nodes[i].shape for i in inputs]
            try:
                shape = tuple(REGISTRY[op].shape(in_shapes, attrs))
            except ShapeError as exc:
                self.fail(ShapeProblem, str(exc), ast)
        self.check_size(shape, "this value", ast)
        node = Node(len(self.nodes), op, tuple(inputs), tuple(shape), attrs,
                    getattr(ast, "line", 0), getattr(ast, "column", 0), getattr(ast, "start", 0),
                    getattr(ast, "end", 0), getattr(ast, "source", ""))
        if self.repeat_stack:
            outer = self.repeat_stack[0]
            node.repeat = tuple(outer)
            outer[4] += 1
        self.nodes.append(node)
        return node.id

    def literal(self, value: float, ast) -> int:
        key = float(value)
        if key not in self.literals:
            self.literals[key] = self.emit("const", (), ast, {"value": np.float64(key)}, shape=())
        return self.literals[key]

    # -- statements -------------------------------------------------------------------------
    def build(self, statements=None) -> Graph:
        if statements is None:
            statements = parse(self.text, self.filename, max_statements=self.node_limit)
        stmt = None
        try:
            with _deep_recursion():   # expressions are built recursively
                for stmt in statements:
                    self.statement(stmt, self.global_scope)
        except RecursionError:
            raise ValueProblem("this statement nests expressions more deeply than adcli can follow",
                               self.loc(stmt), hint="split it into several assignments") from None
        unknown = sorted(set(self.dim_overrides) - set(self.dims))
        if unknown:
            from .errors import UsageProblem
            raise UsageProblem(f"--set names {', '.join(unknown)}, but the file has no such dim"
                               + (f" (dims: {', '.join(self.dims)})" if self.dims else ""))
        if not self.outputs:
            raise ValueProblem("the file declares no output; add a line such as `output f = x * x`",
                               SourceLocation(self.filename, max(len(self.lines), 1), 1,
                                              self.lines[-1] if self.lines else ""))
        if self.gradient_of is not None:
            self._gradient_outputs(*self.gradient_of)
        return self.finish()

    def _gradient_outputs(self, output: str, wrt: list):
        """Make the outputs the gradient of the scalar output `output` with respect to the
        inputs `wrt`, written out as nodes (one reverse sweep, adcli.derive), named d<output>/d<input>:
        the program `adcli hessian` differentiates again."""
        from .derive import Derivatives, NotExpressible, refusal

        node = self.nodes[self.outputs[output]]
        where = Ast("output", (), node.line, node.column, node.start, node.end, node.source)
        if node.shape != ():
            self.fail(ShapeProblem, f"the Hessian needs a scalar output, but '{output}' is "
                      f"{with_article(format_shape(node.shape))}", where)
        points = [self.inputs[name] for name in wrt]
        derive = Derivatives(self, where, min(points), f"the gradient of {output}")
        try:
            grads = derive.vjps(points, node.id, derive.e.const(1.0), len(self.nodes))
        except NotExpressible as exc:
            self.fail(ValueProblem, refusal(f"the gradient of {output}", exc), where)
        self.outputs = {}
        for name, point in zip(wrt, points):
            g = grads[point]
            self.outputs[f"d{output}/d{name}"] = (derive.e.zeros(self.nodes[point].shape) if g is None else g).id

    def statement(self, stmt: Ast, scope: _Scope):
        handler = getattr(self, "stmt_" + stmt.kind)
        if scope.in_def is not None and stmt.kind not in ("assign", "unpack", "repeat", "return"):
            self.fail(SyntaxProblem, f"'{stmt.kind}' is not allowed inside def {scope.in_def.name}; "
                      "a def body holds assignments, repeat blocks and a final return", stmt)
        handler(stmt, scope)

    def declare(self, name: str, stmt: Ast, scope: _Scope):
        if name in BUILTINS:
            self.fail(NameProblem, f"'{name}' is a built-in function and cannot be redefined", stmt)
        if name in self.dims or name in self.inputs or name in self.consts or name in self.defs \
                or name in self.int_consts:
            self.fail(NameProblem, f"'{name}' is already declared", stmt)

    def stmt_dim(self, stmt, scope):
        name, expr = stmt.args
        self.declare(name, stmt, scope)
        if name in scope.values:
            self.fail(NameProblem, f"'{name}' is already a value name", stmt)
        value = self.dim_overrides.get(name)
        if value is None:
            value = self.integer(expr, scope, "a dim")
        if value < 1:
            self.fail(ValueProblem, f"dim {name} must be a positive integer, got {value}", expr)
        self.dims[name] = value

    def type_shape(self, type_ast, scope, name=None) -> tuple | None:
        if type_ast is None:
            return None
        shape = tuple(self.integer(e, scope, "a size", positive=True) for e in type_ast.args)
        if name is not None:   # an input's or const's data, held on the host: all of it must fit
            self.data_bytes += 8 * prod(shape)
            self.check_size(shape, name, type_ast, total=self.data_bytes)
        return shape

    def check_size(self, shape, what, ast, total=0, hint="lower a dim with --set"):
        """Refuse data over half of the available memory before NumPy tries to allocate it."""
        size = prod(shape)
        if max(8 * size, total) < LARGE_BYTES:
            return
        from .api import _bytes, default_memory_limit

        if self.memory_cap is None:
            self.memory_cap = default_memory_limit()
        if max(8 * size, total) > self.memory_cap:
            together = f", and the file's data {_bytes(total)} in all" if total > 8 * size else ""
            self.fail(ResourceProblem, f"{what} is {format_shape(shape)}: {size:,} numbers "
                      f"({_bytes(8 * size)}){together}, over half of the available memory "
                      f"({_bytes(self.memory_cap)})", ast, hint=hint)

    def stmt_input(self, stmt, scope):
        name, type_ast, expr = stmt.args
        self.declare(name, stmt, scope)
        if type_ast is not None and type_ast.kind == "itype":
            self.fail(ShapeProblem, f"input {name} cannot be integer data: inputs are differentiated; "
                      f"declare it `const {name}: ...`", type_ast)
        shape = self.type_shape(type_ast, scope, f"input {name}")
        value = None
        if expr is not None:
            value = self.data(expr, shape, name)
            if type_ast is None:   # its shape came from the value: that data must fit too
                self.data_bytes += value.nbytes
                self.check_size(value.shape, f"input {name}", stmt, total=self.data_bytes)
            shape = value.shape
        if shape is None:
            shape = ()
        node = self.emit("input", (), stmt, {"name": name}, shape=shape)
        self.inputs[name] = node
        self.input_defaults[name] = value
        self.input_types[name] = type_ast
        self.input_lines[name] = stmt.line
        scope.values[name] = node

    def stmt_const(self, stmt, scope):
        name, type_ast, expr = stmt.args
        self.declare(name, stmt, scope)
        if type_ast is not None and type_ast.kind == "itype":
            return self.stmt_int_const(stmt, scope)
        shape = self.type_shape(type_ast, scope, f"const {name}")
        value = self.data(expr, shape, name)
        if type_ast is None:   # its shape came from the value: that data must fit too
            self.data_bytes += value.nbytes
            self.check_size(value.shape, f"const {name}", stmt, total=self.data_bytes)
        node = self.emit("const", (), stmt, {"value": value, "name": name}, shape=value.shape)
        self.consts[name] = node
        self.const_values[name] = value
        scope.values[name] = node

    def stmt_assign(self, stmt, scope):
        name, expr = stmt.args
        if name in BUILTINS:
            self.fail(NameProblem, f"'{name}' is a built-in function and cannot be assigned", stmt)
        if name in self.dims:
            self.fail(NameProblem, f"'{name}' is a dim and cannot be assigned", stmt)
        node = self.expr(expr, scope)
        if scope.values.get(name) != node:
            self.rebinds += 1
        scope.values[name] = node

    def stmt_unpack(self, stmt, scope):
        """`h, c = cell(h, c, x)`: one name per value of a def that returns several."""
        names, expr = stmt.args
        for name in names:
            if name in BUILTINS:
                self.fail(NameProblem, f"'{name}' is a built-in function and cannot be assigned", stmt)
            if name in self.dims:
                self.fail(NameProblem, f"'{name}' is a dim and cannot be assigned", stmt)
        repeated = [name for i, name in enumerate(names) if name in names[:i]]
        if repeated:
            self.fail(NameProblem, f"'{repeated[0]}' is assigned twice in one unpacking", stmt)
        values = self.values_of(expr, scope)
        if len(values) != len(names):
            what = (f"{expr.args[0]}(...) returns {len(values)} value{'s' if len(values) != 1 else ''}"
                    if expr.kind == "call" and expr.args[0] in self.defs else "this is one value")
            self.fail(ValueProblem, f"{what}, but {len(names)} names are assigned", expr,
                      hint=None if len(values) != 1 else
                      "only a call of a def that returns several values (`return a, b`) can be unpacked")
        for name, node in zip(names, values):
            if scope.values.get(name) != node:
                self.rebinds += 1
            scope.values[name] = node

    def values_of(self, ast, scope) -> tuple:
        """The values of an expression: several for a call of a def that returns several."""
        name = ast.args[0] if ast.kind == "call" else None
        if name in self.defs and name not in BUILTINS:
            self.visits += 1
            result = self.inline(self.defs[name], ast, scope)
            return result if isinstance(result, tuple) else (result,)
        return (self.expr(ast, scope),)

    def stmt_output(self, stmt, scope):
        name, expr = stmt.args
        if isinstance(name, tuple):   # output a, b = f(x) | output a, b
            return self._outputs(stmt, scope)
        if name in self.outputs:
            self.fail(NameProblem, f"output '{name}' is declared twice", stmt)
        if expr is None:
            if name not in scope.values:
                self.fail(NameProblem, f"output '{name}' names nothing defined above; "
                          f"write `output {name} = <expression>`", stmt)
            node = scope.values[name]
        else:
            if name in self.dims or name in BUILTINS:
                self.fail(NameProblem, f"'{name}' cannot name an output", stmt)
            node = self.expr(expr, scope)
            scope.values[name] = node
        self.outputs[name] = node

    def _outputs(self, stmt, scope):
        """Several outputs in one statement: the names of an unpacking (`output a, b = f(x)`,
        as `a, b = f(x)` then `output a` and `output b`), or names defined above."""
        names, expr = stmt.args
        for name in names:
            if name in self.outputs:
                self.fail(NameProblem, f"output '{name}' is declared twice", stmt)
        if expr is not None:
            self.stmt_unpack(dataclasses.replace(stmt, kind="unpack"), scope)
        for name in names:
            if name not in scope.values:
                self.fail(NameProblem, f"output '{name}' names nothing defined above; "
                          f"write `output {name} = <expression>`", stmt)
            self.outputs[name] = scope.values[name]

    def stmt_def(self, stmt, scope):
        name = stmt.args[0]
        self.declare(name, stmt, scope)
        if scope.values.get(name) is not None:
            self.fail(NameProblem, f"'{name}' is already a value name", stmt)
        params = stmt.args[1]
        if len(set(params)) != len(params):
            self.fail(NameProblem, f"def {name} repeats a parameter name", stmt)
        body = stmt.args[2]
        if not body or body[-1].kind != "return":
            self.fail(SyntaxProblem, f"def {name} must end with `return <expression>`", stmt)
        for inner in body[:-1]:
            if inner.kind == "return":
                self.fail(SyntaxProblem, "return must be the last statement of a def", inner)
        self.defs[name] = _Def(stmt, len(self.defs))

    def stmt_repeat(self, stmt, scope):
        count_ast, body, index = stmt.args
        count = self.integer(count_ast, scope, "a repeat count")
        if count < 0:
            self.fail(ValueProblem, f"a repeat count must not be negative, got {count}", count_ast)
        for inner in body:   # checked once, even for a count of 0
            if inner.kind in ("dim", "input", "const", "def", "output", "return"):
                self.fail(SyntaxProblem, f"'{inner.kind}' is not allowed inside repeat; "
                          "a repeat body holds assignments and nested repeats", inner)
        name = None if index is None else self._check_index(index, stmt, body, scope)
        # an iteration that changes nothing ends the loop, unless the body reads the index
        stop_early = name is None or not _reads(body, name)
        loopable = count >= 2   # (nested repeats included: an inner one is a loop in the body, or unrolled)
        self.loop_refusal = None   # (Builder._loop says why it could not)
        if loopable and self.loops == "always":
            if self._loop(stmt, body, count, scope, name):
                return
            self.unrolled.append((stmt.line, "cannot stay a loop: " + self._not_a_loop(body, count)))
        elif loopable and self.loops == "auto":
            saved = self._save(scope)
            try:   # the first iteration tells whether all of them would pass the limit
                self._unroll(stmt, body, count, scope, name, stop_early, foresee=True)
                self.unrolled.append((stmt.line, "is written out iteration by iteration, being small "
                                                 "(load the program with loops=\"always\" to keep it a loop)"))
            except _OverNodeLimit:
                self._restore(saved, scope)
                if not self._loop(stmt, body, count, scope, name):
                    why = self._not_a_loop(body, count)
                    try:
                        self._unroll(stmt, body, count, scope, name, stop_early)   # the limit says where
                    except _OverNodeLimit as exc:
                        exc.hint = (f"lower a repeat count or a dim, or raise --node-limit (the repeat at line "
                                    f"{stmt.line} cannot stay a loop: {why})")
                        raise
            return
        else:
            self.unrolled.append((stmt.line, f"runs {count} time{'' if count == 1 else 's'}: no loop "
                                             "of steps to checkpoint"))
        self._unroll(stmt, body, count, scope, name, stop_early)

    def _unroll(self, stmt, body, count, scope, name, stop_early, foresee=False):
        """Build `count` iterations of a repeat's body, one after the other. `foresee`:
        stop after the first if `count` iterations of its size would pass the node limit."""
        start = len(self.nodes)
        self.repeats_seen += 1
        marker = [self.repeats_seen, 0, count, stmt.line, 0]
        self.repeat_stack.append(marker)
        step_limit = STEPS_PER_NODE * self.node_limit
        try:
            for iteration in range(count):
                marker[1], marker[4] = iteration, 0
                nodes, rebinds = len(self.nodes), self.rebinds
                if name is not None:
                    scope.indices[name] = [iteration, stmt.line, None]   # (its const: made when read)
                try:
                    self._repeat_body(body, scope)
                except AdError as exc:
                    _in_iteration(exc, scope.indices)
                    raise
                if stop_early and len(self.nodes) == nodes and self.rebinds == rebinds:
                    break   # nothing changed, so no later iteration can change anything
                if foresee and iteration == 0 and start + count * (len(self.nodes) - start) > self.node_limit:
                    raise _OverNodeLimit("foreseen", None)
                self.steps += len(body) + 1
                if self.steps > step_limit:   # iterations that only shuffle names, e.g. a = b
                    self.fail(_OverNodeLimit, f"the unrolled repeats run more than {step_limit:,} "
                              "statements", stmt, hint="lower the repeat count, or raise --node-limit")
        finally:
            self.repeat_stack.pop()
            scope.indices.pop(name, None)

    def _save(self, scope) -> tuple:
        """What unrolling a repeat changes, to go back to when it passes the node limit."""
        return (len(self.nodes), dict(scope.values), dict(self.literals), self.rebinds, self.steps,
                self.repeats_seen, self.visits, self.inlined,
                {name: entry[2] for name, entry in scope.indices.items()})

    def _restore(self, saved, scope):
        (n, values, literals, self.rebinds, self.steps, self.repeats_seen, self.visits,
         self.inlined, index_nodes) = saved
        for name, node_id in index_nodes.items():   # an outer index's const made since: gone
            if name in scope.indices:
                scope.indices[name][2] = node_id
        del self.nodes[n:]
        scope.values.clear()
        scope.values.update(values)
        self.literals.clear()
        self.literals.update(literals)

    def _loop(self, stmt, body, count, scope, name=None) -> bool:
        """Build a repeat as one `loop` node: its body built once, as a graph of its own,
        and `loop_out` nodes for the names it leaves bound. False (nothing built) when
        the body cannot be a loop: it changes a carried value's shape, builds nothing, or
        uses its index `name` other than as positions moving by a fixed step per iteration
        (X[t], Ws[t * h:(t + 1) * h, :], x[t + 1]) and as a number (0.1 * t): then
        `self.loop_refusal` says why.

        The body graph's leaves are `param` nodes: first the carried values (names the
        body assigns that were bound before it: each iteration's results are the next
        one's params), then the values it reads from outside (closed over). Its outputs
        are the carried names' new values, then the names first bound in the body (their
        values after the last iteration). Consts the body makes (numbers written in it)
        go outside, closed over, so a body holds no leaves but its params."""
        assigned = []
        for inner in _statements(body):   # (a nested repeat's names are the body's too)
            for target in ([inner.args[0]] if inner.kind == "assign" else
                           inner.args[0] if inner.kind == "unpack" else []):
                if target not in assigned:
                    assigned.append(target)
        carried = [n for n in assigned if isinstance(scope.values.get(n), int)]
        if any(n in scope.values and not isinstance(scope.values[n], int) for n in assigned):
            return False
        # results by position: the carried names first (position p is param slot p's next value)
        assigned = carried + [n for n in assigned if n not in carried]
        # inside an enclosing loop's body, built once for all its iterations, that loop's
        # index is a·t + b of its own: a loop of this body's own cannot follow it (unrolled,
        # this repeat reads it as the enclosing body does)
        enclosing = [n for n, entry in scope.indices.items() if n != name and isinstance(entry[0], _Affine)]
        if any(_reads(body, n) for n in enclosing):
            self.loop_refusal = "it reads the index of the loop around it"
            return False
        saved = self._save(scope)
        start = len(self.nodes)
        initial = [scope.values[n] for n in carried]
        for n, node_id in zip(carried, initial):
            scope.values[n] = self.emit("param", (), stmt, {"name": n}, shape=self.nodes[node_id].shape)
        self.repeats_seen += 1
        marker = [self.repeats_seen, 0, count, stmt.line, 0]
        self.repeat_stack.append(marker)
        outer = self.loop_index, self.loop_trouble   # (a loop built inside another's body, in a def)
        if name is not None:   # the index: a·t + b as a position, a param as a number
            scope.indices[name] = [_Affine(1, 0), stmt.line, None]
            self.loop_index, self.loop_trouble = (name, count), None
        try:
            self._repeat_body(body, scope)
        except _NotALoop as exc:
            self.loop_refusal = exc.reason
            self._restore(saved, scope)
            return False
        except AdError:
            if name is None:
                raise
            # unrolled, the same problem is said with its iteration (t = 0: it does not
            # depend on the index, or it would have been noted as trouble)
            self._restore(saved, scope)
            return False
        finally:
            self.repeat_stack.pop()
            index_node = scope.indices.pop(name)[2] if name is not None else None
            trouble = self.loop_trouble
            self.loop_index, self.loop_trouble = outer
        results = [scope.values.get(n) for n in assigned]   # (a name only an inner repeat of 0 binds: none)
        if not all(isinstance(r, int) for r in results) or any(
                self.nodes[scope.values[n]].shape != self.nodes[i].shape for n, i in zip(carried, initial)):
            self._restore(saved, scope)
            return False
        if index_node is not None and index_node in results:
            self.loop_refusal = f"it binds a name to its index {name} itself"
            self._restore(saved, scope)
            return False
        if trouble is not None:   # a position out of range from iteration `trouble` on
            self._restore(saved, scope)
            self._say_iteration(stmt, body, scope, name, trouble)
            return False
        body_nodes = sum(node.op not in ("param", "const") for node in self.nodes[start:])
        if not body_nodes:   # a body that computes nothing (`g = 2; h = h`) is unrolled: it stops early
            self._restore(saved, scope)
            return False
        built = self.nodes[start:]
        del self.nodes[start:]
        # numbers and constants written in the body: outside it, made once
        moved = {}
        for node in built:
            if node.op == "const":
                moved[node.id] = len(self.nodes)
                node.id = len(self.nodes)
                self.nodes.append(node)
        for value, node_id in list(self.literals.items()):
            if node_id in moved:
                self.literals[value] = moved[node_id]
        for entry in scope.indices.values():   # an outer (unrolled) index's const, read in the body
            if entry[2] in moved:
                entry[2] = moved[entry[2]]
        outside = lambda i: moved.get(i, i) if i < start or i in moved else None   # noqa: E731
        closed = []   # outer node ids the body reads, in order of first use
        for node in built:
            for i in node.inputs:
                j = outside(i)
                if j is not None and j not in closed:
                    closed.append(j)
        for r in results:
            j = outside(r)
            if j is not None and j not in closed:
                closed.append(j)
        # the body's params are its `input` nodes, named by slot ($0, $1, ...): the loop
        # runs the body as a program of its own (adcli.interpret.Runner._loop)
        local = {}
        nodes = []
        for node in built:   # the carried params first, as emitted
            if node.op == "param" and node.id != index_node:
                local[node.id] = len(nodes)
                node.id = len(nodes)
                node.op = "input"
                node.attrs = {"name": f"${node.id}", "carried": node.attrs["name"]}
                nodes.append(node)
        for j in closed:
            outer = self.nodes[j]
            param = Node(len(nodes), "input", (), outer.shape,
                         {"name": f"${len(nodes)}", "outer": outer.attrs.get("name") or outer.var},
                         outer.line, outer.column, outer.start, outer.end, outer.source)
            local[("outer", j)] = len(nodes)
            nodes.append(param)
        n_inputs = len(nodes)
        if index_node is not None:   # the index, after the loop's inputs: the loop sets it per iteration
            node = next(node for node in built if node.id == index_node)
            local[node.id] = len(nodes)
            node.id, node.op = len(nodes), "input"
            node.attrs = {"name": f"${node.id}", "index": name}
            nodes.append(node)
        resolve = lambda i: local[("outer", outside(i))] if outside(i) is not None else local[i]  # noqa: E731
        for node in built:
            if node.op in ("input", "const"):   # the params (inputs now), the consts moved out
                continue
            node.inputs = tuple(resolve(i) for i in node.inputs)
            local[node.id] = len(nodes)
            node.id = len(nodes)
            nodes.append(node)
        for node in nodes:
            if REGISTRY.get(node.op) is not None and REGISTRY[node.op].movement:
                _set_moves(node, [nodes[i].shape for i in node.inputs])
        outputs = [resolve(r) for r in results]
        body_graph = Graph(nodes, inputs={f"${i}": i for i in range(n_inputs + (index_node is not None))},
                           consts={},
                           outputs={n: o for n, o in zip(assigned, outputs)},
                           dims=dict(self.dims), filename=self.filename, source=self.text)
        for n, node_id in zip(carried, initial):   # the values going in, as before the body
            scope.values[n] = node_id
        loop = self.emit("loop", tuple(initial) + tuple(closed), stmt,
                         {"body": body_graph, "count": count, "carried": len(carried),
                          "results": tuple(assigned)}, shape=())
        for position, n in enumerate(assigned):
            node_id = self.emit("loop_out", (loop,), stmt, {"position": position, "name": n},
                                shape=nodes[outputs[position]].shape)
            if scope.values.get(n) != node_id:
                self.rebinds += 1
            scope.values[n] = node_id
        return True

    def _say_iteration(self, stmt, body, scope, name, t):
        """Build iteration t of a repeat alone, unrolled, to say the problem it has there as
        unrolling the repeat says it (the iterations before it have none: they are the
        body's, with positions in range)."""
        saved = self._save(scope)
        scope.indices[name] = [t, stmt.line, None]
        try:
            self._repeat_body(body, scope)
        except AdError as exc:
            _in_iteration(exc, scope.indices)
            raise
        finally:
            scope.indices.pop(name, None)
            self._restore(saved, scope)

    def _not_a_loop(self, body, count) -> str:
        """Why a repeat past the node limit did not stay a loop (docs/language.md)."""
        if self.loop_refusal:
            return self.loop_refusal
        return "a value it carries changes shape, or its body computes nothing"

    def _check_index(self, index: Ast, stmt, body, scope) -> str:
        """The name of `repeat T as NAME`: a new name, never assigned in the body."""
        name = index.args[0]
        if name in BUILTINS:
            self.fail(NameProblem, f"'{name}' is a built-in function and cannot name a loop index", index)
        if name in scope.indices:
            self.fail(NameProblem, f"'{name}' is already the index of the repeat at line "
                      f"{scope.indices[name][1]}; a nested repeat needs an index of its own", index)
        if name in self.dims or name in self.inputs or name in self.consts or name in self.defs \
                or name in self.int_consts:   # (an integer const too: the index would hide it)
            self.fail(NameProblem, f"'{name}' is already declared; a loop index needs a new name", index)
        if name in scope.values:
            self.fail(NameProblem, f"'{name}' already names a value; a loop index needs a new name", index)
        for inner in _statements(body):   # checked once, even for a count of 0
            if (inner.kind == "assign" and inner.args[0] == name) or \
                    (inner.kind == "unpack" and name in inner.args[0]):
                self.fail(NameProblem, f"'{name}' is the index of the repeat at line {stmt.line} "
                          "and cannot be assigned in its body", inner)
            if inner.kind == "repeat" and inner.args[2] is not None and inner.args[2].args[0] == name:
                self.fail(NameProblem, f"'{name}' is already the index of the repeat at line "
                          f"{stmt.line}; a nested repeat needs an index of its own", inner.args[2])
        return name

    def _repeat_body(self, body, scope):
        for inner in body:
            if inner.kind in ("dim", "input", "const", "def", "output"):
                self.fail(SyntaxProblem, f"'{inner.kind}' is not allowed inside repeat; "
                          "a repeat body holds assignments and nested repeats", inner)
            self.statement(inner, scope)

    def stmt_return(self, stmt, scope):
        if scope.in_def is None:
            self.fail(SyntaxProblem, "return is only allowed at the end of a def", stmt)
        values = tuple(self.expr(value, scope) for value in stmt.args)
        # `return a, b`: a tuple of values, which only an unpacking may take apart
        scope.values["$return"] = values[0] if len(values) == 1 else values

    # -- integers (dims, sizes, indices, axes) ----------------------------------------------
    def integer(self, ast, scope, what: str, positive=False, affine=False) -> int:
        """A whole number; with `affine`, while a loop's body is built once for all its
        iterations (Builder._loop), an _Affine of its index where the number follows it."""
        if ast.kind != "name" and self._is_int_data(ast, scope):   # lab[0], n - lab[k]
            data = self._int_data(ast, None, scope)
            if data.ndim:
                self.fail(ShapeProblem, f"this is integer data ({_int_type(data.shape)}), where {what} "
                          "is one whole number", ast)
            value = self._small(int(data), what, ast)
        else:
            value = self._integer(ast, scope, what)
        if isinstance(value, _Affine) and not affine:   # a size, an axis, a step, ...: the same every time
            raise _NotALoop(f"{what} changes with {self.loop_index[0]}")
        if positive and value < 1:
            self.fail(ValueProblem, f"{what} must be positive, got {value}", ast)
        return value

    def _integer(self, ast, scope, what):
        kind = ast.kind
        if kind == "number":
            value = ast.args[0]
            if not math.isfinite(value) or value != int(value):
                self.fail(ValueProblem, f"{what} must be an integer, got {value:g}", ast)
            return self._small(int(value), what, ast)
        if kind == "name":
            name = ast.args[0]
            if name in self.dims:
                return self.dims[name]
            if name in scope.indices:
                return scope.indices[name][0]
            if name in self.int_consts and not self.int_consts[name].ndim:   # const f: int = 2
                return int(self.int_consts[name])
            if name in self.int_consts:
                typed = f"'{name}' is integer data ({_int_type(self.int_consts[name].shape)})"
                if what == "an index":
                    self.fail(ValueProblem, f"{typed}; {INDEX_DATA_RULE}", ast)
                self.fail(ValueProblem, f"{typed}, where {what} is one whole number (such as {name}[0])", ast)
            parts = "numbers, dims and loop indices" if scope.indices else "numbers and dims"
            self.fail(NameProblem, f"'{name}' is not a dim; {what} must be built from {parts}", ast)
        if kind == "neg":
            return -self._integer(ast.args[0], scope, what)
        if kind == "call" and ast.args[0] in SIZE_FUNCTIONS and ast.args[0] not in self.defs:
            return self._size_of(ast, scope)
        if kind == "binop":
            op, left, right = ast.args
            a, b = self._integer(left, scope, what), self._integer(right, scope, what)
            if isinstance(a, _Affine) or isinstance(b, _Affine):
                return self._small(_affine_op(op, a, b, self.loop_index[0]), what, ast)
            if op == "+":
                return self._small(a + b, what, ast)
            if op == "-":
                return self._small(a - b, what, ast)
            if op == "*":
                return self._small(a * b, what, ast)
            if op == "/":
                if b == 0 or a % b:
                    self.fail(ValueProblem, f"{what}: {a} / {b} is not a whole number", ast)
                return a // b
            if op == "^":
                if b < 0 and a not in (1, -1):
                    self.fail(ValueProblem, f"{what}: {a} ^ {b} is not a whole number", ast)
                if b < 0:
                    return a if b % 2 else 1
                if abs(a) > 1 and b > MAX_INTEGER.bit_length():   # checked before Python computes it
                    self.fail(ValueProblem, f"{what}: {a} ^ {b} is too large (the most is 2^53)", ast)
                return self._small(a ** b, what, ast)
        if what == "an index" and any(node.kind == "name" and node.args[0] in self.int_consts
                                      for node in _asts(ast)):
            self.fail(ValueProblem, f"this is not integer data: {INDEX_DATA_RULE}", ast)
        self.fail(ValueProblem, f"{what} must be an integer expression of numbers and dims", ast)

    def _size_of(self, ast, scope) -> int:
        """rows(X) or cols(X) of a const, input or value named above: dim n = rows(X)."""
        name, args, kwargs = ast.args
        self._arity(name, args, kwargs, 1, ast)
        arg = args[0]
        if arg.kind != "name":
            self.fail(ValueProblem, f"{name}(...) here takes the name of a const, input or value", arg)
        which = arg.args[0]
        if which in self.const_values:
            shape = self.const_values[which].shape
        elif which in scope.values:
            shape = self.nodes[scope.values[which]].shape
        elif which in self.global_scope.values:
            shape = self.nodes[self.global_scope.values[which]].shape
        elif which in self.int_consts:   # dim n = rows(labels)
            shape = self.int_consts[which].shape
            return self._size(name, shape, ast, _int_type(shape))
        else:
            self.fail(NameProblem, f"'{which}' is not a const, input or value declared above", arg)
        return self._size(name, shape, ast)

    def _size(self, name, shape, ast, kind=None) -> int:
        """rows: the first size (a vector's length); cols: a matrix's second size. `kind`:
        the value's type as the message says it (integer data's own: ivec[3])."""
        if name == "rows" and len(shape) >= 1:
            return shape[0]
        if name == "cols" and len(shape) == 2:
            return shape[1]
        self.fail(ShapeProblem, f"{with_article(kind or format_shape(shape))} has no {name}" + (
            "; a vector's length is rows(v)" if name == "cols" and len(shape) == 1 else ""), ast)

    def _small(self, value: int, what, ast) -> int:
        if isinstance(value, _Affine):   # too large in some iteration: said by unrolling
            if max(abs(value.b), abs(value.at(self.loop_index[1] - 1))) > MAX_INTEGER:
                raise _NotALoop(f"{what} passes 2^53 in some iteration")
            return value
        if abs(value) > MAX_INTEGER:
            self.fail(ValueProblem, f"{what} is too large: {value:,} is over 2^53", ast)
        return value

    # -- constant data ------------------------------------------------------------------------------
    def data(self, ast, shape, name) -> Data:
        """The recipe for an input's or const's value: checked now (names, arguments,
        shapes), made later. Without a declared type, data functions (randn, zeros, …)
        make a scalar and the value's own shape is the type (a list's, a const's)."""
        hint = () if shape is None else shape
        value = self._constant(ast, hint, abstract=True)
        if ast.kind == "call" and ast.args[0] == "load" and shape is not None \
                and _shape_of(value) != tuple(shape):   # data from a file is not broadcast
            self.fail(ShapeProblem, f"{ast.args[1][0].args[0]} holds {with_article(format_shape(_shape_of(value)))}, "
                      f"but {name} is declared {format_shape(shape)}", ast)
        return Data(self, ast, self._fit(value, shape, name, ast), hint, shape, name)

    def make_data(self, data: Data) -> np.ndarray:
        """Evaluate a recipe (in the file's context: its errors point into the file)."""
        saved = self.filename, self.lines
        self.filename, self.lines = data.filename, data.lines
        try:
            with _deep_recursion():
                value = np.asarray(self._constant(data.ast, data.hint), dtype=np.float64)
        except RecursionError:
            raise ValueProblem(f"the value of {data.name} nests too deeply", self.loc(data.ast)) from None
        finally:
            self.filename, self.lines = saved
        if data.ast.kind in ("name", "attr") or not value.flags.owndata:
            value = np.array(value)   # not another const's array (or a view of it)
        if data.declared is None or value.shape == tuple(data.declared):
            return value
        return np.array(np.broadcast_to(value, data.declared))

    def remake_consts(self, given: dict) -> dict:
        """The consts a run sets (`given`, name -> array) and, in declaration order, every
        const computed from them, made again with their values: const Xc = X - mean(X)
        follows an X set by --at."""
        changed = dict(given)
        for name, data in self.const_values.items():
            if name not in changed and self.reads(data.ast, changed):
                changed[name] = self.remake(data, changed)
        return changed

    def remake(self, data: Data, changed: dict) -> np.ndarray:
        """A recipe made again (not kept) with the consts in `changed` in place of the file's."""
        saved = self.const_overrides
        self.const_overrides = changed
        try:
            fresh = Data(self, data.ast, data.shape, data.hint, data.declared, data.name)
            fresh.filename, fresh.lines = data.filename, data.lines
            return self.make_data(fresh)
        finally:
            self.const_overrides = saved

    def reads(self, ast, names) -> bool:
        """Whether an expression reads any of `names`, in the defs it calls included."""
        pending, seen = [ast], set()
        while pending:
            for node in _asts(pending.pop()):
                if node.kind == "name" and node.args[0] in names:
                    return True
                if node.kind in ("call", "name") and node.args[0] in self.defs and node.args[0] not in seen:
                    seen.add(node.args[0])   # (a name: a def given to grad(f), jvp(f, …))
                    pending.append(self.defs[node.args[0]].body)
        return False

    def constant(self, ast, shape, name) -> np.ndarray:
        """A constant expression's value, made now (--at, --direction, --cotangent)."""
        hint = () if shape is None else shape
        with _deep_recursion():
            shape = self._fit(self._constant(ast, hint, abstract=True), shape, name, ast)
            value = np.asarray(self._constant(ast, hint), dtype=np.float64)
        return value if value.shape == shape else np.array(np.broadcast_to(value, shape))

    def _fit(self, value, shape, name, ast) -> tuple:
        """The shape the value takes: the declared type, which it must broadcast to."""
        own = _shape_of(value)
        if shape is None:
            return tuple(own)
        if broadcast_shapes(own, shape) != tuple(shape) or len(own) > len(shape):
            self.fail(ShapeProblem, f"the value of {name} is {format_shape(own)}, "
                      f"which does not fit its type {format_shape(shape)}", ast)
        return tuple(shape)

    def _constant(self, ast, shape, abstract=False):
        """A constant expression's value; with `abstract`, checked without making
        data: data functions and consts give their _Shape, numbers and dims stay numbers."""
        kind = ast.kind
        if kind == "number":
            return np.float64(ast.args[0])
        if kind == "list":
            if not ast.args[0]:
                self.fail(ShapeProblem, "an empty list has no shape", ast)
            items = [self._constant(item, None, abstract) for item in ast.args[0]]
            if any(isinstance(item, _Shape) for item in items):
                shapes = {_shape_of(item) for item in items}
                if len(shapes) != 1:
                    self.fail(ShapeProblem, "the rows of this list have different lengths", ast)
                return _Shape((len(items),) + shapes.pop())
            try:
                return np.array(items, dtype=np.float64)
            except ValueError:
                self.fail(ShapeProblem, "the rows of this list have different lengths", ast)
        if kind == "name":
            name = ast.args[0]
            if name in self.dims:
                return np.float64(self.dims[name])
            if name in self.const_values:
                data = self.const_values[name]
                if abstract:
                    return _Shape(data.shape)
                return self.const_overrides[name] if name in self.const_overrides else data.value
            if name in CONSTANTS:
                return np.float64(CONSTANTS[name])
            if name in ("zeros", "ones", "randn", "rand"):   # the functions that need no argument
                return self._data_call(Ast("call", (name, (), {}), ast.line, ast.column), shape, abstract)
            if name in self.int_consts:
                self._integer_data_in_arithmetic(name, ast)
            self.fail(NameProblem, f"'{name}' is not a dim or const; initial values are constant data", ast)
        if kind == "neg":
            value = self._constant(ast.args[0], shape, abstract)
            return value if isinstance(value, _Shape) else -value
        if kind == "binop":
            op, left, right = ast.args
            a, b = self._constant(left, shape, abstract), self._constant(right, shape, abstract)
            try:
                if isinstance(a, _Shape) or isinstance(b, _Shape):
                    sa, sb = _shape_of(a), _shape_of(b)
                    if op == "@":
                        return _Shape(_matmul_shape(sa, sb))
                    out = broadcast_shapes(sa, sb)
                    if out is None:
                        raise ValueError
                    return _Shape(out)
                with np.errstate(all="ignore"):
                    return {"+": np.add, "-": np.subtract, "*": np.multiply, "/": np.divide,
                            "^": np.power, "@": np.matmul}[op](a, b)
            except ValueError:
                self.fail(ShapeProblem, f"shapes {format_shape(_shape_of(a))} and "
                          f"{format_shape(_shape_of(b))} do not fit for '{op}'", ast)
        if kind == "call":
            name, args, kwargs = ast.args
            if name == "load" and name not in self.defs:
                return self._load(ast, abstract)
            if name in DATA_FUNCTIONS:
                return self._data_call(ast, shape, abstract)
            if name in UNARY_FUNCTIONS and len(args) == 1 and not kwargs:
                value = self._constant(args[0], shape, abstract)
                if isinstance(value, _Shape):
                    return value
                return REGISTRY[name].evaluate(np, np.asarray(value, dtype=np.float64))
            if name in BINARY_FUNCTIONS and len(args) == 2 and not kwargs:
                a, b = (self._constant(arg, shape, abstract) for arg in args)
                out = broadcast_shapes(_shape_of(a), _shape_of(b))
                if out is None:
                    self.fail(ShapeProblem, f"shapes {format_shape(_shape_of(a))} and "
                              f"{format_shape(_shape_of(b))} do not broadcast for '{name}'", ast)
                if isinstance(a, _Shape) or isinstance(b, _Shape):
                    return _Shape(out)
                with np.errstate(all="ignore"):
                    return REGISTRY[name].evaluate(np, np.asarray(a, dtype=np.float64),
                                                   np.asarray(b, dtype=np.float64))
            return self._computed_constant(ast, abstract)   # sum, softmax, concat, a def, ...
        if kind in ("compare", "logic", "not", "index"):
            return self._computed_constant(ast, abstract)
        if kind == "string":
            self.fail(ValueProblem, "a string is only the path or key of load(...)", ast)
        if kind == "tuple":
            self.fail(ValueProblem, TUPLE_PLACES, ast)
        if kind == "attr" and ast.args[1] == "T":
            value = self._constant(ast.args[0], None, abstract)
            if isinstance(value, _Shape):
                return _Shape(tuple(reversed(value.shape)))
            return np.asarray(value).T
        self.fail(ValueProblem, "initial values must be constant data (numbers, lists, dims, "
                  "consts, zeros, ones, full, randn, rand, linspace)", ast)

    def _load(self, ast, abstract, integer=False):
        """load(path[, key]): data from a .npy, .npz, .json or .csv file, its path relative to
        the .ad file. Checking only (`abstract`): the shape, from a .npy or .npz header without
        reading the data (refused there when it could not fit); a .json or .csv file has no
        header and is parsed now, once. Made: the numbers as float64, all finite; with
        `integer` (an integer const's value), as int64, all whole numbers."""
        name, args, kwargs = ast.args
        if kwargs or len(args) not in (1, 2):
            self.fail(ValueProblem, "load takes a path and, for some formats, a key: "
                      "load(\"data.npz\", \"x\")", ast)
        if args[0].kind != "string":
            self.fail(ValueProblem, "the path of load(...) is a string in quotes: load(\"data.npy\")", args[0])
        key = None
        if len(args) == 2:
            if args[1].kind == "string":
                key = args[1].args[0]
            elif args[1].kind == "number":   # a .csv column by its number
                key = args[1].args[0]
            else:
                self.fail(ValueProblem, "the key of load(...) is a string in quotes (or a .csv column's "
                          "number)", args[1])
        shown = args[0].args[0]
        from . import data_files   # here, not at start-up: only load(...) reads files (csv, pathlib)

        path = data_files.resolve(shown, self.base_dir)
        where = (str(path), key)
        try:
            suffix = data_files.file_format(path, shown)
            data_files.check_key(suffix, key, shown)
            if suffix in (".npy", ".npz"):
                if abstract or where not in self.loaded:
                    header, dtype = data_files.header(path, suffix, key, shown)
                    data_files.as_float(np.empty(0, dtype), shown)
                    header = data_files.check_dimensions(header, shown)
                    self.check_size(header, f"the data in {shown}", ast,
                                    hint="load a part of it, or raise --memory-limit")
                    self.loaded[where] = header   # (integer consts read the data at once)
                    if abstract:
                        return _Shape(header)
                array = data_files.read_binary(path, suffix, key, shown)
                if tuple(array.shape) != self.loaded[where]:
                    self.fail(ValueProblem, f"{shown} changed since the file was built: it held a "
                              f"{format_shape(self.loaded[where])} and now holds a "
                              f"{format_shape(array.shape)}", ast)
            else:
                array = self.loaded.get(where)
                if array is None:   # parsed once, when the file is built
                    if self.memory_cap is None:
                        from .memory import default_memory_limit
                        self.memory_cap = default_memory_limit()
                    array = data_files.read_text(path, suffix, key, shown, self.memory_cap)
                    data_files.check_dimensions(array.shape, shown)
                    self.loaded[where] = array
                if abstract:
                    return _Shape(array.shape)
            if integer:   # indices: whole numbers only, as int64
                if array.ndim > 2:
                    self.fail(ShapeProblem, f"{shown} holds an array of {array.ndim} dimensions; integer data "
                              "has at most 2", ast)
                return data_files.as_integers(array, shown, MAX_INTEGER)
            array = data_files.as_float(array, shown)
            data_files.check_finite(array, shown)
            return np.array(array)   # its own array: a const's value is never another's view
        except data_files.DataFileProblem as exc:
            self.fail(ValueProblem, exc.message, args[0], exc.hint)

    def _computed_constant(self, ast, abstract):
        """A constant expression that is not plain data (a reduction, softmax, concat, an
        index, a comparison, a def call, ...): built as a small graph of the very ops the
        program would use (same names, arguments and shape checks), then evaluated with
        their NumPy rules, on the host in float64. Checking only: its shape."""
        sub = _ConstantBuilder(self, abstract)
        with np.errstate(all="ignore"):
            node = sub.expr(ast, sub.global_scope)
            if abstract:
                return _Shape(sub.nodes[node].shape)
            return sub.evaluate(node)

    def _data_call(self, ast, shape, abstract=False):
        name, args, kwargs = ast.args
        if shape is None:
            self.fail(ShapeProblem, f"{name}(...) needs a declared type to know its shape, "
                      f"e.g. `input x: vec[3] = {name}(...)`", ast)
        allowed = {"zeros": ((), ()), "ones": ((), ()), "full": (("value",), ()),
                   "randn": ((), ("seed",)), "rand": ((), ("seed",)),
                   "linspace": (("start", "stop"), ())}[name]
        positional, keywords = allowed
        names = list(positional)
        if len(args) > len(names):
            takes = (f"{len(names)} positional argument{'s' if len(names) != 1 else ''} ({', '.join(names)})"
                     if names else "no positional arguments")
            self.fail(ValueProblem, f"{name} takes {takes}, got {len(args)}", ast)
        values = {}
        for pname, arg in zip(names, args):
            values[pname] = self._scalar_constant(arg, abstract)
        for key, arg in kwargs.items():
            if key not in names and key not in keywords:
                self.fail(ValueProblem, f"{name} has no argument '{key}'", arg)
            values[key] = self._scalar_constant(arg, abstract)
        missing = [p for p in names if p not in values]
        if missing:
            self.fail(ValueProblem, f"{name} needs {', '.join(missing)}", ast)
        seed = values.get("seed", 0)
        if seed is not None and (not math.isfinite(seed) or seed != int(seed) or seed < 0):
            self.fail(ValueProblem, f"seed must be a non-negative integer, got {seed:g}", ast)
        if abstract:   # checked; a seed computed from consts is checked when the data is made
            return _Shape(shape)
        if name == "zeros":
            return np.zeros(shape)
        if name == "ones":
            return np.ones(shape)
        if name == "full":
            return np.full(shape, values["value"])
        if name == "linspace":
            return np.linspace(values["start"], values["stop"], prod(shape)).reshape(shape)
        rng = np.random.default_rng(int(seed))
        return rng.standard_normal(shape) if name == "randn" else rng.random(shape)

    def _scalar_constant(self, ast, abstract=False) -> float | None:
        """A single number; None when, checking only, it depends on data not made yet."""
        value = self._constant(ast, None, abstract)
        if _shape_of(value) != ():
            self.fail(ValueProblem, "expected a single number here", ast)
        return None if isinstance(value, _Shape) else float(value)

    # -- expressions ----------------------------------------------------------------------------------
    def lookup(self, name: str, ast, scope: _Scope) -> int:
        if name in scope.indices:   # a loop index: this iteration's number, a constant
            return self._index_value(scope.indices[name], ast)
        if name in scope.values:
            return scope.values[name]
        if scope.in_def is not None and name in self.consts:
            return self.consts[name]
        if name in self.dims:
            return self.literal(self.dims[name], ast)
        if name in self.int_consts:
            self._integer_data_in_arithmetic(name, ast)
        if name in DATA_FUNCTIONS and name not in self.defs:   # h = zeros: it has no shape here
            self._constant_data_only(name, ast)
        if name in BUILTINS or name in self.defs:
            self.fail(NameProblem, f"'{name}' is a function; call it as {name}(...)", ast)
        if scope.in_def is not None and (name in self.global_scope.values or name in self.global_scope.indices):
            self.fail(NameProblem, f"'{name}' is not visible inside def {scope.in_def.name}: "
                      "a def sees its parameters, dims, consts and earlier defs; pass it as a parameter", ast)
        if name in CONSTANTS:
            return self.literal(CONSTANTS[name], ast)
        known = set(scope.values) | set(scope.indices) | set(self.dims) | set(CONSTANTS) \
            | (set(self.consts) if scope.in_def is not None else set())
        self.fail(NameProblem, f"name '{name}' is not defined{_did_you_mean(name, known)}", ast)

    def _index_value(self, entry: list, ast) -> int:
        """The node of a loop index read as a number: in an unrolled iteration a const of
        that iteration's own (not a literal shared with equal numbers: then a loop, whose
        index is a param of its body, counts what the unrolled program counts), in a loop's
        body a param that the loop sets per iteration. Made on first use, then shared."""
        if entry[2] is None:
            if isinstance(entry[0], _Affine):
                entry[2] = self.emit("param", (), ast, {"name": self.loop_index[0], "index": True}, shape=())
            else:
                entry[2] = self.emit("const", (), ast, {"value": np.float64(entry[0])}, shape=())
        return entry[2]

    def _constant_data_only(self, name, ast):
        """zeros, randn, … in an expression: they take their shape from a declared type."""
        example = {"full": "full(2)", "randn": "randn(seed=1)", "rand": "rand(seed=1)",
                   "linspace": "linspace(0, 1)", "load": 'load("h.npy")'}.get(name, name)
        self.fail(ValueProblem, f"{name} makes constant data, which takes its shape from a declared "
                  f"type: declare it as an input or const, e.g. `const h: vec[3] = {example}`, and use "
                  "its name", ast)

    def _integer_data_in_arithmetic(self, name, ast):
        self.fail(ValueProblem, f"'{name}' is integer data ({_int_type(self.int_consts[name].shape)}): "
                  f"it can only index, as in x[{name}], take_along_axis(x, {name}, axis=…) or "
                  f"scatter_add(v, {name}, n)", ast)

    def expr(self, ast: Ast, scope: _Scope) -> int:
        self.visits += 1
        if self.visits > STEPS_PER_NODE * self.node_limit:
            self._too_much_inlining(ast, f"visits more than {STEPS_PER_NODE * self.node_limit:,} "
                                         "expressions")
        kind = ast.kind
        if kind == "number":
            return self.literal(ast.args[0], ast)
        if kind == "name":
            return self.lookup(ast.args[0], ast, scope)
        if kind == "neg":
            return self.emit("neg", (self.expr(ast.args[0], scope),), ast)
        if kind == "binop":
            op, left, right = ast.args
            a, b = self.expr(left, scope), self.expr(right, scope)
            return self.emit(BINARY_OPS[op], (a, b), ast)
        if kind == "compare":
            op, left, right = ast.args
            a, b = self.expr(left, scope), self.expr(right, scope)
            return self.emit(COMPARE_OPS[op], (a, b), ast)
        if kind == "logic":
            op, left, right = ast.args
            a, b = self.expr(left, scope), self.expr(right, scope)
            return self.emit("logical_" + op, (a, b), ast)
        if kind == "not":
            return self.emit("logical_not", (self.expr(ast.args[0], scope),), ast)
        if kind == "attr":
            value, attr = ast.args
            node = self.expr(value, scope)
            if attr != "T":
                self.fail(NameProblem, f"unknown attribute .{attr} (only .T, the transpose, exists)", ast)
            if len(self.nodes[node].shape) < 2:
                return node   # like NumPy, .T of a scalar or vector is itself
            return self.emit("transpose", (node,), ast)   # (every axis reversed, as NumPy's .T)
        if kind == "index":
            return self.index(ast, scope)
        if kind == "call":
            return self.call(ast, scope)
        if kind == "apply":
            return self.apply(ast, scope)
        if kind == "string":
            self.fail(ValueProblem, "a string is only the path or key of load(...)", ast)
        if kind == "tuple":
            self.fail(ValueProblem, TUPLE_PLACES, ast)
        if kind == "list":
            items = [self.expr(item, scope) for item in ast.args[0]]
            if not items:
                self.fail(ShapeProblem, "an empty list has no shape", ast)
            return self.emit("stack", tuple(items), ast)
        self.fail(SyntaxProblem, f"unexpected {kind} in an expression", ast)

    def index(self, ast, scope) -> int:
        value, subscripts = ast.args
        node = self.expr(value, scope)
        shape = self.nodes[node].shape
        if len(subscripts) > len(shape):
            if not shape:
                self.fail(ShapeProblem, "a scalar cannot be indexed", ast)
            self.fail(ShapeProblem, f"{len(subscripts)} indices for {with_article(format_shape(shape))}, which has "
                      f"{len(shape)} ax{'is' if len(shape) == 1 else 'es'}", ast)
        key = [self._key_part(sub, shape[axis], format_shape(shape), scope, affine=True)
               for axis, sub in enumerate(subscripts)]
        key = tuple(key)
        # in a loop's body, parts that follow its index (_Affine): iteration 0's key, and steps
        steps = tuple(part.a if isinstance(part, _Affine) else
                      part.start.a if isinstance(part, slice) and isinstance(part.start, _Affine) else 0
                      for part in key)
        if any(steps):
            key = tuple(part.b if isinstance(part, _Affine) else
                        slice(part.start.b, part.stop.b) if isinstance(part, slice) and isinstance(part.start, _Affine)
                        else part for part in key)
        if any(isinstance(part, np.ndarray) for part in key):
            if any(steps):
                raise _NotALoop(f"a gather's positions change with {self.loop_index[0]}")
            return self._gather(node, key, ast)
        result_shape = tuple(len(range(*part.indices(size))) for part, size in zip(key, shape)
                             if isinstance(part, slice)) + tuple(shape[len(key):])
        node = self.emit("index", (node,), ast, {"key": key, "result_shape": result_shape})
        if any(steps):
            self.nodes[node].key_steps = steps
            self.nodes[node].key_index = self.loop_index[0]
        return node

    def _key_part(self, sub, size: int, indexed: str, scope, affine=False):
        """One subscript of a value of type `indexed` along an axis of length `size`: a
        slice, an index (an int), or integer data (an array: a gather). `affine`: positions
        that follow a loop's index may be _Affine (Builder.index)."""
        if sub.kind == "slice":
            lo_ast, hi_ast, step_ast = (tuple(sub.args) + (None,))[:3]
            if step_ast is not None:
                try:
                    return self._step_slice(sub, lo_ast, hi_ast, step_ast, size, scope)
                except _NotALoop:
                    raise _NotALoop(f"a slice with a step moves with {self.loop_index[0]}") from None
            lo = 0 if lo_ast is None else self.integer(lo_ast, scope, "a slice bound", affine=affine)
            hi = size if hi_ast is None else self.integer(hi_ast, scope, "a slice bound", affine=affine)
            if isinstance(lo, _Affine) or isinstance(hi, _Affine):
                return self._moving_slice(lo, hi, size)
            lo, hi = (lo + size if lo < 0 else lo), (hi + size if hi < 0 else hi)
            if not 0 <= lo <= size or not 0 <= hi <= size:
                self.fail(ShapeProblem, f"slice {lo}:{hi} is out of range for an axis of "
                          f"length {size} in {indexed}", sub)
            if hi < lo:   # Python would give nothing; a reversed range is surely a mistake
                self.fail(ShapeProblem, f"slice {lo}:{hi} ends before it starts (an empty slice "
                          f"is lo:lo, a reversed one lo:hi:-1)", sub)
            return slice(lo, hi)
        try:
            positions = self._index_array(sub, scope)
        except _NotALoop:
            raise _NotALoop(f"a gather's positions change with {self.loop_index[0]}") from None
        if positions is not None and positions.ndim:   # a gather, NumPy's integer-array indexing
            return self._in_range(positions, size, indexed, sub)
        i = self.integer(sub, scope, "an index", affine=affine) if positions is None else int(positions)
        if isinstance(i, _Affine):
            i = self._from_the_end(i, size)
            self._in_range_from(lambda t: 0 <= i.at(t) < size)
            return i
        if not -size <= i < size:
            self.fail(ShapeProblem, f"index {i} is out of range for an axis of length {size} "
                      f"in {indexed}", sub)
        return i + size if i < 0 else i

    def _from_the_end(self, i: "_Affine", size: int):
        """A position a·t + b that is negative (counting from the end) in every iteration or in
        none, as the position it stands for; counting from the end in some iterations only
        is not a·t + b."""
        first, last = i.b, i.at(self.loop_index[1] - 1)
        if (first < 0) != (last < 0):
            raise _NotALoop("a position counts from the end in some iterations only")
        return _Affine(i.a, i.b + size) if first < 0 else i

    def _in_range_from(self, ok):
        """Note the first iteration t where `ok(t)` fails (a position moving by the same step
        every iteration leaves the range at most once): Builder._loop then says the problem
        as the unrolled iteration does."""
        last = self.loop_index[1] - 1
        if ok(0) and ok(last):
            return
        lo, hi = 0, last   # ok(lo), not ok(hi)
        if not ok(0):
            hi = 0
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if ok(mid) else (lo, mid)
        self.loop_trouble = hi if self.loop_trouble is None else min(self.loop_trouble, hi)

    def _moving_slice(self, lo, hi, size) -> slice:
        """lo:hi in a loop's body, one or both following its index: a slice of the same
        length every iteration, bounds as _Affine."""
        lo, hi = (x if isinstance(x, _Affine) else _Affine(0, x) for x in (lo, hi))
        if lo.a != hi.a:
            raise _NotALoop(f"a slice's length changes with {self.loop_index[0]}")
        lo, hi = self._from_the_end(lo, size), self._from_the_end(hi, size)
        self._in_range_from(lambda t: 0 <= lo.at(t) <= hi.at(t) <= size)
        return slice(lo, hi)

    def _step_slice(self, sub, lo_ast, hi_ast, step_ast, size, scope) -> slice:
        """lo:hi:step with Python's meaning (a negative step walks back; open ends go to the
        ends the step walks to), as a slice NumPy applies the same way; it may pick nothing."""
        step = self.integer(step_ast, scope, "a slice step")
        if step == 0:
            self.fail(ValueProblem, "a slice step must not be 0", step_ast)
        lo = None if lo_ast is None else self.integer(lo_ast, scope, "a slice bound")
        hi = None if hi_ast is None else self.integer(hi_ast, scope, "a slice bound")
        picked = range(*slice(lo, hi, step).indices(size))
        if not picked:
            return slice(0, 0, 1)
        # the same elements with explicit bounds (a stop of -1 would mean the last element)
        return slice(picked.start, picked.stop if picked.stop >= 0 else None, step)

    # -- integer data: consts, gathers, take_along_axis, scatter_add ---------------------------
    def stmt_int_const(self, stmt, scope):
        """const NAME: int | ivec[n] | imat[r, c] = VALUE: indices, made now (they decide
        shapes and are checked against the axes they index when the file is built)."""
        name, type_ast, expr = stmt.args
        shape = self.type_shape(type_ast, scope, f"const {name}")
        value = self._int_data(expr, shape, scope)
        own = value.shape
        if _is_load(expr, self.defs) and own != shape:   # data from a file is not broadcast
            self.fail(ShapeProblem, f"{expr.args[1][0].args[0]} holds {with_article(_int_type(own))}, but {name} is "
                      f"declared {_int_type(shape)}", expr)
        if broadcast_shapes(own, shape) != shape or len(own) > len(shape):
            self.fail(ShapeProblem, f"the value of {name} is {_int_type(own)}, which does not fit "
                      f"its type {_int_type(shape)}", expr)
        self.int_consts[name] = np.array(np.broadcast_to(value, shape), dtype=np.int64)

    def _int_data(self, ast, shape, scope) -> np.ndarray:
        """The value of integer data: whole numbers, lists of them, dims, loop indices, other
        integer consts, arange, randint(high, seed=S), and + - * of those, their slices,
        elements and gathers, reshape, transpose, concat, stack and .T."""
        kind = ast.kind
        if kind == "number":
            return np.int64(self._integer(ast, scope, "integer data"))
        if kind == "name":
            name = ast.args[0]
            if name in scope.indices:
                if isinstance(scope.indices[name][0], _Affine):
                    raise _NotALoop(f"integer data changes with {name}")
                return np.int64(scope.indices[name][0])
            if name in self.int_consts:
                return self.int_consts[name]
            if name == "arange":
                return self._int_call(Ast("call", (name, (), {}), ast.line, ast.column), shape, scope)
            if name in self.dims:
                return np.int64(self.dims[name])
            self.fail(NameProblem, f"'{name}' is not a dim or integer const; integer data is made of "
                      "whole numbers, dims, integer consts, arange, randint and load", ast)
        if kind == "list":
            if not ast.args[0]:
                self.fail(ShapeProblem, "an empty list has no shape", ast)
            items = [self._int_data(item, None, scope) for item in ast.args[0]]
            if len({item.shape for item in items}) != 1:
                self.fail(ShapeProblem, "the rows of this list have different lengths", ast)
            if items[0].ndim > 1:
                self.fail(ShapeProblem, "integer data has at most 2 dimensions", ast)
            return np.array(items, dtype=np.int64)
        if kind == "neg":
            return -self._int_data(ast.args[0], shape, scope)
        if kind == "binop" and ast.args[0] in "+-*":
            op, left, right = ast.args
            a, b = self._int_data(left, shape, scope), self._int_data(right, shape, scope)
            if broadcast_shapes(a.shape, b.shape) is None:
                self.fail(ShapeProblem, f"shapes {_int_type(a.shape)} and {_int_type(b.shape)} do not "
                          f"fit for '{op}'", ast)
            if max(np.abs(a).max(initial=0), 1) * max(np.abs(b).max(initial=0), 1) > MAX_INTEGER:
                self.fail(ValueProblem, "integer data is too large: over 2^53", ast)
            return {"+": np.add, "-": np.subtract, "*": np.multiply}[op](a, b)
        if kind == "call" and ast.args[0] in INTEGER_DATA_FUNCTIONS:
            return self._int_call(ast, shape, scope)
        if _is_load(ast, self.defs):   # labels from a file: read now, as indices are
            return self._load(ast, abstract=False, integer=True)
        if kind == "attr" and ast.args[1] == "T":
            return self._int_data(ast.args[0], None, scope).T
        if kind == "index":
            return self._int_index(ast, scope)
        if kind == "call" and ast.args[0] in MOVEMENT_FUNCTIONS and ast.args[0] not in self.defs:
            return self._int_movement(ast, scope)
        if kind == "call" and ast.args[0] in SIZE_FUNCTIONS and ast.args[0] not in self.defs:
            return np.int64(self._size_of(ast, scope))
        self.fail(ValueProblem, "integer data is made of whole numbers, lists of them, dims, integer "
                  "consts, arange, randint(high, seed=S) and load(...), with + - *, slices, "
                  "reshape, concat and .T", ast)

    def _int_index(self, ast, scope) -> np.ndarray:
        """Integer data indexed as any value is: lab[0:2], pairs[:, 0], lab[t], lab[perm]."""
        value_ast, subscripts = ast.args
        value = self._int_data(value_ast, None, scope)
        if len(subscripts) > value.ndim:
            if not value.ndim:
                self.fail(ShapeProblem, "a whole number cannot be indexed", ast)
            self.fail(ShapeProblem, f"{len(subscripts)} indices for {with_article(_int_type(value.shape))}, which "
                      f"has {value.ndim} ax{'is' if value.ndim == 1 else 'es'}", ast)
        key = tuple(self._key_part(sub, value.shape[axis], _int_type(value.shape), scope)
                    for axis, sub in enumerate(subscripts))
        picked = value[key]
        if picked.ndim > 2:
            self.fail(ShapeProblem, f"this gather would make {picked.ndim}-D integer data; integer data "
                      "has at most 2 dimensions", ast)
        return picked

    def _int_movement(self, ast, scope) -> np.ndarray:
        """reshape, transpose, concat and stack of integer data: the same whole numbers, moved."""
        name, args, kwargs = ast.args
        if name in ("concat", "stack"):
            if not args or kwargs:
                self.fail(ValueProblem, f"{name} takes one or more values and no keywords", ast)
            parts = [self._int_data(arg, None, scope) for arg in args]
            shapes = [part.shape for part in parts]
            if name == "stack" and (len(set(shapes)) != 1 or len(shapes[0]) > 1):
                self.fail(ShapeProblem, "stack of integer data takes whole numbers or ivecs of one length, "
                          "got " + ", ".join(map(_int_type, shapes)), ast)
            if name == "concat" and (len({len(shape) for shape in shapes}) != 1 or not shapes[0]
                                     or len({shape[1:] for shape in shapes}) != 1):
                self.fail(ShapeProblem, "concat of integer data joins ivecs, or imats of as many columns, "
                          "got " + ", ".join(map(_int_type, shapes)), ast)
            return (np.stack if name == "stack" else np.concatenate)(parts, axis=0)
        if name == "transpose":
            self._arity(name, args, kwargs, 1, ast)
            return self._int_data(args[0], None, scope).T
        if len(args) not in (2, 3) or kwargs:
            self.fail(ValueProblem, "reshape takes a value and one or two sizes: reshape(x, r, c)", ast)
        value = self._int_data(args[0], None, scope)
        shape = tuple(self.integer(a, scope, "a size", positive=True) for a in args[1:])
        if prod(shape) != value.size:
            self.fail(ShapeProblem, f"cannot reshape {_int_type(value.shape)} ({value.size} elements) "
                      f"to {_int_type(shape)}", ast)
        return value.reshape(shape)

    def _is_int_data(self, ast, scope) -> bool:
        """Whether an expression is integer data of one or more elements written in place
        (lab + 1, reshape(col, n, 1), lab[0:2], [0, 2] + k): made only of whole numbers, dims,
        loop indices and integer consts, with + - *, .T, indexing and MOVEMENT_FUNCTIONS, and
        reading an integer const that is an array, or a list or stack."""
        arrays = False
        pending = [ast]
        while pending:
            node = pending.pop()
            if node is None:
                continue
            kind = node.kind
            if kind == "name":
                name = node.args[0]
                if name in scope.indices or name in self.dims:
                    continue
                if name not in self.int_consts or name in scope.values:
                    return False
                arrays = arrays or self.int_consts[name].ndim > 0
                continue
            if kind == "call" and node.args[0] in SIZE_FUNCTIONS and node.args[0] not in self.defs:
                continue   # rows(X): a whole number, of any value
            if kind == "call" and node.args[0] in MOVEMENT_FUNCTIONS and node.args[0] not in self.defs:
                pending.extend(node.args[1])
                arrays = arrays or node.args[0] == "stack"   # stack(k, 0): an array, like a list
                continue
            if kind == "binop" and node.args[0] not in "+-*":
                return False
            if kind == "attr" and node.args[1] != "T":
                return False
            if kind not in ("number", "list", "neg", "binop", "attr", "index", "slice"):
                return False
            arrays = arrays or kind == "list"
            pending.extend(arg for arg in node.args if isinstance(arg, Ast))
            pending.extend(arg for part in node.args if isinstance(part, (list, tuple))
                           for arg in part if isinstance(arg, Ast))
        return arrays

    def _int_call(self, ast, shape, scope) -> np.ndarray:
        name, args, kwargs = ast.args
        if shape is None:
            self.fail(ShapeProblem, f"{name}(...) needs a declared type to know its shape, "
                      f"e.g. `const idx: ivec[3] = {name}(...)`", ast)
        if name == "arange":   # 0, 1, 2, … over all elements, row-major
            if args or kwargs:
                self.fail(ValueProblem, "arange takes no arguments: it numbers the elements 0, 1, 2, …",
                          ast)
            return np.arange(prod(shape), dtype=np.int64).reshape(shape)
        if len(args) != 1 or set(kwargs) - {"seed"}:
            self.fail(ValueProblem, "randint takes one argument, the bound, and a seed: "
                      "randint(high, seed=S) draws whole numbers 0 ≤ i < high", ast)
        high = self.integer(args[0], scope, "randint's bound", positive=True)
        seed = self.integer(kwargs["seed"], scope, "a seed") if "seed" in kwargs else 0
        if seed < 0:
            self.fail(ValueProblem, f"seed must be a non-negative integer, got {seed}", kwargs["seed"])
        return np.random.default_rng(seed).integers(0, high, size=shape, dtype=np.int64)

    def _index_array(self, sub, scope) -> np.ndarray | None:
        """Integer data written as an index: an integer const (x[labels]) or a list of
        integer expressions (x[[0, 2, 2]]); None for anything else."""
        if sub.kind == "name" and sub.args[0] in self.int_consts and sub.args[0] not in scope.values \
                and sub.args[0] not in scope.indices and self.int_consts[sub.args[0]].ndim:
            return self.int_consts[sub.args[0]]   # (an `int` is a whole number: self.integer)
        if sub.kind == "list":
            return self._int_list(sub, scope)
        if sub.kind == "call" and sub.args[0] in INTEGER_DATA_FUNCTIONS:
            self.fail(ValueProblem, f"{sub.args[0]}(...) makes integer data; use it as the value of an "
                      f"integer const, e.g. `const idx: ivec[3] = {sub.args[0]}"
                      f"{'(5)' if sub.args[0] == 'randint' else ''}`", sub)
        if self._is_int_data(sub, scope):   # lab + 1, reshape(col, n, 1), lab[0:2]
            return self._int_data(sub, None, scope)
        return None

    def _int_list(self, ast, scope) -> np.ndarray:
        if not ast.args[0]:
            self.fail(ShapeProblem, "an empty list of indices has no shape", ast)
        if ast.args[0][0].kind == "list":
            rows = [self._int_list(row, scope) if row.kind == "list" else
                    self.fail(ShapeProblem, "a list of indices mixes rows and numbers", row)
                    for row in ast.args[0]]
            if len({row.shape for row in rows}) != 1 or rows[0].ndim != 1:
                self.fail(ShapeProblem, "the rows of this list have different lengths", ast)
            return np.array(rows, dtype=np.int64)
        return np.array([self.integer(item, scope, "an index") for item in ast.args[0]], dtype=np.int64)

    def _in_range(self, positions: np.ndarray, size: int, indexed, ast) -> np.ndarray:
        """Indices checked against an axis of length `size` of a value of type `indexed` (text,
        or None), negative ones counting from the end."""
        bad = (positions < -size) | (positions >= size)
        if bad.any():
            where = np.argwhere(bad)[0]
            at = f" (element {', '.join(map(str, where))})" if positions.ndim else ""
            self.fail(ShapeProblem, f"index {positions[tuple(where)]}{at} is out of range for an "
                      f"axis of length {size}{'' if indexed is None else ' in ' + indexed}", ast)
        return np.where(positions < 0, positions + size, positions)

    def _gather(self, node: int, key: tuple, ast) -> int:
        """x[key] with integer arrays in the key (NumPy's integer-array indexing): a data
        movement whose reverse adds where an element is gathered more than once."""
        shape = self.nodes[node].shape
        key = key + tuple(slice(0, size) for size in shape[len(key):])
        arrays = [part for part in key if not isinstance(part, slice)]
        try:
            picked = np.broadcast_arrays(*[np.asarray(part) for part in arrays])
        except ValueError:
            self.fail(ShapeProblem, "the index arrays do not broadcast together: "
                      + ", ".join(_int_type(np.shape(part)) for part in arrays), ast)
        slices = [len(range(*part.indices(size))) for part, size in zip(key, shape) if isinstance(part, slice)]
        first = next(i for i, part in enumerate(key) if not isinstance(part, slice))
        # NumPy's rule for 2 axes: the indexed axes' shape stands where the first of them stood
        result_shape = tuple(slices[:first]) + picked[0].shape + tuple(slices[first:])
        # which input element each gathered one is, over the indexed axes: the same element
        # gathered c ≥ 2 times gets c contributions added in reverse mode
        flat = np.ravel_multi_index(tuple(p.reshape(-1) for p in picked),
                                    tuple(size for part, size in zip(key, shape) if not isinstance(part, slice)))
        adds = _adds(flat) * prod(slices)
        key = tuple(part if isinstance(part, slice) else (int(part) if np.ndim(part) == 0 else part)
                    for part in key)
        return self.emit("gather", (node,), ast, {"key": key, "result_shape": result_shape, "adds": adds})

    def _value_and_indices(self, name, ast, args, kwargs, scope, arity, keywords=()) -> tuple:
        """(node, shape, integer indices) of a call name(value, indices, ...)."""
        self._arity(name, args, kwargs, arity, ast, keywords)
        node = self.expr(args[0], scope)
        positions = self._index_array(args[1], scope)
        if positions is None:
            self.fail(ValueProblem, f"{name} takes integer data as its indices: an integer const or a "
                      "list of whole numbers", args[1])
        return node, self.nodes[node].shape, positions

    def _take_along_axis(self, ast, args, kwargs, scope) -> int:
        node, shape, positions = self._value_and_indices("take_along_axis", ast, args, kwargs, scope, 2,
                                                         ("axis",))
        if not shape or positions.ndim != len(shape):
            self.fail(ShapeProblem, f"take_along_axis needs indices with the value's dimensions: "
                      f"{format_shape(shape)} with {_int_type(positions.shape)}", ast)
        if "axis" in kwargs:
            axis = self.integer(kwargs["axis"], scope, "an axis")
        elif len(shape) == 1:
            axis = 0
        else:
            self.fail(ValueProblem, "take_along_axis of a matrix needs axis=0 or axis=1", ast)
        if not -len(shape) <= axis < len(shape):
            self.fail(ShapeProblem, f"axis={axis} is out of range for {format_shape(shape)}", kwargs["axis"])
        axis %= len(shape)
        positions = self._in_range(positions, shape[axis], format_shape(shape), args[1])
        if len(shape) == 1:
            return self._gather(node, (positions,), ast)
        other = 1 - axis
        if positions.shape[other] not in (1, shape[other]):
            self.fail(ShapeProblem, f"take_along_axis: indices {_int_type(positions.shape)} do not "
                      f"broadcast with {format_shape(shape)} along axis {other}", args[1])
        along = np.arange(shape[other]).reshape((-1, 1) if other == 0 else (1, -1))
        return self._gather(node, (along, positions) if axis == 1 else (positions, along), ast)

    def _scatter_add(self, ast, args, kwargs, scope) -> int:
        """scatter_add(values, idx, n): zeros of n rows, values[k] added to row idx[k] (NumPy's
        np.add.at, JAX's segment_sum): idx's shape leads values' shape."""
        node, shape, positions = self._value_and_indices("scatter_add", ast, args, kwargs, scope, 3)
        n = self.integer(args[2], scope, "a size", positive=True)
        if tuple(shape[:positions.ndim]) != positions.shape:
            self.fail(ShapeProblem, f"scatter_add needs one index per leading element of the values: "
                      f"{format_shape(shape)} with {_int_type(positions.shape)}", ast)
        positions = self._in_range(positions, n, None, args[1])
        rest = tuple(shape[positions.ndim:])
        out_shape = (n,) + rest
        width = prod(rest)
        targets = (positions.reshape(-1, 1) * width + np.arange(width)).reshape(-1)
        # intp: NumPy's bincount would copy a narrower index on every run
        attrs = {"index": positions, "targets": targets.astype(np.intp),
                 "adds": _adds(targets), "shape": out_shape}
        return self.emit("scatter_add", (node,), ast, attrs)

    def _flag(self, kwargs, name: str, default: bool) -> bool:
        """A keyword that takes the words true or false."""
        if name not in kwargs:
            return default
        flag = kwargs[name]
        if flag.kind != "name" or flag.args[0] not in ("true", "false"):
            self.fail(ValueProblem, f"{name} takes true or false, got '{flag.text}'", flag)
        return flag.args[0] == "true"

    def _linalg(self, name, ast, args, kwargs, scope) -> int:
        """Linear algebra (adcli.ops): eye(n) is a constant; tril, triu take an offset k;
        fill_tril(v, n) a size; triangular_solve the keyword lower."""
        if name == "eye":
            self._arity(name, args, kwargs, 1, ast)
            n = self.integer(args[0], scope, "eye's size", positive=True)
            self.check_size((n, n), "eye(n)", ast)
            return self.emit("const", (), ast, {"value": np.eye(n)}, shape=(n, n))
        if name in ("tril", "triu"):
            if len(args) not in (1, 2) or kwargs:
                self.fail(ValueProblem, f"{name} takes a matrix and an optional offset: {name}(A) or "
                          f"{name}(A, k)", ast)
            x = self.expr(args[0], scope)
            k = self.integer(args[1], scope, f"{name}'s offset") if len(args) == 2 else 0
            return self.emit(name, (x,), ast, {"k": k})
        if name == "fill_tril":
            self._arity(name, args, kwargs, 2, ast)
            v = self.expr(args[0], scope)
            n = self.integer(args[1], scope, "fill_tril's size", positive=True)
            return self.emit(name, (v,), ast, {"n": n})
        if name == "triangular_solve":
            self._arity(name, args, kwargs, 2, ast, ("lower",))
            lower = self._flag(kwargs, "lower", True)
            return self.emit(name, tuple(self.expr(a, scope) for a in args), ast, {"lower": lower})
        self._arity(name, args, kwargs, 2 if name == "solve" else 1, ast)
        return self.emit(name, tuple(self.expr(a, scope) for a in args), ast)

    def _einsum(self, ast, args, kwargs, scope) -> int:
        """einsum("ij,jk->ik", A, B): the subscripts checked against the operands' shapes, a
        problem in them pointed at within the string (adcli.einsum)."""
        if kwargs:
            self.fail(ValueProblem, f"einsum has no argument '{sorted(kwargs)[0]}'", ast)
        if not args or args[0].kind != "string":
            self.fail(ValueProblem, 'einsum takes its subscripts first, in quotes, then the operands: '
                      'einsum("ij,jk->ik", A, B)', args[0] if args else ast)
        if len(args) < 2:
            self.fail(ValueProblem, "einsum takes its subscripts and at least one operand", ast)
        if len(args) - 1 > contraction.MAX_OPERANDS:
            self.fail(ValueProblem, f"einsum takes at most {contraction.MAX_OPERANDS} operands, got {len(args) - 1} "
                      "(its contraction order is chosen over every subset of them)", ast,
                      hint="split it into several einsums")
        text = args[0].args[0]
        operands = tuple(self.expr(a, scope) for a in args[1:])
        shapes = [self.nodes[x].shape for x in operands]
        try:
            subs = contraction.parse(text, shapes)
            contraction.letter_sizes(subs, shapes)
        except contraction.SubscriptError as exc:
            where = ast
            if exc.offset is not None:   # within the string, after its opening quote
                where = dataclasses.replace(args[0], column=args[0].column + 1 + exc.offset)
            elif exc.operand is not None:
                where = args[1 + exc.operand]
            self.fail(ShapeProblem, str(exc), where)
        return self.emit("einsum", operands, ast, {"subscripts": subs.text})

    def _axis(self, kwargs, scope):
        if "axis" not in kwargs:
            return None
        return self._axes(kwargs["axis"], scope)

    def _axes(self, ast, scope):
        """An axis (a whole number), or several in a list or tuple: `axis=[0, 2]`, `(0, 2)`."""
        if ast.kind in ("list", "tuple"):
            if not ast.args[0]:
                self.fail(ValueProblem, "an empty list of axes", ast)
            return tuple(self.integer(item, scope, "an axis") for item in ast.args[0])
        return self.integer(ast, scope, "an axis")

    def _norm_order(self, ast):
        """norm's ord as the op's attrs hold it: a float, or "inf", "-inf", "fro", "nuc"."""
        negative = ast.kind == "neg"
        inner = ast.args[0] if negative else ast
        if inner.kind == "name" and inner.args[0] == "inf":
            return "-inf" if negative else "inf"
        if inner.kind == "number":
            value = -float(inner.args[0]) if negative else float(inner.args[0])
            return ("inf" if value > 0 else "-inf") if math.isinf(value) else value
        if inner.kind == "string" and not negative and inner.args[0] in ("fro", "nuc"):
            return inner.args[0]
        self.fail(ValueProblem, f"norm's ord is a number, inf, -inf, 'fro' or 'nuc', got '{ast.text}'", ast)

    def _norm_attrs(self, kwargs, scope, shape, ast) -> dict:
        """norm's ord and axis as NumPy's numpy.linalg.norm reads them; nothing for the
        2-norm of all elements (no ord, no axis: any rank)."""
        order = self._norm_order(kwargs["ord"]) if "ord" in kwargs else None
        axis = self._axis(kwargs, scope)
        where = kwargs.get("axis", kwargs.get("ord", ast))
        if axis is None:
            if order is None:
                return {}
            if len(shape) not in (1, 2):   # NumPy's rule: ord alone means a vector or a matrix
                self.fail(ShapeProblem, f"norm with ord needs a vector or a matrix, got {format_shape(shape)}: "
                          "give the axis (one for a vector norm, two for a matrix norm)", ast)
            axis = 0 if len(shape) == 1 else (0, 1)
        axes = (axis,) if isinstance(axis, int) else tuple(axis)
        if len(axes) not in (1, 2):
            self.fail(ValueProblem, f"norm takes one axis (a vector norm) or two (a matrix norm), "
                      f"got {len(axes)}", where)
        for a in axes:
            if not -len(shape) <= a < len(shape):
                self.fail(ShapeProblem, f"axis={a} is out of range for {format_shape(shape)}", where)
        axes = tuple(a % len(shape) for a in axes)
        if len(set(axes)) != len(axes):
            self.fail(ShapeProblem, "norm's two axes are one axis", where)
        if len(axes) == 1:
            order = 2.0 if order is None else order
            shown = _order_text(order)
            if order in ("fro", "nuc"):
                self.fail(ValueProblem, f"ord={shown} is a matrix norm: give two axes, axis=(0, 1)",
                          kwargs["ord"])
            if order == 0:
                self.fail(ValueProblem, "ord=0 counts the nonzero elements, a step whose derivative is 0 "
                          "everywhere: write sum(x != 0) for it", kwargs["ord"])
            if isinstance(order, float) and order < 0:
                self.fail(ValueProblem, f"a vector norm's ord is a p > 0, inf or -inf, got {shown}",
                          kwargs["ord"])
            if order in ("inf", "-inf") and not shape[axes[0]]:
                self.fail(ShapeProblem, f"norm with ord={shown} of no elements is undefined "
                          f"({format_shape(shape)}, axis={axes[0]})", ast)
            return {"axis": axes[0], "ord": order}
        order = "fro" if order is None else order
        shown = _order_text(order)
        if order in (2.0, -2.0, "nuc"):
            self.fail(ValueProblem, f"ord={shown} of a matrix is a singular value (the largest, the "
                      "smallest, or their sum), which adcli does not compute: a singular value "
                      "decomposition is iterative and has no exact count", kwargs["ord"])
        if order not in ("fro", 1.0, -1.0, "inf", "-inf"):
            self.fail(ValueProblem, f"ord={shown} is not a matrix norm: NumPy's are 'fro', 'nuc', 1, -1, "
                      "2, -2, inf and -inf", kwargs["ord"])
        extreme = axes[1] if order in (1.0, -1.0) else axes[0]   # the axis the max (min) runs along
        if order != "fro" and not shape[extreme]:
            self.fail(ShapeProblem, f"norm with ord={shown} of no elements is undefined "
                      f"({format_shape(shape)}, axis={list(axes)})", ast)
        return {"axis": axes, "ord": order}

    def _reduction_attrs(self, name, kwargs, scope, ast) -> dict:
        """axis= and keepdims= of a reduction (softmax and log_softmax take no keepdims:
        they keep the shape of their argument anyway)."""
        if "keepdims" in kwargs and name in NORMALIZATIONS:
            self.fail(ValueProblem, f"{name} has no argument 'keepdims': its value has the shape of its "
                      "argument already", kwargs["keepdims"])
        attrs = {} if name == "norm" else {"axis": self._axis(kwargs, scope)}
        if "keepdims" in kwargs:
            flag = kwargs["keepdims"]
            if flag.kind != "name" or flag.args[0] not in ("true", "false"):
                self.fail(ValueProblem, f"keepdims takes true or false, got '{flag.text}'", flag)
            if flag.args[0] == "true":   # absent means false: nodes without it stay as they were
                attrs["keepdims"] = True
        return attrs

    def _arity(self, name, args, kwargs, count, ast, keywords=()):
        # an unknown keyword first: it is often the argument missing from the count (f(x, p=2))
        extra = set(kwargs) - set(keywords)
        if extra:
            self.fail(ValueProblem, f"{name} has no argument '{sorted(extra)[0]}'", ast)
        if len(args) != count:
            self.fail(ValueProblem, f"{name} takes {count} argument{'s' if count != 1 else ''}, "
                      f"got {len(args)}", ast)

    def call(self, ast, scope) -> int:
        name, args, kwargs = ast.args
        if name in self.defs and name not in BUILTINS:
            result = self.inline(self.defs[name], ast, scope)
            if isinstance(result, tuple):
                names = ", ".join("abcdefgh"[i] if i < 8 else f"v{i}" for i in range(len(result)))
                self.fail(ValueProblem, f"{name}(...) returns {len(result)} values, where one value is "
                          "expected", ast, hint=f"unpack them first: `{names} = {name}(...)`")
            return result
        if name in UNARY_FUNCTIONS:
            self._arity(name, args, kwargs, 1, ast)
            return self.emit(name, (self.expr(args[0], scope),), ast)
        if name in BINARY_FUNCTIONS:
            self._arity(name, args, kwargs, 2, ast)
            return self.emit(name, tuple(self.expr(a, scope) for a in args), ast)
        if name in TERNARY_FUNCTIONS:
            self._arity(name, args, kwargs, 3, ast)
            return self.emit(name, tuple(self.expr(a, scope) for a in args), ast)
        if name in REDUCTIONS:
            self._arity(name, args, kwargs, 1, ast, ("axis", "keepdims"))
            attrs = self._reduction_attrs(name, kwargs, scope, ast)
            x = self.expr(args[0], scope)
            shape, axis = self.nodes[x].shape, attrs["axis"]
            if name in NO_EMPTY_REDUCTIONS and (not prod(shape) if axis is None or not shape
                                                else any(-len(shape) <= a < len(shape) and not shape[a]
                                                         for a in axes_of(axis))):
                self.fail(ShapeProblem, f"{name} of no elements is undefined ({format_shape(shape)}"
                          f"{'' if axis is None else f', axis={axis}'})", ast)
            return self.emit(name, (x,), ast, attrs)
        if name in LINALG_FUNCTIONS:
            return self._linalg(name, ast, args, kwargs, scope)
        if name == "take_along_axis":
            return self._take_along_axis(ast, args, kwargs, scope)
        if name == "scatter_add":
            return self._scatter_add(ast, args, kwargs, scope)
        if name in INTEGER_DATA_FUNCTIONS:
            self.fail(ValueProblem, f"{name}(...) makes integer data; use it as the value of an integer "
                      f"const, e.g. `const idx: ivec[3] = {name}{'(5)' if name == 'randint' else ''}`", ast)
        if name == "einsum":
            return self._einsum(ast, args, kwargs, scope)
        if name in DERIVATIVE_FUNCTIONS:
            self.fail(ValueProblem, f"{name}(...) is a function: call it on the def's arguments, "
                      f"{name}({args[0].text if args else 'f'})(x)", ast)
        if name in DERIVATIVE_PRODUCTS:
            return self.derivative_product(name, ast, args, kwargs, scope)
        if name == "multigammaln":
            if "d" in kwargs and len(args) == 1:   # multigammaln(a, d=2), as SciPy names it
                args, kwargs = (args[0], kwargs["d"]), {k: v for k, v in kwargs.items() if k != "d"}
            elif "d" in kwargs and len(args) == 2:
                self.fail(ValueProblem, "multigammaln's d is given twice (second argument and d=)", kwargs["d"])
            self._arity(name, args, kwargs, 2, ast)
            a = self.expr(args[0], scope)
            d = self.integer(args[1], scope, "multigammaln's d", positive=True)
            if d > MAX_MULTIGAMMALN_D:
                self.fail(ValueProblem, f"multigammaln's d must be at most {MAX_MULTIGAMMALN_D:,}, got {d:,}",
                          args[1])
            return self.emit("multigammaln", (a,), ast, {"d": d})
        if name == "norm":
            if len(args) > 4:
                self.fail(ValueProblem, f"norm takes at most 4 arguments (x, ord, axis, keepdims), got "
                          f"{len(args)}", args[4])
            # NumPy's order: norm(x, ord, axis, keepdims)
            for keyword, arg in zip(("ord", "axis", "keepdims"), args[1:]):
                if keyword in kwargs:
                    self.fail(ValueProblem, f"norm's {keyword} is given twice (as an argument and as "
                              f"{keyword}=)", kwargs[keyword])
                kwargs = {**kwargs, keyword: arg}
            args = args[:1]
            self._arity(name, args, kwargs, 1, ast, ("ord", "axis", "keepdims"))
            attrs = self._reduction_attrs(name, kwargs, scope, ast)
            x = self.expr(args[0], scope)
            attrs.update(self._norm_attrs(kwargs, scope, self.nodes[x].shape, ast))
            return self.emit("norm", (x,), ast, attrs)
        if name == "dot":
            self._arity(name, args, kwargs, 2, ast)
            a, b = (self.expr(x, scope) for x in args)
            if len(self.nodes[a].shape) != 1 or len(self.nodes[b].shape) != 1:
                self.fail(ShapeProblem, "dot takes two vectors, got "
                          f"{format_shape(self.nodes[a].shape)} and {format_shape(self.nodes[b].shape)}", ast)
            return self.emit("matmul", (a, b), ast)
        if name == "outer":
            self._arity(name, args, kwargs, 2, ast)
            a, b = (self.expr(x, scope) for x in args)
            sa, sb = self.nodes[a].shape, self.nodes[b].shape
            if len(sa) != 1 or len(sb) != 1:
                self.fail(ShapeProblem, f"outer takes two vectors, got {format_shape(sa)} and {format_shape(sb)}", ast)
            column = self.emit("reshape", (a,), ast, {"shape": (sa[0], 1)})
            return self.emit("mul", (column, b), ast)
        if name in ("concat", "stack"):
            if not args or kwargs:
                self.fail(ValueProblem, f"{name} takes one or more values and no keywords", ast)
            return self.emit(name, tuple(self.expr(a, scope) for a in args), ast)
        if name == "reshape":
            if len(args) < 2 or kwargs:
                self.fail(ValueProblem, "reshape takes a value and its new sizes: reshape(x, r, c), "
                          "reshape(x, a, b, c), or the sizes in a list: reshape(x, [a, b, c])", ast)
            x = self.expr(args[0], scope)
            sizes = args[1].args[0] if len(args) == 2 and args[1].kind in ("list", "tuple") else args[1:]
            shape = tuple(self.integer(a, scope, "a size", positive=True) for a in sizes)
            if prod(shape) != self.nodes[x].size:
                self.fail(ShapeProblem, f"cannot reshape {format_shape(self.nodes[x].shape)} "
                          f"({self.nodes[x].size} elements) to {format_shape(shape)}", ast)
            return self.emit("reshape", (x,), ast, {"shape": shape})
        if name == "transpose":
            if len(args) == 1 and set(kwargs) == {"axes"}:
                args, kwargs = (args[0], kwargs["axes"]), {}
            if len(args) not in (1, 2) or kwargs:
                self.fail(ValueProblem, "transpose takes a value and, optionally, its axes in their new "
                          "order: transpose(A), transpose(x, [1, 0, 2])", ast)
            x = self.expr(args[0], scope)
            shape = self.nodes[x].shape
            if len(args) == 1:   # every axis reversed, as NumPy's
                return self.emit("transpose", (x,), ast) if len(shape) >= 2 else x
            axes = self._axes(args[1], scope)
            axes = tuple(a + len(shape) if a < 0 else a for a in ((axes,) if isinstance(axes, int) else axes))
            if axes == tuple(range(len(shape))):
                return x
            return self.emit("transpose", (x,), ast, {"axes": axes})
        if name in ("expand_dims", "squeeze"):
            return self._expand_or_squeeze(name, ast, args, kwargs, scope)
        if name in SIZE_FUNCTIONS:
            self._arity(name, args, kwargs, 1, ast)
            return self.literal(self._size(name, self.nodes[self.expr(args[0], scope)].shape, ast), ast)
        if name in DATA_FUNCTIONS:
            self._constant_data_only(name, ast)
        if scope.in_def is not None and name == scope.in_def.name:
            self.fail(NameProblem, f"def {name} calls itself; recursion is not supported", ast)
        self.fail(NameProblem, f"unknown function '{name}'{_did_you_mean(name, BUILTINS | set(SIZE_FUNCTIONS) | set(self.defs))}", ast)

    def _expand_or_squeeze(self, name, ast, args, kwargs, scope) -> int:
        """expand_dims(x, axis) inserts axes of length 1 where the result has them; squeeze(x)
        drops every axis of length 1, squeeze(x, axis) the ones named (each must be of length
        1). Both as NumPy's: the same elements in the same order, so a reshape node."""
        if len(args) == 2 and "axis" not in kwargs:
            args, kwargs = (args[0],), {**kwargs, "axis": args[1]}
        self._arity(name, args, kwargs, 1, ast, ("axis",))
        if name == "expand_dims" and "axis" not in kwargs:
            self.fail(ValueProblem, "expand_dims takes the new axis (or axes): expand_dims(x, 0)", ast)
        x = self.expr(args[0], scope)
        shape = self.nodes[x].shape
        axis = self._axis(kwargs, scope)
        axes = None if axis is None else ((axis,) if isinstance(axis, int) else axis)
        rank = len(shape) + (len(axes) if name == "expand_dims" else 0)
        if axes is not None:
            where = kwargs["axis"]
            for a in axes:
                if not -rank <= a < rank:
                    self.fail(ShapeProblem, f"axis={a} is out of range for {name} of "
                              f"{with_article(format_shape(shape))} (axes 0 … {rank - 1})", where)
            axes = tuple(a + rank if a < 0 else a for a in axes)
            if len(set(axes)) != len(axes):
                self.fail(ShapeProblem, f"{name} names an axis twice", where)
        if name == "expand_dims":
            rest = iter(shape)
            new = tuple(1 if i in axes else next(rest) for i in range(rank))
        else:
            if axes is None:
                axes = tuple(i for i, d in enumerate(shape) if d == 1)
            for a in axes:
                if shape[a] != 1:
                    self.fail(ShapeProblem, f"squeeze drops axes of length 1, but axis {a} of "
                              f"{format_shape(shape)} has length {shape[a]}", kwargs.get("axis", ast))
            new = tuple(d for i, d in enumerate(shape) if i not in axes)
        return self.emit("reshape", (x,), ast, {"shape": new}) if new != shape else x

    def inline(self, fn: _Def, ast, scope) -> int:
        name, args, kwargs = ast.args
        self._check_inlining(fn, name, len(args) + len(kwargs), bool(kwargs), ast, scope)
        self._count_inlining(ast)
        values = [self.expr(a, scope) for a in args]
        return self.inline_values(fn, name, values)

    def _check_inlining(self, fn: _Def, name: str, count: int, keywords: bool, ast, scope):
        if name in self.inline_stack:
            self.fail(NameProblem, f"def {name} calls itself; recursion is not supported", ast)
        if scope.in_def is not None and fn.order >= scope.in_def.order:
            self.fail(NameProblem, f"def {scope.in_def.name} calls {name}, which is defined after it; "
                      "a def may only call earlier defs", ast)
        if keywords or count != len(fn.params):
            self.fail(ValueProblem, f"{name} takes {len(fn.params)} argument"
                      f"{'s' if len(fn.params) != 1 else ''} ({', '.join(fn.params)}), got "
                      f"{count}", ast)

    def _count_inlining(self, ast):
        if not self.inline_stack:
            self.outer_call = ast   # where an inlining refusal points: the call the file makes
        self.inlined += 1
        if self.inlined > self.node_limit:
            self._too_much_inlining(ast, f"inlines more than {self.node_limit:,} def calls")

    def inline_values(self, fn: _Def, name: str, values: list):
        """A def's body inlined with its parameters bound to the nodes `values`: its value
        (a node id, or a tuple of them for a def that returns several)."""
        inner = _Scope(dict(zip(fn.params, values)), in_def=fn)
        self.inline_stack.append(name)
        try:
            for stmt in fn.body:
                self.statement(stmt, inner)
        finally:
            self.inline_stack.pop()
        return inner.values["$return"]

    # -- derivatives inside the language (adcli.derive) -------------------------------------------
    def function(self, ast, scope):
        """What a callee names: ("def", name) for a def, or (kind, inner function, text) for
        grad(F), jacobian(F), hessian(F) of a function F (a def, or another of these)."""
        if ast.kind == "name" and ast.args[0] in self.defs and ast.args[0] not in BUILTINS:
            fn = self.defs[ast.args[0]]
            self._check_inlining(fn, ast.args[0], len(fn.params), False, ast, scope)
            return ("def", ast.args[0])
        if ast.kind == "call" and ast.args[0] in DERIVATIVE_FUNCTIONS:
            kind, args, kwargs = ast.args
            if len(args) != 1 or kwargs:
                self.fail(ValueProblem, f"{kind} takes one function, a def: {kind}(f)", ast)
            inner = self.function(args[0], scope)
            if kind == "hessian":   # the Jacobian of the gradient: forward over reverse
                return ("jacobian", ("grad", inner, ast.text), ast.text)
            return (kind, inner, ast.text)
        if ast.kind == "name":
            known = ast.args[0] in scope.values or ast.args[0] in self.consts or ast.args[0] in self.inputs
            what = "a built-in function" if ast.args[0] in BUILTINS else "a value" if known else "not defined"
            self.fail(NameProblem, f"'{ast.args[0]}' is {what}, not a def: a function here is a def's name, "
                      "or grad(f), jacobian(f) or hessian(f) of one", ast)
        self.fail(ValueProblem, f"'{ast.text}' is not a function: a function here is a def's name, "
                  "or grad(f), jacobian(f) or hessian(f) of one", ast)

    def apply(self, ast, scope) -> int:
        """grad(f)(x, …), jacobian(f)(x, …), hessian(f)(x, …): the derivative with respect
        to the first argument, the others held fixed (JAX's argnums=0)."""
        callee, args, kwargs = ast.args
        fn = self.function(callee, scope)
        if kwargs:
            self.fail(ValueProblem, f"{callee.text}(...) takes no keywords", ast)
        result = self.apply_function(fn, [self.expr(a, scope) for a in args], ast)
        if isinstance(result, tuple):
            self.fail(ValueProblem, f"{callee.text}(...) returns {len(result)} values, where one value "
                      "is expected", ast)
        return result

    def apply_function(self, fn, values: list, ast):
        from .derive import Derivatives, NotExpressible, refusal, unit

        if fn[0] == "def":
            params = self.defs[fn[1]].params
            if len(values) != len(params):
                self.fail(ValueProblem, f"{fn[1]} takes {len(params)} argument{'s' if len(params) != 1 else ''} "
                          f"({', '.join(params)}), got {len(values)}", ast)
            self._count_inlining(ast)
            return self.inline_values(self.defs[fn[1]], fn[1], values)
        kind, inner, text = fn
        if not values:
            self.fail(ValueProblem, f"{text} needs the function's arguments: {text}(x)", ast)
        point, out, end = self._at_point(inner, values, ast, text)
        in_shape, out_shape = self.nodes[point].shape, self.nodes[out].shape
        derive = Derivatives(self, ast, point, text)
        e = derive.e
        try:
            if kind == "grad":
                if out_shape != ():
                    inner_name = text[text.index("(") + 1:-1]
                    instead = (f"use jacobian(jacobian({inner_name})) for the second derivatives of a "
                               "vector-valued function" if text.startswith("hessian") else "use jacobian")
                    self.fail(ShapeProblem, f"{text} needs a scalar-valued function, but it returns "
                              f"{with_article(format_shape(out_shape))}: {instead}", ast)
                g = derive.vjp(point, out, e.const(1.0), end)
                return (e.zeros(in_shape) if g is None else g).id
            shape = out_shape + in_shape
            m, n = prod(out_shape), prod(in_shape)
            if not m or not n:
                return e.zeros(shape).id
            # as many passes as the smaller side: rows by VJPs, or columns by JVPs (n = m, a
            # Hessian: columns, forward over reverse)
            if m < n:
                parts = [derive.vjp(point, out, e.const(unit(i, out_shape)), end) for i in range(m)]
                parts = [e.reshape(e.zeros(in_shape) if p is None else p, (n,)) for p in parts]
                table = e.emit("stack", parts)                                 # m × n
            else:
                parts = [derive.jvp(point, e.const(unit(j, in_shape)), out, end) for j in range(n)]
                parts = [e.reshape(e.zeros(out_shape) if p is None else p, (m,)) for p in parts]
                table = e.reshape(e.emit("stack", parts), (n, m)).T            # m × n
            return e.reshape(table, shape).id
        except NotExpressible as exc:
            self.fail(ValueProblem, refusal(text, exc), ast)

    def _at_point(self, fn, values: list, ast, text: str) -> tuple:
        """f(x, …) built at a fresh node standing for x (so that x differs from every other
        argument and const, even one that is the same node): (that node, f's value, the
        first node after f's body)."""
        x = values[0]
        point = self.emit("reshape", (x,), ast, {"shape": self.nodes[x].shape})
        # repeats in f are unrolled: a loop node's body has no rules as graph nodes
        saved, self.loops = self.loops, "never"
        try:
            out = self.apply_function(fn, [point] + list(values[1:]), ast)
        finally:
            self.loops = saved
        if isinstance(out, tuple):
            self.fail(ValueProblem, f"{text} needs a function of one value, but it returns {len(out)}", ast)
        return point, out, len(self.nodes)

    def derivative_product(self, name, ast, args, kwargs, scope) -> int:
        """jvp(f, x, v, …) = J v and vjp(f, x, u, …) = uᵀ J at x, J the Jacobian of f in its
        first argument; further arguments are f's others, held fixed."""
        from .derive import Derivatives, NotExpressible, refusal

        seed_name = "v" if name == "jvp" else "u"
        if kwargs or len(args) < 3:
            self.fail(ValueProblem, f"{name} takes a function, a point and a {'direction' if name == 'jvp' else 'cotangent'}"
                      f" (then f's other arguments, if any): {name}(f, x, {seed_name})", ast)
        fn = self.function(args[0], scope)
        x = self.expr(args[1], scope)
        seed = self.expr(args[2], scope)
        rest = [self.expr(a, scope) for a in args[3:]]
        text = f"{name}({args[0].text}, …)"
        point, out, end = self._at_point(fn, [x] + rest, ast, text)
        want = self.nodes[point].shape if name == "jvp" else self.nodes[out].shape
        if self.nodes[seed].shape != want:
            what = "the point" if name == "jvp" else "the function's value"
            self.fail(ShapeProblem, f"{name}'s {'direction' if name == 'jvp' else 'cotangent'} must have the shape of "
                      f"{what}, {format_shape(want)}, got {format_shape(self.nodes[seed].shape)}", args[2])
        derive = Derivatives(self, ast, point, text)
        try:
            if name == "jvp":
                result = derive.jvp(point, derive.e.node(seed), out, end)
                return (derive.e.zeros(self.nodes[out].shape) if result is None else result).id
            result = derive.vjp(point, out, derive.e.node(seed), end)
            return (derive.e.zeros(self.nodes[point].shape) if result is None else result).id
        except NotExpressible as exc:
            self.fail(ValueProblem, refusal(text, exc), ast)

    def _too_much_inlining(self, ast, what):
        """Refuse unbounded inlining (def f1(a) = f0(f0(a)), f2 = f1(f1(a)), …, which
        doubles at each level and emits no node), pointing at the call in the file's
        statements that set it off."""
        if self.inline_stack and self.outer_call is not None:
            ast = self.outer_call
            what = f"this call of {ast.args[0]} {what}"
        else:
            what = f"building this program {what}"
        self.fail(ResourceProblem, f"{what} (the limit follows --node-limit, {self.node_limit:,})", ast,
                  hint="defs that call each other more than once grow exponentially with "
                       "their nesting; lower it, or raise --node-limit")

    # -- finishing ------------------------------------------------------------------------------------
    def finish(self) -> Graph:
        """Drop nodes no output needs (inputs stay), renumber, compute index maps."""
        needed = set(self.inputs.values()) | set(self.outputs.values())
        for node in reversed(self.nodes):
            if node.id in needed:
                needed.update(node.inputs)
        renumber = {}
        nodes = []
        for node in self.nodes:
            if node.id in needed:
                renumber[node.id] = len(nodes)
                node.id = len(nodes)
                node.inputs = tuple(renumber[i] for i in node.inputs)
                nodes.append(node)
        for node in nodes:
            if REGISTRY.get(node.op) is not None and REGISTRY[node.op].movement:
                _set_moves(node, [nodes[i].shape for i in node.inputs])
        graph = Graph(nodes,
                      inputs={k: renumber[v] for k, v in self.inputs.items()},
                      consts={k: renumber[v] for k, v in self.consts.items() if v in renumber},
                      outputs={k: renumber[v] for k, v in self.outputs.items()},
                      dims=dict(self.dims), filename=self.filename, source=self.text,
                      input_defaults=self.input_defaults, input_lines=self.input_lines,
                      unrolled=self.unrolled)
        graph.input_types = self.input_types
        graph.builder = self
        return graph


class _ConstantBuilder(Builder):
    """Builds a constant expression of `parent`'s file into a graph of its own (see
    Builder._computed_constant). Its dims and defs are the file's; a name of a const,
    a dim or a named constant, and data written in place (numbers, lists, randn, arithmetic
    on them: what Builder._constant evaluates), become a leaf holding that value."""

    def __init__(self, parent: Builder, abstract: bool):
        super().__init__("", parent.filename, None, parent.node_limit)
        self.parent, self.abstract = parent, abstract
        self.lines, self.text = parent.lines, parent.text
        self.dims, self.defs = parent.dims, parent.defs
        self.int_consts = parent.int_consts   # indices: gathers, take_along_axis, scatter_add
        self.memory_cap = parent.memory_cap

    def leaf(self, ast, value) -> int:
        return self.emit("const", (), ast, {"value": None if isinstance(value, _Shape) else value},
                         shape=_shape_of(value))

    def expr(self, ast: Ast, scope: _Scope) -> int:
        kind = ast.kind
        local = scope.in_def is not None or scope.indices   # names may be parameters, indices
        if kind == "name" and ast.args[0] not in scope.values and ast.args[0] not in scope.indices:
            return self.leaf(ast, self.parent._constant(ast, None, self.abstract))
        if kind in ("list", "number") or (kind == "call" and ast.args[0] in DATA_FUNCTIONS
                                          and ast.args[0] not in self.defs):
            return self.leaf(ast, self.parent._constant(ast, None, self.abstract))
        if kind in ("binop", "neg", "attr") and not local and not _calls(ast):
            return self.leaf(ast, self.parent._constant(ast, None, self.abstract))
        return super().expr(ast, scope)

    def evaluate(self, node_id: int) -> np.ndarray:
        """The value of node `node_id`, by the ops' NumPy rules over the nodes it needs."""
        needed = {node_id}
        for node in reversed(self.nodes[:node_id + 1]):
            if node.id in needed:
                needed.update(node.inputs)
        values = {}
        for node in self.nodes[:node_id + 1]:
            if node.id not in needed:
                continue
            if node.op == "const":
                values[node.id] = np.asarray(node.attrs["value"], dtype=np.float64)
                continue
            try:
                values[node.id] = np.asarray(REGISTRY[node.op].evaluate(
                    np, *(values[i] for i in node.inputs), **node.attrs), dtype=np.float64)
            except np.linalg.LinAlgError:   # one sentence, at the call, as in a run (adcli.api)
                what = "not positive definite" if node.op == "cholesky" else "singular"
                raise ValueProblem(f"{node.op}'s matrix is {what} in this constant data",
                                   SourceLocation(self.filename, node.line, node.column,
                                                  self.lines[node.line - 1] if 0 < node.line <= len(self.lines) else ""),
                                   hint="keep matrices well conditioned, e.g. add a multiple of eye(n)") from None
        return values[node_id]


def _asts(root):
    """Every Ast in statements or an expression (nested in lists, tuples and dicts); a
    loop, not recursion, for expressions nested thousands deep."""
    stack = [root]
    while stack:
        value = stack.pop()
        if isinstance(value, Ast):
            yield value
            stack.extend(value.args)
        elif isinstance(value, (list, tuple)):
            stack.extend(value)
        elif isinstance(value, dict):
            stack.extend(value.values())


def _calls(ast) -> bool:
    """Whether an expression holds a call that is not plain data (evaluated as a graph)."""
    return any((node.kind == "call" and node.args[0] not in DATA_FUNCTIONS)
               or node.kind in ("compare", "logic", "not", "index", "apply") for node in _asts(ast))


def _statements(body):
    """The statements of a repeat body, those of nested repeats included."""
    for stmt in body:
        yield stmt
        if stmt.kind == "repeat":
            yield from _statements(stmt.args[1])


def _reads(body, name: str) -> bool:
    """Whether statements read `name`."""
    return any(node.kind == "name" and node.args[0] == name for node in _asts(body))


def _in_iteration(exc: AdError, indices: dict):
    """Say in a problem met while unrolling indexed repeats which iteration it is in
    (once: the innermost repeat names every index)."""
    if indices and not getattr(exc, "iteration_noted", False):
        where = ", ".join(f"{name} = {entry[0]}" for name, entry in indices.items())
        exc.message = f"{exc.message} (in iteration {where})"
        exc.args = (exc.message,)
        exc.iteration_noted = True


def _did_you_mean(name: str, known) -> str:
    from difflib import get_close_matches

    close = get_close_matches(name, sorted(k for k in known if not k.startswith("$")), n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


def _int_type(shape) -> str:
    return {0: "int", 1: "ivec[{}]", 2: "imat[{}, {}]"}[len(shape)].format(*shape)


def _is_load(ast, defs) -> bool:
    """Whether an expression is a call of load(...) (not of a def of that name)."""
    return ast.kind == "call" and ast.args[0] == "load" and "load" not in defs


def _adds(positions: np.ndarray) -> int:
    """Contributions added where positions repeat: a place reached c ≥ 2 times costs c flops
    (a sum of c values, counted as `sum` counts it); a place reached once is a copy."""
    if positions.size == 0:
        return 0
    counts = np.unique(positions.reshape(-1), return_counts=True)[1]
    return int(counts[counts >= 2].sum())


def _index_dtype(sizes):
    return np.int32 if max(sizes, default=0) < 2**31 else np.int64


def _set_moves(node: Node, in_shapes):
    """Give a data-movement node the recipe of its index maps, made when a run first
    needs them (api.Program._setup), not here."""
    sizes = [prod(shape) for shape in in_shapes]
    node._move_counts = (node.size,) if len(sizes) == 1 else tuple(sizes)
    if REGISTRY[node.op].moved is not None:   # diag of a vector, tril: zeros besides
        node._move_counts = (REGISTRY[node.op].moved(in_shapes, node.shape, node.attrs),)
    node._index_itemsize = np.dtype(_index_dtype(sizes + [node.size])).itemsize
    node.moves = _MovesRecipe(node, in_shapes)


class _OverNodeLimit(ValueProblem):
    """The node limit (or the unrolled statements' limit) passed: a repeat being
    unrolled may become a loop instead (Builder.stmt_repeat)."""


class _NotALoop(Exception):
    """A repeat's body uses its index in a way that differs between iterations beyond an
    index's offset (Builder._loop): the repeat is unrolled; `reason` says why."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class _Affine:
    """The whole number a·t + b, for the index t of a repeat whose body is being built once
    for all its iterations (Builder._loop): what `t`, `t + 1` or `t * h` is as an index or
    a slice bound. An int stands for a = 0."""

    __slots__ = ("a", "b")

    def __init__(self, a: int, b: int):
        self.a, self.b = a, b

    def at(self, t: int) -> int:
        return self.a * t + self.b

    def __neg__(self):
        return _Affine(-self.a, -self.b)


def _affine_op(op: str, x, y, name: str):
    """x op y where x or y is an _Affine of the index `name`: an _Affine, or an int when
    the index cancels; _NotALoop when the result is not a·t + b (t * t, t / 2, t ^ 2)."""
    ax, bx = (x.a, x.b) if isinstance(x, _Affine) else (0, x)
    ay, by = (y.a, y.b) if isinstance(y, _Affine) else (0, y)
    if op == "+":
        a, b = ax + ay, bx + by
    elif op == "-":
        a, b = ax - ay, bx - by
    elif op == "*" and not (ax and ay):
        a, b = ax * by + ay * bx, bx * by
    elif op == "/" and not ay and by and not ax % by and not bx % by:   # whole for every t
        a, b = ax // by, bx // by
    else:
        raise _NotALoop({"*": f"it multiplies {name} by itself",
                         "/": f"it divides by {name}, or a division by a number is not whole for every {name}"
                         }.get(op, f"it raises to a power with {name}"))
    return b if a == 0 else _Affine(a, b)


class _MovesRecipe:
    """Makes a node's index maps when called (Node.moves calls it on first use)."""

    __slots__ = ("node", "in_shapes")

    def __init__(self, node, in_shapes):
        self.node, self.in_shapes = node, in_shapes

    def __call__(self) -> list:
        return index_maps(self.node, self.in_shapes)


def index_maps(node: Node, in_shapes) -> list:
    """Per input, (out_positions, in_positions): which output elements copy which input
    elements. int32 where every position fits (half the memory of int64)."""
    sizes = [prod(s) for s in in_shapes]
    dtype = _index_dtype(sizes + [prod(node.shape)])
    prim = REGISTRY[node.op]
    if prim.moved is not None:   # some output elements stay 0: label the input from 1
        labelled = np.arange(1, sizes[0] + 1, dtype=dtype).reshape(in_shapes[0])
        out = np.array(prim.evaluate(np, labelled, **node.attrs), dtype=dtype).reshape(-1)
        out_pos = np.nonzero(out)[0].astype(dtype)
        return [(out_pos, (out[out_pos] - 1).astype(dtype))]
    if len(in_shapes) == 1:   # every output element comes from the one input
        labelled = np.arange(sizes[0], dtype=dtype).reshape(in_shapes[0])
        in_pos = np.array(prim.evaluate(np, labelled, **node.attrs), dtype=dtype).reshape(-1)
        return [(np.arange(in_pos.size, dtype=dtype), in_pos)]
    offsets = np.cumsum([0] + sizes)
    labelled = [np.arange(offsets[i], offsets[i + 1], dtype=dtype).reshape(s)
                for i, s in enumerate(in_shapes)]
    out = np.asarray(prim.evaluate(np, *labelled, **node.attrs)).reshape(-1)
    moves = []
    for i in range(len(in_shapes)):
        out_pos = np.nonzero((out >= offsets[i]) & (out < offsets[i + 1]))[0].astype(dtype)
        moves.append((out_pos, (out[out_pos] - offsets[i]).astype(dtype)))
    return moves


def build(text: str, filename: str = "<input>", dims=None, node_limit=DEFAULT_NODE_LIMIT) -> Graph:
    return Builder(text, filename, dims, node_limit).build()
