"""Resources are predicted before they are spent: work that would not fit is
refused (or chunked) with one sentence before anything large is allocated,
never by running out of memory or time. Memory is measured in a child process
(its own peak RSS, or under an RLIMIT_AS cap); each test failed before its fix.
"""
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import adcli
from adcli.cli import cli

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
MB = 10**6

# Runs the CLI in a fresh interpreter, then reports its exit code and peak RSS: VmHWM,
# the high-water mark of this program's own memory (ru_maxrss would also count the
# test process, whose pages the child shared between fork and exec).
CHILD = r"""
import json, resource, sys
from adcli.cli import main
code = 0
try:
    main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
try:
    with open("/proc/self/status") as f:
        peak = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
except (OSError, StopIteration):
    pass
sys.stderr.write("\n@@" + json.dumps({"code": code, "rss": peak}) + "\n")
"""


def child(*args, cap=None, timeout=60):
    """(exit code, peak RSS in bytes, stderr) of `adcli ARGS` in a child process,
    under an RLIMIT_AS cap of `cap` bytes if given. One BLAS thread, so that the
    address space a cap is measured against does not depend on the core count."""
    def limit():
        if cap is not None:
            import resource
            resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               NO_COLOR="1")
    proc = subprocess.run([sys.executable, "-c", CHILD, *map(str, args)], stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, env=env, preexec_fn=limit,
                          timeout=timeout, cwd=ROOT)
    stderr, marker, tail = proc.stderr.rpartition("\n@@")
    assert marker, f"the child died (exit {proc.returncode}): {proc.stderr[-2000:]}"
    info = json.loads(tail)
    return info["code"], info["rss"], stderr.strip()


def run(*args, input=None):
    return CliRunner().invoke(cli, [str(a) for a in args], input=input)


def one_error(stderr: str, pattern: str) -> dict:
    """--json error contract: one JSON object, one sentence, matching `pattern`."""
    assert stderr.count("\n") == 0, stderr
    error = json.loads(stderr)["error"]
    message = error["message"]
    assert "\n" not in message and "Traceback" not in message and "ran out of memory" not in message
    assert re.search(pattern, message), message
    return error


def caret(stderr: str, path, line: int, column: int):
    """Text mode: file:line:col: error: …, the source line, a caret under the column."""
    lines = stderr.splitlines()
    assert lines[0].startswith(f"{path}:{line}:{column}: error: "), lines[0]
    assert lines[2].strip() == "^", lines[:3]   # (a long line is shown around the column)
    if len(lines[1]) < 100:
        assert lines[2] == "  " + " " * (column - 1) + "^", lines[:3]
    return lines


@pytest.fixture
def ad(tmp_path):
    counter = iter(range(1000))

    def write(text: str, encoding: str = "utf-8") -> Path:
        path = tmp_path / f"prog{next(counter)}.ad"
        path.write_text(text, encoding=encoding)
        return path

    return write


# -- 1. constant data is a recipe, made after the memory check -------------------------------------

BIG_DATA = """dim n = 5000
const X: mat[n, n] = randn(seed=1)
input w: vec[n] = 0.1 * randn(seed=2)
output y = sum(X @ w)
"""


def test_show_and_graph_never_make_constant_data(ad):
    path = ad(BIG_DATA)   # 200 MB of const data: before, made while the file was built
    for command in ("show", "graph"):
        code, rss, stderr = child(command, path)
        assert code == 0, stderr
        assert rss < 150 * MB, (command, rss)


def test_a_run_that_does_not_fit_is_refused_before_its_data_is_made():
    # mlp.ad at n = 2,000,000 holds 384 MB of inputs and consts: before, all of it was
    # drawn (and more for 0.1 * randn) before the memory check refused the run
    mlp = SAMPLES / "mlp.ad"
    code, rss, stderr = child("grad", mlp, "--set", "n=2000000", "--mode", "reverse",
                              "--memory-limit", "300MB", "--json")
    assert code == 1
    one_error(stderr, r"needs about [\d.]+ [MG]B.*over the memory limit of 300\.0 MB")
    assert rss < 150 * MB, rss
    # one JVP was not checked at all
    code, rss, stderr = child("grad", mlp, "--set", "n=2000000", "--direction", "b2=1",
                              "--memory-limit", "300MB", "--json")
    assert code == 1
    one_error(stderr, r"^one JVP needs about .* over the memory limit of 300\.0 MB")
    assert rss < 150 * MB, rss


def test_data_larger_than_memory_is_refused_at_once():
    # before: 25-39 s and 12.5 GB drawing X before refusing W1 (here, under a 3 GB cap:
    # a MemoryError, "ran out of memory")
    start = time.perf_counter()
    code, rss, stderr = child("grad", SAMPLES / "mlp.ad", "--set", "n=100000000", "--json", cap=3 * 2**30)
    assert code == 1
    one_error(stderr, r"over (half of the available memory|the memory limit)")
    assert time.perf_counter() - start < 10 and rss < 300 * MB


def test_data_is_made_once_when_a_run_needs_it(ad):
    program = adcli.load(ad("const A: vec[3] = [1, 2, 3]\nconst B: vec[3] = A.T\n"
                            "input x: vec[3] = 2 * A + randn(seed=1)\noutput y = sum(B * x)\n"))
    recipe = program.graph.input_defaults["x"]
    assert not recipe.made and recipe.shape == (3,)
    expected = 2 * np.array([1, 2, 3]) + np.random.default_rng(1).standard_normal(3)
    result = program.jacobian(mode="reverse", measure_memory=False)
    assert recipe.made and np.allclose(result.inputs["x"], expected)
    assert np.allclose(result.gradient["x"], [1, 2, 3])
    consts = program.graph.builder.const_values   # A is not in the graph: no output reads it
    assert np.array_equal(consts["B"].value, consts["A"].value)
    assert not np.shares_memory(consts["B"].value, consts["A"].value)   # a copy, not A's array


def test_errors_in_constant_data_are_still_found_when_the_file_is_read(ad):
    for source, pattern in [
        ("input x: vec[3] = randn(seed=-1)\noutput y = sum(x)\n", r"seed must be a non-negative integer"),
        ("const A: vec[2] = ones\ninput x: vec[3] = A * 2\noutput y = sum(x)\n", r"value of x is vec\[2\]"),
        ("const A: mat[2, 3] = ones\ninput x: vec[3] = A @ A\noutput y = sum(x)\n", r"do not fit for '@'"),
    ]:
        result = run("show", ad(source), "--json")
        assert result.exit_code == 1, result.output
        one_error(result.stderr.strip(), pattern)


# -- 2. index maps of data movement are counted, and made only for a run ---------------------------

def moves_program(n=200_000, count=50):
    return "dim n = %d\ninput x: vec[n] = randn(seed=1)\nh = x\n%soutput y = sum(h * h)\n" % (
        n, "h = h[:]\n" * count)


def test_index_maps_are_counted_in_the_memory_check(ad):
    # 50 copies h = h[:] of a vec[200,000]: 80 MB of index maps (160 MB as int64, before),
    # not counted: the run went ahead under --memory-limit 30MB
    path = ad(moves_program())
    result = run("grad", path, "--memory-limit", "30MB", "--mode", "reverse", "--json")
    assert result.exit_code == 1, result.output
    one_error(result.stderr.strip(), r"over the memory limit of 30\.0 MB")
    program = adcli.load(path)
    assert program.index_bytes() == 50 * 2 * 4 * 200_000   # int32 positions, in and out


def test_index_maps_are_made_for_a_run_only(ad):
    program = adcli.loads(moves_program(n=1000, count=3) + "output z = concat(x[2:], x[:2])\n")
    movers = [n for n in program.graph.nodes if n.op in ("index", "concat")]
    program.predict("reverse")
    program.decide()
    assert movers and all(callable(n._moves) for n in movers)   # recipes still
    result = program.jacobian(mode="forward", measure_memory=False)
    made = sum(o.nbytes + i.nbytes for n in movers for o, i in n.moves)
    assert made == program.index_bytes()
    assert np.allclose(result.blocks["z"]["x"], np.roll(np.eye(1000), -2, axis=0))
    code, rss, stderr = child("show", ad(moves_program(n=1_000_000, count=100)))
    assert code == 0 and rss < 150 * MB, (stderr, rss)   # before: 1.6 GB of maps for show


# -- 3. writing JSON is predicted, and streamed --------------------------------------------------

def test_json_output_is_counted_in_the_memory_check():
    mlp = SAMPLES / "mlp.ad"
    # the sweeps need about 19 KB; keeping the result and writing it as JSON about 180 KB
    result = run("grad", mlp, "--mode", "reverse", "--memory-limit", "100KB", "--json")
    assert result.exit_code == 1, result.output
    one_error(result.stderr.strip(), r"writing it as JSON needs about .* over the memory limit of 100\.0 KB")
    assert run("grad", mlp, "--mode", "reverse", "--memory-limit", "100KB", "--summary").exit_code == 0
    program = adcli.load(mlp)
    numbers, labels = program.json_values("jacobian")
    assert (numbers, labels) == (1 + 353 + 2 * 353, 1 + 353)
    assert program.json_bytes(streamed=False) == 100 * numbers + 200 * labels
    big = adcli.loads("input x: vec[1000000] = 1\noutput y = sum(x * x)\n")
    assert big.json_bytes() < 25 * MB < big.json_bytes(streamed=False)


def test_json_of_a_large_gradient_is_written_in_pieces(ad):
    # a gradient of 250,000 numbers: json.dumps held every one as a float, its text, the
    # document and its bytes (131 MB peak before, 61 MB now)
    path = ad("input x: vec[250000] = randn(seed=1)\noutput y = sum(x * x)\n")
    code, rss, stderr = child("grad", path, "--json", "--mode", "reverse")
    assert code == 0, stderr
    assert rss < 95 * MB, rss


def test_streamed_json_is_the_same_text():
    from adcli.report import derivative_json, derivative_json_pieces

    source = ("input W: mat[3, 4] = randn(seed=1)\ninput v: vec[4] = [1, 0, -1, 2]\n"
              "output M = W * v + log(v + 1)\noutput s = sum(sin(W @ v))\n")   # log(0): -inf
    for program in [adcli.load(SAMPLES / "mlp.ad"), adcli.load(SAMPLES / "chain.ad"), adcli.loads(source)]:
        with np.errstate(all="ignore"):
            results = [program.jacobian(mode=m, measure_memory=False) for m in ("forward", "reverse")]
            results += [program.jvp({program.input_names[0]: 1.0}, measure_memory=False),
                        program.vjp({program.output_names[0]: 1.0}, measure_memory=False)]
        for result in results:
            expected = json.dumps(derivative_json(program, result), allow_nan=False)
            for chunk in (1, 5, 1 << 16):
                assert "".join(derivative_json_pieces(program, result, chunk=chunk, size=7)) == expected


# -- 4. the default memory limit heeds ulimit -v and the cgroup ----------------------------------

def test_default_limit_heeds_rlimit_as(ad):
    code = ("import json, adcli.api as a; "
            "print(json.dumps([a.available_memory(), a.default_memory_limit()]))")
    cap = 2**30

    def limit():
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         preexec_fn=limit, check=True).stdout
    available, default = json.loads(out)
    assert 0 < available < cap and default <= cap // 2
    # a run under the cap is refused by prediction, not by running out of memory
    path = ad("input x: vec[40000000] = randn(seed=1)\noutput y = sum(sin(x) * x)\n")   # 320 MB
    code, rss, stderr = child("grad", path, "--json", cap=cap)
    assert code == 1
    one_error(stderr, r"over (the memory limit|half of the available memory)")


def test_cgroup_limits(tmp_path):
    from adcli.api import cgroup_available

    own = tmp_path / "cgroup"
    # v2: the process's own cgroup and its parent both limit; the least left counts
    own.write_text("0::/app/job\n")
    (tmp_path / "app" / "job").mkdir(parents=True)
    (tmp_path / "app" / "job" / "memory.max").write_text("max\n")
    (tmp_path / "app" / "job" / "memory.current").write_text("100\n")
    (tmp_path / "app" / "memory.max").write_text(str(3 * 2**30))
    (tmp_path / "app" / "memory.current").write_text(str(2**30))
    assert cgroup_available(str(tmp_path), str(own)) == 2 * 2**30
    # v1: memory/…/memory.limit_in_bytes less memory.usage_in_bytes; "unlimited" is 2^63 - a page
    own.write_text("4:memory:/box\n0::/\n")
    box = tmp_path / "memory" / "box"
    box.mkdir(parents=True)
    (box / "memory.limit_in_bytes").write_text(str(2**30))
    (box / "memory.usage_in_bytes").write_text(str(2**28))
    (tmp_path / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712")
    assert cgroup_available(str(tmp_path), str(own)) == 2**30 - 2**28
    own.write_text("0::/\n")
    assert cgroup_available(str(tmp_path / "none"), str(own)) is None


# -- 5. inlining is bounded -----------------------------------------------------------------------

def test_exponential_inlining_is_refused(ad):
    # each f_k calls f_(k-1) twice and emits no node: before, f40 never finished
    text = "def f0(a) = a\n" + "".join(f"def f{k}(a) = f{k - 1}(f{k - 1}(a))\n" for k in range(1, 41))
    path = ad(text + "input x = 1.0\noutput y = f40(x)\n")
    start = time.perf_counter()
    code, _, stderr = child("grad", path, "--node-limit", "50000", timeout=30)
    assert code == 1 and time.perf_counter() - start < 10
    lines = caret(stderr, path, 43, 12)
    assert re.search(r"error: this call of f40 inlines more than 50,000 def calls", lines[0]), lines[0]
    result = run("grad", path, "--node-limit", "1000", "--json")
    error = one_error(result.stderr.strip(), r"inlines more than 1,000 def calls")
    assert (error["line"], error["column"]) == (43, 12)


# -- 6. oversized input is refused before it is read or parsed ------------------------------------

def test_source_size_limit(ad):
    body = "input x = 1.0\noutput y = x * x\n"
    path = ad(body + "#" * 2000 + "\n")
    result = run("grad", path, "--max-source-bytes", "1KB", "--json")
    assert result.exit_code == 1
    one_error(result.stderr.strip(), r"is 2\.0 KB of source, over the limit of 1\.0 KB")
    assert run("grad", path, "--max-source-bytes", "1MB", "--json").exit_code == 0
    bad = run("grad", path, "--max-source-bytes", "lots", "--json")
    assert bad.exit_code == 2 and "--max-source-bytes" in bad.stderr
    big = ad(body + ("# " + "x" * 98 + "\n") * 100_001)   # just over 10 MB: the default limit
    start = time.perf_counter()
    result = run("grad", big, "--json")
    assert result.exit_code == 1 and time.perf_counter() - start < 2
    one_error(result.stderr.strip(), r"over the limit of 10\.0 MB")
    with pytest.raises(adcli.errors.ResourceProblem):
        adcli.loads(body + "#" * 100, max_source_bytes=50)


def test_statement_count_is_bounded_before_parsing(ad):
    # 30,000 statements took seconds to parse (10^6: 138 s and 3.5 GB) before any limit applied
    path = ad("input x = 1.0\n" + "a = x\n" * 30_000 + "output y = a\n")
    start = time.perf_counter()
    result = run("grad", path, "--node-limit", "1000")
    assert result.exit_code == 1 and time.perf_counter() - start < 1.5
    lines = caret(result.stderr, path, 1001, 1)   # the 1,001st statement
    assert "more than 1,000 statements" in lines[0]
    # brackets, continuations and comments do not count as statements
    from adcli.parser import check_statement_count

    text = "input x = 1.0\nc = [1,\n2,\n3] \\\n * 2\n# note\n\noutput y = x * sum(c)\n"
    check_statement_count(text, 3)
    with pytest.raises(adcli.errors.ResourceProblem, match="more than 2 statements") as refused:
        check_statement_count(text, 2, "f.ad")
    assert (refused.value.location.line, refused.value.location.column) == (8, 1)
    assert json.loads(run("grad", ad(text), "--json").stdout)["jacobian"] == [[12.0]]


# -- 7. long expressions: linear memory, and deep nesting refused with a caret ---------------------

def test_long_expressions_take_linear_memory(ad):
    # every AST node kept its own copy of its text: 40,000 characters took 845 MB
    path = ad("input x = 1.0\noutput y = " + "-" * 40_000 + "x\n")
    code, rss, stderr = child("grad", path)
    assert code == 1 and rss < 150 * MB, rss
    lines = caret(stderr, path, 2, 12 + 40_000 - 4_000)
    assert "nests expressions more deeply than adcli can follow (4,001 levels here; at most 4,000)" in lines[0]


def test_nesting_up_to_the_limit_works():
    terms = adcli.loads("input x = 1.0\noutput y = x" + " + x" * 3_999 + "\n")   # 4,000 levels
    assert np.allclose(terms.evaluate(at={"x": 2.0})["y"], 8000.0)
    program = adcli.loads("input x = 1.0\noutput y = " + "sin(" * 3_999 + "x" + ")" * 3_999 + "\n")
    assert program.output_shape("y") == ()
    node = program.graph.nodes[program.graph.outputs["y"]]
    assert node.text == "sin(" * 3_999 + "x" + ")" * 3_999   # made from offsets when read


# -- 8. a byte-order mark, and data functions without a type ------------------------------------

def test_a_byte_order_mark_is_accepted(ad):
    path = ad("input x = 2.0\noutput y = x * x\n", encoding="utf-8-sig")
    assert Path(path).read_bytes().startswith(b"\xef\xbb\xbf")
    data = json.loads(run("grad", path, "--json").stdout)
    assert data["jacobian"] == [[4.0]]
    bad = run("grad", ad("input x = 2.0\noutput y = x $ x\n", encoding="utf-8-sig"))
    caret(bad.stderr, bad.stderr.split(":")[0], 2, 14)   # columns as the editor shows them


def test_data_functions_without_a_type_make_a_scalar(ad):
    path = ad("input x = randn(seed=1)\nconst c = rand(seed=2)\ninput z = 0.5 * ones\noutput y = c * x * z\n")
    data = json.loads(run("grad", path, "--json").stdout)
    x = np.random.default_rng(1).standard_normal()
    c = np.random.default_rng(2).random()
    assert data["outputs"] == {"y": []} and np.isclose(data["inputs"]["x"], x)
    assert np.allclose(data["jacobian"], [[c * 0.5, c * x]])


# -- the chunk given, checked too -----------------------------------------------------------------

def test_a_given_chunk_that_does_not_fit_is_refused():
    result = run("grad", SAMPLES / "mlp.ad", "--mode", "forward", "--chunk", "353",
                 "--memory-limit", "300KB", "--json")
    assert result.exit_code == 1, result.output
    one_error(result.stderr.strip(), r"^forward mode with --chunk 353 needs about \d+\.\d [KM]B, over the memory "
                                     r"limit of 300\.0 KB$")
