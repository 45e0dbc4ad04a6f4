"""The loop index, `repeat T as t { ... }` (issue 12, part 2): t runs 0 … T-1 and is an
integer known when the file is built, so it indexes and slices (per-step inputs X[t],
per-layer weights Ws[t * H:(t + 1) * H, :]), sets a nested repeat's count, and is a
scalar constant in arithmetic. Values against NumPy written by hand, derivatives
forward = reverse = central differences, the graph's repeat provenance, and every
error a user can make with an index (one sentence, file:line:col, a caret, exit 1)."""
import json
import re

import numpy as np
import pytest
from click.testing import CliRunner

import adcli
from adcli.cli import cli
from adcli.errors import NameProblem, ShapeProblem

from conftest import fd_jacobian, flat_outputs, jacobians


def check_derivatives(program):
    """Forward = reverse = central differences; returns the Jacobian."""
    fwd, rev = jacobians(program)
    fd = fd_jacobian(program)
    assert fwd.jacobian.shape == rev.jacobian.shape == fd.shape
    np.testing.assert_allclose(fwd.jacobian, rev.jacobian, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(rev.jacobian, fd, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(flat_outputs(program, fwd.value), flat_outputs(program, rev.value),
                               rtol=1e-13, atol=1e-13)
    return rev.jacobian


def value(program, name):
    return np.asarray(program.evaluate()[name])


# -- values and derivatives -----------------------------------------------------------------------

RNN = """\
dim H = 3
input h0: vec[H] = [0.1, -0.2, 0.3]
input x: vec[4] = [0.5, -1, 0.25, 2]
input Ws: mat[4 * H, H] = 0.4 * randn(seed=3)
const X: mat[4, H] = randn(seed=2)
h = h0
repeat {T} as t {{
    h = tanh(Ws[t * H:(t + 1) * H, :] @ h + X[t] * x[t])
}}
output s = sum(h^2)
output last = h
"""


def rnn_by_hand(T):
    h = np.array([0.1, -0.2, 0.3])
    x = np.array([0.5, -1, 0.25, 2])
    Ws = 0.4 * np.random.default_rng(3).standard_normal((12, 3))
    X = np.random.default_rng(2).standard_normal((4, 3))
    for t in range(T):
        h = np.tanh(Ws[3 * t:3 * (t + 1)] @ h + X[t] * x[t])
    return h


@pytest.mark.parametrize("T", [0, 1, 2, 4])
def test_per_step_inputs_and_per_layer_weights(T):
    program = adcli.loads(RNN.format(T=T))
    want = rnn_by_hand(T)
    np.testing.assert_allclose(value(program, "last"), want, rtol=1e-14, atol=1e-15)
    assert float(value(program, "s")) == pytest.approx(np.sum(want ** 2), rel=1e-14, abs=1e-15)
    jacobian = check_derivatives(program)
    # x[t] and Ws's blocks past the count are not read: their columns are zero
    columns = dict(zip(program.input_names, np.split(jacobian, [3, 7], axis=1)))   # h0, x, Ws
    assert not columns["x"][:, T:].any()
    assert np.any(columns["x"][:, :T]) == (T > 0)


def test_index_in_arithmetic_is_a_constant():
    program = adcli.loads("input x = 0.7\nh = x\nrepeat 5 as t {\n    h = sin(h) + 0.1 * t * h - t\n}\n"
                          "output y = h\n")
    h = 0.7
    for t in range(5):
        h = np.sin(h) + 0.1 * t * h - t
    assert float(value(program, "y")) == pytest.approx(h, rel=1e-14)
    check_derivatives(program)


def test_nested_repeats_have_their_own_indices():
    source = """\
input A: mat[2, 3] = [[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]]
input x = 0.3
h = x
repeat 2 as i {
    repeat 3 as j {
        h = sin(h * A[i, j] + i - 0.5 * j)
    }
    repeat i + 1 as k {
        h = h + 0.01 * k * A[i, k]
    }
}
output y = h
"""
    program = adcli.loads(source)
    A = np.array([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]])
    h = 0.3
    for i in range(2):
        for j in range(3):
            h = np.sin(h * A[i, j] + i - 0.5 * j)
        for k in range(i + 1):
            h = h + 0.01 * k * A[i, k]
    assert float(value(program, "y")) == pytest.approx(h, rel=1e-14)
    check_derivatives(program)


def test_index_in_a_def_body_and_in_sizes():
    source = """\
dim n = 6
input v: vec[n] = linspace(-1, 1)
def partial_sums(v) {
    s = 0
    repeat n as t {
        s = s + sum(v[:t + 1]) * v[t]
    }
    return s
}
m = v[0:2]
repeat 3 as t {
    m = m + reshape(v[2 * t:2 * t + 2], 2)
}
output y = partial_sums(v)
output z = m
"""
    program = adcli.loads(source)
    v = np.linspace(-1, 1, 6)
    assert float(value(program, "y")) == pytest.approx(sum(v[:t + 1].sum() * v[t] for t in range(6)))
    np.testing.assert_allclose(value(program, "z"), v[0:2] + v[0:2] + v[2:4] + v[4:6], rtol=1e-15)
    check_derivatives(program)


def test_an_iteration_that_changes_nothing_does_not_end_an_indexed_loop():
    # a = 0 before the loop: the first iteration binds a to the same literal node,
    # but later iterations read other values of t
    program = adcli.loads("input x = 1.0\na = 0\nrepeat 4 as t {\n    a = t\n}\noutput y = x + a\n")
    assert float(value(program, "y")) == 4.0
    # a body that never reads its index still stops early, as a repeat without one
    program = adcli.loads("input x = 1.0\nrepeat 1000000000000 as t {\n    a = x\n}\noutput y = a\n")
    assert float(value(program, "y")) == 1.0


def test_without_as_nothing_changes():
    plain = adcli.loads("input x = 0.5\nh = x\nrepeat 3 {\n    h = tanh(2 * h)\n}\noutput y = h\n")
    indexed = adcli.loads("input x = 0.5\nh = x\nrepeat 3 as t {\n    h = tanh(2 * h)\n}\noutput y = h\n")
    assert [repr(n) for n in plain.graph.nodes] == [repr(n) for n in indexed.graph.nodes]
    assert [n.repeat for n in plain.graph.nodes] == [n.repeat for n in indexed.graph.nodes]
    assert float(value(plain, "y")) == float(value(indexed, "y"))


def test_graph_provenance_stays_correct(tmp_path):
    program = adcli.loads(RNN.format(T=4))
    marked = [n for n in program.graph.nodes if n.repeat is not None and n.op not in ("input", "const")]
    assert {n.repeat[0] for n in marked} == {1}
    assert sorted({n.repeat[1] for n in marked}) == [0, 1, 2, 3]
    assert {n.repeat[2:4] for n in marked} == {(4, 7)}   # count 4, line 7
    per_iteration = [[n.op for n in marked if n.repeat[1] == i] for i in range(4)]
    assert all(ops == per_iteration[0] for ops in per_iteration)
    path = tmp_path / "rnn.ad"
    path.write_text(RNN.format(T=4))
    result = CliRunner().invoke(cli, ["graph", str(path), "--format", "text"])
    assert result.exit_code == 0, result.output
    assert "repeats collapsed" in result.output and "repeat ×4 (line 7): stands for 4 nodes" in result.output
    assert "shown expanded" not in result.output


# -- errors --------------------------------------------------------------------------------------

def run(*args, input=None):
    return CliRunner().invoke(cli, [str(a) for a in args], input=input)


@pytest.fixture
def ad(tmp_path):
    def write(text: str) -> str:
        path = tmp_path / "loop.ad"
        path.write_text(text)
        return str(path)
    return write


ERRORS = [
    # (source, line, column, message)
    ("input x = 1.0\nh = x\nrepeat 3 as t {\n    t = h\n}\noutput y = h\n", 4, 5,
     "'t' is the index of the repeat at line 3 and cannot be assigned in its body"),
    ("input x = 1.0\nh = x\nrepeat 0 as t {\n    repeat 2 {\n        t = h\n    }\n}\noutput y = h\n", 5, 9,
     "'t' is the index of the repeat at line 3 and cannot be assigned in its body"),
    ("input x = 1.0\nh = x\nrepeat 3 as t {\n    repeat 2 as t {\n        h = h\n    }\n}\noutput y = h\n", 4, 17,
     "'t' is already the index of the repeat at line 3; a nested repeat needs an index of its own"),
    ("input x = 1.0\nh = x\nrepeat 3 as h {\n    x = x\n}\noutput y = h\n", 3, 13,
     "'h' already names a value; a loop index needs a new name"),
    ("dim n = 2\ninput x = 1.0\nrepeat 3 as n {\n    x = x\n}\noutput y = x\n", 3, 13,
     "'n' is already declared; a loop index needs a new name"),
    ("const lab: int = 1\ninput x: vec[3] = [1, 2, 3]\nrepeat 3 as lab {\n    x = x * 2\n}\n"
     "output y = x[lab]\n", 3, 13, "'lab' is already declared; a loop index needs a new name"),   # it hid the const
    ("input x = 1.0\nrepeat 3 as sum {\n    x = x\n}\noutput y = x\n", 2, 13,
     "'sum' is a built-in function and cannot name a loop index"),
    ("input x: vec[3] = [1, 2, 3]\nh = 0\nrepeat 4 as t {\n    h = h + x[t]\n}\noutput y = h\n", 4, 15,
     "index 3 is out of range for an axis of length 3 in vec[3] (in iteration t = 3)"),
    ("input A: mat[4, 2] = ones\nh = 0\nrepeat 3 as i {\n    repeat 2 as j {\n"
     "        h = h + sum(A[i + j:2 * i + 1, j])\n    }\n}\noutput y = h\n", 5, 23,
     # (i = 0, j = 1 makes the empty slice 1:1, a value: sum of nothing is 0)
     "slice 2:5 is out of range for an axis of length 4 in mat[4, 2] (in iteration i = 2, j = 0)"),
    ("input x = 1.0\nrepeat 2 as t {\n    x = x * t\n}\noutput y = x + t\n", 5, 16,
     "name 't' is not defined"),
    ("input x = 1.0\ndef f(a) = a * t\nrepeat 2 as t {\n    x = f(x)\n}\noutput y = x\n", 2, 16,
     "'t' is not visible inside def f: a def sees its parameters, dims, consts and earlier defs; "
     "pass it as a parameter (in iteration t = 0)"),
    ("input x: vec[4] = ones\nrepeat 2 as t {\n    x = x[q:]\n}\noutput y = x\n", 3, 11,
     "'q' is not a dim; a slice bound must be built from numbers, dims and loop indices (in iteration t = 0)"),
]


@pytest.mark.parametrize("source, line, column, message", ERRORS)
def test_index_errors(ad, source, line, column, message):
    path = ad(source)
    result = run("grad", path)
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    first, source_line, caret = result.stderr.splitlines()[:3]
    assert first == f"{path}:{line}:{column}: error: {message}"
    assert source_line.strip() == source.splitlines()[line - 1].strip()
    assert caret.index("^") - 2 == column - 1
    data = json.loads(run("grad", path, "--json").stderr)["error"]
    assert (data["line"], data["column"], data["message"], data["exit_code"]) == (line, column, message, 1)


def test_index_errors_from_the_api():
    with pytest.raises(NameProblem, match=re.escape("cannot be assigned in its body")):
        adcli.loads("input x = 1.0\nrepeat 1 as t {\n    t = x\n}\noutput y = x\n")
    with pytest.raises(ShapeProblem, match=re.escape("(in iteration t = 2)")):
        adcli.loads("input x: vec[2] = ones\nh = 0\nrepeat 3 as t {\n    h = h + x[t]\n}\noutput y = h\n")


def test_as_is_still_a_name_outside_repeat():
    program = adcli.loads("input x = 2.0\nas = x * 3\nh = as\nrepeat 2 as i {\n    h = h + as * i\n}\n"
                          "output y = h\n")
    assert float(value(program, "y")) == 12.0


def test_show_and_trace_write_a_moving_key_with_the_index(tmp_path):
    """A body's index node keeps iteration 0's key and how far each part moves per
    iteration (Node.key_steps): show and trace write it as the program does, X[t + 1],
    not as iteration 0's X[1] (which a trace row of iteration 300,000 showed)."""
    from click.testing import CliRunner

    from adcli.cli import cli

    source = ("const X: mat[2001, 3] = randn(seed=1)\ninput s: vec[3] = [0.1, 0.2, 0.3]\n"
              "repeat 1000 as step {\n  s = sin(s * X[step + 1]) + X[2 * step, 0:3] + X[step:step + 1, 1]\n}\n"
              "output y = sum(s)\n")
    program = adcli.loads(source, loops="always")
    from adcli.show import ir_lines

    text = "\n".join(ir_lines(program.graph))
    for want in ("key=[step + 1]", "key=[2 * step, :]", "key=[step:step + 1, 1]"):
        assert want in text, text
    path = tmp_path / "moving.ad"
    path.write_text(source)
    out = CliRunner().invoke(cli, ["trace", str(path), "--mode", "reverse"])
    assert out.exit_code == 0, out.output
    assert "[step + 1]" in out.output and "[1]   vec[3]" not in out.output
