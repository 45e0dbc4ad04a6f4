"""JSON documents for results (the schema is in README.md)."""
from __future__ import annotations

import math

import numpy as np


def jsonable(array):
    """Nested lists of floats; nan and infinities become None (JSON null)."""
    array = np.asarray(array, dtype=np.float64)
    if np.all(np.isfinite(array)):
        return array.tolist()
    return _replace_nonfinite(array.tolist())


def _replace_nonfinite(value):
    if isinstance(value, list):
        return [_replace_nonfinite(v) for v in value]
    return value if math.isfinite(value) else None


def derivative_json(program, result) -> dict:
    data = {
        "kind": result.kind,
        "file": program.graph.filename,
        "mode": result.mode,
        "mode_requested": result.mode_requested,
        "mode_note": result.note or None,
        "chunk_note": result.chunk_note or None,
        "backend": result.backend,
        "device": result.device,
        "dtype": result.dtype,
        "outputs": {o: list(program.output_shape(o)) for o in program.output_names},
        "wrt": list(result.wrt),
        "value": {name: jsonable(v) for name, v in result.value.items()},
        "jacobian": jsonable(result.jacobian),
        "rows": list(result.rows),
        "columns": list(result.columns),
        "cost": result.cost.to_json(),
        "inputs": {name: jsonable(v) for name, v in result.inputs.items()},
    }
    if result.kind == "jacobian":
        data["blocks"] = {o: {w: jsonable(b) for w, b in ins.items()} for o, ins in result.blocks.items()}
    elif result.kind == "jvp":
        data["tangent"] = {name: jsonable(v) for name, v in result.tangent.items()}
    else:
        data["cotangent"] = {name: jsonable(v) for name, v in result.cotangent.items()}
    return data
