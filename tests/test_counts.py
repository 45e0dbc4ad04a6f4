"""Exact cost counts: the chain formulas, passes and sweeps, hand-worked
examples, and static prediction = what a real run counts.

The formulas and reference numbers come from ../shared/docs/background.md and
docs/counting.md; every other expected figure is worked out by hand in a
comment next to it.
"""
from math import ceil

import numpy as np
import pytest

import adcli

from conftest import SAMPLE, SAMPLES, jacobians
from test_ops import CASES

MODES = ("forward", "reverse")


def run(program, mode, **kwargs):
    return program.jacobian(mode=mode, measure_memory=False, **kwargs)


def chain_program(x, a, b, y):
    return adcli.loads(f"""\
dim nx = {x}
dim na = {a}
dim nb = {b}
dim ny = {y}
input x: vec[nx] = randn(seed=4)
const A: mat[na, nx] = randn(seed=1)
const B: mat[nb, na] = randn(seed=2)
const C: mat[ny, nb] = randn(seed=3)
a = A @ x
b = B @ a
output y = C @ b
""")


# -- the chain y = C·(B·(A·x)) ---------------------------------------------------------------

@pytest.mark.parametrize("x, a, b, y", [
    (3, 4, 5, 2), (1, 1, 1, 1), (10, 2, 7, 3), (2, 9, 3, 8), (6, 6, 6, 6), (1, 5, 4, 12),
])
def test_chain_derivative_mults(x, a, b, y):
    program = chain_program(x, a, b, y)
    fwd, rev = jacobians(program)
    assert fwd.cost.mults_derivative == x * b * (a + y)
    assert rev.cost.mults_derivative == y * a * (b + x)
    assert (fwd.cost.passes, rev.cost.passes) == (x, y)
    # the primal is three matrix-vector products either way
    assert fwd.cost.mults_primal == rev.cost.mults_primal == a * x + b * a + y * b
    # a linear chain keeps no intermediate values; reverse reads C, B and A
    assert fwd.cost.cached_values == rev.cost.cached_values == 0
    assert fwd.cost.cached_inputs == 0
    assert rev.cost.cached_inputs == a * x + b * a + y * b


def test_chain_sample_reference_numbers():
    """docs/counting.md: samples/chain.ad (3, 4, 5, 2) costs 90 forward, 64 reverse."""
    program = adcli.load(SAMPLE["chain.ad"])
    fwd, rev = jacobians(program)
    assert (fwd.cost.mults_derivative, rev.cost.mults_derivative) == (90, 64)


@pytest.mark.parametrize("chunk", [1, 2, 3, 10])
def test_chain_chunk_changes_sweeps_only(chunk):
    program = chain_program(10, 2, 7, 3)
    for mode, passes in (("forward", 10), ("reverse", 3)):
        whole, chunked = run(program, mode), run(program, mode, chunk=chunk)
        assert chunked.cost.passes == whole.cost.passes == passes
        assert chunked.cost.sweeps == ceil(passes / chunk)
        assert chunked.cost.mults_derivative == whole.cost.mults_derivative


# -- passes and sweeps: f: R^100 → R^10 --------------------------------------------------------

WIDE = """\
dim n = 100
dim m = 10
input x: vec[n] = randn(seed=1)
const A: mat[m, n] = randn(seed=2)
output y = sin(A @ x)
"""


@pytest.fixture(scope="module")
def wide():
    return adcli.loads(WIDE)


@pytest.mark.parametrize("chunk", [None, 1, 3, 7, 10, 64, 100])
def test_passes_sweeps_and_primal_sweeps(wide, chunk):
    fwd, rev = run(wide, "forward", chunk=chunk), run(wide, "reverse", chunk=chunk)
    assert (fwd.cost.passes, rev.cost.passes) == (100, 10)
    fwd_chunk = 100 if chunk is None else chunk
    rev_chunk = 10 if chunk is None else min(chunk, 10)
    assert fwd.cost.sweeps == ceil(100 / fwd_chunk)
    assert rev.cost.sweeps == ceil(10 / rev_chunk)
    assert (fwd.cost.chunk, rev.cost.chunk) == (fwd_chunk, rev_chunk)
    # forward mode keeps nothing, so each sweep evaluates f again; reverse runs f once
    assert fwd.cost.primal_sweeps == fwd.cost.sweeps
    assert rev.cost.primal_sweeps == 1
    assert fwd.cost.mults_primal == fwd.cost.sweeps * 10 * 100
    assert rev.cost.mults_primal == 10 * 100
    assert fwd.cost.cached_values == 0 and fwd.cost.cached_inputs == 0
    # forward: A·ẋ on a Seed is free, cos(a)·ȧ is 100 directions × 10 = 1,000, whatever
    # the chunk (sin's partial cos costs no mults);
    # reverse: cos(a)·ȳ on a Seed is free. With all 10 directions in one sweep ȳ is the
    # whole identity and cos(a)·ȳ a scaled Seed: Aᵀ·ā scales A's 10 rows, 10 × 100 =
    # 1,000. A chunk of fewer leaves elements of ȳ without a direction: cos(a)·ȳ is
    # placed dense and Aᵀ·ā is a product, 10 directions × 100 × 10 = 10,000 in all.
    assert fwd.cost.mults_derivative == 1_000
    assert rev.cost.mults_derivative == (1_000 if rev_chunk == 10 else 10_000)
    # and the Jacobian itself does not change either
    assert fwd.jacobian == pytest.approx(rev.jacobian, rel=1e-12, abs=1e-14)


@pytest.mark.parametrize("chunk", [1, 4, 25, 100])
def test_forward_recomputes_partials_each_sweep(chunk):
    """tanh's partial 1 − h² (1 mult per element) is computed once per forward sweep,
    so unlike propagation its mults grow with the sweeps; reverse computes it once."""
    program = adcli.loads(WIDE.replace("sin(", "tanh("))
    fwd, rev = run(program, "forward", chunk=chunk), run(program, "reverse", chunk=chunk)
    sweeps = ceil(100 / chunk)
    # forward: 10 partial mults per sweep + 100 directions × 10 (the scale)
    assert fwd.cost.mults_derivative == 10 * sweeps + 100 * 10
    # reverse: 10 partial mults once + Aᵀ·ā; the scale hits a Seed: with all 10 directions
    # in one sweep a scaled Seed, and Aᵀ·ā scales A's 10 rows (10 × 100); in chunks of
    # fewer a dense placement, and Aᵀ·ā is 10 directions × 100 × 10
    assert rev.cost.mults_derivative == 10 + (10 * 100 if chunk >= 10 else 10 * 100 * 10)


# -- the seed example (docs/counting.md, worked example) -------------------------------------------

def test_seed_example_counts():
    program = adcli.load(SAMPLE["seed_example.ad"])
    fwd, rev = jacobians(program)
    for result in (fwd, rev):
        # primal: x1·x2 (1 mult, 1 flop), sin (1 flop), + (1 flop)
        assert (result.cost.mults_primal, result.cost.flops_primal) == (1, 3)
        # derivative: cos x1 (1 flop); every scale hits a Seed; one add of two
        # contributions of 1 element in 1 direction (1 flop)
        assert (result.cost.mults_derivative, result.cost.flops_derivative) == (0, 2)
    assert (fwd.cost.passes, rev.cost.passes) == (2, 1)
    # reverse keeps cos x1 and reads x1, x2 (held by the caller anyway)
    assert (rev.cost.cached_values, rev.cost.cached_inputs) == (1, 2)
    assert (fwd.cost.cached_values, fwd.cost.cached_inputs) == (0, 0)


# -- hand-worked counts ------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [1, 6, 50])
def test_elementwise_sin_costs_only_its_partial(n):
    program = adcli.loads(f"dim n = {n}\ninput x: vec[n] = randn(seed=1)\noutput y = sin(x)")
    fwd, rev = jacobians(program)
    for result in (fwd, rev):
        # n directions (forward: the n inputs; reverse: the n outputs); the partial
        # cos x is n flops, 0 mults; cos(x)·Seed only selects entries of the diagonal: free
        assert result.cost.passes == n and result.cost.sweeps == 1
        assert (result.cost.mults_derivative, result.cost.flops_derivative) == (0, n)
        assert (result.cost.mults_primal, result.cost.flops_primal) == (0, n)
    # reverse keeps the n partials, and needs no input
    assert (rev.cost.cached_values, rev.cost.cached_inputs) == (n, 0)


def test_sin_with_one_direction_per_sweep():
    """With chunk 1 every forward sweep recomputes sin and its partial: n sweeps × n flops each."""
    n = 6
    program = adcli.loads(f"dim n = {n}\ninput x: vec[n] = randn(seed=1)\noutput y = sin(x)")
    cost = run(program, "forward", chunk=1).cost
    assert (cost.sweeps, cost.primal_sweeps) == (n, n)
    assert (cost.mults_derivative, cost.flops_derivative, cost.flops_primal) == (0, n * n, n * n)


MLP = """\
dim n = {n}
dim h = {h}
dim batch = {batch}
const X: mat[batch, n] = randn(seed=1)
input W: mat[n, h] = 0.1 * randn(seed=2)
input v: vec[h] = randn(seed=3)
z = X @ W
a = tanh(z)
p = a @ v
output loss = sum(p * p)
"""


@pytest.mark.parametrize("n, h, batch", [(5, 4, 3), (20, 16, 8), (1, 7, 2)])
def test_mlp_reverse_counts_by_hand(n, h, batch):
    program = adcli.loads(MLP.format(n=n, h=h, batch=batch))
    cost = run(program, "reverse").cost
    # One output: one pass. Backward, the loss's cotangent is a Seed:
    #   sum:        expanding it to batch elements is a copy (dense from here on)  0
    #   p * p:      p̄ = p·q̄ + p·q̄: two scales of batch elements                   2·batch
    #   a @ v:      ā = p̄ ⊗ v (outer product)                                      batch·h
    #               v̄ = aᵀ·p̄ (contraction over the batch)                           batch·h
    #   tanh:       z̄ = (1 − a²)·ā                                                  batch·h
    #   X @ W:      W̄ = Xᵀ·z̄ (X is a const: no X̄)                                   batch·n·h
    # plus tanh's partial 1 − a², computed once (from a, in the backward sweep)  batch·h
    assert cost.mults_derivative == 2 * batch + 4 * batch * h + batch * n * h
    assert (cost.passes, cost.sweeps, cost.primal_sweeps) == (1, 1, 1)
    # kept: a (batch·h), for v̄ and to remake tanh's partial from, as hand-written
    # backprop does; p for the square (batch);
    # read from the caller: X for W̄ (batch·n) and v for ā (h)
    assert cost.cached_values == batch * h + batch
    assert cost.cached_inputs == batch * n + h
    # primal: X@W (batch·n·h), a@v (batch·h), p*p (batch)
    assert cost.mults_primal == batch * n * h + batch * h + batch


def test_mlp_forward_counts_by_hand():
    n, h, batch = 5, 4, 3
    program = adcli.loads(MLP.format(n=n, h=h, batch=batch))
    cost = run(program, "forward").cost
    # One sweep of 24 directions: block W (k = 20) and block v (k = 4).
    #   partial 1 − a² once:                                 batch·h            = 12
    #   block W: X·Ẇ on a Seed is free; (1 − a²)·ż waits as a scaled dense ż, then made
    #            dense for the product with v:                 20·batch·h         = 240
    #            ȧ·v:                                         20·batch·h         = 240
    #            ṗ·p + p·ṗ: two scalings of one ṗ, kept as scales and added (batch
    #            flops, no mults), made dense once for the sum: 20·batch           = 60
    #   block v: a·v̇ on a Seed is free; ṗ·p + p·ṗ as above:   4·batch            = 12
    assert cost.mults_derivative == 12 + 240 + 240 + 60 + 12
    assert (cost.passes, cost.sweeps, cost.cached_values) == (n * h + h, 1, 0)


@pytest.mark.parametrize("n", [2, 3, 8])
def test_tanh_layer_residuals(n):
    program = adcli.loads(f"dim n = {n}\nconst W: mat[n, n] = randn(seed=1)\n"
                          f"input x: vec[n] = randn(seed=2)\nh = tanh(W @ x)\noutput s = sum(h)")
    fwd, rev = jacobians(program)
    # reverse keeps tanh's partial 1 − h² (n values) and reads W (n² const scalars)
    assert (rev.cost.cached_values, rev.cost.cached_inputs) == (n, n * n)
    # reverse: partial n, (1 − h²)·h̄ n (h̄ is a dense broadcast of the Seed), Wᵀ·z̄ n²
    assert rev.cost.mults_derivative == n * n + 2 * n
    # forward, n directions: W·ẋ on a Seed is free, partial n, (1 − h²)·ż n·n
    assert fwd.cost.mults_derivative == n * n + n
    assert fwd.cost.cached_values == 0


def test_tanh_layer_of_one_element():
    """With n = 1 the sum is an identity: s̄ expanded to vec[1] stays a Seed, so
    (1 − h²)·h̄ is free: only the partial (1) and Wᵀ·z̄ (1) are counted."""
    program = adcli.loads("const W: mat[1, 1] = [[2]]\ninput x: vec[1] = [0.5]\n"
                          "output s = sum(tanh(W @ x))")
    assert run(program, "reverse").cost.mults_derivative == 2


def test_deep_sample_cached_values_grow_with_depth():
    """samples/deep.ad: each of the depth layers keeps tanh's partial (n values);
    the first W @ x reads only W, later ones read W and nothing kept (W is a const)."""
    path = SAMPLE["deep.ad"]
    for depth in (1, 4, 16):
        program = adcli.load(path, set={"depth": depth, "n": 8})
        rev = run(program, "reverse")
        assert rev.cost.cached_values == depth * 8
        assert rev.cost.cached_inputs == 64
        assert run(program, "forward").cost.cached_values == 0


def test_inputs_outside_wrt_cost_nothing():
    """y = A·x + B·z with wrt = x: z gets no tangent, so B·ż is never formed."""
    program = adcli.loads("dim n = 4\ndim m = 3\ninput x: vec[n] = ones\ninput z: vec[n] = ones\n"
                          "const A: mat[m, n] = randn(seed=1)\nconst B: mat[m, n] = randn(seed=2)\n"
                          "output y = sin(A @ x + B @ z)")
    fwd = run(program, "forward", wrt=["x"])
    rev = run(program, "reverse", wrt=["x"])
    # forward: A·ẋ free (Seed), the add passes the one tangent on, cos·ṫ: n·m = 12
    assert (fwd.cost.passes, fwd.cost.mults_derivative) == (4, 12)
    # reverse: cos·ȳ free (a scaled Seed), the add passes it on to A@x only: Aᵀ·ū scales
    # A's m rows, m·n = 12 (a dense ū would cost m·m·n = 36)
    assert (rev.cost.passes, rev.cost.mults_derivative) == (3, 12)
    assert rev.cost.cached_inputs == 12   # A, and not B


# -- static prediction equals the counted run ---------------------------------------------------

def sample_wrt_subsets():
    cases = []
    for path in SAMPLES:
        names = adcli.load(path).input_names
        cases.append((path, None))
        if len(names) > 1:
            cases.append((path, [names[-1]]))
            cases.append((path, names[:2] if len(names) > 2 else [names[0]]))
    return cases


@pytest.mark.parametrize("path, wrt", sample_wrt_subsets(),
                         ids=lambda v: v.name if hasattr(v, "name") else str(v))
@pytest.mark.parametrize("mode", MODES)
def test_prediction_equals_count(path, wrt, mode):
    program = adcli.load(path)
    for chunk in (None, 1, 2, 3, 7, 16):
        predicted = program.predict(mode, wrt=wrt, chunk=chunk).counts()
        counted = run(program, mode, wrt=wrt, chunk=chunk).cost.counts()
        assert predicted == counted, f"chunk={chunk}"
        assert counted["sweeps"] == ceil(counted["passes"] / counted["chunk"])


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_prediction_equals_count_on_every_op(case):
    """The op cases of test_ops (every primitive, every shape combination), at a
    point inside every op's domain."""
    program = adcli.loads(case.text)
    at = {name: np.full(program.input_shape(name), 1.7 if case.domains.get(name) == "acosh" else 0.7)
          for name in program.input_names}
    for mode in MODES:
        for chunk in (None, 1, 2):
            predicted = program.predict(mode, chunk=chunk).counts()
            counted = run(program, mode, at=at, chunk=chunk).cost.counts()
            assert predicted == counted, f"{mode}, chunk={chunk}"


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_prediction_equals_count_for_jvp_and_vjp(path):
    program = adcli.load(path)
    first_input, first_output = program.input_names[0], program.output_names[0]
    jvp = program.jvp({first_input: 1.0}, measure_memory=False)
    assert jvp.cost.counts() == program.predict("forward", wrt=[first_input], single=True).counts()
    vjp = program.vjp({first_output: 1.0}, measure_memory=False)
    assert vjp.cost.counts() == program.predict("reverse", outputs=[first_output], single=True).counts()


# -- the op table of docs/counting.md, on dense tangents and cotangents ----------------------------
# Each op sits between two products with a const matrix (C·x before, D·v after): a
# product with a Seed only selects entries (free) and is dense, so the op sees dense
# tangents in forward mode and dense cotangents in reverse mode (a Seed would make its
# propagation free, a scaled Seed one mult per element). The other product is a
# matmul on dense derivatives: with k = s directions, k·s·s mults and 2·k·s·s flops.
# (A scale by a const vector would make a scaled Seed: see test_scaled_seeds_*.)

UNARY_PARTIALS = {   # docs/counting.md: local partial (mults, flops) per element
    "sin": (0, 1), "cos": (0, 2), "tan": (1, 2), "exp": (0, 0), "log": (1, 1), "log1p": (1, 2),
    "sqrt": (1, 1), "tanh": (1, 2), "sigmoid": (1, 2), "relu": (0, 1), "abs": (0, 1),
    "square": (1, 1), "arcsin": (2, 4), "arccos": (2, 4), "arctan": (2, 3), "sinh": (0, 1),
    "cosh": (0, 1), "arcsinh": (2, 4), "arccosh": (2, 4), "arctanh": (2, 3), "expm1": (0, 1),
    "log2": (1, 1), "log10": (1, 1), "softplus": (0, 3), "erf": (2, 4), "erfc": (2, 4),
    "gammaln": (0, 1), "digamma": (0, 1),
}


@pytest.mark.parametrize("op", sorted(UNARY_PARTIALS) + ["neg"])
def test_unary_op_table(op):
    s = 4
    inside = "u - 0.3" if op in ("arcsin", "arccos", "arctanh") else "u + 1"   # in the op's domain
    body = "-u" if op == "neg" else f"{op}({inside})"   # ± a const: no derivative work
    program = adcli.loads(f"dim s = {s}\ninput x: vec[s] = rand(seed=1)\n"
                          f"const C: mat[s, s] = 0.5 * rand(seed=2)\n"
                          f"u = C @ x\nv = {body}\noutput y = C @ v")
    pm, pf = UNARY_PARTIALS.get(op, (0, 0))
    for result in jacobians(program):
        # k = s directions either way. Forward: C·ẋ is free (a Seed), the op's
        # propagation is k·s, C·v̇ is k·s·s. Reverse: Cᵀ·ȳ is free, the op's k·s, Cᵀ·ū
        # k·s·s. Partials: s elements once (one forward sweep). neg propagates with flops only.
        op_mults = 0 if op == "neg" else s * s
        assert result.cost.mults_derivative == pm * s + op_mults + s ** 3
        assert result.cost.flops_derivative == pf * s + s * s + 2 * s ** 3
        # two matmuls of s·s (2·s·s flops each), the op, ± the const (not for neg)
        assert result.cost.mults_primal == 2 * s * s + s * (op == "square")
        assert result.cost.flops_primal == 4 * s * s + s * (1 + (op != "neg"))


@pytest.mark.parametrize("expr, partial_mults, propagates", [
    ("u + w", 0, False), ("u - w", 0, False), ("u * w", 0, True),
    ("u / w", 1, True),            # ∂/∂w = −out/w: 1 mult per element; ∂/∂u is a division
    ("u ^ w", 2, True),            # b·a^(b−1) and out·log a: 1 mult each
    ("maximum(u, w)", 0, True), ("minimum(u, w)", 0, True),
    ("arctan2(u, w)", 6, True),    # w/(u²+w²) and −u/(u²+w²): 3 mults each
    ("hypot(u, w)", 2, True),      # u/out and w/out: 1 mult each
])
def test_binary_op_table(expr, partial_mults, propagates):
    s = 3
    program = adcli.loads(f"dim s = {s}\ninput a: vec[s] = rand(seed=1)\ninput b: vec[s] = rand(seed=2)\n"
                          f"const C: mat[s, s] = 0.5 * rand(seed=3)\nu = C @ a + 1\nw = C @ b + 2\n"
                          f"v = {expr}\noutput y = C @ v")
    for result in jacobians(program):
        # Forward: blocks a and b, s directions each; reverse: s directions.
        # Either way each side of the op propagates s directions × s elements (k·s
        # mults per side, none for + and −), and the two const products around it on
        # dense derivatives cost 2·s·s·s (forward: C·v̇ in both blocks; reverse: Cᵀ·ū
        # and Cᵀ·w̄; the products with Seeds are free). Partials: once.
        side = s * s if propagates else 0
        assert result.cost.mults_derivative == partial_mults * s + 2 * side + 2 * s ** 3


REDUCTION_PARTIAL_MULTS = {"sum": 0, "mean": 0, "max": 1, "min": 1, "prod": 3, "logsumexp": 0,
                           "softmax": 0, "log_softmax": 0, "norm": 1}


@pytest.mark.parametrize("op, axis", [(op, axis) for op in sorted(REDUCTION_PARTIAL_MULTS)
                                       for axis in ((None,) if op == "norm" else (None, 0, 1))])
def test_reduction_op_table(op, axis):
    n = 6                                           # x: mat[2, 3]
    s = n if op in ("softmax", "log_softmax") else {None: 1, 0: 3, 1: 2}[axis]
    out_type = {1: "scalar", 2: "vec[2]", 3: "vec[3]", 6: "mat[2, 3]"}[s]
    call = f"{op}(u)" if axis is None else f"{op}(u, axis={axis})"
    # C·x before and D·v after (d·v for a scalar v: one element, one direction in reverse
    # mode, where a scaled Seed costs what a dense cotangent does)
    rows = {1: 1, 2: 2, 3: 3, 6: 2}[s]
    after = "d * v" if s == 1 else "D @ v"
    program = adcli.loads(f"input x: mat[2, 3] = rand(seed=1)\nconst C: mat[2, 2] = 0.5 * rand(seed=2)\n"
                          f"const d = 2\nconst D: mat[{rows}, {rows}] = rand(seed=3)\n"
                          f"u = C @ x + 1\nv = {call}\noutput y = {after}")
    # D·v̇ per direction: rows·rows·(columns of v) mults (1 for d·v)
    after_mults = rows * s

    def propagation(k):
        # docs/counting.md: sum none; mean k·s (the ÷count); softmax two scales of
        # k·n (s·t and s·Σ); max, min, prod, logsumexp, norm, log_softmax one weighting of k·n
        return {"sum": 0, "mean": k * s, "softmax": 2 * k * n}.get(op, k * n)

    fwd, rev = jacobians(program)
    partials = REDUCTION_PARTIAL_MULTS[op] * n      # per input element, once
    # forward: k = n directions; C·ẋ is free (a Seed), D·v̇ is n·rows·s
    assert fwd.cost.mults_derivative == partials + propagation(n) + n * after_mults
    # reverse: k = s directions; D·ȳ is free, Cᵀ·ū is s·(2·2·3)
    assert rev.cost.mults_derivative == partials + propagation(s) + s * 2 * n


# norm(x, ord, axis) of x: mat[2, 3] (n = 6), by hand from docs/counting.md: (primal mults,
# primal flops), the partial's (mults, flops), and s, the result's elements.
NORM_TABLE = {
    "norm(x)": ((6, 2 * 6 + 1), (6, 6), 1),                        # x², Σ, √; x/‖x‖
    "norm(x, 'fro')": ((6, 2 * 6 + 1), (6, 6), 1),
    "norm(x, axis=1)": ((6, 2 * 6 + 2), (6, 6), 2),                # a √ per row
    "norm(x, 1, axis=0)": ((0, 2 * 6), (0, 6), 3),                 # |x|, Σ; sign x
    "norm(x, inf, axis=1)": ((0, 2 * 6), (2 * 6, 6 * 6), 2),       # |x|, max; sign x · share of ties
    "norm(x, -inf, axis=(1,))": ((0, 2 * 6), (2 * 6, 6 * 6), 2),
    "norm(x, 3, axis=1)": ((0, 3 * 6 + 2), (2 * 6, 7 * 6), 2),     # |x|, ^3, Σ, ^(1/3); sign·(|x|/out)²
    "norm(x, 1)": ((0, 2 * 6 + 3), (6 + 3, 3 * 6 + 3 * 3), 1),     # 3 column sums, their max
    "norm(x, -inf)": ((0, 2 * 6 + 2), (6 + 2, 3 * 6 + 3 * 2), 1),  # 2 row sums, their min
    "norm(x, inf, axis=(1, 0))": ((0, 2 * 6 + 3), (6 + 3, 3 * 6 + 3 * 3), 1),   # rows are axis 1
}


@pytest.mark.parametrize("call", sorted(NORM_TABLE))
def test_norm_op_table(call):
    (mults, flops), (p_mults, p_flops), s = NORM_TABLE[call]
    n = 6
    program = adcli.loads(f"input x: mat[2, 3] = rand(seed=1)\noutput y = {call}")
    fwd, rev = jacobians(program)
    for result in (fwd, rev):
        assert (result.cost.mults_primal, result.cost.flops_primal) == (mults, flops)
    # reverse, s directions: the partial once, then p·(ct broadcast back), k·n mults and flops
    assert (rev.cost.mults_derivative, rev.cost.flops_derivative) == (p_mults + s * n, p_flops + s * n)
    # forward, n directions: the partial once; p times the identity Seed is free (it picks
    # entries), then the sum over the reduced axes, k·n flops
    assert (fwd.cost.mults_derivative, fwd.cost.flops_derivative) == (p_mults, p_flops + n * n)


@pytest.mark.parametrize("a_type, b_type", [
    ("mat[2, 3]", "mat[3, 4]"), ("mat[2, 3]", "vec[3]"), ("vec[3]", "mat[3, 4]"), ("vec[3]", "vec[3]"),
    # @ on stacks: a batch of b products, b·m·k·n mults, the batch broadcast as NumPy's matmul does
    ("tensor[2, 2, 3]", "tensor[2, 3, 4]"), ("tensor[2, 2, 3]", "mat[3, 4]"), ("mat[2, 3]", "tensor[2, 3, 4]"),
    ("tensor[2, 2, 3]", "vec[3]"), ("vec[3]", "tensor[2, 3, 4]"), ("tensor[2, 1, 2, 3]", "tensor[3, 3, 4]"),
])
def test_matmul_op_table(a_type, b_type):
    program = adcli.loads(f"input A: {a_type} = rand(seed=1)\ninput B: {b_type} = rand(seed=2)\n"
                          f"const cA: {a_type} = full(0.5)\nconst cB: {b_type} = full(0.5)\n"
                          f"v = (cA * A) @ (cB * B)\noutput y = 2 * v")
    size_a, size_b = (int(np.prod(program.input_shape(n))) for n in ("A", "B"))
    size_v = int(np.prod(program.output_shape("y")))
    inner = 3                               # the contraction length in every combination
    fwd, rev = jacobians(program)
    # On dense derivatives a matmul costs |v|·inner mults per direction per side (a·b·c
    # for mat @ mat). Here cA·Ȧ, cB·Ḃ (forward) and 2·ȳ (reverse) scale Seeds: free, and
    # scaled Seeds. A product with a scaled Seed scales each selected element's row or
    # column of the other operand: one mult per element of the Seed's node per entry it
    # meets, |v|·inner in all (the primal product's own count), whatever the directions.
    # On stacks the product is an einsum, which takes the scaled Seed dense (k·|v|·inner),
    # and so is an outer product (the reverse rule of a side whose other operand is a vec).
    stacked = len(program.input_shape("A")) > 2 or len(program.input_shape("B")) > 2
    a_vec, b_vec = len(program.input_shape("A")) == 1, len(program.input_shape("B")) == 1
    # forward: block A (|A| directions) through side 0, block B through side 1, then 2·v̇
    # (dense) in both blocks
    fwd_sides = (size_a + size_b) * size_v * inner if stacked else 2 * size_v * inner
    assert fwd.cost.mults_derivative == fwd_sides + (size_a + size_b) * size_v
    # reverse: |v| directions through both sides, then cA·Ā and cB·B̄ (dense)
    side_a = size_v * size_v * inner if stacked or b_vec else size_v * inner
    side_b = size_v * size_v * inner if stacked or a_vec else size_v * inner
    assert rev.cost.mults_derivative == side_a + side_b + size_v * (size_a + size_b)


@pytest.mark.parametrize("wrt", [["a"], ["b"]])
def test_partials_only_for_inputs_that_carry_derivatives(wrt):
    """u ^ w has a partial per side (1 mult per element each); with one side in
    --wrt, only that side's partial is computed, in either mode."""
    s = 3
    program = adcli.loads(f"dim s = {s}\ninput a: vec[s] = rand(seed=1)\ninput b: vec[s] = rand(seed=2)\n"
                          f"const C: mat[s, s] = 0.5 * rand(seed=3)\nu = C @ a + 1\nw = C @ b + 2\n"
                          f"output y = C @ (u ^ w)")
    for mode in MODES:
        # one partial (s), one side of the pow (s directions × s), one const product on
        # dense derivatives (s directions × s × s; the other one is with a Seed: free)
        assert run(program, mode, wrt=wrt).cost.mults_derivative == s + s * s + s ** 3
    # forward, one direction per sweep: each of the 2s sweeps computes the partial of
    # the one side whose block it carries (s mults), then s for the pow and s·s for C·v̇
    cost = run(program, "forward", chunk=1).cost
    assert cost.sweeps == 2 * s
    assert cost.mults_derivative == 2 * s * (2 * s + s * s)
    # chunk 2 splits 6 directions as (a, a), (a, b), (b, b): the middle sweep computes
    # both partials, so 4 partials of s, plus 6 directions × (s + s·s)
    assert run(program, "forward", chunk=2).cost.mults_derivative == 4 * s + 6 * (s + s * s)


def test_seed_survives_a_broadcast_that_only_adds_unit_axes():
    """vec[3] + mat[1, 3] is a mat[1, 3] with the same 3 elements: x's Seed is just
    reshaped, so sin's cos(y)·ẏ still only selects entries (free)."""
    program = adcli.loads("input x: vec[3] = [0.1, 0.2, 0.3]\nconst B: mat[1, 3] = [[1, 2, 3]]\n"
                          "output y = sin(x + B)")
    for result in jacobians(program):
        assert result.cost.mults_derivative == 0
    # a real broadcast (to two rows) makes the tangent dense: cos(y)·ẏ is 3 directions × 6
    program = adcli.loads("input x: vec[3] = [0.1, 0.2, 0.3]\nconst B: mat[2, 3] = randn(seed=1)\n"
                          "output y = sin(x + B)")
    assert run(program, "forward").cost.mults_derivative == 3 * 6


# -- linear algebra (docs/counting.md, "Linear algebra") ------------------------------------------
# The textbook figures, written out here for n = 3 by hand (2×2 where noted), not from adcli.ops.

LU3 = (8, 13)          # LU of 3×3: (n³ − n)/3 = 8 mults; (4n³ − 3n² − n)/6 = 13 flops
INV3 = (8 + 27, 13 + 3 * 15)   # an LU and 3 LU solves of n² = 9 mults, 2n² − n = 15 flops
TRI_INV3 = (18, 27)    # 3 triangular solves of n(n + 1)/2 = 6 mults, n² = 9 flops
CHOL3 = (7, 14)        # (n³ + 3n² − 4n)/6 = 7 mults; n(n + 1)(2n + 1)/6 = 14 flops


@pytest.mark.parametrize("expr, rhs, mults, flops", [
    ("solve(A, b)", "vec[3]", LU3[0] + 9, LU3[1] + 15),
    ("solve(A, b)", "mat[3, 2]", LU3[0] + 2 * 9, LU3[1] + 2 * 15),
    ("inv(A)", None, *INV3),
    ("det(A)", None, LU3[0] + 2, LU3[1] + 2),           # and the diagonal's product: n − 1
    ("logdet(A)", None, LU3[0], LU3[1] + 5),            # n logs and n − 1 sums
    ("cholesky(A)", None, *CHOL3),
    ("triangular_solve(A, b)", "vec[3]", 6, 9),
    ("triangular_solve(A, b, lower=false)", "mat[3, 2]", 12, 18),
    ("trace(A)", None, 0, 3),
    ("diag(A) + tril(A)[0, :] + triu(A, 1)[:, 0] + fill_tril(b, 2)[1, 0]", "vec[3]", 0, 9),   # the three +
])
def test_linear_algebra_primal_counts(expr, rhs, mults, flops):
    extra = f"input b: {rhs} = ones\n" if rhs else ""
    program = adcli.loads(f"input A: mat[3, 3] = [[4, 1, 0], [1, 5, 1], [0, 1, 6]]\n{extra}output y = {expr}")
    cost = program.predict("forward")
    assert (cost.mults_primal, cost.flops_primal) == (mults, flops)
    assert run(program, "forward").cost.counts() == cost.counts()


def _dense(op_text, rhs=None, scalar=False):
    """The op between products with const matrices (a product with a Seed selects: free,
    and dense), so that it sees dense tangents and cotangents; a scalar result is scaled
    (one element: its scaled Seed costs what a dense cotangent does)."""
    extra = f"input b: {rhs} = rand(seed=2)\nconst Cb: mat[n, n] = 0.5 * rand(seed=4)\n" if rhs else ""
    after = f"2 * {op_text}" if scalar else f"D @ {op_text}"
    return adcli.loads(f"dim n = 3\ninput A: mat[n, n] = rand(seed=1)\nconst CA: mat[n, n] = 0.5 * rand(seed=3)\n"
                       f"const D: mat[n, n] = rand(seed=5)\n{extra}"
                       f"M = CA @ A + 4 * eye(n)\n" + ("u = Cb @ b\n" if rhs else "") + f"output y = {after}")


@pytest.mark.parametrize("program, forward, reverse", [
    # CA·Ȧ, Cb·ḃ (forward) and Dᵀ·ȳ (reverse) are products with Seeds: free. The other
    # products are on dense derivatives: D·ẏ is 9 per direction for a vec[3], 27 for a
    # mat[3, 3] (2·ẏ: 1 for a scalar); CAᵀ·Ā 27 and Cbᵀ·b̄ 9 per direction.
    # solve: inverse once (35); forward, block A (9 directions): dA·x 81, A⁻¹· 81; block b (3): A⁻¹· 27;
    # D·ẏ 12·9. Reverse (3 directions): A⁻ᵀ·ȳ for b 27 and again for A 27, b̄·xᵀ 27, CAᵀ·Ā 81, Cbᵀ·b̄ 27
    (_dense("solve(M, u)", "vec[n]"), 35 + 81 + 81 + 27 + 108, 35 + 27 + 27 + 27 + 81 + 27),
    # triangular_solve: triangular inverse (18), and the mask on dL: 9·9 forward, 3·9 reverse
    (_dense("triangular_solve(M, u)", "vec[n]"), 18 + 81 + 81 + 81 + 27 + 108, 18 + 27 * 4 + 81 + 27),
    # inv: C·dA·C, two products of 27 per direction (9 of them), D·ẏ 9·27; reverse the same and CAᵀ·Ā
    (_dense("inv(M)"), 9 * 54 + 243, 9 * 54 + 243),
    # det: det·A⁻ᵀ (35 + 9); Σ p·dA 9 per direction; 2·ẏ 9. Reverse: one direction, p·ȳ 9, CAᵀ·Ā 27
    (_dense("det(M)", scalar=True), 44 + 81 + 9, 44 + 9 + 27),
    (_dense("logdet(M)", scalar=True), 35 + 81 + 9, 35 + 9 + 27),
    # cholesky: L⁻¹ (18); three products (3·27) and three masks (3·9) per direction (9), D·ẏ 243
    (_dense("cholesky(M)"), 18 + 9 * (81 + 27) + 243, 18 + 9 * (81 + 27) + 243),
    # trace: a gather and a sum (flops only); 2·ẏ 9 forward; CAᵀ·Ā 27 reverse
    (_dense("trace(M)", scalar=True), 9, 27),
])
def test_linear_algebra_op_table(program, forward, reverse):
    fwd, rev = jacobians(program)
    assert fwd.cost.mults_derivative == forward
    assert rev.cost.mults_derivative == reverse
    for result in (fwd, rev):
        assert result.cost.counts() == program.predict(result.mode).counts()


def test_solve_makes_its_inverse_once_for_both_inputs():
    """solve's A and b share one partial (A⁻¹): one inverse per forward sweep, whichever
    inputs carry directions, and kept once for the backward sweep."""
    program = _dense("solve(M, u)", "vec[n]")
    one_block = run(program, "forward", wrt=["b"]).cost
    assert one_block.mults_derivative == 35 + 27 + 27       # inverse, A⁻¹·, D·ẏ
    # one direction per sweep: 12 sweeps, each with its own inverse
    assert run(program, "forward", chunk=1).cost.mults_derivative == 12 * 35 + 9 * (9 + 9) + 3 * 9 + 12 * 9
    both = run(program, "reverse").cost
    only_b = run(program, "reverse", wrt=["b"]).cost
    assert both.cached_values == only_b.cached_values + 3   # A's rule also keeps x (3); A⁻¹ once


# -- scaled Seeds (docs/counting.md, "Symbolic zeros and Seeds") ------------------------------------

SQUARE_MAP = """\
dim n = {n}
const A: mat[n, n] = randn(seed=1) / sqrt(n)
input x: vec[n] = randn(seed=2)
output y = tanh(A @ x) * x
"""


def test_scaled_seeds_keep_the_square_jacobian_a_row_scaling():
    """y = tanh(A·x) * x, J = diag((1 − u²)·x)·A + diag(u), u = tanh(A·x); n = 20."""
    n = 20
    program = adcli.loads(SQUARE_MAP.format(n=n))
    fwd, rev = jacobians(program)
    # reverse, n directions (the whole identity ȳ): ū = x·ȳ and x̄ = u·ȳ are scaled Seeds
    # (free); the partial 1 − u² is n mults, 2n flops; z̄ = (1 − u²)·ū scales a scaled Seed:
    # n mults, n flops; Aᵀ·z̄ scales A's n rows: n·n mults, n·n flops; x̄ + Aᵀ·z̄ adds the
    # scaled Seed's n entries: n flops. (Dense, Aᵀ·z̄ would be n³ mults.)
    assert rev.cost.mults_derivative == n + n + n * n
    assert rev.cost.flops_derivative == 2 * n + n + n * n + n
    # forward, n directions: A·ẋ selects A (free, dense); partial n mults, 2n flops;
    # (1 − u²)·ż waits as a scale of the dense ż (free) and x·u̇ multiplies that scale by x
    # (n mults, n flops, where scaling u̇ itself was n·n); x·u̇ is made dense to take u·ẋ
    # (n·n mults and flops), and u·ẋ, a scaled Seed (free), is added by its n entries: n flops
    assert fwd.cost.mults_derivative == n + n + n * n
    assert fwd.cost.flops_derivative == 2 * n + n + n * n + n
    assert fwd.jacobian == pytest.approx(rev.jacobian, rel=1e-12, abs=1e-14)
    x = program.resolve_inputs()["x"]
    A = np.random.default_rng(1).standard_normal((n, n)) / np.sqrt(n)
    u = np.tanh(A @ x)
    assert rev.jacobian == pytest.approx(((1 - u * u) * x)[:, None] * A + np.diag(u), rel=1e-12, abs=1e-14)
    for result in (fwd, rev):
        assert result.cost.counts() == program.predict(result.mode).counts()
    # reverse in chunks of n / 2 directions: a chunk of the identity leaves elements of ȳ
    # without a direction, so x·ȳ is placed dense (free) and the rest is dense work:
    # z̄ = (1 − u²)·ū k·n per sweep (n² in all), Aᵀ·z̄ k·n·n (n³ in all)
    chunked = run(program, "reverse", chunk=n // 2)
    assert chunked.cost.mults_derivative == n + n * n + n ** 3
    assert chunked.jacobian == pytest.approx(rev.jacobian, rel=1e-12, abs=1e-14)


def test_scaled_seeds_of_one_seed_add_entry_by_entry():
    n = 6
    program = adcli.loads(f"dim n = {n}\ninput x: vec[n] = rand(seed=1)\noutput y = x * x")
    for result in jacobians(program):
        # x·ẋ + x·ẋ (forward), x·ȳ + x·ȳ (reverse): two scaled Seeds of one Seed, one
        # scaled Seed of their summed scales: n flops, no mults (dense: n·n flops)
        assert (result.cost.mults_derivative, result.cost.flops_derivative) == (0, n)
        assert result.jacobian == pytest.approx(np.diag(2 * program.resolve_inputs()["x"]))
    # scaling a scaled Seed again: one mult per element, not per direction and element
    program = adcli.loads(f"dim n = {n}\ninput x: vec[n] = rand(seed=1)\noutput y = 3 * sin(x)")
    for result in jacobians(program):
        assert result.cost.mults_derivative == n   # cos(x)·ẋ free, 3·(that) n


def test_scaled_seeds_are_carried_through_a_loop():
    """repeat 5 { x = sin(x) }: the first cos·ẋ scales the Seed (free), the next four scale
    a scaled Seed (n mults each); prediction = count, and the Jacobian is the diagonal."""
    n = 5
    program = adcli.loads(f"dim n = {n}\ninput x: vec[n] = rand(seed=1)\nh = x\n"
                          f"repeat 5 {{\n  h = sin(h)\n}}\noutput y = h")
    x = program.resolve_inputs()["x"]
    h, slope = x.copy(), np.ones(n)
    for _ in range(5):
        slope, h = slope * np.cos(h), np.sin(h)
    for result in jacobians(program):
        assert result.cost.mults_derivative == 4 * n
        assert result.cost.counts() == program.predict(result.mode).counts()
        assert result.jacobian == pytest.approx(np.diag(slope), rel=1e-12)
