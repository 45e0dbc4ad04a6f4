"""Every way `adcli grad` can fail: one sentence, the right exit code (1 the
file or its values, 2 usage, never 3), a caret under the place where there is
one, and with --json exactly one {"error": {...}} object on stderr and nothing
on stdout. Also regression tests for the internal errors and hangs that
fuzzing and hand-testing found."""
import json
import os
import re
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from adcli.cli import cli

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
KINDS = {"syntax", "shape", "name", "value", "resource", "usage", "input", "environment"}


def sample(name: str) -> str:
    return str(SAMPLES / name)


def run(*args, input=None, env=None):
    return CliRunner().invoke(cli, [str(a) for a in args], input=input, env=env)


@pytest.fixture
def ad(tmp_path):
    """Write source text to a .ad file and return its path."""
    counter = iter(range(1000))

    def write(text: str, name: str | None = None) -> str:
        path = tmp_path / (name or f"prog{next(counter)}.ad")
        path.write_text(text)
        return str(path)

    return write


def one_sentence(message: str):
    assert message and "\n" not in message and "Traceback" not in message
    assert len(message) < 300, message
    assert not message.startswith("internal error")


def json_error(result, code: int, pattern: str, kind: str | None = None) -> dict:
    """The --json error contract: exit code, empty stdout, one JSON object on stderr."""
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    data = json.loads(result.stderr)
    assert set(data) == {"error"}
    error = data["error"]
    assert error["exit_code"] == code and error["kind"] in KINDS
    if kind is not None:
        assert error["kind"] == kind, error
    one_sentence(error["message"])
    assert re.search(pattern, error["message"]), error["message"]
    assert set(error) <= {"kind", "message", "exit_code", "file", "line", "column", "hint"}
    return error


def text_error(result, code: int, pattern: str) -> list:
    """Text mode: 'error: message' (after file:line:col where there is a place) on stderr."""
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.rstrip("\n").split("\n")
    assert re.search(r"(^|: )error: ", lines[0]), lines[0]
    message = lines[0].split("error: ", 1)[1]
    one_sentence(message)
    assert re.search(pattern, message), message
    return lines


def both(args, code, pattern, kind=None, input=None):
    """Check text and --json modes; returns the JSON error object."""
    text_error(run(*args, input=input), code, pattern)
    return json_error(run(*args, "--json", input=input), code, pattern, kind)


def assert_caret(lines, path, line, column, source):
    """file:line:col: error: ..., then the source line, then a caret under the column."""
    assert lines[0].startswith(f"{path}:{line}:{column}: error: "), lines[0]
    assert lines[1] == "  " + source
    assert lines[2] == "  " + " " * (column - 1) + "^"


# -- syntax ------------------------------------------------------------------------------------

def test_syntax_error_shows_place_source_caret_and_expected(ad):
    path = ad("input x = 1.0\noutput y = x * + 2 )\n")
    lines = text_error(run("grad", path), 1, r"unexpected '\)'; expected end of line")
    assert_caret(lines, path, 2, 20, "output y = x * + 2 )")
    error = json_error(run("grad", path, "--json"), 1, r"unexpected '\)'", "syntax")
    assert (error["file"], error["line"], error["column"]) == (path, 2, 20)


def test_unclosed_bracket(ad):
    path = ad("input x = 1.0\noutput y = x * (x + 1\n")
    lines = text_error(run("grad", path), 1, r"unexpected end of file \(an unclosed bracket or block\?\); "
                                             r"expected .*'\)'")
    assert lines[0].startswith(f"{path}:2:")
    assert lines[1] == "  output y = x * (x + 1" and lines[2].endswith("^")


def test_unexpected_character(ad):
    path = ad("input x = 1.0\noutput y = x $ 2\n")
    lines = text_error(run("grad", path), 1, r"unexpected character '\$'")
    assert_caret(lines, path, 2, 14, "output y = x $ 2")


def test_unclosed_block(ad):
    path = ad("input x = 1.0\nh = x\nrepeat 3 {\n  h = sin(h)\noutput y = h\n")
    both(["grad", path], 1, r"unexpected end of file.*unclosed bracket or block.*expected .*'\}'", "syntax")


def test_block_on_one_line(ad):
    path = ad("input x = 1.0\nh = x\nrepeat 3 { h = sin(h) }\noutput y = h\n")
    error = both(["grad", path], 1, r"unexpected 'h'; expected end of line", "syntax")
    assert error["line"] == 3


@pytest.mark.parametrize("source, pattern", [
    ("input x = 1.0\noutput y = sum(x, axis=1, axis=2)\n", r"keyword argument 'axis' given twice"),
    ("input x = 1.0\noutput y = sum(axis=1, x)\n", r"positional argument follows a keyword argument"),
    ("input x = 1.0 output y = x\n", r"unexpected 'output'; expected"),
    ("input x = 1.0\nreturn x\noutput y = x\n", r"return is only allowed at the end of a def"),
    ("def f(a) {\n  b = a\n}\ninput x = 1.0\noutput y = f(x)\n", r"def f must end with `return"),
    ("def f(a) {\n  dim q = 2\n  return a\n}\ninput x = 1.0\noutput y = f(x)\n",
     r"'dim' is not allowed inside def f"),
    ("input x = 1.0\nh = x\nrepeat 2 {\n  output z = h\n}\noutput y = h\n", r"'output' is not allowed inside repeat"),
    ("input x = 1.0\nh = x\nrepeat 0 {\n  input z = 1\n}\noutput y = h\n", r"'input' is not allowed inside repeat"),
])
def test_statement_errors(ad, source, pattern):
    error = both(["grad", ad(source)], 1, pattern)
    assert error["line"] >= 1 and error["column"] >= 1


# -- names, shapes, functions ------------------------------------------------------------------

def test_unknown_name(ad):
    path = ad("input x = 1.0\noutput y = x * z\n")
    lines = text_error(run("grad", path), 1, r"name 'z' is not defined")
    assert_caret(lines, path, 2, 16, "output y = x * z")
    json_error(run("grad", path, "--json"), 1, r"'z' is not defined", "name")


def test_shape_mismatch_names_both_shapes(ad):
    path = ad("input A: mat[3, 4] = ones\ninput v: vec[5] = ones\noutput y = A @ v\n")
    lines = text_error(run("grad", path), 1, r"mat\[3, 4\] @ vec\[5\]")
    assert_caret(lines, path, 3, 12, "output y = A @ v")
    json_error(run("grad", path, "--json"), 1, r"mat\[3, 4\].*vec\[5\]", "shape")


@pytest.mark.parametrize("source, pattern", [
    ("input a: vec[3] = ones\ninput b: vec[4] = ones\noutput y = a + b\n", r"vec\[3\].*vec\[4\]"),
    ("input x: vec[3] = [1, 2]\noutput y = x\n", r"value of x is vec\[2\].*does not fit its type vec\[3\]"),
    ("input x: vec[3] = ones\noutput y = x[5]\n", r"index 5 is out of range .* length 3"),
    ("input x: vec[3] = ones\noutput y = x[0, 1]\n", r"2 indices for a vec\[3\], which has 1 axis"),
    ("input x = 1.0\noutput y = x[0]\n", r"a scalar cannot be indexed"),
    ("input x: vec[3] = ones\noutput y = reshape(x, 2, 2)\n", r"cannot reshape vec\[3\].*mat\[2, 2\]"),
    ("input x = 1.0\noutput y = []\n", r"an empty list has no shape"),
    ("const c = [[1, 2], [3]]\ninput x = 1.0\noutput y = x\n", r"rows of this list have different lengths"),
])
def test_shape_errors(ad, source, pattern):
    both(["grad", ad(source)], 1, pattern, "shape")


def test_unknown_function(ad):
    path = ad("input x = 1.0\noutput y = foo(x)\n")
    lines = text_error(run("grad", path), 1, r"unknown function 'foo'")
    assert_caret(lines, path, 2, 12, "output y = foo(x)")
    json_error(run("grad", path, "--json"), 1, r"unknown function 'foo'", "name")


@pytest.mark.parametrize("source, pattern", [
    ("input x = 1.0\noutput y = sin(x, x)\n", r"sin takes 1 argument, got 2"),
    ("input x = 1.0\noutput y = maximum(x)\n", r"maximum takes 2 arguments, got 1"),
    ("def f(a) = a * 2\ninput x = 1.0\noutput y = f(x, x)\n", r"f takes 1 argument \(a\), got 2"),
    ("def g(a, b) = a * b\ninput x = 1.0\noutput y = g(x)\n", r"g takes 2 arguments \(a, b\), got 1"),
    ("input x: vec[3] = ones\noutput y = sum(x, axes=0)\n", r"sum has no argument 'axes'"),
])
def test_wrong_argument_counts(ad, source, pattern):
    error = both(["grad", ad(source)], 1, pattern)
    assert error["line"] in (2, 3)


@pytest.mark.parametrize("source, pattern", [
    ("input x = 1.0\noutput y = sine(x)\n", r"^unknown function 'sine'; did you mean 'sin'\?$"),
    ("def layer(a) = a\ninput x = 1.0\noutput y = layr(x)\n", r"unknown function 'layr'; did you mean 'layer'\?"),
    ("input xx = 1.0\noutput y = x * 2\n", r"^name 'x' is not defined; did you mean 'xx'\?$"),
])
def test_close_names_are_suggested(ad, source, pattern):
    both(["grad", ad(source)], 1, pattern, "name")


@pytest.mark.parametrize("source, pattern", [
    ("input x: vec[2] = zeros(1)\noutput y = x\n", r"^zeros takes no positional arguments, got 1$"),
    ("input x: vec[2] = full(1, 2)\noutput y = x\n", r"^full takes 1 positional argument \(value\), got 2$"),
    ("input x: vec[2] = linspace(0)\noutput y = x\n", r"^linspace needs stop$"),
    ("input x: vec[2] = randn(sead=1)\noutput y = x\n", r"^randn has no argument 'sead'$"),
    # without a type randn(...) is a scalar (tests/test_resources.py); inside a list it has no shape
    ("input x = [randn(seed=1), 2]\noutput y = x * 2\n", r"randn\(\.\.\.\) needs a declared type to know its shape"),
    ("input x = 1.0\noutput y = x * randn(seed=1)\n", r"^randn makes constant data, which takes its shape "
     r"from a declared type: declare it as an input or const, e.g. `const h: vec\[3\] = randn\(seed=1\)`"),
    ("input x: vec[3] = 1\nh = zeros\noutput y = sum(h + x)\n", r"^zeros makes constant data, which takes its "
     r"shape from a declared type: declare it as an input or const, e.g. `const h: vec\[3\] = zeros`, and use "
     r"its name$"),
    ("input x: vec[3] = 1\nh = zeros()\noutput y = sum(h + x)\n", r"^zeros makes constant data"),
    ("input x = 1.0\noutput y = x\nrepeat -1 {\n}\n", r"a repeat count must not be negative, got -1"),
    ("dim n = 0\ninput x = 1.0\noutput y = x\n", r"dim n must be a positive integer, got 0"),
    ("input x: vec[1.5] = ones\noutput y = x\n", r"a size must be an integer, got 1\.5"),
    ("input x: vec[y] = ones\noutput y = x\n", r"'y' is not a dim; a size must be built from numbers and dims"),
])
def test_constant_data_and_integer_errors(ad, source, pattern):
    both(["grad", ad(source)], 1, pattern)


def test_the_constant_data_hint_is_a_valid_program():
    """`h = zeros` is refused with an example; that example, followed, builds and runs."""
    import adcli
    program = adcli.loads("input x: vec[3] = 1\nconst h: vec[3] = zeros\noutput y = sum(h + x)\n")
    assert program.evaluate()["y"] == 3.0


def test_recursion_a_def_calling_itself(ad):
    path = ad("def f(a) = f(a) + 1\ninput x = 1.0\noutput y = f(x)\n")
    lines = text_error(run("grad", path), 1, r"def f calls itself; recursion is not supported")
    assert_caret(lines, path, 1, 12, "def f(a) = f(a) + 1")
    json_error(run("grad", path, "--json"), 1, r"recursion", "name")


def test_recursion_a_def_calling_a_later_def(ad):
    path = ad("def f(a) = g(a)\ndef g(a) = f(a)\ninput x = 1.0\noutput y = f(x)\n")
    lines = text_error(run("grad", path), 1, r"def f calls g, which is defined after it")
    assert_caret(lines, path, 1, 12, "def f(a) = g(a)")


@pytest.mark.parametrize("source, pattern", [
    ("input x = 1.0\ninput x = 2.0\noutput y = x\n", r"'x' is already declared"),
    ("input x = 1.0\nsin = 2\noutput y = x\n", r"'sin' is a built-in function and cannot be assigned"),
    ("input x = 1.0\noutput y = x\noutput y = x\n", r"output 'y' is declared twice"),
    ("input x = 1.0\noutput y = x.foo\n", r"unknown attribute \.foo"),
    ("def f(a) = a\ninput x = 1.0\noutput y = f\n", r"'f' is a function; call it as f\(\.\.\.\)"),
    ("input x = 1.0\nh = x * 2\ndef f(a) = a * h\noutput y = f(x)\n", r"'h' is not visible inside def f"),
    ("input x = 1.0\noutput z\n", r"output 'z' names nothing defined above"),
])
def test_name_errors(ad, source, pattern):
    both(["grad", ad(source)], 1, pattern, "name")


def test_no_output(ad):
    both(["grad", ad("input x = 1.0\n")], 1, r"declares no output", "value")
    both(["grad", ad("")], 1, r"declares no output", "value")


def test_no_input(ad):
    both(["grad", ad("output y = 2 * 3\n")], 1, r"no input to differentiate", "value")


# -- input values -----------------------------------------------------------------------------

def test_missing_input_value(ad):
    path = ad("input x\noutput y = x * x\n")
    lines = text_error(run("grad", path), 1, r"input x has no value; give one with --at x=\.\.\. or --inputs")
    assert_caret(lines, path, 1, 1, "input x")
    json_error(run("grad", path, "--json"), 1, r"input x has no value", "value")
    assert run("grad", path, "--at", "x=3").exit_code == 0


def test_malformed_at_value_points_at_the_option():
    args = ["grad", sample("chain.ad"), "--at", "x=[1,2]"]
    lines = text_error(run(*args), 1, r"the value of x is vec\[2\], which does not fit its type vec\[3\]")
    assert lines[1] == "  --at x=[1,2]" and lines[2] == "  " + " " * len("--at x=") + "^"
    error = json_error(run(*args, "--json"), 1, r"vec\[2\].*vec\[3\]", "shape")
    assert error["file"] == "--at x"


@pytest.mark.parametrize("option, pattern, kind", [
    ("x1=foo(", r"--at x1=foo\( is not a constant expression: unexpected end of the value; expected", "value"),
    ("x1=1)", r"not a constant expression: unexpected '\)'", "value"),
    ("x1=y", r"'y' is not a dim or const; initial values are constant data", "name"),
    ("x1=sin(", r"not a constant expression", "value"),
    ("x1=[[1, 2], [3]]", r"rows of this list have different lengths", "shape"),
])
def test_bad_at_values(option, pattern, kind):
    both(["grad", sample("seed_example.ad"), "--at", option], 1, pattern, kind)


@pytest.mark.parametrize("option", ["x1", "x1=", "=2", " = "])
def test_at_without_name_and_value_is_usage(option):
    both(["grad", sample("seed_example.ad"), "--at", option], 2, r"--at expects NAME=VALUE", "usage")


def test_at_unknown_input_is_usage():
    both(["grad", sample("seed_example.ad"), "--at", "zz=1"], 2, r"--at zz: there is no input or const named 'zz' \(inputs: x1, x2\)")


@pytest.mark.parametrize("text, pattern", [
    ("{not json", r"--inputs: standard input is not valid JSON \(.* at line 1, column \d+\)"),
    ("", r"not valid JSON"),
    ("[1, 2]", r"must hold a JSON object of input values"),
    ('{"x": [1, 2]}', r"value given for input x is vec\[2\], but x is vec\[3\]"),
    ('{"x": [[1], [2, 3]]}', r"value of x is not a number or a \(nested\) list of numbers"),
    ('{"x": null}', r"value of x is not a number"),
    ('{"x": [1, true, 3]}', r"value of x is not a number"),
    ('{"x": "1.5"}', r"value of x is not a number"),
    ('{"x": ' + "[" * 5000 + "]" * 5000 + "}", r"nests its lists too deeply"),
])
def test_malformed_inputs_from_stdin(text, pattern):
    both(["grad", sample("chain.ad"), "--inputs", "-"], 1, pattern, "value", input=text)


def test_malformed_inputs_file(tmp_path):
    path = tmp_path / "values.json"
    path.write_text('{"x": [1, 2, 3],}')
    error = both(["grad", sample("chain.ad"), "--inputs", path], 1, r"is not valid JSON", "value")
    assert str(path) in error["message"]


def test_inputs_unknown_name_and_missing_file(tmp_path):
    both(["grad", sample("chain.ad"), "--inputs", "-"], 2, r"--inputs z: there is no input or const named 'z'", input='{"z": 1}')
    both(["grad", sample("chain.ad"), "--inputs", tmp_path / "nope.json"], 2, r"--inputs: cannot read")


# -- options -------------------------------------------------------------------------------------

def test_unknown_wrt():
    both(["grad", sample("seed_example.ad"), "--wrt", "zz"], 2, r"--wrt zz: there is no input named 'zz' \(inputs: x1, x2\)", "usage")


def test_summary_and_full_conflict():
    both(["grad", sample("seed_example.ad"), "--summary", "--full"], 2, r"--summary .* --full .* conflict",
         "usage")


def test_empty_wrt():
    both(["grad", sample("seed_example.ad"), "--wrt", ","], 2, r"--wrt names no input", "usage")


def test_unknown_set_dim():
    both(["grad", sample("mlp.ad"), "--set", "q=3"], 2,
         r"--set names q, but the file has no such dim \(dims: n, h, batch\)", "usage")


@pytest.mark.parametrize("option, pattern", [
    ("n=x", r"--set n=x: a dim must be a whole number"),
    ("n=0", r"a dim must be positive"),
    ("n", r"--set expects NAME=VALUE"),
])
def test_bad_set_values(option, pattern):
    both(["grad", sample("mlp.ad"), "--set", option], 2, pattern, "usage")


def test_missing_file(tmp_path):
    missing = tmp_path / "nope.ad"
    error = both(["grad", missing], 2, r"no such file: .*nope\.ad", "usage")
    assert "line" not in error


def test_directory_instead_of_a_file(tmp_path):
    both(["grad", tmp_path], 2, r"is a directory", "usage")


def test_not_utf8(tmp_path):
    path = tmp_path / "binary.ad"
    path.write_bytes(b"\xff\xfe\x00input x = 1\n")
    both(["grad", path], 2, r"is not a UTF-8 text file", "usage")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root can read anything")
def test_unreadable_file(tmp_path):
    path = tmp_path / "secret.ad"
    path.write_text("input x = 1.0\noutput y = x\n")
    path.chmod(0)
    try:
        both(["grad", path], 4, r"cannot read .*secret\.ad", "environment")   # exit 4: the environment
    finally:
        path.chmod(0o600)


@pytest.mark.parametrize("limit, pattern", [
    ("lots", r"--memory-limit 'lots' is not a size such as 200MB or 2GiB"),
    ("12 parsecs", r"is not a size"),
    ("-5MB", r"is not a size"),
    ("1e400", r"--memory-limit '1e400' is too large to be a size"),
])
def test_bad_memory_limit(limit, pattern):
    both(["grad", sample("seed_example.ad"), "--memory-limit", limit], 2, pattern, "usage")


def test_direction_conflicts_with_reverse_mode():
    both(["grad", sample("sensitivity.ad"), "--direction", "k=[1,0]", "--mode", "reverse"], 2,
         r"--direction computes a JVP in forward mode; it conflicts with --mode reverse", "usage")


def test_cotangent_conflicts_with_forward_mode():
    both(["grad", sample("mlp.ad"), "--cotangent", "loss=1", "--mode", "forward"], 2,
         r"--cotangent computes a VJP in reverse mode; it conflicts with --mode forward", "usage")


def test_direction_and_cotangent_together():
    both(["grad", sample("seed_example.ad"), "--direction", "x1=1", "--cotangent", "f=1"], 2,
         r"cannot be combined", "usage")


def test_direction_with_wrt():
    both(["grad", sample("sensitivity.ad"), "--direction", "k=[1,0]", "--wrt", "k"], 2,
         r"--wrt does not apply to --direction", "usage")


@pytest.mark.parametrize("option, pattern", [
    (["--direction", "zz=1"], r"--direction zz: there is no input named 'zz' \(inputs: x1, x2\)"),
    (["--direction", "f=1"], r"no input named 'f'"),
    (["--cotangent", "x1=1"], r"no output named 'x1'"),
])
def test_direction_and_cotangent_names(option, pattern):
    both(["grad", sample("seed_example.ad"), *option], 2, pattern, "usage")


def test_direction_of_the_wrong_shape():
    args = ["grad", sample("chain.ad"), "--direction", "x=[1,2]"]
    lines = text_error(run(*args), 1, r"value of x is vec\[2\], which does not fit its type vec\[3\]")
    assert lines[1] == "  --direction x=[1,2]"


@pytest.mark.parametrize("target", ["jac.txt", "jac", "jac.npy.gz"])
def test_output_with_a_bad_extension(tmp_path, target):
    both(["grad", sample("chain.ad"), "--output", tmp_path / target], 2,
         r"--output .*: the file name must end in \.npy or \.csv", "usage")
    assert not (tmp_path / target).exists()


def test_output_into_a_missing_directory(tmp_path):
    both(["grad", sample("chain.ad"), "--output", tmp_path / "no" / "jac.npy"], 2,
         r"--output: cannot write .*\(No such file or directory\)", "usage")


@pytest.mark.parametrize("args, pattern", [
    (["grad", "SAMPLE", "--mode", "sideways"], r"invalid value for '--mode': 'sideways' is not one of"),
    (["grad", "SAMPLE", "--frobnicate"], r"no such option '--frobnicate'"),
    (["grad"], r"missing argument 'FILE'"),
    (["grad", "SAMPLE", "--chunk", "0"], r"invalid value for '--chunk'"),
    (["grad", "SAMPLE", "--chunk", "many"], r"invalid value for '--chunk'"),
    (["grad", "SAMPLE", "--dtype", "float16"], r"invalid value for '--dtype'"),
    (["grad", "SAMPLE", "--node-limit", "0"], r"invalid value for '--node-limit'"),
    (["grad", "SAMPLE", "--at"], r"option '--at' requires an argument"),
    (["frobnicate"], r"no such command 'frobnicate'"),
])
def test_click_usage_errors(args, pattern):
    args = [sample("seed_example.ad") if a == "SAMPLE" else a for a in args]
    text = run(*args)
    lines = text_error(text, 2, pattern)
    assert len(lines) == 1 or (len(lines) == 2 and lines[1].startswith("Try '") and "--help" in lines[1])
    json_error(run(args[0], "--json", *args[1:]), 2, pattern, "usage")


def test_backend_that_is_not_available():
    pytest.importorskip("numpy")
    try:
        import cupy  # noqa: F401
        pytest.skip("CuPy is installed")
    except ImportError:
        pass
    both(["grad", sample("seed_example.ad"), "--backend", "cupy"], 1, r"cupy backend needs CuPy")


# -- limits -----------------------------------------------------------------------------------

def test_memory_limit_too_small_for_one_direction():
    # 4 KB holds the 1×353 Jacobian (2.8 KB) but not a sweep's own bookkeeping
    error = both(["grad", sample("mlp.ad"), "--memory-limit", "4KB"], 1,
                 r"needs about .* even one direction at a time, over the memory limit of 4\.0 KB", "resource")
    assert "--memory-limit" in error["hint"]


def test_memory_limit_too_small_in_forward_mode():
    both(["grad", sample("mlp.ad"), "--memory-limit", "4KB", "--mode", "forward"], 1,
         r"forward mode needs about", "resource")


def test_jacobian_larger_than_the_memory_limit(ad):
    path = ad("input x: vec[100000] = ones\noutput y = 2 * x\n")
    error = both(["grad", path, "--memory-limit", "1GB"], 1,
                 r"the 100,000×100,000 Jacobian alone needs 80\.0 GB, over the memory limit of 1\.0 GB",
                 "resource")
    assert "--direction" in error["hint"]
    assert run("grad", path, "--direction", "x=1", "--summary").exit_code == 0


def test_node_limit_is_quick_and_one_sentence(ad):
    # a body that changes a carried value's shape cannot stay a loop: unrolled, past the limit
    path = ad("input x: vec[1] = 1.0\nh = x\nrepeat 1000000 {\n    h = concat(h, x)\n}\noutput y = sum(h)\n")
    start = time.perf_counter()
    result = run("grad", path)
    assert time.perf_counter() - start < 20
    lines = text_error(result, 1, r"the unrolled program exceeds the node limit of 200,000 nodes")
    assert lines[0].startswith(f"{path}:4:")
    assert any(line.startswith("hint: ") and "--node-limit" in line for line in lines)
    error = json_error(run("grad", path, "--json", "--node-limit", "1000"), 1,
                       r"exceeds the node limit of 1,000 nodes", "value")
    assert error["line"] == 4


def test_node_limit_option_lets_a_program_through(ad):
    # (a growing value: the repeat is unrolled, never a loop)
    path = ad("input x: vec[1] = 1.0\nh = x\nrepeat 300 {\n    h = concat(sin(h), x)\n}\noutput y = sum(h)\n")
    json_error(run("grad", path, "--node-limit", "100", "--json"), 1, r"node limit of 100 nodes")
    assert run("grad", path, "--node-limit", "1000", "--summary").exit_code == 0


# -- regressions: internal errors, hangs and crashes found by fuzzing and by hand -----------------

@pytest.mark.parametrize("source, pattern", [
    # 1e400 is inf: int(inf) raised OverflowError (exit 3)
    ("dim n = 1e400\ninput x = 1.0\noutput y = x\n", r"a dim must be an integer, got inf"),
    ("input x: vec[3] = ones\noutput y = x[1e400]\n", r"an index must be an integer, got inf"),
    ("input x: vec[3] = ones\noutput y = sum(x, axis=1e400)\n", r"an axis must be an integer, got inf"),
    ("input x = 1.0\noutput y = reshape(x, 1e400)\n", r"a size must be an integer, got inf"),
    ("input x: vec[3] = randn(seed=1e400)\noutput y = x\n", r"seed must be a non-negative integer, got inf"),
    # 2^-1 is 0.5: an IndexError (exit 3) when used as an index
    ("input x: vec[3] = ones\noutput y = x[2^-1]\n", r"an index: 2 \^ -1 is not a whole number"),
    # 10^10^10 computed a ten-billion-digit integer (a hang)
    ("dim n = 10^10^10\ninput x = 1.0\noutput y = x\n", r"a dim: 10 \^ 10000000000 is too large"),
    ("dim n = 3\ninput x: vec[n^100] = ones\noutput y = x\n", r"a size: 3 \^ 100 is too large"),
    ("input x: vec[2^40 * 2^40] = ones\noutput y = x\n", r"a size is too large"),
    # an empty list made zero-size data, and a ZeroDivisionError (exit 3) later
    ("input x = []\noutput y = sum(x)\n", r"an empty list has no shape"),
    ("input x = [[]]\noutput y = x\n", r"an empty list has no shape"),
    ("const c = []\ninput x = 1.0\noutput y = x * c\n", r"an empty list has no shape"),
])
def test_bad_integers_and_empty_data(ad, source, pattern):
    both(["grad", ad(source)], 1, pattern)


@pytest.mark.parametrize("source", [
    # a body that changes nothing: 10^12 iterations of nothing used to run (nearly) forever
    "input x = 1.0\nh = x\nrepeat 1000000000000 {\n}\noutput y = h\n",
    "input x = 1.0\nh = x\nrepeat 1000000000000 {\n  h = h\n}\noutput y = h\n",
    "input x = 1.0\nh = x\nrepeat 1000000000000 {\n  g = 2\n  h = h\n}\noutput y = h\n",
])
def test_repeats_that_change_nothing_stop_early(ad, source):
    start = time.perf_counter()
    result = run("grad", ad(source), "--json")
    assert result.exit_code == 0, result.output
    assert time.perf_counter() - start < 10
    assert json.loads(result.stdout)["jacobian"] == [[1.0]]


def test_repeat_that_only_shuffles_names_is_refused(ad):
    # swapping two names never adds a node, so the node limit never stopped it (a hang)
    path = ad("input x = 1.0\na = x\nb = x * 2\nrepeat 1000000000000 {\n  t = a\n  a = b\n  b = t\n}\n"
              "output y = a\n")
    error = both(["grad", path, "--node-limit", "1000"], 1,
                 r"the unrolled repeats run more than 10,000 statements", "value")
    assert error["line"] == 4
    # an even count of swaps within the limits still works
    path = ad("input x = 1.0\na = x\nb = x * 2\nrepeat 4 {\n  t = a\n  a = b\n  b = t\n}\noutput y = a\n")
    assert json.loads(run("grad", path, "--json").stdout)["jacobian"] == [[1.0]]


@pytest.mark.parametrize("source, pattern", [
    # NumPy raised MemoryError / "Maximum allowed dimension exceeded" (exit 3), or the OS killed it
    ("input x: vec[10^15]\noutput y = x\n", r"input x is vec\[1000000000000000\]: 1,000,000,000,000,000 "
                                            r"numbers \(8,000\.0 TB\), over half of the available memory"),
    ("input x: vec[10^15] = zeros\noutput y = sum(x)\n", r"input x is vec\[1000000000000000\]"),
    ("const c: mat[10^7, 10^7] = randn(seed=1)\ninput x = 1.0\noutput y = x\n", r"const c is mat\[10000000, "),
    ("input x: vec[10000000]\noutput y = outer(x, x)\n", r"this value is mat\[10000000, 10000000\]"),
])
def test_data_too_big_for_memory(ad, source, pattern):
    error = both(["grad", ad(source)], 1, pattern, "resource")
    assert "--set" in error["hint"]


def test_data_too_big_in_all(ad, monkeypatch):
    # each input fits on its own; together they do not
    import adcli.api

    monkeypatch.setattr(adcli.api, "default_memory_limit", lambda *args, **kwargs: 10**9)
    source = "".join(f"input x{i}: vec[50000000]\n" for i in range(3)) + "output y = x0\n"
    error = both(["grad", ad(source)], 1, r"^input x2 is vec\[50000000\]: 50,000,000 numbers \(400\.0 MB\), "
                 r"and the file's data 1\.2 GB in all, over half of the available memory \(1\.0 GB\)$", "resource")
    assert error["line"] == 3


def test_set_to_an_absurd_size():
    both(["grad", sample("mlp.ad"), "--set", "n=10000000000000"], 1, r"over half of the available memory",
         "resource")


def test_deeply_nested_expressions(ad):
    # the Lark transformer and the builder recursed: RecursionError (exit 3)
    long_sum = "input x = 1.0\noutput y = x" + " + x" * 2000 + "\n"
    data = json.loads(run("grad", ad(long_sum), "--json").stdout)
    assert data["jacobian"] == [[2001.0]]
    deep = "input x = 1.0\noutput y = " + "sin(" * 8000 + "x" + ")" * 8000 + "\n"
    error = both(["grad", ad(deep)], 1, r"this statement nests expressions more deeply than adcli can follow")
    assert error["line"] == 2 and "split" in error["hint"]


def test_internal_errors_are_one_sentence(monkeypatch):
    """A bug in adcli: exit 3, one sentence and a hint to rerun with --debug, which shows the traceback."""
    import adcli.api

    def broken(*args, **kwargs):
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(adcli.api.Program, "jacobian", broken)
    result = run("grad", sample("seed_example.ad"), "--json")
    assert result.exit_code == 3 and result.stdout == ""
    error = json.loads(result.stderr)["error"]
    assert error["kind"] == "internal" and "simulated bug" in error["message"]
    assert "--debug" in error["hint"] and "Traceback" not in result.stderr
    debug = run("grad", sample("seed_example.ad"), "--debug")
    assert debug.exit_code == 3 and "Traceback" in debug.stderr and "simulated bug" in debug.stderr


def test_memory_error_is_not_an_internal_error(monkeypatch):
    import adcli.api

    def exhausted(*args, **kwargs):
        raise MemoryError()

    monkeypatch.setattr(adcli.api.Program, "jacobian", exhausted)
    json_error(run("grad", sample("seed_example.ad"), "--json"), 1, r"ran out of memory", "resource")


def test_bare_adcli_prints_the_help():
    # click >= 8.2 raises NoArgsIsHelpError; it used to come out as "error: usage: adcli ..."
    result = run()
    assert result.exit_code in (0, 2)
    text = result.stderr or result.stdout
    assert re.match(r"Usage: \S+ \[OPTIONS\] COMMAND", text) and "grad" in text and "error:" not in text
