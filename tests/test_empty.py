"""Empty slices: x[0:0], x[2:2], A[1:1, :] are values of no elements that flow through
everything (sum of nothing is 0, concat with nothing, a product over a zero dimension, a
Jacobian with zero rows, JSON, the CLI); reductions with no value over nothing are refused."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

import adcli
from adcli.cli import cli
from conftest import fd_jacobian, jacobians

# the motivating case: differences of neighbours, written with slices, at n = 1
SMOOTH = """
dim n = 4
input x: vec[n] = linspace(0.5, 2)
d = x[1:n] - x[0:n-1]
output f = sum(d^2) + x[0]
"""

EMPTY = """
input x: vec[2] = [0.5, -1]
input A: mat[3, 2] = [[1, 2], [3, 4], [5, 6]]
d = x[1:1]
E = A[2:2, :]
output s = sum(d^2) + prod(exp(d)) + norm(d) + x[0]
output j = concat(x, d, sin(d)) * 2
output p = concat(d @ A[0:0, :], A[:, 0:0] @ E[:, 0:0].T @ A[0:0, 0]) + x[0]
output e = stack(d, d * x[0])
output r = sum(E, axis=0) + sum(A[:, 1:1], axis=1)[0:2]
output t = E.T * 3
"""


@pytest.mark.parametrize("n, want", [(4, 3 * 0.5 ** 2 + 0.5), (1, 0.5)])
def test_neighbour_differences_work_for_n_equal_1(n, want):
    program = adcli.loads(SMOOTH, set={"n": n})
    assert program.evaluate()["f"] == pytest.approx(want)
    for result in jacobians(program):
        np.testing.assert_allclose(result.jacobian, fd_jacobian(program), atol=1e-8)
        assert result.cost.counts() == program.predict(result.mode).counts()


def test_empty_values_have_numpys_values_and_shapes():
    got = adcli.loads(EMPTY).evaluate()
    assert got["s"] == 1.5 and got["j"].tolist() == [1.0, -2.0]
    assert got["p"].tolist() == [0.5] * 5 and got["r"].tolist() == [0.0, 0.0]
    assert got["e"].shape == (2, 0) and got["t"].shape == (2, 0)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_empty_values_differentiate_in_both_modes(dtype):
    program = adcli.loads(EMPTY)
    fd = fd_jacobian(program)
    assert fd.shape == (1 + 2 + 5 + 0 + 2 + 0, 8)
    for chunk in (None, 1, 3):
        for result in jacobians(program, chunk=chunk, dtype=dtype):
            assert result.jacobian.shape == fd.shape
            np.testing.assert_allclose(result.jacobian, fd, atol=1e-4 if dtype == "float32" else 1e-8)
            assert result.cost.counts() == program.predict(result.mode, chunk=chunk).counts()
            assert result.blocks["e"]["A"].shape == (2, 0, 3, 2)


def test_only_empty_outputs_make_no_reverse_sweep():
    program = adcli.loads("input x: vec[3] = 1\noutput y = x[1:1] * 2\n")
    fwd, rev = jacobians(program)
    assert fwd.jacobian.shape == rev.jacobian.shape == (0, 3)
    assert (rev.cost.passes, rev.cost.sweeps, rev.cost.primal_sweeps) == (0, 0, 1)
    assert (fwd.cost.passes, fwd.cost.sweeps) == (3, 1)
    assert program.vjp({"y": np.zeros(0)}).cotangent["x"].tolist() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("args", [["grad"], ["grad", "--mode", "reverse", "--json"], ["grad", "--json"],
                                  ["compare"], ["trace", "--mode", "reverse"], ["show"], ["graph"]])
def test_the_cli_shows_empty_values(tmp_path, args):
    path = tmp_path / "empty.ad"
    path.write_text(EMPTY)
    result = CliRunner().invoke(cli, args + [str(path)])
    assert result.exit_code == 0, result.output
    if "--json" in args:
        data = json.loads(result.output)
        assert data["value"]["e"] == [[], []] and data["value"]["r"] == [0.0, 0.0]


@pytest.mark.parametrize("text, message, column", [
    ("mean(x[1:1])", "mean of no elements is undefined (vec[0])", 12),
    ("max(A[0:0, :], axis=0)", "max of no elements is undefined (mat[0, 2], axis=0)", 12),
    ("softmax(A[:, 1:1], axis=1)", "softmax of no elements is undefined (mat[3, 0], axis=1)", 12),
    ("x[2:1]", "slice 2:1 ends before it starts (an empty slice is lo:lo, a reversed one lo:hi:-1)", 14),
    ("x[0:4]", "slice 0:4 is out of range for an axis of length 3 in vec[3]", 14),
])
def test_refusals(tmp_path, text, message, column):
    path = tmp_path / "bad.ad"
    path.write_text(f"input x: vec[3] = 1\ninput A: mat[3, 2] = 1\noutput y = {text}\n")
    result = CliRunner().invoke(cli, ["grad", str(path)])
    assert result.exit_code == 1, result.output
    assert f"bad.ad:3:{column}: error: {message}" in result.output


def test_a_reduction_over_a_nonempty_axis_of_an_empty_matrix_is_fine():
    program = adcli.loads("input A: mat[3, 2] = 1\noutput y = max(A[0:0, :], axis=1)\n")
    assert program.evaluate()["y"].shape == (0,)
