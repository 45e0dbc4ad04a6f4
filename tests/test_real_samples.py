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
