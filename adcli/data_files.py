"""Data from files for `load(path, key)`: .npy, .npz, .json and .csv, as float64 arrays.

The builder (adcli.build) asks twice: once when the file is built, for the shape alone
(`shape_of`), and once when a run needs the data (`read`). A .npy or .npz member's shape
comes from its header, so a file far larger than memory is refused before any of it is
read; a .json or .csv file has no header and is parsed once, its size checked first.

Every problem is a DataFileProblem holding one sentence (the builder adds the place in
the .ad file). What a file's numbers become is decided in one function, `as_float`:
real numbers (integers and booleans included) are float64; anything else is refused.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:   # (zipfile is imported where .npz files are read, not at every start)
    import zipfile

FORMATS = (".npy", ".npz", ".json", ".csv")
# Parsing text holds each number as a Python object in a list (about 32 bytes) while the
# text itself takes two or more bytes a number: a .json or .csv file needs up to this many
# times its size while it is read.
TEXT_PARSE_FACTOR = 16


class DataFileProblem(Exception):
    """One sentence about a data file (the builder adds file:line:col and the caret)."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message, self.hint = message, hint


def resolve(path_text: str, base_dir) -> Path:
    """The path as written, relative to `base_dir` (None: the working directory)."""
    path = Path(os.path.expanduser(path_text))
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    return path


def file_format(path: Path, shown: str) -> str:
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise DataFileProblem(f"load reads {', '.join(FORMATS)} files, not {shown!r}")
    return suffix


def check_key(suffix: str, key, shown: str) -> None:
    """What each format takes as its key: an array name (.npz), a key of an object (.json),
    a column name or number (.csv, optional), none (.npy)."""
    if suffix == ".npy" and key is not None:
        raise DataFileProblem(f"{shown} holds one array: load it without a key")
    if suffix == ".npz" and key is None:
        raise DataFileProblem(f"{shown} holds several arrays: name one, e.g. load(\"{shown}\", \"x\")")
    if suffix == ".json" and key is not None and not isinstance(key, str):
        raise DataFileProblem(f"the key into {shown} must be a string")


def as_float(array, shown: str) -> np.ndarray:
    """The file's numbers as float64: the one place that decides which dtypes are data
    (integers and booleans become floats; strings, objects and complex numbers are refused)."""
    array = np.asarray(array)
    if array.dtype.kind in "biuf":
        return array.astype(np.float64, copy=False)
    kinds = {"c": "complex numbers", "U": "strings", "S": "bytes", "O": "Python objects",
             "M": "dates", "m": "time spans", "V": "records"}
    raise DataFileProblem(f"{shown} holds {kinds.get(array.dtype.kind, array.dtype.name)}, not real numbers")


def as_integers(array, shown: str, limit: int) -> np.ndarray:
    """The file's numbers as int64, for integer data (indices): integer and boolean arrays as
    they are, floating-point ones (every number a .csv or .json file holds) only where each
    value is a whole number; magnitudes over `limit` are refused, as in integer data written
    in the file."""
    array = np.asarray(array)
    if array.dtype.kind not in "biuf":
        as_float(array, shown)   # refuses it, naming what the file holds
    if array.dtype.kind == "f":
        check_finite(array, shown)
        _refuse_where(array != np.floor(array), array, shown,
                      ("is not a whole number", "are not whole numbers"),
                      "integer data (indices) must be whole numbers")
    if array.dtype.kind != "b":
        # compared in the array's own dtype: a uint64 past 2^63 is not wrapped first
        over = f"over 2^{limit.bit_length() - 1} in size"
        _refuse_where((array > limit) | (array < -limit), array, shown, ("is " + over, "are " + over),
                      "integer data (indices) that large is surely a mistake")
    return np.array(array, dtype=np.int64)


def _refuse_where(bad: np.ndarray, array: np.ndarray, shown: str, what: tuple, why: str) -> None:
    """One sentence about the values where `bad` holds: how many, and the first one and its place."""
    if not bad.any():
        return
    where = np.unravel_index(int(np.argmax(bad)), array.shape)
    count = int(bad.sum())
    value = array[where].item()
    place = f" at [{', '.join(map(str, where))}] (from 0)" if where else ""
    raise DataFileProblem(f"{shown} holds {count:,} value{'s' if count != 1 else ''} that "
                          f"{what[count != 1]}, the first {value!r}{place}; {why}")


def check_dimensions(shape, shown: str) -> tuple:
    shape = tuple(int(s) for s in shape)
    if 0 in shape:
        raise DataFileProblem(f"{shown} holds an empty array {shape}")
    return shape


def check_finite(array: np.ndarray, shown: str) -> None:
    """nan and ±inf in data are refused: a missing value would spread nan silently
    through every value and derivative that reads it."""
    bad = ~np.isfinite(array)
    if bad.any():
        where = np.unravel_index(int(np.argmax(bad)), array.shape)
        count = int(bad.sum())
        first = f"{float(array[where])}" + (f" at [{', '.join(map(str, where))}] (from 0)" if where else "")
        raise DataFileProblem(f"{shown} holds {count:,} non-finite value{'s' if count != 1 else ''}, the first "
                              f"{first}; data must be finite numbers",
                              hint="fill or drop the missing values before loading")


# -- .npy and .npz: the header first --------------------------------------------------------

def _npy_header(stream, shown: str) -> tuple:
    """(shape, dtype) from a .npy header, reading nothing past it."""
    from numpy.lib import format as npy

    try:
        version = npy.read_magic(stream)
        if version == (1, 0):
            shape, _, dtype = npy.read_array_header_1_0(stream)
        else:
            shape, _, dtype = npy.read_array_header_2_0(stream)
    except (ValueError, OSError, EOFError) as exc:
        raise DataFileProblem(f"{shown} is not a valid .npy array ({str(exc).rstrip('.')})") from None
    return shape, dtype


def _npz_member(archive: zipfile.ZipFile, key: str, shown: str) -> str:
    names = [n[:-4] for n in archive.namelist() if n.endswith(".npy")]
    if key not in names:
        listed = ", ".join(repr(n) for n in names[:10]) + (", …" if len(names) > 10 else "")
        raise DataFileProblem(f"{shown} has no array named {key!r} (it has {listed or 'none'})")
    return key + ".npy"


def _open(path: Path, shown: str):
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise DataFileProblem(f"no such data file: {shown}") from None
    except IsADirectoryError:
        raise DataFileProblem(f"{shown} is a directory, not a data file") from None
    except OSError as exc:
        raise DataFileProblem(f"cannot read {shown}: {exc.strerror}") from None


def _zip(path: Path, shown: str) -> zipfile.ZipFile:
    import zipfile

    handle = _open(path, shown)
    try:
        return zipfile.ZipFile(handle)
    except zipfile.BadZipFile:
        handle.close()
        raise DataFileProblem(f"{shown} is not a valid .npz archive") from None


def header(path: Path, suffix: str, key, shown: str) -> tuple:
    """(shape, dtype) of a .npy file or an .npz member, from its header alone."""
    if suffix == ".npy":
        with _open(path, shown) as stream:
            return _npy_header(stream, shown)
    with _zip(path, shown) as archive, archive.open(_npz_member(archive, key, shown)) as stream:
        return _npy_header(stream, f"{shown}[{key!r}]")


def read_binary(path: Path, suffix: str, key, shown: str) -> np.ndarray:
    """All of a .npy file or an .npz member (no pickled objects: data only)."""
    from numpy.lib import format as npy

    try:
        if suffix == ".npy":
            with _open(path, shown) as stream:
                return npy.read_array(stream, allow_pickle=False)
        with _zip(path, shown) as archive, archive.open(_npz_member(archive, key, shown)) as stream:
            return npy.read_array(stream, allow_pickle=False)
    except ValueError as exc:   # a pickled object array, or a truncated file
        raise DataFileProblem(f"{shown} cannot be read as numbers ({str(exc).rstrip('.')})") from None


# -- .json and .csv: parsed whole, their size checked first -----------------------------------

def read_text(path: Path, suffix: str, key, shown: str, memory_cap: int) -> np.ndarray:
    """A .json or .csv file's numbers (refused first when parsing it could exceed
    `memory_cap` bytes)."""
    with _open(path, shown) as stream:
        size = os.fstat(stream.fileno()).st_size
        if TEXT_PARSE_FACTOR * size > memory_cap:
            from .api import _bytes

            raise DataFileProblem(f"{shown} is {_bytes(size)} of text; parsing it could need about "
                                  f"{_bytes(TEXT_PARSE_FACTOR * size)}, over half of the available memory "
                                  f"({_bytes(memory_cap)})", hint="save the data as .npy or .npz, whose "
                                  "size is known before it is read")
        raw = stream.read()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DataFileProblem(f"{shown} is not UTF-8 text") from None
    return _read_json(text, key, shown) if suffix == ".json" else _read_csv(text, key, shown)


def _read_json(text: str, key, shown: str) -> np.ndarray:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataFileProblem(f"{shown} is not valid JSON ({exc.msg} at line {exc.lineno}, "
                              f"column {exc.colno})") from None
    except RecursionError:
        raise DataFileProblem(f"{shown} nests its lists too deeply") from None
    where = shown
    if key is not None:
        if not isinstance(data, dict):
            kind = ("a list" if isinstance(data, list) else "a string" if isinstance(data, str)
                    else "null" if data is None else "true or false" if isinstance(data, bool) else "a number")
            raise DataFileProblem(f"{shown} holds {kind}, not an object with keys: load it without a key")
        if key not in data:
            known = ", ".join(repr(k) for k in list(data)[:10]) + (", …" if len(data) > 10 else "")
            raise DataFileProblem(f"{shown} has no key {key!r} (it has {known or 'none'})")
        data, where = data[key], f"{shown}[{key!r}]"
    elif isinstance(data, dict):
        known = ", ".join(repr(k) for k in list(data)[:10]) + (", …" if len(data) > 10 else "")
        raise DataFileProblem(f"{shown} holds an object: name one of its keys ({known or 'none'})")
    return _json_numbers(data, where)


def _json_numbers(data, where: str) -> np.ndarray:
    def numeric(value) -> bool:
        if isinstance(value, list):
            return all(numeric(item) for item in value)
        return isinstance(value, (int, float)) and not isinstance(value, bool)

    if not numeric(data):
        raise DataFileProblem(f"{where} is not a number or a (nested) list of numbers")
    try:
        with np.errstate(over="ignore"):
            return np.array(data, dtype=np.float64)
    except (ValueError, OverflowError):
        raise DataFileProblem(f"{where} is a list whose rows have different lengths") from None


def _number(text: str):
    try:
        return float(text)
    except ValueError:
        return None


def _read_csv(text: str, key, shown: str) -> np.ndarray:
    """Comma-separated numbers, one row per line; blank lines are skipped. The first row is a
    header (column names) when any of its fields is not a number."""
    rows = [(number, row) for number, row in enumerate(csv.reader(io.StringIO(text)), 1)
            if any(field.strip() for field in row)]
    if not rows:
        raise DataFileProblem(f"{shown} holds no rows")
    names = None
    if any(_number(field) is None for field in rows[0][1]):
        names = [field.strip() for field in rows[0][1]]
        rows = rows[1:]
        if not rows:
            raise DataFileProblem(f"{shown} has a header row and no data")
    width = len(names) if names is not None else len(rows[0][1])
    values = []
    for number, row in rows:
        if len(row) != width:
            raise DataFileProblem(f"line {number} of {shown} has {len(row)} field{'s' if len(row) != 1 else ''},"
                                  f" not {width} like the {'header' if names else 'first row'}")
        parsed = [_number(field) for field in row]
        for column, value in enumerate(parsed):
            if value is None:
                raise DataFileProblem(f"line {number}, column {column + 1} of {shown} is "
                                      f"{row[column].strip()!r}, not a number")
        values.append(parsed)
    table = np.array(values, dtype=np.float64)
    if key is None:
        return table
    if isinstance(key, str):
        if names is None:
            raise DataFileProblem(f"{shown} has no header row to name column {key!r}; "
                                  "select a column by its number (from 0)")
        if key not in names:
            listed = ", ".join(repr(n) for n in names[:10]) + (", …" if len(names) > 10 else "")
            raise DataFileProblem(f"{shown} has no column named {key!r} (it has {listed})")
        return table[:, names.index(key)]
    if not (isinstance(key, float) and key.is_integer() and 0 <= key < width) or not math.isfinite(key):
        raise DataFileProblem(f"{shown} has columns 0 to {width - 1}; column {key:g} is not one of them")
    return table[:, int(key)]
