"""JSON documents for results (the schema is in README.md)."""
from __future__ import annotations

import math

import numpy as np


def jsonable(array):
    """Nested lists of floats; nan and infinities become None (JSON null)."""
    array = np.asarray(array, dtype=np.float64)
    if np.all(np.isfinite(array)):
        return array.tolist()
    return finite(array.tolist())


def finite(value):
    """JSON-safe data: nan and infinities anywhere in dicts and lists become None."""
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


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
