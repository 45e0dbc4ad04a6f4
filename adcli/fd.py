"""Central finite differences: the independent check on both AD modes.

Column j of J is (f(x + h_j e_j) − f(x − h_j e_j)) / (2 h_j), with the step
scaled to the input, h_j = ε^(1/3) · max(1, |x_j|) (ε the dtype's machine
epsilon): it balances truncation error (∝ h²) against rounding (∝ ε/h), so
the error is about ε^(2/3) relative (≈ 4e-11 in float64).

Counted like the AD modes: one pass (and one sweep) per input direction,
n in all, each evaluating f twice (primal_sweeps = 2n), and per column m
subtractions and m divisions
(derivative mults m·n, flops 2·m·n) plus the 2n perturbations x ± h
(2n flops).
"""
from __future__ import annotations

import time
from math import prod

import numpy as np

from .interpret import Cost

TOLERANCE = {"float64": 1e-6, "float32": 1e-2}   # norm-wise relative agreement with AD


def step_sizes(x: np.ndarray, dtype: str) -> np.ndarray:
    eps = np.finfo(np.float64 if dtype == "float64" else np.float32).eps
    return eps ** (1 / 3) * np.maximum(1.0, np.abs(x))


def finite_differences(program, wrt=None, at=None, backend="numpy", dtype="float64",
                       measure_memory=True):
    """The Jacobian by central differences, as a Derivative (mode 'central differences')."""
    from .api import Derivative

    wrt = program._wrt(wrt)
    outputs = program.output_names
    be, xp_dtype, host_inputs, inputs, consts, np_dtype, changed = program._setup(backend, dtype, at)
    graph = program.graph
    m = sum(prod(program.output_shape(o)) for o in outputs)
    n = sum(prod(program.input_shape(w)) for w in wrt)
    columns = []
    primal_peak = 0
    primal_counts = None
    cost = Cost(passes=n, sweeps=n, primal_sweeps=2 * n, chunk=1)

    primal = program.primal_plan(be, xp_dtype, inputs, consts)   # compiled once, counted then

    def evaluate(values):
        nonlocal primal_peak, primal_counts
        env = primal(values)
        primal_peak = max(primal_peak, primal.peak)
        primal_counts = (primal.mults, primal.flops)
        flat = [be.to_host(env[graph.outputs[o]]).reshape(-1) for o in outputs]
        return np.concatenate(flat).astype(np.float64) if flat else np.zeros(0)

    start = time.perf_counter()
    with be.measure(measure_memory) as report:
        value_env = primal(inputs)
        for name in wrt:
            base = np.asarray(host_inputs[name], dtype=np.float64)
            steps = step_sizes(base, dtype).reshape(-1)
            for j in range(base.size):
                plus, minus = base.copy().reshape(-1), base.copy().reshape(-1)
                plus[j] += steps[j]
                minus[j] -= steps[j]
                # the step actually taken, after rounding x ± h to the dtype
                h2 = float(np_dtype(plus[j]) - np_dtype(minus[j]))
                f_plus = evaluate({**inputs, name: be.asarray(plus.reshape(base.shape), xp_dtype)})
                f_minus = evaluate({**inputs, name: be.asarray(minus.reshape(base.shape), xp_dtype)})
                columns.append((f_plus - f_minus) / h2)
    elapsed = time.perf_counter() - start
    jac = np.stack(columns, axis=1) if columns else np.zeros((m, 0))
    mults, flops = primal_counts or (0, 0)
    cost.mults_primal, cost.flops_primal = 2 * n * mults, 2 * n * flops
    cost.mults_derivative = m * n
    cost.flops_derivative = 2 * m * n + 2 * n
    cost.peak_live_values = primal_peak + m     # one evaluation, plus f(x + h) kept for the difference
    cost.peak_bytes = report["peak_bytes"]
    cost.time_s = {"parse": program.times["parse"], "build": program.times["build"], "sweeps": elapsed}
    values = {o: np.asarray(be.to_host(value_env[graph.outputs[o]])) for o in outputs}
    blocks, row = {}, 0
    col_of, col = {}, 0
    for w in wrt:
        col_of[w] = col
        col += prod(program.input_shape(w))
    for o in outputs:
        oshape = program.output_shape(o)
        blocks[o] = {}
        for w in wrt:
            ishape = program.input_shape(w)
            part = jac[row:row + prod(oshape), col_of[w]:col_of[w] + prod(ishape)]
            blocks[o][w] = part.reshape(oshape + ishape)
        row += prod(oshape)
    return Derivative("jacobian", "central differences", "central differences", values,
                      program._spec(outputs, program.output_shape), program._spec(wrt, program.input_shape),
                      outputs, wrt, cost, be.name, be.device, dtype, host_inputs, blocks=blocks, matrix=jac,
                      consts=changed)
