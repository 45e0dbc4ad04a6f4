"""The derivative as a program: read it (`adcli show --mode`) or keep it (`adcli codegen`).

A run of forward or reverse mode is compiled into plans (adcli.execute, adcli.plan):
straight-line array code whose variables say what they are: ``v7`` a value of the
primal program, ``v7_dot`` its tangent (the directions on the leading axis),
``v7_bar`` its adjoint, ``dv7_dv3`` a local partial, ``tN`` an intermediate, ``cN``
a constant made while compiling (an index array, a seed). ``derivative_program``
compiles one run with every direction in one sweep; ``show_text`` prints it;
``module_source`` writes it as a standalone Python module, Tapenade-style, that
imports NumPy (or CuPy), SciPy's special functions (cupyx's on CuPy) when the program
has any, and nothing from adcli.
"""
from __future__ import annotations

import base64
import io
import keyword
import zlib
from dataclasses import dataclass
from math import prod

import numpy as np

from .plan import _Slot, xp_name
from .tangents import Linear, Counter, Scaled, Seed

INLINE_CONSTANT = 16    # constants up to this many elements are written out as literals


@dataclass
class DerivativeProgram:
    program: object
    mode: str
    kind: str            # "jacobian", "jvp" or "vjp"
    wrt: list
    outputs: list
    compiled: object     # adcli.execute.CompiledRun
    result: object       # the Derivative the compiling run returned
    backend: str
    dtype: str


def derivative_program(program, mode: str, kind: str = "jacobian", wrt=None, at=None,
                       backend="numpy", dtype="float64", memory_limit=None) -> DerivativeProgram:
    """Compile `kind` in `mode` with all directions in one sweep, and return its plans."""
    from .errors import UsageProblem

    if mode not in ("forward", "reverse"):
        raise UsageProblem(f"unknown mode '{mode}'; choose forward or reverse")
    wrt = program._wrt(wrt)
    outputs = list(program.graph.outputs)
    # plans that compute what the consts make, as the file says: a module whose consts can
    # be set, and a program to read (Program.fold_consts)
    folding, program.fold_consts = program.fold_consts, False
    try:
        return _derivative_program(program, mode, kind, wrt, outputs, at, backend, dtype, memory_limit)
    finally:
        program.fold_consts = folding


def _derivative_program(program, mode, kind, wrt, outputs, at, backend, dtype, memory_limit):
    if kind == "jacobian":
        passes = sum(program._pass_sizes(mode, wrt, outputs))
        result = program.jacobian(mode=mode, wrt=wrt, at=at, chunk=max(passes, 1), backend=backend,
                                  dtype=dtype, memory_limit=memory_limit)
    elif kind == "jvp":
        result = program.jvp({n: np.zeros(program.input_shape(n)) for n in wrt}, at=at, backend=backend,
                             dtype=dtype, memory_limit=memory_limit)
    else:
        result = program.vjp({n: np.zeros(program.output_shape(n)) for n in outputs}, at=at, wrt=wrt,
                             backend=backend, dtype=dtype, memory_limit=memory_limit)
    compiled = program._last_compiled
    expected = 1 if mode == "forward" else 2
    if compiled is None:
        from .errors import ResourceProblem
        from .execute import MAX_CACHED_CONSTANT_BYTES, MAX_CACHED_EQUATIONS

        raise ResourceProblem(f"the derivative program is too large to keep: over {MAX_CACHED_EQUATIONS:,} "
                              f"operations or {MAX_CACHED_CONSTANT_BYTES // 2**20} MB of constants",
                              hint="differentiate fewer inputs with --wrt, or lower a dim with --set")
    if len(compiled.plans) != expected:
        raise RuntimeError(f"{mode} mode compiled into {0 if compiled is None else len(compiled.plans)} "
                           f"plans, not {expected}")
    return DerivativeProgram(program, mode, kind, wrt, outputs, compiled, result, result.backend, dtype)


# -- reading it ------------------------------------------------------------------------------------

LEGEND = ("# vN: a value of the program (adcli show); vN_dot: its tangents, one per direction on the\n"
          "# leading axis (vN_dot_x: those for input x's directions, with several inputs); vN_bar: its\n"
          "# adjoint (vN_bar_y: for output y's); vN_bar_scale (vN_dot_scale): the values of a\n"
          "# diagonal one (a scaled seed), or the scale a dense one waits to be multiplied by;\n"
          "# dvN_dvM: a local partial; tN: an intermediate;\n"
          "# cN: a constant made while compiling (listed above its function); xp_F: the array\n"
          "# module's function F (numpy.F, or cupy.F).{special}\n"
          "# A `del` frees a value after its last use; `a += b` accumulates in place.")
SPECIAL_LEGEND = "\n# sp_F: the special function scipy.special.F (cupyx.scipy.special.F on cupy)."


def legend(plans) -> str:
    """LEGEND, with sp_F where a special function is called (a module that calls none
    mentions SciPy nowhere, and does not import it)."""
    return LEGEND.format(special=SPECIAL_LEGEND if any(plan.special_functions for plan in plans) else "")


def _describe_constant(value) -> str:
    host = _host(value)
    shape = "[" + ",".join(str(d) for d in host.shape) + "]"
    if host.size <= INLINE_CONSTANT:
        return f"{host.dtype}{shape} = {np.array2string(host.reshape(-1), separator=', ')}"
    return f"{host.dtype}{shape}"


def show_text(dp: DerivativeProgram, filename: str) -> str:
    cost = dp.compiled.cost
    what = {"jacobian": "the Jacobian", "jvp": "one JVP (J·v)", "vjp": "one VJP (uᵀ·J)"}[dp.kind]
    lines = [f"# {filename}: {what} of {', '.join(dp.outputs)} w.r.t. {', '.join(dp.wrt)} "
             f"by {dp.mode} mode, {cost.passes} direction{'s' if cost.passes != 1 else ''} in one sweep",
             legend(dp.compiled.plans), ""]
    for plan in dp.compiled.plans:
        for cid, value in plan.consts.items():
            lines.append(f"# c{cid}: {_describe_constant(value)}")
        lines.extend(plan.function())
        lines.append("")
    counts = cost.counts()
    lines.append(f"# counts: mults {counts['mults']['primal']} primal + {counts['mults']['derivative']} "
                 f"derivative, flops {counts['flops']['primal']} + {counts['flops']['derivative']}, "
                 f"cached values {counts['cached_values']}, peak live values {counts['peak_live_values']}, "
                 f"array operations {counts['ops']}")
    return "\n".join(lines) + "\n"


# -- keeping it ------------------------------------------------------------------------------------

def _host(value) -> np.ndarray:
    return np.asarray(value.get() if hasattr(value, "get") else value)


def _literal(array, name: str) -> str:
    """Python source that makes `array` again: a literal when small, else compressed bytes."""
    host = _host(array)
    if host.size == 0:   # a list literal cannot say the shape of nothing ([[]] is (1, 0))
        return f"{name} = xp.zeros({tuple(host.shape)!r}, dtype='{host.dtype}')"
    if host.size <= INLINE_CONSTANT:
        return f"{name} = xp.asarray({host.tolist()!r}, dtype='{host.dtype}')"
    buffer = io.BytesIO()
    np.save(buffer, host, allow_pickle=False)
    text = base64.b64encode(zlib.compress(buffer.getvalue(), 6)).decode("ascii")
    chunks = [text[i:i + 96] for i in range(0, len(text), 96)]
    body = "\n".join(f"    '{c}'" for c in chunks)
    return f"{name} = _array(  # {host.dtype}{list(host.shape)}\n{body})"


PRELUDE = '''
def _array(text):
    """A constant stored as compressed .npy bytes."""
    return xp.asarray(numpy.load(io.BytesIO(zlib.decompress(base64.b64decode(text))), allow_pickle=False))


def _value(what, value, shape):
    """An argument as an array of its declared shape (a number spreads over it), or one error."""
    array = xp.asarray(value, dtype=DTYPE)
    if array.shape != shape:
        try:
            array = xp.array(xp.broadcast_to(array, shape))
        except ValueError:
            raise ValueError(f"{what} has shape {tuple(array.shape)}, but it is declared {shape}") from None
    return array


def _placed(scale, src, k):
    """A scaled seed made dense: direction src[i] of element i is scale[i] (src[i] = -1:
    element i selects no direction); every other entry is 0."""
    out = xp.zeros((k, src.size), dtype=DTYPE)
    where = xp.nonzero(src.reshape(-1) >= 0)[0]
    out[src.reshape(-1)[where], where] = scale.reshape(-1)[where]
    return out.reshape((k,) + src.shape)


def _given(what, given, shapes):
    """A direction or cotangent {name: array} for every name (a name left out gets zeros)."""
    unknown = sorted(set(given) - set(shapes))
    if unknown:
        raise ValueError(f"there is no {what} named {unknown[0]!r} (known: {', '.join(shapes)})")
    return [_value(f"the {what} {name}'s part", given.get(name, 0.0), shape)[None]
            for name, shape in shapes.items()]
'''


def _leaf_expr(leaf, outs: str, constants: dict, name: str, dtype: str) -> str | None:
    """Source for one result leaf: a plan output, a constant (a Seed made dense), a Scaled
    (its scale a plan output, put in place: _placed), or None."""
    if isinstance(leaf, _Slot):
        return f"{outs}[{leaf.index}]"
    if leaf is None:
        return None
    if isinstance(leaf, Scaled) and isinstance(leaf.scale, _Slot):
        constants[f"{name}_SRC"] = _host(leaf.src).astype(np.int64)
        return f"_placed({outs}[{leaf.scale.index}], {name}_SRC, {leaf.k})"
    if isinstance(leaf, Scaled):   # a constant scale: made dense once, here
        leaf = Linear(np, leaf.k, Counter(), np.dtype(dtype)).dense(
            Scaled(Seed(_host(leaf.src), leaf.k, leaf.node_shape, leaf.identity), _host(leaf.scale)))
    if isinstance(leaf, Seed):
        leaf = Linear(np, leaf.k, Counter(), np.dtype(dtype)).dense(
            Seed(_host(leaf.src), leaf.k, leaf.node_shape))
    constants[name] = leaf
    return f"{name}.copy()"   # (the caller's own array: writing into it must not change the module)


def module_source(dp: DerivativeProgram, filename: str, backend: str = "numpy", version: str = "") -> str:
    """A standalone module: the plans, their constants, the file's data, and functions
    jacobian() (or jvp()/vjp()), and gradient() for one scalar output."""
    graph = dp.program.graph
    dtype = dp.dtype
    plans = dp.compiled.plans
    module = "cupy" if backend == "cupy" else "numpy"
    special = sorted({fn for plan in plans for fn in plan.special_functions})
    # the backend's special functions (erf, gammaln, ...), imported only when used
    special_module = ("cupyx.scipy.special" if module == "cupy" else "scipy.special") if special else None
    needs = module if special_module is None else f"{module} and {special_module}"
    header = [f'"""{filename}: {dp.kind} of {", ".join(dp.outputs)} w.r.t. {", ".join(dp.wrt)}, '
              f'by {dp.mode} mode ({dtype}, {module}).',
              "",
              f"Written by `adcli codegen` {version}from {filename}; it needs {needs} and nothing from adcli.",
              legend(plans).replace("# ", "").replace("#", ""),
              '"""',
              "import base64",
              "import io",
              "import zlib",
              "",
              "import numpy",
              "" if module == "numpy" else "import cupy",
              "" if special_module is None else f"import {special_module}",
              f"xp = {module}",
              f"DTYPE = '{dtype}'",
              PRELUDE]
    lines = []
    functions = sorted({fn for plan in plans for fn in plan.functions})
    lines.extend(f"{xp_name(fn)} = xp.{fn}" for fn in functions)
    lines.extend(f"sp_{fn} = {special_module}.{fn}" for fn in special)
    lines.append("")
    # the file's inputs (defaults) and consts, in the order the plans take them
    input_names = list(graph.inputs)
    const_ids = [n.id for n in graph.nodes if n.op == "const"]
    at = dp.result.inputs
    lines.append("# the file's input values (the defaults of the functions below) and consts")
    lines.append("INPUTS = {}")
    for name in input_names:
        lines.append(_literal(np.asarray(at[name], dtype=dtype), f"INPUTS[{name!r}]"))
    lines.append("CONSTS = []")
    for nid in const_ids:
        value = dp.program.const_value(graph.nodes[nid], dp.result.consts)   # a const --at set
        lines.append(_literal(np.asarray(value, dtype=dtype), "_c"))
        lines.append("CONSTS.append(_c)")
    lines.append("")
    for index, plan in enumerate(plans):
        params = ", ".join(f"c{cid}" for cid in plan.consts)
        lines.append(f"def _make_{plan.label}({params}):")
        lines.extend(plan.function("    "))
        lines.append(f"    return {plan.label}")
        lines.append("")
        for cid, value in plan.consts.items():
            lines.append(_literal(value, f"_c{cid}"))
        args = ", ".join(f"c{cid}=_c{cid}" for cid in plan.consts)
        lines.append(f"{plan.label} = _make_{plan.label}({args})")
        lines.append("")
    lines.extend(_entry_points(dp, input_names))
    names = dp.wrt if dp.kind == "jvp" else dict.fromkeys(dp.outputs)
    call = "jacobian()" if dp.kind == "jacobian" else \
        f"{dp.kind}({{" + ", ".join(f"{n!r}: 1.0" for n in names) + "})"   # every direction 1
    lines.extend(["", "", 'if __name__ == "__main__":', f"    print({call})"])
    return "\n".join(header + lines) + "\n"


def _const_parameters(dp) -> dict:
    """The consts an entry point takes as keywords: name -> (place in CONSTS, shape, the
    consts computed from it). The module holds those consts' values, not their recipes,
    so it cannot make them again: it refuses such a const rather than use stale ones."""
    graph, builder = dp.program.graph, dp.program.graph.builder
    const_ids = [n.id for n in graph.nodes if n.op == "const"]
    found = {}
    for name, nid in graph.consts.items():
        followers = [other for other, data in builder.const_values.items()
                     if other != name and other in graph.consts and builder.reads(data.ast, {name})]
        found[name] = (const_ids.index(nid), tuple(graph.nodes[nid].shape), followers)
    return found


def _arguments(dp, input_names, consts: dict) -> list:
    """The start of every entry point: each input from its argument or its default, each
    const likewise."""
    lines = []
    for name in input_names:
        shape = tuple(dp.program.input_shape(name))
        lines.append(f"    {name} = INPUTS[{name!r}] if {name} is None else _value('input {name}', {name}, {shape})")
    lines.append("    _consts = list(CONSTS)")
    for name, (place, shape, followers) in consts.items():
        lines.append(f"    if {name} is not None:")
        if followers:
            held = "its value, not its recipe" if len(followers) == 1 else "their values, not their recipes"
            message = (f"const {name} cannot be set here: the .ad file computes {', '.join(followers)} "
                       f"from it, and this module holds {held}; generate the module with "
                       f"`adcli codegen --at {name}=...` instead")
            lines.append(f"        raise ValueError({message!r})")
        else:
            lines.append(f"        _consts[{place}] = _value('const {name}', {name}, {shape})")
    lines.append("    leaves = [" + ", ".join(input_names) + "] + _consts")
    return lines


LOCALS = {"xp", "numpy", "cupy", "base64", "io", "zlib", "leaves", "outs", "back", "residuals", "value",
          "jacobian", "blocks", "tangent", "cotangent_in", "direction", "cotangent", "gradient", "jvp",
          "vjp", "result", "DTYPE", "INPUTS", "CONSTS"}


def _entry_points(dp, input_names) -> list:
    from .errors import UsageProblem

    program, graph = dp.program, dp.program.graph
    consts = _const_parameters(dp)
    for kind, names in (("input", input_names), ("const", consts)):
        for name in names:
            if keyword.iskeyword(name) or name in LOCALS or name.startswith(("_", "xp_", "sp_")):
                raise UsageProblem(f"{kind} '{name}' cannot be a parameter name of the generated module "
                                   f"(a Python keyword or one of its own names); rename it in the file")
    # consts by keyword only: a call by position means the inputs, as before
    signature = ", ".join([f"{n}=None" for n in input_names] + (["*"] if consts else [])
                          + [f"{n}=None" for n in consts])
    passed = ", ".join(f"{n}={n}" for n in list(input_names) + list(consts))
    constants: dict = {}
    body: list = []
    plans = dp.compiled.plans
    out_ids = {name: graph.outputs[name] for name in dp.outputs}
    oshape = {o: tuple(program.output_shape(o)) for o in dp.outputs}
    ishape = {w: tuple(program.input_shape(w)) for w in dp.wrt}
    wrt_ids = {w: graph.inputs[w] for w in dp.wrt}
    given = dp.kind != "jacobian"
    if dp.mode == "forward":
        tangents, values = plans[0].template
        call = "forward_sweep(leaves)" if not given else \
            "forward_sweep(leaves + _given('input', direction, {" + ", ".join(
                f"{w!r}: {ishape[w]}" for w in dp.wrt) + "}))"
        body.append(f"    outs = {call}")
    else:
        values, residuals = plans[0].template
        body.append("    outs = reverse_forward_sweep(list(leaves))")
        body.append("    residuals = [" + ", ".join(f"outs[{leaf.index}]" for leaf in residuals.values()) + "]")
        extra = "" if not given else " + _given('output', cotangent, {" + ", ".join(
            f"{o!r}: {oshape[o]}" for o in dict.fromkeys(dp.outputs)) + "})"
        body.append(f"    back = backward_sweep(residuals{extra})")
        results = plans[1].template
    body.append("    value = {" + ", ".join(
        f"{o!r}: {_leaf_expr(values.get(out_ids[o]), 'outs', constants, f'VALUE_{o}', dp.dtype)}"
        for o in dp.outputs) + "}")
    if dp.kind == "jacobian":
        body.append("    jacobian = {}")
        for o in dp.outputs:
            body.append(f"    jacobian[{o!r}] = {{}}")
            for w in dp.wrt:
                shape = oshape[o] + ishape[w]
                if dp.mode == "forward":
                    leaf = tangents.get(out_ids[o], {}).get(w)
                    text = _leaf_expr(leaf, "outs", constants, f"J_{o}_{w}", dp.dtype)
                    block = None if text is None else \
                        f"{text}.reshape({prod(ishape[w])}, {prod(oshape[o])}).T.reshape({shape})"
                else:
                    leaf = results.get(wrt_ids[w], {}).get(o)
                    text = _leaf_expr(leaf, "back", constants, f"J_{o}_{w}", dp.dtype)
                    block = None if text is None else f"{text}.reshape({shape})"
                block = block or f"xp.zeros({shape}, dtype=DTYPE)"
                body.append(f"    jacobian[{o!r}][{w!r}] = {block}")
        body.append("    return value, jacobian")
        doc = ("(value, jacobian): value {output: array}; jacobian {output: {input: array shaped "
               "output.shape + input.shape}}. Arguments default to the file's input values, and "
               "consts (keywords) to the file's const values.")
        name, extra_param = "jacobian", ""
    else:   # one JVP (the tangent of each output) or VJP (the cotangent of each input)
        jvp = dp.kind == "jvp"
        names, shapes = (dp.outputs, oshape) if jvp else (dp.wrt, ishape)
        found, outs, ids = (tangents, "outs", out_ids) if jvp else (results, "back", wrt_ids)
        result = "tangent" if jvp else "cotangent_in"

        def given(name):
            text = _leaf_expr(found.get(ids[name], {}).get("given"), outs, constants, f"G_{name}", dp.dtype)
            return f"{text}[0]" if text else f"xp.zeros({shapes[name]}, dtype=DTYPE)"

        body.append(f"    {result} = {{" + ", ".join(f"{n!r}: {given(n)}" for n in names) + "}")
        body.append(f"    return value, {result}")
        doc = ("(value, J·direction): direction {input: array}, one forward sweep." if jvp else
               "(value, cotangentᵀ·J): cotangent {output: array}, one reverse sweep.")
        name, extra_param = dp.kind, ("direction, " if jvp else "cotangent, ")
    lines = [_literal(v, k) for k, v in constants.items()]
    lines += ["", "", f"def {name}({extra_param}{signature}):", f'    """{doc}"""']
    lines += _arguments(dp, input_names, consts) + body
    scalar = len(dp.outputs) == 1 and oshape[dp.outputs[0]] == ()
    if dp.kind == "jacobian" and scalar:
        o = dp.outputs[0]
        lines += ["", "", f"def gradient({signature}):",
                  f'    """(value of {o}, {{input: gradient shaped like the input}})."""',
                  f"    value, blocks = jacobian({passed})",
                  f"    return value[{o!r}], blocks[{o!r}]"]
    return lines
