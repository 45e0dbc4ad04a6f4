"""Derivatives as nodes on random programs: the gradient that adcli/derive.py writes out as
graph nodes (the reverse sweep behind grad(f)(x) and `adcli hessian`), and the Hessian the
program's own modes take of it, against tests/progen.py's independent oracle.

For each random program (every op of the registry, movements, defs, repeats, kinks), a scalar
s = Σ_k w_k · sum(output_k) is appended, and Program.gradient_program("s") writes ∇s out as
nodes. Checks:

* the gradient nodes' values equal the oracle's forward-mode dual numbers (Σ_k w_k times the
  rows of its Jacobian for output k): 1e-9 · scale;
* the Hessian, forward over reverse and reverse over reverse (the program's own modes run
  over the gradient's nodes), agree: 1e-9 · scale;
* the Hessian agrees with central differences of the oracle's dual-number gradient (no adcli
  code involved), Richardson-extrapolated, column by column wherever the column is smooth
  (the oracle's kink signature is the same at x and at the perturbed points) and well
  conditioned: 1e-6 · scale.

Programs whose derivative needs what no node computes (prod, digamma: refused in a sentence,
tests/test_derive.py) are counted and skipped. This is the property test the random-program
differential test stands for here: progen does not itself generate grad(...) calls.
ADCLI_DERIVE_EXAMPLES sets the number of programs (default 60).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings

import adcli
from adcli.errors import AdError

sys.path.insert(0, str(Path(__file__).resolve().parent))
import progen  # noqa: E402

EXAMPLES = int(os.environ.get("ADCLI_DERIVE_EXAMPLES") or 60)
STEP = 1e-4
TOTAL = "zz_total"
SEEN = {"checked": 0, "refused": 0, "fd_columns": 0}


def weighted_gradient(gp, weights, inputs=None) -> np.ndarray:
    """Σ_k w_k · (the rows of the oracle's Jacobian for output k), one row."""
    J = gp.jacobian(inputs)
    values, _ = gp.evaluate(inputs)
    row, offset = np.zeros(J.shape[1]), 0
    for name in gp.output_names:
        size = np.asarray(values[name]).size
        row += weights[name] * J[offset:offset + size].sum(axis=0)
        offset += size
    return row


def oracle_hessian_columns(gp, weights):
    """Central differences of the oracle's gradient (h, h/2, h/4, Richardson), or None for a
    column that is not smooth at the point; and each column's error estimate."""
    _, trace = gp.evaluate()
    columns, errors = [], []
    for d in gp.inputs:
        x = d.value.reshape(-1)
        for j in range(x.size):
            h = STEP * max(1.0, abs(x[j]))
            diffs, smooth = [], True
            for step in (h, h / 2, h / 4):
                g = []
                for sign in (1, -1):
                    moved = x.copy()
                    moved[j] += sign * step
                    at = {d.name: moved.reshape(d.shape)}
                    _, t = gp.evaluate(at)
                    smooth = smooth and not t.problems and trace.signature_equal(t)
                    g.append(weighted_gradient(gp, weights, at))
                diffs.append((g[0] - g[1]) / (2 * step))
            coarse, fine = (4 * diffs[1] - diffs[0]) / 3, (4 * diffs[2] - diffs[1]) / 3
            columns.append(fine if smooth else None)
            errors.append(float(np.max(np.abs(coarse - fine), initial=0.0)) if smooth else None)
    return columns, errors


def check(gp):
    if not gp.inputs or not gp.output_names:
        return
    rng = np.random.default_rng(len(progen.render_program(gp)))
    weights = {name: float(np.round(rng.uniform(0.5, 1.5), 3)) for name in gp.output_names}
    text = progen.render_program(gp).rstrip("\n") + "\noutput " + TOTAL + " = " + " + ".join(
        f"{weights[name]} * sum({name})" for name in gp.output_names) + "\n"
    program = adcli.loads(text)
    try:
        gradient = program.gradient_program(TOTAL)
    except AdError as exc:
        assert "cannot be made of graph nodes" in str(exc), f"{exc}\n{text}"
        SEEN["refused"] += 1
        return
    SEEN["checked"] += 1
    names = [d.name for d in gp.inputs]
    values = gradient.evaluate()
    ours = np.concatenate([np.asarray(values[f"d{TOTAL}/d{n}"], dtype=np.float64).reshape(-1) for n in names])
    oracle = weighted_gradient(gp, weights)
    scale = max(1.0, float(np.abs(oracle).max(initial=0)))
    assert np.abs(ours - oracle).max(initial=0) <= 1e-9 * scale, f"gradient nodes\n{ours}\n{oracle}\n{text}"

    forward = gradient.jacobian(mode="forward", wrt=names).jacobian
    reverse = gradient.jacobian(mode="reverse", wrt=names).jacobian
    scale = max(1.0, float(np.abs(forward).max(initial=0)))
    assert np.abs(forward - reverse).max(initial=0) <= 1e-9 * scale, f"modes\n{forward}\n{reverse}\n{text}"
    columns, errors = oracle_hessian_columns(gp, weights)
    for j, (column, error) in enumerate(zip(columns, errors)):
        if column is None or error > 1e-7 * scale:
            continue
        SEEN["fd_columns"] += 1
        worst = float(np.abs(forward[:, j] - column).max(initial=0))
        assert worst <= 1e-6 * scale, f"column {j}: {forward[:, j]} vs {column}\n{text}"


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None, print_blob=False,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.filter_too_much, HealthCheck.large_base_example])
@given(gp=progen.programs())
def test_gradient_nodes_and_their_hessian_on_random_programs(gp):
    check(gp)




def test_gradient_nodes_and_their_hessian_on_generated_programs():
    """As above, on programs drawn by random.Random (larger than Hypothesis's first draws):
    ADCLI_DERIVE_EXAMPLES of them, from seed 0."""
    seen = dict(SEEN)
    for s in range(EXAMPLES):
        check(progen.generate(progen.RandomChooser(s)))
    assert SEEN["checked"] - seen["checked"] >= EXAMPLES // 2, SEEN
    assert SEEN["fd_columns"] > seen["fd_columns"], SEEN
