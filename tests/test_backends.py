"""The array backends: every case runs on NumPy and on CuPy.

The CuPy cases need CuPy and a CUDA GPU; where there is none (CI) they skip
with the reason, and every NumPy case still runs. On a GPU machine:

    PYTHONPATH=$PWD python3 -m pytest tests/test_backends.py -q

Results must equal the NumPy backend's to float64 round-off, on every sample
and on a program that uses every op of the registry, in forward and reverse
mode and for one JVP and one VJP; the counts must be identical, since they
come from the graph and not from the device.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import adcli
from adcli.backend_cupy import cupy_problem
from adcli.backends import get_backend
from adcli.errors import AdError
from adcli.ops import REGISTRY

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = sorted((ROOT / "samples").glob("*.ad"))
CUPY_PROBLEM = cupy_problem()
NO_CUPY_REASON = f"CuPy with a CUDA device is not available: {CUPY_PROBLEM}"
BACKENDS = ["numpy", pytest.param("cupy", marks=pytest.mark.skipif(CUPY_PROBLEM is not None,
                                                                 reason=NO_CUPY_REASON))]

# Every op of the registry, with ties for maximum/minimum and max/min, and
# index, concat, stack, reshape, transpose, outer (a reshape and a mul) and dot; gathers
# with repeated indices, scatter_add, and empty slices; reductions with keepdims=true; linear
# algebra on an SPD matrix; einsum (a chain, a trace, a product of one operand with itself).
ALL_OPS = """
dim n = 4
input x: vec[n] = [0.3, -0.7, 1.1, 0.5]
input A: mat[3, n] = 0.5 * randn(seed=7)
const B: mat[n, 3] = randn(seed=8)
input s = 0.8
u = sin(x) + cos(x) * tan(0.3 * x) - exp(-x) / (2 + sigmoid(x))
v = log(2 + x) + log1p(square(x)) + sqrt(1.5 + x) + tanh(x) + relu(x) + abs(x)
w = maximum(u, v) - minimum(u, 0.1 * v) + (1.5 + x) ^ s + s ^ x + maximum(x, 0.5) + minimum(x, 0.5)
def diagish(z) = outer(z, z)
M = A @ diagish(w)
p = sum(M, axis=0) + mean(M, axis=0) + max(M, axis=0) - min(M, axis=0)
q = prod(1 + 0.1 * M, axis=1) + logsumexp(M, axis=1) + softmax(M, axis=1)[:, 0] + (w @ B)[0:3]
r = concat(p, q) + 0
t = stack(p[0], q[1], norm(w), sum(transpose(M) @ q))
nm = norm(M, axis=1) + norm(M, 1, axis=1) + norm(M, inf, axis=1) + norm(M, -inf, axis=(1,)) + norm(M, 3, 1)
nn = norm(M, 1) + norm(M, -1) + norm(M, inf) + norm(M, -inf, axis=(1, 0)) + norm(M, 'fro')
z = reshape(M, 2, 6)
output f = sum(r) + dot(t, t) + sum(z[1, :]) + prod(x) + max(x) + min(x) + logsumexp(x) + mean(softmax(x))
output g = concat(z[0, 1:4], t) * -s
m = (x < s) + (x <= 0.5) + (x > -s) + (x >= 0) + (x == 0.5) + (x != s)
c = (x > 0 and not x > 1) or x < -0.5
output h = where(c, x * s, sin(x)) + clip(x, -0.5, s) * m + sign(x) * x + heaviside(x) * x^2
a = arcsin(0.9 * tanh(x)) + arccos(0.5 * x) + arctan(x) + sinh(x) + cosh(x) + arcsinh(x)
b = arccosh(1.1 + x^2) + arctanh(0.9 * tanh(x)) + expm1(x) + log2(2 + x) + log10(2 + x) + softplus(x)
output k = a * b + arctan2(x, s + x^2) + hypot(x, s) + pi * e
const idx: ivec[5] = [3, 0, 3, 1, 3]
const rows: imat[3, 1] = [[2], [0], [2]]
G = x[idx] * take_along_axis(A, rows, axis=1)[[0, 2, 1, 1, 0], 0] + A[[2, 2], :][1, [0, 3, 3, 1, 0]]
output gs = scatter_add(G * x[idx], idx, n) + scatter_add(A, [1, 0, 1], 2)[1, :] + x[2:2] @ A[0, 1:1]
g2 = erf(x) + erfc(s * x) + gammaln(1.5 + x) + digamma(2 + x) + multigammaln(3 + x, 3)
output l = g2 + log_softmax(x) + log_softmax(M, axis=0)[1, 0:n]
output o = sum(M - logsumexp(M, axis=1, keepdims=true), axis=0) * mean(x / norm(x, keepdims=true), keepdims=true)
S = A.T @ A + n * eye(n) + diag(x)
L = cholesky(S)
output ln = nm * nn
output la = solve(S, x) + inv(S) @ x + triangular_solve(L, x) + triangular_solve(L.T, x, lower=false)
T = fill_tril(concat(x, x[0:3], x[1:4]), n)
output lb = det(S) * logdet(S) + trace(S) * diag(tril(T, -1) + triu(T.T, 1))
output le = einsum("ij,jk,k->i", A, S, x) + einsum("ii->", S) + einsum("ij,ij->j", A, A)[0:3]
"""

PROGRAMS = [pytest.param(path, id=path.stem) for path in SAMPLES] + [pytest.param("all-ops", id="all-ops")]


def load(which, **kwargs):
    if which == "all-ops":
        return adcli.loads(ALL_OPS, "all-ops.ad", **kwargs)
    return adcli.load(which, **kwargs)


def adcli_main(args) -> int:
    """The command line in this process; returns the exit code."""
    from adcli.cli import cli

    return cli.main(args=args, prog_name="adcli", standalone_mode=False)


def assert_close(actual, expected, rtol=1e-12):
    """Equal to float64 round-off: relative to the size of the values compared."""
    actual, expected = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape
    scale = max(float(np.max(np.abs(expected), initial=0.0)), 1.0)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale)


def test_all_ops_program_uses_every_op():
    ops = {node.op for node in load("all-ops").graph.nodes}
    assert set(REGISTRY) <= ops, sorted(set(REGISTRY) - ops)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", ["forward", "reverse"])
@pytest.mark.parametrize("which", PROGRAMS)
def test_jacobian_equals_numpy_and_counts_are_identical(which, mode, backend):
    program = load(which)
    reference = program.jacobian(mode=mode, backend="numpy")
    result = program.jacobian(mode=mode, backend=backend, measure_memory=True)
    assert result.backend == backend and result.mode == mode
    assert_close(result.jacobian, reference.jacobian)
    for name in program.output_names:
        assert_close(result.value[name], reference.value[name])
        assert isinstance(result.value[name], np.ndarray)   # host arrays, whatever the backend
    assert result.cost.counts() == reference.cost.counts()
    # and both are exactly what the static prediction says
    assert result.cost.counts() == program.predict(mode, chunk=result.cost.chunk).counts()
    assert isinstance(result.cost.peak_bytes, int) and result.cost.peak_bytes > 0
    assert result.device and result.device == get_backend(backend).device


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("which", PROGRAMS)
def test_jvp_and_vjp_equal_numpy(which, backend):
    program = load(which)
    rng = np.random.default_rng(11)
    direction = {n: rng.standard_normal(program.input_shape(n)) for n in program.input_names}
    cotangent = {n: rng.standard_normal(program.output_shape(n)) for n in program.output_names}
    for kind, given in (("jvp", direction), ("vjp", cotangent)):
        reference = getattr(program, kind)(given, backend="numpy")
        result = getattr(program, kind)(given, backend=backend, measure_memory=True)
        assert_close(result.jacobian, reference.jacobian)
        arrays, expected = ((result.tangent, reference.tangent) if kind == "jvp"
                            else (result.cotangent, reference.cotangent))
        assert arrays.keys() == expected.keys()
        for name in arrays:
            assert_close(arrays[name], expected[name])
        assert result.cost.counts() == reference.cost.counts()
        assert isinstance(result.cost.peak_bytes, int) and result.cost.peak_bytes > 0


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", ["forward", "reverse"])
def test_chunked_sweeps_equal_numpy(mode, backend):
    """Several sweeps of a few directions each: Seeds, index maps and blocks split
    across sweeps all run on the backend."""
    program = load("all-ops")
    reference = program.jacobian(mode=mode, backend="numpy")
    result = program.jacobian(mode=mode, backend=backend, chunk=3)
    assert result.cost.sweeps > 1
    assert_close(result.jacobian, reference.jacobian)
    assert result.cost.counts() == program.predict(mode, chunk=3).counts()


@pytest.mark.parametrize("backend", BACKENDS)
def test_float32_equals_numpy_float32(backend):
    program = load(ROOT / "samples" / "mlp.ad")
    reference = program.jacobian(mode="reverse", backend="numpy", dtype="float32")
    result = program.jacobian(mode="reverse", backend=backend, dtype="float32")
    assert result.dtype == "float32"
    assert_close(result.jacobian, reference.jacobian, rtol=1e-5)
    exact = program.jacobian(mode="reverse", backend="numpy")
    assert_close(result.jacobian, exact.jacobian, rtol=1e-4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_time_is_measured_and_a_warmup_is_reported_apart(backend):
    program = load(ROOT / "samples" / "mlp.ad")
    be = get_backend(backend)
    result = program.jacobian(mode="reverse", backend=backend)
    times = result.cost.time_s
    assert times["sweeps"] > 0
    assert ("warmup" in times) == be.warmup      # CuPy warms up by default, NumPy does not
    warm = program.jacobian(mode="reverse", backend=backend, warmup=True)
    assert warm.cost.time_s["warmup"] > 0 and warm.cost.time_s["sweeps"] > 0
    cold = program.vjp({"loss": 1.0}, backend=backend, warmup=False)
    assert "warmup" not in cold.cost.time_s
    assert_close(warm.jacobian, result.jacobian, rtol=0)   # the warm-up changes nothing


@pytest.mark.parametrize("backend", BACKENDS)
def test_peak_bytes_is_the_measured_peak(backend):
    """A larger problem needs more device (or host) memory, and the peak is at least
    the gradient the sweep makes."""
    small = load(ROOT / "samples" / "mlp.ad", set={"n": 64, "h": 64}).jacobian(mode="reverse", backend=backend,
                                                                                measure_memory=True)
    large = load(ROOT / "samples" / "mlp.ad", set={"n": 256, "h": 512}).jacobian(mode="reverse", backend=backend,
                                                                                 measure_memory=True)
    assert large.cost.peak_bytes > small.cost.peak_bytes
    assert large.cost.peak_bytes >= 256 * 512 * 8   # dW1, float64
    # a 1 MiB gradient comes back through pinned host memory on CuPy: same numbers
    reference = load(ROOT / "samples" / "mlp.ad", set={"n": 256, "h": 512}).jacobian(mode="reverse")
    assert_close(large.jacobian, reference.jacobian)
    assert large.gradient["W1"].flags.writeable


@pytest.mark.parametrize("backend", BACKENDS)
def test_finite_differences_run_on_the_backend(backend):
    from adcli.fd import finite_differences

    program = load(ROOT / "samples" / "chain.ad")
    reference = finite_differences(program, backend="numpy")
    result = finite_differences(program, backend=backend)
    assert result.backend == backend
    assert_close(result.jacobian, reference.jacobian, rtol=1e-9)


@pytest.mark.skipif(CUPY_PROBLEM is not None, reason=NO_CUPY_REASON)
def test_cupy_peak_hook_sees_allocations_and_frees():
    import cupy

    be = get_backend("cupy")
    with be.measure() as report:
        a = cupy.ones(1 << 20)      # 8 MiB
        del a
        b = cupy.ones(1 << 19)      # 4 MiB, after the first was freed
        del b
    assert report["peak_bytes"] == 8 << 20
    assert report["seconds"] > 0
    assert be.device and be.device != "?"


@pytest.mark.parametrize("backend", BACKENDS)
def test_cli_json_names_backend_and_device(backend, capsys):
    code = adcli_main(["grad", str(ROOT / "samples" / "mlp.ad"), "--mode", "reverse", "--backend", backend,
                 "--json"])
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert data["backend"] == backend
    assert data["device"] == get_backend(backend).device
    assert isinstance(data["cost"]["peak_bytes"], int) and data["cost"]["peak_bytes"] > 0
    reference = load(ROOT / "samples" / "mlp.ad").jacobian(mode="reverse")
    assert_close(data["jacobian"], reference.jacobian)


def test_auto_backend_is_numpy(capsys):
    code = adcli_main(["grad", str(ROOT / "samples" / "seed_example.ad"), "--json"])
    assert code == 0
    assert json.loads(capsys.readouterr().out)["backend"] == "numpy"
    assert get_backend("auto").name == "numpy"


MESSAGE = ("error: the cupy backend needs CuPy and a CUDA GPU; install adcli[cuda13] on a machine "
           "with an NVIDIA GPU (found: {})")


@pytest.mark.skipif(CUPY_PROBLEM is None, reason="CuPy and a CUDA device are available here")
def test_cupy_backend_without_cupy_or_gpu_is_one_sentence(capsys):
    """Where CuPy cannot run (CI), --backend cupy says why, with exit code 1."""
    code = adcli_main(["grad", str(ROOT / "samples" / "mlp.ad"), "--backend", "cupy"])
    assert code == 1
    err = capsys.readouterr().err.strip()
    assert err == MESSAGE.format(CUPY_PROBLEM)
    assert CUPY_PROBLEM in ("CuPy is not installed", "no CUDA device")
    with pytest.raises(AdError):
        get_backend("cupy")


def test_missing_cupy_is_named(monkeypatch, capsys):
    """With CuPy not importable (simulated, so this runs on GPU machines too)."""
    import sys

    monkeypatch.setitem(sys.modules, "cupy", None)   # import cupy -> ImportError
    assert cupy_problem() == "CuPy is not installed"
    code = adcli_main(["grad", str(ROOT / "samples" / "seed_example.ad"), "--backend", "cupy", "--json"])
    assert code == 1
    error = json.loads(capsys.readouterr().err)["error"]
    assert error["exit_code"] == 1
    assert error["message"] == MESSAGE.format("CuPy is not installed")[len("error: "):]


def test_no_cuda_device_is_named(monkeypatch):
    """CuPy installed but no device: the CUDA runtime's count fails or is 0."""
    import types

    fake = types.SimpleNamespace(cuda=types.SimpleNamespace(runtime=types.SimpleNamespace(
        getDeviceCount=lambda: 0)))
    import sys

    monkeypatch.setitem(sys.modules, "cupy", fake)
    assert cupy_problem() == "no CUDA device"

    def fail():
        raise RuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected")

    fake.cuda.runtime.getDeviceCount = fail
    assert cupy_problem() == "no CUDA device"
    with pytest.raises(AdError, match=r"\(found: no CUDA device\)$"):
        get_backend("cupy")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["jvp", "vjp"])
def test_float32_stays_float32_in_every_op(kind, backend):
    """Python-float scalars in the rules (1 - out², 0.5 / out, where(..., 1.0, ...))
    must not promote float32 values or derivatives to float64 on either library."""
    program = load("all-ops")
    seen = []

    def observer(runner, event, node, value, derivative):
        arrays = [value] + list((derivative or {}).values())
        for a in arrays:
            dtype = getattr(a, "dtype", None)
            if dtype is not None and dtype.kind == "f":
                seen.append((event, node.op, str(dtype)))

    given = ({n: np.ones(program.input_shape(n)) for n in program.input_names} if kind == "jvp"
             else {n: np.ones(program.output_shape(n)) for n in program.output_names})
    getattr(program, kind)(given, backend=backend, dtype="float32", observer=observer)
    assert seen
    wrong = sorted({s for s in seen if s[2] != "float32"})
    assert not wrong, wrong
