"""Tensors of any rank (issue 14, item 1): samples/deep_stack.ad against a NumPy
transcription written by hand, rank-3 loops against the unrolled program, derivatives
inside the language through @ on stacks, labels, and the refusals. The rules themselves are
checked op by op in tests/test_ops.py (the T3 cases) and by the random programs of
tests/progen.py."""
import numpy as np
import pytest

import adcli
from adcli.errors import AdError

from conftest import SAMPLE
from test_real_samples import central_jacobian


def deep_stack_numpy(Ws, bs, X, Y):
    """samples/deep_stack.ad in NumPy: layer by layer, then the decay from each layer's Gram matrix."""
    Hs = X
    for l in range(Ws.shape[0]):
        Hs = np.tanh(Ws[l] @ Hs + bs[l][:, None])
    decay = sum(np.sum((W @ W.T) ** 2) for W in Ws)
    return np.mean((Hs - Y) ** 2) + 0.01 * decay


def test_deep_stack_sample_against_numpy():
    program = adcli.load(SAMPLE["deep_stack.ad"])
    given = program.resolve_inputs()
    Ws, bs = np.asarray(given["Ws"]), np.asarray(given["bs"])
    assert Ws.shape == (4, 5, 5) and bs.shape == (4, 5)
    rng = np.random.default_rng   # the consts, made as the language documents randn
    X, Y = rng(3).standard_normal((5, 3)), 0.5 * rng(4).standard_normal((5, 3))
    assert program.evaluate()["loss"] == pytest.approx(deep_stack_numpy(Ws, bs, X, Y), rel=1e-12)
    split = Ws.size

    def f(flat):
        return np.array([deep_stack_numpy(flat[:split].reshape(Ws.shape), flat[split:].reshape(bs.shape), X, Y)])

    fd = central_jacobian(f, np.concatenate([Ws.ravel(), bs.ravel()]))
    for mode in ("forward", "reverse"):
        jac = program.jacobian(mode=mode, measure_memory=False).jacobian
        np.testing.assert_allclose(jac, fd, rtol=1e-7, atol=1e-9)


def test_deep_stack_loop_reads_the_stack_with_its_index():
    """Ws[l] with the loop index stays a loop (loops="always"): the same values, derivatives
    and counts as the unrolled program."""
    text = SAMPLE["deep_stack.ad"].read_text()
    looped, unrolled = adcli.loads(text, loops="always"), adcli.loads(text, loops="never")
    assert any(node.op == "loop" for node in looped.graph.nodes)
    for mode in ("forward", "reverse"):
        a = looped.jacobian(mode=mode, measure_memory=False)
        b = unrolled.jacobian(mode=mode, measure_memory=False)
        np.testing.assert_allclose(a.jacobian, b.jacobian, rtol=1e-13, atol=1e-15)
        assert a.cost.mults_derivative == b.cost.mults_derivative
        assert looped.predict(mode).counts() == a.cost.counts()


def test_batched_matmul_counts_b_m_k_n():
    program = adcli.loads("input A: tensor[3, 2, 4] = rand(seed=1)\ninput B: tensor[3, 4, 5] = rand(seed=2)\n"
                          "output y = A @ B")
    fwd = program.jacobian(mode="forward", measure_memory=False)
    assert fwd.cost.mults_primal == 3 * 2 * 4 * 5
    assert fwd.cost.flops_primal == 2 * 3 * 2 * 4 * 5
    # identity Seeds through a product only select entries: no derivative work either way
    assert fwd.cost.mults_derivative == 0
    np.testing.assert_allclose(program.evaluate()["y"], np.matmul(*(np.asarray(program.resolve_inputs()[n])
                                                                    for n in "AB")))


def test_derivatives_inside_the_language_through_stacks():
    """grad(f) written out as nodes (adcli.derive) where f uses @ on stacks, transpose with
    axes and a reduction over several axes: the program's own reverse mode agrees."""
    text = ("input W: tensor[2, 3, 3] = 0.5 * randn(seed=1)\nconst v: vec[3] = [1, -2, 0.5]\n"
            "def f(W) = sum(tanh(W @ v) ^ 2) + sum(max(W @ transpose(W, [0, 2, 1]), axis=[0, 2]))\n"
            "output g = grad(f)(W)\noutput y = f(W)")
    program = adcli.loads(text)
    g = program.evaluate()["g"]
    rev = program.jacobian(mode="reverse", wrt=["W"], measure_memory=False).jacobian
    np.testing.assert_allclose(np.ravel(g), rev[-1], rtol=1e-12, atol=1e-14)   # the last row: y


def test_rank_three_labels_name_every_index():
    program = adcli.loads("input X: tensor[2, 1, 2] = 1\noutput y = sum(X * X, axis=[1, 2])")
    result = program.jacobian(mode="reverse", measure_memory=False)
    assert result.columns == ["X[0,0,0]", "X[0,0,1]", "X[1,0,0]", "X[1,0,1]"]


def test_stacks_read_from_a_npy_file(tmp_path):
    cube = np.arange(8.0).reshape(2, 2, 2)
    np.save(tmp_path / "cube.npy", cube)
    (tmp_path / "m.ad").write_text('const C = load("cube.npy")\ninput x: vec[2] = [1, 2]\noutput y = C @ x\n')
    np.testing.assert_allclose(adcli.load(tmp_path / "m.ad").evaluate()["y"], cube @ [1, 2])


@pytest.mark.parametrize("line, message", [
    ("output y = transpose(X, [0, 0, 1])",
     "transpose of tensor[2, 3, 4] needs its 3 axes in a new order (a permutation of 0 … 2), got (0, 0, 1)"),
    ("output y = squeeze(X, 1)", "squeeze drops axes of length 1, but axis 1 of tensor[2, 3, 4] has length 3"),
    ("output y = sum(X, axis=[0, -3])", "axis=(0, -3) names an axis twice"),
    ("output y = sum(X, axis=[0, 3])", "axis=3 is out of range for tensor[2, 3, 4]"),
    ("output y = X @ X", "inner dimensions differ in tensor[2, 3, 4] @ tensor[2, 3, 4] (4 vs 3)"),
    ("const B: tensor[3, 4, 2] = 1\noutput y = X @ B",
     "the stacks of tensor[2, 3, 4] @ tensor[3, 4, 2] do not broadcast (vec[2] and vec[3])"),
    ("output y = expand_dims(X, 4)", "axis=4 is out of range for expand_dims of a tensor[2, 3, 4] (axes 0 … 3)"),
    ("output y = reshape(X, 5, 5)", "cannot reshape tensor[2, 3, 4] (24 elements) to mat[5, 5]"),
])
def test_refusals(line, message):
    with pytest.raises(AdError) as info:
        adcli.loads(f"input X: tensor[2, 3, 4] = 1\n{line}")
    assert message in str(info.value)
