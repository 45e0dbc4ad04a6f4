"""Conditions (issue 13, part 1): comparisons, and/or/not, where, sign, clip, heaviside.

Per op: values against NumPy, JVP and VJP against central differences away from
kinks, forward == reverse, prediction = count; masks cost nothing in derivative
work; the conventions at kinks of docs/language.md; errors with file:line:col and
a caret; the Huber loss sample against a NumPy transcription."""
import numpy as np
import pytest
from click.testing import CliRunner

import adcli
from adcli.cli import cli

from conftest import SAMPLE, fd_jacobian, flat_outputs, jacobians

RNG = np.random.default_rng(13)
# away from every kink and tie below (|x| and |x ± 0.5| > 0.05, x ≠ y)
X = np.array([[-1.3, -0.2, 0.3], [0.9, 1.7, -0.7]])
Y = np.array([0.4, -0.9, 1.1])
HEADER = f"input x: mat[2, 3] = {X.tolist()}\ninput y: vec[3] = {Y.tolist()}\n"


def mask(b):
    return np.asarray(b, dtype=float)


# (expression over x: mat[2, 3] and y: vec[3], its NumPy value)
CASES = [
    ("x < y", mask(X < Y)), ("x <= y", mask(X <= Y)), ("x > y", mask(X > Y)),
    ("x >= 0.5", mask(X >= 0.5)), ("x == x", mask(X == X)), ("x != y", mask(X != Y)),
    ("x > 0 and y > 0", mask((X > 0) & (Y > 0))), ("x > 0 or y > 0", mask((X > 0) | (Y > 0))),
    ("not x > 0", mask(~(X > 0))), ("not x", mask(X == 0)), ("x and 0", np.zeros((2, 3))),
    ("sign(x)", np.sign(X)), ("heaviside(x)", np.heaviside(X, 0.0)),
    ("where(x > 0, x * y, sin(x))", np.where(X > 0, X * Y, np.sin(X))),
    ("where(y, x, 2 * x)", np.where(Y != 0, X, 2 * X)),
    ("where(x > y, 1, y)", np.where(X > Y, 1.0, Y)),
    ("clip(x, -0.5, 0.5)", np.clip(X, -0.5, 0.5)),
    ("clip(x, y, 1)", np.clip(X, Y, 1.0)),
    ("clip(x, -1, y)", np.minimum(np.maximum(X, -1.0), Y)),
    ("(x > 0) * x^2 + sign(x) * exp(x)", (X > 0) * X**2 + np.sign(X) * np.exp(X)),
    # precedence: comparisons below arithmetic, not above and, and above or (as in Python)
    ("x + 1 > y * 2", mask(X + 1 > Y * 2)),
    ("not x > 0 and y > 0 or x < -1", mask(((~(X > 0)) & (Y > 0)) | (X < -1))),
    ("-x^2 <= -1", mask(-X**2 <= -1)),
]


def program(expr):
    return adcli.loads(HEADER + f"output f = {expr}\n", "cond.ad")


@pytest.mark.parametrize("expr, expected", CASES, ids=[c[0] for c in CASES])
def test_value_against_numpy(expr, expected):
    value = program(expr).evaluate()["f"]
    np.testing.assert_allclose(value, np.broadcast_to(expected, np.shape(value)), rtol=1e-15, atol=0)


@pytest.mark.parametrize("expr, expected", CASES, ids=[c[0] for c in CASES])
def test_derivatives_against_central_differences(expr, expected):
    p = program(expr)
    fwd, rev = jacobians(p)
    np.testing.assert_allclose(fwd.jacobian, rev.jacobian, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(fwd.jacobian, fd_jacobian(p), rtol=1e-6, atol=1e-7)
    for mode, result in (("forward", fwd), ("reverse", rev)):
        assert p.predict(mode).counts() == result.cost.counts(), mode
    # one dense direction and one dense cotangent through the rules
    v = {"x": RNG.standard_normal(X.shape), "y": RNG.standard_normal(Y.shape)}
    jv = p.jvp(v, measure_memory=False)
    flat_v = np.concatenate([v["x"].reshape(-1), v["y"]])
    np.testing.assert_allclose(flat_outputs(p, jv.tangent), fwd.jacobian @ flat_v, rtol=1e-12, atol=1e-14)
    u = RNG.standard_normal(np.shape(p.evaluate()["f"]))
    uj = p.vjp({"f": u}, measure_memory=False)
    got = np.concatenate([uj.cotangent["x"].reshape(-1), uj.cotangent["y"].reshape(-1)])
    np.testing.assert_allclose(got, u.reshape(-1) @ rev.jacobian, rtol=1e-12, atol=1e-14)


def test_masks_have_zero_jacobians():
    for expr in ("x < y", "not x", "x > 0 and y > 0", "sign(x)", "heaviside(x)"):
        for result in jacobians(program(expr)):
            assert not result.jacobian.any(), expr


COSTLESS = """input x: vec[3] = [0.5, -1, 2]
input z: vec[3] = [1, -2, 0.5]
m = z > 0 and not z > 1
output f = m * x + where(z, x, -x) + sign(z) * x^2 + heaviside(z) * sin(x)
"""


def test_a_mask_costs_nothing_in_forward_mode():
    """A tangent on z dies at the comparisons, sign and heaviside: the JVP with a
    direction on z too does exactly the derivative work of the one on x alone."""
    p = adcli.loads(COSTLESS)
    v = np.array([0.3, -0.2, 1.0])
    alone = p.jvp({"x": v}, measure_memory=False)
    both = p.jvp({"x": v, "z": np.ones(3)}, measure_memory=False)
    np.testing.assert_array_equal(alone.tangent["f"], both.tangent["f"])
    for key in ("mults_derivative", "flops_derivative", "ops", "values_moved"):
        assert getattr(both.cost, key) == getattr(alone.cost, key), key
    only_z = p.jvp({"z": np.ones(3)}, measure_memory=False)
    assert only_z.cost.mults_derivative == only_z.cost.flops_derivative == 0
    assert not np.any(only_z.tangent["f"])


def test_a_mask_costs_nothing_in_reverse_mode():
    """Reverse mode with respect to x and z does the work of reverse mode w.r.t. x alone:
    no cotangent is made for a mask (mul would otherwise compute ct·x for m)."""
    p = adcli.loads(COSTLESS)
    alone = p.jacobian(mode="reverse", wrt=["x"], measure_memory=False)
    both = p.jacobian(mode="reverse", measure_memory=False)
    assert not both.jacobian[:, 3:].any()
    assert both.cost.counts() == alone.cost.counts()


MASK_TIMES = "(u > w) * u + sign(w) * w"


@pytest.mark.parametrize("expr, mode", [
    ("where(u > w, u, w)", "forward"), ("where(u > w, u, w)", "reverse"),
    ("clip(u, w, 2.5)", "forward"), ("clip(u, w, 2.5)", "reverse"), (MASK_TIMES, "forward"),
    (MASK_TIMES, "reverse")])
def test_op_table(expr, mode):
    """docs/counting.md: where and clip scale each side that carries a derivative by a
    partial of 0 mults (k·s mults per side); masks and sign propagate nothing."""
    s = 3
    p = adcli.loads(f"dim s = {s}\ninput a: vec[s] = rand(seed=1)\ninput b: vec[s] = rand(seed=2)\n"
                    f"const C: mat[s, s] = 0.5 * rand(seed=3)\nu = C @ a + 1\nw = C @ b + 2\n"
                    f"v = {expr}\noutput y = C @ v")
    for result in [p.jacobian(mode=mode, measure_memory=False)]:
        # as test_counts.test_binary_op_table: s directions through each of the two sides,
        # and the two const products on dense derivatives around the op (C·v̇ in both
        # blocks, or Cᵀ·ū and Cᵀ·w̄: s·s·s each; the products with Seeds are free)
        assert result.cost.mults_derivative == 2 * s * s + 2 * s ** 3


# -- conventions at kinks (docs/language.md, "Derivatives at non-differentiable points") ---------

@pytest.mark.parametrize("text, expected", [
    # sign and heaviside: derivative 0 everywhere, 0 included; heaviside(0) = 0, sign(0) = 0
    ("input x: vec[3] = [-1, 0, 2]\noutput y = sign(x)", np.zeros((3, 3))),
    ("input x: vec[3] = [-1, 0, 2]\noutput y = heaviside(x)", np.zeros((3, 3))),
    # clip: 1 on [lo, hi] with both ends included (PyTorch's clamp), 0 outside
    ("input x: vec[5] = [-2, -1, 0, 1, 2]\noutput y = clip(x, -1, 1)", np.diag([0.0, 1, 1, 1, 0])),
    # clip with differentiable bounds: exactly one of x, lo, hi gets 1; at x = lo it is x
    ("input x = 0\ninput lo = 0\ninput hi = 1\noutput y = clip(x, lo, hi)", [[1.0, 0.0, 0.0]]),
    ("input x = 1\ninput lo = 0\ninput hi = 1\noutput y = clip(x, lo, hi)", [[1.0, 0.0, 0.0]]),
    ("input x = -1\ninput lo = 0\ninput hi = 1\noutput y = clip(x, lo, hi)", [[0.0, 1.0, 0.0]]),
    ("input x = 2\ninput lo = 0\ninput hi = 1\noutput y = clip(x, lo, hi)", [[0.0, 0.0, 1.0]]),
    # lo > hi: NumPy's value is hi everywhere, and so is the derivative
    ("input x = 0.5\ninput lo = 1\ninput hi = 0\noutput y = clip(x, lo, hi)", [[0.0, 0.0, 1.0]]),
    # where at c = 0 takes b, also for its derivative; none flows through c
    ("input c: vec[2] = [0, 1]\ninput a: vec[2] = [3, 4]\noutput y = where(c, a, -a)",
     [[0.0, 0.0, -1.0, 0.0], [0.0, 0.0, 0.0, 1.0]]),
    ("input x: vec[3] = [-1, 0, 1]\noutput y = where(x > 0, x, 2 * x)", np.diag([2.0, 2.0, 1.0])),
    ("input x: vec[3] = [-1, 0, 1]\noutput y = where(x >= 0, x, 2 * x)", np.diag([2.0, 1.0, 1.0])),
    # the kinks docs/language.md tabulates against JAX: abs'(0) = 0, norm at 0, x^0 at 0
    ("input x: vec[3] = [-1, 0, 2]\noutput y = abs(x)", np.diag([-1.0, 0.0, 1.0])),
    ("input x: vec[3] = [-1, 0, 2]\noutput y = relu(x)", np.diag([0.0, 0.0, 1.0])),
    ("input x: vec[2] = zeros\noutput y = norm(x)", [[0.0, 0.0]]),
    ("input x = 0\noutput y = x ^ 0", [[0.0]]),
    ("input a = 1\ninput b = 1\noutput y = maximum(a, b)", [[0.5, 0.5]]),
])
def test_conventions_at_kinks(text, expected):
    p = adcli.loads(text)
    fwd, rev = jacobians(p)
    np.testing.assert_array_equal(fwd.jacobian, rev.jacobian)
    np.testing.assert_array_equal(fwd.jacobian, np.asarray(expected, dtype=float))


def test_values_at_kinks():
    p = adcli.loads("input x: vec[3] = [-1, 0, 2]\noutput s = sign(x)\noutput h = heaviside(x)\n"
                    "output c = clip(x, 0, 1)\noutput e = x == 0")
    v = p.evaluate()
    assert v["s"].tolist() == [-1, 0, 1] and v["h"].tolist() == [0, 0, 1]
    assert v["c"].tolist() == [0, 0, 1] and v["e"].tolist() == [0, 1, 0]


def test_float32_masks_stay_float32():
    p = adcli.loads("input x: vec[3] = [-1, 0, 2]\noutput y = (x > 0) * x + where(x, x, 1)")
    result = p.jacobian(mode="reverse", dtype="float32", measure_memory=False)
    assert np.asarray(result.value["y"]).dtype == np.float32
    assert result.value["y"].tolist() == [-1, 1, 4]


# -- compare names the kink ----------------------------------------------------------------

def test_compare_names_the_kink():
    from adcli.compare import compare

    p = adcli.loads("input x: vec[2] = [0, 1]\nu = 2 * x\noutput y = sum(relu(u))\n", "kinked.ad")
    message = compare(p, repeat=1).agreement["message"]
    assert message.endswith("while the AD modes agree: 2 * x = 0 is a kink of relu at kinked.ad:3, where "
                            "central differences average the two one-sided slopes and adcli takes 0"), message
    p = adcli.loads("input x: vec[2] = [0, 1]\ninput z = 1\noutput y = sum(clip(x, 0, z) + (x > z))\n", "j.ad")
    message = compare(p, repeat=1).agreement["message"]
    assert "x = z is where the mask of '>' at j.ad:3 jumps" in message and "(and 1 more kink)" in message
    # smooth at the point: nothing to name, nothing disagrees
    assert compare(adcli.loads("input x: vec[2] = [0.5, 1]\noutput y = sum(relu(x))"),
                   repeat=1).agreement["message"] is None


# -- errors ----------------------------------------------------------------------------------

def grad(path, *args):
    return CliRunner().invoke(cli, ["grad", str(path), *args])


@pytest.mark.parametrize("source, line, column, pattern", [
    ("input x: vec[3] = ones\ninput v: vec[2] = ones\noutput y = x < v\n", 3, 12,
     r"shapes vec\[3\] and vec\[2\] do not broadcast for '<'"),
    ("input x: vec[3] = ones\ninput v: vec[2] = ones\noutput y = where(x > 0, x, v)\n", 3, 12,
     r"shapes vec\[3\], vec\[3\] and vec\[2\] do not broadcast for 'where'"),
    ("input x: vec[3] = ones\ninput A: mat[2, 2] = ones\noutput y = clip(A, x, 1)\n", 3, 12,
     r"shapes mat\[2, 2\], vec\[3\] and scalar do not broadcast for 'clip'"),
    ("input x: vec[3] = ones\ninput v: vec[2] = ones\noutput y = x > 0 and v > 0\n", 3, 12,
     r"shapes vec\[3\] and vec\[2\] do not broadcast for 'and'"),
    ("input x = 1\noutput y = where(x > 0, x)\n", 2, 12, r"where takes 3 arguments, got 2"),
    ("input x = 1\noutput y = clip(x, 0, 1, 2)\n", 2, 12, r"clip takes 3 arguments, got 4"),
    ("input x = 1\noutput y = sign(x, 1)\n", 2, 12, r"sign takes 1 argument, got 2"),
    ("input x = 1\noutput y = 0 < x < 1\n", 2, 18, r"comparisons do not chain: write \(a < b\) and \(b < c\)"),
    ("input x = 1\noutput y = x = 1\n", 2, 14, r"unexpected '='"),
    ("input x = 1\noutput y = x > 0 and\n", 2, 21, r"unexpected end of line; expected"),
    ("input x = 1\nwhere = x\noutput y = where\n", 2, 1, r"'where' is a built-in function and cannot be assigned"),
])
def test_errors_have_place_and_caret(tmp_path, source, line, column, pattern):
    import re

    path = tmp_path / "bad.ad"
    path.write_text(source)
    result = grad(path)
    assert result.exit_code == 1, result.output
    lines = result.stderr.rstrip("\n").split("\n")
    assert lines[0].startswith(f"{path}:{line}:{column}: error: "), lines[0]
    message = lines[0].split("error: ", 1)[1]
    assert "\n" not in message and re.search(pattern, message), message
    assert lines[1] == "  " + source.splitlines()[line - 1]
    assert lines[2] == "  " + " " * (column - 1) + "^"


# -- the Huber loss sample ----------------------------------------------------------------------

def test_huber_sample_against_numpy():
    p = adcli.load(SAMPLE["huber.ad"])
    at = p.resolve_inputs()
    X = np.random.default_rng(1).standard_normal((40, 10))      # the file's randn(seed=1), (seed=2)
    t = 2 * np.random.default_rng(2).standard_normal(40)
    w = 0.3 * np.random.default_rng(3).standard_normal(10)
    np.testing.assert_array_equal(at["w"], w)
    delta = 1.0
    r = X @ w - t
    loss = np.mean(np.where(np.abs(r) <= delta, 0.5 * r**2, delta * (np.abs(r) - 0.5 * delta)))
    grad_r = np.where(np.abs(r) <= delta, r, delta * np.sign(r)) / r.size
    assert p.evaluate()["loss"] == pytest.approx(loss, rel=1e-14)
    fwd, rev = jacobians(p)
    np.testing.assert_allclose(rev.jacobian[0], X.T @ grad_r, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(fwd.jacobian, rev.jacobian, rtol=1e-12, atol=1e-15)
    # both branches are taken at this point
    assert 0 < np.sum(np.abs(r) <= delta) < r.size
