"""`adcli trace`, `adcli graph` and `adcli show`: seeing how the derivative is made.

Registered on adcli.cli.cli when adcli.cli is imported. Only click is imported
here at start-up; NumPy, Rich and the engine are imported inside the commands.
"""
from __future__ import annotations

import json
import re

import click

from .cli import (check_dims, cli, echo_out, load_program, parse_given, parse_bytes, program_options,
                  read_input_values, run_options, split_assignment, value_options, write_atomically)
from .errors import AdError, UsageProblem, shown

GRAPHVIZ_FORMATS = ("svg", "png", "pdf")


def _emit_json(data: dict):
    from .report import finite

    echo_out(json.dumps(finite(data), allow_nan=False))


@cli.command()
@program_options
@value_options
@click.option("--mode", type=click.Choice(["forward", "reverse"]), default=None,
              help="forward: tangents from the inputs to the outputs (default); reverse: adjoints "
                   "from the outputs back, rows in the order the backward sweep fills them.")
@click.option("--seed", "seeds", multiple=True, metavar="NAME|NAME[i]",
              help="Forward mode's direction: 1 on every element of input NAME, or on one element "
                   "(x[2], W[1,0]). Repeat for several directions. Default: the first input.")
@click.option("--direction", "directions", multiple=True, metavar="INPUT=EXPR",
              help="A direction as in adcli grad (repeat to give several inputs; one direction).")
@click.option("--cotangent", "cotangents", multiple=True, metavar="OUTPUT=EXPR",
              help="Reverse mode's cotangent as in adcli grad. Default: 1 on every element of every "
                   "output (the gradient of their sum).")
@click.option("--wrt", multiple=True, metavar="NAMES",
              help="Reverse mode: the inputs to differentiate (default all).")
@click.option("--dual", is_flag=True, help="Show forward mode as dual numbers a + bε, one ε per seed.")
@click.option("--full", is_flag=True, help="Show vectors and matrices in full, not elided.")
@click.option("--node", "node_var", default=None, metavar="VAR",
              help="Show one node (v7) in full.")
@run_options
def trace(file, sets, node_limit, ats, inputs_file, mode, seeds, directions, cotangents, wrt, dual,
          full, node_var, backend, dtype, memory_limit, as_json, debug):
    """The evaluation trace: every intermediate value with its tangent or adjoint, and its cost."""
    if mode is None:
        mode = "reverse" if cotangents or wrt else "forward"
    if mode == "reverse":
        for given, option in ((seeds, "--seed"), (directions, "--direction")):
            if given:
                raise UsageProblem(f"{option} chooses forward mode's direction; it conflicts with "
                                   "--mode reverse (use --cotangent)")
        if dual:
            raise UsageProblem("--dual shows forward mode as dual numbers; it conflicts with --mode reverse")
    else:
        if cotangents:
            raise UsageProblem("--cotangent is reverse mode's seed; it conflicts with --mode forward "
                               "(use --seed or --direction)")
        if wrt:
            raise UsageProblem("--wrt applies to --mode reverse; in forward mode --seed picks the inputs")
    if node_var is not None and not re.fullmatch(r"v[1-9][0-9]*(\.[1-9][0-9]*)*(@[1-9][0-9]*)?",
                                                 node_var.strip()):
        raise UsageProblem(f"--node {node_var!r} is not a node name such as v7 (in a loop's body: "
                           "v3.2@1, node 2 of loop v3's body in iteration 1)")
    if memory_limit:
        parse_bytes(memory_limit)   # checked as in grad; one pass needs no chunking
    from .trace import forward_trace, parse_seed, reverse_trace

    check_dims(sets)
    program = load_program(file, sets, node_limit)
    at = read_input_values(program, ats, inputs_file)
    if mode == "forward":
        chosen = [parse_seed(program, s) for s in seeds]
        if directions:
            given = parse_given(program, "--direction", directions, "input")
            labels = ["=".join(split_assignment("--direction", item)) for item in directions]
            chosen.append((", ".join(labels), given))
        if not chosen:
            if not program.graph.inputs:
                from .errors import ValueProblem

                raise ValueProblem("the file declares no input to seed a forward trace with")
            chosen.append(parse_seed(program, next(iter(program.graph.inputs))))
        result = forward_trace(program, chosen, at=at, backend=backend, dtype=dtype, dual=dual)
    else:
        cotangent = parse_given(program, "--cotangent", cotangents, "output") if cotangents else None
        result = reverse_trace(program, cotangent, at=at, wrt=list(wrt) or None, backend=backend,
                               dtype=dtype)
    if node_var is not None:
        node_var = node_var.strip()
        result.row(node_var)   # unknown: one sentence, exit 2
    nonfinite = result.nonfinite()
    if as_json:
        from .report import jsonable

        data = result.to_json(node_var)
        # the consts the run set (--at, --inputs), as adcli grad --json gives them: with `inputs`,
        # what reproduces the trace
        data["consts"] = {name: jsonable(v) for name, v in program.resolve_consts(at, only_given=True).items()}
        _emit_json(data)
    else:
        from .render_trace import render_node, render_trace

        if node_var is not None:
            render_node(result, node_var)
        else:
            render_trace(result, full=full)
    if nonfinite:   # as adcli grad warns
        click.echo(f"warning: the trace holds nan or infinity: {nonfinite}"
                   + ("; non-finite numbers are shown as null in JSON" if as_json else ""), err=True)


@cli.command()
@program_options
@click.option("--format", "fmt", type=click.Choice(["dot", "mermaid", "text"]), default=None,
              help="Graphviz DOT, Mermaid, or a plain text tree (default: text; dot with --output).")
@click.option("--mode", type=click.Choice(["forward", "reverse"]), default="forward", show_default=True,
              help="reverse: also mark what the backward sweep keeps, and draw the adjoint flow.")
@click.option("--expand", is_flag=True, help="Show every node of unrolled repeats, not one iteration.")
@click.option("--output", "output_path", default=None, metavar="FILE.svg|FILE.png|FILE.pdf",
              help="Render through Graphviz's dot program into this file.")
@click.option("--json", "as_json", is_flag=True, help="The graph's nodes and edges as one JSON object.")
@click.option("--debug", is_flag=True, help="Show the traceback of an internal error.")
def graph(file, sets, node_limit, fmt, mode, expand, output_path, as_json, debug):
    """The computational graph as DOT, Mermaid or a text tree; repeats collapsed unless --expand."""
    dot_program = None
    if output_path is not None:
        ext = output_path.rsplit(".", 1)[-1].lower() if "." in output_path else ""
        if ext not in GRAPHVIZ_FORMATS:
            raise UsageProblem(f"--output {shown(output_path)}: the file name must end in .svg, .png or .pdf")
        if fmt not in (None, "dot"):
            raise UsageProblem(f"--output renders through Graphviz, from the DOT graph; it conflicts "
                               f"with --format {fmt}")
        import shutil

        dot_program = shutil.which("dot")
        if dot_program is None:
            raise AdError("--output needs Graphviz's dot program, which is not on PATH; install "
                          "Graphviz (apt-get install graphviz, brew install graphviz) or write "
                          "--format dot to a file and render it elsewhere")
        fmt = "dot"
    fmt = fmt or "text"
    from .show import build_view, to_dot, to_mermaid, to_text, view_json

    check_dims(sets)
    program = load_program(file, sets, node_limit)
    view = build_view(program.graph, mode=mode, expand=expand)
    if output_path is not None:
        import subprocess

        done = subprocess.run([dot_program, f"-T{ext}"], input=to_dot(view).encode(), capture_output=True)
        if done.returncode != 0:
            detail = done.stderr.decode(errors="replace").strip().splitlines()
            raise AdError(f"dot could not render {shown(output_path)}" + (f": {detail[0]}" if detail else ""))
        write_atomically(output_path, lambda f: f.write(done.stdout), "--output")
    if as_json:
        data = view_json(view)
        data["output"] = output_path
        _emit_json(data)
        return
    if output_path is not None:
        click.echo(f"wrote {output_path}")
        return
    text = {"dot": to_dot, "mermaid": to_mermaid, "text": to_text}[fmt](view)
    echo_out(text, nl=False)


KINDS = ("jacobian", "jvp", "vjp")


def derivative_options(f):
    """--mode, --kind, --wrt and --dtype of `show --mode` and `codegen`."""
    f = click.option("--dtype", type=click.Choice(["float64", "float32"]), default="float64",
                     show_default=True, help="Floating-point precision.")(f)
    f = click.option("--wrt", multiple=True, metavar="NAMES",
                     help="Differentiate with respect to these inputs (repeat or comma-separate; "
                          "default all).")(f)
    f = click.option("--kind", type=click.Choice(KINDS), default="jacobian", show_default=True,
                     help="The full Jacobian, or one JVP (forward) / VJP (reverse) taking the "
                          "direction or cotangent as an argument.")(f)
    return f


def _derivative_program(file, sets, node_limit, ats, inputs_file, mode, kind, wrt, dtype):
    from .codegen import derivative_program

    if kind == "jvp" and mode != "forward" or kind == "vjp" and mode != "reverse":
        raise UsageProblem(f"--kind {kind} is made by {'forward' if kind == 'jvp' else 'reverse'} mode; "
                           f"it conflicts with --mode {mode}")
    check_dims(sets)
    program = load_program(file, sets, node_limit)
    at = read_input_values(program, ats, inputs_file)
    return program, derivative_program(program, mode, kind, list(wrt) or None, at, dtype=dtype)


@cli.command()
@program_options
@value_options
@click.option("--mode", type=click.Choice(["forward", "reverse"]), default=None,
              help="Show the derivative program this mode runs (compiled, every direction in one sweep) "
                   "instead of the IR.")
@derivative_options
@click.option("--json", "as_json", is_flag=True, help="The IR as one JSON object.")
@click.option("--debug", is_flag=True, help="Show the traceback of an internal error.")
def show(file, sets, node_limit, ats, inputs_file, mode, kind, wrt, dtype, as_json, debug):
    """The IR after inlining and unrolling, one equation per node with shapes; with --mode,
    the derivative program forward or reverse mode runs."""
    from .show import ir_json, ir_lines

    if mode is None and (kind != "jacobian" or wrt or ats or inputs_file):
        used = "--kind" if kind != "jacobian" else "--wrt" if wrt else "--at" if ats else "--inputs"
        raise UsageProblem(f"{used} applies to the derivative program: add --mode forward or --mode reverse")
    if mode is not None:
        if as_json:
            raise UsageProblem("--json shows the IR; the derivative program (--mode) is text")
        from .codegen import show_text

        program, dp = _derivative_program(file, sets, node_limit, ats, inputs_file, mode, kind, wrt, dtype)
        text = show_text(dp, program.graph.filename)
        for node in program.graph.nodes:   # the compiled program holds every iteration: say so
            if node.op == "loop":
                text += (f"# the loop {node.var} (the repeat at line {node.line}, {node.attrs['count']:,} "
                         "iterations) is written out above iteration by iteration, its body's values as tN; "
                         "adcli show without --mode prints its body once\n")
        echo_out(text, nl=False)
        return
    check_dims(sets)
    program = load_program(file, sets, node_limit)
    if as_json:
        _emit_json(ir_json(program.graph))
        return
    echo_out("\n".join(ir_lines(program.graph)))


@cli.command()
@program_options
@value_options
@click.option("--mode", type=click.Choice(["forward", "reverse"]), default="reverse", show_default=True,
              help="The mode whose derivative program is written.")
@derivative_options
@click.option("--backend", type=click.Choice(["numpy", "cupy"]), default="numpy", show_default=True,
              help="The array module the written code imports.")
@click.option("-o", "--output", "output_path", default=None, metavar="FILE.py",
              help="Write the module here (default: standard output).")
@click.option("--debug", is_flag=True, help="Show the traceback of an internal error.")
def codegen(file, sets, node_limit, ats, inputs_file, mode, kind, wrt, dtype, backend, output_path, debug):
    """Write the derivative program as a standalone Python module (NumPy or CuPy, nothing from
    adcli): jacobian() (and gradient() for one scalar output), or jvp() / vjp() with --kind."""
    from . import __version__
    from .codegen import module_source

    if output_path is not None and not output_path.endswith(".py"):
        raise UsageProblem(f"--output {shown(output_path)}: the module's file name must end in .py")
    program, dp = _derivative_program(file, sets, node_limit, ats, inputs_file, mode, kind, wrt, dtype)
    text = module_source(dp, program.graph.filename, backend=backend, version=f"{__version__} ")
    if output_path is None:
        echo_out(text, nl=False)
        return
    write_atomically(output_path, lambda f: f.write(text.encode()), "--output")
    click.echo(f"wrote {output_path}", err=True)
