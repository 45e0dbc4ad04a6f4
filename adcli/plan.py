"""A staged program (adcli.staging) compiled into a Python function.

``Plan`` takes a tape and what its outputs are, works out statically what the
interpreter used to work out on every run, and writes straight-line Python:
- operands are local variables (no environment dictionaries, no lookups by node);
- each variable is deleted right after its last use (liveness decided once, here),
  so memory is freed as early as the rules allow;
- a sum whose left operand dies there and owns its memory is made in place
  (``a += b``): cotangents accumulate without a new array per contribution;
- nothing is counted: the counts were taken while staging and are the plan's.

The same source, with its constants written out, is what ``adcli codegen`` emits.
"""
from __future__ import annotations

import keyword
import re

from .staging import BINARY, UNARY, Const, Sym, Var
from .tangents import Scaled, Seed

# Calls and methods whose result is a new array that nothing else refers to.
FRESH_CALLS = {"sin", "cos", "tan", "exp", "log", "log1p", "sqrt", "tanh", "abs", "sign", "where",
               "arcsin", "arccos", "arctan", "arctan2", "sinh", "cosh", "arcsinh", "arccosh", "arctanh",
               "expm1", "log2", "log10", "logaddexp", "hypot", "clip", "heaviside",
               "maximum", "minimum", "zeros", "ones", "full", "empty", "zeros_like", "ones_like",
               "empty_like", "concatenate", "stack", "cumprod", "sum", "max", "min", "mean", "prod",
               "isfinite", "dot", "matmul", "outer", "copy"}
FRESH_METHODS = {"sum", "astype", "copy", "max", "min", "mean", "prod"}


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
                                     "jvp", "vjp", "gradient", "special"}


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


class Plan:
    """One staged sweep, compiled: call it with its inputs' values, in order."""

    def __init__(self, tape, outputs, label: str = "plan", clear_inputs: bool = False, internal=()):
        self.label = label
        self.xp = tape.xp
        self.info = tape.info
        self.inputs = list(tape.inputs)
        out_vars: list = []
        self.template = _template(outputs, out_vars)
        self.outputs = out_vars
        self.clear_inputs = clear_inputs   # the inputs list is emptied once read (the last sweep
        #                                    frees residuals as it goes: the caller keeps none)
        self.names = _identifiers(tape.names)
        inner: list = []
        _template(internal, inner)
        self.internal = set(inner)   # outputs only the next plan reads (residuals)
        self.copied: set = set()     # results that could share memory with an input or a constant
        self.lines, used = self._lines(tape.eqns)
        self.consts = {cid: tape.consts[cid] for cid in sorted(used)}
        self.constant_bytes = sum(getattr(c, "nbytes", 0) for c in self.consts.values()) + \
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
            elif self._owned_copy(eqn, read, last, index, fresh, aliased, outputs, inputs):
                # a copy of a value that dies here and owns its memory (a dense cotangent a
                # Scaled's entries are added to): the value itself, written into
                lines.append(f"{name(eqn.out)} = {name(eqn.args[0].id)}")
                fresh.add(eqn.out)
            else:
                lines.append(statement(eqn, name))
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
    def body(self, indent: str = "    ", returns: str | None = None) -> list:
        lines = []
        if self.inputs:
            names = ", ".join(self.name(v) for v in self.inputs)
            lines.append(f"{names}{',' if len(self.inputs) == 1 else ''} = inputs")
            if self.clear_inputs:
                lines.append("inputs.clear()")
        lines.extend(self.lines)
        lines.append("return " + (returns or "[" + ", ".join(self._result(v) for v in self.outputs) + "]"))
        return [indent + line for line in lines]

    def _result(self, var: int) -> str:
        return f"{self.name(var)}.copy()" if var in self.copied else self.name(var)

    def function(self, indent: str = "", returns: str | None = None) -> list:
        """The plan as a function `label(inputs)` (constants and xp_ functions in scope),
        returning its outputs as a list (or the expression `returns`)."""
        return [f"{indent}def {self.label}(inputs):"] + self.body(indent + "    ", returns)

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

    def _split_body(self, indent: str, returns: str) -> list:
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
        out = []
        for k, (a, b) in enumerate(zip(cuts, cuts[1:])):
            lines = self.lines[starts[a]:starts[b] if b < n else len(self.lines)]
            read = sorted({v for i in range(a, b) for v in self._reads[i] if self._made[v] < a})
            made = sorted(v for v, at in self._made.items()
                          if a <= at < b and (self._last.get(v, -1) >= b or v in outputs))
            out.append(f"{indent}def {self.label}_{k}(env):")
            for v in read:   # what dies here is taken out of the dict, so it is freed here
                take = "pop" if self._last.get(v, -1) < b and v not in outputs else "__getitem__"
                out.append(f"{indent}    {self.name(v)} = env.{take}({self.name(v)!r})")
            out.extend(f"{indent}    {line}" for line in lines)
            for v in made:
                out.append(f"{indent}    env[{self.name(v)!r}] = {self.name(v)}")
        out.append(f"{indent}def {self.label}(inputs):")
        names = tuple(self.name(v) for v in self.inputs)
        out.append(f"{indent}    env = dict(zip({names!r}, inputs))")
        if self.clear_inputs:
            out.append(f"{indent}    inputs.clear()")
        for k in range(len(cuts) - 1):
            out.append(f"{indent}    {self.label}_{k}(env)")
        for v in self.outputs:
            out.append(f"{indent}    {self.name(v)} = env[{self.name(v)!r}]")
        out.append(f"{indent}    return {returns}")
        return out

    def source(self) -> str:
        """A factory ``make(xp, consts, leaves, special)`` returning the plan as a function of
        its inputs that returns its outputs in the structure they were staged in (`special`:
        the backend's special-function module, None when the plan uses none)."""
        self._leaves = []
        returns = self._structure(self.template, self._leaves)
        lines = ["def make(xp, consts, leaves, special):"]
        for cid in self.consts:
            lines.append(f"    c{cid} = consts[{cid}]")
        for i in range(len(self._leaves)):
            lines.append(f"    leaf{i} = leaves[{i}]")
        for fn in self.functions:
            lines.append(f"    {xp_name(fn)} = xp.{fn}")
        for fn in self.special_functions:
            lines.append(f"    sp_{fn} = special.{fn}")
        if len(self.lines) > BLOCK_LINES:   # (show and codegen print the body whole)
            lines.extend(self._split_body("    ", returns))
        else:
            lines.extend(self.function("    ", returns))
        lines.append(f"    return {self.label}")
        return "\n".join(lines) + "\n"

    def compile(self):
        if self._fn is None:
            source = self.source()
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
            self._fn = make(self.xp, self.consts, self._leaves, special)
        return self._fn

    def __call__(self, inputs: list):
        """Run the plan; returns its outputs in the structure they were staged in."""
        return self.compile()(inputs)
