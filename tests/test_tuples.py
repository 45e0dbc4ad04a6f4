"""Tuple returns: `return a, b` (and `def f(x) = a, b`), unpacked by `a, b = f(x)`.
A front-end feature: the IR is the same as with one def per value. Checked with an
LSTM cell carried over a repeat (values against a NumPy transcription, derivatives
against central differences, forward against reverse, prediction = count) and the
errors, each one sentence with a caret."""
import numpy as np
import pytest
from click.testing import CliRunner

import adcli
from adcli.cli import cli
from adcli.errors import AdError
from conftest import fd_jacobian

LSTM = """dim T = 4
dim H = 3
dim D = 2
const X: mat[T, D] = randn(seed=1)
input W: mat[4 * H, D] = 0.5 * randn(seed=2)
input U: mat[4 * H, H] = 0.5 * randn(seed=3)
input b: vec[4 * H] = 0.1 * randn(seed=4)
input c0: vec[H] = 0.2 * randn(seed=5)

def cell(h, c, x, W, U, b) {
    z = W @ x + U @ h + b
    i = sigmoid(z[0:H])
    f = sigmoid(z[H:2 * H])
    o = sigmoid(z[2 * H:3 * H])
    g = tanh(z[3 * H:4 * H])
    c = f * c + i * g
    return o * tanh(c), c
}

h = 0 * c0
c = c0
repeat T as t {
    h, c = cell(h, c, X[t], W, U, b)
}
output loss = sum(h ^ 2) + sum(c)
output last = h
"""


def lstm_numpy(W, U, b, c0, X):
    """The same LSTM, transcribed by hand."""
    sigmoid = lambda z: 1 / (1 + np.exp(-z))   # noqa: E731
    H = c0.size
    h, c = np.zeros(H), c0.copy()
    for x in X:
        z = W @ x + U @ h + b
        i, f, o, g = sigmoid(z[:H]), sigmoid(z[H:2 * H]), sigmoid(z[2 * H:3 * H]), np.tanh(z[3 * H:])
        c = f * c + i * g
        h = o * np.tanh(c)
    return {"loss": np.sum(h ** 2) + np.sum(c), "last": h}


def test_lstm_over_a_repeat_matches_numpy_and_central_differences():
    program = adcli.loads(LSTM)
    inputs = program.resolve_inputs()
    X = np.random.default_rng(1).standard_normal((4, 2))
    want = lstm_numpy(inputs["W"], inputs["U"], inputs["b"], inputs["c0"], X)
    fd = fd_jacobian(program)
    results = {}
    for mode in ("forward", "reverse"):
        result = results[mode] = program.jacobian(mode=mode)
        for name, value in want.items():
            assert np.allclose(result.value[name], value, rtol=1e-12, atol=1e-14), (mode, name)
        assert np.allclose(result.jacobian, fd, rtol=1e-6, atol=1e-8), mode
        assert result.cost.counts() == program.predict(mode).counts(), mode
    assert np.allclose(results["forward"].jacobian, results["reverse"].jacobian, rtol=1e-12, atol=1e-14)


def test_a_tuple_return_builds_the_same_graph_as_one_def_per_value():
    tupled = adcli.loads("input x: vec[3] = [1, 2, 3]\n"
                         "def f(a) = sin(a), a * a\n"
                         "p, q = f(x)\noutput y = sum(p * q)\n")
    separate = adcli.loads("input x: vec[3] = [1, 2, 3]\n"
                           "def f1(a) = sin(a)\ndef f2(a) = a * a\n"
                           "output y = sum(f1(x) * f2(x))\n")
    ops = lambda program: [(n.op, n.inputs, n.shape) for n in program.graph.nodes]   # noqa: E731
    assert ops(tupled) == ops(separate)


def test_block_defs_nest_unpack_and_return_three_values():
    program = adcli.loads("""input x = 0.5
def pair(a) = a * a, 3 * a
def triple(a) {
    p, q = pair(a)
    return p + q, p, q
}
s, t, u = triple(x)
output y = s * t + u
""")
    x = 0.5
    p, q = x * x, 3 * x
    for mode in ("forward", "reverse"):
        result = program.jacobian(mode=mode)
        assert np.isclose(result.value["y"], (p + q) * p + q)
        # d/dx [(x² + 3x) x² + 3x] = 4x³ + 9x² + 3
        assert np.isclose(result.jacobian[0, 0], 4 * x ** 3 + 9 * x ** 2 + 3)


def test_unpacking_may_swap_names_because_the_right_side_is_read_first():
    program = adcli.loads("input x = 2.0\ninput y = 5.0\ndef same(a, b) = a, b\n"
                          "x2, y2 = same(x, y)\nx2, y2 = same(y2, x2)\noutput d = x2 - y2\n")
    assert float(program.evaluate()["d"]) == 3.0


def test_an_output_statement_may_unpack_or_name_several():
    """`output r, theta = polar(x, y)` is `r, theta = polar(x, y)` then `output r` and
    `output theta`; `output s, t` makes two names defined above outputs, in that order."""
    text = ("input x = 1.0\ninput y = 2.0\ndef polar(x, y) = hypot(x, y), arctan2(y, x)\n"
            "output r, theta = polar(x, y)\ns = x * y\nt = x + y\noutput s, t\n")
    program = adcli.loads(text)
    spelled = adcli.loads("input x = 1.0\ninput y = 2.0\ndef polar(x, y) = hypot(x, y), arctan2(y, x)\n"
                          "r, theta = polar(x, y)\noutput r\noutput theta\noutput s = x * y\n"
                          "output t = x + y\n")
    assert list(program.graph.outputs) == ["r", "theta", "s", "t"]
    values = program.evaluate()
    assert values["r"] == pytest.approx(5 ** 0.5) and values["theta"] == pytest.approx(np.arctan2(2, 1))
    for mode in ("forward", "reverse"):
        np.testing.assert_array_equal(program.jacobian(mode=mode).jacobian, spelled.jacobian(mode=mode).jacobian)
    np.testing.assert_allclose(program.jacobian().jacobian, fd_jacobian(program), rtol=1e-8)


@pytest.mark.parametrize("body, message, column", [
    ("def f(a) = a, 2 * a\noutput u, v = f(x)\noutput u = x", "output 'u' is declared twice", 1),
    ("def f(a) = a, 2 * a\noutput u, v, w = f(x)", "f(...) returns 2 values, but 3 names are assigned", 18),
    ("output u, v = sin(x)", "this is one value, but 2 names are assigned", 15),
    ("u = x\noutput u, v", "output 'v' names nothing defined above; write `output v = <expression>`", 1),
    ("def f(a) = a, 2 * a\noutput y = f(x) + 1",
     "f(...) returns 2 values, where one value is expected", 12),
    ("def f(a) = a, 2 * a\na, b, c = f(x)\noutput y = a",
     "f(...) returns 2 values, but 3 names are assigned", 11),
    ("a, b = sin(x)\noutput y = a", "this is one value, but 2 names are assigned", 8),
    ("def f(a) = a, 2 * a\na, a = f(x)\noutput y = a", "'a' is assigned twice in one unpacking", 1),
    ("dim n = 2\ndef f(a) = a, 2 * a\nn, b = f(x)\noutput y = b", "'n' is a dim and cannot be assigned", 1),
    ("def f(a) = a, 2 * a\nh = x\nrepeat 2 {\n    h = f(h)\n}\noutput y = h",
     "f(...) returns 2 values, where one value is expected", 9),
    ("def f(a) = a, 2 * a\ndef g(a) = f(a)\noutput y = g(x)",
     "f(...) returns 2 values, where one value is expected", 12),
    ("def f(a) = a, 2 * a\nrepeat 2 as t {\n    t, b = f(x)\n}\noutput y = x",
     "'t' is the index of the repeat at line 3 and cannot be assigned in its body", 5),
])
def test_tuple_errors_are_one_sentence_with_a_caret(tmp_path, body, message, column):
    path = tmp_path / "bad.ad"
    path.write_text("input x = 2.0\n" + body + "\n")
    result = CliRunner().invoke(cli, ["grad", str(path)])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    first = result.output.splitlines()[0]
    assert first.startswith("bad.ad:") or "/bad.ad:" in first, first
    assert f":{column}: error: {message}" in first, first
    assert "^" in result.output


def test_the_single_value_error_hints_at_unpacking():
    with pytest.raises(AdError) as info:
        adcli.loads("input x = 1.0\ndef f(a) = a, a, a\noutput y = f(x)\n")
    assert info.value.hint == "unpack them first: `a, b, c = f(...)`"
