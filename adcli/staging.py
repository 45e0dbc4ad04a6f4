"""Staging: run the differentiation rules once and record the array program they make.

The modes' rules (adcli.ops, adcli.tangents) are written against an array module
``xp``. Handed a ``StagingXP`` instead, they run as usual on real arrays and, as they
go, every operation on a value that depends on the program's inputs is appended to a
``Tape`` as an equation ``v7 = xp.cos(v3)``. What depends on shapes alone is computed
once, now, and becomes a constant of the tape: a Seed's index arrays, the columns a
product with a Seed selects, an index map. So symbolic zeros and identity seeds cost
nothing in the recorded program, just as they cost nothing when the rules run.

This is how JAX stages a function out (its tracers), with one difference: the values
are real while staging, so every shape, dtype and index is exact without a shape rule
per NumPy function. A staged value is a ``Sym``: its real array and the tape variable
that names it. Anything that would make the program's structure depend on input data
(``bool(v)``, ``float(v)``) raises ``StagingError``: the rules never do that.

adcli.plan turns a tape into Python source and a compiled function.
"""
from __future__ import annotations

import operator

import numpy as np

from .tangents import Scaled


class StagingError(Exception):
    """A rule asked for something a staged program cannot record (a bug in adcli)."""


class Var:
    """A tape variable in an equation's arguments."""

    __slots__ = ("id",)

    def __init__(self, id: int):
        self.id = id


class Const:
    """A constant array of the tape (an index array, a Seed made dense)."""

    __slots__ = ("id",)

    def __init__(self, id: int):
        self.id = id


class Eqn:
    """One recorded operation.

    kind: "call" (xp.<name>(*args)), "special" (a special function of the backend,
    scipy.special.<name>(*args) on NumPy), "binary" (args[0] <op> args[1]), "unary",
    "method" (args[0].<name>(*args[1:])), "attr" (args[0].<name>), "getitem",
    "setitem" (args[0][args[1]] = args[2], no output), "inplace" (args[0] <op>= args[1],
    no output: the variable is updated)."""

    __slots__ = ("out", "kind", "name", "args", "kwargs")

    def __init__(self, out, kind, name, args, kwargs):
        self.out, self.kind, self.name, self.args, self.kwargs = out, kind, name, args, kwargs


BINARY = {"add": (operator.add, "+"), "sub": (operator.sub, "-"), "mul": (operator.mul, "*"),
          "truediv": (operator.truediv, "/"), "pow": (operator.pow, "**"),
          "matmul": (operator.matmul, "@"), "gt": (operator.gt, ">"), "lt": (operator.lt, "<"),
          "ge": (operator.ge, ">="), "le": (operator.le, "<="), "eq": (operator.eq, "=="),
          "ne": (operator.ne, "!="), "and": (operator.and_, "&"), "or": (operator.or_, "|")}
INPLACE = {"add": operator.iadd, "sub": operator.isub, "mul": operator.imul,
           "truediv": operator.itruediv}
UNARY = {"neg": (operator.neg, "-"), "invert": (operator.invert, "~")}
# Array creation with a floating dtype makes a value the program writes into (a product
# with a Seed, a scatter): recorded. Integer and boolean ones are index arithmetic on
# constants: computed now.
CREATION = {"zeros", "ones", "full", "empty", "zeros_like", "ones_like", "empty_like", "full_like",
            "copy"}   # (a copy of a constant that staged entries are added to: Linear._entries)


class Tape:
    """The equations recorded while staging, with their constants and inputs."""

    def __init__(self, xp):
        self.xp = xp                  # the real array module
        self.eqns: list[Eqn] = []
        self.consts: list = []        # Const.id -> array
        self._const_ids: dict = {}    # id(array) -> Const.id (the array kept alive in consts)
        self.inputs: list[int] = []   # variables given by the caller, in order
        self.n_vars = 0
        self.info: dict = {}          # variable -> (shape, dtype) of its staged value
        # variable -> the strides of its staged value, where that is an array not in C order
        # (a ufunc lays its result out as its operands are: an arena buffer must be laid out
        # the same, or what reads it, a sum say, adds in another order)
        self.strides: dict = {}
        self.names: dict = {}         # variable -> what it is (v3, v3_dot, x_bar), for reading

    def name(self, value, name: str):
        """Call a staged value `name` in the program's source (the first name given stays)."""
        if isinstance(value, Sym) and value.tape is self and value.var not in self.names:
            self.names[value.var] = name

    def new_var(self, value) -> int:
        var = self.n_vars
        self.n_vars += 1
        self.info[var] = (value.shape, value.dtype) if hasattr(value, "shape") else ((), None)
        flags = getattr(value, "flags", None)
        if flags is not None and getattr(value, "ndim", 0) > 1 and not flags.c_contiguous:
            self.strides[var] = value.strides
        return var

    def input(self, value, name: str | None = None) -> "Sym":
        sym = Sym(self, self.new_var(value), value)
        self.inputs.append(sym.var)
        if name:
            self.names[sym.var] = name
        return sym

    def const(self, array) -> Const:
        cid = self._const_ids.get(id(array))
        if cid is None:
            cid = len(self.consts)
            self.consts.append(array)
            self._const_ids[id(array)] = cid
        return Const(cid)

    # -- recording ------------------------------------------------------------------
    def encode(self, arg):
        """An argument as the equation keeps it: Var, Const, or a plain Python value."""
        if isinstance(arg, Sym):
            if arg.tape is not self:
                raise StagingError("a staged value from another tape")
            return Var(arg.var)
        if isinstance(arg, tuple):
            return tuple(self.encode(a) for a in arg)
        if isinstance(arg, list):
            return [self.encode(a) for a in arg]
        if isinstance(arg, slice):
            return slice(self.encode(arg.start), self.encode(arg.stop), self.encode(arg.step))
        if isinstance(arg, np.dtype) or (isinstance(arg, type) and issubclass(arg, np.generic)):
            return str(np.dtype(arg))   # written as 'float64': NumPy and CuPy both take it
        if isinstance(arg, np.generic):
            return arg.item()
        if hasattr(arg, "shape") and hasattr(arg, "dtype") and not isinstance(arg, type):
            return self.const(arg)
        return arg

    def record(self, kind, name, args, kwargs, value, out: bool = True):
        var = self.new_var(value) if out else None
        self.eqns.append(Eqn(var, kind, name, self.encode(tuple(args)),
                             {k: self.encode(v) for k, v in kwargs.items()}))
        return Sym(self, var, value) if out else None


class Sym:
    """A staged array: its real value and its tape variable."""

    __slots__ = ("tape", "var", "value")
    __array_ufunc__ = None      # NumPy defers to our reflected operators
    __array_priority__ = 1000   # (CuPy reads this one)

    def __init__(self, tape: Tape, var: int, value):
        self.tape, self.var, self.value = tape, var, value

    # -- what rules read -----------------------------------------------------------------
    @property
    def shape(self):
        return self.value.shape

    @property
    def ndim(self):
        return self.value.ndim

    @property
    def dtype(self):
        return self.value.dtype

    @property
    def size(self):
        return self.value.size

    def __len__(self):
        return len(self.value)

    @property
    def T(self):
        # a new value every time, as NumPy makes a new view: the live-value counts go by
        # identity, and must be the interpreter's (no shortcut for (a.T).T here)
        return self.tape.record("attr", "T", (self,), {}, self.value.T)

    def __repr__(self):
        return f"Sym(v{self.var}, shape={tuple(self.value.shape)})"

    __hash__ = object.__hash__

    def _refuse(self, *args):
        raise StagingError(f"v{self.var}: a staged value cannot decide the program's structure")

    __bool__ = __float__ = __int__ = __index__ = __iter__ = _refuse

    # -- operations ------------------------------------------------------------------------
    def _binary(self, name, other, reflected=False):
        fn = BINARY[name][0]
        a, b = (other, self) if reflected else (self, other)
        return self.tape.record("binary", name, (a, b), {}, fn(_real(a), _real(b)))

    def _unary(self, name):
        return self.tape.record("unary", name, (self,), {}, UNARY[name][0](self.value))

    def _inplace(self, name, other):
        INPLACE[name](self.value, _real(other))
        self.tape.record("inplace", name, (self, other), {}, None, out=False)
        return self

    def __getitem__(self, key):
        return self.tape.record("getitem", "getitem", (self, key), {}, self.value[_real(key)])

    def __setitem__(self, key, value):
        self.value[_real(key)] = _real(value)
        self.tape.record("setitem", "setitem", (self, key, value), {}, None, out=False)

    def __getattr__(self, name):
        """Array methods (reshape, astype, sum, transpose, ...): recorded calls."""
        method = getattr(self.value, name)
        if not callable(method):
            raise AttributeError(name)

        def call(*args, **kwargs):
            result = method(*_real(args), **_real(kwargs))
            return self.tape.record("method", name, (self,) + args, kwargs, result)
        return call


def _binary_method(name):
    return (lambda self, other: self._binary(name, other),
            lambda self, other: self._binary(name, other, reflected=True))


for _name in BINARY:
    _forward, _reflected = _binary_method(_name)
    setattr(Sym, f"__{_name}__", _forward)
    # a reflected comparison is the mirrored comparison, which Python finds by itself
    if _name not in ("gt", "lt", "ge", "le", "eq", "ne"):
        setattr(Sym, f"__r{_name}__", _reflected)
for _name in INPLACE:
    setattr(Sym, f"__i{_name}__", (lambda n: lambda self, other: self._inplace(n, other))(_name))
Sym.__neg__ = lambda self: self._unary("neg")
Sym.__invert__ = lambda self: self._unary("invert")


def _real(arg):
    """The real value of an argument, through tuples, lists, slices and dicts."""
    if isinstance(arg, Sym):
        return arg.value
    if isinstance(arg, tuple):
        return tuple(_real(a) for a in arg)
    if isinstance(arg, list):
        return [_real(a) for a in arg]
    if isinstance(arg, dict):
        return {k: _real(v) for k, v in arg.items()}
    if isinstance(arg, slice):
        return slice(_real(arg.start), _real(arg.stop), _real(arg.step))
    return arg


def _staged(arg) -> bool:
    if isinstance(arg, Sym):
        return True
    if isinstance(arg, (tuple, list)):
        return any(_staged(a) for a in arg)
    if isinstance(arg, dict):
        return any(_staged(a) for a in arg.values())
    return False


def _recorder(tape, kind, name, target):
    """`target` as a function that records its calls on staged values as equations of
    `kind`, and computes calls on constants only now (folded into the tape's constants)."""
    def call(*args, **kwargs):
        if not (_staged(args) or _staged(kwargs)):
            value = target(*args, **kwargs)
            if name in CREATION and _floating(value):
                return tape.record(kind, name, args, kwargs, value)
            return value
        return tape.record(kind, name, args, kwargs, target(*_real(args), **_real(kwargs)))
    return call


class StagingXP:
    """An array module for staging: functions of staged values are recorded; functions
    of constants only are computed now (folded into the tape's constants)."""

    def __init__(self, tape: Tape):
        self._tape = tape
        self._xp = tape.xp
        self._cache = {}
        # what adcli.backends.special_functions returns for this module
        self.special = StagingSpecial(tape)
        # xp.linalg.solve(...) and the like: recorded as calls named "linalg.solve"
        self.linalg = StagingLinalg(tape)

    def __getattr__(self, name):
        target = getattr(self._xp, name)
        if not callable(target) or isinstance(target, type):
            return target   # dtypes, constants like newaxis
        wrapper = self._cache.get(name)
        if wrapper is None:
            wrapper = self._cache[name] = _recorder(self._tape, "call", name, target)
        return wrapper


class _StagedFunctions:
    """A module of functions (the array module's linalg, the special functions) whose calls
    are recorded as equations of `kind`, each wrapper made on first use."""

    kind = ""

    def __init__(self, tape: Tape):
        self._tape = tape
        self._cache = {}

    def _target(self, name):
        raise NotImplementedError

    def _equation(self, name) -> str:
        return name

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        wrapper = self._cache.get(name)
        if wrapper is None:
            wrapper = self._cache[name] = _recorder(self._tape, self.kind, self._equation(name),
                                                    self._target(name))
        return wrapper


class StagingLinalg(_StagedFunctions):
    """The array module's linalg submodule (solve, inv, det, slogdet, cholesky): its calls are
    recorded as "call" equations named "linalg.<name>", which a plan binds as xp.linalg.<name>
    (NumPy and CuPy have the same names)."""

    kind = "call"

    def _target(self, name):
        return getattr(self._tape.xp.linalg, name)

    def _equation(self, name) -> str:
        return f"linalg.{name}"


class StagingSpecial(_StagedFunctions):
    """The special-function module (erf, gammaln, ...) of the array module being staged:
    its calls are recorded as "special" equations, which a plan binds to the backend's
    module (scipy.special, cupyx.scipy.special) only when it has any. The real module is
    imported on the first call, not before: most programs never need it."""

    kind = "special"

    def _target(self, name):
        from .backends import special_functions
        return getattr(special_functions(self._tape.xp), name)


def _floating(value) -> bool:
    return getattr(getattr(value, "dtype", None), "kind", "") in ("f", "c")


def real(tree):
    """Replace every Sym in a nested structure of dicts, lists and tuples (and a Scaled's
    scale) by its value."""
    if isinstance(tree, Sym):
        return tree.value
    if isinstance(tree, Scaled):
        return Scaled(tree.seed, real(tree.scale))
    if isinstance(tree, dict):
        return {k: real(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(real(v) for v in tree)
    return tree
