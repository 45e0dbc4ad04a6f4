"""Random .ad programs for the differential test (tests/test_differential.py).

Each program is generated as a small syntax tree in Python (the classes ``E``,
``Decl``, ``Def``, ``GenProgram`` below), rendered to .ad source text, and
evaluated by the NumPy interpreter in this file. That interpreter is written
from docs/language.md and shares no code with adcli: it is the independent
oracle. ``GenProgram.evaluate`` gives the values (and, with perturbed inputs,
central differences); ``GenProgram.jacobian`` gives the oracle's own Jacobian by
forward-mode dual numbers, with the documented conventions at kinks.

Generation is *value-aware*: the inputs' values are fixed first, every
candidate subexpression is evaluated as it is made, and a candidate that
leaves the safe region is rewritten or dropped. The safe region:

* every value is finite and at most ``VALUE_LIMIT`` in magnitude (a larger one
  is scaled down by a literal);
* log's argument ≥ 0.2, log1p's ≥ -0.8, sqrt's ≥ 0.1, a divisor's magnitude ≥ 0.25,
  |cos| ≥ 0.3 under tan, exp's argument ≤ 4, a norm ≥ 0.2 (or exactly 0), a
  negative power's base ≥ 0.3 in magnitude, a non-integer or non-constant
  power's base ≥ 0.2 (or exactly 0 with an exponent ≥ 1.5) with an exponent of
  magnitude ≤ 3; arcsin's, arccos's and arctanh's argument in [-0.9, 0.9], arccosh's
  ≥ 1.1, log2's and log10's ≥ 0.2, sinh's and cosh's magnitude ≤ 3, expm1's ≤ 4,
  arctan2(y, x) at radius ≥ 0.25 and away from its branch cut (not x < 0 with |y| < 0.2),
  hypot ≥ 0.2, gammaln's and digamma's argument ≥ 0.2 or negative in (-3.8, 0) at least 0.2
  from an integer (a pole), multigammaln(a, d)'s a ≥ (d - 1)/2 + 0.2 (inside its domain).
  Where an op would leave its domain the generator uses a safe
  form instead: log(1 + a*a), sqrt(1 + a*a), a / (1 + b*b), tan(0.5 * tanh(a)),
  exp(tanh(a)), (1 + a*a) ^ e, arcsin(0.9 * tanh(a)), arccosh(1.1 + a*a),
  arctan2(a, 1 + b*b), ...

Linear algebra: trace, diag (of a vector or a matrix), tril and triu (with an offset k) and
fill_tril of any term; solve, inv, det, logdet, cholesky and triangular_solve (lower or upper,
vector or matrix right-hand sides) of a well-conditioned matrix made from a term X
(``Generator.conditioned``): eye(n) + s·X with s·n·max|X| ≤ ½, X + c·eye(n) with c ≥ 2n·max|X|,
or s²·X Xᵀ + eye(n); a condition number above 50 (of the triangle, or of the symmetric matrix
cholesky reads from the lower triangle) is outside the safe region. The value oracle takes
triangular_solve from scipy.linalg.solve_triangular (adcli does not use it); the derivative
oracle differentiates cholesky's loops element by element (adcli uses L Φ(L⁻¹ dS L⁻ᵀ)).

einsum: products and chains of up to four operands, traces, diagonals (and a diagonal times
a matrix), sums, transposes, outer and elementwise products, a scalar operand, implicit outputs
and a letter only one operand has, sometimes one operand twice. The value oracle is
numpy.einsum; the derivative oracle takes the tangent of each operand in its place in one
numpy.einsum (adcli contracts pairwise, in an order of its own, with Seeds).

Reductions and norm sometimes keep their reduced axes (keepdims=true), often broadcast back
against their argument (``x - max(x, axis=1, keepdims=true)``, ``x / norm(x, keepdims=true)``);
both oracles reduce as usual and reshape the value and the tangent to the kept shape.

The constants pi and e appear as scalar literals and in constant data
(``0.25 * pi * (2 * rand(seed=S) - 1)``, ``e - 2 * rand(seed=S)``).

so derivatives stay modest and central differences are meaningful.

Repeats carry a value through their iterations (``h = squash(h op term)``);
some have a loop index, ``repeat K as i`` (and ``as j`` on a repeat around
one), read by the term as an element, row, column or block of a vector or
matrix long enough for every iteration (``x[i]``, ``X[-1 - i]``, ``v[j * 3 + i]``,
``Ws[i * w:(i + 1) * w, :] @ h``), or as a number (``0.25 * i``). Written with
loop indices, an integer is an ``Idx``, evaluated in each iteration. Kinks
(relu, abs, maximum, minimum, max, min, norm at 0, a base of 0) are *not*
avoided, and some are hit on purpose (``Generator.at_kink``: x - c with a const
c equal to the input x in some elements, then relu, abs, maximum, max, norm,
^ of it), so that the conventions decide the derivative. The interpreter
records a signature of every kink it passes (the sign of relu's and abs's
argument, of a - b in maximum/minimum, the arg-max mask of max/min, whether a
norm or a power's base is 0), and the test uses a central difference only
where the signature at the perturbed points equals the one at x (so the
function is smooth along that column there); the dual numbers check every
column. Exact ties that come from repeated elements ([x, x], maximum(a, a))
keep their signature under any perturbation, so they meet differences too.

Choices go through a ``Chooser``: ``DrawChooser`` draws from Hypothesis (so
failing programs shrink), ``RandomChooser`` from ``random.Random`` (for the
coverage test and for ``python tests/test_differential.py``).
"""
from __future__ import annotations

import random
from math import prod

import numpy as np

VALUE_LIMIT = 30.0
MAX_INPUT_SCALARS = 16     # keeps the unit JVPs and the central differences cheap
MAX_OUTPUT_SCALARS = 16

UNARY = ("sin", "cos", "tan", "exp", "log", "log1p", "sqrt", "tanh", "sigmoid", "relu", "abs", "square")
# The elementwise functions NumPy has beyond those, and two binary ones (broadcasting)
SPECIAL = ("arcsin", "arccos", "arctan", "sinh", "cosh", "arcsinh", "arccosh", "arctanh", "expm1", "log2",
           "log10", "softplus", "erf", "erfc", "gammaln", "digamma")
SPECIAL_BINARY = ("arctan2", "hypot")
CONSTANTS = {"pi": np.pi, "e": np.e}     # names the language gives a value, unless a file rebinds them
COMPARE = {"<": np.less, "<=": np.less_equal, ">": np.greater, ">=": np.greater_equal, "==": np.equal,
           "!=": np.not_equal}
REDUCTIONS = ("sum", "mean", "max", "min", "prod", "logsumexp", "softmax")
POLES = ("gammaln", "digamma")   # poles at 0, -1, -2, ...: kept 0.2 away, and above -3.8
MULTIGAMMA_MARGIN = 0.2          # multigammaln(a, d) with a ≥ (d - 1)/2 + this


# -- choices ------------------------------------------------------------------------------------

class RandomChooser:
    def __init__(self, seed):
        self.rng = random.Random(seed)

    def integer(self, lo, hi):
        return self.rng.randint(lo, hi)

    def choice(self, seq):
        return seq[self.rng.randrange(len(seq))]

    def chance(self, p):
        return self.rng.random() < p

    def weighted(self, pairs):
        items, weights = zip(*pairs)
        return self.rng.choices(items, weights)[0]


class DrawChooser:
    """Hypothesis draws. Everything shrinks towards 0: the first item of a choice,
    False for a chance (so the simpler alternative must be the False one)."""

    def __init__(self, draw):
        from hypothesis import strategies as st
        self.draw, self.st = draw, st

    def integer(self, lo, hi):
        return self.draw(self.st.integers(lo, hi))

    def choice(self, seq):
        return seq[self.integer(0, len(seq) - 1)]

    def chance(self, p):
        return self.integer(0, 99) >= round(100 * (1 - p))

    def weighted(self, pairs):
        total = sum(w for _, w in pairs)
        r = self.integer(0, total - 1)
        for item, w in pairs:
            if r < w:
                return item
            r -= w
        return pairs[-1][0]


# -- the syntax tree ---------------------------------------------------------------------------

class I:
    """An integer as written in the source (a number or a dim expression) and its value."""
    __slots__ = ("text", "value")

    def __init__(self, text, value):
        self.text, self.value = str(text), int(value)

    def __repr__(self):
        return f"I({self.text!r}, {self.value})"


class Idx:
    """An integer written with loop indices (`i`, `2 * i`, `-1 - i`, `j * 3 + i`): its text,
    and its value offset + Σ scale · index for the indices' values in an iteration."""
    __slots__ = ("text", "coeffs", "offset")

    def __init__(self, text, coeffs, offset=0):
        self.text, self.coeffs, self.offset = str(text), tuple(coeffs), int(offset)

    def at(self, values):
        return self.offset + sum(scale * int(values[name]) for name, scale in self.coeffs)

    def __repr__(self):
        return f"Idx({self.text!r})"


def int_value(n, values):
    """The value of an I, or of an Idx in the iteration whose indices `values` holds."""
    return n.at(values) if isinstance(n, Idx) else n.value


class E:
    """An expression. op is one of: var num neg fn bin call reduce norm T transpose reshape
    concat stack list index defcall."""
    __slots__ = ("op", "kids", "p")

    def __init__(self, op, kids=(), **p):
        self.op, self.kids, self.p = op, tuple(kids), p

    def __repr__(self):
        return render(self)


def var(name):
    return E("var", name=name)


def num(value):
    return E("num", value=float(value))


def fn(name, x):
    return E("fn", (x,), name=name)


def bin_(sym, a, b, signed=False):
    return E("bin", (a, b), sym=sym, signed=signed)


def call(name, *args):
    return E("call", args, name=name)


def reduce_(name, x, axis=None, keepdims=False):
    return E("reduce", (x,), name=name, axis=axis, keepdims=keepdims)


class Decl:
    """An input or const: its name, shape, value and how both are written."""

    def __init__(self, name, shape, value, type_text=None, value_text=None):
        self.name, self.shape = name, tuple(shape)
        self.value = np.asarray(value, dtype=np.float64).reshape(self.shape)
        self.type_text = type_text
        self.value_text = value_text if value_text is not None else fmt_array(self.value)


class Def:
    """def NAME(params) = ret, or the block form with body statements. A def that returns
    several values (`return a, b`) has them in `rets` (and ret None); only an unpacking
    statement calls it."""

    def __init__(self, name, params, body, ret, block, rets=None):
        self.name, self.params, self.body, self.ret, self.block = name, list(params), list(body), ret, block
        self.rets = rets


# statements: ("assign", name, E), ("repeat", I, [statements], index name or None),
# ("output", name, E or None), ("unpack", [names], E: a defcall of a def with rets)

class GenProgram:
    """A generated program: source text plus everything the oracle needs."""

    def __init__(self, dims=(), consts=(), inputs=(), defs=(), stmts=(), int_consts=()):
        self.dims = list(dims)            # [(name, value)]
        self.int_consts = list(int_consts)   # [(name, integer array)]: indices of gathers
        self.consts = list(consts)
        self.inputs = list(inputs)
        self.defs = list(defs)
        self.stmts = list(stmts)
        self.source = render_program(self)
        self.output_names = [s[1] for s in _walk(self.stmts) if s[0] == "output"]

    def __repr__(self):
        return "\n" + self.source

    @property
    def features(self) -> set:
        """What this program exercises: ops and forms met while evaluating it, and its
        declarations and outputs."""
        _, trace = self.evaluate(collect=True)
        tags = set(trace.features)
        tags |= {f"input:{len(d.shape)}d" for d in self.inputs}
        if any(("pi" in d.value_text or "e -" in d.value_text) for d in self.inputs + self.consts):
            tags.add("constant-data")
        tags |= {"def-block" if f.block else "def-expr" for f in self.defs}
        outputs = [s for s in self.stmts if s[0] == "output"]
        if len(outputs) > 1:
            tags.add("several-outputs")
        targets = [s[1] if s[2] is None else s[2].p["name"] for s in outputs if s[2] is None or s[2].op == "var"]
        if len(set(targets)) < len(targets):
            tags.add("output-alias")
        if any(s[2] is None for s in outputs):
            tags.add("output-bare")
        if any(s[0] == "assign" and s[1] in self.input_values for s in self.stmts):
            tags.add("rebind-input")
        if any(s[2] is not None and s[2].op == "var" and s[2].p["name"] in self.input_values for s in outputs):
            tags.add("output-input")
        return tags

    @property
    def input_values(self):
        return {d.name: d.value for d in self.inputs}

    def evaluate(self, inputs=None, collect=False):
        """Outputs (dict, declaration order) and the Trace (problems, kink signature, and
        with collect=True the features met)."""
        ctx = Ctx(self, Trace())
        ctx.collect = collect
        scope = Scope({})
        for d in self.consts:
            scope.values[d.name] = d.value
        for d in self.inputs:
            value = d.value if inputs is None or d.name not in inputs else inputs[d.name]
            scope.values[d.name] = np.asarray(value, dtype=np.float64).reshape(d.shape)
        outputs = {}
        run_statements(self.stmts, scope, ctx, outputs)
        return outputs, ctx.trace

    def jacobian(self, inputs=None):
        """The oracle's own Jacobian (rows: outputs' elements in declaration order; columns:
        inputs' elements), by forward-mode dual numbers carrying every unit direction at once,
        with the conventions of docs/language.md at non-differentiable points."""
        ctx = Ctx(self, Trace())
        values = {d.name: d.value for d in self.consts}
        tangents = {}
        sizes = [d.value.size for d in self.inputs]
        total, offset = sum(sizes), 0
        for d, size in zip(self.inputs, sizes):
            value = d.value if inputs is None or d.name not in inputs else inputs[d.name]
            values[d.name] = np.asarray(value, dtype=np.float64).reshape(d.shape)
            t = np.zeros((total, size))
            t[offset:offset + size] = np.eye(size)
            tangents[d.name] = t.reshape((total,) + d.shape)
            offset += size
        scope = Scope(values)
        scope.tangents = tangents
        outputs = {}
        with np.errstate(all="ignore"):
            run_dual(self.stmts, scope, ctx, outputs, total)
        rows = []
        for name, (v, t) in outputs.items():
            rows.append(np.zeros((v.size, total)) if t is None else t.reshape(total, -1).T)
        return np.concatenate(rows, axis=0)


def _walk(stmts):
    for s in stmts:
        yield s
        if s[0] == "repeat":
            yield from _walk(s[2])


# -- rendering -----------------------------------------------------------------------------------

def fmt(v):
    v = float(v)
    if v == int(v) and abs(v) < 1e6:
        return str(int(v))
    return repr(v)


def fmt_array(a):
    a = np.asarray(a)
    if a.ndim == 0:
        return fmt(a)
    return "[" + ", ".join(fmt_array(x) for x in a) + "]"


ATOMIC = {"einsum", "var", "fn", "call", "reduce", "norm", "multigammaln", "transpose", "reshape", "concat", "stack", "la", "eye",
          "list", "defcall", "index", "T", "take", "scatter"}


def wrap(e):
    s = render(e)
    if e.op in ATOMIC or (e.op == "num" and e.p["value"] >= 0):
        return s
    return f"({s})"


def render(e) -> str:
    op, k, p = e.op, e.kids, e.p
    if op == "var":
        return p["name"]
    if op == "num":
        return fmt(p["value"])
    if op == "neg":
        return "-" + wrap(k[0])
    if op == "fn":
        return f"{p['name']}({render(k[0])})"
    if op in ("bin", "cmp", "logic"):   # infix: arithmetic, comparisons, and / or
        if p["sym"] == "^" and p.get("signed") and k[1].op == "num":
            return f"{wrap(k[0])} ^ {fmt(k[1].p['value'])}"    # the signed exponent: x ^ -1
        return f"{wrap(k[0])} {p['sym']} {wrap(k[1])}"
    if op == "call":
        return f"{p['name']}({', '.join(render(x) for x in k)})"
    if op == "not":
        return f"not {wrap(k[0])}"
    if op == "reduce":
        axis = "" if p["axis"] is None else f", axis={_axis_text(p['axis'])}"
        keep = ", keepdims=true" if p.get("keepdims") else ""
        return f"{p['name']}({render(k[0])}{axis}{keep})"
    if op == "norm":   # ord and axis as numpy.linalg.norm takes them; axes as a tuple or a list
        order = p.get("ord")
        ord_text = "" if order is None else ", " + (f"'{order}'" if order == "fro" else order
                                                     if isinstance(order, str) else fmt(order))
        axis = p.get("axis")
        axis_text = "" if axis is None else ", axis=" + (
            f"({', '.join(map(str, axis))}{',' if len(axis) == 1 else ''})" if isinstance(axis, tuple)
            and p.get("as_tuple") else _axis_text(axis))
        return f"norm({render(k[0])}{ord_text}{axis_text}{', keepdims=true' if p.get('keepdims') else ''})"
    if op == "multigammaln":
        return f"multigammaln({render(k[0])}, {p['d'].text})"
    if op == "T":
        return f"{wrap(k[0])}.T"
    if op == "transpose":
        axes = p.get("axes")
        return f"transpose({render(k[0])}{'' if axes is None else ', ' + _axis_text(list(axes))})"
    if op in ("expand_dims", "squeeze"):
        axis = p.get("axis")
        return f"{op}({render(k[0])}{'' if axis is None else ', ' + _axis_text(axis)})"
    if op == "reshape":
        return f"reshape({render(k[0])}, {', '.join(s.text for s in p['sizes'])})"
    if op in ("concat", "stack"):
        return f"{op}({', '.join(render(x) for x in k)})"
    if op == "list":
        return "[" + ", ".join(render(x) for x in k) + "]"
    if op == "index":
        subs = []
        for sub in p["subs"]:
            if sub[0] == "at":
                subs.append(sub[1].text)
            elif sub[0] == "arr":   # integer data: a const's name or a list
                subs.append(sub[2])
            else:
                lo, hi = sub[1], sub[2]
                text = f"{'' if lo is None else lo.text}:{'' if hi is None else hi.text}"
                step = sub[3] if len(sub) > 3 else None
                subs.append(text if step is None else f"{text}:{step.text}")
        return f"{wrap(k[0])}[{', '.join(subs)}]"
    if op == "eye":
        return f"eye({p['n'].text})"
    if op == "la":   # linear algebra: the operands, then tril's/triu's k, fill_tril's n, lower=
        extra = [p[key].text for key in ("k", "n") if p.get(key) is not None]
        if "lower" in p:
            extra.append("lower=false" if not p["lower"] else "lower=true")
        return f"{p['name']}({', '.join([render(x) for x in k] + extra)})"
    if op == "defcall":
        return f"{p['name']}({', '.join(render(x) for x in k)})"
    if op == "einsum":
        return f'einsum("{p["subs"]}", {", ".join(render(x) for x in k)})'
    if op == "take":
        return f"take_along_axis({render(k[0])}, {p['text']}, axis={p['axis']})"
    if op == "scatter":
        return f"scatter_add({render(k[0])}, {p['text']}, {p['n_text']})"
    raise ValueError(op)


def _axis_text(axis) -> str:
    """An axis, or several as a list: 1, [0, 2]."""
    return f"[{', '.join(map(str, axis))}]" if isinstance(axis, (tuple, list)) else str(axis)


def int_list_text(a) -> str:
    return str(np.asarray(a).tolist())


def type_text(shape, dims):
    if not shape:
        return "scalar"
    if len(shape) == 1:
        return f"vec[{size_text(shape[0], dims)}]"
    if len(shape) > 2:
        return f"tensor[{', '.join(size_text(d, dims) for d in shape)}]"
    return f"mat[{size_text(shape[0], dims)}, {size_text(shape[1], dims)}]"


def size_text(v, dims):
    for name, d in dims:
        if d == v:
            return name
    for name, d in dims:
        if d + 1 == v:
            return f"{name} + 1"
        if 2 * d == v:
            return f"2 * {name}"
    return str(v)


def render_statements(stmts, indent):
    lines = []
    pad = "    " * indent
    for s in stmts:
        if s[0] == "assign":
            lines.append(f"{pad}{s[1]} = {render(s[2])}")
        elif s[0] == "unpack":
            lines.append(f"{pad}{', '.join(s[1])} = {render(s[2])}")
        elif s[0] == "repeat":
            index = f" as {s[3]}" if s[3] is not None else ""
            lines.append(f"{pad}repeat {s[1].text}{index} {{")
            lines += render_statements(s[2], indent + 1)
            lines.append(f"{pad}}}")
        elif s[0] == "output":
            lines.append(f"{pad}output {s[1]}" + ("" if s[2] is None else f" = {render(s[2])}"))
    return lines


def render_program(prog: GenProgram) -> str:
    lines = [f"dim {name} = {value}" for name, value in prog.dims]
    for name, a in prog.int_consts:
        kind = f"ivec[{a.shape[0]}]" if a.ndim == 1 else f"imat[{a.shape[0]}, {a.shape[1]}]"
        lines.append(f"const {name}: {kind} = {int_list_text(a)}")
    for kind, decls in (("const", prog.consts), ("input", prog.inputs)):
        for d in decls:
            typed = f": {d.type_text}" if d.type_text else ""
            lines.append(f"{kind} {d.name}{typed} = {d.value_text}")
    for f in prog.defs:
        head = f"def {f.name}({', '.join(f.params)})"
        returned = ", ".join(render(r) for r in (f.rets or [f.ret]))
        if f.block:
            lines.append(head + " {")
            lines += render_statements(f.body, 1)
            lines.append(f"    return {returned}")
            lines.append("}")
        else:
            lines.append(f"{head} = {returned}")
    lines += render_statements(prog.stmts, 0)
    return "\n".join(lines) + "\n"


# -- the oracle: a NumPy interpreter of the tree ----------------------------------------------------

class Trace:
    def __init__(self):
        self.problems = []    # domain or magnitude violations (the generator avoids them)
        self.kinks = []       # int8 arrays: which side of each kink the evaluation went
        self.features = set() # what the evaluation went through (for the coverage test)
        self.def_calls = {}

    def signature_equal(self, other) -> bool:
        return len(self.kinks) == len(other.kinks) and all(
            a.shape == b.shape and np.array_equal(a, b) for a, b in zip(self.kinks, other.kinks))


class Scope:
    def __init__(self, values, in_def=False):
        self.values, self.in_def = values, in_def
        self.indices = set()    # names in values that are loop indices (repeat K as i)


class Ctx:
    def __init__(self, prog, trace, dims=None, consts=None, defs=None):
        self.dims = dict(prog.dims if prog is not None else dims)
        self.consts = {d.name: d.value for d in (prog.consts if prog is not None else consts)}
        self.defs = {f.name: f for f in (prog.defs if prog is not None else defs)}
        self.trace = trace
        self.collect = False

    def lookup(self, name, scope):
        if name in scope.values:
            return scope.values[name]
        if name in self.consts:      # consts are visible everywhere, defs included
            return self.consts[name]
        if name in self.dims:
            return np.float64(self.dims[name])
        if name in CONSTANTS:
            return np.float64(CONSTANTS[name])
        raise KeyError(f"oracle: name {name} is not defined")

    def problem(self, what):
        self.trace.problems.append(what)

    def kink(self, arr):
        self.trace.kinks.append(np.asarray(arr, dtype=np.int8).copy())

    def feature(self, tag):
        if self.collect:
            self.trace.features.add(tag)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


UNARY_EVAL = {
    "sin": np.sin, "cos": np.cos, "tan": np.tan, "exp": np.exp, "log": np.log, "log1p": np.log1p,
    "sqrt": np.sqrt, "tanh": np.tanh, "sigmoid": _sigmoid, "relu": lambda x: np.maximum(x, 0.0),
    "abs": np.abs, "square": lambda x: x * x, "sign": np.sign,
    "heaviside": lambda x: (x > 0).astype(float),    # heaviside(0) = 0, as docs/language.md says
    "arcsin": np.arcsin, "arccos": np.arccos, "arctan": np.arctan, "sinh": np.sinh, "cosh": np.cosh,
    "arcsinh": np.arcsinh, "arccosh": np.arccosh, "arctanh": np.arctanh, "expm1": np.expm1,
    "log2": np.log2, "log10": np.log10,
    "softplus": lambda x: np.maximum(x, 0.0) + np.log1p(np.exp(-np.abs(x))),   # log(1 + eˣ), stable
    # SciPy's special functions: the oracle takes the values from SciPy and writes the
    # derivatives from their definitions (erf' = 2/√π e^(-x²), gammaln' = digamma, ...)
    "erf": lambda x: _scipy_special().erf(x), "erfc": lambda x: _scipy_special().erfc(x),
    "gammaln": lambda x: _scipy_special().gammaln(x), "digamma": lambda x: _scipy_special().digamma(x),
}


def _scipy_special():
    import scipy.special

    return scipy.special


def _off_poles(x):
    """gammaln's and digamma's safe region: x ≥ 0.2, or -3.8 < x < 0 at least 0.2 from an integer."""
    return np.all((x >= 0.2) | ((x < 0) & (x > -3.8) & (np.abs(x - np.round(x)) >= 0.2)))


def _multigammaln(a, d):
    """SciPy's multigammaln, elementwise; NaN where it refuses (a ≤ (d - 1)/2)."""
    a = np.asarray(a, dtype=np.float64)
    if not np.all(a > (d - 1) / 2):
        return np.full(a.shape, np.nan)
    return np.asarray(_scipy_special().multigammaln(a, d), dtype=np.float64)
# The domains the generator keeps each function's argument in (``Generator.fixes`` rewrites
# an argument outside): arcsin, arccos, arctanh on [-0.9, 0.9], arccosh on [1.1, ∞), log2 and
# log10 like log, sinh and cosh on [-3, 3], expm1 like exp.
DOMAIN = {"arcsin": (-0.9, 0.9), "arccos": (-0.9, 0.9), "arctanh": (-0.9, 0.9), "arccosh": (1.1, np.inf),
          "log2": (0.2, np.inf), "log10": (0.2, np.inf), "sinh": (-3, 3), "cosh": (-3, 3),
          "expm1": (-np.inf, 4)}


def _keepdims(ctx, e, x, out):
    """A reduction's value as written: with keepdims=true, its reduced axes kept as 1."""
    if not e.p.get("keepdims"):
        return out
    ctx.feature("keepdims:all" if e.p.get("axis") is None else "keepdims:axis")
    return np.reshape(out, _keep_shape(x.shape, _norm_axis(e.p.get("axis"), x.ndim)))


def _axes(axis):
    return axis if isinstance(axis, tuple) else (axis,)


def _keep_shape(shape, axis):
    return tuple(1 if axis is None or i in _axes(axis) else d for i, d in enumerate(shape))


def _keep(value, shape, axis):
    return np.reshape(value, _keep_shape(shape, axis))


def _reduce(name, x, axis):
    axis = _norm_axis(axis, x.ndim)
    if name == "log_softmax" and isinstance(axis, tuple):   # over several axes: x - logsumexp
        return x - _keep(_reduce("logsumexp", x, axis), x.shape, axis)
    if name == "logsumexp":
        top = np.max(x, axis=axis, keepdims=True)
        out = np.log(np.sum(np.exp(x - top), axis=axis, keepdims=True)) + top
        return out.reshape(()) if axis is None else np.squeeze(out, axis=axis)
    if name == "softmax":
        top = np.max(x, axis=axis, keepdims=True)
        ex = np.exp(x - top)
        return ex / np.sum(ex, axis=axis, keepdims=True)
    if name == "log_softmax":
        return _scipy_special().log_softmax(x, axis=axis)
    return getattr(np, name)(x, axis=axis)


def _int_power(e):
    return e.op == "num" and float(e.p["value"]).is_integer()



# Linear algebra: values from NumPy and SciPy (scipy.linalg.solve_triangular, which adcli does
# not use), refused (a problem: the generator keeps away) where a matrix is ill-conditioned,
# so that central differences and the dual numbers stay accurate.
LINALG = ("trace", "diag", "tril", "triu", "fill_tril", "solve", "inv", "det", "logdet", "cholesky",
          "triangular_solve")
MAX_CONDITION = 50.0


def _lower_symmetric(a):
    """The symmetric matrix cholesky reads from a's lower triangle (docs/language.md)."""
    return np.tril(a) + np.tril(a, -1).T


def _triangle(a, lower):
    return np.tril(a) if lower else np.triu(a)


def _linalg(ctx, e, args):
    name, p = e.p["name"], e.p
    a = args[0]
    tag = {"diag": "diag:vec" if a.ndim == 1 else "diag:mat",
           "solve": "solve" if args[-1].ndim == 1 else "solve:mat",
           "triangular_solve": "triangular_solve" if p.get("lower", True) else "triangular_solve:upper",
           "tril": "tril" if p.get("k") is None else "tril:k", "triu": "triu" if p.get("k") is None else "triu:k",
           }.get(name, name)
    ctx.feature(tag)
    if name == "trace":
        return np.trace(a)
    if name == "diag":
        return np.diag(a)
    if name in ("tril", "triu"):
        return getattr(np, name)(a, 0 if p.get("k") is None else p["k"].value)
    if name == "fill_tril":
        n = p["n"].value
        out = np.zeros((n, n))
        out[np.tril_indices(n)] = a
        return out
    checked = {"cholesky": _lower_symmetric(a), "triangular_solve": _triangle(a, p.get("lower", True))}.get(name, a)
    if not np.all(np.isfinite(checked)) or np.linalg.cond(checked) > MAX_CONDITION:
        ctx.problem(f"{name} of an ill-conditioned matrix")
        return np.full(np.shape(_linalg_shape(name, args)), np.nan)
    if name == "cholesky" and np.min(np.linalg.eigvalsh(checked)) < 0.1:
        ctx.problem("cholesky of a matrix that is not positive definite")
        return np.full(a.shape, np.nan)
    if name == "solve":
        return np.linalg.solve(a, args[1])
    if name == "inv":
        return np.linalg.inv(a)
    if name == "det":
        return np.linalg.det(a)
    if name == "logdet":
        return np.linalg.slogdet(a)[1]
    if name == "cholesky":
        return np.linalg.cholesky(checked)
    import scipy.linalg

    return scipy.linalg.solve_triangular(a, args[1], lower=p.get("lower", True))


def _linalg_shape(name, args):
    if name in ("det", "logdet"):
        return np.float64(0)
    if name in ("solve", "triangular_solve"):
        return args[1]
    return args[0]


def _cholesky_dual(a, t):
    """L and its tangents by differentiating the Cholesky–Banachiewicz loops themselves
    (forward mode, element by element), reading a's lower triangle only: an independent
    derivation of the rule adcli uses (L Φ(L⁻¹ dS L⁻ᵀ))."""
    n = a.shape[0]
    L = np.zeros((n, n))
    dL = np.zeros((t.shape[0], n, n))
    for j in range(n):
        s = a[j, j] - L[j, :j] @ L[j, :j]
        ds = t[:, j, j] - 2 * dL[:, j, :j] @ L[j, :j]
        L[j, j] = np.sqrt(s)
        dL[:, j, j] = ds / (2 * L[j, j])
        for i in range(j + 1, n):
            u = a[i, j] - L[i, :j] @ L[j, :j]
            du = t[:, i, j] - dL[:, i, :j] @ L[j, :j] - dL[:, j, :j] @ L[i, :j]
            L[i, j] = u / L[j, j]
            dL[:, i, j] = (du - L[i, j] * dL[:, j, j]) / L[j, j]
    return L, dL


def _each_direction(f, t):
    return np.stack([f(d) for d in t])


def _linalg_dual(e, pairs, K):
    """(value, tangent) of a linear algebra op, from the textbook derivatives."""
    name, p = e.p["name"], e.p
    a, ta = pairs[0]
    if name in ("solve", "triangular_solve"):
        b, tb = pairs[1]
        lower = p.get("lower", True)
        if name == "solve":
            x, solve = np.linalg.solve(a, b), (lambda r: np.linalg.solve(a, r))
        else:
            import scipy.linalg

            solve = lambda r: scipy.linalg.solve_triangular(a, r, lower=lower)   # noqa: E731
            x = solve(b)
        if ta is None and tb is None:
            return x, None
        rhs = np.zeros((K,) + np.shape(b)) if tb is None else np.broadcast_to(tb, (K,) + np.shape(b))
        if ta is not None:   # x = A⁻¹b: dx = A⁻¹(db − dA x), dA only its triangle for triangular_solve
            rhs = rhs - np.matmul(ta if name == "solve" else _triangle(ta, lower), x)
        return x, _each_direction(solve, rhs)
    if name == "cholesky":
        if ta is None:
            return np.linalg.cholesky(_lower_symmetric(a)), None
        return _cholesky_dual(a, ta)
    value = {"trace": np.trace, "diag": np.diag, "inv": np.linalg.inv, "det": np.linalg.det,
             "logdet": lambda m: np.linalg.slogdet(m)[1]}.get(name)
    if name in ("tril", "triu"):
        k = 0 if p.get("k") is None else p["k"].value
        out = getattr(np, name)(a, k)
        return out, None if ta is None else getattr(np, name)(ta, k)   # on the last two axes
    if name == "fill_tril":
        n = p["n"].value
        rows, cols = np.tril_indices(n)
        out = np.zeros((n, n))
        out[rows, cols] = a
        if ta is None:
            return out, None
        t = np.zeros((K, n, n))
        t[:, rows, cols] = ta
        return out, t
    out = value(a)
    if ta is None:
        return out, None
    if name == "trace":
        return out, np.trace(ta, axis1=1, axis2=2)
    if name == "diag":
        return out, (ta[:, :, None] * np.eye(a.shape[0]) if a.ndim == 1 else np.diagonal(ta, axis1=1, axis2=2))
    inverse = np.linalg.inv(a)
    if name == "inv":                   # d A⁻¹ = −A⁻¹ dA A⁻¹
        return out, -np.matmul(np.matmul(inverse, ta), inverse)
    jacobi = np.einsum("ij,Kji->K", inverse, ta)   # tr(A⁻¹ dA)
    return out, jacobi * out if name == "det" else jacobi


def index_key(subs, shape, values) -> tuple:
    """The NumPy key for an index expression's subscripts (element, or slice with
    open or negative bounds, written with numbers, dims or loop indices, whose values
    `values` holds), shared by both oracles."""
    key = []
    for axis, sub in enumerate(subs):
        n = shape[axis]
        if sub[0] == "at":
            at = int_value(sub[1], values)
            if not -n <= at < n:
                raise IndexError(f"oracle: index {at} out of range for length {n}")
            key.append(at % n)
        elif sub[0] == "arr":   # integer-array indexing, negative indices from the end
            a = np.asarray(sub[1])
            if a.size and not (-n <= a.min() and a.max() < n):
                raise IndexError(f"oracle: indices {a.tolist()} out of range for length {n}")
            key.append(a % n)
        elif len(sub) > 3 and sub[3] is not None:   # lo:hi:step, Python's meaning
            step = int_value(sub[3], values)
            lo = None if sub[1] is None else int_value(sub[1], values)
            hi = None if sub[2] is None else int_value(sub[2], values)
            key.append(np.array(list(range(n))[slice(lo, hi, step)], dtype=int))
        else:
            lo = 0 if sub[1] is None else int_value(sub[1], values)
            hi = n if sub[2] is None else int_value(sub[2], values)
            lo, hi = lo % n if lo < 0 else lo, hi + n if hi < 0 else hi
            if not 0 <= lo <= hi <= n:   # lo:lo is empty, a value of no elements
                raise IndexError(f"oracle: slice {lo}:{hi} out of range for length {n}")
            key.append(slice(lo, hi))
    return tuple(key)


def along_key(a, shape, axis) -> tuple:
    """numpy.take_along_axis(x, a, axis) as an integer-array key into x."""
    if len(shape) == 1:
        return (a % shape[0],)
    other = np.arange(shape[1 - axis]).reshape((-1, 1) if axis == 1 else (1, -1))
    return (other, a % shape[1]) if axis == 1 else (a % shape[0], other)


def scatter(values, a, n, K=None):
    """zeros of n rows with values[k] added to row a[k] (numpy.add.at); with K, for a
    tangent with K directions on a leading axis."""
    lead = () if K is None else (K,)
    rest = np.shape(values)[len(lead) + a.ndim:]
    out = np.zeros(lead + (n,) + tuple(rest))
    np.add.at(out, ((slice(None),) if K is not None else ()) + (a,), values)
    return out

def _einsum_dual(subs, pairs):
    """einsum is linear in each operand: its tangent is the sum, over the operands that carry
    one, of the einsum with that operand replaced by its tangent (the directions a letter Z of
    their own; a repeated letter takes the tangent's diagonal, as it takes the value's)."""
    terms, _, out = subs.partition("->")
    terms = terms.split(",")
    if "->" not in subs:   # NumPy's implicit output: the letters that appear once, sorted
        letters = "".join(terms)
        out = "".join(sorted(ch for ch in set(letters) if letters.count(ch) == 1))
    values = [v for v, _ in pairs]
    tangent = None
    for i, (_, t) in enumerate(pairs):
        if t is None:
            continue
        spec = ",".join("Z" + term if j == i else term for j, term in enumerate(terms)) + "->Z" + out
        part = np.einsum(spec, *[t if j == i else v for j, v in enumerate(values)])
        tangent = part if tangent is None else tangent + part
    return np.einsum(subs, *values), tangent


def ev(e, scope, ctx):
    with np.errstate(all="ignore"):
        out = np.asarray(_ev(e, scope, ctx), dtype=np.float64)
    if not np.all(np.isfinite(out)):
        ctx.problem(f"non-finite value at {render(e)[:60]}")
    elif out.size and np.max(np.abs(out)) > VALUE_LIMIT:
        ctx.problem(f"magnitude {np.max(np.abs(out)):.3g} at {render(e)[:60]}")
    return out


def _ev(e, scope, ctx):
    op, k, p = e.op, e.kids, e.p
    if op == "var":
        if p["name"] in ctx.dims and p["name"] not in scope.values:
            ctx.feature("dim-as-value")
        if p["name"] in scope.indices:
            ctx.feature("repeat-index-value")
        if p["name"] in CONSTANTS and p["name"] not in scope.values:
            ctx.feature(f"constant:{p['name']}")
        return ctx.lookup(p["name"], scope)
    if op == "num":
        return np.float64(p["value"])
    if op == "neg":
        ctx.feature("neg")
        return -ev(k[0], scope, ctx)
    if op == "fn":
        name = p["name"]
        ctx.feature(f"fn:{name}")
        x = ev(k[0], scope, ctx)
        if name == "log" and x.size and np.min(x) < 0.2:
            ctx.problem("log near or below 0")
        if name == "log1p" and x.size and np.min(x) < -0.8:
            ctx.problem("log1p near or below -1")
        if name == "sqrt" and x.size and np.min(x) < 0.1:
            ctx.problem("sqrt near or below 0")
        if name == "tan" and np.min(np.abs(np.cos(x))) < 0.3:
            ctx.problem("tan near a pole")
        if name == "exp" and np.max(x) > 4:
            ctx.problem("exp of a large value")
        if name in DOMAIN and x.size and (np.min(x) < DOMAIN[name][0] or np.max(x) > DOMAIN[name][1]):
            ctx.problem(f"{name} outside {DOMAIN[name]}")
        if name in POLES and not _off_poles(x):
            ctx.problem(f"{name} near a pole")
        if name in ("relu", "abs", "sign", "heaviside"):
            ctx.kink(np.sign(x))
        return UNARY_EVAL[name](x)
    if op == "bin":
        sym = p["sym"]
        a, b = ev(k[0], scope, ctx), ev(k[1], scope, ctx)
        if ctx.collect:
            _binary_features(ctx, e, a, b)
        if sym == "+":
            return a + b
        if sym == "-":
            return a - b
        if sym == "*":
            return a * b
        if sym == "/":
            if np.min(np.abs(b)) < 0.25:
                ctx.problem("division by a value near 0")
            return a / b
        if sym == "@":
            return np.matmul(a, b)
        if sym == "^":
            if _int_power(k[1]):
                if p_value(k[1]) < 0 and np.min(np.abs(a)) < 0.3:
                    ctx.problem("negative power of a value near 0")
            else:
                # a base of exactly 0 is allowed with an exponent ≥ 1.5 (0^b: both partials 0 by
                # the documented conventions); anywhere else keep the base away from 0
                ab = np.broadcast_arrays(a, b)
                if not np.all((ab[0] >= 0.2) | ((ab[0] == 0) & (ab[1] >= 1.5))) or np.max(np.abs(b)) > 3:
                    ctx.problem("real power of a value near or below 0")
                ctx.kink(ab[0] == 0)
            return np.power(a, b)
    if op == "cmp":
        a, b = ev(k[0], scope, ctx), ev(k[1], scope, ctx)
        ctx.feature(f"cmp:{p['sym']}")
        ctx.kink(np.sign(a - b))            # the mask jumps where a = b
        return COMPARE[p["sym"]](a, b).astype(float)
    if op == "logic":
        a, b = ev(k[0], scope, ctx), ev(k[1], scope, ctx)
        ctx.feature(f"logic:{p['sym']}")
        return ((a != 0) & (b != 0) if p["sym"] == "and" else (a != 0) | (b != 0)).astype(float)
    if op == "not":
        ctx.feature("not")
        return (ev(k[0], scope, ctx) == 0).astype(float)
    if op == "call" and p["name"] in ("where", "clip"):
        x, a, b = (ev(y, scope, ctx) for y in k)
        ctx.feature(p["name"])
        if p["name"] == "where":
            ctx.kink(x != 0)
            return np.where(x != 0, a, b)
        ctx.kink(np.sign(x - a))            # clip(x, lo, hi) = minimum(maximum(x, lo), hi)
        ctx.kink(np.sign(np.maximum(x, a) - b))
        return np.minimum(np.maximum(x, a), b)
    if op == "call":
        name = p["name"]
        a, b = (ev(x, scope, ctx) for x in k)
        if ctx.collect:
            _binary_features(ctx, e, a, b)
        if name in ("maximum", "minimum"):
            ctx.kink(np.sign(a - b) * np.ones(np.broadcast_shapes(a.shape, b.shape)))
            return getattr(np, name)(a, b)
        if name == "dot":
            return np.dot(a, b)
        if name == "outer":
            return np.outer(a, b)
        if name == "arctan2":       # arctan2(y, x): away from the origin and the branch cut (x < 0, y = 0)
            y, x = np.broadcast_arrays(a, b)
            if y.size and (np.min(np.hypot(x, y)) < 0.25 or np.any((x < 0) & (np.abs(y) < 0.2))):
                ctx.problem("arctan2 near the origin or its branch cut")
            return np.arctan2(a, b)
        if name == "hypot":         # away from its kink at (0, 0)
            out = np.sqrt(a * a + b * b)
            if out.size and np.min(out) < 0.2:
                ctx.problem("hypot near (0, 0)")
            return out
    if op == "reduce":
        x = ev(k[0], scope, ctx)
        ctx.feature(p["name"] if p["name"] in ("softmax", "log_softmax") else
                    f"reduce:{p['name']}" + ("" if p["axis"] is None else ":axis"))
        if x.ndim > 2 or isinstance(p["axis"], tuple):
            ctx.feature(f"tensor-reduce:{p['name']}" + (":axes" if isinstance(p["axis"], tuple) else ""))
        out = _reduce(p["name"], x, p["axis"])
        if p["name"] in ("max", "min"):
            ctx.kink(x == _keep(out, x.shape, _norm_axis(p["axis"], x.ndim)))
        return _keepdims(ctx, e, x, out)
    if op == "multigammaln":
        ctx.feature("multigammaln" if p["d"].text.isdigit() else "multigammaln:dim")
        a = ev(k[0], scope, ctx)
        d = p["d"].value
        if a.size and np.min(a) < (d - 1) / 2 + MULTIGAMMA_MARGIN:
            ctx.problem(f"multigammaln(a, {d}) with a near or below {(d - 1) / 2}")
        return _multigammaln(a, d)
    if op == "norm":
        x = ev(k[0], scope, ctx)
        order, axes = p.get("ord"), _norm_axes(p, x.ndim)
        ctx.feature("norm" if axes is None else f"norm:{'matrix' if len(axes) == 2 else 'vector'}:" + (
            "2" if order in (None, 2.0, "fro") else "1" if order == 1.0 and len(axes) == 1 else
            "extreme" if order in (1.0, -1.0, "inf", "-inf") else "p"))
        if isinstance(p.get("axis"), tuple) and p.get("as_tuple"):
            ctx.feature("axis-tuple")
        # numpy.linalg.norm is the value oracle (adcli computes its own)
        out = np.linalg.norm(x, ord=_NUMPY_ORD.get(order, order),
                             axis=None if axes is None else axes if len(axes) == 2 else axes[0])
        # exactly 0 is allowed (norm(a - a)): the documented subgradient there is 0, and so is
        # the central difference while the argument stays 0; anywhere else keep away from 0
        if np.any((out > 0) & (out < 0.2)):
            ctx.problem("norm near 0")
        if isinstance(order, float) and order < 1 and np.any((x != 0) & (np.abs(x) < 0.2)):
            ctx.problem("a p-norm with p < 1 of an element near 0")   # |x|^(p - 1) is steep there
        ctx.kink(out > 0)
        if order not in (None, 2.0, "fro"):   # |x| at 0, and which elements (sums) attain the max
            ctx.kink(np.sign(x))
            if order in (1.0, -1.0, "inf", "-inf"):
                ctx.kink(_norm_hits(x, order, axes, out))
        return _keepdims(ctx, e, x, out)
    if op in ("T", "transpose"):
        x = ev(k[0], scope, ctx)
        ctx.feature("transpose" if x.ndim == 2 else "transpose-vec" if x.ndim < 2 else
                    "transpose-axes" if p.get("axes") is not None else "transpose-3d")
        return x.T if p.get("axes") is None else np.transpose(x, p["axes"])
    if op in ("expand_dims", "squeeze"):
        x = ev(k[0], scope, ctx)
        ctx.feature(op)
        axis = p.get("axis")
        if op == "expand_dims":
            return np.expand_dims(x, axis)
        return np.squeeze(x) if axis is None else np.squeeze(x, axis)
    if op == "reshape":
        x = ev(k[0], scope, ctx)
        out = np.reshape(x, tuple(s.value for s in p["sizes"]))
        ctx.feature("reshape:mat->vec" if out.ndim == 1 else "reshape:vec->mat" if x.ndim == 1 else "reshape:->mat")
        return out
    repeated = ctx.collect and len({render(x) for x in k}) < len(k)
    if op == "concat":
        xs = [ev(x, scope, ctx) for x in k]
        ctx.feature("concat" if xs[0].ndim == 1 else "concat-mat")
        if repeated:
            ctx.feature("concat-repeated")
        return np.concatenate(xs, axis=0)
    if op in ("stack", "list"):
        xs = [ev(x, scope, ctx) for x in k]
        ctx.feature("gather" if xs[0].ndim == 0 else "stack-vectors" if xs[0].ndim == 1 else "stack-matrices")
        if repeated and xs[0].ndim == 0:
            ctx.feature("gather-repeated")
        return np.stack(xs, axis=0)
    if op == "index":
        x = ev(k[0], scope, ctx)
        kinds = tuple("at" if sub[0] == "at" else "all" if sub[1] is None and sub[2] is None else "slice"
                      for sub in p["subs"])
        ctx.feature({("at",): "index:1d-element" if x.ndim == 1 else "index:row-only",
                     ("at", "at"): "index:2d-element", ("at", "all"): "index:row",
                     ("all", "at"): "index:column"}.get(kinds, "slice" if x.ndim == 1 else "slice-mat"))
        if any(sub[0] == "slice" and len(sub) > 3 and sub[3] is not None for sub in p["subs"]):
            ctx.feature("slice-step")
        if any(isinstance(n, Idx) for sub in p["subs"] for n in sub[1:]):
            ctx.feature("repeat-index-slice" if "slice" in kinds else "repeat-index")
            if x.ndim > 2:
                ctx.feature("repeat-index-tensor")
        if x.ndim > 2:
            ctx.feature(f"index:tensor-{len(p['subs'])}")
        arrays = [sub[1] for sub in p["subs"] if sub[0] == "arr"]
        if arrays:
            ctx.feature("gather-index" if x.ndim == 1 and arrays[0].ndim == 1 else
                        "gather-index-mat" if x.ndim == 1 else
                        "gather-paired" if len(arrays) == 2 else "gather-rows-cols")
            if any(len(np.unique(a % n)) < a.size for a, n in zip(arrays, x.shape)) and len(arrays) == 1:
                ctx.feature("gather-index-repeated")
        out = x[index_key(p["subs"], x.shape, scope.values)]
        if 0 in out.shape:
            ctx.feature("empty-slice" if x.ndim == 1 else "empty-slice-mat")
        return out
    if op == "take":
        x = ev(k[0], scope, ctx)
        ctx.feature("take_along_axis" if x.ndim == 1 else f"take_along_axis:{p['axis']}")
        return x[along_key(p["arr"], x.shape, p["axis"])]
    if op == "scatter":
        x = ev(k[0], scope, ctx)
        ctx.feature("scatter_add" if p["arr"].ndim == x.ndim else "scatter_add:rows")
        if len(np.unique(p["arr"])) < p["arr"].size:
            ctx.feature("scatter_add-repeated")
        return scatter(x, p["arr"] % p["n"], p["n"])
    if op == "eye":
        ctx.feature("eye")
        return np.eye(p["n"].value)
    if op == "la":
        return _linalg(ctx, e, [ev(x, scope, ctx) for x in k])
    if op == "einsum":
        ctx.feature(f"einsum:{p['form']}")
        if len(k) > 1 and ctx.collect and len({render(x) for x in k}) < len(k):
            ctx.feature("einsum-same-operand")
        return np.einsum(p["subs"], *[ev(x, scope, ctx) for x in k])
    if op == "defcall":
        f = ctx.defs[p["name"]]
        calls = ctx.trace.def_calls[f.name] = ctx.trace.def_calls.get(f.name, 0) + 1
        ctx.feature("defcall" if calls == 1 else "defcall-again")
        if len(k) > 1 and repeated:
            ctx.feature("defcall-same-args")
        args = [ev(x, scope, ctx) for x in k]
        inner = Scope(dict(zip(f.params, args)), in_def=True)
        run_statements(f.body, inner, ctx, None)
        return ev(f.ret, inner, ctx)
    raise ValueError(f"oracle: unknown op {op}")


def _binary_features(ctx, e, a, b):
    k = e.kids
    if render(k[0]) == render(k[1]):
        ctx.feature("same-operand")
    elementwise = e.p.get("sym") not in ("@", None) or e.p.get("name") in ("maximum", "minimum") + SPECIAL_BINARY
    if elementwise and a.ndim >= 1 and b.ndim >= 1 and a.shape != b.shape:
        out = np.broadcast_shapes(a.shape, b.shape)
        ctx.feature("broadcast-both" if out != a.shape and out != b.shape else "broadcast-row")
    if e.op == "call":
        ctx.feature(e.p["name"])
    elif e.p["sym"] == "@":
        ctx.feature(f"matmul:{a.ndim}{b.ndim}")
    elif e.p["sym"] == "^":
        if k[0].op == "num":
            ctx.feature("pow:base")
        elif k[1].op != "num":
            ctx.feature("pow:var")
        elif not float(k[1].p["value"]).is_integer():
            ctx.feature("pow:real")
        else:
            ctx.feature("pow:signed" if k[1].p["value"] < 0 else "pow:int")
    else:
        ctx.feature(f"bin:{e.p['sym']}")


def p_value(e):
    return float(e.p["value"])


def _bind_index(scope, name, iteration):
    """`repeat K as name`: the index is a scalar value in the body (None: the loop is over)."""
    if name is None:
        return
    if iteration is None:
        scope.values.pop(name, None)
        scope.indices.discard(name)
    else:
        scope.values[name] = np.float64(iteration)
        scope.indices.add(name)


def run_statements(stmts, scope, ctx, outputs, in_repeat=False):
    for s in stmts:
        if s[0] == "assign":
            if s[1] in scope.values and not in_repeat:
                ctx.feature("rebind")
            scope.values[s[1]] = ev(s[2], scope, ctx)
        elif s[0] == "unpack":   # p, q = f(args): the def's values, one per name
            ctx.feature("tuple-return")
            f, call = ctx.defs[s[2].p["name"]], s[2]
            args = [ev(x, scope, ctx) for x in call.kids]
            inner = Scope(dict(zip(f.params, args)), in_def=True)
            run_statements(f.body, inner, ctx, None)
            values = [ev(r, inner, ctx) for r in f.rets]
            for name, value in zip(s[1], values):
                scope.values[name] = value
        elif s[0] == "repeat":
            ctx.feature("repeat-in-def" if scope.in_def else "repeat")
            if in_repeat:
                ctx.feature("repeat-nested")
            if not s[1].text.lstrip("-").isdigit():
                ctx.feature("repeat-dim-count")
            if s[3] is not None and in_repeat and scope.indices:
                ctx.feature("repeat-index-nested")
            for iteration in range(s[1].value):
                _bind_index(scope, s[3], iteration)
                run_statements(s[2], scope, ctx, outputs, True)
            _bind_index(scope, s[3], None)
        elif s[0] == "output":
            value = scope.values[s[1]] if s[2] is None else ev(s[2], scope, ctx)
            scope.values[s[1]] = value
            outputs[s[1]] = value


_NUMPY_ORD = {"inf": np.inf, "-inf": -np.inf}


def _norm_axes(p, ndim):
    """The axes a norm reduces, in the order written (a matrix norm's rows, then columns):
    None for every element; NumPy's defaults where only ord is given."""
    axis = p.get("axis")
    if axis is None:
        return None if p.get("ord") is None else (0,) if ndim == 1 else (0, 1)
    return tuple(a % ndim for a in (axis if isinstance(axis, tuple) else (axis,)))


def _norm_sums(x, order, axes):
    """A matrix norm's Σ|x| down the columns (ord ±1) or across the rows (±inf), kept, and the
    axis the max or min runs along; a vector norm's |x| and its axis."""
    if len(axes) == 1:
        return np.abs(x), axes[0]
    rows, cols = axes
    along, over = (rows, cols) if order in (1.0, -1.0) else (cols, rows)
    return np.sum(np.abs(x), axis=along, keepdims=True), over


def _norm_hits(x, order, axes, out):
    """Where the max (min) of a norm of ord ±1 or ±inf is attained."""
    if order == 1.0 and len(axes) == 1:
        return np.zeros(np.shape(x), dtype=bool)
    sums, _ = _norm_sums(x, order, axes)
    return sums == _keep(out, x.shape, axes)


# -- the derivative oracle: forward mode with dual numbers ----------------------------------------------
# A tangent is None (a symbolic zero: nothing depends on an input; a nan partial times it
# stays out) or an array (K,) + shape of the value, K the number of input scalars: every
# unit direction at once. Written from docs/language.md, conventions included: relu'(0) =
# abs'(0) = 0, max/min ties share equally, maximum/minimum ties give each side 1/2, norm's
# gradient at 0 is 0, ∂(a^b)/∂b is 0 where a = 0 and ∂(a^0)/∂a is 0.

def _lift(t, ndim):
    """t's value axes right-aligned against a value of ndim dimensions (NumPy broadcasting)."""
    extra = ndim - (t.ndim - 1)
    return t.reshape((t.shape[0],) + (1,) * extra + t.shape[1:]) if extra > 0 else t


def _scale(p, t, shape):
    """p * t broadcast to the value shape `shape`."""
    if t is None:
        return None
    return np.broadcast_to(np.asarray(p) * _lift(t, len(shape)), (t.shape[0],) + tuple(shape))


def _plus(a, b):
    if a is None:
        return b
    if b is None:
        return a
    return a + b


def _sum_axes(t, axis):
    """Sum a tangent over value axis `axis` (None: all value axes)."""
    return t.sum(axis=tuple(range(1, t.ndim)) if axis is None else tuple(a + 1 for a in _axes(axis)))


def _norm_axis(axis, ndim):
    if isinstance(axis, tuple):
        return tuple(sorted(a + ndim if a < 0 else a for a in axis))
    return axis + ndim if axis is not None and axis < 0 else axis


def _others_product(x, axis):
    """∏ of the other elements along axis (None: all), exact with zeros, by brute force."""
    x = np.array(x, dtype=np.float64)
    out = np.empty_like(x)
    for index in np.ndindex(x.shape):
        y = x.copy()
        y[index] = 1.0
        if axis is None:
            out[index] = np.prod(y)
        else:
            line = list(index)
            for a in _axes(axis):
                line[a] = slice(None)
            out[index] = np.prod(y[tuple(line)])
    return out


_CONTRACT = {(1, 1): ("Ki,i->K", "i,Ki->K"), (2, 1): ("Kij,j->Ki", "ij,Kj->Ki"),
             (1, 2): ("Ki,ij->Kj", "i,Kij->Kj"), (2, 2): ("Kij,jl->Kil", "ij,Kjl->Kil")}


def dual(e, scope, ctx, K):
    """(value, tangent) of an expression."""
    op, k, p = e.op, e.kids, e.p
    if op == "var":
        name = p["name"]
        if name in scope.values:
            return scope.values[name], scope.tangents.get(name)
        return np.asarray(ctx.lookup(name, scope), dtype=np.float64), None
    if op == "num":
        return np.float64(p["value"]), None
    if op == "neg":
        v, t = dual(k[0], scope, ctx, K)
        return -v, None if t is None else -t
    if op == "fn":
        x, t = dual(k[0], scope, ctx, K)
        out = UNARY_EVAL[p["name"]](x)
        partial = {
            "sin": lambda: np.cos(x), "cos": lambda: -np.sin(x), "tan": lambda: 1 + out * out,
            "exp": lambda: out, "log": lambda: 1 / x, "log1p": lambda: 1 / (1 + x),
            "sqrt": lambda: 0.5 / out, "tanh": lambda: 1 - out * out, "sigmoid": lambda: out * (1 - out),
            "relu": lambda: (x > 0).astype(float), "abs": lambda: np.sign(x), "square": lambda: 2 * x,
            "arcsin": lambda: 1 / np.sqrt(1 - x * x), "arccos": lambda: -1 / np.sqrt(1 - x * x),
            "arctan": lambda: 1 / (1 + x * x), "sinh": lambda: np.cosh(x), "cosh": lambda: np.sinh(x),
            "arcsinh": lambda: 1 / np.sqrt(1 + x * x), "arccosh": lambda: 1 / np.sqrt(x * x - 1),
            "arctanh": lambda: 1 / (1 - x * x), "expm1": lambda: np.exp(x),
            "log2": lambda: 1 / (x * np.log(2)), "log10": lambda: 1 / (x * np.log(10)),
            "softplus": lambda: _sigmoid(x),
            "erf": lambda: 2 / np.sqrt(np.pi) * np.exp(-x * x), "erfc": lambda: -2 / np.sqrt(np.pi) * np.exp(-x * x),
            "gammaln": lambda: _scipy_special().psi(x), "digamma": lambda: _scipy_special().polygamma(1, x),
        }.get(p["name"])
        if partial is None:     # sign, heaviside: derivative 0 (a symbolic zero)
            return out, None
        return out, None if t is None else _scale(partial(), t, np.shape(out))
    if op == "bin":
        sym = p["sym"]
        (a, ta), (b, tb) = dual(k[0], scope, ctx, K), dual(k[1], scope, ctx, K)
        if sym == "@" and max(np.ndim(a), np.ndim(b)) > 2:   # stacks: one matmul per direction
            out = np.matmul(a, b)
            return out, _plus(None if ta is None else np.stack([np.matmul(ta[d], b) for d in range(K)]),
                              None if tb is None else np.stack([np.matmul(a, tb[d]) for d in range(K)]))
        if sym == "@":
            out = np.matmul(a, b)
            left, right = _CONTRACT[(np.ndim(a), np.ndim(b))]
            return out, _plus(None if ta is None else np.einsum(left, ta, b),
                              None if tb is None else np.einsum(right, a, tb))
        out = {"+": np.add, "-": np.subtract, "*": np.multiply, "/": np.divide, "^": np.power}[sym](a, b)
        shape = np.shape(out)
        if sym == "+":
            return out, _plus(_scale(1.0, ta, shape), _scale(1.0, tb, shape))
        if sym == "-":
            return out, _plus(_scale(1.0, ta, shape), _scale(-1.0, tb, shape))
        if sym == "*":
            return out, _plus(_scale(b, ta, shape), _scale(a, tb, shape))
        if sym == "/":
            return out, _plus(_scale(1 / b, ta, shape), _scale(-out / b, tb, shape))
        da = None if ta is None else np.where(b == 0, 0.0, b * np.power(a, b - 1))
        db = None if tb is None else np.where(a == 0, 0.0, out * np.log(np.where(a == 0, 1.0, a)))
        return out, _plus(_scale(da, ta, shape), _scale(db, tb, shape))
    if op in ("cmp", "logic", "not"):    # masks: no derivative
        values = [dual(x, scope, ctx, K)[0] for x in k]
        if op == "not":
            return (values[0] == 0).astype(float), None
        a, b = values
        if op == "cmp":
            return COMPARE[p["sym"]](a, b).astype(float), None
        return ((a != 0) & (b != 0) if p["sym"] == "and" else (a != 0) | (b != 0)).astype(float), None
    if op == "call" and p["name"] in ("where", "clip"):
        (x, tx), (a, ta), (b, tb) = (dual(y, scope, ctx, K) for y in k)
        if p["name"] == "where":     # 1 towards a where x ≠ 0, towards b where x = 0; none through x
            out = np.where(x != 0, a, b)
            shape = np.shape(out)
            return out, _plus(_scale((x != 0).astype(float), ta, shape), _scale((x == 0).astype(float), tb, shape))
        out = np.minimum(np.maximum(x, a), b)     # clip(x, lo, hi): x's on [lo, hi], ends included
        shape = np.shape(out)
        dx = ((x >= a) & (x <= b)).astype(float)
        dlo = ((x < a) & (a <= b)).astype(float)
        dhi = (np.maximum(x, a) > b).astype(float)
        return out, _plus(_plus(_scale(dx, tx, shape), _scale(dlo, ta, shape)), _scale(dhi, tb, shape))
    if op == "call":
        name = p["name"]
        (a, ta), (b, tb) = dual(k[0], scope, ctx, K), dual(k[1], scope, ctx, K)
        if name in ("maximum", "minimum"):
            out = getattr(np, name)(a, b)
            wins = (a > b) if name == "maximum" else (a < b)
            loses = (a < b) if name == "maximum" else (a > b)
            sa = np.where(wins, 1.0, np.where(a == b, 0.5, 0.0))
            sb = np.where(loses, 1.0, np.where(a == b, 0.5, 0.0))
            shape = np.shape(out)
            return out, _plus(_scale(sa, ta, shape), _scale(sb, tb, shape))
        if name == "dot":
            return np.dot(a, b), _plus(None if ta is None else np.einsum("Ki,i->K", ta, b),
                                       None if tb is None else np.einsum("i,Ki->K", a, tb))
        if name == "outer":
            return np.outer(a, b), _plus(None if ta is None else np.einsum("Ki,j->Kij", ta, b),
                                         None if tb is None else np.einsum("i,Kj->Kij", a, tb))
        if name == "arctan2":       # d atan2(y, x) = (x dy - y dx) / (x² + y²)
            out = np.arctan2(a, b)
            r2 = a * a + b * b
            return out, _plus(_scale(b / r2, ta, np.shape(out)), _scale(-a / r2, tb, np.shape(out)))
        if name == "hypot":         # d hypot(x, y) = (x dx + y dy) / hypot
            out = np.sqrt(a * a + b * b)
            return out, _plus(_scale(a / out, ta, np.shape(out)), _scale(b / out, tb, np.shape(out)))
    if op in ("reduce", "norm") and p.get("keepdims"):   # the reduced axes kept, of length 1
        x, tx = dual(k[0], scope, ctx, K)
        inner = Scope({**scope.values, "__kept": x})
        inner.tangents = {"__kept": tx} if tx is not None else {}
        out, t = dual(E(op, (var("__kept"),), **{**p, "keepdims": False}), inner, ctx, K)
        shape = _keep_shape(np.shape(x), _norm_axis(p.get("axis"), np.ndim(x)))
        return np.reshape(out, shape), None if t is None else t.reshape((K,) + shape)
    if op == "reduce":
        x, t = dual(k[0], scope, ctx, K)
        name, axis = p["name"], _norm_axis(p["axis"], np.ndim(x))
        out = _reduce(name, x, axis)
        if t is None:
            return out, None
        if name == "sum":
            return out, _sum_axes(t, axis)
        if name == "mean":
            return out, _sum_axes(t, axis) / (x.size // max(np.size(out), 1))
        if name in ("max", "min"):
            hit = (x == _keep(out, x.shape, axis)).astype(float)
            share = hit / _keep(np.sum(hit, axis=axis), x.shape, axis)
            return out, _sum_axes(share * t, axis)
        if name == "prod":
            return out, _sum_axes(_others_product(x, axis) * t, axis)
        if name == "logsumexp":
            w = np.exp(x - _keep(out, x.shape, axis))
            return out, _sum_axes(w * t, axis)
        if name == "softmax":
            u = out * t
            total = _sum_axes(u, axis)
            total = total.reshape((K,) + _keep_shape(x.shape, axis))
            return out, u - out * total
        if name == "log_softmax":       # d(x - logsumexp x) = t - Σ softmax·t along the axis
            weights = _reduce("softmax", x, axis)
            total = _sum_axes(weights * t, axis)
            total = total.reshape((K,) + _keep_shape(x.shape, axis))
            return out, t - total
    if op == "multigammaln":     # d/da log Γ_d(a) = Σ_{j<d} digamma(a - j/2)
        a, t = dual(k[0], scope, ctx, K)
        d = p["d"].value
        out = _multigammaln(a, d)
        partial = sum(_scipy_special().psi(a - j / 2) for j in range(d))
        return out, None if t is None else _scale(partial, t, np.shape(out))
    if op == "norm":
        x, t = dual(k[0], scope, ctx, K)
        order, axes = p.get("ord"), _norm_axes(p, np.ndim(x))
        if axes is None:
            out = np.sqrt(np.sum(x * x))
            if t is None:
                return out, None
            return out, _sum_axes((x / out if out > 0 else np.zeros_like(x)) * t, None)
        out = np.linalg.norm(x, ord=_NUMPY_ORD.get(order, order), axis=axes if len(axes) == 2 else axes[0])
        if t is None:
            return out, None
        kept = _keep(out, x.shape, axes)
        signed = np.sign(x) * t                     # d|x| = sign(x) dx, 0 at x = 0 (abs's rule)
        if order in (None, 2.0, "fro"):             # d√Σx² = Σ x dx / out; 0 where out = 0
            return out, _sum_axes(np.where(kept > 0, x / np.where(kept > 0, kept, 1), 0) * t, axes)
        if order == 1.0 and len(axes) == 1:
            return out, _sum_axes(signed, axes)
        if order in (1.0, -1.0, "inf", "-inf"):     # the max (min) of |x| or of sums of |x|:
            sums, over = _norm_sums(x, order, axes)  # their tangents, shared among ties
            along = [a for a in axes if a != over]   # a matrix norm's sums run along the other axis
            dsums = np.sum(signed, axis=1 + along[0], keepdims=True) if along else signed
            hit = (sums == _keep(out, x.shape, axes)).astype(float)
            share = hit / np.sum(hit, axis=over, keepdims=True)
            return out, np.sum(share * dsums, axis=tuple(1 + a for a in axes))
        # a p-norm, (Σ|x|ᵖ)^(1/p), by the chain rule: dΣ = Σ p |x|^(p-1) d|x| (0 at x = 0),
        # then d(S^(1/p)) = S^(1/p - 1) dS / p (0 where S = 0)
        a = np.abs(x)
        weight = np.where(a > 0, order * np.where(a > 0, a, 1) ** (order - 1), 0)
        total = _keep(np.sum(a ** order, axis=axes), x.shape, axes)
        dtotal = np.sum(weight * signed, axis=tuple(1 + b for b in axes), keepdims=True)
        outer = np.where(total > 0, np.where(total > 0, total, 1) ** (1 / order - 1) / order, 0)
        return out, np.reshape(outer * dtotal, (K,) + np.shape(out))
    if op in ("T", "transpose"):
        x, t = dual(k[0], scope, ctx, K)
        axes = p.get("axes") or tuple(reversed(range(np.ndim(x))))
        out = np.transpose(x, axes)
        return out, None if t is None else np.transpose(t, (0,) + tuple(a + 1 for a in axes))
    if op in ("expand_dims", "squeeze"):
        x, t = dual(k[0], scope, ctx, K)
        axis = p.get("axis")
        if op == "expand_dims":
            out = np.expand_dims(x, axis)
        else:
            out = np.squeeze(x) if axis is None else np.squeeze(x, axis)
        return out, None if t is None else t.reshape((K,) + out.shape)
    if op == "reshape":
        x, t = dual(k[0], scope, ctx, K)
        shape = tuple(s.value for s in p["sizes"])
        return np.reshape(x, shape), None if t is None else t.reshape((K,) + shape)
    if op in ("concat", "stack", "list"):
        pairs = [dual(x, scope, ctx, K) for x in k]
        if op == "concat":
            out = np.concatenate([v for v, _ in pairs], axis=0)
        else:
            out = np.stack([v for v, _ in pairs], axis=0)
        if all(t is None for _, t in pairs):
            return out, None
        ts = [np.zeros((K,) + np.shape(v)) if t is None else t for v, t in pairs]
        return out, np.concatenate(ts, axis=1) if op == "concat" else np.stack(ts, axis=1)
    if op == "index":
        x, t = dual(k[0], scope, ctx, K)
        key = index_key(p["subs"], x.shape, scope.values)
        return x[key], None if t is None else t[(slice(None),) + key]
    if op == "take":   # a gather: the tangent is gathered the same way
        x, t = dual(k[0], scope, ctx, K)
        key = along_key(p["arr"], x.shape, p["axis"])
        return x[key], None if t is None else t[(slice(None),) + key]
    if op == "scatter":   # linear: the tangent is scattered (added) the same way
        x, t = dual(k[0], scope, ctx, K)
        a = p["arr"] % p["n"]
        return scatter(x, a, p["n"]), None if t is None else scatter(t, a, p["n"], K)
    if op == "eye":
        return np.eye(p["n"].value), None
    if op == "einsum":
        return _einsum_dual(p["subs"], [dual(x, scope, ctx, K) for x in k])
    if op == "la":
        return _linalg_dual(e, [dual(x, scope, ctx, K) for x in k], K)
    if op == "defcall":
        f = ctx.defs[p["name"]]
        pairs = [dual(x, scope, ctx, K) for x in k]
        inner = Scope({name: v for name, (v, _) in zip(f.params, pairs)}, in_def=True)
        inner.tangents = {name: t for name, (_, t) in zip(f.params, pairs) if t is not None}
        run_dual(f.body, inner, ctx, None, K)
        return dual(f.ret, inner, ctx, K)
    raise ValueError(f"derivative oracle: unknown op {op}")


def run_dual(stmts, scope, ctx, outputs, K):
    for s in stmts:
        if s[0] == "assign":
            v, t = dual(s[2], scope, ctx, K)
            scope.values[s[1]] = np.asarray(v, dtype=np.float64)
            scope.tangents[s[1]] = t
        elif s[0] == "unpack":
            f, call = ctx.defs[s[2].p["name"]], s[2]
            pairs = [dual(x, scope, ctx, K) for x in call.kids]
            inner = Scope({name: v for name, (v, _) in zip(f.params, pairs)}, in_def=True)
            inner.tangents = {name: t for name, (_, t) in zip(f.params, pairs) if t is not None}
            run_dual(f.body, inner, ctx, None, K)
            results = [dual(r, inner, ctx, K) for r in f.rets]   # all read before any name is bound
            for name, (v, t) in zip(s[1], results):
                scope.values[name] = np.asarray(v, dtype=np.float64)
                scope.tangents[name] = t
        elif s[0] == "repeat":
            for iteration in range(s[1].value):
                _bind_index(scope, s[3], iteration)    # a constant: no tangent
                run_dual(s[2], scope, ctx, outputs, K)
            _bind_index(scope, s[3], None)
        elif s[0] == "output":
            if s[2] is None:
                v, t = scope.values[s[1]], scope.tangents.get(s[1])
            else:
                v, t = dual(s[2], scope, ctx, K)
            scope.values[s[1]] = np.asarray(v, dtype=np.float64)
            scope.tangents[s[1]] = t
            outputs[s[1]] = (np.asarray(v, dtype=np.float64), t)


# -- the generator ---------------------------------------------------------------------------------

class Env:
    """Names visible where an expression is being generated, with their current values."""

    def __init__(self, values, in_def=False, live=()):
        self.values = values          # name -> value (what the oracle's scope will hold)
        self.in_def = in_def
        self.live = set(live)         # the names that depend on an input (in a def: its parameters)

    def assign(self, name, e, value):
        self.values[name] = value
        if names_in(e) & self.live:
            self.live.add(name)
        else:
            self.live.discard(name)


class Term:
    __slots__ = ("e", "v")

    def __init__(self, e, v):
        self.e, self.v = e, np.asarray(v)

    @property
    def shape(self):
        return self.v.shape


class Generator:
    def __init__(self, chooser):
        self.c = chooser
        self.dims = []
        self.consts = []
        self.inputs = []
        self.defs = []
        self.int_consts = []      # [(name, integer array)]
        self.counter = {}
        self.rebound = set()      # input names an assignment has rebound

    # -- names, integers, data -------------------------------------------------------------
    def fresh(self, prefix):
        self.counter[prefix] = self.counter.get(prefix, 0) + 1
        return f"{prefix}{self.counter[prefix]}"

    def size(self):
        """A size: a dim (mostly) or a small literal."""
        if self.dims and self.c.chance(0.7):
            return self.c.choice(self.dims)[1]
        return self.c.integer(1, 4)

    def int_text(self, v, length=None):
        """v written as a number or, sometimes, with a dim (n - 1, -1, ...)."""
        if self.dims and self.c.chance(0.3):
            for name, d in self.dims:
                if d == v:
                    return I(name, v)
                if d - 1 == v:
                    return I(f"{name} - 1", v)
        if length is not None and v >= 0 and self.c.chance(0.2):
            return I(str(v - length), v - length)      # a negative index
        return I(str(v), v)

    def slice_sub(self, lo, hi, n):
        """lo:hi on an axis of length n, written with open ends, dims or negative bounds."""
        c = self.c
        lo_i = None if lo == 0 and c.chance(0.5) else self.int_text(lo, n)
        if hi == n and c.chance(0.5):
            hi_i = None
        else:
            hi_i = self.int_text(hi, n) if hi < n else self.int_text(hi)
        return ("slice", lo_i, hi_i)

    def indices(self, n, shape):
        """Integer data for a gather or scatter over an axis of length n: often with a
        repeated index (their derivatives add), sometimes negative (from the end)."""
        c = self.c
        a = np.array([c.integer(0, n - 1) for _ in range(prod(shape))], dtype=int)
        if a.size >= 2 and c.chance(0.6):
            a[c.integer(0, a.size - 1)] = a[c.integer(0, a.size - 1)]
        if c.chance(0.2):
            a[c.integer(0, a.size - 1)] -= n
        return a.reshape(shape)

    def index_text(self, a):
        """Integer data written as a list, or declared as an integer const and named, or
        made in place from a const that holds other numbers (name + s, name.T, name[0:k]):
        the builder computes the indices the oracles take as `a`, and checks those. Which
        form is picked from the data, not drawn, so the other choices' stream is the same."""
        if self.c.chance(0.5):
            return int_list_text(a)
        name = self.fresh("ix")
        pick = (len(self.int_consts) + int(np.abs(a).sum())) % 4
        if pick == 1:   # the const may be out of range; only name + s is checked
            shift = int(a.size % 7) - 3
            self.int_consts.append((name, a - shift))
            return f"{name} + {shift}" if shift >= 0 else f"{name} - {-shift}"
        if pick == 2 and a.ndim == 2:
            self.int_consts.append((name, np.ascontiguousarray(a.T)))
            return f"{name}.T" if a.size % 2 else f"transpose({name})"
        if pick == 2:
            self.int_consts.append((name, np.concatenate([a, a[:1] + 7])))
            return f"{name}[0:{a.size}]" if a.size % 2 else f"reshape({name}[0:{a.size}], {a.size})"
        self.int_consts.append((name, a))
        return name

    def gather_vec(self, env, k):
        """vec[k] by integer data: x[idx], A[i, j], take_along_axis, scatter_add, or an
        empty slice joined to something."""
        c = self.c
        kind = c.choice(["index", "paired", "take", "scatter", "scatter-mat", "empty"])
        if kind in ("index", "take"):
            t = self.leaf(env, (1,))
            if t is not None:
                a = self.indices(t.shape[0], (k,))
                if kind == "take":
                    return E("take", (t.e,), arr=a, text=self.index_text(a), axis=0)
                return E("index", (t.e,), subs=(("arr", a, self.index_text(a)),))
        if kind == "paired":
            t = self.leaf(env, (2,))
            if t is not None:
                i, j = self.indices(t.shape[0], (k,)), self.indices(t.shape[1], (k,))
                return E("index", (t.e,), subs=(("arr", i, self.index_text(i)), ("arr", j, self.index_text(j))))
        if kind == "scatter":
            v = self.shaped(env, (c.integer(1, 4),), 0)
            a = self.indices(k, v.shape)
            return E("scatter", (v.e,), arr=a, text=self.index_text(a), n=k, n_text=self.int_text(k).text)
        if kind == "scatter-mat":
            m = self.leaf(env, (2,))
            if m is not None:
                a = self.indices(k, m.shape)
                return E("scatter", (m.e,), arr=a, text=self.index_text(a), n=k, n_text=str(k))
        if kind == "empty":
            t = self.leaf(env, (1,))
            if t is not None:
                lo = c.integer(0, t.shape[0])
                nothing = E("index", (t.e,), subs=(self.slice_sub(lo, lo, t.shape[0]),))
                u = self.shaped(env, (k,), 0)
                if c.chance(0.5):
                    return E("concat", (nothing, u.e) if c.chance(0.5) else (u.e, nothing))
                return bin_("+", u.e, reduce_("sum", nothing))    # a sum of nothing: 0
        return None

    def gather_mat(self, env, shape):
        """mat[r, k] by integer data: rows A[idx, :], columns A[:, idx], x[imat],
        take_along_axis, scatter_add of rows, or an empty slice joined to something."""
        c = self.c
        r, k = shape
        kind = c.weighted([("rows", 2), ("cols", 2), ("vec", 2), ("take", 4), ("scatter", 2), ("empty", 2)])
        mats = self.pool(env, (2,))
        if kind == "rows":
            fits = [t for t in mats if t.shape[1] == k]
            if fits:
                t = c.choice(fits)
                a = self.indices(t.shape[0], (r,))
                subs = (("arr", a, self.index_text(a)),)
                return E("index", (t.e,), subs=subs if c.chance(0.5) else subs + (("slice", None, None),))
        if kind == "cols":
            fits = [t for t in mats if t.shape[0] == r]
            if fits:
                t = c.choice(fits)
                a = self.indices(t.shape[1], (k,))
                return E("index", (t.e,), subs=(("slice", None, None), ("arr", a, self.index_text(a))))
        if kind == "vec":
            t = self.leaf(env, (1,))
            if t is not None:
                a = self.indices(t.shape[0], shape)
                return E("index", (t.e,), subs=(("arr", a, self.index_text(a)),))
        if kind == "take":
            axis = c.choice([0, 1])
            fits = [t for t in mats if t.shape[1 - axis] == shape[1 - axis]]
            t = c.choice(fits) if fits and c.chance(0.7) else self.shaped(
                env, (c.integer(1, 4), k) if axis == 0 else (r, c.integer(1, 4)), 0)
            a = self.indices(t.shape[axis], shape)
            return E("take", (t.e,), arr=a, text=self.index_text(a), axis=axis)
        if kind == "scatter":
            v = self.shaped(env, (c.integer(1, 4), k), 0)
            a = self.indices(r, (v.shape[0],))
            return E("scatter", (v.e,), arr=a, text=self.index_text(a), n=r, n_text=self.int_text(r).text)
        if kind == "empty" and mats:
            t = c.choice(mats)
            if t.shape[1] == k:
                lo = c.integer(0, t.shape[0])
                nothing = E("index", (t.e,), subs=(self.slice_sub(lo, lo, t.shape[0]), ("slice", None, None)))
                u = self.shaped(env, shape, 0)
                return E("concat", (nothing, u.e) if c.chance(0.5) else (u.e, nothing))
        return None

    def number(self, lo=-1.5, hi=1.5):
        if self.c.chance(0.1):      # ties and zeros: kinks at the point (relu(0), max ties)
            return self.c.choice([0.5, 0.0, -0.5, 1.0])
        return round(self.c.integer(int(lo * 100), int(hi * 100)) / 100, 2)

    def data(self, name, shape, as_input):
        """A Decl with a value written as a list, a broadcast number, randn, linspace, ..."""
        size = prod(shape)
        kind = self.c.weighted([("list", 6), ("randn", 3), ("linspace", 1), ("number", 1), ("rand", 1),
                                ("full", 1), ("ones", 1), ("zeros", 1), ("constant", 1)])
        if not shape:
            kind = "list"
        if kind == "randn":
            seed = self.c.integer(0, 99)
            value = 0.5 * np.random.default_rng(seed).standard_normal(shape)
            text = f"0.5 * randn(seed={seed})"
        elif kind == "rand":
            seed = self.c.integer(0, 99)
            value = 2 * np.random.default_rng(seed).random(shape) - 1
            text = f"2 * rand(seed={seed}) - 1"
        elif kind == "constant":    # the named constants in constant data
            seed = self.c.integer(0, 99)
            r = np.random.default_rng(seed).random(shape)
            if self.c.chance(0.5):
                value, text = (0.25 * np.pi) * (2 * r - 1), f"0.25 * pi * (2 * rand(seed={seed}) - 1)"
            else:
                value, text = np.e - 2 * r, f"e - 2 * rand(seed={seed})"
        elif kind == "full":
            v = self.number()
            value, text = np.full(shape, v), f"full({fmt(v)})"
        elif kind == "ones":
            value, text = np.ones(shape), self.c.choice(["ones", "ones()"])
        elif kind == "zeros":
            value, text = np.zeros(shape), self.c.choice(["zeros", "zeros()"])
        elif kind == "linspace" and size > 1:
            lo, hi = self.number(), self.number()
            if lo == hi:
                hi = lo + 1
            value = np.linspace(lo, hi, size).reshape(shape)
            text = f"linspace({fmt(lo)}, {fmt(hi)})"
        elif kind == "number" and shape:
            v = self.number()
            value, text = np.full(shape, v), fmt(v)
        else:
            value = np.array([self.number() for _ in range(size)]).reshape(shape)
            text = None
        typed = type_text(shape, self.dims)
        if text is None and self.c.chance(0.3):
            typed = None if shape or self.c.chance(0.5) else "scalar"   # the type from the value
        elif not shape and text is not None and self.c.chance(0.5):
            typed = None
        decl = Decl(name, shape, value, typed, text)
        return decl

    def new_const(self, shape):
        d = self.data(self.fresh("c"), shape, as_input=False)
        self.consts.append(d)
        return Term(var(d.name), d.value)

    # -- evaluation of candidates -------------------------------------------------------------
    def ctx(self):
        return Ctx(None, Trace(), dims=self.dims, consts=self.consts, defs=self.defs)

    def value(self, e, env):
        """The candidate's value, or None where it leaves the safe region."""
        ctx = self.ctx()
        try:
            out = ev(e, Scope(dict(env.values), env.in_def), ctx)
        except (ValueError, IndexError) as exc:   # a generator bug: shapes that do not fit
            raise AssertionError(f"progen made an ill-shaped expression {render(e)}: {exc}") from exc
        return None if ctx.trace.problems else out

    def safe(self, e, env):
        """e as a Term, rewritten where it leaves the safe region (None if nothing helps)."""
        v = self.value(e, env)
        if v is not None:
            return Term(e, v)
        for fixed in self.fixes(e):
            v = self.value(fixed, env)
            if v is not None:
                return Term(fixed, v)
        return None

    def fixes(self, e):
        """Safe forms of an expression whose top op left its domain."""
        k = e.kids
        one = num(1)
        if e.op == "fn":
            a, name = k[0], e.p["name"]
            sq = bin_("*", a, a) if self.c.chance(0.5) else fn("square", a)
            forms = {
                "log": [fn("log", bin_("+", one, sq)), fn("log", bin_("+", num(2), fn("sin", a)))],
                "log1p": [fn("log1p", sq), fn("log1p", fn("sigmoid", a))],
                "sqrt": [fn("sqrt", bin_("+", one, sq)), fn("sqrt", bin_("+", fn("exp", fn("tanh", a)), num(0.5)))],
                "tan": [fn("tan", bin_("*", num(0.5), fn("tanh", a)))],
                "exp": [fn("exp", fn("tanh", a)), fn("exp", E("neg", (sq,)))],
                "expm1": [fn("expm1", fn("tanh", a)), fn("expm1", E("neg", (sq,)))],
                "arccosh": [fn("arccosh", bin_("+", num(1.1), sq)), fn("arccosh", bin_("+", num(1.5), fn("sigmoid", a)))],
                "sinh": [fn("sinh", fn("tanh", a)), fn("sinh", bin_("*", num(2), fn("sin", a)))],
                "cosh": [fn("cosh", fn("tanh", a)), fn("cosh", bin_("*", num(2), fn("sin", a)))],
            }.get(name, [])
            if name in ("log2", "log10"):
                forms = [fn(name, bin_("+", one, sq)), fn(name, bin_("+", num(2), fn("sin", a)))]
            if name in ("arcsin", "arccos", "arctanh"):     # squashed into (-0.9, 0.9)
                forms = [fn(name, bin_("*", num(0.9), fn("tanh", a))), fn(name, bin_("*", num(0.5), fn("sin", a)))]
            if name in POLES:                               # positive, away from the pole at 0
                forms = [fn(name, bin_("+", num(0.5), sq)), fn(name, bin_("+", num(1.5), fn("sin", a)))]
            yield from forms
        elif e.op == "multigammaln":                        # a above (d - 1)/2
            a, d = k[0], e.p["d"]
            low = num((d.value - 1) / 2 + 0.5)
            yield E("multigammaln", (bin_("+", low, bin_("*", a, a)),), d=d)
            yield E("multigammaln", (bin_("+", bin_("+", low, num(1)), fn("sin", a)),), d=d)
        elif e.op == "bin" and e.p["sym"] == "/":
            a, b = k
            yield bin_("/", a, bin_("+", one, bin_("*", b, b)))
            yield bin_("/", a, bin_("+", num(2), fn("sin", b)))
        elif e.op == "bin" and e.p["sym"] == "^":
            a, b = k
            yield bin_("^", bin_("+", one, bin_("*", a, a)), b, e.p.get("signed"))
            yield bin_("^", bin_("+", num(1.5), fn("sin", a)), fn("tanh", b))
        elif e.op == "norm":
            yield bin_("+", num(0.5), E("norm", k, **e.p))
        elif e.op == "call" and e.p["name"] == "arctan2":
            a, b = k
            yield call("arctan2", a, bin_("+", one, bin_("*", b, b)))     # x ≥ 1: right half-plane
            yield call("arctan2", bin_("+", one, bin_("*", a, a)), b)     # y ≥ 1: upper half-plane
        elif e.op == "call" and e.p["name"] == "hypot":
            a, b = k
            yield call("hypot", a, bin_("+", num(0.5), bin_("*", b, b)))
        # whatever the op: a scaled or squashed version (magnitude problems)
        yield bin_("*", e, num(0.125))
        yield bin_("*", e, num(1 / 64))
        yield fn("tanh", e)

    # -- leaves and shaped terms ------------------------------------------------------------------
    def pool(self, env, ndim=None, shape=None):
        """Named values visible here: the consts (visible everywhere), then env's names."""
        values = {d.name: d.value for d in self.consts}
        values.update(env.values)
        terms = [Term(var(n), v) for n, v in values.items()]
        if ndim is None and shape is None:   # tensors of rank 3 only where asked for (Generator.tensor)
            ndim = (0, 1, 2)
        if ndim is not None:
            terms = [t for t in terms if t.v.ndim in ndim]
        if shape is not None:
            terms = [t for t in terms if t.shape == shape]
        return terms

    def pick(self, env, terms):
        """One of terms (names), mostly one that depends on an input, often a recent one."""
        live = [t for t in terms if t.e.p["name"] in env.live]
        if live and not self.c.chance(0.15):
            terms = live
        if self.c.chance(0.5):
            terms = terms[-3:]      # recent names: what the program has been building
        return self.c.choice(terms)

    def leaf(self, env, ndim=None):
        terms = self.pool(env, ndim)
        return self.pick(env, terms) if terms else None

    def scalar_literal(self):
        if self.dims and self.c.chance(0.2):
            name, d = self.c.choice(self.dims)
            return Term(var(name), np.float64(d))
        if self.c.chance(0.1):      # the named constants
            name = self.c.choice(sorted(CONSTANTS))
            return Term(var(name), np.float64(CONSTANTS[name]))
        v = self.c.choice([0.5, 2, -1, 1.5, 0.3, 3, -0.7])
        return Term(num(v), np.float64(v))

    def element(self, env):
        """A scalar picked out of what is there: a scalar name or an element x[i], A[i, j]."""
        terms = self.pool(env, (0, 1, 2))
        t = self.pick(env, terms) if terms else None
        if t is None:
            return self.scalar_literal()
        if t.v.ndim == 0:
            return t
        subs = tuple(("at", self.int_text(self.c.integer(0, n - 1), n)) for n in t.shape)
        e = E("index", (t.e,), subs=subs)
        return Term(e, t.v[tuple(s[1].value % n for s, n in zip(subs, t.shape))])

    def shaped(self, env, shape, depth=1):
        """Some term of exactly this shape: a name, a gather with repeated elements,
        a concat, a slice, a row or column, a reshape, a transpose, an outer product,
        a stack, a new const, or (with depth) any expression that happens to fit."""
        for _ in range(4):
            e = self._shaped(env, tuple(shape), depth)
            if e is not None:
                t = self.safe(e, env)
                if t is not None and t.shape == tuple(shape):
                    return t
        return self.new_const(shape)

    def _shaped(self, env, shape, depth):
        c = self.c
        same = self.pool(env, shape=shape)
        if not shape:
            kind = c.weighted([("name", 3), ("element", 3), ("reduce", 1), ("dot", 1), ("const", 1),
                               ("literal", 1)])
            if kind == "name" and same:
                return self.pick(env, same).e
            if kind == "element":
                return self.element(env).e
            if kind == "reduce":
                t = self.leaf(env, (1, 2))
                if t is not None:
                    return reduce_(c.choice(["sum", "mean", "max", "min"]), t.e)
            if kind == "dot":
                t = self.leaf(env, (1,))
                if t is not None:
                    other = self.shaped(env, t.shape, 0)
                    return call("dot", t.e, other.e)
            if kind == "literal":
                return self.scalar_literal().e
            return self.new_const(shape).e
        if len(shape) == 1:
            return self._shaped_vec(env, shape[0], depth)
        if len(shape) > 2:
            return self._shaped_tensor(env, shape, depth)
        return self._shaped_mat(env, shape, depth)

    def _shaped_tensor(self, env, shape, depth):
        """A term of a shape of rank 3 or more: a name, a function of one, a reshape of a
        vector, a stack of matrices, expand_dims of a matrix, or a new const."""
        c = self.c
        same = self.pool(env, shape=shape)
        kind = c.weighted([("name", 3), ("fn", 1), ("reshape", 2), ("stack", 2), ("expand", 2), ("const", 1)])
        if kind == "name" and same:
            return self.pick(env, same).e
        if kind == "fn" and same:
            return fn(c.choice(["sin", "tanh", "square"]), self.pick(env, same).e)
        if kind == "reshape":
            v = self.shaped(env, (prod(shape),), 0)
            return E("reshape", (v.e,), sizes=tuple(self.int_text(d) for d in shape))
        if kind == "stack" and len(shape) == 3 and shape[0] <= 3:
            parts = [self.shaped(env, shape[1:], 0).e for _ in range(shape[0])]
            return E("list" if c.chance(0.5) else "stack", parts)
        if kind == "expand" and 1 in shape and len(shape) == 3:
            axis = shape.index(1)
            rest = tuple(d for i, d in enumerate(shape) if i != axis)
            return E("expand_dims", (self.shaped(env, rest, 0).e,), axis=c.choice([axis, axis - 3]))
        return self.new_const(shape).e

    def _shaped_vec(self, env, k, depth):
        c = self.c
        vecs = self.pool(env, (1,))
        kind = c.weighted([("name", 3), ("gather", 4), ("concat", 2), ("slice", 2), ("row", 2),
                           ("reshape", 1), ("const", 2), ("expr", 2 if depth > 0 else 0), ("by-index", 3)])
        same = [t for t in vecs if t.shape == (k,)]
        if kind == "name" and same:
            return self.pick(env, same).e
        if kind == "by-index":
            return self.gather_vec(env, k)
        if kind == "gather":
            # k scalars from one or two sources: repeated elements are likely ([x, x], [v[0], v[0], v[2]])
            sources = [self.element(env) for _ in range(c.integer(1, 2))]
            items = [c.choice(sources).e for _ in range(k)]
            return E("list" if c.chance(0.6) else "stack", items)
        if kind == "concat":
            pieces, left = [], k
            while left > 0 and len(pieces) < 4:
                fits = [t for t in vecs if t.shape[0] <= left]
                if fits and c.chance(0.8):
                    t = c.choice(fits)
                    if pieces and c.chance(0.4) and pieces[-1].shape[0] <= left:
                        t = pieces[-1]             # concat(a, a)
                else:
                    t = self.shaped(env, (c.integer(1, left),), 0)
                pieces.append(t)
                left -= t.shape[0]
            if left == 0 and len(pieces) >= 2:
                return E("concat", [t.e for t in pieces])
            return None
        if kind == "slice":
            stepped = [t for t in vecs if t.shape[0] >= k and (k == 1 or t.shape[0] >= 2 * k - 1)]
            if stepped and c.chance(0.3):   # every other element, or all of them backwards
                t = c.choice(stepped)
                n = t.shape[0]
                if k == n and c.chance(0.5):
                    return E("index", (t.e,), subs=(("slice", None, None, I("-1", -1)),))
                lo = c.integer(0, n - (2 * k - 1))
                open_end = len(range(lo, n, 2)) == k   # lo::2 picks exactly k to the end
                hi = None if open_end and c.chance(0.5) else I(str(lo + 2 * k - 1), lo + 2 * k - 1)
                return E("index", (t.e,), subs=(("slice", I(str(lo), lo), hi, I("2", 2)),))
            longer = [t for t in vecs if t.shape[0] > k]
            if longer:
                t = c.choice(longer)
                n = t.shape[0]
                lo = c.integer(0, n - k)
                return E("index", (t.e,), subs=(self.slice_sub(lo, lo + k, n),))
        if kind == "row":
            mats = [t for t in self.pool(env, (2,)) if k in t.shape]
            if mats:
                t = c.choice(mats)
                r, cols = t.shape
                if cols == k and (r != k or c.chance(0.5)):
                    i = self.int_text(c.integer(0, r - 1), r)
                    subs = (("at", i),) if c.chance(0.3) else (("at", i), ("slice", None, None))
                else:
                    j = self.int_text(c.integer(0, cols - 1), cols)
                    subs = (("slice", None, None), ("at", j))
                return E("index", (t.e,), subs=subs)
        if kind == "reshape":
            mats = [t for t in self.pool(env, (2,)) if t.v.size == k]
            if mats:
                return E("reshape", (c.choice(mats).e,), sizes=(self.int_text(k),))
        if kind == "expr":
            t = self.expr(env, depth - 1)
            if t is not None and t.shape == (k,):
                return t.e
            return None
        return self.new_const((k,)).e

    def _shaped_mat(self, env, shape, depth):
        c = self.c
        r, k = shape
        mats = self.pool(env, (2,))
        kind = c.weighted([("name", 3), ("transpose", 2), ("stack", 3), ("concat", 2), ("reshape", 2),
                           ("outer", 2), ("slice", 2), ("const", 2), ("expr", 2 if depth > 0 else 0),
                           ("by-index", 4)])
        same = [t for t in mats if t.shape == shape]
        if kind == "name" and same:
            return self.pick(env, same).e
        if kind == "by-index":
            return self.gather_mat(env, shape)
        if kind == "transpose":
            flipped = [t for t in mats if t.shape == (k, r)]
            if flipped:
                t = c.choice(flipped)
                return E("T", (t.e,)) if c.chance(0.5) else E("transpose", (t.e,))
        if kind == "stack":
            rows = [self.shaped(env, (k,), 0) for _ in range(c.integer(1, 2))]
            items = [c.choice(rows).e for _ in range(r)]
            return E("list" if c.chance(0.5) else "stack", items)
        if kind == "concat" and r >= 2:
            top = c.integer(1, r - 1)
            a = self.shaped(env, (top, k), 0)
            b = a if top * 2 == r and c.chance(0.5) else self.shaped(env, (r - top, k), 0)
            return E("concat", (a.e, b.e))
        if kind == "reshape":
            sources = [t for t in self.pool(env, (1, 2)) if t.v.size == r * k and t.shape != shape]
            src = c.choice(sources) if sources else self.shaped(env, (r * k,), 0)
            return E("reshape", (src.e,), sizes=(self.int_text(r), self.int_text(k)))
        if kind == "outer":
            a, b = self.shaped(env, (r,), 0), self.shaped(env, (k,), 0)
            return call("outer", a.e, b.e)
        if kind == "slice":
            big = [t for t in mats if t.shape[0] >= r and t.shape[1] >= k and t.shape != shape]
            if big:
                t = c.choice(big)
                a = c.integer(0, t.shape[0] - r)
                b = c.integer(0, t.shape[1] - k)
                rows = self.slice_sub(a, a + r, t.shape[0])
                cols = self.slice_sub(b, b + k, t.shape[1])
                return E("index", (t.e,), subs=(rows, cols))
        if kind == "expr":
            t = self.expr(env, depth - 1)
            if t is not None and t.shape == shape:
                return t.e
            return None
        return self.new_const(shape).e

    # -- expressions ---------------------------------------------------------------------------------
    def expr(self, env, depth):
        """A random expression over env (None only if env has nothing to offer)."""
        if depth <= 0 or self.c.chance(0.15):
            return self.leaf(env) or self.scalar_literal()
        for _ in range(3):
            e = self._expr(env, depth)
            if e is not None:
                t = self.safe(e, env)
                if t is not None:
                    return t
        return self.leaf(env) or self.scalar_literal()

    def operand(self, env, depth, ndim=None):
        t = self.expr(env, depth - 1) if self.c.chance(0.6) else self.leaf(env, ndim)
        if t is None or (ndim is not None and t.v.ndim not in ndim):
            t = self.leaf(env, ndim)
        if t is None and ndim is None:   # only tensors are named here (a program's one input)
            t = self.scalar_literal()
        return t

    def _expr(self, env, depth):
        c = self.c
        kind = c.weighted([("unary", 5), ("special", 4), ("neg", 1), ("binary", 6), ("pow", 2), ("extreme", 2),
                           ("matmul", 4), ("reduce", 3), ("softmax", 1), ("norm", 2), ("movement", 4),
                           ("defcall", 2 if not env.in_def else 1), ("kink", 2), ("condition", 3),
                           ("linalg", 3), ("einsum", 3), ("tensor", 4)])
        if kind == "unary":
            name = c.choice(UNARY)
            return fn(name, self.operand(env, depth).e)
        if kind == "special":
            if c.chance(0.25):      # arctan2(y, x), hypot(x, y): binary, broadcasting
                a = self.operand(env, depth)
                b = self.partner(env, a, depth)
                if c.chance(0.5):
                    a, b = b, a
                return call(c.choice(SPECIAL_BINARY), a.e, b.e)
            if c.chance(0.15):      # multigammaln(a, d), d a number or a dim
                d = self.int_text(c.choice([1, 2, 3])) if not self.dims or c.chance(0.5) else \
                    I(*c.choice(self.dims))
                return E("multigammaln", (self.operand(env, depth).e,), d=d)
            return fn(c.choice(SPECIAL), self.operand(env, depth).e)
        if kind == "neg":
            return E("neg", (self.operand(env, depth).e,))
        if kind in ("binary", "extreme"):
            a = self.operand(env, depth)
            if a.v.ndim == 1 and c.chance(0.15):     # vec[c] with mat[r, 1]: both broadcast to mat[r, c]
                b = self.shaped(env, (self.size(), 1), depth)
            else:
                b = self.partner(env, a, depth)
            if kind == "binary":
                sym = c.choice(["+", "-", "*", "/"])
                if c.chance(0.5):
                    a, b = b, a
                return bin_(sym, a.e, b.e)
            name = c.choice(["maximum", "minimum"])
            return call(name, a.e, b.e)
        if kind == "pow":
            a = self.operand(env, depth)
            form = c.choice(["int", "signed", "real", "var", "base"])
            if form == "int":
                return bin_("^", a.e, num(c.choice([2, 3, 0, 1])))
            if form == "signed":
                return bin_("^", a.e, num(c.choice([-1, -2])), signed=c.chance(0.5))
            if form == "real":
                return bin_("^", a.e, num(c.choice([0.5, 1.5, -0.5])))
            if form == "base":
                return bin_("^", num(c.choice([2, 0.5, 1.5])), a.e)
            b = self.partner(env, a, depth)
            return bin_("^", a.e, b.e)
        if kind == "matmul":
            return self.matmul(env, depth)
        if kind == "reduce":
            t = self.operand(env, depth, (1, 2)) or self.operand(env, depth)
            name = c.choice(REDUCTIONS[:-1])
            axis = None
            if t.v.ndim >= 1 and c.chance(0.5):
                axis = c.choice([0, -1] if t.v.ndim == 1 else [0, 1, -1, -2])
            if t.v.ndim >= 1 and c.chance(0.25):      # keepdims=true, often broadcast back: x - max(x, ...)
                kept = reduce_(name, t.e, axis, keepdims=True)
                if c.chance(0.6):
                    return bin_(c.choice(["-", "*", "+"]), t.e, kept)
                return kept
            return reduce_(name, t.e, axis)
        if kind == "softmax":
            t = self.operand(env, depth, (1, 2))
            if t is None:
                return None
            axis = c.choice([None, 0, -1] if t.v.ndim == 1 else [None, 0, 1, -1])
            return reduce_(c.choice(["softmax", "log_softmax"]), t.e, axis)
        if kind == "norm":
            t = self.operand(env, depth)
            p = self.norm_params(t.v.ndim) if t.v.ndim >= 1 and t.v.size and c.chance(0.6) else {}
            if t.v.ndim >= 1 and c.chance(0.3):        # norm(x, keepdims=true), often x / norm(...)
                kept = E("norm", (t.e,), keepdims=True, **p)
                return bin_("/", t.e, kept) if c.chance(0.5) else kept
            return E("norm", (t.e,), **p)
        if kind == "movement":
            return self.movement(env, depth)
        if kind == "defcall":
            return self.defcall(env, depth)
        if kind == "kink" and not env.in_def:
            return self.at_kink(env, depth)
        if kind == "condition":
            return self.condition(env, depth)
        if kind == "linalg":
            return self.linalg(env, depth)
        if kind == "einsum":
            return self.einsum(env, depth)
        if kind == "tensor":
            return self.tensor(env, depth)
        return None

    def tensor_shape(self):
        return tuple(self.c.choice([1, 2, 2, 3]) if not self.dims or self.c.chance(0.6) else self.size()
                     for _ in range(3))

    def tensor(self, env, depth):
        """An expression through a value of rank 3 (an input or const tensor[a, b, c], or one made
        from matrices and vectors), brought back to rank ≤ 2 at the end: elementwise ops with
        broadcasting, @ on stacks, transpose with axes, softmax along axes, then an index, a
        reduction over one or several axes, a product with a vector, a reshape or a squeeze."""
        c = self.c
        tensors = self.pool(env, (3,))
        x = self.pick(env, tensors) if tensors and c.chance(0.7) else self.shaped(env, self.tensor_shape(), 0)
        for _ in range(c.integer(0, 2)):
            step = self.safe(self._tensor_step(env, x), env)
            if step is not None and step.v.ndim == 3:
                x = step
        a, b, n = x.shape
        form = c.choice(["index", "reduce", "matvec", "reshape", "squeeze", "vecmat"])
        if form == "index":
            i, j = self.int_text(c.integer(0, a - 1), a), self.int_text(c.integer(0, b - 1), b)
            k = self.int_text(c.integer(0, n - 1), n)
            subs = c.choice([(("at", i),), (("at", i), ("slice", None, None), ("at", k)), (("slice", None, None), ("at", j)),
                             (("at", i), ("at", j)), (("slice", None, None), ("slice", None, None), ("at", k))])
            return E("index", (x.e,), subs=subs)
        if form == "reduce":
            axis = c.choice([None, 0, 1, 2, -1, (0, 2), (0, 1), (1, 2), (-1, 0)])
            name = c.choice(REDUCTIONS[:-1])
            if c.chance(0.2):   # kept axes broadcast back, then one axis summed: sum(x - max(x, …), axis=1)
                kept = bin_(c.choice(["-", "*"]), x.e, reduce_(name, x.e, axis, keepdims=True))
                return reduce_("sum", kept, c.choice([0, 1, 2]))
            return reduce_(name, x.e, axis)
        if form == "matvec":
            return bin_("@", x.e, self.shaped(env, (n,), 0).e)
        if form == "vecmat":
            return bin_("@", self.shaped(env, (b,), 0).e, x.e)
        if form == "squeeze" and 1 in x.shape:
            axis = x.shape.index(1)
            return E("squeeze", (x.e,), axis=c.choice([axis, axis - 3, None]) if x.shape.count(1) == 1 else axis)
        return E("reshape", (x.e,), sizes=(self.int_text(a * b), self.int_text(n)))

    def _tensor_step(self, env, x):
        """One operation from a tensor x to another of rank 3."""
        c = self.c
        a, b, n = x.shape
        kind = c.choice(["fn", "binary", "transpose", "matmul", "softmax", "kept"])
        if kind == "fn":
            return fn(c.choice(UNARY + ("erf", "arctan", "softplus")), x.e)
        if kind == "binary":
            shape = c.choice([(), (n,), (b, n), (b, 1), (a, 1, n), (1, b, 1), x.shape])
            other = self.shaped(env, shape, 0)
            pair = (x.e, other.e) if c.chance(0.5) else (other.e, x.e)
            if c.chance(0.2):
                return call(c.choice(["maximum", "minimum"]), *pair)
            return bin_(c.choice(["+", "-", "*"]), *pair)
        if kind == "transpose":
            if c.chance(0.3):
                return E("T", (x.e,))
            axes = list(range(3))
            while axes == [0, 1, 2]:
                axes = [axes[i] for i in sorted(range(3), key=lambda _: c.integer(0, 99))]
            return E("transpose", (x.e,), axes=tuple(axes))
        if kind == "matmul":
            m = c.integer(1, 3)
            form = c.choice(["mat", "stack", "broadcast", "left"])
            if form == "mat":
                return bin_("@", x.e, self.shaped(env, (n, m), 0).e)
            if form == "stack":
                return bin_("@", x.e, self.shaped(env, (a, n, m), 0).e)
            if form == "broadcast":
                return bin_("@", x.e, self.shaped(env, (1, n, m), 0).e)
            return bin_("@", self.shaped(env, (m, b), 0).e, x.e)
        if kind == "softmax":
            return reduce_(c.choice(["softmax", "log_softmax"]), x.e, c.choice([None, 0, 2, (1, 2), (0, 2)]))
        return bin_("-", x.e, reduce_(c.choice(["max", "logsumexp", "mean"]), x.e,
                                      c.choice([0, (0, 2), (1, 2), None]), keepdims=True))

    def conditioned(self, env, n, depth, name):
        """A well-conditioned n×n matrix made from a term X: eye(n) + s·X with s·n·max|X| ≤ ½
        (its singular values lie in [½, 3/2]: det and logdet stay modest), X + c·eye(n) with
        c ≥ 2·n·max|X| (not for det, which grows as cⁿ), or the SPD s²·X Xᵀ + eye(n)."""
        c = self.c
        X = self.shaped(env, (n, n), max(depth - 1, 0))
        big = n * max(float(np.max(np.abs(X.v))), 1e-6)
        s = 0.5
        while s * big > 0.5:
            s /= 2
        eye = E("eye", n=self.int_text(n))
        form = c.choice(["scaled", "shifted", "gram"] if name != "det" else ["scaled", "gram"])
        if form == "shifted":
            return bin_("+", X.e, bin_("*", num(1 / s), eye) if c.chance(0.5) else bin_("*", eye, num(1 / s)))
        if form == "gram":
            gram = bin_("@", X.e, E("T", (X.e,)) if c.chance(0.5) else E("transpose", (X.e,)))
            return bin_("+", bin_("*", num(s * s), gram), eye)
        scaled = bin_("*", num(s), X.e) if c.chance(0.5) else bin_("*", X.e, num(s))
        return bin_("+", eye, scaled) if c.chance(0.5) else bin_("+", scaled, eye)

    def linalg(self, env, depth):
        """trace, diag, tril, triu and fill_tril of any term; solve, inv, det, logdet,
        cholesky and triangular_solve of a well-conditioned matrix (conditioned)."""
        c = self.c
        name = c.choice(LINALG)
        if name in ("trace", "diag", "tril", "triu"):
            if name == "diag" and c.chance(0.4):   # a vector: the diagonal matrix
                v = self.operand(env, depth, (1,))
                if v is None or v.v.ndim != 1:
                    v = self.shaped(env, (self.size(),), depth)
                return E("la", (v.e,), name="diag")
            t = self.operand(env, depth, (2,))
            if t is None or t.v.ndim != 2:
                t = self.shaped(env, (self.size(), self.size()), depth)
            if name in ("tril", "triu") and c.chance(0.5):
                k = c.integer(-2, 2)
                return E("la", (t.e,), name=name, k=I(str(k), k))
            return E("la", (t.e,), name=name)
        n = self.size()
        if name == "fill_tril":
            return E("la", (self.shaped(env, (n * (n + 1) // 2,), depth).e,), name=name, n=self.int_text(n))
        m = self.conditioned(env, n, depth, name)
        if name in ("solve", "triangular_solve"):
            b = self.shaped(env, (n,) if c.chance(0.6) else (n, self.size()), depth)
            extra = {}
            if name == "triangular_solve" and c.chance(0.6):
                extra["lower"] = c.chance(0.5)
            return E("la", (m, b.e), name=name, **extra)
        return E("la", (m,), name=name)

    # einsum forms: (subscripts, operand shapes from sizes n, m, q, r)
    EINSUM_FORMS = {
        "product": ("ij,jk->ik", lambda n, m, q, r: [(n, m), (m, q)]),
        "chain": ("ij,jk,kl->il", lambda n, m, q, r: [(n, m), (m, q), (q, r)]),
        "chain-vec": ("ij,jk,k->i", lambda n, m, q, r: [(n, m), (m, q), (q,)]),
        "chain4": ("i,ij,jk,kl->l", lambda n, m, q, r: [(n,), (n, m), (m, q), (q, r)]),
        "trace": ("ii->", lambda n, m, q, r: [(n, n)]),
        "diag": ("ii->i", lambda n, m, q, r: [(n, n)]),
        "diag-product": ("ii,ij->j", lambda n, m, q, r: [(n, n), (n, m)]),
        "sum": ("ij->", lambda n, m, q, r: [(n, m)]),
        "sum-axis": ("ij->j", lambda n, m, q, r: [(n, m)]),
        "transpose": ("ij->ji", lambda n, m, q, r: [(n, m)]),
        "implicit": ("ij,jk", lambda n, m, q, r: [(n, m), (m, q)]),
        "implicit-transpose": ("ba", lambda n, m, q, r: [(n, m)]),
        "outer": ("i,j->ij", lambda n, m, q, r: [(n,), (m,)]),
        "hadamard": ("ij,ij->ji", lambda n, m, q, r: [(n, m), (n, m)]),
        "dot": ("i,i", lambda n, m, q, r: [(n,), (n,)]),
        "scalar": (",ij->ij", lambda n, m, q, r: [(), (n, m)]),
        "lone": ("ij,k->i", lambda n, m, q, r: [(n, m), (q,)]),
    }

    def einsum(self, env, depth):
        """einsum of one to four operands: products and chains (adcli orders their pairwise
        products), traces, diagonals, sums, transposes, outer and elementwise products, a scalar
        operand, implicit outputs, a letter only one operand has; sometimes one operand twice."""
        c = self.c
        form = c.choice(sorted(self.EINSUM_FORMS))
        subs, shapes_of = self.EINSUM_FORMS[form]
        sizes = [self.size() for _ in range(4)]
        rank = len(shapes_of(*sizes)[0])
        first = self.operand(env, depth, (rank,)) if rank else None
        square = form in ("trace", "diag", "diag-product")
        if first is not None and first.v.ndim == rank and not (square and first.shape[0] != first.shape[1]):
            sizes[:rank] = first.shape   # every form's first operand is (n,) or (n, m) (n, n when square)
        else:
            first = None
        shapes = shapes_of(*sizes)
        terms = []
        for i, shape in enumerate(shapes):
            if i == 0 and first is not None:
                terms.append(first)
            elif terms and shape == terms[0].shape and c.chance(0.25):
                terms.append(terms[0])     # the same operand twice: its derivatives add
            else:
                terms.append(self.shaped(env, shape, max(depth - 1, 0)))
        return E("einsum", tuple(t.e for t in terms), subs=subs, form=form)

    def mask(self, env, a, depth):
        """A 0/1 mask of a's shape: a comparison of a with a partner, sometimes negated or
        combined with a second comparison by and/or."""
        c = self.c
        m = E("cmp", (a.e, self.partner(env, a, depth).e), sym=c.choice(list(COMPARE)))
        form = c.weighted([("plain", 4), ("not", 1), ("and", 1), ("or", 1)])
        if form == "not":
            return E("not", (m,))
        if form in ("and", "or"):
            other = E("cmp", (a.e, self.scalar_literal().e), sym=c.choice(list(COMPARE)))
            return E("logic", (m, other) if c.chance(0.5) else (other, m), sym=form)
        return m

    def condition(self, env, depth):
        """Comparisons and selection: where(mask, a, b), mask * a, sign(a) * b,
        heaviside(a) * b, clip(a, lo, hi), or a mask on its own (no derivative)."""
        c = self.c
        a = self.operand(env, depth)
        form = c.weighted([("where", 4), ("mask*", 2), ("sign", 1), ("heaviside", 1), ("clip", 3),
                           ("mask", 1)])
        if form in ("where", "mask*", "mask"):
            m = self.mask(env, a, depth)
            if form == "mask":
                return m
            if form == "mask*":
                return bin_("*", m, self.partner(env, a, depth).e)
            on, off = self.partner(env, a, depth), self.partner(env, a, depth)
            cond = m if c.chance(0.8) else a.e          # any value is a condition: nonzero is true
            return call("where", cond, on.e, off.e)
        if form in ("sign", "heaviside"):
            return bin_("*", fn(form, a.e), self.partner(env, a, depth).e)
        if c.chance(0.7):                                # constant bounds, lo < hi
            lo = self.number(-1, 0.5)
            return call("clip", a.e, num(lo), num(lo + c.choice([0.3, 0.5, 1, 2])))
        return call("clip", a.e, self.partner(env, a, depth).e, self.partner(env, a, depth).e)

    def norm_params(self, ndim):
        """ord and axis of numpy.linalg.norm: a vector norm (2, 1, ±inf, a p > 0) along one
        axis, or a matrix norm ('fro', ±1, ±inf) over two, in either order; ord alone on a
        vector or a matrix, as NumPy reads it."""
        c = self.c
        if ndim >= 2 and c.chance(0.5):
            order = c.choice([None, "fro", 1.0, -1.0, "inf", "-inf"])
            if ndim == 2 and order is not None and c.chance(0.4):
                return {"ord": order}
            pair = tuple(c.choice([a, a - ndim]) for a in self.rng_axes(ndim, 2))
            return {"ord": order, "axis": pair, "as_tuple": c.chance(0.6)}
        order = c.choice([None, 2.0, 1.0, "inf", "-inf", 3.0, 1.5, 0.5])
        if ndim == 1 and order is not None and c.chance(0.5):
            return {"ord": order}
        axis = c.integer(-ndim, ndim - 1)
        if c.chance(0.2):
            return {"ord": order, "axis": (axis,), "as_tuple": c.chance(0.5)}
        return {"ord": order, "axis": axis}

    def rng_axes(self, ndim, count):
        """count distinct axes of ndim, in a random order."""
        axes = list(range(ndim))
        chosen = []
        for _ in range(count):
            chosen.append(axes.pop(self.c.integer(0, len(axes) - 1)))
        return chosen

    def at_kink(self, env, depth):
        """An op exactly at its kink, with a nonzero derivative through it, so that the
        conventions of docs/language.md decide the derivative: a = x - c, where the const c
        equals the input x in some elements (exactly: both are parsed from the same text),
        then relu(a), abs(a), maximum(a, 0), max(a), norm(a), a ^ y, ..."""
        c = self.c
        fresh = [d for d in self.inputs if d.name not in self.rebound]
        if not fresh:
            return None
        d = c.choice(fresh)
        same = d.value.copy()
        flat = same.reshape(-1)
        if flat.size > 1 and c.chance(0.6):        # some elements off the kink
            for i in range(flat.size):
                if c.chance(0.5):
                    flat[i] = self.number()
        if d.shape:
            const = Decl(self.fresh("c"), d.shape, same, type_text(d.shape, self.dims), fmt_array(same))
            self.consts.append(const)
            anchor = bin_("-", var(d.name), var(const.name))
        else:
            anchor = bin_("-", var(d.name), num(float(same)))
        form = c.choice(["relu", "abs", "maximum", "minimum", "max", "min", "norm", "pow", "pair",
                         "clip", "where", "step"])
        if form in ("relu", "abs"):
            return fn(form, anchor)
        if form == "clip":             # x at an end of [lo, hi]: the derivative goes to x
            return call("clip", anchor, *((num(0), num(1)) if c.chance(0.5) else (num(-1), num(0))))
        if form == "where":            # the condition's edge: which side holds at x
            return call("where", E("cmp", (anchor, num(0)), sym=c.choice(list(COMPARE))), anchor,
                        bin_("*", num(2), anchor))
        if form == "step":             # sign and heaviside at 0, times a value with a derivative
            return bin_("*", fn(c.choice(["sign", "heaviside"]), anchor), var(d.name))
        if form in ("maximum", "minimum"):
            pair = (anchor, num(0)) if c.chance(0.5) else (num(0), anchor)
            return call(form, *pair)
        if form in ("max", "min"):
            return reduce_(form, anchor if d.shape else E("list", [anchor, num(0)]))
        if form == "norm":
            p = self.norm_params(len(d.shape)) if d.shape and c.chance(0.5) else {}
            return E("norm", (anchor,), **p)
        if form == "pow":
            a = Term(anchor, self.value(anchor, env))
            return bin_("^", anchor, bin_("+", num(2), fn("sin", self.partner(env, a, depth).e)))
        name = c.choice(["maximum", "minimum"])           # maximum(x, c): a tie at the equal elements
        other = var(const.name) if d.shape else num(float(same))
        return call(name, var(d.name), other)

    def partner(self, env, a, depth):
        """A second operand for an elementwise op with a: broadcast-compatible."""
        c = self.c
        kind = c.weighted([("literal", 3), ("same", 2), ("shaped", 3), ("scalar", 2), ("row", 1),
                           ("any", 2)])
        if kind == "literal":
            return self.scalar_literal()
        if kind == "same":
            return a
        if kind == "scalar":
            return self.shaped(env, (), depth)
        if kind == "row" and a.v.ndim == 2:   # vec[c] with mat[r, c], row-wise; or a column mat[r, 1]
            if c.chance(0.7):
                return self.shaped(env, (a.shape[1],), depth)
            return self.shaped(env, (a.shape[0], 1), depth)
        if kind == "any":
            t = self.expr(env, depth - 1)
            if t is not None and _broadcasts(a.shape, t.shape):
                return t
        return self.shaped(env, a.shape, depth)

    def matmul(self, env, depth):
        c = self.c
        a = self.operand(env, depth, (1, 2))
        if a is None or c.chance(0.3):
            a = self.shaped(env, c.choice([(self.size(),), (self.size(), self.size())]), depth)
        inner = a.shape[-1]
        form = c.weighted([("vec", 3), ("mat", 2), ("dot", 1)])
        if form == "dot" and a.v.ndim == 1:
            b = self.shaped(env, (inner,), depth)
            return call("dot", a.e, b.e) if c.chance(0.5) else call("dot", b.e, a.e)
        b = self.shaped(env, (inner,) if form == "vec" else (inner, self.size()), depth)
        if a.v.ndim == 1 and b.v.ndim == 2 and c.chance(0.3):
            return bin_("@", E("T", (b.e,)) if c.chance(0.5) else E("transpose", (b.e,)), a.e)
        return bin_("@", a.e, b.e)

    def movement(self, env, depth):
        c = self.c
        t = self.operand(env, depth, (1, 2))
        if t is None:
            return E("list", [self.element(env).e for _ in range(c.integer(1, 3))])
        kind = c.choice(["index", "slice", "transpose", "reshape", "concat", "stack"])
        if t.v.ndim == 1:
            n = t.shape[0]
            if kind == "index":
                return E("index", (t.e,), subs=(("at", self.int_text(c.integer(0, n - 1), n)),))
            if kind == "slice":
                lo = c.integer(0, n - 1)
                hi = c.integer(lo + 1, n)
                return E("index", (t.e,), subs=(self.slice_sub(lo, hi, n),))
            if kind == "transpose":
                return E("T", (t.e,)) if c.chance(0.5) else E("transpose", (t.e,))
            if kind == "reshape":
                divisors = [d for d in range(1, n + 1) if n % d == 0]
                r = c.choice(divisors)
                return E("reshape", (t.e,), sizes=(self.int_text(r), self.int_text(n // r)))
            if kind == "concat":
                other = t if c.chance(0.4) else self.shaped(env, (self.size(),), 0)
                return E("concat", (t.e, other.e))
            other = t if c.chance(0.4) else self.shaped(env, t.shape, 0)
            return E("list" if c.chance(0.5) else "stack", (t.e, other.e, t.e)[:c.integer(1, 3)])
        r, k = t.shape
        if kind == "index":
            i, j = self.int_text(c.integer(0, r - 1), r), self.int_text(c.integer(0, k - 1), k)
            form = c.choice(["element", "row", "column", "row-only"])
            subs = {"element": (("at", i), ("at", j)), "row": (("at", i), ("slice", None, None)),
                    "column": (("slice", None, None), ("at", j)), "row-only": (("at", i),)}[form]
            return E("index", (t.e,), subs=subs)
        if kind == "slice":
            a = c.integer(0, r - 1)
            b = c.integer(a + 1, r)
            if c.chance(0.5):
                return E("index", (t.e,), subs=(self.slice_sub(a, b, r),))        # A[a:b]
            jl = c.integer(0, k - 1)
            jh = c.integer(jl + 1, k)
            if c.chance(0.3):
                return E("index", (t.e,), subs=(("at", self.int_text(a, r)), self.slice_sub(jl, jh, k)))
            return E("index", (t.e,), subs=(self.slice_sub(a, b, r), self.slice_sub(jl, jh, k)))
        if kind == "transpose":
            return E("T", (t.e,)) if c.chance(0.5) else E("transpose", (t.e,))
        if kind == "reshape":
            n = r * k
            if c.chance(0.5):
                return E("reshape", (t.e,), sizes=(self.int_text(n),))
            divisors = [d for d in range(1, n + 1) if n % d == 0]
            a = c.choice(divisors)
            return E("reshape", (t.e,), sizes=(self.int_text(a), self.int_text(n // a)))
        if kind == "concat":
            other = t if c.chance(0.5) else self.shaped(env, (self.size(), k), 0)
            return E("concat", (t.e, other.e))
        # stack of rows of a matrix, with repeats
        rows = [E("index", (t.e,), subs=(("at", self.int_text(c.integer(0, r - 1), r)),))
                for _ in range(c.integer(1, 3))]
        return E("list" if c.chance(0.5) else "stack", rows)

    # -- defs ------------------------------------------------------------------------------------------
    def defcall(self, env, depth):
        c = self.c
        usable = []
        for f in self.defs:       # (while a def's body is made, it is not in self.defs yet)
            if f.rets is not None:   # it returns two values: only an unpacking may call it
                continue
            args = []
            for shape in f.shapes:
                fits = self.pool(env, shape=shape)
                if not fits:
                    break
                args.append(c.choice(fits))
            else:
                usable.append((f, args))
        if usable and c.chance(0.6):
            f, args = c.choice(usable)
            return E("defcall", [a.e for a in args], name=f.name)
        if env.in_def or len(self.defs) >= 3:
            return None
        # a new def, made for these arguments: its body sees its parameters, dims and consts
        n_params = c.integer(1, 2)
        args = [self.operand(env, depth) for _ in range(n_params)]
        if n_params == 2 and c.chance(0.3):
            args[1] = args[0]              # f(x, x)
        names = ["a", "b"] if c.chance(0.7) else ["x", "h"]
        params = dict(zip(names, (a.v for a in args)))
        inner = Env(dict(params), in_def=True, live=params)
        name = self.fresh("f")
        f = Def(name, names[:n_params], [], None, block=c.chance(0.5))
        f.shapes = [a.shape for a in args]
        if f.block:
            for _ in range(c.integer(1, 2)):
                local = self.fresh("s")
                t = self.expr(inner, 2)
                f.body.append(("assign", local, t.e))
                inner.assign(local, t.e, t.v)
            if c.chance(0.3):
                self.repeat(inner, f.body)
        f.ret = self.expr(inner, 2).e
        self.defs.append(f)
        return E("defcall", [a.e for a in args], name=f.name)

    def unpack(self, env, stmts):
        """p, q = f(args): a new def (expression or block form) returning two values."""
        c = self.c
        if len(self.defs) >= 4:
            return
        n_params = c.integer(1, 2)
        args = [self.operand(env, 1) for _ in range(n_params)]
        if any(a is None for a in args):
            return
        names = ["a", "b"][:n_params]
        params = dict(zip(names, (a.v for a in args)))
        inner = Env(dict(params), in_def=True, live=params)
        f = Def(self.fresh("f"), names, [], None, block=c.chance(0.5))
        f.shapes = [a.shape for a in args]
        if f.block:
            local = self.fresh("s")
            t = self.expr(inner, 2)
            f.body.append(("assign", local, t.e))
            inner.assign(local, t.e, t.v)
        returned = [self.expr(inner, 2) for _ in range(2)]
        if c.chance(0.2):
            returned[1] = returned[0]      # the same value twice
        f.rets = [t.e for t in returned]
        self.defs.append(f)
        call = E("defcall", [a.e for a in args], name=f.name)
        targets = [self.fresh("t"), self.fresh("t")]
        stmts.append(("unpack", targets, call))
        for name, t in zip(targets, returned):
            env.assign(name, call, t.v)

    # -- statements ------------------------------------------------------------------------------------
    def repeat(self, env, stmts):
        """h = <term>; repeat K { h = squash(... h ...) }: a value carried through iterations."""
        c = self.c
        start = self.leaf(env, (0, 1, 2))
        if start is None:
            return
        h = self.fresh("h")
        trial_env = Env(dict(env.values), env.in_def, env.live)
        trial_env.assign(h, start.e, start.v)
        count = self.int_text(c.weighted([(1, 3), (2, 3), (3, 2), (0, 1)]))
        outer = self.int_text(c.integer(1, 2)) if c.chance(0.2) else None
        # sometimes an index, `repeat K as i`, and then sometimes `as j` on the repeat around it
        indices = []
        if c.chance(0.4):
            indices.append(("i", count.value))
            if outer is not None and c.chance(0.5):
                indices.append(("j", outer.value))
        first = {name: np.float64(0) for name, _ in indices}   # the indices in the first iteration
        body = []
        carried = [h]
        for _ in range(c.integer(1, 2)):
            target = c.choice(carried)
            current = Term(var(target), trial_env.values[target])
            if indices and c.chance(0.7):
                e = self.indexed(trial_env, current, indices)
            else:
                e = self.partner(trial_env, current, 2).e
            op = c.choice(["*", "+", "-"])
            inner = bin_(op, current.e, e) if c.chance(0.7) else (
                E("bin", (e, current.e), sym=op, signed=False))
            squash = c.choice(["tanh", "sin", "sigmoid", "scaled"])
            update = bin_("*", num(0.5), inner) if squash == "scaled" else fn(squash, inner)
            t = self.value(update, Env({**trial_env.values, **first}, trial_env.in_def))
            if t is None or t.shape != current.shape:
                continue
            body.append(("assign", target, update))
            trial_env.assign(target, update, t)
        if not body:
            return
        block = ("repeat", count, body, indices[0][0] if indices else None)
        if outer is not None:
            block = ("repeat", outer, [block], indices[1][0] if len(indices) > 1 else None)
        trial = [("assign", h, start.e), block]
        # check the whole loop: every iteration must stay in the safe region
        ctx = self.ctx()
        scope = Scope(dict(env.values), env.in_def)
        run_statements(trial, scope, ctx, None)
        if ctx.trace.problems:
            return
        stmts.extend(trial)
        for name in carried:
            env.values[name] = scope.values[name]
            if name in trial_env.live:
                env.live.add(name)

    def indexed(self, env, current, indices):
        """A term that reads the loop indices, to combine with the carried value `current`:
        an element x[i], a row X[i] or column X[:, i], a block v[i * w:(i + 1) * w], per-step
        weights Ws[i * w:(i + 1) * w, :] @ h, a block of rows of a matrix, or the index as a
        number (0.25 * i). A source too short for every iteration is made as a new const."""
        c = self.c
        shape = current.shape
        forms = ["element", "element", "value"]
        if len(shape) == 1:
            forms += ["row", "column", "block", "weights", "stacked"]
        elif len(shape) == 2:
            forms += ["rows"]
        form = c.choice(forms)
        if form == "value":
            name = c.choice([name for name, _ in indices])
            return bin_("*", num(c.choice([0.25, -0.5, 0.1])), var(name))
        if form == "stacked":   # per-step weights as one tensor read by the index: Ws[i] @ h
            need, position = self.loop_position(indices)
            w = shape[0]
            ws = self.source(env, lambda s: len(s) == 3 and s[0] >= need and s[1:] == (w, w), (need, w, w))
            at = ("at", position(ws.shape[0]))
            subs = (at,) if self.c.chance(0.6) else (at, ("slice", None, None), ("slice", None, None))
            return bin_("@", E("index", (ws.e,), subs=subs), current.e)
        if form in ("element", "row", "column"):
            need, position = self.loop_position(indices)
            if form == "element":
                v = self.source(env, lambda s: len(s) == 1 and s[0] >= need, (need,))
                return E("index", (v.e,), subs=(("at", position(v.shape[0])),))
            w = shape[0]
            if form == "row":
                m = self.source(env, lambda s: len(s) == 2 and s[0] >= need and s[1] == w, (need, w))
                at = ("at", position(m.shape[0]))
                return E("index", (m.e,), subs=(at,) if c.chance(0.5) else (at, ("slice", None, None)))
            m = self.source(env, lambda s: len(s) == 2 and s[0] == w and s[1] >= need, (w, need))
            return E("index", (m.e,), subs=(("slice", None, None), ("at", position(m.shape[1]))))
        # blocks: i * w:(i + 1) * w (the inner index only), w the carried value's first axis
        name, count = indices[0]
        w = shape[0]
        need = max(count, 1) * w
        width = self.int_text(w).text
        width = width if width.isidentifier() or width.isdigit() else f"({width})"
        lo = Idx(c.choice([f"{name} * {width}", f"{width} * {name}"]), ((name, w),))
        hi = Idx(c.choice([f"({name} + 1) * {width}", f"{width} * {name} + {width}"]), ((name, w),), w)
        block = ("slice", lo, hi)
        if form == "block":
            v = self.source(env, lambda s: len(s) == 1 and s[0] >= need, (need,))
            return E("index", (v.e,), subs=(block,))
        if form == "weights":
            ws = self.source(env, lambda s: len(s) == 2 and s[0] >= need and s[1] == w, (need, w))
            return bin_("@", E("index", (ws.e,), subs=(block, ("slice", None, None))), current.e)
        m = self.source(env, lambda s: len(s) == 2 and s[0] >= need and s[1] == shape[1], (need, shape[1]))
        return E("index", (m.e,), subs=(block,) if c.chance(0.5) else (block, ("slice", None, None)))

    def loop_position(self, indices):
        """A position written with the loop indices: (the length it needs, a function of the
        source's length giving the Idx): i, L - 1 - i, -1 - i, 2 * i, and with j: i + j, j * K + i."""
        c = self.c
        (i, K), *outer = indices
        last = max(K - 1, 0)
        form = c.choice(["plain", "reverse", "negative", "double"] + (["sum", "flat"] if outer else []))
        if form == "plain":
            return last + 1, lambda L: Idx(i, ((i, 1),))
        if form == "reverse":
            return last + 1, lambda L: Idx(f"{self.int_text(L - 1).text} - {i}", ((i, -1),), L - 1)
        if form == "negative":
            return last + 1, lambda L: Idx(f"-1 - {i}", ((i, -1),), -1)
        if form == "double":
            return 2 * last + 1, lambda L: Idx(f"2 * {i}", ((i, 2),))
        j, J = outer[0]
        if form == "sum":
            return last + max(J - 1, 0) + 1, lambda L: Idx(f"{i} + {j}", ((i, 1), (j, 1)))
        return max(J * K, 1), lambda L: Idx(f"{j} * {K} + {i}", ((j, K), (i, 1)))

    def source(self, env, fits, shape):
        """A named value whose shape `fits` (a vector or matrix to index), or a new const."""
        terms = [t for t in self.pool(env, (1, 2, 3)) if fits(t.shape)]
        if terms and self.c.chance(0.6):
            return self.pick(env, terms)
        return self.new_const(shape)

    def program(self) -> GenProgram:
        c = self.c
        for name in ["n", "m", "k"][:c.integer(0, 3)]:
            self.dims.append((name, c.weighted([(2, 3), (3, 3), (1, 1), (4, 1), (5, 1), (6, 1)])))
        env = Env({})
        # inputs of every shape, within MAX_INPUT_SCALARS
        total = 0
        for name in ["x", "y", "z"][:c.integer(1, 3)]:
            shape = c.weighted([((), 3), ("vec", 3), ("mat", 2), ("tensor", 1)])
            if shape == "vec":
                shape = (self.size(),)
            elif shape == "mat":
                shape = (self.size(), self.size())
            elif shape == "tensor":
                shape = self.tensor_shape()
            if total + prod(shape) > MAX_INPUT_SCALARS:
                shape = ()
            total += prod(shape)
            d = self.data(name, shape, as_input=True)
            self.inputs.append(d)
        for _ in range(c.integer(0, 2)):
            shape = c.choice([(), (self.size(),), (self.size(), self.size())])
            self.new_const(shape)
        for d in self.inputs:
            env.assign(d.name, var(d.name), d.value)
            env.live.add(d.name)
        stmts = []
        for _ in range(c.integer(1, 7)):
            action = c.weighted([("assign", 6), ("repeat", 2), ("rebind", 1), ("unpack", 1)])
            if action == "unpack":
                self.unpack(env, stmts)
                continue
            if action == "repeat":
                self.repeat(env, stmts)
                continue
            if action == "rebind":
                names = [n for n in env.values if n.startswith("t")]
                if c.chance(0.3):            # x = <expr of x's shape>: the input's name, rebound
                    names = [d.name for d in self.inputs]
                if names:
                    name = c.choice(names)
                    t = self.expr(env, c.integer(1, 2))
                    if name in {d.name for d in self.inputs}:
                        if t.shape != env.values[name].shape:
                            t = self.shaped(env, env.values[name].shape, 1)
                        self.rebound.add(name)
                    stmts.append(("assign", name, t.e))
                    env.assign(name, t.e, t.v)
                    continue
            name = self.fresh("t")
            t = self.expr(env, c.integer(1, 3))
            stmts.append(("assign", name, t.e))
            env.assign(name, t.e, t.v)
        self.outputs(env, stmts)
        return GenProgram(self.dims, self.consts, self.inputs, self.defs, stmts, self.int_consts)

    def outputs(self, env, stmts):
        c = self.c
        total = 0
        declared = set()

        def add(name, e, v):
            nonlocal total
            if total + v.size > MAX_OUTPUT_SCALARS:
                if e is None:
                    return
                e, v = reduce_("mean", e), np.mean(v)     # keep the Jacobian small
            total += v.size
            stmts.append(("output", name, e))
            declared.add(name)
            env.values[name] = v

        for _ in range(c.integer(1, 3)):
            kind = c.weighted([("expr", 4), ("bare", 2), ("alias", 2), ("input", 1), ("same-as-bare", 1),
                               ("movement", 2)])
            intermediates = [n for n in env.values if n[0] in "th" and n not in declared]
            if kind == "expr" or not intermediates and kind != "input":
                t = self.expr(env, c.integer(1, 2))
                add(self.fresh("o"), t.e, t.v)
            elif kind == "bare":
                n = c.choice(intermediates[-3:])
                add(n, None, env.values[n])
            elif kind == "alias":                       # output a1 = t; output b1 = t
                n = c.choice(intermediates[-3:])
                i = self.fresh("a")[1:]
                add(f"a{i}", var(n), env.values[n])
                add(f"b{i}", var(n), env.values[n])
            elif kind == "movement":                    # output o = [t, t], concat(t, t), t[1:], ...
                t = self.safe(self.movement(env, 1), env)
                if t is not None:
                    add(self.fresh("o"), t.e, t.v)
            elif kind == "input":                       # output o = x
                d = c.choice([d for d in self.inputs if d.name not in self.rebound] or self.inputs)
                add(self.fresh("o"), var(d.name), env.values[d.name])
            else:                                       # output t; output o = t
                n = c.choice(intermediates[-3:])
                add(n, None, env.values[n])
                add(self.fresh("o"), var(n), env.values[n])
        # most programs also fold what no output uses into one more output, so that most of
        # what was generated is differentiated
        used = set()
        for s in _walk(stmts):
            if s[0] in ("assign", "output", "unpack") and s[2] is not None:
                used |= names_in(s[2])
        for f in self.defs:
            used |= {n for s in _walk(f.body) if s[0] == "assign" for n in names_in(s[2])}
            used |= set().union(*(names_in(r) for r in (f.rets or [f.ret])))
        unused = [n for n in env.values if n[0] in "th" and n not in used and n not in declared]
        if unused and c.chance(0.8):
            terms = []
            for n in unused[-4:]:
                v = env.values[n]
                if v.size == 1 and c.chance(0.5):
                    terms.append(var(n))
                else:
                    terms.append(reduce_(c.choice(["sum", "mean", "max", "min", "logsumexp"]), var(n)))
            e = terms[0]
            for t in terms[1:]:
                e = bin_(c.choice(["+", "-", "*"]), e, t)
            t = self.safe(e, env)
            if t is not None:
                add(self.fresh("o"), t.e, t.v)
        if not declared:      # every output above was too large: one that fits
            t = self.expr(env, 2)
            add(self.fresh("o"), t.e, t.v)


def names_in(e):
    """The names an expression reads."""
    if e.op == "var":
        return {e.p["name"]}
    out = set()
    for kid in e.kids:
        out |= names_in(kid)
    return out


def _broadcasts(a, b):
    try:
        out = np.broadcast_shapes(a, b)
    except ValueError:
        return False
    return out == a and len(out) <= 2


def generate(chooser) -> GenProgram:
    return Generator(chooser).program()


def programs():
    """The Hypothesis strategy: a GenProgram (its repr is the source text)."""
    from hypothesis import strategies as st

    @st.composite
    def strategy(draw):
        return generate(DrawChooser(draw))

    return strategy()
