"""Integer data and gathers: integer consts (int, ivec, imat), x[idx] with NumPy's
integer-array indexing, take_along_axis, scatter_add. Values against NumPy; repeated
indices' derivatives add; forward = reverse = central differences; prediction = count;
the counts the docs give (a scatter-add's flops); errors with carets."""
import numpy as np
import pytest
from click.testing import CliRunner

import adcli
from adcli.cli import cli
from adcli.errors import ValueProblem
from conftest import fd_jacobian, jacobians

X = np.array([0.5, -1.0, 2.0, 0.25, 3.0])
A = np.arange(1.0, 13.0).reshape(4, 3) / 4

SOURCE = """
const idx: ivec[6] = [4, 0, 4, -1, 2, 4]
const faces: imat[2, 3] = [[0, 1, 2], [2, 3, 0]]
const labels: ivec[4] = [2, 0, 1, 2]
const rows: imat[4, 1] = [[2], [0], [1], [2]]
const cols: imat[2, 3] = [[3, 0, 3], [1, 1, 0]]
input x: vec[5] = [0.5, -1, 2, 0.25, 3]
input A: mat[4, 3] = [[1, 2, 3], [4, 5, 6], [7, 8, 9], [10, 11, 12]] / 4
output g = x[idx] * x[idx]
output m = sin(x[faces])
output r = A[[3, 0, 3], :] + A[[1, 1, 2]]
output c = A[:, [2, 2]] * A[:, 0:2]
output p = A[[0, 1, 2, 3], labels] + A[3, [0, 0]][0]
output t = take_along_axis(A, rows, axis=1)[1:3, :] * take_along_axis(A, cols, axis=0)[0:2, 0:1]
output v = take_along_axis(x, idx, axis=0)
output s = scatter_add(x * x, [1, 0, 1, 1, 2], 3)
output w = scatter_add(A, labels, 3) + scatter_add(exp(x[faces]), faces, 4)[0]
"""


def numpy_outputs(x, A):
    idx = np.array([4, 0, 4, -1, 2, 4])
    faces = np.array([[0, 1, 2], [2, 3, 0]])
    labels = np.array([2, 0, 1, 2])
    s = np.zeros(3)
    np.add.at(s, [1, 0, 1, 1, 2], x * x)
    w = np.zeros((3, 3))
    np.add.at(w, labels, A)
    corners = np.zeros(4)
    np.add.at(corners, faces, np.exp(x[faces]))
    return {"g": x[idx] ** 2, "m": np.sin(x[faces]),
            "r": A[[3, 0, 3], :] + A[[1, 1, 2]], "c": A[:, [2, 2]] * A[:, 0:2],
            "p": A[[0, 1, 2, 3], labels] + A[3, [0, 0]][0],
            "t": np.take_along_axis(A, np.array([[2], [0], [1], [2]]), axis=1)[1:3, :]
                 * np.take_along_axis(A, np.array([[3, 0, 3], [1, 1, 0]]), axis=0)[0:2, 0:1],
            "v": np.take_along_axis(x, idx, axis=0), "s": s, "w": w + corners[0]}


def test_values_are_numpys():
    program = adcli.loads(SOURCE)
    got = program.evaluate()
    for name, value in numpy_outputs(X, A).items():
        np.testing.assert_allclose(got[name], value, rtol=1e-14, err_msg=name)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_derivatives_forward_reverse_and_differences_agree(dtype):
    program = adcli.loads(SOURCE)
    fd = fd_jacobian(program)
    tol = 1e-7 if dtype == "float64" else 1e-4
    for chunk in (None, 1, 4):
        fwd, rev = jacobians(program, chunk=chunk, dtype=dtype)
        np.testing.assert_allclose(fwd.jacobian, fd, atol=tol, rtol=tol)
        np.testing.assert_allclose(rev.jacobian, fd, atol=tol, rtol=tol)
        for result in (fwd, rev):
            assert result.cost.counts() == program.predict(result.mode, chunk=chunk).counts()


def test_repeated_indices_add_their_derivatives():
    # y = sum(x[[0, 0, 0, 1]] * c): dy/dx0 = c0 + c1 + c2, dy/dx1 = c3
    program = adcli.loads("const i: ivec[4] = [0, 0, 0, 1]\ninput x: vec[2] = [1, 2]\n"
                          "const c: vec[4] = [1, 10, 100, 1000]\noutput y = sum(x[i] * c)\n")
    for result in jacobians(program):
        assert result.jacobian.tolist() == [[111.0, 1000.0]]
    vjp = program.vjp({"y": 2.0})
    assert vjp.cotangent["x"].tolist() == [222.0, 2000.0]
    # and the Jacobian of the gather itself, one row per gathered element
    program = adcli.loads("input x: vec[3] = 1\noutput y = x[[2, 0, 2]]\n")
    for result in jacobians(program):
        assert result.jacobian.tolist() == [[0, 0, 1], [1, 0, 0], [0, 0, 1]]


def test_scatter_add_derivative_is_the_gather():
    program = adcli.loads("input v: vec[4] = [1, 2, 3, 4]\noutput y = scatter_add(v, [2, 0, 2, 2], 3)\n")
    want = np.zeros((3, 4))
    want[[2, 0, 2, 2], range(4)] = 1
    for result in jacobians(program):
        np.testing.assert_array_equal(result.jacobian, want)
    assert program.evaluate()["y"].tolist() == [2.0, 0.0, 8.0]


def test_counts_follow_the_docs():
    """A gather moves data (0 flops); its reverse adds where an element repeats: a place
    reached c ≥ 2 times costs c flops per direction (as sum of c values). scatter_add costs
    the same in its primal and its JVP, and its VJP is a gather (0)."""
    gather = adcli.loads("input x: vec[3] = 1\noutput y = sum(x[[0, 0, 0, 1, 2, 2]])\n")
    rev = gather.predict("reverse")
    # the sum's VJP broadcasts (0 flops); the scatter-add: 3 into x0, 2 into x2, x1 a copy
    assert (rev.flops_primal, rev.flops_derivative) == (6, 5)
    assert gather.predict("forward").flops_derivative == 3 * 6   # the sum of 6 tangents, 3 directions
    scatter = adcli.loads("input v: vec[4] = 1\noutput y = scatter_add(v, [1, 1, 0, 2], 3)\n")
    fwd, rev = scatter.predict("forward"), scatter.predict("reverse")
    assert scatter.predict("reverse").flops_primal == 2
    assert fwd.flops_derivative == 4 * 2     # 4 directions, 2 contributions meet at place 1
    assert rev.flops_derivative == 0          # a gather of the cotangent
    assert fwd.mults_derivative == rev.mults_derivative == 0
    # no repeats: a pure scatter, Seeds stay Seeds, nothing counted
    plain = adcli.loads("input v: vec[3] = 1\noutput y = scatter_add(v, [2, 0, 1], 4)\n")
    assert plain.predict("forward").flops_derivative == 0


def test_cross_entropy_with_labels():
    """The motivating case: -mean of the log-probabilities at the labels, without a
    one-hot matrix, against the one-hot form."""
    body = """
dim n = 5
dim k = 3
const labels: ivec[n] = [2, 0, 1, 2, 2]
input W: mat[4, k] = 0.3 * randn(seed=1)
const X: mat[n, 4] = randn(seed=2)
logp = X @ W - reshape(logsumexp(X @ W, axis=1), n, 1)
"""
    labels_rows = "const rows: imat[n, 1] = [[2], [0], [1], [2], [2]]\n"
    take = adcli.loads(body + labels_rows + "output loss = -mean(take_along_axis(logp, rows, axis=1))\n")
    paired = adcli.loads(body + "const ids: ivec[n] = arange\noutput loss = -mean(logp[ids, labels])\n")
    onehot = adcli.loads(body + "const Y: mat[n, k] = [[0, 0, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 1]]\n"
                                "output loss = -sum(Y * logp) / n\n")
    want = onehot.jacobian(mode="reverse")
    for program in (take, paired):
        for result in jacobians(program):
            np.testing.assert_allclose(result.value["loss"], want.value["loss"], rtol=1e-14)
            np.testing.assert_allclose(result.jacobian, want.jacobian, rtol=1e-12, atol=1e-15)


def test_integer_data_forms():
    program = adcli.loads("""
dim n = 3
const a: ivec[4] = arange
const b: imat[2, 3] = arange - 1
const c: ivec[3] = randint(5, seed=3)
const d: ivec[n] = n - 1
const e: imat[3, 2] = [[0, 1]]
const f: int = 2
input x: vec[6] = [0, 1, 2, 3, 4, 5]
output y = concat(x[a], x[b][1, :], x[c], x[d], x[e][:, 1], x[[f, f]])
""")
    c = np.random.default_rng(3).integers(0, 5, 3)
    want = np.concatenate([[0, 1, 2, 3], [2, 3, 4], c, [2, 2, 2], [1, 1, 1], [2, 2]])
    assert program.evaluate()["y"].tolist() == want.tolist()


def test_show_and_trace_name_the_gathers(tmp_path):
    path = tmp_path / "g.ad"
    path.write_text("const i: ivec[3] = [2, 0, 2]\ninput x: vec[3] = 1\noutput y = scatter_add(x[i], i, 3)\n")
    shown = CliRunner().invoke(cli, ["show", str(path)])
    assert shown.exit_code == 0, shown.output
    assert "gather v1 key=[[2, 0, 2]] adds=2" in shown.output
    assert "scatter_add v2 index=[2, 0, 2] adds=2" in shown.output
    traced = CliRunner().invoke(cli, ["trace", "--mode", "reverse", str(path)])
    assert traced.exit_code == 0, traced.output
    assert "scatter_add(v̄2, [[2, 0, 2]])" in traced.output


def test_integer_data_written_in_an_index():
    """Integer data made in place where indices go: arithmetic on integer consts (lab + 1),
    their slices and elements, reshape and .T of them (an ivec made a column for
    take_along_axis), a loop index among them; values are NumPy's, derivatives agree."""
    program = adcli.loads("""
dim n = 3
const lab: ivec[n] = [0, 1, 1]
const pairs: imat[2, 2] = [[0, 2], [1, 0]]
const k: int = 1
input x: vec[4] = [0.5, -1, 2, 3]
input A: mat[n, 2] = [[1, 2], [3, 4], [5, 6]]
output a = x[lab + 1] * x[2 * lab - lab[k]]
output b = take_along_axis(A, reshape(1 - lab, n, 1), axis=1)
output c = A[lab[0:2], :] + A[pairs[:, 1], transpose(pairs)[0, :]]
output d = scatter_add(x[0:3], lab + k, 3) + x[[0, 2] + lab[2]] [0]
output e = x[0:lab[2] + 2] * 2
output g = x[concat(lab, [3])] + sum(x[stack(k, 0, k)])
s = 0
repeat n as t {
    s = s + x[lab[t] + t]
}
output f = s
""")
    x = np.array([0.5, -1, 2, 3])
    A_ = np.arange(1.0, 7.0).reshape(3, 2)
    lab = np.array([0, 1, 1])
    pairs = np.array([[0, 2], [1, 0]])
    d = np.zeros(3)
    np.add.at(d, lab + 1, x[0:3])
    want = {"a": x[lab + 1] * x[2 * lab - lab[1]],
            "b": np.take_along_axis(A_, (1 - lab).reshape(3, 1), axis=1),
            "c": A_[lab[0:2], :] + A_[pairs[:, 1], pairs.T[0, :]],
            "d": d + x[[1, 3]][0], "e": x[0:3] * 2,
            "g": x[[0, 1, 1, 3]] + x[[1, 0, 1]].sum(), "f": sum(x[lab[t] + t] for t in range(3))}
    got = program.evaluate()
    for name, value in want.items():
        np.testing.assert_allclose(got[name], value, rtol=1e-15, err_msg=name)
    fd = fd_jacobian(program)
    for result in jacobians(program):
        np.testing.assert_allclose(result.jacobian, fd, rtol=1e-8, atol=1e-9)
    declared = adcli.loads("""
const lab: ivec[3] = [2, 0, 1]
const column: imat[3, 1] = reshape(lab, 3, 1)
const first: ivec[2] = lab[0:2] + 1
const both: imat[2, 3] = stack(lab, concat(first, [0]))
output y = 1
""").graph.builder.int_consts
    assert declared["column"].tolist() == [[2], [0], [1]] and declared["first"].tolist() == [3, 1]
    assert declared["both"].tolist() == [[2, 0, 1], [3, 1, 0]]


@pytest.mark.parametrize("text, message, column", [
    ("input i: ivec[3]\noutput y = 1", "input i cannot be integer data: inputs are differentiated; "
     "declare it `const i: ...`", 10),
    ("const i: ivec[2] = [0, 3]\ninput x: vec[3] = 1\noutput y = x[i]",
     "index 3 (element 1) is out of range for an axis of length 3 in vec[3]", 14),
    ("input x: vec[3] = 1\noutput y = x[[0, -4]]",
     "index -4 (element 1) is out of range for an axis of length 3 in vec[3]", 14),
    ("const i: ivec[2] = [0, 1]\ninput x: vec[3] = 1\noutput y = x + i",
     "'i' is integer data (ivec[2]): it can only index, as in x[i], take_along_axis(x, i, axis=…) "
     "or scatter_add(v, i, n)", 16),
    ("const i: ivec[2] = [0.5, 1]\noutput y = 1", "integer data must be an integer, got 0.5", 21),
    ("const i: ivec[2] = [0, 1]\nconst j: ivec[3] = [0, 1, 1]\ninput A: mat[2, 2] = 1\noutput y = A[i, j]",
     "the index arrays do not broadcast together: ivec[2], ivec[3]", 12),
    ("const i: ivec[3] = [0, 1, 3]\ninput v: vec[3] = 1\noutput y = scatter_add(v, i, 3)",
     "index 3 (element 2) is out of range for an axis of length 3", 27),
    ("const i: ivec[2] = [0, 1]\ninput v: vec[3] = 1\noutput y = scatter_add(v, i, 3)",
     "scatter_add needs one index per leading element of the values: vec[3] with ivec[2]", 12),
    ("const i: ivec[2] = [0, 1]\ninput A: mat[2, 2] = 1\noutput y = take_along_axis(A, i, axis=1)",
     "take_along_axis needs indices with the value's dimensions: mat[2, 2] with ivec[2]", 12),
    ("const i: imat[2, 1] = [[0], [1]]\ninput A: mat[2, 2] = 1\noutput y = take_along_axis(A, i)",
     "take_along_axis of a matrix needs axis=0 or axis=1", 12),
    ("input x: vec[3] = 1\noutput y = take_along_axis(x, x, axis=0)",
     "take_along_axis takes integer data as its indices: an integer const or a list of whole numbers", 31),
    ("const i: ivec[2] = [0, 2]\ninput x: vec[3] = 1\noutput y = x[i + 1]",
     "index 3 (element 1) is out of range for an axis of length 3 in vec[3]", 14),
    ("const i: ivec[2] = [0, 2]\ninput x: vec[3] = 1\noutput y = x[i / 2]",
     "'i' is integer data (ivec[2]); as an index, integer data combines only with whole numbers, dims, "
     "loop indices and other integer data, by + - *, slices, reshape, concat and .T", 14),
    ("const i: ivec[2] = [0, 2]\ninput x: vec[3] = 1\noutput y = x[abs(i)]",
     "this is not integer data: as an index, integer data combines only with", 14),
    ("const i: ivec[2] = [0, 2]\ninput x: vec[3] = 1\noutput y = x[0:i]",
     "'i' is integer data (ivec[2]), where a slice bound is one whole number (such as i[0])", 16),
    ("const i: ivec[2] = [0, 2]\ninput x: vec[3] = 1\noutput y = x[i[2]]",
     "index 2 is out of range for an axis of length 2 in ivec[2]", 16),
    ("const i: ivec[2] = [0, 2]\ninput A: mat[2, 2] = 1\noutput y = take_along_axis(A, reshape(i, 1, 3), axis=1)",
     "cannot reshape ivec[2] (2 elements) to imat[1, 3]", 31),
    ("const i: ivec[2] = [0, 2]\ninput x: vec[3] = 1\noutput y = x[concat(i, [[0]])]",
     "concat of integer data joins ivecs, or imats of as many columns, got ivec[2], imat[1, 1]", 14),
    ("input x: vec[3] = 1\noutput y = x[arange(3)]",
     "arange(...) makes integer data; use it as the value of an integer const, e.g. "
     "`const idx: ivec[3] = arange`", 14),
])
def test_errors_point_at_the_problem(tmp_path, text, message, column):
    path = tmp_path / "bad.ad"
    path.write_text(text + "\n")
    result = CliRunner().invoke(cli, ["grad", str(path)])
    assert result.exit_code == 1, result.output
    line = text.count("\n") + 1 if "output y = 1" not in text else 1
    assert f"bad.ad:{line}:{column}: error: {message}" in result.output, result.output
    assert "^" in result.output


def test_constant_expressions_gather_by_integer_consts():
    """Integer consts index in constant data as in the program: a gather, take_along_axis and
    scatter_add of a const, made on the host; and made again from a const a run sets."""
    program = adcli.loads("""
dim n = 3
dim d = 2
const X: mat[4, d] = [[1, 2], [3, 4], [5, 6], [7, 8]]
const lab: ivec[n] = [0, 3, 3]
const rows: imat[4, 1] = [[1], [0], [1], [0]]
const k: int = 2
const S: mat[n, d] = X[lab, :]
const T = take_along_axis(X, rows, axis=1)
const U = scatter_add(X, [0, 1, 1, k], 3)
const V = X[lab, k - 1]
input w: vec[d] = [1, -1]
output y = S @ w
output z = sum(T) + sum(U @ w) + sum(V)
""")
    X_ = np.arange(1.0, 9.0).reshape(4, 2)
    lab = np.array([0, 3, 3])
    U = np.zeros((3, 2))
    np.add.at(U, [0, 1, 1, 2], X_)
    values = program.evaluate()
    np.testing.assert_array_equal(values["y"], X_[lab] @ [1, -1])
    T = np.take_along_axis(X_, np.array([[1], [0], [1], [0]]), axis=1)
    assert values["z"] == pytest.approx(T.sum() + (U @ [1, -1]).sum() + X_[lab, 1].sum())
    X2 = -X_
    np.testing.assert_array_equal(program.evaluate(at={"X": X2})["y"], X2[lab] @ [1, -1])
    with pytest.raises(ValueProblem, match=r"^'lab' is integer data \(ivec\[3\]\): it can only index"):
        adcli.loads("const lab: ivec[3] = [0, 1, 1]\nconst c: vec[3] = 2 * lab\noutput y = sum(c)\n")
