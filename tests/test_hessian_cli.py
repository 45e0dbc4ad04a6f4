"""`adcli hessian` end to end (CliRunner) and Program.hessian: the Hessian of a scalar output
as forward over reverse, one Hessian-vector product, the check against central differences of
the gradient, the JSON document's documented keys, counts, and refusals."""
import json
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import adcli
from adcli.cli import cli

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
LOGISTIC = str(ROOT / "samples" / "logistic.ad")
ROSENBROCK = """input x: vec[2] = [-1.2, 1.0]
output f = (1 - x[0])^2 + 100 * (x[1] - x[0]^2)^2
"""
TOP_KEYS = {"kind", "file", "output", "wrt", "mode", "backend", "device", "dtype", "value", "gradient",
            "labels", "hessian", "hvp", "direction", "check", "cost", "inputs"}
CHECK_KEYS = {"evaluations", "max_abs_error", "relative_error", "tolerance", "agrees", "skipped"}


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def rosenbrock_hessian(x, y):
    return np.array([[2 - 400 * (y - 3 * x * x), -400 * x], [-400 * x, 200]])


@pytest.fixture
def rosen(tmp_path):
    path = tmp_path / "rosen.ad"
    path.write_text(ROSENBROCK)
    return path


def test_rosenbrock_json(rosen):
    result = run("hessian", rosen, "--json")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    data = json.loads(result.stdout)
    assert set(data) == TOP_KEYS and set(data["check"]) == CHECK_KEYS
    assert data["kind"] == "hessian" and data["mode"] == "forward" and data["output"] == "f"
    assert data["labels"] == ["x[0]", "x[1]"]
    assert data["value"] == pytest.approx(24.2, rel=1e-14)
    np.testing.assert_allclose(data["gradient"]["x"], [-215.6, -88.0], rtol=1e-13)
    np.testing.assert_allclose(data["hessian"], rosenbrock_hessian(-1.2, 1.0), rtol=1e-14)
    assert data["check"]["agrees"] and data["check"]["evaluations"] == 4 and data["check"]["skipped"] is None
    assert data["check"]["relative_error"] < 1e-9
    assert data["cost"]["passes"] == 2   # one forward pass per input scalar, over the gradient's nodes
    keys = {key for key in data} | set(data["check"])
    assert all(re.fullmatch(r"[a-z][a-z0-9_]*", key) for key in keys)
    section = README[README.index("`adcli hessian --json`"):README.index("NaN and infinities become")]
    for key in TOP_KEYS | CHECK_KEYS:
        assert f"`{key}`" in section, key


def test_rosenbrock_direction_and_reverse_over_reverse(rosen):
    data = json.loads(run("hessian", rosen, "--direction", "x=[1, -2]", "--json").stdout)
    assert data["kind"] == "hvp" and data["hessian"] is None
    np.testing.assert_allclose(data["hvp"]["x"], rosenbrock_hessian(-1.2, 1.0) @ [1, -2], rtol=1e-14)
    assert data["direction"] == {"x": [1.0, -2.0]} and data["cost"]["passes"] == 1
    assert data["check"]["agrees"] and data["check"]["evaluations"] == 2
    data = json.loads(run("hessian", rosen, "--mode", "reverse", "--at", "x=[0.3, -0.7]", "--json").stdout)
    assert data["mode"] == "reverse"
    np.testing.assert_allclose(data["hessian"], rosenbrock_hessian(0.3, -0.7), rtol=1e-13)


def test_text_output_on_a_sample():
    result = run("hessian", LOGISTIC)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "adcli hessian (Hessian)" in out and "Hessian  (4×4)" in out and "Gradient of loss" in out
    assert "central differences of the gradient (8 evaluations): agrees" in out
    assert "forward over reverse" in out and "passes" in out


def test_program_hessian_matches_differences_and_is_symmetric():
    """The logistic regression's Hessian Xᵀ diag(p(1 - p)) X / n (with the bias's column of
    ones), by the API, against its closed form; prediction = count for the run."""
    program = adcli.load(LOGISTIC)
    h = program.hessian()
    data = np.loadtxt(ROOT / "samples" / "data" / "exam.csv", delimiter=",", skiprows=1)
    X = np.hstack([data[:, :3], np.ones((len(data), 1))])
    p = 0.5   # w = 0, b = 0
    expected = X.T @ X * p * (1 - p) / len(data)
    np.testing.assert_allclose(h.matrix, expected, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(h.matrix, h.matrix.T, rtol=1e-13, atol=1e-15)
    assert h.check["agrees"]
    gradient = h.program
    assert gradient.predict("forward").counts() == h.result.cost.counts()


def test_a_disagreement_is_reported_not_swallowed(tmp_path):
    """At relu's kink central differences of the gradient average two slopes: the Hessian
    (0 there, by relu'' = 0 and relu'(0) = 0) and the differences disagree, and the command says so."""
    path = tmp_path / "kink.ad"
    path.write_text("input x = 0.0\noutput f = relu(x)^2 + relu(x) * 1000\n")
    result = run("hessian", path, "--json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert not data["check"]["agrees"]
    assert "warning: the Hessian and central differences of the gradient disagree" in result.stderr


@pytest.mark.parametrize("args, message", [
    (["--of", "g"], "--of g: the file has no output 'g' (outputs: f)"),
    (["--direction", "x=[1, 2]", "--mode", "reverse"], "--direction computes one Hessian-vector product"),
    (["--wrt", "y"], "y"),
])
def test_usage_problems(rosen, args, message):
    result = run("hessian", rosen, *args)
    assert result.exit_code != 0
    assert message in result.output


def test_a_vector_output_is_refused(tmp_path):
    path = tmp_path / "vec.ad"
    path.write_text("input x: vec[2] = [1, 2]\noutput y = x * x\n")
    result = run("hessian", path)
    assert result.exit_code == 1
    assert "the Hessian needs a scalar output, but 'y' is a vec[2]" in result.output
    assert "vec.ad:2:" in result.output


WIDE = "input x: vec[300] = 0.01 * randn(seed=1)\noutput y = sum(exp(x) * x) + sum(x)^2\n"


def test_the_time_limit_skips_the_check_and_says_so(tmp_path):
    """The check's 2n evaluations of the gradient are priced before they run: over the
    time limit they are skipped, saying so (agrees null, neither pass nor failure), while
    the Hessian itself, predicted within the limit, is computed."""
    program = adcli.loads(WIDE)
    gradient = program.gradient_program()
    check_time = 600 * gradient.predicted_primal_time(8)
    limit = check_time / 3
    assert gradient.jacobian(mode="forward").cost.predicted["time_s"] < limit   # the run fits
    h = program.hessian(time_limit=limit)
    assert h.check["agrees"] is None and h.check["evaluations"] == 0
    assert h.check["skipped"].startswith("not checked: its 600 evaluations of the gradient are predicted")
    x = program.resolve_inputs()["x"]
    want = np.diag(np.exp(x) * (2 + x)) + 2.0   # d²/dx² of sum(exp(x)·x) + (sum x)²
    np.testing.assert_allclose(h.matrix, want, rtol=1e-12)
    path = tmp_path / "wide.ad"
    path.write_text(WIDE)
    result = run("hessian", path, "--json", "--time-limit", f"{limit * 1000:.3f}ms")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["check"]["skipped"].startswith("not checked") and data["check"]["agrees"] is None
    assert result.stderr.startswith("note: central differences of the gradient: not checked")
    text = run("hessian", path, "--time-limit", f"{limit * 1000:.3f}ms")
    assert text.exit_code == 0 and "not checked: its 600 evaluations" in text.stdout.replace("\n", " ")
    assert run("hessian", path, "--json").stdout.count('"skipped": null') == 1   # the default: 1h


def test_a_hessian_predicted_over_the_time_limit_is_refused(tmp_path):
    path = tmp_path / "wide.ad"
    path.write_text(WIDE)
    result = run("hessian", path, "--time-limit", "0.000001")
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "predicted to take about" in result.output and "over the time limit of" in result.output


def test_a_hessian_refusal_names_the_hessian_and_the_repeat(tmp_path):
    """The gradient program's refusal ("forward mode is predicted…") is said of the
    Hessian, forward over reverse, at the file's repeat (found by a fresh-user review)."""
    path = tmp_path / "looped.ad"
    path.write_text("input x: vec[2] = [0.1, 0.2]\nrepeat 2000 {\n  x = sin(x) * 0.999\n}\noutput y = sum(x * x)\n")
    result = run("hessian", path, "--time-limit", "0.001", "--json")
    assert result.exit_code == 1
    error = json.loads(result.stderr)["error"]
    assert error["message"].startswith("the Hessian, forward over reverse, is predicted to take about")
    assert (error["line"], error["column"]) == (2, 1)
    text = run("hessian", path, "--time-limit", "0.001", "--mode", "reverse")
    assert f"{path}:2:1: error: the Hessian, reverse over reverse, is predicted" in text.stderr
