"""JSON documents for results (the schema is in README.md)."""
from __future__ import annotations

import json
import math

import numpy as np

from .ir import element_labels

JSON_CHUNK = 1 << 16   # numbers (or labels) rendered at a time by derivative_json_pieces


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


def derivative_json(program, result, lazy: bool = False) -> dict:
    """The result as a JSON-ready dict. With `lazy`, arrays and row/column labels are
    left as _Array/_Labels, which derivative_json_pieces renders a piece at a time."""
    jsonable = _Array if lazy else globals()["jsonable"]
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
        "rows": _Labels(result.row_spec) if lazy else list(result.rows),
        "columns": _Labels(result.column_spec) if lazy else list(result.columns),
        "cost": result.cost.to_json(),
        "inputs": {name: jsonable(v) for name, v in result.inputs.items()},
        # consts the run set (--at, --inputs): with `inputs`, what reproduces the run
        "consts": {name: jsonable(result.consts[name]) for name in result.consts_set},
    }
    if result.kind == "jacobian":
        data["blocks"] = {o: {w: jsonable(b) for w, b in ins.items()} for o, ins in result.blocks.items()}
    elif result.kind == "jvp":
        data["tangent"] = {name: jsonable(v) for name, v in result.tangent.items()}
    else:
        data["cotangent"] = {name: jsonable(v) for name, v in result.cotangent.items()}
    return data


# -- streaming -------------------------------------------------------------------------------
# json.dumps(derivative_json(...)) holds every number three times over (a Python float
# in a list, its text, the whole document, then its bytes on the way out): about
# 100 bytes per number, gigabytes for a large gradient. derivative_json_pieces writes
# the same text, byte for byte, JSON_CHUNK numbers at a time.

class _Array:
    """An array to be written as nested JSON lists, in pieces."""

    def __init__(self, array):
        self.array = array

    def pieces(self, chunk: int):
        a = np.asarray(self.array, dtype=np.float64)
        if a.ndim == 0 or a.size == 0:   # a number, or nested empty lists
            yield json.dumps(jsonable(a), allow_nan=False)
            return
        lead = a.shape[:-1]
        width = a.shape[-1]
        rows = a.reshape(-1, width)
        yield "[" * len(lead)
        per = max(1, chunk // max(width, 1))
        group = lead[-1] if len(lead) >= 2 else rows.shape[0]   # rows between outer brackets
        r = 0
        while r < rows.shape[0]:
            if r:
                yield _separator(r, lead)
            if width > chunk:   # one long row, in pieces
                yield "["
                for c in range(0, width, chunk):
                    yield (", " if c else "") + json.dumps(jsonable(rows[r, c:c + chunk]), allow_nan=False)[1:-1]
                yield "]"
                r += 1
                continue
            end = min(rows.shape[0], r + per, (r // group + 1) * group)
            yield json.dumps(jsonable(rows[r:end]), allow_nan=False)[1:-1]
            r = end
        yield "]" * len(lead)


def _separator(r: int, lead: tuple) -> str:
    """Between row r-1 and row r of an array whose leading axes are `lead`: close and
    reopen the brackets of every leading axis (but the last) that starts over at r."""
    k, span = 0, 1
    for size in reversed(lead[1:]):
        span *= size
        if r % span:
            break
        k += 1
    return "]" * k + ", " + "[" * k


class _Labels:
    """Row or column labels (x, x[3], W[2,0]) from a [(name, shape)] spec, made a piece at a time."""

    def __init__(self, spec):
        self.spec = spec

    def pieces(self, chunk: int):
        yield "["
        first = True
        for name, shape in self.spec:
            total = 1 if shape is None or len(shape) == 0 else int(np.prod(shape))
            for start in range(0, total, chunk):
                end = min(total, start + chunk)
                if shape is None or len(shape) == 0:
                    labels = [name]
                elif len(shape) == 1:
                    labels = [f"{name}[{i}]" for i in range(start, end)]
                else:
                    index = np.unravel_index(np.arange(start, end), shape)
                    labels = [f"{name}[{','.join(map(str, at))}]"
                              for at in zip(*(axis.tolist() for axis in index))]
                yield ("" if first else ", ") + json.dumps(labels)[1:-1]
                first = False
        yield "]"


def json_pieces(value, chunk: int = JSON_CHUNK):
    """The text json.dumps(value, allow_nan=False) would make (nan as null), as a
    sequence of strings; _Array and _Labels values are rendered a chunk at a time."""
    if isinstance(value, (_Array, _Labels)):
        yield from value.pieces(chunk)
    elif isinstance(value, dict):
        yield "{"
        for i, (key, item) in enumerate(value.items()):
            yield (", " if i else "") + json.dumps(key) + ": "
            yield from json_pieces(item, chunk)
        yield "}"
    elif isinstance(value, (list, tuple)):
        yield "["
        for i, item in enumerate(value):
            if i:
                yield ", "
            yield from json_pieces(item, chunk)
        yield "]"
    else:
        yield json.dumps(finite(value), allow_nan=False)


def derivative_json_pieces(program, result, chunk: int = JSON_CHUNK, size: int = 1 << 16):
    """json.dumps(derivative_json(program, result), allow_nan=False), the same text,
    in strings of about `size` characters, holding at most `chunk` numbers at a time."""
    buffer, length = [], 0
    for piece in json_pieces(derivative_json(program, result, lazy=True), chunk):
        buffer.append(piece)
        length += len(piece)
        if length >= size:
            yield "".join(buffer)
            buffer, length = [], 0
    if buffer:
        yield "".join(buffer)


def hessian_json(program, hessian) -> dict:
    """adcli hessian --json (keys listed in README.md's JSON section)."""
    result = hessian.result
    labels = [label for w in hessian.wrt for label in element_labels(w, program.input_shape(w))]
    data = {
        "kind": "hvp" if result.kind == "jvp" else "hessian",
        "file": program.graph.filename,
        "output": hessian.output,
        "wrt": list(hessian.wrt),
        "mode": result.mode,
        "backend": result.backend,
        "device": result.device,
        "dtype": result.dtype,
        "value": finite(float(hessian.value)),
        "gradient": {w: jsonable(g) for w, g in hessian.gradient.items()},
        "labels": labels,
        "hessian": None,
        "hvp": None,
        "direction": None,
        "check": {k: v for k, v in hessian.check.items() if k != "message"},
        "cost": result.cost.to_json(),
        "inputs": {name: jsonable(v) for name, v in result.inputs.items() if name in program.graph.inputs},
    }
    if result.kind == "jvp":
        data["hvp"] = {w: jsonable(result.tangent[f"d{hessian.output}/d{w}"]) for w in hessian.wrt}
        data["direction"] = {w: jsonable(v) for w, v in (result.given or {}).items()}
    else:
        data["hessian"] = jsonable(result.jacobian)
    return finite(data)
