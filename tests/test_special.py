"""The elementary functions beyond the first twelve (issue 13, item 2) and the constants
pi and e: values against NumPy, the conventions at their singular points, constants in
expressions and in constant data, and names that hide them.

Their derivatives are checked against finite differences, with both modes and prediction
= count, in test_ops.py and test_counts.py like every op's; here are the things particular
to these functions.
"""
import math

import numpy as np
import pytest

import adcli
from adcli.errors import AdError

from conftest import jacobians

X = [0.1, -0.4, 0.7]


@pytest.mark.parametrize("name, at, expected", [
    ("arcsin", X, np.arcsin), ("arccos", X, np.arccos), ("arctan", X, np.arctan),
    ("sinh", X, np.sinh), ("cosh", X, np.cosh), ("arcsinh", X, np.arcsinh),
    ("arccosh", [1.2, 2.0, 5.0], np.arccosh), ("arctanh", X, np.arctanh), ("expm1", X, np.expm1),
    ("log2", [0.5, 2.0, 8.0], np.log2), ("log10", [0.5, 10.0, 1000.0], np.log10),
    ("softplus", [-3.0, 0.0, 2.0], lambda x: np.log1p(np.exp(x))),
])
def test_values_are_numpys(name, at, expected):
    program = adcli.loads(f"input x: vec[3] = {at}\noutput y = {name}(x)")
    np.testing.assert_allclose(program.evaluate()["y"], expected(np.array(at)), rtol=1e-15, atol=0)


def test_softplus_is_stable_far_from_0():
    """log(1 + eˣ) computed naively overflows at x = 1000; softplus is x there, and its
    derivative sigmoid(x) is 1 (and 0, not nan, at -1000)."""
    program = adcli.loads("input x: vec[4] = [-1000, -40, 40, 1000]\noutput y = softplus(x)")
    assert program.evaluate()["y"] == pytest.approx([0.0, math.exp(-40), 40.0, 1000.0], rel=1e-15)
    for result in jacobians(program):
        assert np.diag(result.jacobian) == pytest.approx([0.0, math.exp(-40), 1.0, 1.0], rel=1e-12)
        assert np.all(np.isfinite(result.jacobian))


def test_arctan2_takes_y_first_and_covers_every_quadrant():
    program = adcli.loads("input y: vec[4] = [1, 1, -1, -1]\ninput x: vec[4] = [1, -1, -1, 1]\n"
                          "output a = arctan2(y, x)")
    assert program.evaluate()["a"] == pytest.approx([math.pi / 4, 3 * math.pi / 4, -3 * math.pi / 4,
                                                     -math.pi / 4])
    fwd, rev = jacobians(program)
    np.testing.assert_allclose(fwd.jacobian, rev.jacobian, rtol=1e-15)
    # ∂/∂y = x / 2, ∂/∂x = -y / 2 at radius √2
    assert np.diag(fwd.jacobian[:, :4]) == pytest.approx([0.5, -0.5, -0.5, 0.5])
    assert np.diag(fwd.jacobian[:, 4:]) == pytest.approx([-0.5, -0.5, 0.5, 0.5])


def test_binary_functions_broadcast():
    program = adcli.loads("input s = 2\ninput B: mat[2, 3] = [[1, 2, 3], [4, 5, 6]]\n"
                          "output h = hypot(B, s)\noutput a = arctan2(s, B)")
    B = np.array([[1.0, 2, 3], [4, 5, 6]])
    values = program.evaluate()
    np.testing.assert_allclose(values["h"], np.hypot(B, 2.0), rtol=1e-15)
    np.testing.assert_allclose(values["a"], np.arctan2(2.0, B), rtol=1e-15)
    fwd, rev = jacobians(program)
    np.testing.assert_allclose(fwd.jacobian, rev.jacobian, rtol=1e-13)
    # ∂h/∂s summed over the broadcast: s / h per element
    assert fwd.jacobian[:6, 0] == pytest.approx((2.0 / np.hypot(B, 2.0)).reshape(-1))


def test_hypot_at_the_origin_has_derivative_0_and_arctan2_nan():
    program = adcli.loads("input x = 0.0\ninput y = 0.0\noutput h = hypot(x, y)")
    for result in jacobians(program):
        assert result.jacobian.tolist() == [[0.0, 0.0]]
    program = adcli.loads("input x = 0.0\ninput y = 0.0\noutput a = arctan2(y, x)")
    assert program.evaluate()["a"] == 0.0
    with np.errstate(all="ignore"):
        for result in jacobians(program):
            assert np.all(np.isnan(result.jacobian))


def test_constants_in_expressions_defs_and_loops():
    program = adcli.loads("input x = 2\ndef f(t) = e ^ t\ns = 0\nrepeat 2 {\n    s = s + pi\n}\n"
                          "output y = pi * x + f(x) + s")
    assert program.evaluate()["y"] == pytest.approx(2 * math.pi + math.e ** 2 + 2 * math.pi, rel=1e-15)
    for result in jacobians(program):
        assert result.jacobian[0, 0] == pytest.approx(math.pi + math.e ** 2, rel=1e-14)


def test_constants_in_constant_data():
    program = adcli.loads("dim n = 3\nconst c: vec[n] = [pi, e, -pi / 2]\n"
                          "input x: vec[n] = cos(pi * linspace(0, 1))\nconst h = arctan2(1, 1)\n"
                          "input z: vec[2] = hypot([3, 5], [4, 12]) + maximum(e, 3)\n"
                          "output y = c * x + h\noutput w = z")
    values = program.evaluate()
    np.testing.assert_allclose(values["y"], np.array([np.pi, np.e, -np.pi / 2]) * np.cos(np.pi * np.linspace(0, 1, 3))
                               + np.pi / 4, rtol=1e-15)
    np.testing.assert_allclose(values["w"], [8.0, 16.0], rtol=1e-15)


def test_names_hide_the_constants():
    """pi and e are not reserved: an input, const, value, def parameter or dim of that name
    is used instead where it is visible."""
    assert adcli.loads("input e = 2\noutput y = e * e").evaluate()["y"] == 4.0
    assert adcli.loads("const pi = 3\ninput x = 1\noutput y = pi * x").evaluate()["y"] == 3.0
    assert adcli.loads("input x = 1\npi = 3 * x\noutput y = pi").evaluate()["y"] == 3.0
    assert adcli.loads("input x = 1\ndef f(e) = 2 * e\noutput y = f(x) + e").evaluate()["y"] == \
        pytest.approx(2 + math.e)
    assert adcli.loads("dim e = 3\ninput x: vec[e] = ones\noutput y = sum(x) * e").evaluate()["y"] == 9.0
    # inside a def, a value named e outside it is not visible: that is an error, not the constant
    with pytest.raises(AdError, match="not visible inside def"):
        adcli.loads("input e = 2\ndef f(t) = t * e\noutput y = f(e)")


@pytest.mark.parametrize("text, message", [
    ("input x: vec[3] = ones\noutput y = arctan2(x)", "arctan2 takes 2 arguments, got 1"),
    ("input x: vec[3] = ones\ninput y: vec[2] = ones\noutput z = hypot(x, y)", "do not broadcast for 'hypot'"),
    ("input x = 1\noutput y = softplus(x, x)", "softplus takes 1 argument, got 2"),
    ("const c: vec[2] = hypot([1, 2, 3], [1, 2])\ninput x = 1\noutput y = x", "do not broadcast for 'hypot'"),
    ("input arcsin = 1\noutput y = arcsin", "'arcsin' is a built-in function"),
])
def test_errors(text, message):
    with pytest.raises(AdError, match=message):
        adcli.loads(text)
