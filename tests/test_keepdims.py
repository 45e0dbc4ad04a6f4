"""keepdims=true on every reduction (issue 13, part 3): the reduced axes stay, of length 1,
as NumPy's keepdims=True keeps them, so the result broadcasts back against its argument
(x - max(x, axis=1, keepdims=true)). The values are NumPy's, the derivative is the same
map reshaped, and the counts are those without keepdims.

The derivatives are checked against finite differences, in both modes and on dense
tangents, by test_ops.py's keepdims cases; here are the shapes, values, counts and errors.
"""
import re
from pathlib import Path

import numpy as np
import pytest
import scipy.special as sp

import adcli
from adcli.errors import AdError

from conftest import fd_jacobian, jacobians

X = np.array([[0.5, -1.0, 2.0], [3.0, 0.25, -0.75]])
NUMPY = {"sum": np.sum, "mean": np.mean, "max": np.max, "min": np.min, "prod": np.prod,
         "logsumexp": sp.logsumexp}


def program(call, x=X):
    kind = "vec" if x.ndim == 1 else "mat"
    return adcli.loads(f"input x: {kind}[{', '.join(map(str, x.shape))}] = {x.tolist()}\noutput y = {call}")


@pytest.mark.parametrize("op", sorted(NUMPY))
@pytest.mark.parametrize("axis", [None, 0, 1, -1])
def test_values_and_shapes_are_numpys(op, axis):
    call = f"{op}(x, keepdims=true)" if axis is None else f"{op}(x, axis={axis}, keepdims=true)"
    p = program(call)
    want = NUMPY[op](X, axis=axis, keepdims=True)
    assert tuple(p.output_shape("y")) == want.shape
    np.testing.assert_allclose(p.evaluate()["y"], want, rtol=1e-15)


@pytest.mark.parametrize("x, shape", [(np.array([1.0, 2.0, 3.0]), (1,)), (X, (1, 1))])
def test_without_axis_a_vector_gives_vec_1_and_a_matrix_mat_1_1(x, shape):
    for op in list(NUMPY) + ["norm"]:
        p = program(f"{op}(x, keepdims=true)", x)
        assert tuple(p.output_shape("y")) == shape and p.evaluate()["y"].shape == shape, op
    np.testing.assert_allclose(program("norm(x, keepdims=true)").evaluate()["y"], [[np.linalg.norm(X)]],
                               rtol=1e-15)


def test_norm_takes_an_axis_and_keepdims_as_the_docs_say():
    kept = program("norm(x, axis=0, keepdims=true)").evaluate()["y"]
    np.testing.assert_allclose(kept, np.linalg.norm(X, axis=0, keepdims=True), rtol=1e-15)
    docs = (Path(__file__).resolve().parents[1] / "docs" / "language.md").read_text()
    assert "| `norm(x)`, `norm(x, ord, axis, keepdims)` | NumPy's `numpy.linalg.norm`" in docs
    assert "(`sum mean max min prod logsumexp norm`)" in docs


def test_false_is_the_default_and_a_scalar_stays_a_scalar():
    assert tuple(program("sum(x, axis=0, keepdims=false)").output_shape("y")) == (3,)
    assert adcli.loads("input s = 2\noutput y = sum(s, keepdims=true)").output_shape("y") == ()


@pytest.mark.parametrize("op", sorted(NUMPY) + ["norm"])
@pytest.mark.parametrize("axis", [None, 0, 1])
def test_counts_are_those_without_keepdims(op, axis):
    """The same work: only the shape of the result differs (a reshape moves nothing)."""
    if op == "norm" and axis is not None:
        return
    where = "" if axis is None else f", axis={axis}"
    kept = program(f"{op}(2 * x{where}, keepdims=true)")
    plain = program(f"{op}(2 * x{where})")
    for a, b in zip(jacobians(kept), jacobians(plain)):
        np.testing.assert_allclose(a.jacobian, b.jacobian, rtol=1e-15)
        counts_a, counts_b = a.cost.counts(), b.cost.counts()
        for figure in ("passes", "sweeps", "mults", "flops", "cached_values", "cached_inputs", "ops",
                       "values_moved"):
            assert counts_a[figure] == counts_b[figure], figure
        assert counts_a == kept.predict(a.mode).counts()


def test_the_kept_axis_broadcasts_back():
    """x - logsumexp(x, axis=1, keepdims=true) is log_softmax(x, axis=1), derivative included."""
    kept = program("x - logsumexp(x, axis=1, keepdims=true)")
    direct = program("log_softmax(x, axis=1)")
    np.testing.assert_allclose(kept.evaluate()["y"], direct.evaluate()["y"], rtol=1e-14, atol=1e-15)
    for a, b in zip(jacobians(kept), jacobians(direct)):
        np.testing.assert_allclose(a.jacobian, b.jacobian, rtol=1e-13, atol=1e-15)
    # a column (mat[2, 1]) and a row (mat[1, 3]) against the matrix
    p = program("x / sum(x * x, axis=1, keepdims=true) + mean(x, axis=0, keepdims=true)")
    want = X / np.sum(X * X, axis=1, keepdims=True) + np.mean(X, axis=0, keepdims=True)
    np.testing.assert_allclose(p.evaluate()["y"], want, rtol=1e-15)
    fwd, rev = jacobians(p)
    np.testing.assert_allclose(fwd.jacobian, rev.jacobian, rtol=1e-13)
    np.testing.assert_allclose(fwd.jacobian, fd_jacobian(p), rtol=1e-7, atol=1e-9)


def test_show_and_trace_write_keepdims():
    from adcli.show import expression

    p = program("max(x, axis=1, keepdims=true)")
    node = next(n for n in p.graph.nodes if n.op == "max")
    assert expression(p.graph, node) == "max(v1, axis=1, keepdims=true)"


@pytest.mark.parametrize("call, message, at", [
    ("sum(x, keepdims=1)", "keepdims takes true or false, got '1'", "1)"),
    ("sum(x, axis=0, keepdims=yes)", "keepdims takes true or false, got 'yes'", "yes"),
    ("sum(x, keepdims=True)", "keepdims takes true or false, got 'True'", "True"),
    ("max(x, keepdims=x > 0)", "keepdims takes true or false, got 'x > 0'", "x > 0"),
    ("softmax(x, keepdims=true)", "softmax has no argument 'keepdims': its value has the shape of its argument",
     "true"),
    ("log_softmax(x, axis=0, keepdims=false)", "log_softmax has no argument 'keepdims'", "false"),
    ("norm(x, axis=0, keep=true)", "norm has no argument 'keep'", "norm"),
    ("sum(x, keep=true)", "sum has no argument 'keep'", "sum"),
])
def test_a_bad_keepdims_is_one_sentence_with_a_caret(call, message, at):
    line = f"output y = {call}"
    column = line.index(at) + 1
    with pytest.raises(AdError, match=re.escape(message)) as caught:
        adcli.loads(f"input x: mat[2, 3] = ones\n{line}", "k.ad")
    rendered = caught.value.render()
    assert rendered.startswith(f"k.ad:2:{column}: error: ")
    assert rendered.splitlines()[-1] == " " * (column + 1) + "^"   # the source line is indented by 2
