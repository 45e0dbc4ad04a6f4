"""Scales that wait (adcli.tangents.ScaledDense): a dense tangent scaled elementwise keeps
the scale apart until a rule needs the product; further scalings multiply the scale. Counts
worked out by hand, values against NumPy by hand and the other mode, and the plans' shape
(a strided slice for the identity's diagonal, one product where two scalings were)."""
import subprocess
import sys

import numpy as np
import pytest

import adcli

SQUARE_MAP = """\
dim n = {n}
const A: mat[n, n] = randn(seed=1) / sqrt(n)
input x: vec[n] = randn(seed=2)
output y = tanh(A @ x) * x
"""

DAMPED = """\
dim N = {N}
const t: vec[N] = linspace(0, 10)
input a = 1.5
input k = 0.3
output y = a * exp(-k * t) * cos(3 * t)
"""


def test_square_map_forward_scales_A_once_and_adds_the_diagonal_strided():
    n = 30
    program = adcli.loads(SQUARE_MAP.format(n=n))
    fwd = program.jacobian(mode="forward")
    # partial 1 − u²: n; x·(1 − u²), the two scales of ż = A multiplied: n; made dense to
    # take u·ẋ (a scaled Seed): n·n; the diagonal added: n flops
    assert fwd.cost.mults_derivative == n + n + n * n
    assert fwd.cost.counts() == program.predict("forward").counts()
    x = program.resolve_inputs()["x"]
    A = np.random.default_rng(1).standard_normal((n, n)) / np.sqrt(n)
    u = np.tanh(A @ x)
    assert fwd.jacobian == pytest.approx(((1 - u * u) * x)[:, None] * A + np.diag(u), rel=1e-12, abs=1e-14)


@pytest.mark.parametrize("mode", ["forward", "reverse"])
def test_the_diagonal_is_one_strided_slice_in_the_plan(mode, tmp_path):
    n = 12
    path = tmp_path / "square.ad"
    path.write_text(SQUARE_MAP.format(n=n))
    out = tmp_path / "grad.py"
    result = subprocess.run([sys.executable, "-m", "adcli", "codegen", str(path), "--mode", mode, "-o", str(out)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    body = out.read_text().split("def _make_", 1)[1]
    # the whole identity's diagonal: every n + 1 of the flattened n × n derivative
    assert f":{n * n}:{n + 1}]" in body, body
    # no (direction, place) index arrays gathered and scattered back
    assert "] = t" not in body, body


def test_damped_wave_column_of_k_keeps_the_numbers_apart():
    N = 50
    program = adcli.loads(DAMPED.format(N=N))
    fwd = program.jacobian(mode="forward")
    # block a: a·eᵛ's tangent is eᵛ itself (a scaled Seed of one element: p itself), then
    #          ·cos 3t: N
    # block k: −k·t waits as the row t and the number −1 (free); eᵛ·(…) scales the row
    #          (as large as the scale would be): N; a·(…) multiplies the number: 1;
    #          ·cos 3t scales the row: N; made dense at the output: N
    assert fwd.cost.mults_derivative == N + (N + 1 + N + N)
    assert fwd.cost.counts() == program.predict("forward").counts()
    t = np.linspace(0, 10, N)
    y = 1.5 * np.exp(-0.3 * t) * np.cos(3 * t)
    got = {"a": fwd.jacobian[:, 0], "k": fwd.jacobian[:, 1]}   # a column per input
    assert got["a"] == pytest.approx(np.exp(-0.3 * t) * np.cos(3 * t), rel=1e-12, abs=1e-14)
    assert got["k"] == pytest.approx(-t * y, rel=1e-12, abs=1e-14)


def test_a_waiting_scale_two_nodes_need_dense_is_made_dense_by_each():
    n = 5
    program = adcli.loads(f"dim n = {n}\nconst A: mat[n, n] = randn(seed=1)\n"
                          f"const B: mat[n, n] = randn(seed=2)\nconst C: mat[n, n] = randn(seed=3)\n"
                          f"input x: vec[n] = randn(seed=4)\nu = sin(A @ x)\n"
                          f"output y1 = B @ u\noutput y2 = C @ u")
    fwd = program.jacobian(mode="forward")
    # A·ẋ selects A (free, dense); u̇ = cos(z)·ż waits; B·u̇ and C·u̇ each make it dense
    # (n·n each: what scaling ż at once cost, once, plus one n·n), then two products of n·n·n
    assert fwd.cost.mults_derivative == 2 * n * n + 2 * n ** 3
    assert fwd.cost.counts() == program.predict("forward").counts()
    rev = program.jacobian(mode="reverse")
    assert fwd.jacobian == pytest.approx(rev.jacobian, rel=1e-12, abs=1e-14)


def test_a_reversed_selection_adds_its_entries_along_a_stride():
    """x[::-1] is a full Seed that is not the identity: direction n − 1 − i at element i;
    sin of it a scaled Seed, added to the dense A·ẋ: entries at a constant stride."""
    n = 6
    program = adcli.loads(f"dim n = {n}\nconst A: mat[n, n] = randn(seed=1)\n"
                          f"input x: vec[n] = randn(seed=2)\noutput y = sin(x[::-1]) + A @ x")
    x = program.resolve_inputs()["x"]
    A = np.random.default_rng(1).standard_normal((n, n))
    want = A.copy()
    want[np.arange(n), n - 1 - np.arange(n)] += np.cos(x[::-1])
    for mode in ("forward", "reverse"):
        assert program.jacobian(mode=mode).jacobian == pytest.approx(want, rel=1e-12, abs=1e-14)


def test_a_loop_carries_dense_tangents():
    """A body that scales its carried tangent twice: the scales meet inside the step, the
    product is made dense where the step's result leaves it (the loop's boundary)."""
    n, steps = 4, 3
    program = adcli.loads(f"dim n = {n}\ninput x: vec[n] = randn(seed=1)\nh = x\n"
                          f"repeat {steps} {{\n  h = 0.5 * sin(h)\n}}\noutput y = sum(h)")
    fwd = program.jacobian(mode="forward")
    rev = program.jacobian(mode="reverse")
    assert fwd.jacobian == pytest.approx(rev.jacobian, rel=1e-12, abs=1e-14)
    assert fwd.cost.counts() == program.predict("forward").counts()
    assert rev.cost.counts() == program.predict("reverse").counts()
