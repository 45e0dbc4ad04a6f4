"""The trust issue's robustness items: never a traceback for a user. Bad input gets one
sentence and a documented exit code (with --json one error object on stderr); the environment
(a full disk, a permission) exits 4; --output never leaves a truncated file or a temporary
behind; Ctrl-C exits 130 and SIGTERM 143 with one line, wherever they land; a closed pipe
exits 141 quietly, as cat does. In-process with CliRunner where that can show it, in a
subprocess where a real signal or a real pipe is the point."""
import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import adcli.api
import adcli.cli
from adcli.cli import cli

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
HUGE = "9" * 400


def sample(name: str) -> str:
    return str(SAMPLES / name)


def run(*args, input=None):
    return CliRunner().invoke(cli, [str(a) for a in args], input=input)


def one_line_error(result, code: int, pattern: str, kind: str | None = None) -> dict:
    """--json: exit code, nothing on stdout, exactly one JSON error object (one line) on stderr."""
    import re

    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    error = json.loads(result.stderr)["error"]
    assert error["exit_code"] == code
    if kind:
        assert error["kind"] == kind, error
    assert "\n" not in error["message"] and len(error["message"]) < 300, error["message"]
    assert re.search(pattern, error["message"]), error["message"]
    return error


def text_line(result, code: int, pattern: str) -> str:
    """Text mode: the error is the first stderr line, and the message is that one line."""
    import re

    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    first = result.stderr.split("\n")[0]
    assert re.search(pattern, first), result.stderr
    return first


@pytest.fixture
def ad(tmp_path):
    def write(text: str, name: str = "prog.ad") -> str:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return str(path)
    return write


# -- 1. graph: an output assigned inside a repeat ------------------------------------------------

def test_graph_text_of_an_output_assigned_in_a_repeat(ad):
    path = ad("""\
        input x = 1
        h = x
        repeat 2 {
          h = sin(h)
        }
        output y = h
        """)
    result = run("graph", path)
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[1] == "output y = v3, the repeat's last iteration"
    assert "stands for 2 nodes" in lines[2] and "↻ v2 (from the previous iteration)" in result.stdout
    for fmt in ("dot", "mermaid"):
        assert run("graph", path, "--format", fmt).exit_code == 0
    assert run("graph", path, "--expand").exit_code == 0


# -- 2. numbers beyond what a float or an int can hold ----------------------------------------------

@pytest.mark.parametrize("digits", [401, 5001])   # OverflowError; ValueError (int's digit limit)
def test_inputs_with_a_huge_integer(tmp_path, digits):
    path = tmp_path / "values.json"
    path.write_text('{"x1": %s}' % ("9" * digits))
    one_line_error(run("grad", sample("seed_example.ad"), "--inputs", path, "--json"), 1,
                   rf"the value of x1 holds '9+…9+' \({digits:,} characters\), a number too large for a "
                   "float64", "value")
    text_line(run("grad", sample("seed_example.ad"), "--inputs", "-", input='{"x1": [1e400]}'), 1,
              r"^error: --inputs: the value of x1 holds 1e400, a number too large")


def test_inputs_not_utf8(tmp_path):
    path = tmp_path / "values.json"
    path.write_bytes(b'{"x1": "\xff\xfe"}')
    one_line_error(run("grad", sample("seed_example.ad"), "--inputs", path, "--json"), 1,
                   r"--inputs: .*values\.json is not UTF-8 text \(byte 0xff at offset 8\)", "value")
    one_line_error(run("grad", sample("seed_example.ad"), "--inputs", "-", "--json",
                       input=b'{"x1": "\xff"}'), 1, r"standard input is not UTF-8 text", "value")
    bom = run("grad", sample("seed_example.ad"), "--inputs", "-", "--json", input='\ufeff{"x1": 1}'.encode())
    assert bom.exit_code == 0 and json.loads(bom.stdout)["inputs"]["x1"] == 1


@pytest.mark.parametrize("command", [["grad"], ["trace"], ["show"], ["graph"], ["compare", "--repeat", "1"]])
def test_set_a_huge_dim_used_as_a_value(ad, command):
    path = ad("dim n = 3\ninput x = 1.0\noutput y = x * n\n")
    one_line_error(run(command[0], path, *command[1:], "--set", f"n={HUGE}", "--json"), 2,
                   r"^--set n='9+…9+' \(400 characters\): a dim must be at most 9,223,372,036,854,775,807",
                   "usage")


@pytest.mark.parametrize("value, pattern", [
    (HUGE, r"a dim must be at most"),                 # a size: was OverflowError
    ("9" * 5001, r"\(5,001 characters\): a dim must be at most"),
    ("9223372036854775808", r"--set n=9223372036854775808: a dim must be at most"),
    ("-" + "9" * 5001, r"a dim must be positive"),
])
def test_set_a_huge_size(value, pattern):
    one_line_error(run("grad", sample("mlp.ad"), "--set", f"n={value}", "--json"), 2, pattern, "usage")


def test_scale_a_huge_value():
    one_line_error(run("compare", sample("mlp.ad"), "--scale", f"n=2,{HUGE}", "--json"), 2,
                   r"^--scale n='9+…9+' \(400 characters\): a dim must be at most", "usage")


# -- 3. option values holding a newline ----------------------------------------------------------------

@pytest.mark.parametrize("args, code, pattern", [
    (["--set", "n=3\n4"], 2, r"^--set n='3\\n4': a dim must be a whole number$"),
    (["--output", "a\nb.txt"], 2, r"^--output 'a\\nb\.txt': the file name must end in"),
    (["--inputs", "/no\nsuch.json"], 2, r"^--inputs: cannot read '/no\\nsuch\.json' \(No such file"),
    (["--wrt", "W\n1"], 2, r"there is no input named 'W\\n1'"),
    (["--direction", "W\n1=1"], 2, r"^--direction 'W\\n1': there is no input named 'W\\n1'"),
    (["--at", "b2=3\n+"], 1, r"^--at b2=3\\n\+ is not a constant expression"),
])
def test_option_values_with_a_newline_stay_on_one_line(args, code, pattern):
    base = ["grad", sample("mlp.ad"), *args]
    text_line(run(*base), code, pattern.replace("^", "^error: "))
    one_line_error(run(*base, "--json"), code, pattern)


# -- 4. --output: a full disk, an error or a signal leaves nothing behind ------------------------------

def _failing_writer(kind):
    """np.save / csv.writer stand-ins that write a little, then fail as a full disk does."""
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def save(target, array):
        with (open(target, "wb") if isinstance(target, (str, os.PathLike)) else _nonclosing(target)) as f:
            f.write(b"\x93NUMPY\x01\x00v\x00{'descr': '<f8', ")
            f.flush()
            raise kind() if isinstance(kind, type) and not issubclass(kind, OSError) else full

    class Writer:
        def __init__(self, f):
            self.f, self.rows = f, 0

        def writerow(self, row):
            self.rows += 1
            if self.rows > 1:
                self.f.flush()
                raise full
            self.f.write(",".join(map(str, row)) + "\n")

    return save, Writer


class _nonclosing:
    def __init__(self, f):
        self.f = f

    def __enter__(self):
        return self.f

    def __exit__(self, *exc):
        return False


@pytest.mark.parametrize("suffix", ["npy", "csv"])
def test_output_on_a_full_disk_leaves_nothing(tmp_path, monkeypatch, suffix):
    save, writer = _failing_writer(OSError)
    monkeypatch.setattr(np, "save", save)
    import csv
    monkeypatch.setattr(csv, "writer", writer)
    target = tmp_path / f"jac.{suffix}"
    error = one_line_error(run("grad", sample("mlp.ad"), "--output", target, "--json"), 4,
                           rf"^--output: cannot write .*jac\.{suffix} \(No space left on device\)$",
                           "environment")
    assert "None" not in error["message"]
    assert list(tmp_path.iterdir()) == []          # neither the file nor a temporary


def test_output_failure_keeps_the_previous_file(tmp_path, monkeypatch):
    target = tmp_path / "jac.npy"
    np.save(target, np.arange(3.0))
    save, _ = _failing_writer(OSError)
    monkeypatch.setattr(np, "save", save)
    assert run("grad", sample("mlp.ad"), "--output", target).exit_code == 4
    monkeypatch.undo()
    assert np.load(target).tolist() == [0.0, 1.0, 2.0]
    assert [p.name for p in tmp_path.iterdir()] == ["jac.npy"]


def test_output_written_whole_with_the_usual_permissions(tmp_path):
    target = tmp_path / "jac.npy"
    assert run("grad", sample("chain.ad"), "--output", target, "--summary").exit_code == 0
    assert np.load(target).shape == (2, 3)
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask
    assert [p.name for p in tmp_path.iterdir()] == ["jac.npy"]


def test_ctrl_c_during_the_write_leaves_nothing(tmp_path, monkeypatch):
    save, _ = _failing_writer(KeyboardInterrupt)
    monkeypatch.setattr(np, "save", save)
    result = run("grad", sample("mlp.ad"), "--output", tmp_path / "jac.npy", "--json")
    assert result.exit_code == 130, result.stderr
    assert json.loads(result.stderr) == {"error": {"kind": "interrupted", "message": "interrupted",
                                                   "exit_code": 130}}
    assert result.stdout == "" and list(tmp_path.iterdir()) == []


# -- 5. signals, in a real process -----------------------------------------------------------------------

def _python(script: str, *args, cwd=None, name="run.py", tmp_path=None):
    path = tmp_path / name
    path.write_text(textwrap.dedent(script))
    return subprocess.run([sys.executable, str(path), *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=60)


@pytest.mark.parametrize("as_json", [False, True])
def test_sigint_in_the_middle_of_a_command(tmp_path, as_json):
    done = _python("""\
        import os, signal, sys, time
        import adcli.api
        def jacobian(self, *args, **kwargs):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(30)                        # the signal lands here
        adcli.api.Program.jacobian = jacobian
        from adcli.cli import main
        main()
        """, "grad", sample("mlp.ad"), *(["--json"] if as_json else []), tmp_path=tmp_path)
    assert done.returncode == 130, done.stderr
    assert done.stdout == ""
    if as_json:
        assert json.loads(done.stderr) == {"error": {"kind": "interrupted", "message": "interrupted",
                                                     "exit_code": 130}}
    else:
        assert done.stderr == "interrupted\n"


def test_sigint_while_importing_at_start_up(tmp_path):
    """As the `adcli` console script: Ctrl-C while click is being imported."""
    done = _python("""\
        import os, signal, sys
        class Interrupt:
            def find_spec(self, name, path=None, target=None):
                if name == "click":
                    os.kill(os.getpid(), signal.SIGINT)
                return None
        sys.meta_path.insert(0, Interrupt())
        from adcli.cli import main
        sys.exit(main())
        """, "grad", sample("mlp.ad"), "--json", tmp_path=tmp_path, name="adcli")
    assert done.returncode == 130, done.stderr
    assert json.loads(done.stderr)["error"] == {"kind": "interrupted", "message": "interrupted",
                                                "exit_code": 130}


def test_sigterm_during_output_leaves_no_partial_file(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    done = _python("""\
        import os, signal, sys, time
        import numpy as np
        def save(f, array):
            f = open(f, "wb") if isinstance(f, str) else f
            f.write(b"\\x93NUMPY partial")
            f.flush()
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(30)                        # the signal lands here
        np.save = save
        from adcli.cli import main
        main()
        """, "grad", sample("mlp.ad"), "--output", out / "jac.npy", "--summary", tmp_path=tmp_path)
    assert done.returncode == 143, done.stderr
    assert done.stderr == "terminated\n" and done.stdout == ""
    assert list(out.iterdir()) == []


# -- 6. the environment: a full disk, a permission -----------------------------------------------------

def _denied(path):
    real = open

    def fake_open(file, *args, **kwargs):
        if str(file) == str(path):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(file))
        return real(file, *args, **kwargs)
    return fake_open


def test_permission_denied_is_the_environment(tmp_path, monkeypatch):
    values = tmp_path / "values.json"
    values.write_text('{"x1": 1}')
    monkeypatch.setattr(adcli.cli, "open", _denied(values), raising=False)
    one_line_error(run("grad", sample("seed_example.ad"), "--inputs", values, "--json"), 4,
                   r"--inputs: cannot read .*values\.json \(Permission denied\)", "environment")
    monkeypatch.setattr(adcli.api, "open", _denied(sample("seed_example.ad")), raising=False)
    one_line_error(run("grad", sample("seed_example.ad"), "--json"), 4,
                   r"cannot read .*seed_example\.ad.*Permission denied", "environment")


def test_output_permission_denied(tmp_path, monkeypatch):
    def save(*args):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
    monkeypatch.setattr(np, "save", save)
    one_line_error(run("grad", sample("chain.ad"), "--output", tmp_path / "jac.npy", "--json"), 4,
                   r"--output: cannot write .*jac\.npy \(Permission denied\)", "environment")
    assert list(tmp_path.iterdir()) == []


def test_missing_output_directory_is_still_usage(tmp_path):
    one_line_error(run("grad", sample("chain.ad"), "--output", tmp_path / "no" / "jac.npy", "--json"), 2,
                   r"\(No such file or directory\)", "usage")


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs Linux's /dev/full")
def test_standard_output_on_a_full_disk():
    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, "-c", "from adcli.cli import main; main()", "grad",
                               sample("seed_example.ad"), "--json"], stdout=full, stderr=subprocess.PIPE,
                              text=True, timeout=60)
    assert done.returncode == 4, done.stderr
    assert json.loads(done.stderr)["error"] == {
        "kind": "environment", "message": "cannot write the output (No space left on device)", "exit_code": 4}


# -- 7. a closed pipe --------------------------------------------------------------------------------------

@pytest.mark.parametrize("args", [
    ["grad", sample("mlp.ad"), "--set", "n=200", "--full"],       # Rich; was a silent exit 1
    ["show", sample("deep.ad"), "--set", "depth=3000"],            # one large write; was exit 0
])
def test_closed_pipe_ends_quietly_with_141(args):
    """`adcli ... | head -1`: the output is well over a pipe's 64 KiB, so the reader leaves first."""
    process = subprocess.Popen([sys.executable, "-c", "from adcli.cli import main; main()", *args],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.readline()
    process.stdout.close()
    stderr = process.stderr.read()
    process.wait(timeout=60)
    assert process.returncode == 141 and stderr == b"", stderr


# -- 8. compare --scale with --at and --inputs ---------------------------------------------------------

def test_scale_uses_at_and_inputs(ad, monkeypatch):
    path = ad("""\
        dim n = 2
        input x: vec[n]
        input c = 1.0
        output y = c * sum(x * x)
        """)
    import adcli.compare

    seen = []
    real = adcli.compare.compare

    def recording(program, **options):
        seen.append({k: v.tolist() for k, v in program.resolve_inputs(options.get("at")).items()})
        return real(program, **options)

    monkeypatch.setattr(adcli.compare, "compare", recording)
    result = run("compare", path, "--scale", "n=2,3", "--repeat", "1", "--at", "x=2", "--json")
    assert result.exit_code == 0, result.stderr
    assert seen == [{"x": [2.0, 2.0], "c": 1.0}, {"x": [2.0, 2.0, 2.0], "c": 1.0}]
    seen.clear()
    result = run("compare", path, "--scale", "n=2,3", "--repeat", "1", "--inputs", "-", "--at", "c=5",
                 "--json", input='{"x": 3, "c": 4}')   # stdin read once, for every size
    assert result.exit_code == 0, result.stderr
    assert seen == [{"x": [3.0, 3.0], "c": 5.0}, {"x": [3.0, 3.0, 3.0], "c": 5.0}]
    one_line_error(run("compare", path, "--scale", "n=2,3", "--at", "x=[1,2]", "--json"), 1,
                   r"x is vec\[2\].*vec\[3\]|does not fit", None)


# -- 9. trace --json warns about nan ----------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["forward", "reverse"])
def test_trace_json_warns_about_nan(ad, mode):
    path = ad("input x = -1.0\ny1 = x * 2\noutput y = log(y1) + x\n")
    result = run("trace", path, "--mode", mode, "--json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["kind"] == "trace"
    assert result.stderr == (f"warning: the trace holds nan or infinity: v4 = log (log(y1)) at {path}:3 "
                             "produced a non-finite value; non-finite numbers are shown as null in JSON\n")
    text = run("trace", path, "--mode", mode)
    assert "warning: the trace holds nan or infinity: v4 = log" in text.stderr


def test_trace_names_an_infinite_local_derivative(ad):
    result = run("trace", ad("input x = 0.0\noutput y = sqrt(x)\n"), "--json")
    assert result.stderr.startswith("warning: the trace holds nan or infinity: v2 = sqrt (sqrt(x)) at ")
    assert "has a non-finite local derivative" in result.stderr
    assert run("trace", sample("mlp.ad"), "--json").stderr == ""
