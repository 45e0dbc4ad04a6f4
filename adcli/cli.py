"""The command line: a thin click layer over adcli.api.

Diagnostics go to stderr; with --json, stdout holds exactly one JSON object
and errors are JSON objects on stderr. Exit codes: 0 ok, 1 a problem in the
file or its values, 2 usage, 3 an internal error (rerun with --debug).
"""
from __future__ import annotations

import functools
import json
import sys

import click

from . import __version__
from .errors import EXIT_INPUT, EXIT_INTERNAL, EXIT_USAGE, AdError, ResourceProblem, UsageProblem

SIZE_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
              "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40, "k": 10**3, "m": 10**6, "g": 10**9}


def parse_bytes(text: str) -> int:
    """'200MB', '1.5GiB', '1e9' -> bytes."""
    import re

    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*", text)
    if not match or match.group(2).lower() not in SIZE_UNITS:
        raise UsageProblem(f"--memory-limit {text!r} is not a size such as 200MB or 2GiB")
    size = float(match.group(1)) * SIZE_UNITS[match.group(2).lower()]
    if not size < 2**63:
        raise UsageProblem(f"--memory-limit {text!r} is too large to be a size")
    return int(size)


def split_assignment(option: str, text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    name = name.strip()
    if not sep or not name or not value.strip():
        raise UsageProblem(f"{option} expects NAME=VALUE, got {text!r}")
    return name, value.strip()


def emit_error(error: AdError, as_json: bool):
    if as_json:
        click.echo(json.dumps({"error": error.to_json()}), err=True)
    else:
        click.echo(error.render(), err=True)


_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())   # click >= 8.2


class AdcliGroup(click.Group):
    """Runs a command and turns every failure into one sentence and an exit code."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if args is None:
            args = sys.argv[1:]
        args = list(args)
        as_json = "--json" in args
        debug = "--debug" in args
        try:
            with _quiet_floating_point():
                code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
            code = code if isinstance(code, int) else 0
        except click.exceptions.Exit as exc:
            code = exc.exit_code
        except click.exceptions.Abort:
            click.echo("aborted", err=True)
            code = 1
        except _NO_ARGS_IS_HELP as exc:   # a bare `adcli`: the help, not an error message
            exc.show()
            code = EXIT_USAGE
        except click.ClickException as exc:
            message = exc.format_message()
            problem = UsageProblem(message[:1].lower() + message[1:] if message else "bad usage")
            emit_error(problem, as_json)
            if not as_json and isinstance(exc, click.UsageError) and exc.ctx is not None:
                click.echo(f"Try '{exc.ctx.command_path} --help' for help.", err=True)
            code = EXIT_USAGE
        except AdError as exc:
            emit_error(exc, as_json)
            code = exc.exit_code
        except MemoryError:   # a last resort: the limits should refuse such work first
            emit_error(ResourceProblem("ran out of memory", hint="lower a dim with --set, or give a "
                                       "smaller --memory-limit or --chunk"), as_json)
            code = EXIT_INPUT
        except BrokenPipeError:
            code = 0
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            code = 130
        except Exception as exc:  # an adcli bug: one sentence, or the traceback with --debug
            if debug:
                import traceback

                traceback.print_exc()
            problem = AdError(f"internal error: {type(exc).__name__}: {exc}",
                              hint=None if debug else "this is a bug in adcli; rerun with --debug "
                              "for the traceback and report it")
            problem.kind, problem.exit_code = "internal", EXIT_INTERNAL
            emit_error(problem, as_json)
            code = EXIT_INTERNAL
        if standalone_mode:
            sys.exit(code)
        return code


class _quiet_floating_point:
    """NumPy's floating-point warnings are replaced by adcli's own non-finite report."""

    def __enter__(self):
        import numpy as np
        self._state = np.seterr(all="ignore")

    def __exit__(self, *exc):
        import numpy as np
        np.seterr(**self._state)
        return False


# -- reusable option groups -------------------------------------------------------------

def program_options(f):
    @click.argument("file", type=click.Path(dir_okay=False, path_type=str))
    @click.option("--set", "sets", multiple=True, metavar="DIM=N", help="Override a dim: --set n=1000.")
    @click.option("--node-limit", type=click.IntRange(min=1), default=None,
                  help="Refuse graphs with more nodes than this after unrolling (default 200,000).")
    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        return f(*args, **kwargs)
    return wrapper


def value_options(f):
    @click.option("--at", "ats", multiple=True, metavar="NAME=EXPR",
                  help="An input's value, as a constant expression: --at x=2, --at W=randn(seed=4).")
    @click.option("--inputs", "inputs_file", type=str, default=None, metavar="FILE|-",
                  help='Input values from a JSON object {"x": [1, 2]}; - reads standard input.')
    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        return f(*args, **kwargs)
    return wrapper


BACKENDS = ("auto", "numpy", "cupy")


def run_options(f=None, *, many_backends=False):
    """--backend, --dtype, --memory-limit, --json, --debug. With many_backends,
    --backend takes a comma-separated list (compare puts them side by side)."""
    if f is None:
        return functools.partial(run_options, many_backends=many_backends)
    if many_backends:
        backend = click.option("--backend", default="auto", show_default=True, metavar="NAME[,NAME...]",
                               help="Array backends, comma-separated: auto, numpy, cupy.")
    else:
        backend = click.option("--backend", type=click.Choice(BACKENDS), default="auto",
                               show_default=True, help="Array backend.")

    @backend
    @click.option("--dtype", type=click.Choice(["float64", "float32"]), default="float64",
                  show_default=True)
    @click.option("--memory-limit", default=None, metavar="SIZE",
                  help="Refuse or chunk work predicted to exceed this (default: half of available memory).")
    @click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
    @click.option("--debug", is_flag=True, help="Show the traceback of an internal error.")
    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        return f(*args, **kwargs)
    return wrapper


def load_program(file, sets, node_limit):
    from .api import load
    from .build import DEFAULT_NODE_LIMIT

    dims = {}
    for item in sets:
        name, value = split_assignment("--set", item)
        try:
            dims[name] = int(value)
        except ValueError:
            raise UsageProblem(f"--set {name}={value}: a dim must be a whole number") from None
        if dims[name] < 1:
            raise UsageProblem(f"--set {name}={value}: a dim must be positive")
    return load(file, set=dims, node_limit=node_limit or DEFAULT_NODE_LIMIT)


def read_input_values(program, ats, inputs_file) -> dict:
    """--at over --inputs (over the file's defaults, applied by the API)."""
    values = {}
    if inputs_file is not None:
        from .errors import ValueProblem

        if inputs_file == "-":
            text = sys.stdin.read()
            where = "standard input"
        else:
            try:
                with open(inputs_file, encoding="utf-8") as f:
                    text = f.read()
            except OSError:
                raise UsageProblem(f"--inputs: cannot read {inputs_file}") from None
            where = inputs_file
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueProblem(f"--inputs: {where} is not valid JSON ({exc.msg} at line {exc.lineno}, "
                               f"column {exc.colno})") from None
        except RecursionError:
            raise ValueProblem(f"--inputs: {where} nests its lists too deeply") from None
        if not isinstance(data, dict):
            raise ValueProblem(f"--inputs: {where} must hold a JSON object of input values")
        for name, value in data.items():
            program._check_input(name, "--inputs")
            values[name] = _json_array(name, value)
    for item in ats:
        name, text = split_assignment("--at", item)
        values[name] = program.parse_value(name, text)
    return values


def parse_given(program, option, items, kind) -> dict:
    """--direction INPUT=EXPR... or --cotangent OUTPUT=EXPR... as {name: array}."""
    names = program.graph.inputs if kind == "input" else program.graph.outputs
    given = {}
    for item in items:
        name, text = split_assignment(option, item)
        if name not in names:
            raise UsageProblem(f"{option} {name}: there is no {kind} named '{name}' "
                               f"({kind}s: {', '.join(names) or 'none'})")
        given[name] = program.parse_any_value(name, text)
    return given


def _json_array(name, value):
    import numpy as np
    from .errors import ValueProblem

    def numeric(v):
        if isinstance(v, list):
            return all(numeric(item) for item in v)
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    try:
        if not numeric(value):
            raise ValueError
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError, RecursionError):
        raise ValueProblem(f"--inputs: the value of {name} is not a number or a (nested) list of "
                           "numbers of equal lengths") from None
    return array


# -- commands ---------------------------------------------------------------------------------

@click.group(cls=AdcliGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="adcli")
def cli():
    """Differentiate .ad expression files, and count exactly what it costs."""


@cli.command()
@program_options
@value_options
@click.option("--mode", type=click.Choice(["auto", "forward", "reverse"]), default=None,
              help="forward (JVPs, column by column), reverse (VJPs, row by row) or auto "
                   "(the one predicted to need fewer derivative mults). Default: auto.")
@click.option("--wrt", multiple=True, metavar="NAMES",
              help="Differentiate with respect to these inputs (repeat or comma-separate; default all).")
@click.option("--direction", "directions", multiple=True, metavar="INPUT=EXPR",
              help="Compute one JVP J·v instead of J (forward mode, one pass).")
@click.option("--cotangent", "cotangents", multiple=True, metavar="OUTPUT=EXPR",
              help="Compute one VJP uᵀ·J instead of J (reverse mode, one pass).")
@click.option("--chunk", type=click.IntRange(min=1), default=None,
              help="Directions per sweep (default: all that fit under --memory-limit).")
@click.option("--output", "output_path", default=None, metavar="FILE.npy|FILE.csv",
              help="Also save the Jacobian.")
@click.option("--summary", is_flag=True, help="Do not print the Jacobian itself.")
@click.option("--full", is_flag=True, help="Print the whole Jacobian, however large.")
@run_options
def grad(file, sets, node_limit, ats, inputs_file, mode, wrt, directions, cotangents, chunk,
         output_path, summary, full, backend, dtype, memory_limit, as_json, debug):
    """Value, Jacobian (or one JVP/VJP), and the exact cost of getting it."""
    if directions and cotangents:
        raise UsageProblem("--direction (one JVP) and --cotangent (one VJP) cannot be combined")
    if directions and mode == "reverse":
        raise UsageProblem("--direction computes a JVP in forward mode; it conflicts with --mode reverse")
    if cotangents and mode == "forward":
        raise UsageProblem("--cotangent computes a VJP in reverse mode; it conflicts with --mode forward")
    if summary and full:
        raise UsageProblem("--summary (do not print the Jacobian) and --full (print all of it) conflict")
    if output_path and not output_path.endswith((".npy", ".csv")):
        raise UsageProblem(f"--output {output_path}: the file name must end in .npy or .csv")
    limit = parse_bytes(memory_limit) if memory_limit else None
    program = load_program(file, sets, node_limit)
    at = read_input_values(program, ats, inputs_file)
    if directions or cotangents:
        given = (parse_given(program, "--direction", directions, "input") if directions else
                 parse_given(program, "--cotangent", cotangents, "output"))
        if wrt and directions:
            raise UsageProblem("--wrt does not apply to --direction; the direction names its inputs")
        if directions:
            result = program.jvp(given, at=at, backend=backend, dtype=dtype)
        else:
            result = program.vjp(given, at=at, wrt=list(wrt) or None, backend=backend, dtype=dtype)
    else:
        result = program.jacobian(mode=mode or "auto", wrt=list(wrt) or None, at=at, chunk=chunk,
                                  backend=backend, dtype=dtype, memory_limit=limit)
    nonfinite = _check_finite(program, result, at, dtype)
    if output_path:
        _save_jacobian(result, output_path)
    if as_json:
        from .report import derivative_json

        click.echo(json.dumps(derivative_json(program, result), allow_nan=False))
    else:
        from .render import render_derivative

        render_derivative(program, result, full=full, summary=summary, saved=output_path)
    if nonfinite:
        click.echo(f"warning: {nonfinite}" + ("; non-finite numbers are shown as null in JSON"
                                              if as_json else ""), err=True)


def _check_finite(program, result, at, dtype):
    import numpy as np

    arrays = [result.jacobian] + list(result.value.values())
    if all(np.all(np.isfinite(a)) for a in arrays):
        return None
    culprit = program.find_nonfinite(at, dtype, result)
    return (f"the result holds nan or infinity: {culprit}" if culprit
            else "the result holds nan or infinity")


def _save_jacobian(result, path):
    import numpy as np

    try:
        if path.endswith(".npy"):
            np.save(path, result.jacobian)
        else:
            import csv

            with open(path, "w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow([""] + list(result.columns))
                for label, row in zip(result.rows, result.jacobian):
                    writer.writerow([label] + [repr(float(v)) for v in row])
    except OSError as exc:
        raise UsageProblem(f"--output: cannot write {path} ({exc.strerror})") from None


@cli.command()
@program_options
@value_options
@click.option("--wrt", multiple=True, metavar="NAMES",
              help="Differentiate with respect to these inputs (repeat or comma-separate; default all).")
@click.option("--repeat", type=click.IntRange(min=1), default=3, show_default=True,
              help="Runs per method; times are the median.")
@click.option("--scale", "scale_spec", default=None, metavar="DIM=v1,v2,...",
              help="Rerun the comparison for each value of a dim (a size or a repeat count) and fit "
                   "log-log slopes.")
@click.option("--plot", "plot_path", default=None, metavar="FILE.png|FILE.svg",
              help="With --scale: also draw the sweep as an image (needs matplotlib).")
@click.option("--fd-max-inputs", type=click.IntRange(min=0), default=5000, show_default=True,
              help="Skip central differences beyond this many input scalars.")
@run_options(many_backends=True)
def compare(file, sets, node_limit, ats, inputs_file, wrt, repeat, scale_spec, plot_path,
            fd_max_inputs, backend, dtype, memory_limit, as_json, debug):
    """Forward vs reverse vs central differences, side by side, with a recommendation."""
    from . import compare as comparing
    from .report import finite

    limit = parse_bytes(memory_limit) if memory_limit else None
    if plot_path and not scale_spec:
        raise UsageProblem("--plot draws a scaling sweep; give --scale NAME=v1,v2,... too")
    if plot_path and not plot_path.lower().endswith((".png", ".svg")):
        raise UsageProblem(f"--plot {plot_path}: the file name must end in .png or .svg")
    backends = [b.strip() for b in backend.split(",") if b.strip()]
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown or not backends:
        raise UsageProblem(f"--backend {backend}: choose from {', '.join(BACKENDS)}, comma-separated")
    backends = list(dict.fromkeys("numpy" if b == "auto" else b for b in backends))
    options = dict(wrt=list(wrt) or None, repeat=repeat,
                   backend=backends[0] if len(backends) == 1 else backends, dtype=dtype,
                   fd_max_inputs=fd_max_inputs)
    if scale_spec:
        name, values = comparing.parse_scale(scale_spec)
        base_dims = {}
        for item in sets:
            key, value = split_assignment("--set", item)
            if key == name:
                raise UsageProblem(f"--set {key} conflicts with --scale {name}")
            base_dims[key] = value

        def load_at(dims):
            program = load_program(file, [f"{k}={v}" for k, v in dims.items()], node_limit)
            options["at"] = read_input_values(program, ats, inputs_file)
            return program

        if plot_path:   # fail before the sweep, not after it
            try:
                import matplotlib  # noqa: F401
            except ImportError:
                raise AdError("--plot needs matplotlib, which is not installed; install it with "
                              "pip install 'adcli[plot]' (from a clone: pip install '.[plot]')") from None
        sweep = comparing.scale(load_at, name, values, base_dims, memory_limit=limit, **options)
        if plot_path:
            comparing.plot_image(sweep, plot_path)
        if as_json:
            data = sweep.to_json()
            data["file"] = file
            data["plot"] = plot_path
            click.echo(json.dumps(finite(data), allow_nan=False))
        else:
            from .render_compare import render_sweep

            render_sweep(sweep)
            if plot_path:
                click.echo(f"wrote {plot_path}")
        return
    program = load_program(file, sets, node_limit)
    at = read_input_values(program, ats, inputs_file)
    comparison = comparing.compare(program, at=at, memory_limit=limit, **options)
    nonfinite = None
    for run in comparison.runs.values():
        if run.result is not None and nonfinite is None:
            nonfinite = _check_finite(program, run.result, at, dtype)
    if as_json:
        click.echo(json.dumps(finite(comparison.to_json()), allow_nan=False))
    else:
        from .render_compare import render_comparison

        render_comparison(comparison)
    if nonfinite:
        click.echo(f"warning: {nonfinite}; the accuracy rows and the recommendation cannot be "
                   "trusted at this point", err=True)
    elif comparison.agreement.get("message"):
        click.echo(f"warning: {comparison.agreement['message']}", err=True)


def main(argv=None):
    """The console-script entry point."""
    cli.main(args=argv, prog_name="adcli")


from . import cli_inspect  # noqa: E402,F401  registers trace, graph and show


if __name__ == "__main__":
    main()
