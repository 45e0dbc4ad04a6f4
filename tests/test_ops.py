"""Every primitive's JVP and VJP rules against central finite differences.

One compact check per program (HIPS-autograd style): a tiny .ad text applies
the op to inputs drawn by Hypothesis inside the op's domain (away from kinks
and ties), and the forward Jacobian, the reverse Jacobian and central
differences must agree. Each draw also pushes one dense direction through
``jvp`` and one dense cotangent through ``vjp`` (the Jacobian runs start from
identity Seeds, so this exercises the rules on dense tangents too).

``test_every_primitive_has_a_gradient_check`` fails when an op is added to
the registry without a case here. The conventions at non-differentiable
points (JAX's) are pinned separately with exact values.
"""
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import adcli
from adcli.ops import REGISTRY

from conftest import fd_jacobian, flat_outputs, jacobians

ELEMENTS = {
    "any": st.floats(-2, 2),
    "pos": st.floats(0.3, 3),                                  # log, sqrt, pow's base
    "away0": st.floats(0.2, 2) | st.floats(-2, -0.2),          # relu, abs kinks; denominators
    "small": st.floats(-1.2, 1.2),                             # tan, away from its poles
    "log1p": st.floats(-0.5, 3),
    "unit": st.floats(-0.9, 0.9),                              # arcsin, arccos, arctanh
    "acosh": st.floats(1.1, 3),                                # arccosh
    "gamma": st.floats(0.2, 4),                                # gammaln, digamma: away from the pole at 0
    # negative non-integers, away from the poles 0, -1, -2 (gammaln is log |Γ| there)
    "gamma-": st.floats(-2.8, -2.2) | st.floats(-1.8, -1.2) | st.floats(-0.8, -0.2),
    "mgamma": st.floats(1.2, 4),                               # multigammaln(a, 3): a > 1
}
GAP = 0.01   # ties and kinks are kept this far away; the FD step is 1e-5


def distinct(*names):
    """All elements of each named input differ pairwise by more than GAP."""
    def ok(at):
        for name in names:
            x = np.sort(np.asarray(at[name]).reshape(-1))
            if x.size > 1 and np.min(np.diff(x)) <= GAP:
                return False
        return True
    return ok


def distinct_abs(x):
    """|x|'s elements differ pairwise by more than GAP along the last axis (no ties of max |x|)."""
    a = np.sort(np.abs(np.asarray(x)), axis=-1)
    return a.shape[-1] < 2 or bool(np.min(np.diff(a, axis=-1)) > GAP)


def distinct_sums(sums):
    """A matrix norm's column (row) sums differ pairwise by more than GAP (no ties)."""
    return distinct_abs(sums)


def apart(a, b):
    """a and b (broadcast) differ by more than GAP everywhere."""
    return lambda at: bool(np.all(np.abs(np.subtract(at[a], at[b])) > GAP))


@dataclass
class Case:
    op: str
    text: str
    domains: dict = field(default_factory=dict)   # input name -> ELEMENTS key (default "any")
    ok: object = None                             # predicate on the drawn values (ties)

    @property
    def id(self):
        lines = self.text.splitlines()
        body = lines[-1][len("output y = "):]
        inputs = ", ".join(line.split(None, 1)[1] for line in lines if line.startswith("input"))
        return f"{self.op}: {body} ({inputs})"


def unary(op, domain="any", call=None):
    return Case(op, f"input x: mat[2, 3]\noutput y = {call or op}(x)", {"x": domain})


VEC_VEC = "input a: vec[3]\ninput b: vec[3]\n"
SCALAR_VEC = "input s\ninput b: vec[3]\n"
VEC_MAT = "input a: vec[3]\ninput B: mat[2, 3]\n"
MAT_COL = "input A: mat[2, 3]\ninput c: vec[2]\n"

CASES = [
    Case("neg", "input x: vec[3]\noutput y = -x"),
    unary("sin"), unary("cos"), unary("tan", "small"), unary("exp"), unary("log", "pos"),
    unary("log1p", "log1p"), unary("sqrt", "pos"), unary("tanh"), unary("sigmoid"),
    unary("relu", "away0"), unary("abs", "away0"), unary("square"),
    unary("arcsin", "unit"), unary("arccos", "unit"), unary("arctan"), unary("sinh"), unary("cosh"),
    unary("arcsinh"), unary("arccosh", "acosh"), unary("arctanh", "unit"), unary("expm1"),
    unary("log2", "pos"), unary("log10", "pos"), unary("softplus"),
    Case("softplus", "input x: vec[3]\noutput y = softplus(20 * x)"),     # large |x|: stable both ways
    unary("erf"), unary("erfc"), unary("gammaln", "gamma"), unary("digamma", "gamma"),
    unary("gammaln", "gamma-"), unary("digamma", "gamma-"),
    Case("erfc", "input x: vec[3]\noutput y = erfc(3 * x)"),            # tails: erfc(6) ≈ 2e-17
    Case("multigammaln", "input a: mat[2, 3]\noutput y = multigammaln(a, 3)", {"a": "mgamma"}),
    Case("multigammaln", "input a: vec[3]\noutput y = multigammaln(a, 1)", {"a": "gamma"}),
    Case("multigammaln", "dim d = 4\ninput a: vec[2]\noutput y = multigammaln(a + d, d)"),
    # elementwise binary, with NumPy broadcasting
    Case("add", VEC_VEC + "output y = a + b"),
    Case("add", SCALAR_VEC + "output y = s + b"),
    Case("add", VEC_MAT + "output y = a + B"),
    Case("add", MAT_COL + "output y = A + reshape(c, 2, 1)"),   # a column broadcast
    Case("add", "input x: vec[3]\noutput y = x + x"),
    Case("add", "input a: vec[1]\ninput B: mat[2, 3]\noutput y = a + B"),
    Case("add", "input a: vec[3]\ninput c: vec[2]\noutput y = reshape(a, 1, 3) + reshape(c, 2, 1)"),
    Case("sub", VEC_VEC + "output y = a - b"),
    Case("sub", SCALAR_VEC + "output y = s - b"),
    Case("sub", VEC_MAT + "output y = B - a"),
    Case("sub", MAT_COL + "output y = reshape(c, 2, 1) - A"),
    Case("mul", VEC_VEC + "output y = a * b"),
    Case("mul", SCALAR_VEC + "output y = s * b"),
    Case("mul", VEC_MAT + "output y = a * B"),
    Case("mul", MAT_COL + "output y = reshape(c, 2, 1) * A"),
    Case("mul", "input x: vec[3]\noutput y = x * x"),
    Case("mul", "input s\ninput B: mat[2, 3]\noutput y = s * B"),
    Case("mul", "const K: mat[2, 3] = randn(seed=1)\ninput a: vec[3]\noutput y = K * a"),
    Case("mul", "input a: vec[2]\ninput b: vec[3]\noutput y = outer(a, b)"),
    Case("div", VEC_VEC + "output y = a / b", {"b": "away0"}),
    Case("div", SCALAR_VEC + "output y = s / b", {"b": "away0"}),
    Case("div", SCALAR_VEC + "output y = b / s", {"s": "away0"}),
    Case("div", VEC_MAT + "output y = B / a", {"a": "away0"}),
    Case("div", "input x: vec[3]\noutput y = 1 / x", {"x": "away0"}),
    Case("div", "input a: vec[3]\ninput c: vec[2]\noutput y = reshape(c, 2, 1) / reshape(a, 1, 3)",
         {"a": "away0"}),
    Case("pow", VEC_VEC + "output y = a ^ b", {"a": "pos"}),
    Case("pow", "input a: vec[3]\ninput e\noutput y = a ^ e", {"a": "pos"}),
    Case("pow", VEC_MAT + "output y = B ^ a", {"B": "pos"}),
    Case("pow", "input x: vec[3]\noutput y = x ^ 3"),
    Case("pow", "input x: vec[3]\noutput y = 2 ^ x"),
    Case("pow", "input x: vec[3]\noutput y = x ^ x", {"x": "pos"}),
    Case("maximum", VEC_VEC + "output y = maximum(a, b)", ok=apart("a", "b")),
    Case("maximum", SCALAR_VEC + "output y = maximum(s, b)", ok=apart("s", "b")),
    Case("maximum", VEC_MAT + "output y = maximum(B, a)", ok=apart("B", "a")),
    Case("minimum", VEC_VEC + "output y = minimum(a, b)", ok=apart("a", "b")),
    Case("minimum", SCALAR_VEC + "output y = minimum(b, s)", ok=apart("s", "b")),
    Case("minimum", VEC_MAT + "output y = minimum(a, B)", ok=apart("B", "a")),
    # arctan2(y, x) away from the origin and from the branch cut (x < 0, y = 0); hypot away from 0
    Case("arctan2", VEC_VEC + "output y = arctan2(a, b)", {"a": "away0"}),
    Case("arctan2", SCALAR_VEC + "output y = arctan2(b, s)", {"s": "pos"}),
    Case("arctan2", VEC_MAT + "output y = arctan2(B, a)", {"B": "away0"}),
    Case("hypot", VEC_VEC + "output y = hypot(a, b)", {"a": "away0"}),
    Case("hypot", SCALAR_VEC + "output y = hypot(s, b)", {"s": "away0"}),
    Case("hypot", VEC_MAT + "output y = hypot(B, a)", {"a": "away0"}),
    # matmul: all four shape combinations, both operands differentiated, and dot
    Case("matmul", "input A: mat[2, 3]\ninput B: mat[3, 4]\noutput y = A @ B"),
    Case("matmul", "input A: mat[2, 3]\ninput b: vec[3]\noutput y = A @ b"),
    Case("matmul", "input a: vec[2]\ninput B: mat[2, 3]\noutput y = a @ B"),
    Case("matmul", VEC_VEC + "output y = a @ b"),
    Case("matmul", VEC_VEC + "output y = dot(a, b)"),
    Case("matmul", "input A: mat[3, 3]\noutput y = A @ A"),
    Case("matmul", "const K: mat[2, 3] = randn(seed=1)\ninput B: mat[3, 2]\noutput y = K @ B"),
    # norm, away from its kink at 0 (where central differences go wrong)
    Case("norm", "input x: vec[4]\noutput y = norm(x)", ok=lambda at: np.linalg.norm(at["x"]) > 0.2),
    Case("norm", "input x: mat[2, 3]\noutput y = norm(x)", ok=lambda at: np.linalg.norm(at["x"]) > 0.2),
    # norm with ord and axis (NumPy's numpy.linalg.norm), away from 0 (|x| > GAP: the kinks
    # of |x|) and from ties of the max or min
    Case("norm", "input A: mat[2, 3]\noutput y = norm(A, axis=1)", {"A": "away0"}),
    Case("norm", "input A: mat[2, 3]\noutput y = norm(A, axis=0, keepdims=true) * A", {"A": "away0"}),
    Case("norm", "input x: vec[4]\noutput y = norm(x, 1)", {"x": "away0"}),
    Case("norm", "input A: mat[3, 2]\noutput y = norm(A, 1, axis=0)", {"A": "away0"}),
    Case("norm", "input x: vec[4]\noutput y = norm(x, inf)", {"x": "away0"}, ok=lambda at: distinct_abs(at["x"])),
    Case("norm", "input A: mat[2, 3]\noutput y = norm(A, -inf, axis=1)", {"A": "away0"},
         ok=lambda at: distinct_abs(at["A"])),
    Case("norm", "input x: vec[4]\noutput y = norm(x, 3)", {"x": "away0"}),
    Case("norm", "input A: mat[2, 3]\noutput y = norm(A, ord=0.5, axis=-1)", {"A": "away0"}),
    Case("norm", "input A: mat[2, 3]\noutput y = norm(A, 1.5, 0)", {"A": "away0"}),
    Case("norm", "input A: mat[3, 2]\noutput y = norm(A, 'fro')", {"A": "away0"}),
    Case("norm", "input X: tensor[2, 2, 3]\noutput y = norm(X, axis=(0, 2))", {"X": "away0"}),
    Case("norm", "input A: mat[3, 3]\noutput y = norm(A, 1)", {"A": "away0"},
         ok=lambda at: distinct_sums(np.abs(at["A"]).sum(axis=0))),
    Case("norm", "input A: mat[3, 3]\noutput y = norm(A, -1)", {"A": "away0"},
         ok=lambda at: distinct_sums(np.abs(at["A"]).sum(axis=0))),
    Case("norm", "input A: mat[2, 3]\noutput y = norm(A, inf)", {"A": "away0"},
         ok=lambda at: distinct_sums(np.abs(at["A"]).sum(axis=1))),
    Case("norm", "input A: mat[2, 3]\noutput y = norm(A, -inf)", {"A": "away0"},
         ok=lambda at: distinct_sums(np.abs(at["A"]).sum(axis=1))),
    Case("norm", "input X: tensor[2, 3, 2]\noutput y = norm(X, 1, axis=(2, 1), keepdims=true)", {"X": "away0"},
         ok=lambda at: all(distinct_sums(np.abs(m).sum(axis=1)) for m in at["X"])),
    Case("norm", "input X: tensor[2, 3, 2]\noutput y = norm(X, inf, axis=(0, 2))", {"X": "away0"},
         ok=lambda at: all(distinct_sums(np.abs(at["X"][:, j]).sum(axis=1)) for j in range(3))),
    # data movement
    Case("index", "input x: vec[4]\noutput y = x[1]"),
    Case("index", "input x: vec[4]\noutput y = x[-1]"),
    Case("index", "input x: vec[4]\noutput y = x[1:3]"),
    Case("index", "input A: mat[3, 4]\noutput y = A[1, 2]"),
    Case("index", "input A: mat[3, 4]\noutput y = A[1, :]"),
    Case("index", "input A: mat[3, 4]\noutput y = A[:, 2]"),
    Case("index", "input A: mat[3, 4]\noutput y = A[1:3, 0:2]"),
    Case("index", "input x: vec[4]\noutput y = x[0] * x[0] + sin(x[2:])"),
    Case("transpose", "input A: mat[2, 3]\noutput y = A.T"),
    Case("transpose", "input A: mat[2, 3]\ninput B: mat[2, 3]\noutput y = transpose(A) @ B"),
    Case("reshape", "input A: mat[2, 3]\noutput y = reshape(A, 3, 2)"),
    Case("reshape", "input A: mat[2, 3]\noutput y = reshape(A, 6)"),
    Case("reshape", "input x: vec[6]\noutput y = reshape(x, 2, 3)"),
    Case("concat", VEC_VEC + "output y = concat(a, b)"),
    Case("concat", "input a: vec[2]\ninput B: mat[2, 3]\noutput y = concat(B, reshape(a, 1, 2) @ B)"),
    Case("concat", "input x: vec[3]\noutput y = concat(x, x)"),
    Case("stack", SCALAR_VEC + "output y = [s, b[0], s]"),
    Case("stack", VEC_VEC + "output y = stack(a, b)"),
    Case("stack", "input x: vec[3]\noutput y = [x[2], x[0]]"),
    # gathers by integer data: repeated indices add in reverse mode
    Case("gather", "const i: ivec[5] = [2, 0, 2, -1, 2]\ninput x: vec[4]\noutput y = x[i] * x[i]"),
    Case("gather", "input A: mat[3, 2]\noutput y = A[[2, 0, 2], :] * A[:, [1, 1]]"),
    Case("gather", "const F: imat[2, 3] = [[0, 1, 2], [2, 3, 0]]\ninput x: vec[4]\noutput y = sin(x[F])"),
    Case("gather", "const L: imat[3, 1] = [[1], [0], [1]]\ninput A: mat[3, 2]\n"
                   "output y = take_along_axis(A, L, axis=1) * A[[0, 1, 2], [1, 1, 0]]"),
    Case("gather", "const L: imat[1, 2] = [[2, 2]]\ninput A: mat[3, 2]\noutput y = take_along_axis(A, L, axis=0)"),
    Case("scatter_add", "const i: ivec[4] = [1, 0, 1, 1]\ninput v: vec[4]\noutput y = scatter_add(v * v, i, 3)"),
    Case("scatter_add", "const i: ivec[3] = [2, 0, 1]\ninput V: mat[3, 2]\noutput y = scatter_add(V, i, 3)"),
    Case("scatter_add", "const F: imat[2, 2] = [[0, 1], [1, 1]]\ninput V: mat[2, 2]\n"
                        "output y = scatter_add(exp(V), F, 2) + scatter_add(V, [1, 0], 2)[:, 0]"),
    # conditions: masks, sign and heaviside have a zero derivative (away from their jumps);
    # where and clip pass the derivative on to the side they select
    Case("less", VEC_VEC + "output y = a < b", ok=apart("a", "b")),
    Case("less_equal", SCALAR_VEC + "output y = s <= b", ok=apart("s", "b")),
    Case("greater", VEC_MAT + "output y = B > a", ok=apart("B", "a")),
    Case("greater_equal", VEC_VEC + "output y = (a >= b) * a", ok=apart("a", "b")),
    Case("equal", VEC_VEC + "output y = (a == b) + (a == a) * b", ok=apart("a", "b")),
    Case("not_equal", VEC_VEC + "output y = (a != b) * b + (b != b)", ok=apart("a", "b")),
    Case("logical_and", VEC_VEC + "output y = (a > 0 and b < 0) * b", {"a": "away0", "b": "away0"}),
    Case("logical_or", VEC_MAT + "output y = (a > 0 or B > 0) * B", {"a": "away0", "B": "away0"}),
    Case("logical_not", "input x: vec[3]\noutput y = (not x > 0) * x", {"x": "away0"}),
    unary("sign", "away0"), unary("heaviside", "away0"),
    Case("where", "input c: vec[3]\ninput a: vec[3]\ninput b: vec[3]\noutput y = where(c > 0, a, b)",
         {"c": "away0"}),
    Case("where", "input s\ninput a: vec[3]\ninput B: mat[2, 3]\noutput y = where(B, s, a)", {"B": "away0"}),
    Case("clip", "input x: mat[2, 3]\noutput y = clip(x, -0.5, 0.5)",
         ok=lambda at: bool(np.all(np.abs(np.abs(at["x"]) - 0.5) > GAP))),
    Case("clip", "input x: vec[3]\ninput lo: vec[3]\ninput h\noutput y = clip(x, lo, h)",
         ok=lambda at: apart("x", "lo")(at) and apart("x", "h")(at) and apart("lo", "h")(at)),
    # linear algebra, on well-conditioned matrices: entries in [-2, 2] plus 10·I (or an SPD
    # X Xᵀ + 3·I for cholesky), so central differences stay accurate
    Case("trace", "input A: mat[3, 3]\noutput y = trace(A)"),
    Case("trace", "input A: mat[2, 3]\noutput y = trace(A) * A"),
    Case("diag", "input x: vec[3]\noutput y = diag(x)"),
    Case("diag", "input A: mat[2, 3]\noutput y = diag(A)"),
    Case("diag", "input x: vec[2]\ninput A: mat[2, 3]\noutput y = diag(x * x) @ A + diag(diag(A))[0, 1]"),
    Case("tril", "input A: mat[3, 3]\noutput y = tril(A)"),
    Case("tril", "input A: mat[2, 3]\noutput y = tril(A * A, 1) + tril(A, -1)"),
    Case("triu", "input A: mat[3, 3]\noutput y = triu(A)"),
    Case("triu", "input A: mat[3, 2]\noutput y = triu(A * A, -1) + triu(A, 1)"),
    Case("fill_tril", "input v: vec[6]\noutput y = fill_tril(v, 3)"),
    Case("fill_tril", "input v: vec[3]\noutput y = fill_tril(v, 2) @ fill_tril(v, 2).T"),
    Case("solve", "input A: mat[3, 3]\ninput b: vec[3]\noutput y = solve(A + 10 * eye(3), b)"),
    Case("solve", "input A: mat[3, 3]\ninput B: mat[3, 2]\noutput y = solve(A + 10 * eye(3), B * B)"),
    Case("solve", "input A: mat[3, 3]\nconst b: vec[3] = [1, -2, 0.5]\noutput y = solve(A + 10 * eye(3), b)"),
    Case("solve", "const A: mat[3, 3] = randn(seed=1)\ninput B: mat[3, 2]\noutput y = solve(A + 10 * eye(3), B)"),
    Case("inv", "input A: mat[3, 3]\noutput y = inv(A + 10 * eye(3))"),
    Case("inv", "input A: mat[2, 2]\noutput y = inv(A @ A.T + eye(2)) @ A"),
    Case("det", "input A: mat[3, 3]\noutput y = det(A + 10 * eye(3))"),
    Case("det", "input A: mat[2, 2]\noutput y = det(A * A + 5 * eye(2)) * A"),
    Case("logdet", "input A: mat[3, 3]\noutput y = logdet(A + 10 * eye(3))"),
    Case("logdet", "input A: mat[3, 3]\noutput y = logdet(-(A + 10 * eye(3)))"),   # det < 0: log |det|
    Case("triangular_solve", "input L: mat[3, 3]\ninput b: vec[3]\noutput y = triangular_solve(L + 6 * eye(3), b)"),
    Case("triangular_solve", "input U: mat[3, 3]\ninput B: mat[3, 2]\n"
                             "output y = triangular_solve(U + 6 * eye(3), B, lower=false)"),
    Case("triangular_solve", "input L: mat[3, 3]\noutput y = triangular_solve(L + 6 * eye(3), [1, 2, 3])"),
    Case("cholesky", "input X: mat[3, 3]\noutput y = cholesky(X @ X.T + 3 * eye(3))"),
    # not symmetric: cholesky reads the lower triangle, so the upper one has no derivative
    Case("cholesky", "input A: mat[3, 3]\noutput y = cholesky(A + 10 * eye(3))"),
    # einsum: products, a chain (its own contraction order), traces, diagonals, sums, transposes,
    # outer products, implicit outputs, an operand used twice, a scalar operand, a const operand
    Case("einsum", "input A: mat[2, 3]\ninput B: mat[3, 4]\noutput y = einsum(\"ij,jk->ik\", A, B)"),
    Case("einsum", "input A: mat[2, 3]\ninput B: mat[3, 4]\ninput C: mat[4, 2]\ninput x: vec[2]\n"
                   "output y = einsum(\"ij,jk,kl,l->i\", A, B, C, x)"),
    Case("einsum", "input A: mat[3, 3]\noutput y = einsum(\"ii->\", A) * einsum(\"ii->i\", A)"),
    Case("einsum", "input A: mat[3, 3]\ninput B: mat[3, 2]\noutput y = einsum(\"ii,ij->j\", A, B)"),
    Case("einsum", "input A: mat[2, 3]\ninput b: vec[4]\noutput y = einsum(\"ij,k->i\", A, b)"),
    Case("einsum", "input A: mat[2, 3]\ninput b: vec[3]\noutput y = einsum(\"ij,j\", A, b) + einsum(\"ij->\", A)"),
    Case("einsum", "input a: vec[3]\ninput b: vec[2]\noutput y = einsum(\"i,j->ji\", a, b)"),
    Case("einsum", "input A: mat[2, 3]\ninput B: mat[2, 3]\noutput y = einsum(\"ij,ij->ji\", A, B)"),
    Case("einsum", "input x: vec[3]\noutput y = einsum(\"i,i->\", x, x) * einsum(\"i,j,k->ik\", x, x, x)"),
    Case("einsum", "input s\ninput A: mat[2, 3]\nconst M: mat[3, 3] = randn(seed=1)\n"
                   "output y = einsum(\",ij,jk->kj\", s, A, M)"),
]

# tensors of rank 3 and more: broadcasting, @ on stacks (NumPy's batched matmul, its batch axes
# broadcast), indexing every axis, transpose with axes, reshape, expand_dims and squeeze (reshapes),
# reductions over several axes
T3 = "input X: tensor[2, 3, 4]\n"
CASES += [
    Case("add", T3 + "input b: vec[4]\noutput y = X + b"),
    Case("mul", T3 + "input C: mat[3, 1]\noutput y = X * C"),
    Case("sub", T3 + "input Y: tensor[2, 1, 4]\noutput y = X - Y"),
    Case("div", T3 + "input Y: tensor[1, 3, 1]\noutput y = Y / X", {"X": "away0"}),
    Case("sin", T3 + "output y = sin(X) * X"),
    Case("matmul", T3 + "input B: tensor[2, 4, 2]\noutput y = X @ B"),
    Case("matmul", T3 + "input B: mat[4, 2]\noutput y = X @ B"),
    Case("matmul", T3 + "input v: vec[4]\noutput y = X @ v"),
    Case("matmul", T3 + "input u: vec[3]\noutput y = u @ X"),
    Case("matmul", "input A: mat[2, 3]\ninput B: tensor[2, 3, 2]\noutput y = A @ B"),
    Case("matmul", "input A: tensor[2, 1, 2, 3]\ninput B: tensor[3, 3, 2]\noutput y = A @ B"),
    Case("matmul", T3 + "output y = X @ transpose(X, [0, 2, 1])"),
    Case("index", T3 + "output y = X[1]"),
    Case("index", T3 + "output y = X[1, :, 0:2]"),
    Case("index", T3 + "output y = X[:, 2, -1]"),
    Case("gather", T3 + "output y = X[[1, 0, 1]][:, :, 0:2] * X[:, [2, 0], 1:3][0, 0]"),
    Case("transpose", T3 + "output y = transpose(X, [2, 0, 1])"),
    Case("transpose", T3 + "output y = X.T"),
    Case("reshape", T3 + "output y = reshape(X, 4, 2, 3)"),
    Case("reshape", T3 + "output y = expand_dims(X, 1) * squeeze(reshape(X, 2, 1, 3, 4), 1)"),
    Case("stack", "input A: mat[2, 3]\ninput B: mat[2, 3]\noutput y = stack(A, B * B)"),
    Case("concat", T3 + "output y = concat(X, X[0:1] * 2)"),
    Case("einsum", T3 + "input B: tensor[2, 4, 2]\noutput y = einsum(\"bij,bjk->bik\", X, B)"),
]
for _op in ("sum", "mean", "max", "min", "prod", "logsumexp", "softmax", "log_softmax"):
    # (max and min on fewer elements: Hypothesis rarely draws 24 that differ pairwise)
    _ok, _t = (distinct("X"), "input X: tensor[2, 2, 2]\n") if _op in ("max", "min") else (None, T3)
    for _axis in ("", ", axis=1", ", axis=[0, 2]", ", axis=[-1, 0, 1]"):
        CASES.append(Case(_op, f"{_t}output y = {_op}(X{_axis})", ok=_ok))
    if _op not in ("softmax", "log_softmax"):
        CASES.append(Case(_op, f"{_t}output y = X * {_op}(X, axis=[0, 2], keepdims=true)", ok=_ok))

# reductions: over all elements and along each axis (and axis=-1)
for _op in ("sum", "mean", "max", "min", "prod", "logsumexp", "softmax", "log_softmax"):
    _ok = distinct("x") if _op in ("max", "min") else None
    CASES.append(Case(_op, f"input x: vec[4]\noutput y = {_op}(x)", ok=_ok))
    for _axis in ("", ", axis=0", ", axis=1", ", axis=-1"):
        CASES.append(Case(_op, f"input x: mat[2, 3]\noutput y = {_op}(x{_axis})", ok=_ok))

# keepdims: the reduced axes kept as 1, and the result broadcast back against the input
for _op in ("sum", "mean", "max", "min", "prod", "logsumexp"):
    _ok = distinct("x") if _op in ("max", "min") else None
    for _axis in ("", ", axis=0", ", axis=1"):
        CASES.append(Case(_op, f"input x: mat[2, 3]\noutput y = {_op}(x{_axis}, keepdims=true)", ok=_ok))
    CASES.append(Case(_op, f"input x: mat[2, 3]\noutput y = x * {_op}(x, axis=-1, keepdims=true)", ok=_ok))
    CASES.append(Case(_op, f"input x: vec[4]\noutput y = x - {_op}(x, keepdims=true)", ok=_ok))
CASES.append(Case("norm", "input x: mat[2, 3]\noutput y = x / norm(x, keepdims=true)",
                  ok=lambda at: np.linalg.norm(at["x"]) > 0.2))

LEAVES = {"input", "const"}   # not primitives with rules, if ever registered


@lru_cache(maxsize=None)
def compiled(text):
    return adcli.loads(text)


def test_every_primitive_has_a_gradient_check():
    tested = {case.op for case in CASES}
    assert tested == set(REGISTRY) - LEAVES


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_case_uses_its_op(case):
    """Each case really builds the op it is filed under (so the coverage check means something)."""
    assert case.op in {node.op for node in compiled(case.text).graph.nodes}


def draw_inputs(data, program, domains):
    return {name: data.draw(arrays(np.float64, program.input_shape(name),
                                   elements=ELEMENTS[domains.get(name, "any")]), label=name)
            for name in program.input_names}


def assert_close(actual, expected, rtol, atol, what):
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, err_msg=what)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(data=st.data())
def test_jvp_and_vjp_match_finite_differences(case, data):
    program = compiled(case.text)
    at = draw_inputs(data, program, case.domains)
    if case.ok is not None:
        assume(case.ok(at))
    fwd, rev = jacobians(program, at)
    fd = fd_jacobian(program, at)
    assert fwd.jacobian.shape == fd.shape and rev.jacobian.shape == fd.shape
    assert_close(fwd.jacobian, rev.jacobian, 1e-9, 1e-12, "forward vs reverse")
    assert_close(fwd.jacobian, fd, 1e-6, 1e-7, "forward vs finite differences")
    assert_close(rev.jacobian, fd, 1e-6, 1e-7, "reverse vs finite differences")
    for result in (fwd, rev):   # the value comes along, and matches a plain evaluation
        assert_close(flat_outputs(program, result.value), flat_outputs(program, program.evaluate(at)),
                     1e-12, 0, "value")

    # One dense direction and one dense cotangent through the rules.
    v = draw_inputs(data, program, {})
    jv = program.jvp(v, at=at, measure_memory=False)
    v_flat = np.concatenate([v[n].reshape(-1) for n in program.input_names])
    assert_close(flat_outputs(program, jv.tangent), fwd.jacobian @ v_flat, 1e-9, 1e-12, "jvp")
    u = {name: data.draw(arrays(np.float64, program.output_shape(name), elements=ELEMENTS["any"]))
         for name in program.output_names}
    uj = program.vjp(u, at=at, measure_memory=False)
    u_flat = np.concatenate([u[n].reshape(-1) for n in program.output_names])
    got = np.concatenate([uj.cotangent[n].reshape(-1) for n in program.input_names])
    assert_close(got, u_flat @ rev.jacobian, 1e-9, 1e-12, "vjp")


# -- conventions at non-differentiable points (JAX's) -------------------------------------

def both_modes(text, at=None):
    """The Jacobian in both modes (they must agree exactly here), and the jvp/vjp paths."""
    program = adcli.loads(text)
    fwd, rev = jacobians(program, at)
    np.testing.assert_array_equal(fwd.jacobian, rev.jacobian)
    return fwd.jacobian


@pytest.mark.parametrize("text, expected", [
    # relu'(0) = 0
    ("input x: vec[3] = [-1, 0, 2]\noutput y = relu(x)", np.diag([0.0, 0.0, 1.0])),
    # abs'(0) = 0
    ("input x: vec[3] = [-1, 0, 2]\noutput y = abs(x)", np.diag([-1.0, 0.0, 1.0])),
    # ties share the derivative equally
    ("input x: vec[3] = [1, 1, 0]\noutput y = max(x)", [[0.5, 0.5, 0.0]]),
    ("input x: vec[3] = [0, 2, 0]\noutput y = min(x)", [[0.5, 0.0, 0.5]]),
    ("input x: vec[4] = [3, 3, 3, 1]\noutput y = max(x)", [[1 / 3, 1 / 3, 1 / 3, 0.0]]),
    # along an axis: column 0 ties (rows 0, 1), column 1 does not
    ("input A: mat[2, 2] = [[1, 0], [1, 5]]\noutput y = max(A, axis=0)",
     [[0.5, 0.0, 0.5, 0.0], [0.0, 0.0, 0.0, 1.0]]),
    ("input A: mat[2, 2] = [[1, 1], [4, 2]]\noutput y = min(A, axis=1)",
     [[0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]]),
    # maximum(a, b), minimum(a, b): where a = b each side gets ½
    ("input a: vec[2] = [1, 3]\ninput b: vec[2] = [1, 2]\noutput y = maximum(a, b)",
     [[0.5, 0.0, 0.5, 0.0], [0.0, 1.0, 0.0, 0.0]]),
    ("input a: vec[2] = [1, 3]\ninput b: vec[2] = [1, 2]\noutput y = minimum(a, b)",
     [[0.5, 0.0, 0.5, 0.0], [0.0, 0.0, 0.0, 1.0]]),
    # maximum(x, x) = x: the two halves add up to the true derivative 1
    ("input x: vec[2] = [1, -2]\noutput y = maximum(x, x)", np.eye(2)),
    # a scalar against a vector: ½ from each of the two ties, 1 where it wins alone
    ("input s = 1\ninput b: vec[3] = [1, 1, 0]\noutput y = sum(maximum(s, b))", [[2.0, 0.5, 0.5, 0.0]]),
    # norm at 0: gradient 0 (a subgradient), not nan
    ("input x: vec[3] = zeros\noutput y = norm(x)", [[0.0, 0.0, 0.0]]),
    # norm with ord follows abs and max: sign(0) = 0, ties share, 0 where the norm is 0
    ("input x: vec[3] = [-1, 0, 2]\noutput y = norm(x, 1)", [[-1.0, 0.0, 1.0]]),
    ("input x: vec[3] = [2, -2, 1]\noutput y = norm(x, inf)", [[0.5, -0.5, 0.0]]),
    ("input x: vec[3] = [0, -1, 1]\noutput y = norm(x, -inf)", [[0.0, 0.0, 0.0]]),
    ("input x: vec[2] = [0, 2]\noutput y = norm(x, 0.5)", [[0.0, 1.0]]),   # not 0·0^(-1/2) = nan
    ("input x: vec[2] = zeros\noutput y = norm(x, 3)", [[0.0, 0.0]]),
    ("input A: mat[2, 2] = [[0, 0], [3, 4]]\noutput y = norm(A, axis=1)", [[0, 0, 0, 0], [0, 0, 0.6, 0.8]]),
    # columns 0 and 1 tie for the largest Σ|a|: each gets half, sign(0) = 0 in row 1
    ("input A: mat[2, 2] = [[1, -1], [0, 0]]\noutput y = norm(A, 1)", [[0.5, -0.5, 0.0, 0.0]]),
    # rows 0 and 1 tie for the smallest Σ|a| (3 and 3)
    ("input A: mat[2, 2] = [[1, -2], [3, 0]]\noutput y = norm(A, -inf)", [[0.5, -0.5, 0.5, 0.0]]),
    ("input A: mat[2, 2] = [[1, -2], [4, 0]]\noutput y = norm(A, -inf)", [[1.0, -1.0, 0.0, 0.0]]),
    # a ^ b at a = 0: ∂/∂b is 0, not nan; ∂/∂a = b·0^(b-1) = 0 for b = 2
    ("input a = 0.0\ninput b = 2.0\noutput y = a ^ b", [[0.0, 0.0]]),
    # a ^ 0 is the constant 1 (NumPy's 0^0 = 1 included): ∂/∂a = 0 at a = 0 too, not 0·0^-1 = nan
    ("input a = 0.0\ninput b = 0.0\noutput y = a ^ b", [[0.0, 0.0]]),
    ("input x: vec[2] = [0, 2]\noutput y = x ^ 0", np.zeros((2, 2))),
    # a ^ 1 at a = 0: ∂/∂a = 1·0^0 = 1
    ("input a = 0.0\ninput b = 1.0\noutput y = a ^ b", [[1.0, 0.0]]),
    # prod with a zero factor: exact products of the others, not out / x
    ("input x: vec[3] = [2, 0, 3]\noutput y = prod(x)", [[0.0, 6.0, 0.0]]),
    ("input x: vec[3] = [2, 0, 0]\noutput y = prod(x)", [[0.0, 0.0, 0.0]]),
])
def test_conventions_at_kinks_and_ties(text, expected):
    assert both_modes(text) == pytest.approx(np.asarray(expected, dtype=float), abs=1e-15)


def test_conventions_hold_for_jvp_and_vjp():
    program = adcli.loads("input x: vec[4] = [1, 1, 0, 0]\noutput y = max(x) + sum(relu(x - 1))")
    # d max = [½, ½, 0, 0]; relu(x - 1) sits at its kink for x = 1: derivative 0
    v = np.array([1.0, 2.0, 3.0, 4.0])
    assert program.jvp({"x": v}, measure_memory=False).tangent["y"] == pytest.approx(1.5)
    assert program.vjp({"y": 2.0}, measure_memory=False).cotangent["x"] == pytest.approx([1, 1, 0, 0])
