"""norm with ord and axis (issue 14, item 3), as numpy.linalg.norm defines it: values against
NumPy for every ord and axis form, derivatives inside the language (grad of a norm), the
refusals (one sentence with a place), and the tuple syntax for axes, `axis=(0, 2)`, wherever
a list of axes is accepted. The rules are checked against finite differences in
tests/test_ops.py, their counts by hand in tests/test_counts.py, and in random programs by
tests/progen.py."""
import numpy as np
import pytest

import adcli
from adcli.errors import AdError

RNG = np.random.default_rng(7)
X3 = RNG.standard_normal((2, 3, 4))
A = RNG.standard_normal((3, 4))
V = RNG.standard_normal(5)
DATA = {"X": X3, "A": A, "v": V}
HEADER = "input X: tensor[2, 3, 4]\ninput A: mat[3, 4]\ninput v: vec[5]\n"
INF = np.inf


@pytest.mark.parametrize("call, expected", [
    ("norm(v)", lambda: np.linalg.norm(V)),
    ("norm(X)", lambda: np.linalg.norm(X3)),                      # every element, any rank
    ("norm(A)", lambda: np.linalg.norm(A)),
    ("norm(v, 1)", lambda: np.linalg.norm(V, 1)),
    ("norm(v, 2)", lambda: np.linalg.norm(V, 2)),
    ("norm(v, inf)", lambda: np.linalg.norm(V, INF)),
    ("norm(v, -inf)", lambda: np.linalg.norm(V, -INF)),
    ("norm(v, 3)", lambda: np.linalg.norm(V, 3)),
    ("norm(v, ord=0.5)", lambda: np.linalg.norm(V, 0.5)),
    ("norm(A, 1)", lambda: np.linalg.norm(A, 1)),                 # matrix norms: column sums
    ("norm(A, -1)", lambda: np.linalg.norm(A, -1)),
    ("norm(A, inf)", lambda: np.linalg.norm(A, INF)),             # row sums
    ("norm(A, -inf)", lambda: np.linalg.norm(A, -INF)),
    ("norm(A, 'fro')", lambda: np.linalg.norm(A, "fro")),
    ('norm(A, "fro")', lambda: np.linalg.norm(A, "fro")),
    ("norm(A, axis=1)", lambda: np.linalg.norm(A, axis=1)),
    ("norm(A, 1, 0)", lambda: np.linalg.norm(A, 1, 0)),           # NumPy's order: ord, axis
    ("norm(A, inf, axis=-1, keepdims=true)", lambda: np.linalg.norm(A, INF, axis=-1, keepdims=True)),
    ("norm(X, axis=(0, 2))", lambda: np.linalg.norm(X3, axis=(0, 2))),
    ("norm(X, axis=[2, 0])", lambda: np.linalg.norm(X3, axis=(2, 0))),
    ("norm(X, 1, axis=(2, 1))", lambda: np.linalg.norm(X3, 1, axis=(2, 1))),
    ("norm(X, inf, axis=(2, 1))", lambda: np.linalg.norm(X3, INF, axis=(2, 1))),
    ("norm(X, -1, axis=(0, -1), keepdims=true)", lambda: np.linalg.norm(X3, -1, axis=(0, -1), keepdims=True)),
    ("norm(X, 2.5, axis=(1,))", lambda: np.linalg.norm(X3, 2.5, axis=(1,))),
    ("norm(X, keepdims=true)", lambda: np.linalg.norm(X3, keepdims=True)),
])
def test_values_are_numpys(call, expected):
    program = adcli.loads(HEADER + f"output y = {call}")
    value = program.evaluate(at=DATA)["y"]
    want = expected()
    assert np.shape(value) == np.shape(want)
    np.testing.assert_allclose(value, want, rtol=1e-13, atol=0)


@pytest.mark.parametrize("call", ["norm(x, 1)", "norm(x, inf)", "norm(x, 3)", "norm(x, axis=0)",
                                  "norm(reshape(x, 2, 2), 1)", "norm(reshape(x, 2, 2), -inf)"])
def test_grad_of_a_norm_inside_the_language(call):
    """grad(f) writes the norm's rules out as nodes: the same derivative as the modes give."""
    x = np.array([0.3, -1.2, 2.0, 0.7])
    program = adcli.loads(f"input x: vec[4]\ndef f(x) = {call}\noutput g = grad(f)(x)\noutput y = f(x)")
    inside = program.evaluate(at={"x": x})["g"]
    row = program.jacobian(mode="reverse", at={"x": x}, measure_memory=False).jacobian[-1]
    np.testing.assert_allclose(inside, row, rtol=1e-12, atol=1e-15)


def refusal(text):
    with pytest.raises(AdError) as caught:
        adcli.loads(HEADER + text)
    message = str(caught.value)
    assert "\n" not in message.strip() and "Traceback" not in message
    return message


@pytest.mark.parametrize("call, pattern", [
    ("norm(X, 1)", r"norm with ord needs a vector or a matrix, got tensor\[2, 3, 4\]: give the axis"),
    ("norm(A, 2)", r"ord=2 of a matrix is a singular value .* no exact count"),
    ("norm(A, -2)", r"ord=-2 of a matrix is a singular value"),
    ("norm(A, 'nuc')", r"ord='nuc' of a matrix is a singular value"),
    ("norm(A, 3)", r"ord=3 is not a matrix norm: NumPy's are 'fro', 'nuc', 1, -1, 2, -2, inf and -inf"),
    ("norm(v, 'fro')", r"ord='fro' is a matrix norm: give two axes"),
    ("norm(v, 0)", r"ord=0 counts the nonzero elements.*sum\(x != 0\)"),
    ("norm(v, -1)", r"a vector norm's ord is a p > 0, inf or -inf, got -1"),
    ("norm(v, 'max')", r"norm's ord is a number, inf, -inf, 'fro' or 'nuc', got ''max''"),
    ("norm(v, v)", r"norm's ord is a number, inf, -inf, 'fro' or 'nuc', got 'v'"),
    ("norm(X, axis=(0, 1, 2))", r"norm takes one axis \(a vector norm\) or two \(a matrix norm\), got 3"),
    ("norm(X, axis=(0, -3))", r"norm's two axes are one axis"),
    ("norm(A, axis=2)", r"axis=2 is out of range for mat\[3, 4\]"),
    ("norm(A, 1, axis=0, ord=2)", r"norm's ord is given twice"),
    ("norm(A, 1, 0, 1)", r"keepdims takes true or false, got '1'"),   # (the 4th is keepdims, as in NumPy)
    ("norm(v[0:0], inf)", r"norm with ord=inf of no elements is undefined"),
    ("norm(A[:, 0:0], 1)", r"norm with ord=1 of no elements is undefined"),
])
def test_refusals(call, pattern):
    import re

    message = refusal(f"output y = {call}")
    assert re.search(pattern, message), message


def test_refusal_points_at_the_ord():
    with pytest.raises(AdError) as caught:
        adcli.loads(HEADER + "output y = norm(A, 2)")
    assert caught.value.location.line == 4 and caught.value.location.column == 20


def test_empty_norms_that_have_a_value():
    program = adcli.loads(HEADER + "output y = norm(v[0:0], 1) + norm(v[0:0], 3) + norm(A[0:0, :], 1)")
    assert program.evaluate(at=DATA)["y"] == 0.0


# -- tuples of axes ---------------------------------------------------------------------------

@pytest.mark.parametrize("tuple_text, list_text", [
    ("sum(X, axis=(0, 2))", "sum(X, axis=[0, 2])"),
    ("max(X, axis=(2, 1), keepdims=true)", "max(X, axis=[2, 1], keepdims=true)"),
    ("mean(X, axis=(1,))", "mean(X, axis=[1])"),
    ("softmax(X, axis=(0, 2))", "softmax(X, axis=[0, 2])"),
    ("transpose(X, (2, 0, 1))", "transpose(X, [2, 0, 1])"),
    ("transpose(X, axes=(1, 0, 2))", "transpose(X, axes=[1, 0, 2])"),
    ("reshape(X, (4, 6))", "reshape(X, [4, 6])"),
    ("expand_dims(A, (0, 3))", "expand_dims(A, [0, 3])"),
    ("squeeze(expand_dims(A, (0, 3)), axis=(0, 3))", "squeeze(expand_dims(A, [0, 3]), axis=[0, 3])"),
])
def test_tuples_of_axes_are_lists(tuple_text, list_text):
    a = adcli.loads(HEADER + f"output y = {tuple_text}").evaluate(at=DATA)["y"]
    b = adcli.loads(HEADER + f"output y = {list_text}").evaluate(at=DATA)["y"]
    assert np.shape(a) == np.shape(b)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("text", ["output y = (1, 2)", "output y = v + (1, 2, 3, 4, 5)", "const c = (1, 2)\noutput y = v"])
def test_a_tuple_elsewhere_is_refused(text):
    message = refusal(text)
    assert "a tuple only lists axes or sizes" in message and "[a, b]" in message


def test_parenthesised_expressions_are_not_tuples():
    program = adcli.loads(HEADER + "output y = (v + 1) * (2)")
    np.testing.assert_allclose(program.evaluate(at=DATA)["y"], (V + 1) * 2)


def test_keepdims_may_be_given_by_position_as_numpy_takes_it():
    """norm(x, ord, axis, keepdims) in NumPy's order; a fifth argument is refused saying
    how many norm takes (it said 'norm takes 1 argument, got 2' for four)."""
    import numpy as np

    import adcli
    from adcli.errors import AdError

    A = np.array([[1.0, -2, 3], [4, 5, -6]])
    program = adcli.loads("input A: mat[2, 3] = [[1, -2, 3], [4, 5, -6]]\n"
                          "output y = norm(A, 1, 1, true)\noutput z = norm(A, -inf, (0, 1), true)\n")
    values = program.evaluate()
    np.testing.assert_allclose(values["y"], np.linalg.norm(A, 1, 1, True))
    np.testing.assert_allclose(values["z"], np.linalg.norm(A, -np.inf, (0, 1), True))
    try:
        adcli.loads("input A: mat[2, 3]\noutput y = norm(A, 1, 1, true, 2)\n")
    except AdError as exc:
        assert "norm takes at most 4 arguments (x, ord, axis, keepdims), got 5" in str(exc)
    else:
        raise AssertionError("a fifth argument was accepted")
