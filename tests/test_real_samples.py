"""The samples written from real functions (issue 13, item 6), each checked against values
computed independently: a NumPy transcription in this file (no adcli code), and the
transcription's own central differences for the derivatives. Both modes must agree with it.
"""
import numpy as np
import pytest

import adcli

from conftest import SAMPLE


def central_jacobian(f, x, h=1e-6):
    """Central differences of a NumPy function f: R^n -> R^m (the oracle's derivatives)."""
    x = np.asarray(x, dtype=np.float64)
    columns = []
    for j in range(x.size):
        step = np.zeros_like(x)
        step.flat[j] = h * max(1.0, abs(x.flat[j]))
        columns.append((f(x + step) - f(x - step)) / (2 * step.flat[j]))
    return np.stack(columns, axis=1)


def check_sample(name, oracle, wrt, rtol=1e-7):
    """Value and Jacobian (both modes) of samples/NAME against the NumPy oracle."""
    program = adcli.load(SAMPLE[name])
    x = np.asarray(program.resolve_inputs()[wrt])
    expected = oracle(x)
    values = program.evaluate()
    got = np.concatenate([np.ravel(values[o]) for o in program.output_names])
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    fd = central_jacobian(oracle, x)
    for mode in ("forward", "reverse"):
        jac = program.jacobian(mode=mode, wrt=[wrt]).jacobian
        np.testing.assert_allclose(jac, fd, rtol=rtol, atol=rtol * max(1.0, np.abs(fd).max()))
    return program


# -- RobotArm: forward kinematics and arctan2 --------------------------------------------------

LINK = np.array([0, 0.43, 0.02, 0, 0, 0])
OFFSET = np.array([0.67, 0, 0, 0.43, 0, 0.1])
TWIST = np.array([np.pi / 2, 0, np.pi / 2, -np.pi / 2, np.pi / 2, 0])


def robot_arm(q):
    T = np.eye(4)
    for theta, a, d, alpha in zip(q, LINK, OFFSET, TWIST):
        ct, st, ca, sa = np.cos(theta), np.sin(theta), np.cos(alpha), np.sin(alpha)
        T = T @ np.array([[ct, -st * ca, st * sa, a * ct],
                          [st, ct * ca, -ct * sa, a * st],
                          [0, sa, ca, d],
                          [0, 0, 0, 1]])
    roll = np.arctan2(T[2, 1], T[2, 2])
    pitch = np.arctan2(-T[2, 0], np.hypot(T[0, 0], T[1, 0]))
    yaw = np.arctan2(T[1, 0], T[0, 0])
    return np.concatenate([T[0:3, 3], [roll, pitch, yaw]])


def test_robot_arm():
    check_sample("robot_arm.ad", robot_arm, "q")


# -- Logistic regression on data loaded from a file ------------------------------------------

def test_logistic_regression_on_loaded_data():
    """The loss and its gradient against NumPy reading the same CSV itself, with the gradient
    in closed form: Xᵀ(σ(z) − y)/n and mean(σ(z) − y) for the bias, at the sample's weights and
    at another point."""
    data = np.loadtxt(SAMPLE["logistic.ad"].parent / "data" / "exam.csv", delimiter=",", skiprows=1)
    X, y = data[:, :3], data[:, 3]
    program = adcli.load(SAMPLE["logistic.ad"])
    for w, b in (([0.0, 0.0, 0.0], 0.0), ([0.8, -1.1, 0.4], 0.2)):
        z = X @ w + b
        loss = np.mean(y * np.logaddexp(0, -z) + (1 - y) * np.logaddexp(0, z))
        s = 1 / (1 + np.exp(-z))
        gradient = np.concatenate([X.T @ (s - y) / len(y), [np.mean(s - y)]])
        at = {"w": np.array(w), "b": np.array(b)}
        assert program.evaluate(at=at)["loss"] == pytest.approx(loss, rel=1e-14)
        for mode in ("forward", "reverse"):
            np.testing.assert_allclose(program.jacobian(mode=mode, at=at).jacobian[0], gradient,
                                       rtol=1e-12, atol=1e-15)


# -- BlackScholes: erf, and the greeks in closed form ------------------------------------------

def test_black_scholes_prices_and_greeks_in_closed_form():
    """Prices from the textbook formulas with math.erf, and the Jacobian's columns against the
    greeks' closed forms (delta, vega, rho, and the derivative in T), both modes."""
    from math import erf, exp, log, pi, sqrt
    S, sigma, r, T = 100.0, 0.2, 0.05, 0.5
    N = lambda x: 0.5 * (1 + erf(x / sqrt(2)))
    phi = lambda x: exp(-x * x / 2) / sqrt(2 * pi)
    rows, price = [], []
    for sign in (1, -1):                                 # calls, then puts
        for K in (80, 90, 100, 110, 120):
            d1 = (log(S / K) + (r + 0.5 * sigma ** 2) * T) / (sigma * sqrt(T))
            d2 = d1 - sigma * sqrt(T)
            disc = K * exp(-r * T)
            price.append(sign * (S * N(sign * d1) - disc * N(sign * d2)))
            delta = N(d1) if sign == 1 else N(d1) - 1
            vega = S * phi(d1) * sqrt(T)
            rho = sign * K * T * exp(-r * T) * N(sign * d2)
            dT = S * phi(d1) * sigma / (2 * sqrt(T)) + sign * r * disc * N(sign * d2)
            rows.append([delta, vega, rho, dT])
    program = adcli.load(SAMPLE["black_scholes.ad"])
    values = program.evaluate()
    np.testing.assert_allclose(np.concatenate([values["call"], values["put"]]), price, rtol=1e-13)
    for mode in ("forward", "reverse"):
        np.testing.assert_allclose(program.jacobian(mode=mode).jacobian, rows, rtol=1e-12, atol=1e-12)


# -- Softmax cross-entropy with integer labels read from a file ------------------------------

def test_cross_entropy_with_integer_labels():
    """The mean cross-entropy against NumPy reading the same CSV itself (labels as whole
    numbers, picked with logp[arange(n), labels]), and its gradient in closed form:
    Xᵀ(softmax − onehot)/n for W and mean(softmax − onehot) for b, both modes, at the
    sample's weights and at another point."""
    data = np.loadtxt(SAMPLE["cross_entropy.ad"].parent / "data" / "classes.csv", delimiter=",",
                      skiprows=1)
    X, labels = data[:, :4], data[:, 4].astype(int)
    n, k = len(labels), 3
    onehot = np.eye(k)[labels]
    program = adcli.load(SAMPLE["cross_entropy.ad"])
    sample_point = program.resolve_inputs()
    other = {"W": np.linspace(-1.5, 1.2, 12).reshape(4, 3), "b": np.array([0.3, -0.2, 0.5])}
    for at in (sample_point, other):
        z = X @ at["W"] + at["b"]
        logp = z - np.log(np.sum(np.exp(z), axis=1, keepdims=True))
        loss = -np.mean(logp[np.arange(n), labels])
        softmax = np.exp(logp)
        gradient = np.concatenate([(X.T @ (softmax - onehot) / n).ravel(),
                                   np.mean(softmax - onehot, axis=0)])
        assert program.evaluate(at=at)["loss"] == pytest.approx(loss, rel=1e-14)
        for mode in ("forward", "reverse"):
            np.testing.assert_allclose(program.jacobian(mode=mode, at=at).jacobian[0], gradient,
                                       rtol=1e-12, atol=1e-15)


# -- Bundle adjustment: gathers by camera and point, and Rodrigues' θ = 0 branch --------------

EPSILON = np.finfo(np.float64).eps


def rodrigues(r, x):
    """ADBench's rodrigues_rotate_point, with Ceres' threshold for the first-order branch."""
    theta2 = r @ r
    if theta2 < EPSILON:
        return x + np.cross(r, x)
    theta = np.sqrt(theta2)
    u = r / theta
    return x * np.cos(theta) + np.cross(u, x) * np.sin(theta) + u * (u @ x) * (1 - np.cos(theta))


def ba_observations():
    table = np.loadtxt(SAMPLE["bundle_adjustment.ad"].parent / "data" / "ba_observations.csv",
                       delimiter=",", skiprows=1)
    return table[:, 0].astype(int), table[:, 1].astype(int), table[:, 2:4]


def bundle_adjustment(cams, X, w):
    """ADBench's ba objective, one observation at a time: the reprojection errors (row-major),
    then the weight errors 1 − w²."""
    cam_of, point_of, feat = ba_observations()
    errors = []
    for i, (c, j) in enumerate(zip(cam_of, point_of)):
        cam = cams[c]
        p = rodrigues(cam[0:3], X[j] - cam[3:6])
        q = p[0:2] / p[2]
        rsq = q @ q
        projected = cam[7:9] + cam[6] * q * (1 + cam[9] * rsq + cam[10] * rsq ** 2)
        errors.append(w[i] * (projected - feat[i]))
    return np.concatenate([np.ravel(errors), 1 - w ** 2])


def ba_program(text=None):
    path = SAMPLE["bundle_adjustment.ad"]
    return adcli.load(path) if text is None else adcli.loads(text, base_dir=path.parent)


def test_bundle_adjustment_value_and_jacobian():
    """The errors against the transcription, and the 45×72 Jacobian against its central
    differences, both modes; camera 0's rotation is exactly 0, so its six observations take
    the first-order branch (the differences step off 0 into the full formula: the function is
    smooth there, and both sides agree)."""
    program = ba_program()
    at = program.resolve_inputs()
    assert not at["cams"][0, 0:3].any()
    shapes = [at[name].shape for name in ("cams", "X", "w")]
    sizes = np.cumsum([0] + [int(np.prod(s)) for s in shapes])

    def flat(x):
        return bundle_adjustment(*(x[a:b].reshape(s) for a, b, s in zip(sizes, sizes[1:], shapes)))

    x = np.concatenate([at[name].ravel() for name in ("cams", "X", "w")])
    values = program.evaluate()
    got = np.concatenate([values["reproj_err"].ravel(), values["w_err"]])
    np.testing.assert_allclose(got, flat(x), rtol=1e-12, atol=1e-9)
    fd = central_jacobian(flat, x)
    assert fd.shape == (45, 72)
    for mode in ("forward", "reverse"):
        jac = program.jacobian(mode=mode).jacobian
        np.testing.assert_allclose(jac, fd, rtol=1e-7, atol=1e-7 * np.abs(fd).max())


def test_bundle_adjustment_at_zero_rotation_is_the_analytic_limit():
    """At r = 0, R·x = x and ∂(R·x)/∂r = −[x]× (the cross-product matrix of x = X − C), so the
    errors of camera 0's observations are projections of X − C, and their derivatives in r
    are the projection's Jacobian times −[x]×: closed forms, both modes, all finite."""
    program = ba_program()
    at = program.resolve_inputs()
    cams, X = at["cams"], at["X"]
    cam_of, point_of, feat = ba_observations()
    f, principal, (k1, k2) = cams[0, 6], cams[0, 7:9], cams[0, 9:11]
    value = program.evaluate()["reproj_err"]
    jacobians = {mode: program.jacobian(mode=mode, wrt=["cams"]).jacobian for mode in ("forward", "reverse")}
    for mode, jac in jacobians.items():
        assert np.isfinite(jac).all(), mode
    checked = 0
    for i in np.flatnonzero(cam_of == 0):
        x = X[point_of[i]] - cams[0, 3:6]
        q = x[0:2] / x[2]
        rsq = q @ q
        L = 1 + k1 * rsq + k2 * rsq ** 2
        np.testing.assert_allclose(value[i], principal + f * L * q - feat[i], rtol=1e-13)
        dq_dx = np.array([[1 / x[2], 0, -x[0] / x[2] ** 2], [0, 1 / x[2], -x[1] / x[2] ** 2]])
        dproj_dq = f * (L * np.eye(2) + 2 * (k1 + 2 * k2 * rsq) * np.outer(q, q))
        cross_matrix = np.array([[0, -x[2], x[1]], [x[2], 0, -x[0]], [-x[1], x[0], 0]])
        expected = dproj_dq @ dq_dx @ -cross_matrix
        for mode, jac in jacobians.items():
            # rows 2i, 2i + 1 (the observation's u and v); columns 0..2: camera 0's r1 r2 r3
            np.testing.assert_allclose(jac[2 * i:2 * i + 2, 0:3], expected, rtol=1e-12,
                                       atol=1e-12 * np.abs(expected).max(), err_msg=mode)
        checked += 1
    assert checked == 6


@pytest.mark.filterwarnings("ignore::RuntimeWarning")   # the nan the variants make on purpose
def test_bundle_adjustment_needs_its_branch_and_its_guard():
    """Why the sample is written as it is: without the first-order branch the formula divides
    0 by 0 at camera 0 (nan errors), and with the branch but θ = sqrt(θ²) unguarded the values
    are right while the derivatives are nan (where() passes 0 × the untaken branch's nan on)."""
    text = SAMPLE["bundle_adjustment.ad"].read_text()
    guard = "theta = sqrt(where(small, 1, theta2))"
    branch = "return where(small, x + cross(r, x), turned)"
    assert guard in text and branch in text
    good = ba_program().evaluate()["reproj_err"]

    no_branch = ba_program(text.replace(guard, "theta = sqrt(theta2)").replace(branch, "return turned"))
    assert np.isnan(no_branch.evaluate()["reproj_err"][0]).all()

    unguarded = ba_program(text.replace(guard, "theta = sqrt(theta2)"))
    np.testing.assert_array_equal(unguarded.evaluate()["reproj_err"], good)
    for mode in ("forward", "reverse"):
        jac = unguarded.jacobian(mode=mode, wrt=["cams"]).jacobian
        assert np.isnan(jac[0:2, 0:3]).all(), mode      # camera 0's rotation, its first observation


def test_bundle_adjustment_compare_recommends_a_mode_for_its_reasons():
    """adcli compare on the sample: 72 passes forward against 45 reverse; the recommendation is
    the decision's, and its reason holds: the faster predicted time, or within 10% the mode
    predicted to need less memory (forward here, under the default machine model)."""
    from click.testing import CliRunner

    from adcli.cli import cli
    from adcli.compare import compare

    program = ba_program()
    result = compare(program, repeat=1)
    fwd, rev = result.runs["forward"].cost, result.runs["reverse"].cost
    assert (fwd.passes, rev.passes) == (72, 45)
    rec = result.recommendation
    decision = program.decide()
    assert rec["mode"] == decision.mode
    f, r = decision.plans["forward"], decision.plans["reverse"]
    if "within 10%" in rec["reason"]:
        assert rec["mode"] == ("forward" if f.peak_bytes <= r.peak_bytes else "reverse")
    else:
        assert rec["mode"] == ("forward" if f.time_s < r.time_s else "reverse")
    output = CliRunner().invoke(cli, ["compare", str(SAMPLE["bundle_adjustment.ad"]), "--repeat", "1"])
    assert output.exit_code == 0, output.output
    assert f"recommendation: {rec['mode']}" in output.output
