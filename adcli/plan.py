"""A staged program (adcli.staging) compiled into a Python function.

``Plan`` takes a tape and what its outputs are, works out statically what the
interpreter used to work out on every run, and writes straight-line Python:
- operands are local variables (no environment dictionaries, no lookups by node);
- each variable is deleted right after its last use (liveness decided once, here),
  so memory is freed as early as the rules allow;
- a sum whose left operand dies there and owns its memory is made in place
  (``a += b``): cotangents accumulate without a new array per contribution;
- nothing is counted: the counts were taken while staging and are the plan's;
- on NumPy, when memory is not being measured, large intermediates are written into
  buffers kept between calls (an arena: ``ArenaLayout``) instead of fresh arrays.

The same source, with its constants written out and fresh arrays throughout, is what
``adcli codegen`` emits.
"""
from __future__ import annotations

import functools
import keyword
import os
import re
import threading
import tracemalloc
import weakref

import numpy

from .staging import BINARY, UNARY, Const, Eqn, Sym, Var
from .tangents import Scaled, Seed

# Calls and methods whose result is a new array that nothing else refers to.
FRESH_CALLS = {"sin", "cos", "tan", "exp", "log", "log1p", "sqrt", "tanh", "abs", "sign", "where",
               "arcsin", "arccos", "arctan", "arctan2", "sinh", "cosh", "arcsinh", "arccosh", "arctanh",
               "expm1", "log2", "log10", "logaddexp", "hypot", "clip", "heaviside",
               "maximum", "minimum", "zeros", "ones", "full", "empty", "zeros_like", "ones_like",
               "empty_like", "concatenate", "stack", "cumprod", "sum", "max", "min", "mean", "prod",
               "isfinite", "dot", "matmul", "outer", "copy"}
FRESH_METHODS = {"sum", "astype", "copy", "max", "min", "mean", "prod"}

# -- the arena ---------------------------------------------------------------------------------
# Operators as the ufuncs that compute them into a given array (out=).
OPERATOR_UFUNCS = {"add": "add", "sub": "subtract", "mul": "multiply", "truediv": "true_divide",
                   "pow": "power", "matmul": "matmul", "gt": "greater", "lt": "less",
                   "ge": "greater_equal", "le": "less_equal", "eq": "equal", "ne": "not_equal",
                   "and": "bitwise_and", "or": "bitwise_or", "neg": "negative", "invert": "invert"}
# A result smaller than this is allocated fresh on every call: small blocks come back from
# the allocator's free lists at no cost, and out= costs a keyword argument per call (on the
# deep chain's 80 kB values, buffers made the sweeps 1% slower). From glibc's mmap threshold
# (128 kB) up, freed blocks go back to the system and are page-faulted in again on the next
# call: damped_wave.ad's forward Jacobian, fresh against arena, fastest / median of 21:
# 0.24 / 0.30 against 0.24 / 0.25 ms at 128 kB a value, 4.3 / 6.5 against 3.6 / 4.1 ms at
# 2 MB, 21 / 38 against 17 / 20 ms at 8 MB.
ARENA_MIN_BYTES = 128 * 1024
# The most bytes all arenas of the process hold at once: a call that would need a new arena
# past it allocates afresh. Arenas stay between calls, beside whatever runs next, which the
# memory check (made for one run) does not foresee; this bounds what they add.
ARENA_MAX_BYTES = 1 << 30
# The checking mode (also the tests'): every value that can have a buffer gets one, and every
# call of a plan with an arena is checked against the same plan allocating afresh, bit for bit.
CHECK_ARENAS = os.environ.get("ADCLI_CHECK_PLANS") == "1"


class ArenaMismatch(Exception):
    """The checking mode found a plan whose results with its arena differ from its results
    with fresh arrays, or a result that is or views a buffer of the arena (a bug in adcli)."""


def _ufunc(xp, name: str, nargs: int):
    """xp.<name> when it is a ufunc of `nargs` operands and one result (it takes out=)."""
    target = getattr(xp, name, None)
    if isinstance(target, numpy.ufunc) and target.nout == 1 and target.nin == nargs:
        return target
    return None


def _makes_new_array(eqn, xp) -> bool:
    """Whether an equation's result is a new array (never a view of its operands)."""
    if eqn.kind in ("binary", "unary", "special"):
        return True
    if eqn.kind == "call":
        return eqn.name in FRESH_CALLS or _ufunc(xp, eqn.name, len(eqn.args)) is not None
    if eqn.kind == "method":   # (astype(..., copy=False) may return its operand itself)
        return eqn.name in FRESH_METHODS and "copy" not in eqn.kwargs
    return False


class ArenaLayout:
    """Which results of a plan are written into buffers kept between calls, and the buffers.

    Decided once, from the plan's liveness: a value computed by a ufunc (an operator, exp,
    matmul, ...) whose shape and dtype are known owns a buffer from the equation that makes
    it to the last read of it or of any view of it (a reshape, .T, a slice, a value made
    from it by an equation that may return a view, the same array after `+=`). Values whose
    lifetimes do not overlap share a buffer, assigned greedily in program order (the best
    fitting free buffer, else the largest grown, else a new one), so the buffers held come
    to about the plan's peak of live intermediates. A buffer is free again only after the
    equation that reads its value for the last time, never for that equation's own result:
    no result overlaps an operand. A value that the plan returns, or that views a buffer,
    gets none: nothing a caller receives is, or views, a buffer.

    A buffer's array is laid out as the value was while staging (a ufunc lays its result out
    as its operands are, a transposed one say), so that what reads it runs as it would on a
    fresh array, sums adding in the same order: the results are the same bit for bit.

    `sizes`: bytes of each buffer; `views`: (buffer, shape, dtype, axis order) of each array a
    plan writes into (its buffer's first bytes, viewed); `assigned`: equation index ->
    (ufunc, view)."""

    def __init__(self, plan, tape, forms, min_bytes: int):
        xp, eqns = plan.xp, tape.eqns
        candidates = {}
        for index, eqn in enumerate(eqns):
            fn = self._ufunc_of(eqn, xp, forms[index], tape.consts, plan.info)
            if fn is None:
                continue
            shape, dtype = plan.info[eqn.out]
            if dtype is None or not shape:   # a 0-d result is a NumPy scalar, not an array
                continue
            dtype = numpy.dtype(dtype)
            nbytes = int(numpy.prod(shape)) * dtype.itemsize
            order = _axis_order(tuple(shape), dtype, tape.strides.get(eqn.out))
            if nbytes and nbytes >= min_bytes and order is not None:
                candidates[eqn.out] = (fn, tuple(shape), dtype, nbytes, order)
        owners: dict = {}   # variable -> the candidates whose buffer it may be or view
        for index, eqn in enumerate(eqns):
            out = eqn.out
            if out is None:
                continue
            if out in candidates:
                owners[out] = (out,)
            elif forms[index] != "statement":   # `a += b; out = a`, `out = a`: the same array
                owners[out] = owners.get(eqn.args[0].id, ())
            elif not _makes_new_array(eqn, xp):
                found = {c for v in plan._reads[index] for c in owners.get(v, ())}
                if found:
                    owners[out] = tuple(sorted(found))
        escaped = {c for v in plan.outputs for c in owners.get(v, ())}
        ends: dict = {}   # candidate -> the last equation reading it or a view of it
        for v, held in owners.items():
            end = plan._last.get(v, plan._made[v])
            for c in held:
                ends[c] = max(ends.get(c, -1), end)
        self.sizes: list = []
        self.views: list = []
        self.assigned: dict = {}
        self.buffer: dict = {}   # equation index -> its buffer
        self.ends: dict = {}     # equation index -> the last equation reading its value or a view
        view_of: dict = {}
        free: list = []
        freed_after: dict = {}
        for index, eqn in enumerate(eqns):
            if eqn.out in candidates and eqn.out not in escaped:
                fn, shape, dtype, need, order = candidates[eqn.out]
                fits = [b for b in free if self.sizes[b] >= need]
                if fits:
                    b = min(fits, key=lambda b: (self.sizes[b], b))
                elif free:
                    b = max(free, key=lambda b: (self.sizes[b], -b))
                    self.sizes[b] = need
                else:
                    b = len(self.sizes)
                    self.sizes.append(need)
                if b in free:
                    free.remove(b)
                key = (b, shape, dtype.str, order)
                if key not in view_of:
                    view_of[key] = len(self.views)
                    self.views.append(key)
                self.assigned[index] = (fn, view_of[key])
                self.buffer[index], self.ends[index] = b, ends[eqn.out]
                freed_after.setdefault(ends[eqn.out], []).append(b)
            free.extend(freed_after.pop(index, ()))
        self.sizes = tuple(self.sizes)
        self.views = tuple(self.views)

    @staticmethod
    def _ufunc_of(eqn, xp, form, consts, info):
        """The ufunc that can compute the equation's result into a buffer, or None."""
        if form != "statement" or eqn.out is None or eqn.kwargs:
            return None
        if eqn.kind in ("binary", "unary"):
            if eqn.kind == "binary" and eqn.name == "pow" and _ndim(eqn.args[1], consts, info) < 1:
                # x ** 2, x ** 0.5: NumPy's operator may take a shortcut (square, sqrt) that
                # np.power does not, and round differently
                return None
            name = OPERATOR_UFUNCS.get(eqn.name)
        elif eqn.kind == "call":
            name = eqn.name
        else:
            return None
        return name if name and _ufunc(xp, name, len(eqn.args)) is not None else None

    @property
    def nbytes(self) -> int:
        return sum(self.sizes)

    def make(self, xp):
        """A new arena: the buffers, allocated (untouched: the first call pages them in)."""
        buffers = [xp.empty(size, dtype=xp.uint8) for size in self.sizes]
        return tuple(_laid_out(buffers[b], shape, numpy.dtype(dtype), order)
                     for b, shape, dtype, order in self.views)


def _laid_out(buffer, shape, dtype, order):
    """An array of `shape` on the first bytes of `buffer`, its axes in memory in `order`
    (outermost first)."""
    flat = buffer[:int(numpy.prod(shape)) * dtype.itemsize].view(dtype)
    array = flat.reshape([shape[axis] for axis in order])
    return array.transpose(numpy.argsort(order)) if order != tuple(range(len(shape))) else array


def _axis_order(shape, dtype, strides):
    """The order of a value's axes in memory, outermost first, when an array made by
    _laid_out in that order has its strides (C order when `strides` is None); else None
    (a layout with gaps or overlaps: not buffered)."""
    if strides is None:
        return tuple(range(len(shape)))
    order = tuple(sorted(range(len(shape)), key=lambda axis: -strides[axis]))
    made, step = [0] * len(shape), dtype.itemsize
    for axis in reversed(order):   # the strides of _laid_out's array, innermost axis first
        made[axis] = step
        step *= shape[axis]
    # (a stride along an axis of length 1 is never used: it may differ)
    if all(a == b or n <= 1 for a, b, n in zip(made, strides, shape)):
        return order
    return None


def _ndim(arg, consts, info) -> int:
    if isinstance(arg, Var):
        return len(info[arg.id][0])
    if isinstance(arg, Const):
        return getattr(consts[arg.id], "ndim", 0)
    return 0


class _Held:
    """The bytes held by every arena of the process (ARENA_MAX_BYTES)."""

    def __init__(self):
        self.bytes = 0
        self.lock = threading.Lock()

    def reserve(self, nbytes: int) -> bool:
        with self.lock:
            if self.bytes + nbytes > ARENA_MAX_BYTES:
                return False
            self.bytes += nbytes
            return True

    def release(self, made: list):
        with self.lock:
            self.bytes -= made[0]


HELD = _Held()


class ArenaPool:
    """The free arenas of one layout, shared by every plan with that layout (the sweeps of a
    chunked run are usually the same code on other constants: they run one after another,
    and one arena serves them all). A call takes an arena out and puts it back after, so
    two threads running plans of one layout at once never share buffers: a call that finds
    none free makes one, unless the arenas of the process already hold ARENA_MAX_BYTES
    (then it runs with fresh arrays). The arenas stay until no plan of that layout is left."""

    def __init__(self, layout: ArenaLayout, xp):
        self.layout, self.xp = layout, xp
        self.free: list = []
        self.made = 0
        self._bytes = [0]   # (read by the finalizer, which must not hold the pool)
        weakref.finalize(self, HELD.release, self._bytes)

    def take(self):
        """A free arena, or a new one; None when a new one would pass ARENA_MAX_BYTES."""
        try:
            return self.free.pop()    # (list.pop and list.append are atomic)
        except IndexError:
            if not HELD.reserve(self.layout.nbytes):
                return None
            self._bytes[0] += self.layout.nbytes
            self.made += 1
            return self.layout.make(self.xp)

    def run(self, fn, fresh, inputs):
        """fn(inputs, buffers) with an arena of this pool, or fresh(inputs) without one."""
        buffers = self.take()
        if buffers is None:
            return fresh(inputs)
        try:
            return fn(inputs, buffers)
        finally:
            self.free.append(buffers)


_POOLS: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
_POOLS_LOCK = threading.Lock()


def _pool_for(layout: ArenaLayout, xp) -> ArenaPool:
    key = (layout.sizes, layout.views)
    with _POOLS_LOCK:
        pool = _POOLS.get(key)
        if pool is None:
            pool = _POOLS[key] = ArenaPool(layout, xp)
        return pool


def _result_arrays(tree, into: list) -> list:
    """The arrays (and numbers) in a plan's results, in order."""
    if isinstance(tree, Scaled):
        _result_arrays(tree.scale, into)
    elif isinstance(tree, dict):
        for v in tree.values():
            _result_arrays(v, into)
    elif isinstance(tree, (list, tuple)):
        for v in tree:
            _result_arrays(v, into)
    elif tree is not None and not isinstance(tree, Seed):
        into.append(tree)
    return into


def _poison(buffers):
    """Every element of an arena's buffers set to garbage (NaN, -1, True)."""
    for view in buffers:
        view[...] = numpy.nan if view.dtype.kind in "fc" else numpy.array(-1).astype(view.dtype)


def _same_bits(a, b) -> bool:
    if hasattr(a, "dtype") and hasattr(b, "dtype"):
        return (a.dtype == b.dtype and numpy.shape(a) == numpy.shape(b)
                and numpy.ascontiguousarray(a).tobytes() == numpy.ascontiguousarray(b).tobytes())
    return type(a) is type(b) and repr(a) == repr(b)


class _Slot:
    __slots__ = ("index",)

    def __init__(self, index: int):
        self.index = index


def _template(tree, found: list):
    """The output structure with each staged value replaced by a slot (a Scaled's scale
    too: it is data, made by the plan on every call)."""
    if isinstance(tree, Sym):
        found.append(tree.var)
        return _Slot(len(found) - 1)
    if isinstance(tree, Scaled) and isinstance(tree.scale, Sym):
        return Scaled(tree.seed, _template(tree.scale, found))
    if isinstance(tree, dict):
        return {k: _template(v, found) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_template(v, found) for v in tree)
    return tree


def _vars_outside(tree, inner) -> list:
    """The staged values of `tree` found outside its subtree `inner` (by identity)."""
    if tree is inner:
        return []
    if isinstance(tree, Sym):
        return [tree.var]
    if isinstance(tree, Scaled) and isinstance(tree.scale, Sym):
        return [tree.scale.var]
    if isinstance(tree, dict):
        tree = list(tree.values())
    if isinstance(tree, (list, tuple)):
        return [v for item in tree for v in _vars_outside(item, inner)]
    return []


def _leaf_bytes(template) -> int:
    """Bytes of the output leaves a plan keeps (Seeds' index arrays, constant arrays)."""
    if isinstance(template, dict):
        return sum(_leaf_bytes(v) for v in template.values())
    if isinstance(template, (list, tuple)):
        return sum(_leaf_bytes(v) for v in template)
    if isinstance(template, Seed):
        return getattr(template.src, "nbytes", 0)
    if isinstance(template, Scaled):   # its selection's index array (and a constant scale)
        return getattr(template.src, "nbytes", 0) + getattr(template.scale, "nbytes", 0)
    return getattr(template, "nbytes", 0)


def _refs(arg, kind, into):
    """The ids of every `kind` (Var or Const) in an argument, through tuples, lists,
    dicts and slices, appended to the list `into` (or added to the set)."""
    if isinstance(arg, kind):
        into.append(arg.id) if isinstance(into, list) else into.add(arg.id)
    elif isinstance(arg, (tuple, list)):
        for a in arg:
            _refs(a, kind, into)
    elif isinstance(arg, dict):
        for a in arg.values():
            _refs(a, kind, into)
    elif isinstance(arg, slice):
        for a in (arg.start, arg.stop, arg.step):
            _refs(a, kind, into)
    return into


def _vars_in(arg, into: list):
    return _refs(arg, Var, into)


def _consts_in(arg, into: set):
    return _refs(arg, Const, into)


def _plain(var: int) -> str:
    return f"t{var}"


def expr(arg, name=_plain) -> str:
    """Python source for one argument; `name` writes a variable."""
    if isinstance(arg, Var):
        return name(arg.id)
    if isinstance(arg, Const):
        return f"c{arg.id}"
    if isinstance(arg, tuple):
        inner = ", ".join(expr(a, name) for a in arg)
        return f"({inner},)" if len(arg) == 1 else f"({inner})"
    if isinstance(arg, list):
        return "[" + ", ".join(expr(a, name) for a in arg) + "]"
    if isinstance(arg, slice):
        return f"slice({expr(arg.start, name)}, {expr(arg.stop, name)}, {expr(arg.step, name)})"
    if isinstance(arg, float):
        if arg != arg:
            return "float('nan')"
        if arg in (float("inf"), float("-inf")):
            return f"float('{arg}')"
    return repr(arg)


def key_expr(key, name=_plain) -> str:
    """An index as written between brackets: x[c1, :, 2]."""
    parts = key if isinstance(key, tuple) else (key,)
    out = []
    for part in parts:
        if isinstance(part, slice):
            text = ":".join("" if p is None else expr(p, name) for p in (part.start, part.stop))
            out.append(text if part.step is None else f"{text}:{expr(part.step, name)}")
        elif part is Ellipsis:
            out.append("...")
        else:
            out.append(expr(part, name))
    if isinstance(key, tuple) and len(key) == 1:
        return out[0] + ","
    return ", ".join(out) if out else "()"


def xp_name(fn: str) -> str:
    """The name an xp function is bound to in a plan: xp_sin, xp_linalg_solve (xp.linalg.solve)."""
    return "xp_" + fn.replace(".", "_")


def statement(eqn, name=_plain) -> str:
    """One equation as a line of Python (xp functions are bound as xp_<name>, the
    backend's special functions as sp_<name>)."""
    args, fn = eqn.args, eqn.name
    e = lambda a: expr(a, name)   # noqa: E731
    kwargs = "".join(f", {k}={e(v)}" for k, v in eqn.kwargs.items())
    out = name(eqn.out) if eqn.out is not None else None
    if eqn.kind in ("call", "special"):
        call = ", ".join(e(a) for a in args) + kwargs
        bound = xp_name(fn) if eqn.kind == "call" else f"sp_{fn}"
        return f"{out} = {bound}({call.lstrip(', ')})"
    if eqn.kind == "binary":
        return f"{out} = {e(args[0])} {BINARY[fn][1]} {e(args[1])}"
    if eqn.kind == "unary":
        return f"{out} = {UNARY[fn][1]}{e(args[0])}"
    if eqn.kind == "method":
        call = ", ".join(e(a) for a in args[1:]) + kwargs
        return f"{out} = {e(args[0])}.{fn}({call.lstrip(', ')})"
    if eqn.kind == "attr":
        return f"{out} = {e(args[0])}.{fn}"
    if eqn.kind == "getitem":
        return f"{out} = {e(args[0])}[{key_expr(args[1], name)}]"
    if eqn.kind == "setitem":
        return f"{e(args[0])}[{key_expr(args[1], name)}] = {e(args[2])}"
    if eqn.kind == "inplace":
        return f"{e(args[0])} {BINARY[fn][1]}= {e(args[1])}"
    raise ValueError(f"unknown equation kind {eqn.kind}")


# Compiled code by source text: the sweeps of a chunked run (seeds at other offsets) are
# usually the same code with other constants, and compiling is the costly part.
_FACTORIES: dict = {}
MAX_FACTORIES = 1024

RESERVED = set(keyword.kwlist) | {"xp", "inputs", "consts", "make", "np", "cp", "value", "jacobian",
                                     "jvp", "vjp", "gradient", "special", "env", "bufs"}


def _identifiers(names: dict) -> dict:
    """Variable -> a unique Python identifier, from the names given while staging."""
    taken, result = set(), {}
    for var, wanted in names.items():
        base = re.sub(r"\W", "_", wanted) or "t"
        if base[0].isdigit() or base in RESERVED or re.fullmatch(r"[ct]\d+|(xp|sp)_\w+", base):
            base += "_"
        candidate, n = base, 1
        while candidate in taken:
            n += 1
            candidate = f"{base}_{n}"
        taken.add(candidate)
        result[var] = candidate
    return result


# The longest function body a compiled plan runs in one piece (Plan._split_body).
BLOCK_LINES = 400


# -- constants folded while compiling --------------------------------------------------------
# What a rule computes from constants alone (the seed of a mean, 1/n placed on a diagonal; an
# exponent's `where(p == 0, 1, p - 1)` for a literal p) is the same on every call: computed
# once here, it becomes a constant of the plan. The staging records floating array creation
# (zeros, ones) because a program may write into such an array; folding keeps that safe by
# leaving alone every value that shares memory with one written at run time, or returned.
FOLDED_KINDS = {"call", "method", "attr", "getitem", "binary", "unary", "setitem", "inplace"}


def _substituted(arg, folded: dict):
    """`arg` with each Var of `folded` (var -> Const) replaced, through tuples, lists,
    dicts and slices."""
    if isinstance(arg, Var):
        return folded.get(arg.id, arg)
    if isinstance(arg, tuple):
        return tuple(_substituted(a, folded) for a in arg)
    if isinstance(arg, list):
        return [_substituted(a, folded) for a in arg]
    if isinstance(arg, dict):
        return {k: _substituted(a, folded) for k, a in arg.items()}
    if isinstance(arg, slice):
        return slice(*(_substituted(a, folded) for a in (arg.start, arg.stop, arg.step)))
    return arg


class KnownValues:
    """What a compiled run's plans fold from its known inputs (the file's consts), shared
    by the plans: the sweeps of a chunked run fold the same `cos(3 * t)`, kept once.

    names: an equation's text over the names of what it reads (the known input's own
    name, or the name of a value made from them) -> that value's name m<n>; values:
    name -> value, for those a plan reads (the temporaries in between are not kept);
    budget: the bytes of new arrays folding may still add (the Stager sets it)."""

    def __init__(self, values, budget: float = float("inf")):
        self.known = list(values)
        self.names: dict = {}
        self.values: dict = {}
        self.budget = budget
        self.new_bytes = 0   # of the values kept (not views of a known input)


# Kinds of equation folded from known inputs: pure ones (no writes: a plan never writes
# into a const), with no constant of the tape among their operands (those are a sweep's
# seeds: folding what is made from them would keep a copy per sweep).
KNOWN_KINDS = {"call", "method", "attr", "getitem", "binary", "unary"}


def fold_constants(tape, kept: set, known: dict | None = None, shared: KnownValues | None = None,
                   needed=()):
    """A copy of `tape` whose equations computed from constants alone are run now, their
    values made constants of the tape. `kept`: variables the plan returns (never folded: a
    caller may write into what it is given). A value is folded only when nothing sharing
    its memory (views of it, what it views) is written at run time or returned.

    `known`: inputs whose values are fixed for as long as the plan is kept (input var ->
    value: the file's consts, when the run sets none). What is made from them alone is
    folded too, so that `cos(3 * t)` of a const t is computed once, not on every call, and
    kept in `shared` (one per compiled run), within its budget of new bytes: past it, what
    would pass it is left to run. `needed`: variables the plan hands on to the next plan
    (residuals), which may be folded. Returns the copy and {needed variable: its constant}
    for those that were."""
    known = known or {}
    eqns, xp = tape.eqns, tape.xp
    reads_of = [_vars_in(eqn.args, []) + _vars_in(eqn.kwargs, []) for eqn in eqns]   # per equation
    group = {}   # union-find over variables that may share memory

    def root(v):
        while group.get(v, v) != v:
            v = group[v]
        return v

    def join(a, b):
        a, b = root(a), root(b)
        if a != b:
            group[a] = b

    for eqn, reads in zip(eqns, reads_of):
        if eqn.out is not None and not _makes_new_array(eqn, xp):
            for v in reads:
                join(eqn.out, v)
    unsafe = {root(v) for v in kept}
    inputs = set(tape.inputs)
    while True:   # what is constant, leaving out every group written at run time
        constant, runtime_writes = set(), set()
        derived = {v for v in known if root(v) not in unsafe}   # made from known inputs alone
        for eqn, reads in zip(eqns, reads_of):
            foldable = eqn.kind in FOLDED_KINDS and all(v in constant for v in reads)
            if eqn.kind in ("setitem", "inplace"):
                target = eqn.args[0]
                if not (foldable and isinstance(target, Var) and root(target.id) not in unsafe):
                    if isinstance(target, Var):
                        runtime_writes.add(root(target.id))
            elif eqn.out is not None and eqn.out not in inputs and root(eqn.out) not in unsafe:
                if foldable:
                    constant.add(eqn.out)
                elif eqn.kind in KNOWN_KINDS and reads and all(v in derived for v in reads) \
                        and not _consts_in((eqn.args, eqn.kwargs), set()):
                    derived.add(eqn.out)
        if runtime_writes <= unsafe:
            break
        unsafe |= runtime_writes
    derived -= set(known)   # they stay inputs; what is made from them is folded
    if shared is None or not known:
        derived = set()
    if not constant and not derived:
        return tape, {}
    folded_eqns = []
    for index, (eqn, reads) in enumerate(zip(eqns, reads_of)):
        writes_constant = eqn.kind in ("setitem", "inplace") and isinstance(eqn.args[0], Var) \
            and eqn.args[0].id in constant and all(v in constant for v in reads)
        if eqn.out in constant or eqn.out in derived or writes_constant:
            folded_eqns.append(index)
    # only what the equations left read becomes a constant of the plan; the rest is freed
    # after its last use while folding (a chain of folded temporaries is not kept)
    dropped = set(folded_eqns)
    frontier = set()
    for index, reads in enumerate(reads_of):
        if index not in dropped:
            frontier.update(v for v in reads if v in constant or v in derived)
    frontier.update(v for v in needed if v in constant or v in derived)
    # run now as the plan would run them: the same lines (statement), in order; a value
    # made from known inputs that `shared` keeps already is taken from it
    namespace = {f"c{cid}": tape.consts[cid] for cid in
                 _consts_in([(eqns[i].args, eqns[i].kwargs) for i in folded_eqns], set())}
    namespace.update({_plain(var): value for var, value in known.items()})
    namespace.update(shared.values if derived else {})
    structure = {var: f"k{id(value)}" for var, value in known.items()} if derived else {}
    last = {}
    for i in folded_eqns:
        for v in reads_of[i]:
            last[v] = i
    lines = []
    for i in folded_eqns:
        eqn = eqns[i]
        if eqn.kind == "call":
            namespace[xp_name(eqn.name)] = functools.reduce(getattr, eqn.name.split("."), xp)
        if eqn.out in derived:
            text = statement(eqn, lambda v: structure.get(v, "_"))
            name = structure[eqn.out] = shared.names.setdefault(text, f"m{len(shared.names)}")
            lines.append(f"{_plain(eqn.out)} = {name}" if name in shared.values else statement(eqn))
        else:
            lines.append(statement(eqn))
        done = sorted(v for v, at in last.items() if at == i and v not in frontier and v not in known)
        if done:
            lines.append("del " + ", ".join(_plain(v) for v in done))
    exec(compile("\n".join(lines), "<adcli folded>", "exec"), namespace)
    if derived:   # keep what this plan reads, within the budget
        kept_now = {structure[v]: namespace[_plain(v)] for v in frontier
                    if v in derived and structure[v] not in shared.values}
        new_bytes = sum(getattr(v, "nbytes", 0) for v in kept_now.values()
                        if not any(_may_share(v, k) for k in shared.known))
        if new_bytes > shared.budget:   # past it: fold none from the known inputs here
            return fold_constants(tape, kept, needed=needed)
        shared.new_bytes += new_bytes
        shared.values.update(kept_now)
    consts, folded = list(tape.consts), {}
    for var in sorted(frontier):
        folded[var] = Const(len(consts))
        consts.append(namespace[_plain(var)])
    copy = object.__new__(type(tape))
    copy.__dict__.update(tape.__dict__)
    copy.consts = consts
    copy.eqns = [type(e)(e.out, e.kind, e.name, tuple(_substituted(a, folded) for a in e.args),
                         {k: _substituted(a, folded) for k, a in e.kwargs.items()})
                 for i, e in enumerate(eqns) if i not in dropped]
    return copy, {v: folded[v] for v in needed if v in folded}


def _may_share(a, b) -> bool:
    try:
        return bool(numpy.may_share_memory(a, b))
    except TypeError:   # a CuPy array, a Python number: compare the memory they view
        base_a, base_b = getattr(a, "base", None), getattr(b, "base", None)
        return a is b or base_a is b or base_b is a or (base_a is not None and base_a is base_b)


class Plan:
    """One staged sweep, compiled: call it with its inputs' values, in order."""

    def __init__(self, tape, outputs, label: str = "plan", clear_inputs: bool = False, internal=(),
                 known: dict | None = None, shared: KnownValues | None = None):
        """`known`, `shared`: inputs whose values are fixed while the plan is kept, and what
        the run's plans fold from them (fold_constants)."""
        self.label = label
        self.xp = tape.xp
        self.info = tape.info
        self.inputs = list(tape.inputs)
        out_vars: list = []
        self.template = _template(outputs, out_vars)
        self.outputs = out_vars
        inner: list = []
        _template(internal, inner)
        # outputs only the next plan reads (residuals); a value that is also handed to the
        # caller (an output that is a residual too) is not one of them
        self.internal = set(inner) - set(_vars_outside(outputs, internal))
        # a residual may be folded (the next plan never writes into what it is given); what
        # the caller gets may not (the caller may write into it)
        tape, folded_outputs = fold_constants(tape, set(out_vars) - self.internal, known, shared, needed=inner)
        if folded_outputs:   # handed on as a view of the constant
            tape.eqns = tape.eqns + [Eqn(var, "getitem", None, (const, Ellipsis), {})
                                     for var, const in folded_outputs.items()]
        self.clear_inputs = clear_inputs   # the inputs list is emptied once read (the last sweep
        #                                    frees residuals as it goes: the caller keeps none)
        self.names = _identifiers(tape.names)
        self.copied: set = set()     # results that could share memory with an input or a constant
        self.lines, used = self._lines(tape.eqns)
        self.consts = {cid: tape.consts[cid] for cid in sorted(used)}
        # the arena (NumPy only: CuPy's memory pool already keeps freed device memory for
        # the next allocation, and measures peaks with a hook this plan cannot see)
        self.arena = None
        if self.xp is numpy:
            layout = ArenaLayout(self, tape, self._forms, 1 if CHECK_ARENAS else ARENA_MIN_BYTES)
            if layout.assigned:
                self.arena = layout
                self._arena_lines = {   # equation index -> its line computing into a buffer
                    index: f"{self.name(tape.eqns[index].out)} = {xp_name(fn)}("
                           f"{', '.join(expr(a, self.name) for a in tape.eqns[index].args)}, out=bufs[{view}])"
                    for index, (fn, view) in layout.assigned.items()}
        self._forms = None
        self._pool = _pool_for(self.arena, self.xp) if self.arena else None
        self._arena_fn = None
        # (what it folded from known inputs is the run's: KnownValues.new_bytes)
        shared_ids = {id(v) for v in shared.values.values()} if shared is not None else set()
        self.constant_bytes = sum(getattr(c, "nbytes", 0) for c in self.consts.values()
                                  if id(c) not in shared_ids and id(getattr(c, "base", None)) not in shared_ids) + \
            _leaf_bytes(self.template)
        self.functions = sorted({e.name for e in tape.eqns if e.kind == "call"})
        # special functions (erf, gammaln, ...): the module that has them is imported only
        # for a plan that has some
        self.special_functions = sorted({e.name for e in tape.eqns if e.kind == "special"})
        self.n_eqns = len(tape.eqns)
        self._fn = None
        self._leaves = []

    def name(self, var: int) -> str:
        return self.names.get(var) or f"t{var}"

    def _lines(self, eqns):
        """The body, with deletions after last uses and sums made in place."""
        name = self.name
        outputs = set(self.outputs)
        inputs = set(self.inputs)
        last = {}
        uses = []
        for index, eqn in enumerate(eqns):
            read = _vars_in(eqn.args, [])
            _vars_in(eqn.kwargs, read)
            uses.append(read)
            for v in read:
                last[v] = index
        fresh, aliased = set(), set()
        shares_data = set(inputs)   # may share memory with an input or a constant
        for eqn, read in zip(eqns, uses):
            if eqn.out is None:
                continue
            if eqn.kind in ("binary", "unary", "special") or (eqn.kind == "call" and eqn.name in FRESH_CALLS) \
                    or (eqn.kind == "method" and eqn.name in FRESH_METHODS):
                fresh.add(eqn.out)
            else:   # may be a view of its operands: they must not be changed in place
                aliased.update(read)
                if shares_data.intersection(read) or _consts_in((eqn.args, eqn.kwargs), set()):
                    shares_data.add(eqn.out)
        # a result handed to the caller is its own array: a view of a constant of the plan
        # or of the caller's input, changed by the caller, would change them
        self.copied = {v for v in self.outputs if v in shares_data and v not in self.internal}
        used_consts: set = set()
        lines = []
        self._forms = []   # per equation: "statement", "accumulate" (a += b), "owned copy"
        # where each equation's lines start, where each value is made, when it is last read:
        # what splitting a long body into functions needs (_split_body)
        self._starts, self._made, self._last, self._reads = [], {v: -1 for v in inputs}, last, uses
        for index, (eqn, read) in enumerate(zip(eqns, uses)):
            self._starts.append(len(lines))
            if eqn.out is not None:
                self._made[eqn.out] = index
            _consts_in(eqn.args, used_consts)
            _consts_in(eqn.kwargs, used_consts)
            left = eqn.args[0] if eqn.kind == "binary" and eqn.name == "add" else None
            if (isinstance(left, Var) and last.get(left.id) == index and left.id in fresh
                    and left.id not in aliased and left.id not in outputs and left.id not in inputs
                    and read.count(left.id) == 1 and self.info[left.id] == self.info[eqn.out]):
                # the left operand dies here and owns its memory: accumulate into it
                lines.append(f"{name(left.id)} += {expr(eqn.args[1], name)}")
                lines.append(f"{name(eqn.out)} = {name(left.id)}")
                fresh.add(eqn.out)
                self._forms.append("accumulate")
            elif self._owned_copy(eqn, read, last, index, fresh, aliased, outputs, inputs):
                # a copy of a value that dies here and owns its memory (a dense cotangent a
                # Scaled's entries are added to): the value itself, written into
                lines.append(f"{name(eqn.out)} = {name(eqn.args[0].id)}")
                fresh.add(eqn.out)
                self._forms.append("owned copy")
            else:
                lines.append(statement(eqn, name))
                self._forms.append("statement")
            dead = sorted({v for v in read if last[v] == index and v not in outputs})
            if eqn.out is not None and eqn.out not in outputs and eqn.out not in last:
                dead.append(eqn.out)   # computed (and counted) but never read again
            if dead:
                lines.append("del " + ", ".join(name(v) for v in dead))
        return lines, used_consts

    def _owned_copy(self, eqn, read, last, index, fresh, aliased, outputs, inputs) -> bool:
        """Whether `eqn` is `xp.copy(x)` of an x read for the last time here that owns its
        memory (made fresh, never viewed, neither an input nor an output)."""
        if eqn.kind != "call" or eqn.name != "copy" or eqn.kwargs or len(eqn.args) != 1:
            return False
        source = eqn.args[0]
        return (isinstance(source, Var) and last.get(source.id) == index and source.id in fresh
                and source.id not in aliased and source.id not in outputs and source.id not in inputs
                and read.count(source.id) == 1)

    # -- source -------------------------------------------------------------------------------
    def _body_lines(self, arena: bool) -> list:
        """The body's lines; with `arena`, the buffered results computed into their buffers."""
        if not arena:
            return self.lines
        lines = list(self.lines)
        for index, line in self._arena_lines.items():
            lines[self._starts[index]] = line
        return lines

    def body(self, indent: str = "    ", returns: str | None = None, arena: bool = False) -> list:
        lines = []
        if self.inputs:
            names = ", ".join(self.name(v) for v in self.inputs)
            lines.append(f"{names}{',' if len(self.inputs) == 1 else ''} = inputs")
            if self.clear_inputs:
                lines.append("inputs.clear()")
        lines.extend(self._body_lines(arena))
        lines.append("return " + (returns or "[" + ", ".join(self._result(v) for v in self.outputs) + "]"))
        return [indent + line for line in lines]

    def _result(self, var: int) -> str:
        return f"{self.name(var)}.copy()" if var in self.copied else self.name(var)

    def function(self, indent: str = "", returns: str | None = None, arena: bool = False) -> list:
        """The plan as a function `label(inputs)` (constants and xp_ functions in scope),
        returning its outputs as a list (or the expression `returns`); with `arena`,
        `label(inputs, bufs)`, computing the buffered results into the arrays `bufs`."""
        params = "inputs, bufs" if arena else "inputs"
        return [f"{indent}def {self.label}({params}):"] + self.body(indent + "    ", returns, arena)

    def _structure(self, template, leaves: list) -> str:
        """Source building the output structure directly (no walk over a template per
        call); leaves that are not staged values (Seeds, None) are passed in as leafN."""
        if isinstance(template, _Slot):
            return self._result(self.outputs[template.index])
        if isinstance(template, dict):
            return "{" + ", ".join(f"{k!r}: {self._structure(v, leaves)}" for k, v in template.items()) + "}"
        if isinstance(template, (list, tuple)):
            inner = ", ".join(self._structure(v, leaves) for v in template)
            if isinstance(template, list):
                return f"[{inner}]"
            return f"({inner},)" if len(template) == 1 else f"({inner})"
        if template is None:
            return "None"
        if isinstance(template, Scaled) and isinstance(template.scale, _Slot):
            # the Seed is the plan's; the scale is this call's: leafN makes the Scaled
            seed = template.seed
            leaves.append(lambda scale: Scaled(seed, scale))
            return f"leaf{len(leaves) - 1}({self._structure(template.scale, leaves)})"
        leaves.append(template)
        return f"leaf{len(leaves) - 1}"

    def _split_body(self, indent: str, returns: str, arena: bool = False) -> list:
        """The plan as a function whose body runs as a chain of functions of at most about
        BLOCK_LINES lines each, sharing the values that cross a cut in one dict: a block
        takes out what it reads (pops what dies in it, so a value is still freed at its last
        use) and puts in what it makes that a later block reads. Python finds a line number
        by scanning its function's line table from the start, and tracemalloc asks for one
        at every allocation: in one function of 20,000 lines, measuring memory made the
        sweeps 1,000 times slower."""
        starts, n = self._starts, len(self._starts)
        cuts, start = [0], 0
        for index, line_no in enumerate(starts):
            if index and line_no - start >= BLOCK_LINES:
                cuts.append(index)
                start = line_no
        cuts.append(n)
        outputs = set(self.outputs)
        body = self._body_lines(arena)
        params = "env, bufs" if arena else "env"
        out = []
        for k, (a, b) in enumerate(zip(cuts, cuts[1:])):
            lines = body[starts[a]:starts[b] if b < n else len(body)]
            read = sorted({v for i in range(a, b) for v in self._reads[i] if self._made[v] < a})
            made = sorted(v for v, at in self._made.items()
                          if a <= at < b and (self._last.get(v, -1) >= b or v in outputs))
            out.append(f"{indent}def {self.label}_{k}({params}):")
            for v in read:   # what dies here is taken out of the dict, so it is freed here
                take = "pop" if self._last.get(v, -1) < b and v not in outputs else "__getitem__"
                out.append(f"{indent}    {self.name(v)} = env.{take}({self.name(v)!r})")
            out.extend(f"{indent}    {line}" for line in lines)
            for v in made:
                out.append(f"{indent}    env[{self.name(v)!r}] = {self.name(v)}")
        out.append(f"{indent}def {self.label}({'inputs, bufs' if arena else 'inputs'}):")
        names = tuple(self.name(v) for v in self.inputs)
        out.append(f"{indent}    env = dict(zip({names!r}, inputs))")
        if self.clear_inputs:
            out.append(f"{indent}    inputs.clear()")
        for k in range(len(cuts) - 1):
            out.append(f"{indent}    {self.label}_{k}({params})")
        for v in self.outputs:
            out.append(f"{indent}    {self.name(v)} = env[{self.name(v)!r}]")
        out.append(f"{indent}    return {returns}")
        return out

    def source(self, arena: bool = False) -> str:
        """A factory ``make(xp, consts, leaves, special)`` returning the plan as a function of
        its inputs that returns its outputs in the structure they were staged in (`special`:
        the backend's special-function module, None when the plan uses none). With `arena`,
        a function of its inputs and its arena's arrays (ArenaLayout.make)."""
        self._leaves = []
        returns = self._structure(self.template, self._leaves)
        lines = ["def make(xp, consts, leaves, special):"]
        for cid in self.consts:
            lines.append(f"    c{cid} = consts[{cid}]")
        for i in range(len(self._leaves)):
            lines.append(f"    leaf{i} = leaves[{i}]")
        functions = set(self.functions)
        if arena:
            functions.update(fn for fn, _ in self.arena.assigned.values())
        for fn in sorted(functions):
            lines.append(f"    {xp_name(fn)} = xp.{fn}")
        for fn in self.special_functions:
            lines.append(f"    sp_{fn} = special.{fn}")
        if len(self.lines) > BLOCK_LINES:   # (show and codegen print the body whole)
            lines.extend(self._split_body("    ", returns, arena))
        else:
            lines.extend(self.function("    ", returns, arena))
        lines.append(f"    return {self.label}")
        return "\n".join(lines) + "\n"

    def _make(self, arena: bool):
        source = self.source(arena)
        make = _FACTORIES.get(source)
        if make is None:   # sweeps that differ only in their constants share the code
            namespace = {}
            exec(compile(source, f"<adcli {self.label}>", "exec"), namespace)
            make = namespace["make"]
            if len(_FACTORIES) >= MAX_FACTORIES:
                _FACTORIES.pop(next(iter(_FACTORIES)))
            _FACTORIES[source] = make
        special = None
        if self.special_functions:
            from .backends import special_functions

            special = special_functions(self.xp)
        return make(self.xp, self.consts, self._leaves, special)

    def compile(self):
        """The plan as a function of its inputs, allocating its results afresh (and, with an
        arena, its arena version made too: compiling is done before anything is timed)."""
        if self._fn is None:
            self._fn = self._make(False)
        if self.arena is not None and self._arena_fn is None:
            self._arena_fn = self._make(True)
        return self._fn

    def __call__(self, inputs: list):
        """Run the plan; returns its outputs in the structure they were staged in.

        With an arena, its buffered results are computed into buffers kept between calls,
        except while memory is being measured (tracemalloc tracing, as the API's
        measure_memory=True and the CLI do): then every array is allocated afresh, as the
        memory prediction assumes, and the measured peak keeps its meaning."""
        if self._pool is None or tracemalloc.is_tracing():
            return self.compile()(inputs)
        fresh = self.compile()
        if CHECK_ARENAS:
            return self._checked_call(fresh, inputs)
        return self._pool.run(self._arena_fn, fresh, inputs)

    def _checked_call(self, fresh, inputs: list):
        """The checking mode: the plan with fresh arrays, then with its arena, every buffer
        of it filled with garbage first (a result must not depend on what a buffer held) and
        again after (a result that is or views a buffer changes). The arena run's results
        must equal the fresh run's bit for bit, before and after."""
        given = list(inputs)
        if self.clear_inputs:
            inputs.clear()
        want = _result_arrays(fresh(list(given)), [])
        pool = self._pool
        buffers = pool.take()
        if buffers is None:   # (past ARENA_MAX_BYTES: the fresh run is the run)
            return fresh(given)
        try:
            _poison(buffers)
            result = self._arena_fn(list(given), buffers)
            got = _result_arrays(result, [])
            same = len(got) == len(want) and all(_same_bits(a, b) for a, b in zip(got, want))
            _poison(buffers)
            kept = all(_same_bits(a, b) for a, b in zip(got, want))
        finally:
            pool.free.append(buffers)
        if not same:
            raise ArenaMismatch(f"plan {self.label}: its results with the arena differ from those "
                                "with fresh arrays")
        if not kept:
            raise ArenaMismatch(f"plan {self.label}: a result it returned is, or views, a buffer of "
                                "its arena (it changed when the buffers were overwritten)")
        return result
