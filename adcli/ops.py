"""The op registry: every primitive declared once.

Each ``Primitive`` holds, side by side:
- ``shape``: the static shape rule (raises ``ShapeError`` with a message);
- ``evaluate``: the evaluation on an array module ``xp`` (NumPy or CuPy);
- ``cost``: its primal (mults, flops), from shapes;
- ``partials``: per input, the local partial derivative its rules need, with
  its per-element cost (derivative work, computed once per forward sweep);
- ``jvp`` / ``vjp``: per input, the linear map and its transpose, written
  with the counted ``Linear`` methods of adcli.tangents;
- ``uses``: per input, the residuals those rules read (``x0``, ``x1``,
  ``out``, ``p`` for the partial). Reverse mode keeps exactly these.

Data-movement ops (``movement=True``) need no rules: their derivative is the
same gather as their value, applied through index maps (adcli.build).
docs/counting.md tabulates every cost declared here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
import math
from math import prod
from typing import Callable

from . import einsum as contraction
from .backends import special_functions
from .ir import broadcast_shapes, format_shape
from .tangents import Abstract, axes_of, kept_shape, matmul_shape, reduced_shape


class ShapeError(Exception):
    """A shape rule's complaint; the builder adds the source location."""


@dataclass(eq=False)   # compared by identity (no field-by-field __eq__ to generate at start-up)
class Partial:
    """A local partial derivative for one input, computed from the residuals."""

    compute: Callable            # (xp, r) -> array
    mults: int                   # per element of the partial
    flops: int
    like: str = "out"            # shape of the partial: "out" or "x0"
    # A cheap function of the output alone (tanh: 1 - out²): reverse mode keeps the
    # output, which the next op usually needs anyway, and recomputes the partial in the
    # backward sweep, as hand-written backprop does, instead of caching a second array.
    from_out: bool = False
    # (attrs) -> (mults, flops) per element, for a partial whose work depends on the node's
    # attributes (multigammaln's d); mults and flops are used otherwise
    cost_of: Callable | None = None
    # (in_shapes) -> (mults, flops) for the whole partial, for one that is not elementwise
    # (an inverse, for the linear algebra ops): it replaces the per-element figures
    total: Callable | None = None
    # (in_shapes, out_shape, attrs) -> (mults, flops) for the whole partial, for one made of
    # elementwise work and sums whose figures depend on the shapes and the attributes (norm's
    # ord); it replaces the per-element figures
    cost_in: Callable | None = None

    def per_element(self, attrs) -> tuple[int, int]:
        return self.cost_of(attrs) if self.cost_of is not None else (self.mults, self.flops)


@dataclass(eq=False)   # compared by identity (no field-by-field __eq__ to generate at start-up)
class Primitive:
    """One op of the registry: its shape rule, evaluation, cost, local partials, JVP and
    VJP rules, and what it keeps for reverse mode, declared once."""

    name: str
    shape: Callable              # (in_shapes, attrs) -> out shape
    evaluate: Callable           # (xp, *args, **attrs) -> array
    cost: Callable               # (in_shapes, out_shape, attrs) -> (mults, flops)
    jvp: list = field(default_factory=list)        # per input: (T, r, t) -> tangent
    vjp: list = field(default_factory=list)        # per input: (T, r, ct) -> cotangent
    uses: list = field(default_factory=list)       # per input: residual names
    partials: list = field(default_factory=list)   # per input: Partial or None
    jvp_all: Callable | None = None                # (T, r, tangents) -> tangent, overrides the sum
    movement: bool = False
    contraction: bool = False     # matmul-like: its flops run at the machine's GEMM rate
    arity: int | None = 1
    doc: str = ""
    partial_text: list = field(default_factory=list)  # per input, for traces: "cos({x0})"
    # False for ops whose derivative is zero everywhere it exists (comparisons, logical
    # ops, sign, heaviside): their tangents and cotangents are symbolic zeros.
    differentiable: bool = True
    # what evaluating it holds besides its result, for the memory prediction: (in_shapes,
    # out_shape, attrs) -> (values, wide, widened) as Counter.temporary takes them
    scratch: Callable | None = None
    # (i, number of inputs) -> input i's residual names, for an op of any number of inputs
    # whose rules read every other input (einsum); `uses` otherwise
    uses_for: Callable | None = None
    # Every input's partial is one array (solve's A⁻¹ serves A and b): made once per sweep
    # and kept once, whichever inputs carry derivatives (adcli.interpret).
    shared_partial: bool = False
    # For a data movement that leaves some output elements 0 (diag of a vector, tril):
    # (in_shapes, out_shape, attrs) -> the number of output elements copied from the input.
    moved: Callable | None = None

    def partial_for(self, i: int):
        return self.partials[i] if i < len(self.partials) else None

    def uses_of(self, i: int, arity: int) -> tuple:
        return self.uses_for(i, arity) if self.uses_for is not None else self.uses[i]


REGISTRY: dict[str, Primitive] = {}


def register(prim: Primitive) -> Primitive:
    REGISTRY[prim.name] = prim
    return prim


class Residuals:
    """What a rule may read: primal inputs, the output, its partial, attrs, shapes."""

    __slots__ = ("x", "out", "p", "attrs", "in_shapes", "out_shape")

    def __init__(self, x, out, p, attrs, in_shapes, out_shape):
        self.x, self.out, self.p = x, out, p
        self.attrs, self.in_shapes, self.out_shape = attrs, in_shapes, out_shape

    @property
    def x0(self):
        return self.x[0]

    @property
    def x1(self):
        return self.x[1]


def _elementwise_cost(mults: int, flops: int):
    return lambda in_shapes, out, attrs: (mults * prod(out), flops * prod(out))


def _same_shape(in_shapes, attrs):
    return in_shapes[0]


def _broadcast_rule(symbol):
    def rule(in_shapes, attrs):
        out = in_shapes[0]
        for shape in in_shapes[1:]:
            out = None if out is None else broadcast_shapes(out, shape)
        if out is None:
            shapes = [format_shape(s) for s in in_shapes]
            raise ShapeError(f"shapes {', '.join(shapes[:-1])} and {shapes[-1]} "
                             f"do not broadcast for '{symbol}'")
        return out
    return rule


# --- elementwise unary -------------------------------------------------------------

def unary(name, fn, partial=None, p_mults=0, p_flops=0, uses_out=False,
          primal=(0, 1), doc="", from_out=False):
    """An elementwise function; its derivative is a scale by one local partial."""
    if uses_out:   # the partial is the output itself (exp): nothing to compute
        rule = lambda T, r, t: T.scale(r.out, t)
        uses, partials = [("out",)], [None]
    else:
        rule = lambda T, r, t: T.scale(r.p, t)
        uses, partials = [("p",)], [Partial(partial, p_mults, p_flops, from_out=from_out)]
    return register(Primitive(name, _same_shape, fn, _elementwise_cost(*primal),
                              jvp=[rule], vjp=[rule], uses=uses, partials=partials, doc=doc))


def _where(xp, cond, a, b):
    return xp.where(cond, a, b)


# neg needs no partial: its derivative is a sign flip, one flop per element.
register(Primitive("neg", _same_shape, lambda xp, x: -x, _elementwise_cost(0, 1),
                   jvp=[lambda T, r, t: T.neg(t)], vjp=[lambda T, r, t: T.neg(t)],
                   uses=[()], partials=[None], doc="-1"))

unary("sin", lambda xp, x: xp.sin(x), lambda xp, r: xp.cos(r.x0), 0, 1, doc="cos x")
unary("cos", lambda xp, x: xp.cos(x), lambda xp, r: -xp.sin(r.x0), 0, 2, doc="-sin x")
unary("tan", lambda xp, x: xp.tan(x), lambda xp, r: 1 + r.out * r.out, 1, 2, doc="1 + tan² x",
      from_out=True)
unary("exp", lambda xp, x: xp.exp(x), uses_out=True, doc="exp x (the output itself)")
unary("log", lambda xp, x: xp.log(x), lambda xp, r: 1 / r.x0, 1, 1, doc="1 / x")
unary("log1p", lambda xp, x: xp.log1p(x), lambda xp, r: 1 / (1 + r.x0), 1, 2, doc="1 / (1 + x)")
unary("sqrt", lambda xp, x: xp.sqrt(x), lambda xp, r: 0.5 / r.out, 1, 1, doc="0.5 / sqrt x",
      from_out=True)
unary("tanh", lambda xp, x: xp.tanh(x), lambda xp, r: 1 - r.out * r.out, 1, 2, doc="1 - tanh² x",
      from_out=True)
unary("sigmoid", lambda xp, x: 1 / (1 + xp.exp(-x)),
      lambda xp, r: r.out * (1 - r.out), 1, 2, doc="σ(x)(1 - σ(x))", from_out=True)
unary("relu", lambda xp, x: xp.maximum(x, 0),
      lambda xp, r: (r.x0 > 0).astype(r.x0.dtype), 0, 1, doc="1 if x > 0 else 0 (0 at 0)")
unary("abs", lambda xp, x: xp.abs(x), lambda xp, r: xp.sign(r.x0), 0, 1,
      doc="sign x (0 at 0)")
unary("square", lambda xp, x: x * x, lambda xp, r: 2 * r.x0, 1, 1,
      primal=(1, 1), doc="2x")

# Inverse trigonometric and hyperbolic functions, and the logarithms and exponentials
# NumPy computes accurately near 0 (expm1) or in other bases (log2, log10).
unary("arcsin", lambda xp, x: xp.arcsin(x), lambda xp, r: 1 / xp.sqrt(1 - r.x0 * r.x0), 2, 4,
      doc="1 / sqrt(1 - x²), for -1 < x < 1")
unary("arccos", lambda xp, x: xp.arccos(x), lambda xp, r: -1 / xp.sqrt(1 - r.x0 * r.x0), 2, 4,
      doc="-1 / sqrt(1 - x²), for -1 < x < 1")
unary("arctan", lambda xp, x: xp.arctan(x), lambda xp, r: 1 / (1 + r.x0 * r.x0), 2, 3,
      doc="1 / (1 + x²)")
unary("sinh", lambda xp, x: xp.sinh(x), lambda xp, r: xp.cosh(r.x0), 0, 1, doc="cosh x")
unary("cosh", lambda xp, x: xp.cosh(x), lambda xp, r: xp.sinh(r.x0), 0, 1, doc="sinh x")
unary("arcsinh", lambda xp, x: xp.arcsinh(x), lambda xp, r: 1 / xp.sqrt(r.x0 * r.x0 + 1), 2, 4,
      doc="1 / sqrt(x² + 1)")
unary("arccosh", lambda xp, x: xp.arccosh(x), lambda xp, r: 1 / xp.sqrt(r.x0 * r.x0 - 1), 2, 4,
      doc="1 / sqrt(x² - 1), for x > 1")
unary("arctanh", lambda xp, x: xp.arctanh(x), lambda xp, r: 1 / (1 - r.x0 * r.x0), 2, 3,
      doc="1 / (1 - x²), for -1 < x < 1")
unary("expm1", lambda xp, x: xp.expm1(x), lambda xp, r: r.out + 1, 0, 1, doc="exp x = out + 1",
      from_out=True)
unary("log2", lambda xp, x: xp.log2(x), lambda xp, r: (1 / math.log(2)) / r.x0, 1, 1,
      doc="1 / (x ln 2), for x > 0")
unary("log10", lambda xp, x: xp.log10(x), lambda xp, r: (1 / math.log(10)) / r.x0, 1, 1,
      doc="1 / (x ln 10), for x > 0")
# softplus(x) = log(1 + eˣ) = logaddexp(0, x), stable for large |x|. Its derivative is
# σ(x) = 1 - e^(-out) = -expm1(-out): a function of the output (accurate where σ is tiny too).
unary("softplus", lambda xp, x: xp.logaddexp(0, x), lambda xp, r: -xp.expm1(-r.out), 0, 3,
      doc="σ(x) = -expm1(-out)", from_out=True)
# sigmoid evaluates as one intrinsic per element, like exp.

# Special functions NumPy has not: the backend's special-function module gives them (SciPy's
# on NumPy, cupyx.scipy.special on CuPy; adcli.backends.special_functions), each one
# intrinsic per element, like exp.
_TWO_OVER_SQRT_PI = 2 / math.sqrt(math.pi)
unary("erf", lambda xp, x: special_functions(xp).erf(x),
      lambda xp, r: _TWO_OVER_SQRT_PI * xp.exp(-(r.x0 * r.x0)), 2, 4, doc="2/√π · exp(-x²)")
unary("erfc", lambda xp, x: special_functions(xp).erfc(x),
      lambda xp, r: -_TWO_OVER_SQRT_PI * xp.exp(-(r.x0 * r.x0)), 2, 4, doc="-2/√π · exp(-x²)")
# gammaln(x) = log |Γ(x)| (for x < 0 too), whose derivative is digamma(x) = Γ'(x)/Γ(x)
# wherever Γ has no pole; digamma's is the trigamma function polygamma(1, x), which is the
# Hurwitz zeta function ζ(2, x): one intrinsic (SciPy's polygamma computes it so, with more work).
unary("gammaln", lambda xp, x: special_functions(xp).gammaln(x),
      lambda xp, r: special_functions(xp).digamma(r.x0), 0, 1, doc="digamma x")
unary("digamma", lambda xp, x: special_functions(xp).digamma(x),
      lambda xp, r: special_functions(xp).zeta(2, r.x0), 0, 1, doc="polygamma(1, x) = ζ(2, x)")


# multigammaln(a, d) = log Γ_d(a) = d(d-1)/4 · log π + Σ_{j<d} gammaln(a - j/2), the log of the
# multivariate gamma function (SciPy's multigammaln; d a positive integer known when the file
# is built). Its derivative is Σ_{j<d} digamma(a - j/2). Outside a > (d - 1)/2 the same sum
# is taken (log |Γ_d(a)|, +inf at the poles), as JAX does; SciPy's refuses such an a.
def _shifted_sum(fn, a, d):
    total = fn(a)
    for j in range(1, d):
        total = total + fn(a - 0.5 * j)
    return total


def _multigammaln(xp, a, d=1):
    total = _shifted_sum(special_functions(xp).gammaln, a, d)
    return total + d * (d - 1) / 4 * math.log(math.pi) if d > 1 else total


def _multigammaln_flops(d: int) -> int:
    """d gammaln, d - 1 shifts a - j/2, d - 1 sums, and the constant when d > 1."""
    return 3 * d - 2 + (d > 1)


register(Primitive(
    "multigammaln", _same_shape, _multigammaln,
    lambda s, out, attrs: (0, _multigammaln_flops(attrs["d"]) * prod(out)),
    jvp=[lambda T, r, t: T.scale(r.p, t)], vjp=[lambda T, r, ct: T.scale(r.p, ct)], uses=[("p",)],
    partials=[Partial(lambda xp, r: _shifted_sum(special_functions(xp).digamma, r.x0, r.attrs["d"]), 0, 1,
                      cost_of=lambda attrs: (0, 3 * attrs["d"] - 2))],
    doc="Σ_{j<d} digamma(a - j/2)"))


# --- elementwise binary (NumPy broadcasting) ---------------------------------------

def _add_all(T, r, ts):
    return T.add(T.broadcast(ts[0], r.out_shape), T.broadcast(ts[1], r.out_shape))


def _sub_all(T, r, ts):
    return T.sub(T.broadcast(ts[0], r.out_shape), T.broadcast(ts[1], r.out_shape))


def _binary(name, symbol, fn, cost, **rules):
    return register(Primitive(name, _broadcast_rule(symbol), fn, _elementwise_cost(*cost),
                              arity=2, **rules))


_binary("add", "+", lambda xp, a, b: a + b, (0, 1),
        jvp=[lambda T, r, t: T.broadcast(t, r.out_shape)] * 2,
        vjp=[lambda T, r, ct: T.unbroadcast(ct, r.in_shapes[0]),
             lambda T, r, ct: T.unbroadcast(ct, r.in_shapes[1])],
        uses=[(), ()], partials=[None, None], jvp_all=_add_all)
_binary("sub", "-", lambda xp, a, b: a - b, (0, 1),
        jvp=[lambda T, r, t: T.broadcast(t, r.out_shape),
             lambda T, r, t: T.neg(T.broadcast(t, r.out_shape))],
        vjp=[lambda T, r, ct: T.unbroadcast(ct, r.in_shapes[0]),
             lambda T, r, ct: T.unbroadcast(T.neg(ct), r.in_shapes[1])],
        uses=[(), ()], partials=[None, None], jvp_all=_sub_all)
_binary("mul", "*", lambda xp, a, b: a * b, (1, 1),
        jvp=[lambda T, r, t: T.scale(r.x1, t), lambda T, r, t: T.scale(r.x0, t)],
        vjp=[lambda T, r, ct: T.unbroadcast(T.scale(r.x1, ct), r.in_shapes[0]),
             lambda T, r, ct: T.unbroadcast(T.scale(r.x0, ct), r.in_shapes[1])],
        uses=[("x1",), ("x0",)], partials=[None, None])
_binary("div", "/", lambda xp, a, b: a / b, (1, 1),
        jvp=[lambda T, r, t: T.divide(t, r.x1), lambda T, r, t: T.scale(r.p, t)],
        vjp=[lambda T, r, ct: T.unbroadcast(T.divide(ct, r.x1), r.in_shapes[0]),
             lambda T, r, ct: T.unbroadcast(T.scale(r.p, ct), r.in_shapes[1])],
        uses=[("x1",), ("p",)],
        partials=[None, Partial(lambda xp, r: -r.out / r.x1, 1, 2)])


def _pow_partial_base(xp, r):
    # y · x^(y-1); where y == 0 the exponent is taken as 1 so that x^0 (a constant)
    # gets 0 even at x = 0, not 0 · 0^-1 = nan.
    return r.x1 * r.x0 ** xp.where(r.x1 == 0, 1, r.x1 - 1)


def _pow_partial_exponent(xp, r):
    # x^y · log x; where x == 0 the product is taken as 0 (as JAX does), not nan.
    safe = xp.where(r.x0 == 0, 1, r.x0)
    return xp.where(r.x0 == 0, 0, r.out * xp.log(safe))


_binary("pow", "^", lambda xp, a, b: a ** b, (0, 1),
        jvp=[lambda T, r, t: T.scale(r.p, t)] * 2,
        vjp=[lambda T, r, ct: T.unbroadcast(T.scale(r.p, ct), r.in_shapes[0]),
             lambda T, r, ct: T.unbroadcast(T.scale(r.p, ct), r.in_shapes[1])],
        uses=[("p",), ("p",)],
        partials=[Partial(_pow_partial_base, 1, 3), Partial(_pow_partial_exponent, 1, 2)])


def _extreme_pair_share(pick, first: bool):
    """∂max(a,b)/∂a: 1 where a wins, 0 where it loses, 1/2 on ties (JAX's convention)."""
    def compute(xp, r):
        a, b = (r.x0, r.x1) if first else (r.x1, r.x0)
        share = xp.where(pick(a, b), 1.0, xp.where(a == b, 0.5, 0.0))
        return xp.broadcast_to(share, r.out_shape).astype(r.out.dtype)
    return compute


for _name, _pick in (("maximum", lambda a, b: a > b), ("minimum", lambda a, b: a < b)):
    _binary(_name, _name, (lambda xp, a, b, _n=_name, **attrs: getattr(xp, _n)(a, b)), (0, 1),
            jvp=[lambda T, r, t: T.scale(r.p, t)] * 2,
            vjp=[lambda T, r, ct: T.unbroadcast(T.scale(r.p, ct), r.in_shapes[0]),
                 lambda T, r, ct: T.unbroadcast(T.scale(r.p, ct), r.in_shapes[1])],
            uses=[("p",), ("p",)],
            partials=[Partial(_extreme_pair_share(_pick, True), 0, 1),
                      Partial(_extreme_pair_share(_pick, False), 0, 1)])


# --- conditions -----------------------------------------------------------------------
# Comparisons, logical ops, sign and heaviside make values whose derivative is zero
# wherever it exists: their rules return symbolic zeros (None), which cost nothing.
# A condition is true where it is nonzero; masks are 0.0/1.0 in the run's dtype.

def _zero(T, r, t):
    return None


def _mask(m, like):
    """A boolean array as 0.0/1.0 of `like`'s dtype."""
    return m.astype(like.dtype)


def _no_derivative(name, shape, fn, arity, doc):
    return register(Primitive(name, shape, fn, _elementwise_cost(0, 1), jvp=[_zero] * arity,
                              vjp=[_zero] * arity, uses=[()] * arity, partials=[None] * arity,
                              arity=arity, doc=doc, differentiable=False))


COMPARISONS = {"<": ("less", lambda a, b: a < b), "<=": ("less_equal", lambda a, b: a <= b),
               ">": ("greater", lambda a, b: a > b), ">=": ("greater_equal", lambda a, b: a >= b),
               "==": ("equal", lambda a, b: a == b), "!=": ("not_equal", lambda a, b: a != b)}
for _symbol, (_name, _test) in COMPARISONS.items():
    _no_derivative(_name, _broadcast_rule(_symbol),
                   lambda xp, a, b, _t=_test: _mask(_t(a, b), a), 2, f"1.0 where a {_symbol} b, else 0.0")
_no_derivative("logical_and", _broadcast_rule("and"),
               lambda xp, a, b: _mask((a != 0) & (b != 0), a), 2, "1.0 where both are nonzero")
_no_derivative("logical_or", _broadcast_rule("or"),
               lambda xp, a, b: _mask((a != 0) | (b != 0), a), 2, "1.0 where either is nonzero")
_no_derivative("logical_not", _same_shape, lambda xp, x: _mask(x == 0, x), 1, "1.0 where x is 0")
_no_derivative("sign", _same_shape, lambda xp, x: xp.sign(x), 1, "-1, 0 or 1")
_no_derivative("heaviside", _same_shape, lambda xp, x: _mask(x > 0, x), 1, "1.0 where x > 0 (0 at 0)")


def _selected(test):
    """A partial that is 1 where test(r) holds and 0 elsewhere, of the output's shape."""
    def compute(xp, r):
        m = _mask(test(xp, r), r.out)
        return m if tuple(m.shape) == tuple(r.out_shape) else xp.broadcast_to(m, r.out_shape)
    return compute


def _scaled_rules(n, skip=()):
    """jvp, vjp and uses for an op whose derivative is a scale by a partial per input."""
    jvp = [_zero if i in skip else (lambda T, r, t: T.scale(r.p, t)) for i in range(n)]
    vjp = [_zero if i in skip else
           (lambda T, r, ct, _i=i: T.unbroadcast(T.scale(r.p, ct), r.in_shapes[_i])) for i in range(n)]
    uses = [() if i in skip else ("p",) for i in range(n)]
    return dict(jvp=jvp, vjp=vjp, uses=uses)


# where(c, a, b): a where c is nonzero, b where it is 0; no derivative through c.
register(Primitive(
    "where", _broadcast_rule("where"), lambda xp, c, a, b: xp.where(c != 0, a, b),
    _elementwise_cost(0, 1), arity=3, **_scaled_rules(3, skip=(0,)),
    partials=[None, Partial(_selected(lambda xp, r: r.x0 != 0), 0, 1),
              Partial(_selected(lambda xp, r: r.x0 == 0), 0, 1)],
    doc="1 towards a where c ≠ 0, towards b where c = 0"))

# clip(x, lo, hi) = minimum(maximum(x, lo), hi), as NumPy computes it. The derivative goes
# to x where lo ≤ x ≤ hi (both ends included, as PyTorch's clamp), to lo where x < lo ≤ hi,
# to hi where maximum(x, lo) > hi: exactly one of the three gets 1 at every point.
register(Primitive(
    "clip", _broadcast_rule("clip"), lambda xp, x, lo, hi: xp.minimum(xp.maximum(x, lo), hi),
    _elementwise_cost(0, 2), arity=3, **_scaled_rules(3),
    partials=[Partial(_selected(lambda xp, r: (r.x[0] >= r.x[1]) & (r.x[0] <= r.x[2])), 0, 3),
              Partial(_selected(lambda xp, r: (r.x[0] < r.x[1]) & (r.x[1] <= r.x[2])), 0, 3),
              Partial(_selected(lambda xp, r: xp.maximum(r.x[0], r.x[1]) > r.x[2]), 0, 2)],
    doc="1 towards x on [lo, hi], towards lo below it, towards hi above it"))


# arctan2(y, x): the angle of the point (x, y), in (-π, π]; hypot(x, y) = sqrt(x² + y²).
# Both broadcast like the other binary ops. At (0, 0) arctan2's partials are 0/0 = nan
# (as in JAX and PyTorch: the angle has no limit there); hypot's are taken as 0 there, a
# subgradient, as norm's are (hypot(x, y) is norm([x, y])).
def _arctan2_partial(first: bool):
    def compute(xp, r):
        y, x = r.x0, r.x1
        return (x if first else -y) / (x * x + y * y)
    return compute


def _hypot_partial(i: int):
    return lambda xp, r: r.x[i] / xp.where(r.out == 0, 1, r.out)


register(Primitive(
    "arctan2", _broadcast_rule("arctan2"), lambda xp, y, x: xp.arctan2(y, x),
    _elementwise_cost(0, 1), arity=2, **_scaled_rules(2),
    partials=[Partial(_arctan2_partial(True), 3, 4), Partial(_arctan2_partial(False), 3, 5)],
    doc="∂/∂y = x / (x² + y²), ∂/∂x = -y / (x² + y²)"))
register(Primitive(
    "hypot", _broadcast_rule("hypot"), lambda xp, x, y: xp.hypot(x, y),
    _elementwise_cost(0, 1), arity=2, **_scaled_rules(2),
    partials=[Partial(_hypot_partial(0), 1, 1), Partial(_hypot_partial(1), 1, 1)],
    doc="∂/∂x = x / out, ∂/∂y = y / out (0 at x = y = 0)"))


# --- matmul -------------------------------------------------------------------------

def _matmul_shape(in_shapes, attrs):
    a, b = in_shapes
    if not a or not b:
        raise ShapeError(f"'@' needs vectors, matrices or stacks of them, got {format_shape(a)} @ "
                         f"{format_shape(b)}; use '*' to scale")
    if len(a) <= 2 and len(b) <= 2:
        out = matmul_shape(a, b)
        if out is None:
            raise ShapeError(f"inner dimensions differ in {format_shape(a)} @ {format_shape(b)} "
                             f"({a[-1]} vs {b[0]})")
        return out
    inner_b = b[0] if len(b) == 1 else b[-2]
    if a[-1] != inner_b:
        raise ShapeError(f"inner dimensions differ in {format_shape(a)} @ {format_shape(b)} "
                         f"({a[-1]} vs {inner_b})")
    batch = broadcast_shapes(tuple(a[:-2]), tuple(b[:-2]))
    if batch is None:
        raise ShapeError(f"the stacks of {format_shape(a)} @ {format_shape(b)} do not broadcast "
                         f"({format_shape(tuple(a[:-2]))} and {format_shape(tuple(b[:-2]))})")
    return batch + tuple(a[-2:-1]) + tuple(b[-1:] if len(b) > 1 else ())


# `@` on stacks (an operand of 3 or more dimensions) is NumPy's matmul: the leading axes are
# a batch of matrices, broadcast as elementwise ops broadcast them. Its derivatives are the
# einsums it is: with letters for the batch axes, an operand's axis of length 1 that the
# batch broadcasts is dropped (reshaped away, free), so that a JVP is the einsum with the
# tangent in the operand's place and a VJP the cotangent contracted with the other operand,
# summed over the batch axes that operand was broadcast along. Linear.einsum counts them as
# einsum counts (b·m·k·n mults for a batch of b products of (m×k)(k×n)).
_BATCH_LETTERS = "abcdefghlmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def matmul_terms(a, b, out):
    """Einsum letters of a batched a @ b: (a's, a's shape with broadcast axes dropped, b's,
    b's such shape, the output's, each letter's size)."""
    batch = len(out) - (len(a) > 1) - (len(b) > 1)
    letters = _BATCH_LETTERS[:batch]
    sizes = {ch: out[i] for i, ch in enumerate(letters)}
    sizes.update(i=a[-2] if len(a) > 1 else 1, j=a[-1], k=b[-1] if len(b) > 1 else 1)

    def operand(shape, own):
        lead = len(shape) - len(own)
        term, kept = "", []
        for axis, size in enumerate(shape[:lead]):
            ch = letters[batch - lead + axis]
            if size == sizes[ch]:
                term += ch
                kept.append(size)
        return term + own, tuple(kept) + tuple(shape[lead:])

    term_a, shape_a = operand(a, "ij" if len(a) > 1 else "j")
    term_b, shape_b = operand(b, "jk" if len(b) > 1 else "j")
    return term_a, shape_a, term_b, shape_b, letters + ("i" if len(a) > 1 else "") + ("k" if len(b) > 1 else ""), sizes


def _stacked(r) -> bool:
    return len(r.in_shapes[0]) > 2 or len(r.in_shapes[1]) > 2


def _as_shape(T, x, shape):
    """A residual reshaped (a view; only its shape when counting)."""
    if T.xp is None:
        return Abstract(shape)
    return x if tuple(x.shape) == tuple(shape) else x.reshape(shape)


def _batched_jvp(i):
    def rule(T, r, t):
        ta, sa, tb, sb, to, sizes = matmul_terms(*r.in_shapes, r.out_shape)
        own, other = ((ta, sa), (tb, sb)) if i == 0 else ((tb, sb), (ta, sa))
        return T.einsum(T.reshape(t, own[1]), own[0], [(_as_shape(T, r.x[1 - i], other[1]), other[0])],
                        to, sizes)
    return rule


def _batched_vjp(i):
    def rule(T, r, ct):
        ta, sa, tb, sb, to, sizes = matmul_terms(*r.in_shapes, r.out_shape)
        own, other = ((ta, sa), (tb, sb)) if i == 0 else ((tb, sb), (ta, sa))
        g = T.einsum(ct, to, [(_as_shape(T, r.x[1 - i], other[1]), other[0])], own[0], sizes)
        return T.reshape(g, r.in_shapes[i])
    return rule


def _matmul_cost(in_shapes, out, attrs):
    mults = prod(out) * in_shapes[0][-1]
    return mults, 2 * mults


def _matmul_vjp_left(T, r, ct):
    if _stacked(r):
        return _batched_vjp(0)(T, r, ct)
    b = r.x1
    if b.ndim == 2:
        return T.matmul_right(ct, b.T)          # ct @ Bᵀ
    return T.outer(ct, b)                       # ct ⊗ b


def _matmul_vjp_right(T, r, ct):
    if _stacked(r):
        return _batched_vjp(1)(T, r, ct)
    a = r.x0
    if a.ndim == 2:
        return T.matmul_left(a.T, ct)           # Aᵀ @ ct
    return T.outer(ct, a, t_first=False)        # a ⊗ ct


register(Primitive(
    "matmul", _matmul_shape, lambda xp, a, b: a @ b, _matmul_cost, arity=2, contraction=True,
    jvp=[lambda T, r, t: _batched_jvp(0)(T, r, t) if _stacked(r) else T.matmul_right(t, r.x1),
         lambda T, r, t: _batched_jvp(1)(T, r, t) if _stacked(r) else T.matmul_left(r.x0, t)],
    vjp=[_matmul_vjp_left, _matmul_vjp_right],
    uses=[("x1",), ("x0",)], partials=[None, None],
    doc="a matmul (a×b)(b×c) is a·b·c mults and 2·a·b·c flops"))


# --- einsum ----------------------------------------------------------------------------------
# einsum("ij,jk,kl->il", A, B, C) (adcli.einsum): each operand's diagonal and lone sums, then
# pairwise contractions in the order of fewest mults (dynamic programming over subsets of
# operands). It is linear in each operand: the JVP for one operand is the einsum with its
# tangent in its place, the VJP the cotangent contracted with the other operands into its
# axes (broadcast over the letters only it has, put on the diagonal for `ii`); each plans its
# own order, the direction axis one more letter (Linear.einsum).

def _einsum_letters(in_shapes, attrs):
    subs = contraction.from_text(attrs["subscripts"])
    try:
        return subs, contraction.letter_sizes(subs, in_shapes)
    except contraction.SubscriptError as exc:
        raise ShapeError(str(exc)) from None


def einsum_plan(in_shapes, attrs):
    """The contraction an einsum node runs, and its letters' sizes."""
    subs, sizes = _einsum_letters(in_shapes, attrs)
    return contraction.plan(subs.inputs, subs.output, sizes), sizes


def _einsum_shape(in_shapes, attrs):
    subs, sizes = _einsum_letters(in_shapes, attrs)
    return tuple(sizes[ch] for ch in subs.output)


def _einsum(xp, *operands, subscripts):
    plan, _ = einsum_plan([tuple(x.shape) for x in operands], {"subscripts": subscripts})
    return contraction.run(xp, plan, operands)


def _einsum_cost(in_shapes, out, attrs):
    plan, _ = einsum_plan(in_shapes, attrs)
    return plan.mults, plan.flops


def _einsum_scratch(in_shapes, out, attrs):
    plan, sizes = einsum_plan(in_shapes, attrs)
    return contraction.scratch(plan, sizes), 0, 0


def _others(r, subs, i):
    return [(r.x[j], term) for j, term in enumerate(subs.inputs) if j != i]


def _einsum_jvp(i):
    def rule(T, r, t):
        subs, sizes = _einsum_letters(r.in_shapes, r.attrs)
        term = subs.inputs[i]
        letters = contraction.unique(term)
        if letters != term:   # `ii`: the tangent's diagonal (a Seed stays a Seed)
            shape = r.in_shapes[i]
            t = T.gather(t, _diagonal_positions(T, shape), (shape[0],))
        return T.einsum(t, letters, _others(r, subs, i), subs.output, sizes)
    return rule


def _einsum_vjp(i):
    def rule(T, r, ct):
        subs, sizes = _einsum_letters(r.in_shapes, r.attrs)
        term = subs.inputs[i]
        letters = contraction.unique(term)
        elsewhere = set(subs.output).union(*(other for j, other in enumerate(subs.inputs) if j != i))
        target = "".join(ch for ch in letters if ch in elsewhere)
        g = T.einsum(ct, subs.output, _others(r, subs, i), target, sizes)
        if target != letters:   # letters only this operand has were summed: broadcast back over them
            kept = tuple(sizes[ch] if ch in target else 1 for ch in letters)
            g = T.broadcast(T.reshape(g, kept), tuple(sizes[ch] for ch in letters))
        if letters != term:   # `ii`: onto the diagonal
            g = T.scatter(g, None, _diagonal_positions(T, r.in_shapes[i]), 0, r.in_shapes[i])
        return g
    return rule


register(Primitive(
    "einsum", _einsum_shape, _einsum, _einsum_cost, arity=None, contraction=True,
    jvp=[_einsum_jvp(i) for i in range(contraction.MAX_OPERANDS)],
    vjp=[_einsum_vjp(i) for i in range(contraction.MAX_OPERANDS)],
    uses=[()] * contraction.MAX_OPERANDS, partials=[None] * contraction.MAX_OPERANDS,
    uses_for=lambda i, n: tuple(f"x{j}" for j in range(n) if j != i), scratch=_einsum_scratch,
    doc="the einsum of the other operands"))


# --- reductions -----------------------------------------------------------------------

# Reductions take an axis (None: every element) and keepdims (attrs["keepdims"] is True, or
# absent): with it the reduced axes stay, of length 1, as NumPy's keepdims=True keeps them.
# The work is the same either way; the rules reduce as usual and reshape the result to the
# node's shape (free: a reshape moves nothing), and the transposes broadcast a kept or a
# dropped axis back alike (Linear.expand).

def _reduce_shape(in_shapes, attrs):
    axis = attrs.get("axis")
    shape = in_shapes[0]
    if axis is not None:   # one axis (an int) or several (a tuple), each from the end if negative
        axes = axes_of(axis)
        for a in axes:
            if not -len(shape) <= a < len(shape):
                raise ShapeError(f"axis={a} is out of range for {format_shape(shape)}")
        axes = tuple(a + len(shape) if a < 0 else a for a in axes)
        if len(set(axes)) != len(axes):
            raise ShapeError(f"axis={axis} names an axis twice")
        attrs["axis"] = axes[0] if isinstance(axis, int) else tuple(sorted(axes))
    if attrs.get("keepdims"):
        return kept_shape(shape, attrs.get("axis"))
    return reduced_shape(shape, attrs.get("axis"))


def _reduction(name, fn, cost, jvp, vjp, uses, partials=(None,)):
    return register(Primitive(name, _reduce_shape, fn, cost, jvp=[jvp], vjp=[vjp],
                              uses=[uses], partials=list(partials)))


def _numpy_reduction(name):
    """xp.<name> over the node's axis, keeping the reduced axes when the node says so."""
    def evaluate(xp, x, axis=None, keepdims=False):
        if keepdims:
            return getattr(xp, name)(x, axis=axis, keepdims=True)
        return getattr(xp, name)(x, axis=axis)
    return evaluate


def _summed(T, r, t):
    """Σ of a tangent over the node's axis, in the node's shape (kept axes included)."""
    return T.reshape(T.sum(t, r.attrs.get("axis")), r.out_shape)


def _sum_cost(in_shapes, out, attrs):
    return 0, prod(in_shapes[0])


def _weighted_sum_jvp(T, r, t):
    return _summed(T, r, T.scale(r.p, t))


def _weighted_sum_vjp(T, r, ct):
    return T.scale(r.p, T.expand(ct, r.in_shapes[0], r.attrs.get("axis")))


_reduction("sum", _numpy_reduction("sum"), _sum_cost, _summed,
           lambda T, r, ct: T.expand(ct, r.in_shapes[0], r.attrs.get("axis")), ())


def _count(r):
    n_in, n_out = prod(r.in_shapes[0]), prod(r.out_shape)
    return n_in // max(n_out, 1)


_reduction("mean", _numpy_reduction("mean"),
           lambda s, out, a: (prod(out), prod(s[0]) + prod(out)),
           lambda T, r, t: T.scale(1.0 / _count(r), _summed(T, r, t)),
           lambda T, r, ct: T.expand(T.scale(1.0 / _count(r), ct), r.in_shapes[0], r.attrs.get("axis")),
           ())


def _keep(xp, value, r):
    """A reduced value reshaped to broadcast against the input."""
    shape = kept_shape(r.in_shapes[0], r.attrs.get("axis"))
    return value if tuple(value.shape) == shape else value.reshape(shape)   # keepdims: already


def _extreme_share(xp, r):
    """Where the max (min) is attained, split equally among ties."""
    hit = (r.x0 == _keep(xp, r.out, r)).astype(r.x0.dtype)
    return hit / _keep(xp, xp.sum(hit, axis=r.attrs.get("axis")), r)


for _name in ("max", "min"):
    _reduction(_name, _numpy_reduction(_name), _sum_cost, _weighted_sum_jvp, _weighted_sum_vjp, ("p",),
               [Partial(_extreme_share, 1, 3, like="x0")])


def _prod_others(xp, r):
    """∏ of the other elements, by exclusive cumulative products (exact with zeros)."""
    x = r.x0
    axis = r.attrs.get("axis")
    flat = axis is None
    if flat:
        x = x.reshape(-1)
        axis = 0
    axes = axes_of(axis)
    ends = tuple(range(-len(axes), 0))
    # the reduced axes last, as one axis of their elements (several axes: row-major)
    moved = xp.moveaxis(x, axes, ends) if len(axes) > 1 else xp.moveaxis(x, axis, -1)
    lead = tuple(moved.shape[:-len(axes)])
    moved = moved.reshape(lead + (prod(moved.shape[len(lead):]),)) if len(axes) > 1 else moved
    ones = xp.ones(moved.shape[:-1] + (1,), dtype=x.dtype)
    left = xp.cumprod(xp.concatenate([ones, moved[..., :-1]], axis=-1), axis=-1)
    right = xp.flip(xp.cumprod(xp.concatenate([ones, xp.flip(moved, -1)[..., :-1]], axis=-1), axis=-1), -1)
    # (an empty axis: the leading 1 would make one element where there are none)
    result = (left * right)[..., :moved.shape[-1]]
    if len(axes) > 1:
        result = xp.moveaxis(result.reshape(lead + tuple(r.in_shapes[0][a] for a in axes)), ends, axes)
    else:
        result = xp.moveaxis(result, -1, axis)
    return result.reshape(r.in_shapes[0]) if flat else result


_reduction("prod", _numpy_reduction("prod"),
           lambda s, out, a: (prod(s[0]), prod(s[0])),
           _weighted_sum_jvp, _weighted_sum_vjp, ("p",),
           [Partial(_prod_others, 3, 3, like="x0")])


# norm(x, ord, axis, keepdims): NumPy's numpy.linalg.norm. Without axis and ord, the 2-norm of
# all elements (any rank). attrs["axis"] an int: a vector norm along it, attrs["ord"] one of
# 2.0 (√Σx²), 1.0 (Σ|x|), "inf" (max |x|), "-inf" (min |x|), or any p > 0 ((Σ|x|ᵖ)^(1/p));
# a pair (r, c), in the order given: a matrix norm of the r×c slices, "fro" (√Σx²), 1.0 / -1.0
# (the largest / smallest Σ|x| down a column: over r, then max or min over c), "inf" / "-inf"
# (the same across rows: over c, then over r). The builder (adcli.build) fills in NumPy's
# defaults, so these attrs are the whole meaning. Every norm is a function of the reduced
# slice alone, so its rules are those of a weighted sum (as max's): the partial, of x's shape,
# is the gradient. At kinks it follows abs and max: sign(0) = 0, ties share equally, and 0
# where the norm is 0 (a subgradient; JAX gives nan there).
_VECTOR_ORDS = ("2", "1", "inf", "-inf")          # and any p > 0
_MATRIX_ORDS = ("fro", "1", "-1", "inf", "-inf")


def _norm_axes(attrs) -> tuple | None:
    axis = attrs.get("axis")
    return None if axis is None else axes_of(axis)


def _norm_shape(in_shapes, attrs):
    shape, axes = in_shapes[0], _norm_axes(attrs)
    if axes is None:
        return kept_shape(shape, None) if attrs.get("keepdims") else ()
    for a in axes:
        if not 0 <= a < len(shape):
            raise ShapeError(f"axis={a} is out of range for {format_shape(shape)}")
    if len(set(axes)) != len(axes):
        raise ShapeError(f"axis={tuple(axes)} names an axis twice")
    if attrs.get("keepdims"):
        return kept_shape(shape, axes)
    return reduced_shape(shape, axes)


def _abs_sums(xp, x, attrs):
    """A matrix norm's Σ|x| down the columns (ord ±1) or across the rows (ord ±inf), kept,
    and the axis the max or min then runs along."""
    r, c = attrs["axis"]
    along, over = (r, c) if attrs["ord"] in (1.0, -1.0) else (c, r)
    return xp.sum(xp.abs(x), axis=along, keepdims=True), over


def _norm(xp, x, keepdims=False, axis=None, ord=None):
    if axis is None:
        return xp.sqrt(xp.sum(x * x, keepdims=True) if keepdims else xp.sum(x * x))
    attrs = {"axis": axis, "ord": ord}
    if ord in (2.0, "fro"):
        out = xp.sqrt(xp.sum(x * x, axis=axis, keepdims=True))
    elif isinstance(axis, tuple):
        sums, over = _abs_sums(xp, x, attrs)
        out = (xp.max if ord in (1.0, "inf") else xp.min)(sums, axis=over, keepdims=True)
    elif ord == 1.0:
        out = xp.sum(xp.abs(x), axis=axis, keepdims=True)
    elif ord in ("inf", "-inf"):
        out = (xp.max if ord == "inf" else xp.min)(xp.abs(x), axis=axis, keepdims=True)
    else:   # a p-norm, as NumPy computes it
        out = xp.sum(xp.abs(x) ** ord, axis=axis, keepdims=True) ** (1.0 / ord)
    return out if keepdims else out.reshape(reduced_shape(tuple(x.shape), axes_of(axis)))


def _norm_cost(in_shapes, out, attrs):
    n, s = prod(in_shapes[0]), prod(out)
    ord, axes = attrs.get("ord"), _norm_axes(attrs)
    if axes is None or ord in (2.0, "fro"):
        return n, 2 * n + s                # squares, their sum, a square root per result
    if len(axes) == 2:                     # |x|, the sums, then the max (min) of the sums
        return 0, 2 * n + n // max(in_shapes[0][_abs_sums_axis(attrs)], 1)
    if ord in (1.0, "inf", "-inf"):
        return 0, 2 * n                    # |x|, then their sum, max or min
    return 0, 3 * n + s                    # |x|, ^p, the sum, ^(1/p) per result


def _abs_sums_axis(attrs) -> int:
    r, c = attrs["axis"]
    return r if attrs["ord"] in (1.0, -1.0) else c


def _norm_partial(xp, r):
    x, ord, axes = r.x0, r.attrs.get("ord"), _norm_axes(r.attrs)
    if axes is None:   # x / ‖x‖, and 0 where ‖x‖ = 0 (a subgradient) rather than nan
        return x / xp.where(r.out == 0, 1, r.out)
    if ord in (2.0, "fro"):
        return x / _keep_norm(xp, xp.where(r.out == 0, 1, r.out), r)
    if ord == 1.0 and len(axes) == 1:
        return xp.sign(x)
    kept = _keep_norm(xp, r.out, r)
    if len(axes) == 2:   # sign(x) on the slices' columns (rows) that attain it, shared by ties
        sums, over = _abs_sums(xp, x, r.attrs)
        hit = (sums == kept).astype(x.dtype)
        return xp.sign(x) * (hit / xp.sum(hit, axis=over, keepdims=True))
    if ord in ("inf", "-inf"):   # sign(x) where |x| attains it, shared by ties (as max's)
        hit = (xp.abs(x) == kept).astype(x.dtype)
        return xp.sign(x) * (hit / xp.sum(hit, axis=axes[0], keepdims=True))
    # a p-norm: sign(x)·(|x| / ‖x‖)^(p − 1); 0 where x = 0 (sign 0: for p < 1 the power
    # there would be inf, so its base is made 1 first) and where ‖x‖ = 0
    ratio = xp.abs(x) / xp.where(kept == 0, 1, kept)
    return xp.sign(x) * xp.where(ratio == 0, 1, ratio) ** (ord - 1)


def _keep_norm(xp, value, r):
    """The norm's value reshaped to broadcast against x."""
    shape = kept_shape(r.in_shapes[0], _norm_axes(r.attrs))
    return value if tuple(value.shape) == shape else value.reshape(shape)


def _norm_partial_cost(in_shapes, out_shape, attrs):
    n = prod(in_shapes[0])
    ord, axes = attrs.get("ord"), _norm_axes(attrs)
    if axes is None or ord in (2.0, "fro"):
        return n, n                        # x / ‖x‖
    if ord == 1.0 and len(axes) == 1:
        return 0, n                        # sign x
    if len(axes) == 2:                     # |x| and its sums (2n flops), per sum: the test,
        m = n // max(in_shapes[0][_abs_sums_axis(attrs)], 1)   # the count of ties, the share
        return n + m, 3 * n + 3 * m        # (m mults, 3m flops); sign x times the share (n, 2n)
    if ord in ("inf", "-inf"):
        return 2 * n, 6 * n                # |x|, the test, the count of ties, the share, sign x, ×
    return 2 * n, 7 * n                    # |x|, ÷‖x‖, the test and the choice, ^(p − 1), sign x, ×


def norm_partial_text(attrs) -> str:
    """How a norm node's partial is written in traces."""
    ord, axes = attrs.get("ord"), _norm_axes(attrs)
    if axes is None or ord in (2.0, "fro"):
        return "{x0}/{out}"
    if ord == 1.0 and len(axes) == 1:
        return "sign({x0})"
    if len(axes) == 2:
        return "sign({x0})·[Σ|{x0}|={out}]/ties"
    if ord in ("inf", "-inf"):
        return "sign({x0})·[|{x0}|={out}]/ties"
    return f"sign({{x0}})·(|{{x0}}|/{{out}})^{_fmt_ord(ord - 1)}"


def _fmt_ord(value) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


register(Primitive(
    "norm", _norm_shape, _norm, _norm_cost,
    jvp=[_weighted_sum_jvp], vjp=[_weighted_sum_vjp], uses=[("p",)],
    partials=[Partial(_norm_partial, 1, 1, like="x0", cost_in=_norm_partial_cost)]))


def _logsumexp(xp, x, axis=None, keepdims=False):
    top = xp.max(x, axis=axis, keepdims=True)
    top = xp.where(xp.isfinite(top), top, 0)
    total = xp.sum(xp.exp(x - top), axis=axis, keepdims=True)
    out = xp.log(total) + top
    if keepdims:
        return out
    return out.reshape(()) if axis is None else xp.squeeze(out, axis=axis)


_reduction("logsumexp", _logsumexp,
           lambda s, out, a: (0, 4 * prod(s[0]) + 2 * prod(out)),
           _weighted_sum_jvp, _weighted_sum_vjp, ("p",),
           [Partial(lambda xp, r: xp.exp(r.x0 - _keep(xp, r.out, r)), 0, 2, like="x0")])


def _softmax(xp, x, axis=None):
    top = xp.max(x, axis=axis, keepdims=True)
    e = xp.exp(x - top)
    return e / xp.sum(e, axis=axis, keepdims=True)


def _softmax_linear(T, r, t):
    # J = diag(s) - s sᵀ along the axis: symmetric, so the JVP and VJP are the same map.
    axis = r.attrs.get("axis")
    u = T.scale(r.out, t)
    return T.sub(u, T.scale(r.out, T.expand(T.sum(u, axis), r.in_shapes[0], axis)))


register(Primitive(
    "softmax", lambda s, a: (_reduce_shape(s, a), s[0])[1], _softmax,
    lambda s, out, a: (prod(s[0]), 5 * prod(s[0])),
    jvp=[_softmax_linear], vjp=[_softmax_linear], uses=[("out",)], partials=[None]))


def _log_softmax(xp, x, axis=None):
    """x - logsumexp(x) along the axis, stable: the largest element is shifted to 0 first."""
    top = xp.max(x, axis=axis, keepdims=True)
    top = xp.where(xp.isfinite(top), top, 0)
    shifted = x - top
    return shifted - xp.log(xp.sum(xp.exp(shifted), axis=axis, keepdims=True))


# J = I - 1·sᵀ along the axis, s = softmax(x) = exp(out) (the partial, made from the output):
# the JVP subtracts Σ s·t from every element, the VJP subtracts s·Σ ct.
def _log_softmax_jvp(T, r, t):
    axis = r.attrs.get("axis")
    return T.sub(t, T.expand(T.sum(T.scale(r.p, t), axis), r.in_shapes[0], axis))


def _log_softmax_vjp(T, r, ct):
    axis = r.attrs.get("axis")
    return T.sub(ct, T.scale(r.p, T.expand(T.sum(ct, axis), r.in_shapes[0], axis)))


register(Primitive(
    "log_softmax", lambda s, a: (_reduce_shape(s, a), s[0])[1], _log_softmax,
    lambda s, out, a: (0, 5 * prod(s[0]) + prod(reduced_shape(s[0], a.get("axis")))),
    jvp=[_log_softmax_jvp], vjp=[_log_softmax_vjp], uses=[("p",)],
    partials=[Partial(lambda xp, r: xp.exp(r.out), 0, 1, from_out=True)],
    doc="I - 1·softmax(x)ᵀ along the axis"))


# --- data movement ------------------------------------------------------------------------
# Their derivatives are the same gather as their values: adcli.build computes an
# index map per input once, and the interpreters apply it with Linear.move.

def _movement(name, shape, fn, arity=1):
    return register(Primitive(name, shape, fn, lambda s, out, a: (0, 0),
                              movement=True, arity=arity))


def _index_shape(in_shapes, attrs):
    return attrs["result_shape"]


_movement("index", _index_shape, lambda xp, x, key=None, result_shape=None: x[key])
def _transpose_shape(in_shapes, attrs):
    shape, axes = in_shapes[0], attrs.get("axes")
    if axes is None:   # .T: every axis reversed, as NumPy's
        return tuple(reversed(shape))
    if sorted(axes) != list(range(len(shape))):
        raise ShapeError(f"transpose of {format_shape(shape)} needs its {len(shape)} axes in a new order "
                         f"(a permutation of 0 … {len(shape) - 1}), got ({', '.join(map(str, axes))})")
    return tuple(shape[a] for a in axes)


_movement("transpose", _transpose_shape,
          lambda xp, x, axes=None: x.T if axes is None else xp.transpose(x, axes))
_movement("reshape", lambda s, a: tuple(a["shape"]),
          lambda xp, x, shape=None: x.reshape(shape))


def _concat_shape(in_shapes, attrs):
    first = in_shapes[0]
    if not first:
        raise ShapeError("concat joins vectors or matrices; use stack for scalars")
    for s in in_shapes[1:]:
        if len(s) != len(first) or s[1:] != first[1:]:
            raise ShapeError("concat needs matching shapes apart from the first axis, got "
                             + ", ".join(format_shape(x) for x in in_shapes))
    return (sum(s[0] for s in in_shapes),) + tuple(first[1:])


def _stack_shape(in_shapes, attrs):
    first = in_shapes[0]
    if any(s != first for s in in_shapes):
        raise ShapeError("stack needs equal shapes, got " + ", ".join(format_shape(x) for x in in_shapes))
    return (len(in_shapes),) + tuple(first)


_movement("concat", _concat_shape, lambda xp, *xs: xp.concatenate(xs, axis=0), arity=None)
_movement("stack", _stack_shape, lambda xp, *xs: xp.stack(xs, axis=0), arity=None)


def _gather(xp, x, key=None, result_shape=None, adds=0):
    # the key's integer arrays are host data (adcli.build): on the run's array module
    return x[tuple(part if isinstance(part, (int, slice)) else xp.asarray(part) for part in key)]


# x[idx] with integer arrays (NumPy's integer-array indexing), take_along_axis: a gather.
# Its index map may repeat an input element; reverse mode then adds the `adds`
# contributions that meet (Linear.move_back), a scatter-add, counted as flops.
_movement("gather", _index_shape, _gather)


# Movements that leave some output elements 0 (`moved` counts the ones copied): NumPy's diag
# (a vector to a diagonal matrix, a matrix to its diagonal), tril and triu (the triangle on and
# below / above the diagonal moved by k), and fill_tril(v, n): the n×n lower triangle filled row
# by row from v's n(n + 1)/2 values (the GMM parametrisation), zeros above it.
def _partial_movement(name, shape, fn, moved):
    return register(Primitive(name, shape, fn, lambda s, out, a: (0, 0), movement=True, moved=moved))


def _diag_shape(in_shapes, attrs):
    shape = in_shapes[0]
    if len(shape) == 1:
        return (shape[0], shape[0])
    if len(shape) == 2:
        return (min(shape),)
    raise ShapeError("diag needs a vector (for a diagonal matrix) or a matrix (for its diagonal), got a scalar")


def _matrix_shape(name):
    def rule(in_shapes, attrs):
        if len(in_shapes[0]) != 2:
            raise ShapeError(f"{name} needs a matrix, got {format_shape(in_shapes[0])}")
        return in_shapes[0]
    return rule


def _fill_tril_shape(in_shapes, attrs):
    n = attrs["n"]
    need = n * (n + 1) // 2
    if in_shapes[0] != (need,):
        raise ShapeError(f"fill_tril(v, {n}) needs a vec[{need}] (n(n + 1)/2 values), "
                         f"got {format_shape(in_shapes[0])}")
    return (n, n)


def _fill_tril(xp, v, n=1):
    out = xp.zeros((n, n), dtype=v.dtype)
    out[xp.tril_indices(n)] = v
    return out


def _in_band(rows: int, cols: int, lo, hi) -> int:
    """Elements (i, j) of a rows×cols matrix with lo ≤ j − i ≤ hi."""
    return sum(max(0, min(cols - 1, i + hi) - max(0, i + lo) + 1) for i in range(rows))


_partial_movement("diag", _diag_shape, lambda xp, x: xp.diag(x), lambda s, out, a: min(out))
_partial_movement("tril", _matrix_shape("tril"), lambda xp, x, k=0: xp.tril(x, k),
                  lambda s, out, a: _in_band(*out, -out[0], a.get("k", 0)))
_partial_movement("triu", _matrix_shape("triu"), lambda xp, x, k=0: xp.triu(x, k),
                  lambda s, out, a: _in_band(*out, a.get("k", 0), out[1]))
_partial_movement("fill_tril", _fill_tril_shape, _fill_tril, lambda s, out, a: prod(s[0]))


# --- scatter-add ----------------------------------------------------------------------------
# scatter_add(values, idx, n): out.flat[targets[i]] += values.flat[i] (adcli.build makes the
# flat targets). Not a movement: places reached several times add, `adds` flops (a place
# reached c ≥ 2 times costs c, as `sum` of c values does). Its JVP is the same scatter-add
# of the tangent; its VJP the gather by the same targets.

def _scatter_add(xp, values, index=None, targets=None, adds=0, shape=None):
    total = xp.bincount(xp.asarray(targets), weights=values.reshape(-1), minlength=prod(shape))
    return total.reshape(shape).astype(values.dtype, copy=False)


register(Primitive(
    "scatter_add", lambda s, a: tuple(a["shape"]), _scatter_add,
    lambda s, out, a: (0, a["adds"]),
    jvp=[lambda T, r, t: T.scatter(t, None, r.attrs["targets"], r.attrs["adds"], r.out_shape)],
    vjp=[lambda T, r, ct: T.gather(ct, r.attrs["targets"], r.in_shapes[0])],
    uses=[()], partials=[None], doc="1 towards each place an element is added to",
    # bincount's float64 sums, and its weights copied to float64 in a float32 run
    scratch=lambda s, out, a: (0, prod(out), prod(s[0]))))


# --- linear algebra -----------------------------------------------------------------------------
# Square systems, determinants and factorisations run through xp.linalg (LAPACK on NumPy,
# cuSOLVER on CuPy); adcli counts them as the textbook algorithms, exactly for each n
# (docs/counting.md):
#   LU factorisation                   (n³ − n)/3 mults,         (4n³ − 3n² − n)/6 flops
#   LU solve, per right-hand side      n² mults,                 2n² − n flops
#   triangular solve, per r.h.s.       n(n + 1)/2 mults,         n² flops
#   Cholesky factorisation             (n³ + 3n² − 4n)/6 mults,  n(n + 1)(2n + 1)/6 flops
#   inverse: an LU and n LU solves (the identity's columns), as NumPy's inv runs it;
#   triangular inverse: n triangular solves.
# Their derivatives apply an inverse (A⁻¹, or L⁻¹ of a triangle): the local partial, made
# once per forward sweep (kept for the backward sweep); the rules are matmuls with it and
# with the output, counted as matmuls are.

def lu_counts(n: int) -> tuple[int, int]:
    return (n ** 3 - n) // 3, (4 * n ** 3 - 3 * n ** 2 - n) // 6


def lu_solve_counts(n: int) -> tuple[int, int]:
    return n * n, 2 * n * n - n


def triangular_solve_counts(n: int) -> tuple[int, int]:
    return n * (n + 1) // 2, n * n


def cholesky_counts(n: int) -> tuple[int, int]:
    return (n ** 3 + 3 * n ** 2 - 4 * n) // 6, n * (n + 1) * (2 * n + 1) // 6


def inverse_counts(n: int) -> tuple[int, int]:
    (fm, ff), (sm, sf) = lu_counts(n), lu_solve_counts(n)
    return fm + n * sm, ff + n * sf


def triangular_inverse_counts(n: int) -> tuple[int, int]:
    m, f = triangular_solve_counts(n)
    return n * m, n * f


def _square(name, shape) -> int:
    if len(shape) != 2 or shape[0] != shape[1]:
        raise ShapeError(f"{name} needs a square matrix, got {format_shape(shape)}")
    return shape[0]


def _square_shape(name):
    def rule(in_shapes, attrs):
        _square(name, in_shapes[0])
        return in_shapes[0]
    return rule


def _system_shape(name):
    """solve(A, b), triangular_solve(L, b): A square, b a vector or a matrix of A's rows."""
    def rule(in_shapes, attrs):
        n = _square(name, in_shapes[0])
        b = in_shapes[1]
        if len(b) not in (1, 2) or b[0] != n:
            raise ShapeError(f"{name} needs a right-hand side of {n} rows for {format_shape(in_shapes[0])}, "
                             f"got {format_shape(b)}")
        return b
    return rule


def _right_hand_sides(shape) -> int:
    return shape[1] if len(shape) == 2 else 1


def _times(counts, times: int) -> tuple[int, int]:
    return counts[0] * times, counts[1] * times


def _plus(a, b) -> tuple[int, int]:
    return a[0] + b[0], a[1] + b[1]


def _outer_with(T, y, x):
    """y xᵀ for a cotangent y of x's shape (x a vector: the outer product; a matrix: y @ xᵀ)."""
    return T.outer(y, x) if x.ndim == 1 else T.matmul_right(y, x.T)


def _constant(T, shape, make):
    """An array the rule makes from shapes alone (a mask), or its stand-in when only counting."""
    from .tangents import Abstract

    return Abstract(shape) if T.xp is None else make(T.xp)


def _triangle_mask(T, n, lower: bool, offset: int = 0):
    """1.0 on the triangle (the diagonal moved by `offset`), 0.0 elsewhere."""
    def make(xp):
        ones = xp.ones((n, n), dtype=T.dtype)
        return xp.tril(ones, offset) if lower else xp.triu(ones, -offset)
    return _constant(T, (n, n), make)


# solve(A, b) = A⁻¹b. dx = A⁻¹(db − dA x); the transposes: b̄ = A⁻ᵀ x̄, Ā = −b̄ xᵀ.
def _solve_jvp_all(T, r, ts):
    t_a, t_b = ts
    rhs = t_b if t_a is None else T.sub(t_b, T.matmul_right(t_a, r.out))
    return T.matmul_left(r.p, rhs)


def _solve_vjp_a(T, r, ct):
    return T.neg(_outer_with(T, T.matmul_left(r.p.T, ct), r.out))


_INVERSE = Partial(lambda xp, r: xp.linalg.inv(r.x0), 0, 0, like="x0",
                   total=lambda s: inverse_counts(s[0][0]))

register(Primitive(
    "solve", _system_shape("solve"), lambda xp, a, b: xp.linalg.solve(a, b),
    lambda s, out, a: _plus(lu_counts(s[0][0]), _times(lu_solve_counts(s[0][0]), _right_hand_sides(s[1]))),
    jvp=[lambda T, r, t: T.neg(T.matmul_left(r.p, T.matmul_right(t, r.out))),
         lambda T, r, t: T.matmul_left(r.p, t)],
    vjp=[_solve_vjp_a, lambda T, r, ct: T.matmul_left(r.p.T, ct)],
    uses=[("p", "out"), ("p",)], partials=[_INVERSE, _INVERSE], jvp_all=_solve_jvp_all,
    shared_partial=True, contraction=True, arity=2, doc="A⁻¹ (b), −A⁻¹(·)x (A)"))

# inv(A) = C: dC = −C dA C, Ā = −Cᵀ C̄ Cᵀ.
register(Primitive(
    "inv", _square_shape("inv"), lambda xp, a: xp.linalg.inv(a),
    lambda s, out, a: inverse_counts(s[0][0]),
    jvp=[lambda T, r, t: T.neg(T.matmul_right(T.matmul_left(r.out, t), r.out))],
    vjp=[lambda T, r, ct: T.neg(T.matmul_right(T.matmul_left(r.out.T, ct), r.out.T))],
    uses=[("out",)], partials=[None], contraction=True, doc="−C(·)C"))


# det(A): d det = det · tr(A⁻¹ dA) = Σ (det · A⁻ᵀ) ∘ dA; logdet(A) = log |det A| (slogdet's
# second value): d logdet = Σ A⁻ᵀ ∘ dA. The partial is the gradient, as prod's is.
def _square_to_scalar(name):
    def rule(in_shapes, attrs):
        _square(name, in_shapes[0])
        return ()
    return rule


def _gradient_jvp(T, r, t):
    return T.sum(T.scale(r.p, t))


def _gradient_vjp(T, r, ct):
    return T.scale(r.p, T.expand(ct, r.in_shapes[0]))


register(Primitive(
    "det", _square_to_scalar("det"), lambda xp, a: xp.linalg.det(a),
    lambda s, out, a: _plus(lu_counts(s[0][0]), (s[0][0] - 1, s[0][0] - 1)),
    jvp=[_gradient_jvp], vjp=[_gradient_vjp], uses=[("p",)],
    partials=[Partial(lambda xp, r: r.out * xp.linalg.inv(r.x0).T, 0, 0, like="x0",
                      total=lambda s: _plus(inverse_counts(s[0][0]), (s[0][0] ** 2, s[0][0] ** 2)))],
    contraction=True, doc="det · A⁻ᵀ"))
register(Primitive(
    "logdet", _square_to_scalar("logdet"), lambda xp, a: xp.linalg.slogdet(a)[1],
    lambda s, out, a: _plus(lu_counts(s[0][0]), (0, 2 * s[0][0] - 1)),
    jvp=[_gradient_jvp], vjp=[_gradient_vjp], uses=[("p",)],
    partials=[Partial(lambda xp, r: xp.linalg.inv(r.x0).T, 0, 0, like="x0",
                      total=lambda s: inverse_counts(s[0][0]))],
    contraction=True, doc="A⁻ᵀ"))


# triangular_solve(L, b, lower) = L⁻¹b, reading only L's triangle (the other one may hold
# anything). NumPy has no triangular solver: the value comes from xp.linalg.solve on the
# triangle, and is counted as the substitution it is. Derivatives as solve's, with dL
# restricted to the triangle.
def _triangle(xp, a, lower):
    return xp.tril(a) if lower else xp.triu(a)


def _tri_jvp_all(T, r, ts):
    t_l, t_b = ts
    if t_l is not None:
        mask = _triangle_mask(T, r.in_shapes[0][0], r.attrs["lower"])
        t_l = T.matmul_right(T.scale(mask, t_l), r.out)
    rhs = t_b if t_l is None else T.sub(t_b, t_l)
    return T.matmul_left(r.p, rhs)


def _tri_vjp_l(T, r, ct):
    mask = _triangle_mask(T, r.in_shapes[0][0], r.attrs["lower"])
    return T.neg(T.scale(mask, _outer_with(T, T.matmul_left(r.p.T, ct), r.out)))


_TRIANGULAR_INVERSE = Partial(lambda xp, r: xp.linalg.inv(_triangle(xp, r.x0, r.attrs["lower"])), 0, 0,
                              like="x0", total=lambda s: triangular_inverse_counts(s[0][0]))

register(Primitive(
    "triangular_solve", _system_shape("triangular_solve"),
    lambda xp, a, b, lower=True: xp.linalg.solve(_triangle(xp, a, lower), b),
    lambda s, out, a: _times(triangular_solve_counts(s[0][0]), _right_hand_sides(s[1])),
    jvp=[lambda T, r, t: _tri_jvp_all(T, r, [t, None]), lambda T, r, t: T.matmul_left(r.p, t)],
    vjp=[_tri_vjp_l, lambda T, r, ct: T.matmul_left(r.p.T, ct)],
    uses=[("p", "out"), ("p",)], partials=[_TRIANGULAR_INVERSE, _TRIANGULAR_INVERSE],
    jvp_all=_tri_jvp_all, shared_partial=True, contraction=True, arity=2,
    doc="L⁻¹ (b), −L⁻¹(tri(·))x (L)"))


# cholesky(A) = L, lower, reading only A's lower triangle (as NumPy's does): the function is
# of S = tril(A) + tril(A, −1)ᵀ, so dS = tril(dA) + tril(dA, −1)ᵀ, and (Murray 2016; JAX's
# rule) dL = L Φ(L⁻¹ dS L⁻ᵀ), Φ = the lower triangle with the diagonal halved. The VJP is its
# transpose: Φ(Lᵀ L̄) → S̄ = L⁻ᵀ (·) L⁻¹ → Ā = tril(S̄) + tril(S̄ᵀ, −1).
def _cholesky_masks(T, n):
    lower = _triangle_mask(T, n, True)
    strict = _triangle_mask(T, n, True, -1)
    phi = _constant(T, (n, n), lambda xp: xp.tril(xp.ones((n, n), dtype=T.dtype), -1)
                    + 0.5 * xp.eye(n, dtype=T.dtype))
    return lower, strict, phi


def _cholesky_jvp(T, r, t):
    lower, strict, phi = _cholesky_masks(T, r.out_shape[0])
    sym = T.add(T.scale(lower, t), T.transpose(T.scale(strict, t)))
    inner = T.matmul_right(T.matmul_left(r.p, sym), r.p.T)
    return T.matmul_left(r.out, T.scale(phi, inner))


def _cholesky_vjp(T, r, ct):
    lower, strict, phi = _cholesky_masks(T, r.out_shape[0])
    inner = T.scale(phi, T.matmul_left(r.out.T, ct))
    sym = T.matmul_right(T.matmul_left(r.p.T, inner), r.p)
    return T.add(T.scale(lower, sym), T.scale(strict, T.transpose(sym)))


register(Primitive(
    "cholesky", _square_shape("cholesky"), lambda xp, a: xp.linalg.cholesky(a),
    lambda s, out, a: cholesky_counts(s[0][0]),
    jvp=[_cholesky_jvp], vjp=[_cholesky_vjp], uses=[("p", "out")],
    partials=[Partial(lambda xp, r: xp.linalg.inv(r.out), 0, 0, like="x0",
                      total=lambda s: triangular_inverse_counts(s[0][0]))],
    contraction=True, doc="L Φ(L⁻¹ (·) L⁻ᵀ)"))


# trace(A) = Σ A[i, i] over the diagonal of any matrix (NumPy's trace): its derivative is
# the same sum of the tangent's diagonal; the transpose puts the cotangent on the diagonal.
def _diagonal_positions(T, shape):
    from .ir import Positions

    d = min(shape)
    return Positions(d) if T.xp is None else T.xp.arange(d) * (shape[1] + 1)


def _trace_shape(in_shapes, attrs):
    if len(in_shapes[0]) != 2:
        raise ShapeError(f"trace needs a matrix, got {format_shape(in_shapes[0])}")
    return ()


def _trace_jvp(T, r, t):
    shape = r.in_shapes[0]
    return T.sum(T.gather(t, _diagonal_positions(T, shape), (min(shape),)))


def _trace_vjp(T, r, ct):
    shape = r.in_shapes[0]
    diagonal = T.broadcast(ct, (min(shape),))
    return T.scatter(diagonal, None, _diagonal_positions(T, shape), 0, shape)


register(Primitive(
    "trace", _trace_shape, lambda xp, a: xp.trace(a), lambda s, out, a: (0, min(s[0])),
    jvp=[_trace_jvp], vjp=[_trace_vjp], uses=[()], partials=[None], doc="1 on the diagonal"))


def primal_cost(node, in_shapes) -> tuple[int, int]:
    return REGISTRY[node.op].cost(in_shapes, node.shape, node.attrs)


# How each op's local partial derivative with respect to each input is written
# in evaluation traces (adcli trace); {x0}, {x1}, {out} become node names.
PARTIAL_TEXT = {
    "neg": ["-1"], "add": ["1", "1"], "sub": ["1", "-1"], "mul": ["{x1}", "{x0}"],
    "div": ["1/{x1}", "-{out}/{x1}"], "pow": ["{x1}·{x0}^({x1}-1)", "{out}·log({x0})"],
    "sin": ["cos({x0})"], "cos": ["-sin({x0})"], "tan": ["1+{out}²"], "exp": ["{out}"],
    "log": ["1/{x0}"], "log1p": ["1/(1+{x0})"], "sqrt": ["0.5/{out}"], "tanh": ["1-{out}²"],
    "sigmoid": ["{out}·(1-{out})"], "relu": ["[{x0}>0]"], "abs": ["sign({x0})"], "square": ["2·{x0}"],
    "arcsin": ["1/√(1-{x0}²)"], "arccos": ["-1/√(1-{x0}²)"], "arctan": ["1/(1+{x0}²)"],
    "sinh": ["cosh({x0})"], "cosh": ["sinh({x0})"], "arcsinh": ["1/√({x0}²+1)"],
    "arccosh": ["1/√({x0}²-1)"], "arctanh": ["1/(1-{x0}²)"], "expm1": ["{out}+1"],
    "log2": ["1/({x0}·ln 2)"], "log10": ["1/({x0}·ln 10)"], "softplus": ["1-exp(-{out})"],
    "erf": ["2/√π·exp(-{x0}²)"], "erfc": ["-2/√π·exp(-{x0}²)"], "gammaln": ["digamma({x0})"],
    "digamma": ["polygamma(1, {x0})"], "multigammaln": ["Σⱼ digamma({x0}-j/2)"],
    "arctan2": ["{x1}/({x0}²+{x1}²)", "-{x0}/({x0}²+{x1}²)"], "hypot": ["{x0}/{out}", "{x1}/{out}"],
    "maximum": ["[{x0}>{x1}] (½ on ties)", "[{x1}>{x0}] (½ on ties)"],
    "minimum": ["[{x0}<{x1}] (½ on ties)", "[{x1}<{x0}] (½ on ties)"],
    "matmul": ["{x1}ᵀ", "{x0}ᵀ"], "sum": ["1"], "mean": ["1/count"],
    "max": ["[{x0}={out}]/ties"], "min": ["[{x0}={out}]/ties"], "prod": ["∏ other elements"],
    "norm": ["{x0}/{out}"], "logsumexp": ["softmax({x0})"], "softmax": ["diag({out})-{out}{out}ᵀ"],
    "log_softmax": ["I-1·exp({out})ᵀ"],
    "index": ["select"], "transpose": ["transpose"], "reshape": ["reshape"],
    "concat": ["select"], "stack": ["select"], "gather": ["select"], "scatter_add": ["scatter"],
    "where": ["0", "[{x0}≠0]", "[{x0}=0]"],
    "clip": ["[{x1}≤{x0}≤{x2}]", "[{x0}<{x1}≤{x2}]", "[max({x0},{x1})>{x2}]"],
    "solve": ["-{x0}⁻¹(·){out}", "{x0}⁻¹"], "inv": ["-{out}(·){out}"], "det": ["{out}·{x0}⁻ᵀ"],
    "logdet": ["{x0}⁻ᵀ"], "triangular_solve": ["-tri({x0})⁻¹tri(·){out}", "tri({x0})⁻¹"],
    "cholesky": ["{out}·Φ({out}⁻¹(·){out}⁻ᵀ)"], "trace": ["I"], "diag": ["select"], "tril": ["select"],
    "triu": ["select"], "fill_tril": ["select"],
    "einsum": ["einsum of the others"] * contraction.MAX_OPERANDS,
}
for _name, _prim in REGISTRY.items():
    if not _prim.differentiable:
        PARTIAL_TEXT[_name] = ["0"] * _prim.arity
for _name, _texts in PARTIAL_TEXT.items():
    REGISTRY[_name].partial_text = _texts
