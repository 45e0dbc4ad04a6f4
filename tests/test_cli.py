"""The `adcli grad` command end to end, through click's CliRunner: the README's
commands, the JSON document's exact keys, auto mode's one-line reason, NaN
reporting, NO_COLOR, memory-driven chunking and saved Jacobians."""
import csv
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from adcli.cli import cli

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"

TOP_KEYS = {"kind", "file", "mode", "mode_requested", "mode_note", "chunk_note", "backend", "device",
            "dtype", "outputs", "wrt", "value", "jacobian", "rows", "columns", "cost", "inputs",
            "consts"}
EXTRA_KEY = {"jacobian": "blocks", "jvp": "tangent", "vjp": "cotangent"}
COST_KEYS = {"passes", "sweeps", "primal_sweeps", "chunk", "mults", "flops", "cached_values",
             "cached_inputs", "peak_live_values", "peak_bytes", "time_s", "ops", "values_moved",
             "gemm_flops", "predicted", "checkpoints", "recomputed_steps"}
ANSI = re.compile(r"\x1b\[")


def sample(name: str) -> str:
    return str(SAMPLES / name)


def run(*args, input=None, env=None):
    return CliRunner().invoke(cli, [str(a) for a in args], input=input, env=env)


def ok_json(*args, input=None) -> dict:
    """Run with --json; exit 0, stdout exactly one JSON object with the documented keys."""
    result = run(*args, "--json", input=input)
    assert result.exit_code == 0, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert result.stdout.endswith("\n") and result.stdout.count("\n") == 1
    data = json.loads(result.stdout)
    check_schema(data)
    return data


def check_schema(data: dict):
    assert set(data) == TOP_KEYS | {EXTRA_KEY[data["kind"]]}
    cost = data["cost"]
    assert set(cost) == COST_KEYS
    assert set(cost["mults"]) == {"primal", "derivative"}
    assert set(cost["flops"]) == {"primal", "derivative"}
    # traced: the run that measured peak_bytes, when a fast one was timed again untraced
    # compile: the run's plans were made first (the first run of its kind in the process)
    assert {"parse", "build", "sweeps"} <= set(cost["time_s"]) <= {"parse", "build", "sweeps", "traced",
                                                                    "compile"}
    assert set(cost["predicted"]) == {"time_s", "peak_bytes"}
    for key in ("passes", "sweeps", "primal_sweeps", "chunk", "cached_values", "cached_inputs",
                "peak_live_values"):
        assert isinstance(cost[key], int) and cost[key] >= 0, key
    jac = data["jacobian"]                      # always 2-D, m × n
    assert isinstance(jac, list) and all(isinstance(row, list) for row in jac)
    assert len(jac) == len(data["rows"]) and all(len(row) == len(data["columns"]) for row in jac)
    assert data["mode"] in ("forward", "reverse")
    assert data["mode_requested"] in ("auto", "forward", "reverse")


# -- the README's commands ------------------------------------------------------------------------

def test_seed_example_reverse_text():
    result = run("grad", sample("seed_example.ad"), "--mode", "reverse")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "6.909297427" in out and "2.583853163" in out
    assert "reverse" in out and "passes" in out and "Jacobian" in out
    assert result.stderr == ""


def test_seed_example_reverse_json_values():
    data = ok_json("grad", sample("seed_example.ad"), "--mode", "reverse")
    assert data["kind"] == "jacobian" and data["mode"] == "reverse" and data["mode_requested"] == "reverse"
    assert data["mode_note"] is None and data["chunk_note"] is None
    assert data["value"]["f"] == pytest.approx(6.909297426825682, abs=1e-14)
    assert data["jacobian"] == [[pytest.approx(2.5838531634528574, abs=1e-14), pytest.approx(2.0)]]
    assert data["rows"] == ["f"] and data["columns"] == ["x1", "x2"]
    assert data["outputs"] == {"f": []} and data["wrt"] == ["x1", "x2"]
    assert data["blocks"]["f"]["x1"] == pytest.approx(2.5838531634528574)
    assert data["inputs"] == {"x1": 2.0, "x2": 3.0}
    assert data["cost"]["passes"] == 1 and data["cost"]["primal_sweeps"] == 1
    assert data["backend"] == "numpy" and data["dtype"] == "float64"


def test_mlp_forward_passes_equal_the_parameter_count():
    data = ok_json("grad", sample("mlp.ad"), "--mode", "forward", "--set", "n=200")
    params = 200 * 16 + 16 + 16 + 1           # W1, b1, w2, b2
    assert data["cost"]["passes"] == params
    assert len(data["columns"]) == params and data["rows"] == ["loss"]
    assert data["mode"] == "forward" and data["cost"]["cached_values"] == 0
    # blocks come shaped output-shape + input-shape: a gradient is shaped like its input
    assert np.shape(data["blocks"]["loss"]["W1"]) == (200, 16)
    assert np.shape(data["blocks"]["loss"]["b1"]) == (16,)
    assert np.shape(data["blocks"]["loss"]["b2"]) == ()
    assert data["columns"][:3] == ["W1[0,0]", "W1[0,1]", "W1[0,2]"]
    assert "W1[2,0]" in data["columns"] and data["columns"][-1] == "b2"


def test_inputs_from_standard_input():
    data = ok_json("grad", sample("chain.ad"), "--inputs", "-", input='{"x": [1, 2, 3]}')
    assert data["inputs"]["x"] == [1.0, 2.0, 3.0]
    jac = np.array(data["jacobian"])
    assert jac.shape == (2, 3)
    # y is linear in x: y = J x
    assert np.allclose(jac @ np.array([1.0, 2.0, 3.0]), data["value"]["y"])
    assert data["rows"] == ["y[0]", "y[1]"] and data["columns"] == ["x[0]", "x[1]", "x[2]"]


def test_inputs_from_a_file(tmp_path):
    values = tmp_path / "values.json"
    values.write_text('{"x1": 1.5}')
    data = ok_json("grad", sample("seed_example.ad"), "--inputs", values)
    assert data["inputs"] == {"x1": 1.5, "x2": 3.0}
    assert data["value"]["f"] == pytest.approx(1.5 * 3 + math.sin(1.5))


def test_at_over_inputs_over_defaults(tmp_path):
    values = tmp_path / "values.json"
    values.write_text('{"x1": 1.5, "x2": 4}')
    data = ok_json("grad", sample("seed_example.ad"), "--inputs", values, "--at", "x2=5")
    assert data["inputs"] == {"x1": 1.5, "x2": 5.0}


def test_at_and_wrt():
    data = ok_json("grad", sample("seed_example.ad"), "--at", "x1=2", "--at", "x2=3", "--wrt", "x1")
    assert data["wrt"] == ["x1"] and data["columns"] == ["x1"]
    assert data["jacobian"] == [[pytest.approx(3 + math.cos(2.0))]]
    assert set(data["blocks"]["f"]) == {"x1"}


def test_wrt_comma_separated_keeps_declaration_order():
    data = ok_json("grad", sample("mlp.ad"), "--wrt", "b2,b1", "--mode", "reverse")
    assert data["wrt"] == ["b1", "b2"]
    assert len(data["columns"]) == 17


def test_at_takes_a_constant_expression():
    data = ok_json("grad", sample("chain.ad"), "--at", "x=randn(seed=4)")
    expected = np.random.default_rng(4).standard_normal(3)
    assert np.allclose(data["inputs"]["x"], expected)


def test_cotangent_is_one_reverse_pass():
    data = ok_json("grad", sample("mlp.ad"), "--cotangent", "loss=1")
    assert data["kind"] == "vjp" and data["mode"] == "reverse"
    assert data["cost"]["passes"] == 1 and data["cost"]["sweeps"] == 1
    assert set(data["cotangent"]) == {"W1", "b1", "w2", "b2"}
    assert np.shape(data["cotangent"]["W1"]) == (20, 16)
    assert np.shape(data["jacobian"]) == (1, 353) and data["rows"] == ["cotangent"]
    # with u = 1 the VJP of a scalar loss is its gradient
    full = ok_json("grad", sample("mlp.ad"), "--mode", "reverse")
    assert np.allclose(data["jacobian"], full["jacobian"])
    assert np.allclose(data["cotangent"]["W1"], full["blocks"]["loss"]["W1"])


def test_cotangent_with_wrt():
    data = ok_json("grad", sample("mlp.ad"), "--cotangent", "loss=2", "--wrt", "b2")
    assert set(data["cotangent"]) == {"b2"} and np.shape(data["jacobian"]) == (1, 1)


def test_direction_is_one_forward_pass():
    data = ok_json("grad", sample("sensitivity.ad"), "--direction", "k=[1,0]")
    assert data["kind"] == "jvp" and data["mode"] == "forward"
    assert data["cost"]["passes"] == 1 and data["cost"]["sweeps"] == 1
    assert np.shape(data["tangent"]["y"]) == (200,)
    assert np.shape(data["jacobian"]) == (200, 1) and data["columns"] == ["direction"]
    full = ok_json("grad", sample("sensitivity.ad"), "--mode", "forward")
    assert np.allclose(np.array(data["tangent"]["y"]), np.array(full["jacobian"])[:, 0])


def test_direction_text_output():
    result = run("grad", sample("sensitivity.ad"), "--direction", "k=[1,0]")
    assert result.exit_code == 0, result.output
    assert "jvp" in result.stdout and "JVP" in result.stdout


def test_version():
    result = run("--version")
    assert result.exit_code == 0
    assert re.fullmatch(r"adcli, version \d+\.\d+\.\d+\S*\n", result.stdout)


def test_help():
    result = run("grad", "--help")
    assert result.exit_code == 0 and "--mode" in result.stdout and "--json" in result.stdout


def test_summary_skips_the_jacobian():
    result = run("grad", sample("mlp.ad"), "--summary")
    assert result.exit_code == 0, result.output
    assert "not printed: --summary" in result.stdout and "1×353" in result.stdout
    assert "W1[0,0]" not in result.stdout
    assert "passes" in result.stdout   # the cost is still shown


def test_jacobian_is_elided_unless_full():
    short = run("grad", sample("sensitivity.ad"))
    assert short.exit_code == 0, short.output
    assert "--full shows all" in short.stdout
    assert "y[100]" not in short.stdout and "y[199]" in short.stdout
    full = run("grad", sample("sensitivity.ad"), "--full")
    assert full.exit_code == 0, full.output
    assert "--full shows all" not in full.stdout
    assert all(f"y[{i}]" in full.stdout for i in range(200))


def test_output_npy(tmp_path):
    target = tmp_path / "jac.npy"
    data = ok_json("grad", sample("chain.ad"), "--output", target)
    saved = np.load(target)
    assert saved.shape == (2, 3)
    assert np.array_equal(saved, np.array(data["jacobian"]))


def test_output_csv(tmp_path):
    target = tmp_path / "jac.csv"
    data = ok_json("grad", sample("mlp.ad"), "--set", "n=3", "--output", target)
    with open(target, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == [""] + data["columns"]
    assert [r[0] for r in rows[1:]] == data["rows"]
    values = np.array([[float(v) for v in r[1:]] for r in rows[1:]])
    assert np.array_equal(values, np.array(data["jacobian"]))   # repr() round-trips exactly


def test_output_with_summary_says_where(tmp_path):
    target = tmp_path / "jac.npy"
    result = run("grad", sample("mlp.ad"), "--output", target, "--summary")
    assert result.exit_code == 0, result.output
    assert np.load(target).shape == (1, 353)
    assert "saved" in result.stdout and "jac.npy" in result.stdout


def test_chunk_changes_sweeps_not_the_jacobian():
    whole = ok_json("grad", sample("chain.ad"), "--mode", "forward")
    chunked = ok_json("grad", sample("chain.ad"), "--mode", "forward", "--chunk", "2")
    assert whole["cost"]["sweeps"] == 1 and whole["cost"]["chunk"] == 3
    assert chunked["cost"]["sweeps"] == 2 and chunked["cost"]["chunk"] == 2
    assert chunked["cost"]["passes"] == whole["cost"]["passes"] == 3
    assert chunked["cost"]["primal_sweeps"] == 2   # forward evaluates f once per sweep
    assert np.allclose(chunked["jacobian"], whole["jacobian"])


def test_reverse_and_forward_agree():
    fwd = ok_json("grad", sample("deep.ad"), "--mode", "forward")
    rev = ok_json("grad", sample("deep.ad"), "--mode", "reverse")
    assert np.allclose(fwd["jacobian"], rev["jacobian"], rtol=1e-12, atol=1e-14)
    assert rev["cost"]["cached_values"] > 0 and fwd["cost"]["cached_values"] == 0


def test_float32():
    data = ok_json("grad", sample("seed_example.ad"), "--dtype", "float32")
    assert data["dtype"] == "float32"
    assert data["value"]["f"] == pytest.approx(6.909297426825682, rel=1e-6)


# -- auto mode ----------------------------------------------------------------------------

@pytest.mark.parametrize("name, mode", [("sensitivity.ad", "forward"), ("mlp.ad", "reverse")])
def test_auto_mode_says_what_it_picked_and_why(name, mode):
    data = ok_json("grad", sample(name))
    assert data["mode_requested"] == "auto" and data["mode"] == mode
    note = data["mode_note"]
    assert "\n" not in note
    assert note.startswith(f"auto picked {mode}: ")
    assert re.search(r"predicted .* against .* for", note) and re.search(r"instead of", note)


def test_auto_mode_note_in_text_output():
    result = run("grad", sample("mlp.ad"), "--summary")
    assert result.exit_code == 0, result.output
    assert "auto picked reverse" in result.stdout


def test_explicit_mode_has_no_note():
    data = ok_json("grad", sample("mlp.ad"), "--mode", "reverse")
    assert data["mode_note"] is None


# -- non-finite numbers ---------------------------------------------------------------------------

def test_nan_becomes_null_with_a_warning_naming_the_node(tmp_path):
    path = tmp_path / "nan.ad"
    path.write_text("input x = -1.0\noutput y = log(x)\n")
    result = run("grad", path, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout, parse_constant=lambda c: pytest.fail(f"{c} in JSON output"))
    check_schema(data)
    assert data["value"]["y"] is None
    warning = result.stderr.strip()
    assert "\n" not in warning and warning.startswith("warning: ")
    assert re.search(r"\bv\d+ = log \(log\(x\)\) at .*nan\.ad:2\b", warning), warning
    assert "null" in warning


def test_nan_in_text_output(tmp_path):
    path = tmp_path / "nan.ad"
    path.write_text("input x = -1.0\noutput y = log(x)\n")
    result = run("grad", path)
    assert result.exit_code == 0, result.output
    assert "nan" in result.stdout
    assert re.search(r"warning: .*log\(x\)", result.stderr)
    assert "JSON" not in result.stderr   # the note about null is for --json only


def test_non_finite_input_is_named():
    result = run("grad", sample("seed_example.ad"), "--at", "x1=1e400", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["value"]["f"] is None
    assert re.fullmatch(r"warning: the result holds nan or infinity: input x1 holds a non-finite value; "
                        r"non-finite numbers are shown as null in JSON\n", result.stderr)


def test_infinite_derivative_is_null(tmp_path):
    path = tmp_path / "inf.ad"
    path.write_text("input x: vec[2] = [0, 4]\noutput y = sqrt(x)\n")
    result = run("grad", path, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["jacobian"][0][0] is None and data["jacobian"][1][1] == pytest.approx(0.25)
    assert "sqrt" in result.stderr


# -- colour ---------------------------------------------------------------------------

def test_no_color_means_no_escape_codes():
    # TTY_COMPATIBLE=1 (Rich >= 14) and FORCE_COLOR=1 make Rich treat CliRunner's stdout as a
    # terminal; Rich's own NO_COLOR handling still wrote bold and dim codes there
    terminal = {"TTY_COMPATIBLE": "1", "FORCE_COLOR": "1"}
    coloured = run("grad", sample("chain.ad"), env={**terminal, "NO_COLOR": None})
    assert coloured.exit_code == 0 and ANSI.search(coloured.stdout)
    plain = run("grad", sample("chain.ad"), env={**terminal, "NO_COLOR": "1"})
    assert plain.exit_code == 0, plain.output
    assert not ANSI.search(plain.stdout) and not ANSI.search(plain.stderr)
    assert "Jacobian" in plain.stdout


def test_not_a_terminal_means_no_escape_codes():
    result = run("grad", sample("chain.ad"), env={"TTY_COMPATIBLE": None, "FORCE_COLOR": None})
    assert result.exit_code == 0 and not ANSI.search(result.stdout)


# -- memory ----------------------------------------------------------------------------------

def test_a_moderate_memory_limit_chooses_a_smaller_chunk():
    # 300KB: the JSON output takes its share (api.Program.json_bytes, about 177KB here)
    data = ok_json("grad", sample("mlp.ad"), "--mode", "forward", "--memory-limit", "300KB")
    assert 1 <= data["cost"]["chunk"] < 353
    assert data["cost"]["sweeps"] == math.ceil(353 / data["cost"]["chunk"])
    note = data["chunk_note"]
    assert note and "\n" not in note
    assert re.search(rf"chunk {data['cost']['chunk']} of 353 directions per sweep", note)
    assert "memory limit" in note
    whole = ok_json("grad", sample("mlp.ad"), "--mode", "forward")
    assert whole["chunk_note"] is None and whole["cost"]["sweeps"] == 1
    assert np.allclose(data["jacobian"], whole["jacobian"])


def test_chunk_note_in_text_output():
    result = run("grad", sample("mlp.ad"), "--mode", "forward", "--memory-limit", "100KB", "--summary")
    assert result.exit_code == 0, result.output
    assert "directions per sweep" in result.stdout


@pytest.mark.parametrize("limit", ["2GiB", "1.5gb", "3e9", "200MB", "64 kib"])
def test_memory_limit_sizes(limit):
    ok_json("grad", sample("seed_example.ad"), "--memory-limit", limit)


def test_matrix_values_are_printed_as_rows(tmp_path):
    """The value table prints a matrix output as its rows, numbers aligned in columns, as
    the Jacobian is printed; a large one elided (⋮ rows, … columns) within COLUMNS, whole
    with --full."""
    path = tmp_path / "m.ad"
    path.write_text("input A: mat[3, 2] = [[1, -2.5], [3, 4], [5, 60]]\n"
                    "input W: mat[9, 7] = linspace(0.125, 62.125)\n"
                    "output y = A * 2\noutput w = W * 1\n")
    result = run("grad", path, "--summary", env={"NO_COLOR": "1", "COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("  y  "))
    y = [line.rstrip() for line in lines[start:start + 3]]
    assert y[0].endswith("  [[ 2,  -5],") and y[1].endswith("   [ 6,   8],") and y[2].endswith("   [10, 120]]")
    assert len({len(line) for line in y}) == 1   # the rows line up
    w = [line.rstrip() for line in lines[start + 3:start + 10]]
    assert w[0].split()[:3] == ["w", "mat[9,", "7]"] and "[[ 0.125,  1.125,  2.125, …,  4.125,  5.125,  6.125]," in w[0]
    assert w[3].strip() == "⋮" and w[6].endswith("62.125]]")
    assert len({len(line) for line in w if "⋮" not in line}) == 1
    assert all(len(line.rstrip()) <= 80 for line in lines)
    full = run("grad", path, "--full", env={"NO_COLOR": "1", "COLUMNS": "200"})
    assert full.exit_code == 0, full.output
    values = full.stdout.split("Value")[1].split("Jacobian")[0]
    assert "⋮" not in values and "…" not in values
    assert all(f"{0.125 + i:g}," in values or f"{0.125 + i:g}]" in values for i in range(63))


# -- linear algebra: problems in one sentence, at the call ---------------------------------------

@pytest.mark.parametrize("text, message, caret_line", [
    # a singular matrix where the program runs (NumPy's LinAlgError)
    ("input A: mat[2, 2] = [[1, 2], [2, 4]]\ninput b: vec[2] = [1, 1]\noutput x = solve(A, b)",
     "3:12: error: solve's matrix is singular at this point (node v3)", "output x = solve(A, b)"),
    ("input A: mat[2, 2] = [[1, 2], [2, 1]]\noutput L = cholesky(A)",
     "2:12: error: cholesky's matrix is not positive definite at this point (node v2)", "output L = cholesky(A)"),
    # det of a singular matrix is 0; its derivative needs the inverse
    ("input A: mat[2, 2] = [[1, 2], [2, 4]]\noutput d = det(A)",
     "2:12: error: det's derivative needs the inverse of its matrix, which is singular at this point (node v2)",
     "output d = det(A)"),
    # a non-square matrix is refused when the file is built
    ("input A: mat[2, 3] = randn(seed=1)\noutput d = det(A)",
     "2:12: error: det needs a square matrix, got mat[2, 3]", "output d = det(A)"),
    ("input A: mat[3, 2] = randn(seed=1)\ninput b: vec[3] = ones\noutput x = solve(A, b)",
     "3:12: error: solve needs a square matrix, got mat[3, 2]", "output x = solve(A, b)"),
    ("input A: mat[2, 2] = randn(seed=1)\ninput b: vec[3] = ones\noutput x = solve(A, b)",
     "3:12: error: solve needs a right-hand side of 2 rows for mat[2, 2], got vec[3]", "output x = solve(A, b)"),
    # constant data is evaluated when the file is built
    ("const C = inv([[1, 2], [2, 4]])\ninput x = 1\noutput y = x * sum(C)",
     "1:11: error: inv's matrix is singular in this constant data", "const C = inv([[1, 2], [2, 4]])"),
])
def test_linear_algebra_problems_are_one_sentence(tmp_path, text, message, caret_line):
    path = tmp_path / "la.ad"
    path.write_text(text + "\n")
    for args in (("grad",), ("grad", "--mode", "reverse"), ("compare",)):
        result = run(*args, path)
        assert result.exit_code == 1, result.output
        lines = result.output.splitlines()
        assert lines[0] == f"{path}:{message}", result.output
        assert lines[1].strip() == caret_line and lines[2].strip() == "^"
        assert "Traceback" not in result.output and "LinAlgError" not in result.output


def test_python_dash_m_runs_every_command():
    """`python -m adcli` and `python -m adcli.cli` reach the same commands as the installed
    script, show/trace/graph/calibrate included (registered by adcli.cli on import)."""
    import subprocess
    import sys
    from pathlib import Path

    sample = str(Path(__file__).parent.parent / "samples" / "seed_example.ad")
    for module in ("adcli", "adcli.cli"):
        out = subprocess.run([sys.executable, "-m", module, "show", sample], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        assert "equations" in out.stdout
