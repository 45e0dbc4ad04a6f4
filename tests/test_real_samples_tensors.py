"""The samples of issue 14, item 5 (a Gaussian mixture for any d and K, multi-head attention, a
determinant of any size, k-means with its gradient and Hessian diagonal, Newton's method), each
checked against values computed here without adcli: SciPy's densities, NumPy by hand, closed
forms, and central differences of those for the derivatives, in both modes. The commands each
sample's header suggests must run as written.
"""
import itertools
import re
import shlex

import numpy as np
import pytest
from click.testing import CliRunner

import adcli
from adcli.cli import cli

from conftest import ROOT, SAMPLE
from test_real_samples import central_jacobian


def draws(seed, shape, scale=1.0):
    """The sample files' randn(seed=S), drawn as docs/language.md says."""
    return scale * np.random.default_rng(seed).standard_normal(shape)


def flatten(arrays):
    return np.concatenate([np.ravel(a) for a in arrays])


def unflatten(x, shapes):
    sizes = np.cumsum([0] + [int(np.prod(s)) for s in shapes])
    return [x[a:b].reshape(s) for a, b, s in zip(sizes, sizes[1:], shapes)]


def check_jacobian(program, oracle, at, names, rtol=1e-7):
    """Both modes' Jacobian with respect to `names` against central differences of `oracle`,
    a NumPy function of the inputs' values flattened in that order."""
    shapes = [np.shape(at[name]) for name in names]
    x = flatten([at[name] for name in names])
    fd = central_jacobian(lambda flat: np.atleast_1d(oracle(*unflatten(flat, shapes))), x)
    for mode in ("forward", "reverse"):
        jac = program.jacobian(mode=mode, at=at, wrt=names, measure_memory=False).jacobian
        np.testing.assert_allclose(jac, fd, rtol=rtol, atol=rtol * max(1.0, np.abs(fd).max()),
                                   err_msg=mode)


# -- Gaussian mixture: SciPy's multivariate normal and Wishart densities -----------------------

def gmm_scipy(X, alphas, means, q, gamma=1.0, m=0):
    """The log-posterior through scipy.stats: Σi log Σk w_k N(x_i | μk, Λk⁻¹) + Σk log
    Wishart(Λk | ν = d + m + 1, I/γ²), with Λk = QkᵀQk and Qk filled row by row from q[k], its
    diagonal exponentiated."""
    from scipy.special import logsumexp
    from scipy.stats import multivariate_normal, wishart

    n, d = X.shape
    weights = np.exp(alphas) / np.sum(np.exp(alphas))
    per_component, logprior = [], 0.0
    for k in range(len(alphas)):
        Q = np.zeros((d, d))
        Q[np.tril_indices(d)] = q[k]
        Q[np.diag_indices(d)] = np.exp(np.diag(Q))
        precision = Q.T @ Q
        density = multivariate_normal(means[k], np.linalg.inv(precision))
        per_component.append(np.log(weights[k]) + np.atleast_1d(density.logpdf(X)))
        logprior += wishart(df=d + m + 1, scale=np.eye(d) / gamma ** 2).logpdf(precision)
    return np.sum(logsumexp(np.array(per_component), axis=0)) + logprior


@pytest.mark.parametrize("dims", [{}, {"K": 5, "d": 2, "n": 7}, {"K": 2, "d": 4}, {"K": 1, "d": 1}],
                         ids=lambda dims: ",".join(f"{k}={v}" for k, v in dims.items()) or "defaults")
def test_gmm_against_scipy_for_any_d_and_k(dims):
    program = adcli.load(SAMPLE["gmm.ad"], set=dims)
    n, d, K = dims.get("n", 10), dims.get("d", 3), dims.get("K", 3)
    X = draws(1, (n, d))
    at = {"alphas": draws(2, K, 0.5), "means": draws(3, (K, d)), "q": draws(4, (K, d * (d + 1) // 2), 0.3)}
    for name, value in program.resolve_inputs().items():
        np.testing.assert_array_equal(value, at[name])
    oracle = lambda alphas, means, q: gmm_scipy(X, alphas, means, q)
    assert program.evaluate()["logpost"] == pytest.approx(oracle(**at), rel=1e-12)
    check_jacobian(program, oracle, at, ["alphas", "means", "q"])


def test_gmm_elsewhere_and_with_its_prior_changed():
    """Another point (large log-diagonals, the means moved) and the prior's constants set for the
    run (γ = 0.7, m = 2: ν = d + 3): the same agreement, so γ and m are read where they belong."""
    program = adcli.load(SAMPLE["gmm.ad"])
    X = draws(1, (10, 3))
    at = {"alphas": np.array([1.0, -0.5, 0.2]), "means": draws(7, (3, 3), 2.0),
          "q": np.linspace(-1.5, 1.3, 18).reshape(3, 6), "gamma": np.array(0.7), "m": np.array(2.0)}
    oracle = lambda alphas, means, q: gmm_scipy(X, alphas, means, q, gamma=0.7, m=2)
    assert program.evaluate(at=at)["logpost"] == pytest.approx(oracle(at["alphas"], at["means"], at["q"]),
                                                                rel=1e-12)
    check_jacobian(program, oracle, at, ["alphas", "means", "q"])


# -- Multi-head attention: each head by hand, the heads concatenated ---------------------------

def attention_numpy(X, target, Wq, Wk, Wv, Wo):
    """Head by head with a causal softmax (positions after i get weight exactly 0), the heads'
    outputs side by side times the output projection stacked by rows, then the residual."""
    T = X.shape[0]
    heads = []
    for h in range(Wq.shape[0]):
        Q, K, V = X @ Wq[h], X @ Wk[h], X @ Wv[h]
        scores = Q @ K.T / np.sqrt(Q.shape[1])
        scores[np.triu_indices(T, 1)] = -np.inf
        weights = np.exp(scores - scores.max(axis=1, keepdims=True))
        heads.append(weights / weights.sum(axis=1, keepdims=True) @ V)
    Y = X + np.concatenate(heads, axis=1) @ np.concatenate(list(Wo), axis=0)
    return np.mean((Y - target) ** 2)


@pytest.mark.parametrize("dims", [{}, {"H": 3, "T": 4, "Dh": 3}], ids=["defaults", "H=3,T=4,Dh=3"])
def test_attention_against_numpy_head_by_head(dims):
    program = adcli.load(SAMPLE["attention.ad"], set=dims)
    T, D, H, Dh = (dims.get(k, v) for k, v in (("T", 5), ("D", 4), ("H", 2), ("Dh", 2)))
    X, target = draws(1, (T, D)), draws(2, (T, D))
    at = {"Wq": draws(3, (H, D, Dh), 0.5), "Wk": draws(4, (H, D, Dh), 0.5),
          "Wv": draws(5, (H, D, Dh), 0.5), "Wo": draws(6, (H, Dh, D), 0.5)}
    oracle = lambda Wq, Wk, Wv, Wo: attention_numpy(X, target, Wq, Wk, Wv, Wo)
    assert program.evaluate()["loss"] == pytest.approx(oracle(**at), rel=1e-12)
    check_jacobian(program, oracle, at, ["Wq", "Wk", "Wv", "Wo"])


# -- Determinant: Leibniz's formula, and the cofactors --------------------------------------------

def leibniz(A):
    """det A as the sum over permutations of signed products: no factorisation anywhere."""
    n = A.shape[0]
    total = 0.0
    for perm in itertools.permutations(range(n)):
        inversions = sum(perm[i] > perm[j] for i in range(n) for j in range(i + 1, n))
        total += (-1) ** inversions * np.prod([A[i, perm[i]] for i in range(n)])
    return total


def cofactors(A):
    n = A.shape[0]
    return np.array([[(-1) ** (i + j) * leibniz(np.delete(np.delete(A, i, 0), j, 1)) for j in range(n)]
                     for i in range(n)])


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
def test_determinant_of_any_size_against_leibniz_and_its_cofactors(n):
    """det(A) and the cofactor expansion written with the loop index against Leibniz's formula;
    the Jacobian's rows against the cofactor matrix (Jacobi's formula: ∂det/∂A = cof A) and
    cof A / det A for logdet, both modes; then central differences of Leibniz's formula."""
    program = adcli.load(SAMPLE["determinant.ad"], set={"n": n})
    A = draws(1, (n, n))
    values = program.evaluate()
    det = leibniz(A)
    assert values["det_A"] == pytest.approx(det, rel=1e-12)
    assert values["by_cofactors"] == pytest.approx(det, rel=1e-12)
    assert values["logabs"] == pytest.approx(np.log(abs(det)), rel=1e-12, abs=1e-13)
    cof = cofactors(A) if n > 1 else np.ones((1, 1))
    for mode in ("forward", "reverse"):
        jac = program.jacobian(mode=mode, measure_memory=False).jacobian
        np.testing.assert_allclose(jac, [cof.ravel(), cof.ravel(), cof.ravel() / det], rtol=1e-11,
                                   atol=1e-12, err_msg=mode)
    check_jacobian(program, lambda A: np.array([leibniz(A), leibniz(A), np.log(abs(leibniz(A)))]),
                   {"A": A}, ["A"])


# -- k-means: the cost, its gradient and Hessian diagonal, Lloyd's update -------------------------

def kmeans_closed_form(X, C):
    """With each point's nearest centroid fixed, cost = Σk Σ_{i→k} ‖x_i − c_k‖², so
    g_k = 2 Σ_{i→k} (c_k − x_i), h_k = 2 · count_k (every coordinate), and C − g/h is the mean of
    each centroid's points."""
    distances = ((X[:, None, :] - C[None]) ** 2).sum(axis=2)
    nearest = distances.argmin(axis=1)
    count = np.bincount(nearest, minlength=len(C)).astype(float)[:, None]
    sums = np.array([X[nearest == k].sum(axis=0) for k in range(len(C))])
    gradient = 2 * (count * C - sums)
    h = np.repeat(2 * count, C.shape[1], axis=1)
    return distances.min(axis=1).sum(), gradient, h, sums / count


@pytest.mark.parametrize("dims", [{}, {"n": 20, "d": 3, "k": 4}], ids=["defaults", "n=20,d=3,k=4"])
def test_kmeans_gradient_hessian_diagonal_and_lloyd_step(dims):
    program = adcli.load(SAMPLE["kmeans.ad"], set=dims)
    n, d, k = dims.get("n", 12), dims.get("d", 2), dims.get("k", 3)
    X = draws(1, (n, d))
    C = X[:k]
    for point in (C, C + draws(9, (k, d), 0.3)):
        cost, gradient, h, means = kmeans_closed_form(X, point)
        assert (h > 0).all()                    # every centroid has points: Lloyd's step is defined
        values = program.evaluate(at={"C": point})
        assert values["kmeans_cost"] == pytest.approx(cost, rel=1e-13)
        np.testing.assert_allclose(values["gradient"], gradient, rtol=1e-12, atol=1e-12)
        np.testing.assert_array_equal(values["hessian_diagonal"], h)
        np.testing.assert_allclose(values["lloyd"], means, rtol=1e-12, atol=1e-13)
        # rows: the cost's gradient, then the gradient's Jacobian (the Hessian, diagonal h),
        # then zeros: h and the means are constant while the nearest centroids stay the same
        expected = np.vstack([gradient.ravel(), np.diag(h.ravel()), np.zeros((2 * k * d, k * d))])
        for mode in ("forward", "reverse"):
            jac = program.jacobian(mode=mode, at={"C": point}, measure_memory=False).jacobian
            np.testing.assert_allclose(jac, expected, rtol=1e-12, atol=1e-12, err_msg=mode)
        check_jacobian(program, lambda C: flatten(kmeans_closed_form(X, C)), {"C": point}, ["C"])


def test_kmeans_hessian_diagonal_from_one_hessian_vector_product():
    """The header's remark: the Hessian is diagonal, so H·1, one Hessian-vector product, is h."""
    text = SAMPLE["kmeans.ad"].read_text()
    assert "jvp(grad(cost), C, all_ones, X) with `const all_ones: mat[k, d] = ones`" in text
    text = text.replace("output lloyd", "const all_ones: mat[k, d] = ones\n"
                                        "output by_one_product = jvp(grad(cost), C, all_ones, X)\noutput lloyd")
    values = adcli.loads(text, "kmeans.ad").evaluate()
    np.testing.assert_array_equal(values["by_one_product"], values["hessian_diagonal"])
    X = draws(1, (12, 2))
    np.testing.assert_array_equal(values["by_one_product"], kmeans_closed_form(X, X[:3])[2])


# -- Newton's method on Rosenbrock: the gradient and Hessian in closed form ----------------------

def rosenbrock_newton(x0, steps):
    def gradient(x):
        return np.array([-2 * (1 - x[0]) - 400 * x[0] * (x[1] - x[0] ** 2), 200 * (x[1] - x[0] ** 2)])

    def hessian(x):
        return np.array([[2 - 400 * x[1] + 1200 * x[0] ** 2, -400 * x[0]], [-400 * x[0], 200.0]])

    f = lambda x: (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2
    x = np.array(x0, dtype=float)
    for _ in range(steps):
        x = x - np.linalg.solve(hessian(x), gradient(x))
    return np.concatenate([[f(x0)], x, [f(x)]]), gradient(x0)


@pytest.mark.parametrize("steps", [1, 2, 6])
def test_newton_steps_against_the_closed_form(steps):
    program = adcli.load(SAMPLE["newton.ad"], set={"steps": steps})
    for x0 in ([-1.2, 1.0], [0.3, -0.4]):
        at = {"x0": np.array(x0)}
        expected, gradient = rosenbrock_newton(x0, steps)
        values = program.evaluate(at=at)
        got = np.concatenate([[values["f_start"]], values["x_final"], [values["f_final"]]])
        np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)
        for mode in ("forward", "reverse"):
            jac = program.jacobian(mode=mode, at=at, measure_memory=False).jacobian
            np.testing.assert_allclose(jac[0], gradient, rtol=1e-13)
        check_jacobian(program, lambda x: rosenbrock_newton(x, steps)[0], at, ["x0"], rtol=1e-6)
    if steps == 6:                              # from the classic start: at the minimum
        np.testing.assert_allclose(program.evaluate()["x_final"], [1, 1], atol=1e-10)


# -- the commands the headers suggest --------------------------------------------------------------

NEW_SAMPLES = ["gmm.ad", "attention.ad", "determinant.ad", "kmeans.ad", "newton.ad", "deep_stack.ad"]


def suggested_commands(name):
    """The `adcli …` lines of the header's Try: block, without their (explanations)."""
    header = re.search(r"^# Try:(.*?)^(?!#\s+adcli)", SAMPLE[name].read_text(), re.M | re.S)
    assert header, f"{name} has no '# Try:' block"
    return [shlex.split(re.sub(r"\s*\(.*$", "", line))
            for line in re.findall(r"adcli [^\n]*", header.group(1))]


@pytest.mark.parametrize("name", NEW_SAMPLES)
def test_the_header_commands_run(name, monkeypatch):
    monkeypatch.chdir(ROOT)
    commands = suggested_commands(name)
    assert len(commands) >= 2
    for command in commands:
        assert command[0] == "adcli" and f"samples/{name}" in command
        result = CliRunner().invoke(cli, command[1:] + (["--repeat", "1"] if command[1] == "compare" else []))
        assert result.exit_code == 0, (command, result.output)
