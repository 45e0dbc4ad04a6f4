"""Fuzzing `adcli grad FILE --json` with Hypothesis: random text, the shipped
samples with random characters deleted, inserted and replaced (brackets and
newlines especially), and random option values. Whatever the input, adcli must
answer with exit 0, 1 or 2 (never 3, never an uncaught exception), stdout
empty or exactly one JSON object, and on failure one JSON error object on
stderr."""
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adcli.cli import cli

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = {path.name: path.read_text() for path in sorted((ROOT / "samples").glob("*.ad"))}
# bounds that keep each run small, whatever a mutation does to a dim or a repeat count
LIMITS = ["--node-limit", "20000", "--memory-limit", "200MB"]


def fuzz(examples: int):
    return settings(max_examples=examples, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# characters a mutation inserts: the language's punctuation, brackets and newlines
# above all, digits, letters of the samples' names, and a few strangers
PIECES = list("()[]{}\n\n=+-*/@^.,:#0123456789 \t\\xyhnkTWb_") + [
    "sin", "repeat", "def", "input", "output", "dim", "const", "return", "vec[", "mat[", "1e400",
    "\r\n", "é", "\x00", "(", ")", "[", "]", "{", "}", "\n"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    path = tmp_path_factory.mktemp("fuzz")
    shutil.copytree(ROOT / "samples" / "data", path / "data")   # what the samples load()
    return path


def check(result):
    """The contract for any input; returns the parsed stdout document or None."""
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code in (0, 1, 2), (result.exit_code, result.stderr)
    assert "Traceback" not in result.stderr
    if result.exit_code == 0:
        assert result.stdout.endswith("\n") and result.stdout.count("\n") == 1, result.stdout[:500]
        data = json.loads(result.stdout)
        assert isinstance(data, dict) and "jacobian" in data
        for line in result.stderr.splitlines():
            assert line.startswith("warning: "), result.stderr
        return data
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    error = json.loads(result.stderr)["error"]
    assert error["exit_code"] == result.exit_code
    assert error["kind"] != "internal", error
    assert error["message"] and "\n" not in error["message"]
    return None


def run_source(workdir, text: str, *options):
    path = workdir / "fuzz.ad"
    path.write_text(text, encoding="utf-8")
    return check(CliRunner().invoke(cli, ["grad", str(path), "--json", *LIMITS, *options]))


@st.composite
def mutated_sample(draw):
    """A sample with a few random edits: deletions (brackets and newlines are favoured),
    insertions and replacements."""
    name = draw(st.sampled_from(sorted(SAMPLES)))
    text = list(SAMPLES[name])
    for _ in range(draw(st.integers(min_value=1, max_value=6))):
        if not text:
            break
        action = draw(st.sampled_from(["delete", "delete bracket", "insert", "replace", "duplicate line"]))
        at = draw(st.integers(min_value=0, max_value=len(text) - 1))
        if action == "delete":
            del text[at]
        elif action == "delete bracket":
            marks = [i for i, c in enumerate(text) if c in "()[]{}\n"]
            if marks:
                del text[draw(st.sampled_from(marks))]
        elif action == "insert":
            text.insert(at, draw(st.sampled_from(PIECES)))
        elif action == "replace":
            text[at] = draw(st.sampled_from(PIECES))
        else:
            lines = "".join(text).split("\n")
            i = draw(st.integers(min_value=0, max_value=len(lines) - 1))
            lines.insert(i, lines[i])
            text = list("\n".join(lines))
    return "".join(text)


@fuzz(60)
@given(text=st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=200))
def test_random_text(workdir, text):
    run_source(workdir, text)


@fuzz(40)
@given(lines=st.lists(st.lists(st.sampled_from(PIECES), max_size=12).map("".join), max_size=8),
       output=st.sampled_from(["", "output y = x\n", "output y = sum(x * x)\n"]))
def test_random_statements(workdir, lines, output):
    run_source(workdir, "input x: vec[3] = [1, 2, 3]\n" + "\n".join(lines) + "\n" + output)


@fuzz(150)
@given(text=mutated_sample(), mode=st.sampled_from([[], ["--mode", "forward"], ["--mode", "reverse"]]))
def test_mutated_samples(workdir, text, mode):
    run_source(workdir, text, *mode)


@fuzz(40)
@given(option=st.sampled_from(["--at", "--set", "--wrt", "--memory-limit", "--direction", "--cotangent",
                               "--chunk", "--inputs"]),
       name=st.sampled_from(["x1", "x2", "f", "n", "zz", ""]),
       value=st.lists(st.sampled_from(list("0123456789.e+-[](),= xyfn") + ["1e400", "randn(seed=1)"]),
                      max_size=12).map("".join))
def test_random_option_values(workdir, option, name, value):
    argument = value if option in ("--memory-limit", "--chunk") else f"{name}={value}"
    if option == "--inputs":
        argument = "-"
    result = CliRunner().invoke(cli, ["grad", str(ROOT / "samples" / "seed_example.ad"), "--json", *LIMITS,
                                      option, argument],
                                input=f'{{"{name}": {value or 0}}}')
    check(result)


def test_the_samples_themselves_pass(workdir):
    for name, text in SAMPLES.items():
        assert run_source(workdir, text) is not None, name


# -- regressions found by fuzzing (each was exit 3 or a hang) --------------------------------------

@pytest.mark.parametrize("text", [
    "dim n = 1e400\ninput x = 1.0\noutput y = x\n",
    "input x: vec[3] = ones\noutput y = x[2^-1]\n",
    "input x: vec[3] = ones\noutput y = x[1e400]\n",
    "input x = []\noutput y = sum(x)\n",
    "dim n = 9^9^9\ninput x = 1.0\noutput y = x\n",
    "input x = 1.0\nh = x\nrepeat 100000000000 {\n}\noutput y = h\n",
    "input x = 1.0\noutput y = " + "-" * 30000 + "x\n",
])
def test_regressions(workdir, text):
    run_source(workdir, text)
