"""The command line: a thin click layer over adcli.api.

Diagnostics go to stderr; with --json, stdout holds exactly one JSON object
and errors are JSON objects on stderr. Exit codes: 0 ok, 1 a problem in the
file or its values, 2 usage, 3 an internal error (rerun with --debug), 4 the
environment (a full disk, a permission), 130 Ctrl-C, 143 SIGTERM, 141 a closed
standard output (`adcli ... | head`, as cat).
"""
from __future__ import annotations

import errno
import os
import signal
import sys


# -- signals: set up before anything heavy is imported -------------------------------------------

class _Signalled(BaseException):
    """Raised by adcli's SIGINT/SIGTERM handler once main() runs. A BaseException: no `except
    Exception` on the way swallows it, click does not turn it into Abort, and every `finally`
    on the way runs (a half-written --output file is removed)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _launched_as_adcli() -> bool:
    """True when this process is the `adcli` command (not a program or test importing adcli)."""
    if __name__ == "__main__":
        return True
    scripts = (getattr(sys.modules.get("__main__"), "__file__", None) or "", (sys.argv or [""])[0] or "")
    return any(os.path.basename(script).split(".")[0] in ("adcli", "adcli-script") for script in scripts)


def _signal_line(code: int, as_json: bool) -> str:
    """What a signal prints on stderr: 'interrupted' (Ctrl-C, exit 130) or 'terminated'
    (SIGTERM, 143), or with --json the error object {"kind": "interrupted", ...}. Written out
    by hand: at start-up it may be needed while json itself is being imported."""
    message = "interrupted" if code == 128 + signal.SIGINT else "terminated"
    if as_json:
        return f'{{"error": {{"kind": "interrupted", "message": "{message}", "exit_code": {code}}}}}\n'
    return message + "\n"


def _exit_during_start_up(signum, frame):
    """Ctrl-C or SIGTERM while adcli is still importing: nothing has been written, so end at
    once with the one line (or JSON object) a command would print."""
    code = 128 + signum
    try:
        os.write(2, _signal_line(code, "--json" in sys.argv[1:]).encode())
    finally:
        os._exit(code)


_RECEIVED: list = []   # the signal main()'s handler raised, if any


def _raise_signalled(signum, frame):
    """Unwind (cleaning up) once; a second signal while unwinding is ignored."""
    if not _RECEIVED:
        _RECEIVED.append(signum)
        raise _Signalled(signum)


def _unraisable_hook(default):
    """A signal that lands in a callback Python cannot raise from (a weakref callback in the
    import machinery) is not printed as 'Exception ignored'; AdcliGroup.main reports it when
    the command returns."""
    def hook(unraisable):
        if not isinstance(unraisable.exc_value, _Signalled):
            default(unraisable)
    return hook


def _handle_signals(handler) -> None:
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            signal.signal(signum, handler)
        except (ValueError, OSError):   # not the main thread, or not settable here
            pass


if _launched_as_adcli():   # before click and the rest are imported: no traceback at start-up
    _handle_signals(_exit_during_start_up)

import functools  # noqa: E402
import importlib  # noqa: E402
import json  # noqa: E402

import click  # noqa: E402

from . import __version__  # noqa: E402
from .errors import (EXIT_BROKEN_PIPE, EXIT_INPUT, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_USAGE,  # noqa: E402
                     AdError, ResourceProblem, UsageProblem, os_problem, shown)

SIZE_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
              "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40, "k": 10**3, "m": 10**6, "g": 10**9}


def _amount(text: str, units: dict) -> float | None:
    """'1.5GiB' with `units` {'gib': 2**30, ...} -> 1.5 · 2^30; None when it is not a number
    followed by one of the units (case aside)."""
    import re

    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*", text)
    if not match or match.group(2).lower() not in units:
        return None
    return float(match.group(1)) * units[match.group(2).lower()]


def parse_bytes(text: str) -> int:
    """'200MB', '1.5GiB', '1e9' -> bytes."""
    size = _amount(text, SIZE_UNITS)
    if size is None:
        raise UsageProblem(f"--memory-limit {text!r} is not a size such as 200MB or 2GiB")
    if not size < 2**63:
        raise UsageProblem(f"--memory-limit {text!r} is too large to be a size")
    return int(size)


DURATION_UNITS = {"": 1, "ms": 1e-3, "s": 1, "sec": 1, "min": 60, "m": 60, "h": 3600, "hour": 3600, "hours": 3600,
                  "d": 86400, "day": 86400, "days": 86400}


def parse_duration(text: str) -> float | None:
    """'90', '90s', '10min', '2h', '1d', '500ms' -> seconds; '0' or 'none' -> None (no limit)."""
    if text.strip().lower() == "none":
        return None
    seconds = _amount(text, DURATION_UNITS)
    if seconds is None:
        raise UsageProblem(f"--time-limit {shown(text, 24)} is not a duration such as 90s, 10min, 2h or 1d "
                           "(0 for none)")
    return seconds or None


def time_limit_option(f):
    return click.option(
        "--time-limit", "time_limit_text", default="1h", show_default=True, metavar="DURATION",
        help="Refuse a run predicted (by the machine model) to take longer: 90s, 10min, 2h, 1d; 0 for "
             "no limit.")(f)


def split_assignment(option: str, text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    name = name.strip()
    if not sep or not name or not value.strip():
        raise UsageProblem(f"{option} expects NAME=VALUE, got {text!r}")
    return name, value.strip()


def echo_out(text: str, nl: bool = True):
    """Write a result to standard output in pieces of 64 KiB, each flushed: a reader that goes
    away early (`adcli ... | head`) then shows as a closed pipe (exit 141) however large the
    result, where one large write would lose the rest silently and exit 0."""
    text += "\n" if nl else ""
    step = 1 << 16
    for start in range(0, len(text), step):
        click.echo(text[start:start + step], nl=False)


def emit_error(error: AdError, as_json: bool):
    if as_json:
        click.echo(json.dumps({"error": error.to_json()}), err=True)
    else:
        click.echo(error.render(), err=True)


_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())   # click >= 8.2


class _PipeClosed(BaseException):
    """Standard output's reader went away (`adcli ... | head`). Raised instead of
    BrokenPipeError, which click would turn into a silent exit 1."""


def _silence_stdout():
    """Point standard output at /dev/null, so that Python's last flush at exit neither fails
    nor prints 'Exception ignored ... BrokenPipeError'."""
    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        pass
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):   # no real file descriptor (a test's stdout)
        pass


def _environment_problem(error: AdError) -> AdError:
    """A usage error raised while handling a permission or disk error (the library's 'cannot
    read FILE (Permission denied)') is the environment's: exit 4, not 2."""
    cause = error.__cause__ or error.__context__
    if error.exit_code == EXIT_USAGE and isinstance(cause, OSError):
        problem = os_problem(cause, error.message)
        if problem.exit_code != EXIT_USAGE:
            problem.message, problem.location, problem.hint = error.message, error.location, error.hint
            return problem
    return error


class AdcliGroup(click.Group):
    """Runs a command and turns every failure into one sentence and an exit code."""

    # Commands defined in other modules, imported when named or listed (--help), so that
    # `grad` does not import them at start-up.
    LAZY_COMMANDS = {"trace": "cli_inspect", "graph": "cli_inspect", "show": "cli_inspect",
                     "codegen": "cli_inspect", "calibrate": "cli_calibrate"}

    def get_command(self, ctx, cmd_name):
        if cmd_name not in self.commands and cmd_name in self.LAZY_COMMANDS:
            importlib.import_module(f"{__package__}.{self.LAZY_COMMANDS[cmd_name]}")   # registers it
        return super().get_command(ctx, cmd_name)

    def list_commands(self, ctx):
        return sorted(set(self.commands) | set(self.LAZY_COMMANDS))

    def invoke(self, ctx):
        try:
            value = super().invoke(ctx)
            try:
                sys.stdout.flush()   # a closed pipe or a full disk shows here, not at exit
            except OSError as exc:
                if exc.errno == errno.EPIPE:
                    raise
                _silence_stdout()
                raise os_problem(exc, "cannot write standard output") from None
            return value
        except BrokenPipeError:
            raise _PipeClosed() from None
        except KeyboardInterrupt:   # Python's own handler (adcli used in-process): not click's Abort
            raise _Signalled(signal.SIGINT) from None

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if args is None:
            args = sys.argv[1:]
        args = list(args)
        as_json = "--json" in args
        debug = "--debug" in args
        try:
            with _quiet_floating_point():
                code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
            if _RECEIVED:   # a signal whose exception was swallowed on the way
                raise _Signalled(_RECEIVED[0])
            code = code if isinstance(code, int) else 0
        except click.exceptions.Exit as exc:
            code = exc.exit_code
        except (_Signalled, KeyboardInterrupt, click.exceptions.Abort) as exc:
            # Ctrl-C or SIGTERM wherever it lands (click turns a KeyboardInterrupt into Abort)
            code = 128 + exc.signum if isinstance(exc, _Signalled) else EXIT_INTERRUPTED
            click.echo(_signal_line(code, as_json), err=True, nl=False)
        except (_PipeClosed, BrokenPipeError):   # quietly, with the status cat gets from SIGPIPE
            _silence_stdout()
            code = EXIT_BROKEN_PIPE
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
            exc = _environment_problem(exc)
            emit_error(exc, as_json)
            code = exc.exit_code
        except MemoryError:   # a last resort: the limits should refuse such work first
            emit_error(ResourceProblem("ran out of memory", hint="lower a dim with --set, or give a "
                                       "smaller --memory-limit or --chunk"), as_json)
            code = EXIT_INPUT
        except OSError as exc:   # the environment (a full disk, a permission) on a file not named yet
            problem = os_problem(exc, f"cannot use {shown(exc.filename)}" if exc.filename else
                                 "cannot write the output" if exc.errno in (errno.ENOSPC, errno.EDQUOT,
                                                                            errno.EFBIG, errno.EBADF)
                                 else "reading or writing failed")
            _silence_stdout()
            emit_error(problem, as_json)
            code = problem.exit_code
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
    @click.option("--max-source-bytes", default=None, metavar="SIZE",
                  help="Refuse .ad files larger than this before reading them (default 10MB).")
    @functools.wraps(f)
    def wrapper(*args, max_source_bytes=None, **kwargs):
        # kept aside for load_program, so that commands need no parameter for it
        click.get_current_context().meta["adcli.max_source_bytes"] = max_source_bytes
        return f(*args, **kwargs)
    return wrapper


def value_options(f):
    @click.option("--at", "ats", multiple=True, metavar="NAME=EXPR",
                  help="An input's or const's value, as a constant expression: --at x=2, --at W=randn(seed=4), "
                       "--at X='load(\"x.npy\")'.")
    @click.option("--inputs", "inputs_file", type=str, default=None, metavar="FILE|-",
                  help='Input (and const) values from a JSON object {"x": [1, 2]}; - reads standard input.')
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
                               help="Array backends, comma-separated: auto, numpy, cupy. With "
                                    "several, cupy where it cannot run (no CuPy or no GPU) is left "
                                    "out with a note.")
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


def load_program(file, sets, node_limit, loops="auto"):
    from .api import load
    from .build import DEFAULT_NODE_LIMIT
    from .parser import MAX_SOURCE_BYTES

    ctx = click.get_current_context(silent=True)
    text = ctx.meta.get("adcli.max_source_bytes") if ctx is not None else None
    max_source = MAX_SOURCE_BYTES
    if text is not None:
        try:
            max_source = parse_bytes(text)
        except UsageProblem as exc:   # its message names --memory-limit
            raise UsageProblem(exc.message.replace("--memory-limit", "--max-source-bytes")) from None

    dims = {}
    for item in sets:
        name, value = split_assignment("--set", item)
        try:
            dims[name] = int(value)
        except ValueError:
            raise UsageProblem(f"--set {name}={value}: a dim must be a whole number") from None
        if dims[name] < 1:
            raise UsageProblem(f"--set {name}={value}: a dim must be positive")
    return load(file, set=dims, node_limit=node_limit or DEFAULT_NODE_LIMIT, max_source_bytes=max_source,
                loops=loops)


def checkpoints_option(f):
    return click.option(
        "--checkpoints", "checkpoints_text", default=None, metavar="S|auto",
        help="Reverse mode: reverse each loop keeping at most S saved states (binomial checkpointing), "
             "running steps again instead of keeping every step's residuals; auto: the most states that "
             "fit the memory limit. Keeps every repeat that can stay a loop a loop.")(f)


def parse_checkpoints(text):
    """--checkpoints S|auto: None (not given), "auto", or a whole number ≥ 1."""
    if text is None or text == "auto":
        return text
    try:
        states = int(text)
    except ValueError:
        states = 0
    if states < 1 or str(states) != text.strip().lstrip("+"):
        raise UsageProblem(f"--checkpoints {shown(text, 24)}: give a whole number of states of at least 1, "
                           "or auto")
    return states


MAX_DIM = 2**63 - 1   # a size or a repeat count; beyond it a dim is no longer a machine integer


def check_dims(items, option: str = "--set") -> None:
    """--set NAME=N values checked before the file is built, each failure one sentence with the
    value shown escaped and shortened: whole (not '3\\n4'), positive, and at most MAX_DIM (a
    400-digit dim would overflow the floats that sizes and values are computed in)."""
    import re

    for item in items:
        name, value = split_assignment(option, item)
        digits = re.fullmatch(r"([+-]?)0*([0-9][0-9_]*)", value)
        if digits and len(digits.group(2).replace("_", "")) > 19:   # before int(), which refuses 4,301 digits
            number = -1 if digits.group(1) == "-" else MAX_DIM + 1
        else:
            try:
                number = int(value)
            except ValueError:
                raise UsageProblem(f"{option} {shown(name, 40)}={shown(value, 24)}: a dim must be a whole "
                                   "number") from None
        if number < 1:
            raise UsageProblem(f"{option} {shown(name, 40)}={shown(value, 24)}: a dim must be positive")
        if number > MAX_DIM:
            raise UsageProblem(f"{option} {shown(name, 40)}={shown(value, 24)}: a dim must be at most "
                               f"{MAX_DIM:,} (2^63 - 1)")


def read_inputs_file(inputs_file: str) -> dict:
    """The JSON object of --inputs FILE|- as {name: JSON value}. Read once: a --scale sweep
    uses it at every size, and standard input can be read only once."""
    from .errors import ValueProblem

    if inputs_file == "-":
        where = "standard input"
        if sys.stdin is None:
            raise UsageProblem("--inputs -: there is no standard input to read")
        stream = getattr(sys.stdin, "buffer", sys.stdin)
        try:
            raw = stream.read()
        except OSError as exc:
            raise os_problem(exc, "--inputs: cannot read standard input") from None
    else:
        where = shown(inputs_file)
        try:
            with open(inputs_file, "rb") as f:
                raw = f.read()
        except OSError as exc:
            raise os_problem(exc, f"--inputs: cannot read {where}") from None
    try:
        text = raw.decode("utf-8-sig") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError as exc:
        raise ValueProblem(f"--inputs: {where} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at "
                           f"offset {exc.start:,}), as JSON must be") from None
    try:
        data = json.loads(text, parse_int=_json_number, parse_float=_json_number)
    except json.JSONDecodeError as exc:
        raise ValueProblem(f"--inputs: {where} is not valid JSON ({exc.msg} at line {exc.lineno}, "
                           f"column {exc.colno})") from None
    except RecursionError:
        raise ValueProblem(f"--inputs: {where} nests its lists too deeply") from None
    if not isinstance(data, dict):
        raise ValueProblem(f"--inputs: {where} must hold a JSON object of input values")
    return data   # values are checked as numbers after their names (read_input_values)


def read_input_values(program, ats, inputs_file, from_file: dict | None = None) -> dict:
    """--at over --inputs (over the file's defaults, applied by the API). `from_file`: the
    --inputs values already read by read_inputs_file."""
    values = {}
    if inputs_file is not None:
        for name, value in (read_inputs_file(inputs_file) if from_file is None else from_file).items():
            # the name first: an integer const is refused in the same sentence as by --at,
            # whatever its value
            program._check_settable(name, "--inputs")
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
            raise UsageProblem(f"{option} {shown(name, 40)}: there is no {kind} named "
                               f"{shown(name, 40, True)} "
                               f"({kind}s: {', '.join(names) or 'none'})")
        given[name] = program.parse_any_value(name, text)
    return given


class _HugeNumber(str):
    """A JSON number beyond float64's range (1e400, or 5,000 digits, which int() refuses), kept
    as its text until the input that holds it is known."""


def _json_number(text: str):
    value = float(text)   # no digit limit, unlike int(); beyond 1.8e308 it is inf
    return _HugeNumber(text) if value in (float("inf"), float("-inf")) else value


def _json_array(name, value):
    import numpy as np
    from .errors import ValueProblem

    def numeric(v):
        if isinstance(v, list):
            return all(numeric(item) for item in v)
        if isinstance(v, _HugeNumber):
            raise ValueProblem(f"--inputs: the value of {shown(name, 40)} holds {shown(v, 24)}, a number too "
                               "large for a float64 (at most about 1.8e308)")
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    try:
        if not numeric(value):
            raise ValueError
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError, RecursionError):
        raise ValueProblem(f"--inputs: the value of {shown(name, 40)} is not a number or a (nested) list of "
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
@checkpoints_option
@time_limit_option
@run_options
def grad(file, sets, node_limit, ats, inputs_file, mode, wrt, directions, cotangents, chunk,
         output_path, summary, full, checkpoints_text, time_limit_text, backend, dtype, memory_limit, as_json,
         debug):
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
        raise UsageProblem(f"--output {shown(output_path)}: the file name must end in .npy or .csv")
    checkpoints = parse_checkpoints(checkpoints_text)
    if checkpoints is not None and (mode == "forward" or directions):
        raise UsageProblem("--checkpoints applies to reverse mode, which keeps residuals; forward mode keeps none")
    limit = parse_bytes(memory_limit) if memory_limit else None
    time_limit = parse_duration(time_limit_text)
    check_dims(sets)
    program = load_program(file, sets, node_limit, loops="auto" if checkpoints is None else "always")
    at = read_input_values(program, ats, inputs_file)
    if directions or cotangents:
        given = (parse_given(program, "--direction", directions, "input") if directions else
                 parse_given(program, "--cotangent", cotangents, "output"))
        if wrt and directions:
            raise UsageProblem("--wrt does not apply to --direction; the direction names its inputs")
        if directions:
            result = program.jvp(given, at=at, backend=backend, dtype=dtype, memory_limit=limit, json=as_json,
                                 measure_memory=True, time_limit=time_limit)
        else:
            result = program.vjp(given, at=at, wrt=list(wrt) or None, backend=backend, dtype=dtype,
                                 memory_limit=limit, json=as_json, measure_memory=True, checkpoints=checkpoints,
                                 time_limit=time_limit)
    else:   # the CLI reports peak bytes, so it asks for them (the API does not by default)
        result = program.jacobian(mode=mode or "auto", wrt=list(wrt) or None, at=at, chunk=chunk,
                                  backend=backend, dtype=dtype, memory_limit=limit, json=as_json,
                                  measure_memory=True, checkpoints=checkpoints, time_limit=time_limit)
    nonfinite = _check_finite(program, result, at, dtype)
    if output_path:
        _save_jacobian(result, output_path)
    if as_json:
        from .report import derivative_json_pieces

        for piece in derivative_json_pieces(program, result):   # streamed: api.Program.json_bytes
            echo_out(piece, nl=False)
        echo_out("")
    else:
        from .render import render_derivative

        render_derivative(program, result, full=full, summary=summary, saved=output_path)
    if nonfinite:
        click.echo(f"warning: {nonfinite}" + ("; non-finite numbers are shown as null in JSON"
                                              if as_json else ""), err=True)


@cli.command()
@program_options
@value_options
@click.option("--of", "output", default=None, metavar="OUTPUT",
              help="The scalar output (default: the file's only output).")
@click.option("--wrt", multiple=True, metavar="NAMES",
              help="Differentiate with respect to these inputs (repeat or comma-separate; default all).")
@click.option("--direction", "directions", multiple=True, metavar="INPUT=EXPR",
              help="Compute one Hessian-vector product H·v instead of H (one forward pass).")
@click.option("--mode", type=click.Choice(["forward", "reverse"]), default="forward", show_default=True,
              help="forward over reverse (one pass per input scalar) or reverse over reverse.")
@click.option("--chunk", type=click.IntRange(min=1), default=None,
              help="Directions per sweep (default: all that fit under --memory-limit).")
@click.option("--full", is_flag=True, help="Print the whole Hessian and gradient, however large.")
@time_limit_option
@run_options
def hessian(file, sets, node_limit, ats, inputs_file, output, wrt, directions, mode, chunk, full,
            time_limit_text, backend, dtype, memory_limit, as_json, debug):
    """Value, gradient and Hessian of a scalar output (or one Hessian-vector product), with
    their cost and a check against central differences of the gradient."""
    if directions and (wrt or mode == "reverse" or chunk):
        raise UsageProblem("--direction computes one Hessian-vector product, forward over reverse; "
                           "--wrt, --mode reverse and --chunk do not apply to it")
    limit = parse_bytes(memory_limit) if memory_limit else None
    time_limit = parse_duration(time_limit_text)
    check_dims(sets)
    program = load_program(file, sets, node_limit)
    at = read_input_values(program, ats, inputs_file)
    direction = parse_given(program, "--direction", directions, "input") if directions else None
    result = program.hessian(output, wrt=list(wrt) or None, at=at, direction=direction, mode=mode, chunk=chunk,
                             backend=backend, dtype=dtype, memory_limit=limit, measure_memory=True, json=as_json,
                             time_limit=time_limit)
    nonfinite = _check_finite(result.program, result.result, at, dtype)
    if as_json:
        from .report import hessian_json

        echo_out(json.dumps(hessian_json(program, result), allow_nan=False))
    else:
        from .render import render_hessian

        render_hessian(program, result, full=full)
    if nonfinite:
        click.echo(f"warning: {nonfinite}" + ("; non-finite numbers are shown as null in JSON"
                                              if as_json else ""), err=True)
    elif result.check["message"]:
        click.echo(f"warning: {result.check['message']}", err=True)
    elif result.check["skipped"] and as_json:
        click.echo(f"note: central differences of the gradient: {result.check['skipped']}", err=True)


def _check_finite(program, result, at, dtype):
    import numpy as np

    # The blocks as they are: result.jacobian would assemble a second m×n copy, and
    # isfinite over all of it a full boolean temporary; check in slices instead.
    parts = ([result.matrix] if result.matrix is not None else
             [block for blocks in result.blocks.values() for block in blocks.values()])

    def finite(array) -> bool:
        array = np.asarray(array)
        if array.ndim == 0 or array.size == 0:   # (an empty value holds nothing non-finite)
            return bool(np.isfinite(array).all())
        step = max(1, (1 << 20) // max(1, array[0].size))   # about a million entries a slice
        return all(bool(np.isfinite(array[i:i + step]).all()) for i in range(0, len(array), step))

    if all(finite(a) for a in parts + list(result.value.values())):
        return None
    culprit = program.find_nonfinite(at, dtype, result)
    return (f"the result holds nan or infinity: {culprit}" if culprit
            else "the result holds nan or infinity")


def _save_jacobian(result, path):
    """Write J to a temporary file beside `path` and rename it into place: a full disk, an
    error or a signal never leaves a truncated file (nor the temporary) behind."""
    import numpy as np

    def write(f):
        if path.endswith(".npy"):
            np.save(f, result.jacobian)
        else:
            import csv
            import io

            text = io.TextIOWrapper(f, encoding="utf-8", newline="")
            writer = csv.writer(text)
            writer.writerow([""] + list(result.columns))
            for label, row in zip(result.rows, result.jacobian):
                writer.writerow([label] + [repr(float(v)) for v in row])
            text.flush()
            text.detach()

    write_atomically(path, write, "--output")


def write_atomically(path: str, write, option: str):
    """Call write(binary file) on a temporary file in path's directory, then os.replace it onto
    path; on any failure (OSError, a signal, a bug) remove the temporary. An OSError becomes
    one sentence: exit 2 for a missing directory, 4 for a full disk or a permission."""
    import tempfile

    what = f"{option}: cannot write {shown(path)}"
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, temporary = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".part", dir=directory)
    except OSError as exc:
        raise os_problem(exc, what) from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())   # a full disk can show only here
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)   # mkstemp's 0600 -> what open() would have made
        os.replace(temporary, path)
    except BaseException as exc:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise os_problem(exc, what) from None
        raise


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
              help="Draw the --scale sweep, or for a program with a loop the checkpointing frontier "
                   "(memory against time), as an image (needs matplotlib).")
@click.option("--fd-max-inputs", type=click.IntRange(min=0), default=5000, show_default=True,
              help="Skip central differences beyond this many input scalars.")
@time_limit_option
@run_options(many_backends=True)
def compare(file, sets, node_limit, ats, inputs_file, wrt, repeat, scale_spec, plot_path,
            fd_max_inputs, time_limit_text, backend, dtype, memory_limit, as_json, debug):
    """Forward vs reverse vs central differences, side by side, with a recommendation."""
    from . import compare as comparing
    from .report import finite

    limit = parse_bytes(memory_limit) if memory_limit else None
    time_limit = parse_duration(time_limit_text)
    if plot_path and not plot_path.lower().endswith((".png", ".svg")):
        raise UsageProblem(f"--plot {shown(plot_path)}: the file name must end in .png or .svg")
    backends = [b.strip() for b in backend.split(",") if b.strip()]
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown or not backends:
        raise UsageProblem(f"--backend {shown(backend, 40)}: choose from {', '.join(BACKENDS)}, "
                           "comma-separated")
    backends = list(dict.fromkeys("numpy" if b == "auto" else b for b in backends))
    if "cupy" in backends and len(backends) > 1:   # side by side: run what can run, and say so
        from .backend_cupy import cupy_problem

        problem = cupy_problem()
        if problem:
            backends.remove("cupy")
            click.echo(f"note: --backend {shown(backend, 40)}: cupy cannot run here "
                       f"({problem}); comparing on {', '.join(backends)} only", err=True)
    options = dict(wrt=list(wrt) or None, repeat=repeat,
                   backend=backends[0] if len(backends) == 1 else backends, dtype=dtype,
                   fd_max_inputs=fd_max_inputs, time_limit=time_limit)
    if scale_spec:
        name, values = comparing.parse_scale(scale_spec)
        check_dims(sets)
        check_dims([f"{name}={v}" for v in values], "--scale")
        base_dims = {}
        for item in sets:
            key, value = split_assignment("--set", item)
            if key == name:
                raise UsageProblem(f"--set {shown(key, 40)} conflicts with --scale {shown(name, 40)}")
            base_dims[key] = value
        from_file = read_inputs_file(inputs_file) if inputs_file is not None else None

        def load_at(dims):
            """The program at these dims, with the --at/--inputs values (checked against this
            size's shapes, --at evaluated at it) as its inputs' defaults: the sweep runs every
            size at its defaults."""
            program = load_program(file, [f"{k}={v}" for k, v in dims.items()], node_limit)
            at = read_input_values(program, ats, inputs_file, from_file)
            if at:
                program.set_defaults(at)
            return program

        if plot_path:   # fail before the sweep, not after it
            _check_matplotlib()
        sweep = comparing.scale(load_at, name, values, base_dims, memory_limit=limit, **options)
        if plot_path:
            comparing.plot_image(sweep, plot_path)
        if as_json:
            data = sweep.to_json()
            data["file"] = file
            data["plot"] = plot_path
            echo_out(json.dumps(finite(data), allow_nan=False))
        else:
            from .render_compare import render_sweep

            render_sweep(sweep)
            if plot_path:
                click.echo(f"wrote {plot_path}")
        return
    check_dims(sets)
    program = load_program(file, sets, node_limit)
    at = read_input_values(program, ats, inputs_file)
    # the frontier of checkpointing: every repeat that can stay a loop kept one
    looped = program if program._loop_count() else load_program(file, sets, node_limit, loops="always")
    if plot_path and not looped._loop_count():
        raise UsageProblem("--plot draws a scaling sweep (give --scale NAME=v1,v2,...) or, for a program "
                           "with a repeat that stays a loop, the checkpointing frontier; this program has "
                           "neither")
    if plot_path:
        _check_matplotlib()
    comparison = comparing.compare(program, at=at, memory_limit=limit, looped=looped, **options)
    if plot_path:
        comparing.plot_frontier(comparison, plot_path)
    nonfinite = None
    for run in comparison.runs.values():
        if run.result is not None and nonfinite is None:
            nonfinite = _check_finite(program, run.result, at, dtype)
    if as_json:
        data = comparison.to_json()
        data["plot"] = plot_path
        echo_out(json.dumps(finite(data), allow_nan=False))
    else:
        from .render_compare import render_comparison

        render_comparison(comparison)
        if plot_path:
            click.echo(f"wrote {plot_path}")
    if nonfinite:
        click.echo(f"warning: {nonfinite}; the accuracy rows and the recommendation cannot be "
                   "trusted at this point", err=True)
    elif comparison.agreement.get("message"):
        click.echo(f"warning: {comparison.agreement['message']}", err=True)


def _check_matplotlib():
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise AdError("--plot needs matplotlib, which is not installed; install it with "
                      "pip install 'adcli[plot]' (from a clone: pip install '.[plot]')") from None


def main(argv=None):
    """The console-script entry point. From here on Ctrl-C and SIGTERM unwind (removing a
    half-written file) and end with one line and exit 130 or 143; the handlers installed while
    importing (which end at once) are replaced."""
    sys.unraisablehook = _unraisable_hook(sys.unraisablehook)
    _handle_signals(_raise_signalled)
    for name in ("stdout", "stderr"):   # started with it closed: writing it fails, as on a bad descriptor
        if getattr(sys, name) is None:
            setattr(sys, name, _ClosedStream(name))
    try:
        cli.main(args=argv, prog_name="adcli")
    except _Signalled as exc:   # it landed while a result or an error was being reported
        code = 128 + exc.signum
        os.write(2, _signal_line(code, "--json" in (sys.argv[1:] if argv is None else argv)).encode())
        sys.exit(code)
    except SystemExit as exc:
        if isinstance(exc.code, int) and _launched_as_adcli():
            _end_process(exc.code)
        raise


class _ClosedStream:
    """Standard output or error of a process started with it closed (Python makes it None,
    and click then drops what is written without a word): writing fails as it would on
    a bad descriptor, so a lost result is an error (exit 4), not a silent success."""

    def __init__(self, name: str):
        self.name = f"<{name}>"
        self.what = {"stdout": "standard output", "stderr": "standard error"}[name]

    def write(self, text):
        raise OSError(errno.EBADF, f"{self.what} is closed")

    def flush(self):
        pass

    def isatty(self):
        return False


def _end_process(code: int) -> None:
    """End the `adcli` process now, its output flushed, without the interpreter's teardown
    (freeing every module and object: about a tenth of a small command's time). Every file
    adcli writes is closed by then, and no atexit handler or thread of its own is waiting.
    A flush that fails returns, and the usual exit reports it. (A stream closed at start
    is a _ClosedStream by then, main() makes it one: never None here.)"""
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        return
    os._exit(code)


if __name__ == "__main__":   # `python -m adcli.cli`: hand over to the one imported copy of this module
    from adcli.cli import main as imported_main

    imported_main()
