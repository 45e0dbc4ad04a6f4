"""Shared helpers for the derivative tests: an independent central-difference
Jacobian (it uses only Program.evaluate, never adcli's derivative code) and a
compact way to run both AD modes."""
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = sorted((ROOT / "samples").glob("*.ad"))
SAMPLE = {path.name: path for path in SAMPLES}


def flat_outputs(program, values: dict) -> np.ndarray:
    """All outputs, flattened and joined in declaration order (the Jacobian's rows)."""
    return np.concatenate([np.asarray(values[name], dtype=np.float64).reshape(-1)
                           for name in program.output_names])


def fd_jacobian(program, at=None, wrt=None) -> np.ndarray:
    """Central differences, column by column over the wrt inputs in declaration
    order; the step h = 1e-5·max(1, |x_j|) keeps the error near 1e-10 relative."""
    base = {name: np.array(v, dtype=np.float64) for name, v in program.resolve_inputs(at).items()}
    names = [n for n in program.input_names if wrt is None or n in wrt]
    columns = []
    for name in names:
        x = base[name]
        for j in range(x.size):
            h = 1e-5 * max(1.0, abs(x.flat[j]))
            plus, minus = x.copy(), x.copy()
            plus.flat[j] += h
            minus.flat[j] -= h
            f_plus = flat_outputs(program, program.evaluate(at={**base, name: plus}))
            f_minus = flat_outputs(program, program.evaluate(at={**base, name: minus}))
            columns.append((f_plus - f_minus) / (2 * h))
    return np.stack(columns, axis=1)


def jacobians(program, at=None, wrt=None, chunk=None, dtype="float64"):
    """(forward result, reverse result), without the tracemalloc measurement."""
    return tuple(program.jacobian(mode=mode, wrt=wrt, at=at, chunk=chunk, dtype=dtype,
                                  measure_memory=False)
                 for mode in ("forward", "reverse"))
