"""`adcli trace`: the course's evaluation traces, digit for digit (../shared/docs/background.md),
dual numbers, cached-value marks that match the cost panel, per-row counts that add up to
`adcli grad --direction/--cotangent` on every sample, and errors as in grad."""
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import adcli
from adcli.cli import cli
from adcli.trace import forward_trace, parse_seed, reverse_trace, row_name

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = sorted((ROOT / "samples").glob("*.ad"))
SEED = str(ROOT / "samples" / "seed_example.ad")

# A file that exercises most ops (movement, reductions, broadcasting, literals, two outputs).
KITCHEN_SINK = """\
input x: vec[4] = [0.5, -1.0, 2.0, 0.25]
input A: mat[3, 4] = randn(seed=1)
input s = 1.5
const B: mat[4, 2] = randn(seed=2)
a = A @ x
b = concat(a, [s, s * 2])
c = reshape(b, 5, 1)
d = c.T @ c
e = maximum(relu(x), 0.3) / (1 + abs(x))
f = softmax(A, axis=1)
g = stack(norm(x), logsumexp(x), max(a), prod(x[1:3]), mean(A, axis=0)[2])
h = outer(x, x)[0:2, :] @ B
output y = sum(d) + sum(e) + sum(f[1, :]) + sum(g) + sum(h) + dot(x, x) ^ 0.5 + log(s) + exp(-s) * tanh(s) + sigmoid(s) - sqrt(s) + square(s) + cos(s) + log1p(s) - min(x)
output z = (A.T @ a)[1:3]
"""


def run(*args, env=None):
    return CliRunner().invoke(cli, [str(a) for a in args], env=env)


def ok_json(*args) -> dict:
    result = run(*args, "--json")
    assert result.exit_code == 0, result.output
    assert result.stdout.count("\n") == 1
    data = json.loads(result.stdout)
    assert data["kind"] == "trace"
    return data


def rows_by_var(data) -> dict:
    return {row["var"]: row for row in data["rows"]}


@pytest.fixture(scope="module")
def sink(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("trace") / "sink.ad"
    path.write_text(KITCHEN_SINK)
    return str(path)


# -- the worked example, digit for digit ---------------------------------------------------------

def test_forward_trace_of_the_seed_example_matches_the_background_notes():
    data = ok_json("trace", SEED, "--mode", "forward", "--seed", "x1")
    rows = rows_by_var(data)
    assert [r["var"] for r in data["rows"]] == ["v1", "v2", "v3", "v4", "v5"]
    assert [rows[v]["expression"] for v in ("v1", "v2", "v3", "v4", "v5")] == \
        ["input x1", "input x2", "v1 * v2", "sin(v1)", "v3 + v4"]
    assert rows["v1"]["value"] == 2 and rows["v2"]["value"] == 3
    assert rows["v3"]["value"] == 6
    assert rows["v4"]["value"] == 0.9092974268256817
    assert rows["v5"]["value"] == 6.909297426825682
    assert rows["v1"]["tangents"] == [1.0] and rows["v2"]["tangents"] == [None]
    assert rows["v3"]["tangents"] == [3.0]
    assert rows["v4"]["tangents"] == [-0.4161468365471424]
    assert rows["v5"]["tangents"] == [2.5838531634528574]
    assert rows["v3"]["tangent_text"] == "v̇1·v2"
    assert rows["v4"]["tangent_text"] == "cos(v1)·v̇1"
    assert rows["v4"]["partials"] == [{"wrt": "v1", "text": "cos(v1)", "value": -0.4161468365471424,
                                       "used": True}]
    # every input's partial is listed; v2 carries no tangent, so ∂/∂v2 is not used (nor counted)
    assert rows["v3"]["partials"] == [{"wrt": "v1", "text": "v2", "value": 3.0, "used": True},
                                      {"wrt": "v2", "text": "v1", "value": 2.0, "used": False}]
    assert rows["v3"]["source"] == "x1 * x2" and rows["v3"]["line"] == 5
    assert data["tangent"] == {"f": [2.5838531634528574]}
    # the second pass of the notes: seed x2 gives ∂f/∂x2 = 2
    assert ok_json("trace", SEED, "--seed", "x2")["tangent"] == {"f": [2.0]}


def test_forward_trace_text_shows_the_exact_digits():
    result = run("trace", SEED, "--mode", "forward", "--seed", "x1", env={"NO_COLOR": "1", "COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "\x1b[" not in out
    for text in ("0.9092974268256817", "6.909297426825682", "-0.4161468365471424",
                 "2.5838531634528574", "v̇4 = cos(v1)·v̇1", "v1 * v2", "sin(v1)"):
        assert text in out, text
    line_v4 = next(line for line in out.splitlines() if line.startswith("v4 "))
    assert "0 + 1" in line_v4 and "1 + 2" in line_v4   # mults f + ∂, flops f + ∂


def test_reverse_trace_of_the_seed_example_matches_the_background_notes():
    data = ok_json("trace", SEED, "--mode", "reverse")
    assert [r["var"] for r in data["rows"]] == ["v5", "v4", "v3", "v2", "v1"]   # backward order
    rows = rows_by_var(data)
    assert rows["v5"]["adjoint"] == 1 and rows["v4"]["adjoint"] == 1 and rows["v3"]["adjoint"] == 1
    assert rows["v2"]["adjoint"] == 2.0
    assert rows["v1"]["adjoint"] == 2.5838531634528574
    assert rows["v1"]["adjoint_text"] == "v̄3·v2 + v̄4·cos(v1)"
    assert rows["v2"]["adjoint_text"] == "v̄3·v1"
    assert rows["v5"]["adjoint_text"] == "seed"
    # the backward sweep reads v1 and v2 (inputs) and cos(v1), cached on v4's row
    assert rows["v4"]["cached"] == {"value": None, "partials": [{"wrt": "v1", "text": "cos(v1)", "size": 1}]}
    assert rows["v1"]["cached"]["value"] == "input" and rows["v2"]["cached"]["value"] == "input"
    assert rows["v3"]["cached"] == {"value": None, "partials": []}
    assert data["gradient"] == {"x1": 2.5838531634528574, "x2": 2.0}
    assert data["cotangent"] == {"f": 1.0}
    text = run("trace", SEED, "--mode", "reverse", env={"NO_COLOR": "1", "COLUMNS": "200"}).stdout
    assert "v̄1 = v̄3·v2 + v̄4·cos(v1)" in text and "2.5838531634528574" in text
    assert "● cos(v1)" in text and "○ read" in text
    assert "gradient of the output" in text


def test_dual_numbers(tmp_path):
    cube = tmp_path / "cube.ad"
    cube.write_text("input x = 2.0\noutput y = x^3\n")
    data = ok_json("trace", cube, "--dual")
    assert data["dual"] is True
    assert rows_by_var(data)["v3"]["dual"] == "8 + 12ε"
    assert rows_by_var(data)["v1"]["dual"] == "2 + ε"
    text = run("trace", cube, "--dual", env={"NO_COLOR": "1", "COLUMNS": "80"}).stdout
    assert "8 + 12ε" in text
    two = rows_by_var(ok_json("trace", SEED, "--dual", "--seed", "x1", "--seed", "x2"))
    assert two["v3"]["dual"] == "6 + 3ε₁ + 2ε₂"
    assert two["v4"]["dual"] == "0.9092974268256817 - 0.4161468365471424ε₁"
    assert two["v5"]["dual"] == "6.909297426825682 + 2.5838531634528574ε₁ + 2ε₂"


def test_several_seeds_are_several_directions():
    data = ok_json("trace", SEED, "--seed", "x1", "--seed", "x2")
    assert [s["label"] for s in data["seeds"]] == ["x1", "x2"]
    assert data["tangent"] == {"f": [2.5838531634528574, 2.0]}
    assert rows_by_var(data)["v3"]["tangents"] == [3.0, 2.0]
    # vector forward mode: one sweep carries both directions, so f is evaluated (and counted) once
    assert data["cost"]["passes"] == 2 and data["cost"]["sweeps"] == 1
    assert data["cost"]["primal_sweeps"] == 1
    one = ok_json("trace", SEED, "--seed", "x1")
    assert data["totals"]["mults"]["primal"] == one["totals"]["mults"]["primal"] == 1
    assert data["totals"]["flops"]["primal"] == one["totals"]["flops"]["primal"] == 3
    assert data["totals"] == _counts(data["cost"])


def test_seed_elements_and_direction_option():
    sens = str(ROOT / "samples" / "sensitivity.ad")
    one = ok_json("trace", sens, "--seed", "k[1]")
    assert one["seeds"][0]["direction"] == {"k": [0.0, 1.0]}
    grad = json.loads(run("grad", sens, "--direction", "k=[0, 1]", "--json").stdout)
    assert one["tangent"]["y"][0] == grad["tangent"]["y"]
    both = ok_json("trace", sens, "--direction", "k=[0, 1]")
    assert both["tangent"]["y"][0] == grad["tangent"]["y"]
    assert one["totals"] == both["totals"]


# -- what reverse mode caches, marked exactly as the cost panel counts it ---------------------------

@pytest.mark.parametrize("path", SAMPLES + ["sink"], ids=lambda p: getattr(p, "name", p))
def test_reverse_trace_marks_exactly_the_cached_values(path, sink):
    path = sink if path == "sink" else path
    data = ok_json("trace", path, "--mode", "reverse")
    values = inputs = 0
    for row in data["rows"]:
        if row["cached"]["value"] == "intermediate":
            values += row["size"]
        elif row["cached"]["value"] == "input":
            inputs += row["size"]
        values += sum(p["size"] for p in row["cached"]["partials"])
    assert (values, inputs) == (data["cost"]["cached_values"], data["cost"]["cached_inputs"])
    assert data["cached"] == {"values": values, "inputs": inputs}


# -- the rows add up to grad's counts --------------------------------------------------------------

def _counts(cost):
    return {"mults": cost["mults"], "flops": cost["flops"]}


@pytest.mark.parametrize("path", SAMPLES + ["sink"], ids=lambda p: getattr(p, "name", p))
def test_trace_totals_equal_grad_counts(path, sink):
    path = sink if path == "sink" else path
    program = adcli.load(path)
    first = program.input_names[0]
    # forward: the default seed (1 on every element of the first input) = grad --direction first=1
    fwd = ok_json("trace", path)
    grad = json.loads(run("grad", path, "--direction", f"{first}=1", "--json").stdout)
    assert fwd["totals"] == _counts(fwd["cost"]) == _counts(grad["cost"])
    for name, tangents in fwd["tangent"].items():
        assert np.allclose(tangents[0], grad["tangent"][name], rtol=0, atol=0)
    # reverse: the default cotangent (1 on every output element) = grad --cotangent out=1 ...
    rev = ok_json("trace", path, "--mode", "reverse")
    cotangents = [f"--cotangent={name}=1" for name in program.output_names]
    grad = json.loads(run("grad", path, *cotangents, "--json").stdout)
    assert rev["totals"] == _counts(rev["cost"]) == _counts(grad["cost"])
    assert rev["cost"]["cached_values"] == grad["cost"]["cached_values"]
    assert rev["cost"]["cached_inputs"] == grad["cost"]["cached_inputs"]
    for name, g in rev["gradient"].items():
        assert np.array_equal(np.asarray(g), np.asarray(grad["cotangent"][name]))


def test_explicit_cotangent_counts(sink):
    rev = ok_json("trace", sink, "--cotangent", "z=[2, -1]")
    assert rev["mode"] == "reverse" and rev["cotangent"] == {"z": [2.0, -1.0]}
    grad = json.loads(run("grad", sink, "--cotangent", "z=[2, -1]", "--json").stdout)
    assert rev["totals"] == _counts(grad["cost"])
    y = adcli.load(sink).graph.nodes[adcli.load(sink).graph.outputs["y"]].var
    assert rows_by_var(rev)[y]["needed"] is False and rows_by_var(rev)[y]["adjoint"] is None


def test_library_rows_sum_to_the_cost():
    program = adcli.load(SEED)
    trace = forward_trace(program, [parse_seed(program, "x1")])
    assert trace.totals() == {"mults": {"primal": 1, "derivative": 2}, "flops": {"primal": 3, "derivative": 4}}
    trace = reverse_trace(program)
    assert trace.cached_marks() == (trace.cost.cached_values, trace.cost.cached_inputs) == (1, 2)


# -- vectors and matrices -------------------------------------------------------------------------

def test_elided_preview_full_and_one_node():
    mlp = str(ROOT / "samples" / "mlp.ad")
    env = {"NO_COLOR": "1", "COLUMNS": "200"}
    short = run("trace", mlp, env=env).stdout
    assert "…" in short and "--full shows all" in short
    full = run("trace", mlp, "--full", env=env).stdout
    assert len(full) > len(short)
    one = run("trace", mlp, "--mode", "reverse", "--node", "v9", env=env)
    assert one.exit_code == 0, one.output
    assert "v9 = tanh(v8)" in one.stdout and "v̄9 = v̄10·v5ᵀ" in one.stdout
    # tanh's partial 1 - v9² is remade from the kept value in the backward sweep
    assert "● value" in one.stdout and "● 1-v9²" not in one.stdout
    data = ok_json("trace", mlp, "--node", "v9")
    assert len(data["rows"]) == 1 and np.asarray(data["rows"][0]["value"]).shape == (8, 16)


def test_source_is_not_rich_markup():
    text = run("trace", str(ROOT / "samples" / "chain.ad"), env={"NO_COLOR": "1", "COLUMNS": "200"}).stdout
    assert "input x: vec[n] = ones" in text


# -- errors, as in grad ----------------------------------------------------------------------------

@pytest.mark.parametrize("args, code, words", [
    (["--seed", "x3"], 2, "no input named 'x3'"),
    (["--seed", "x1[0]"], 2, "scalar"),
    (["--seed", "x1", "--mode", "reverse"], 2, "conflicts with --mode reverse"),
    (["--direction", "x1=1", "--mode", "reverse"], 2, "conflicts with --mode reverse"),
    (["--cotangent", "f=1", "--mode", "forward"], 2, "conflicts with --mode forward"),
    (["--dual", "--mode", "reverse"], 2, "--dual"),
    (["--wrt", "x1", "--mode", "forward"], 2, "--wrt"),
    (["--node", "v9"], 2, "no node named 'v9'"),
    (["--node", "x"], 2, "not a node name"),
    (["--cotangent", "g=1"], 2, "no output named 'g'"),
    (["--direction", "f=1"], 2, "no input named 'f'"),
    (["--at", "x1=foo"], 1, "foo"),
    (["--mode", "sideways"], 2, "sideways"),
])
def test_errors(args, code, words):
    result = run("trace", SEED, *args)
    assert result.exit_code == code, result.output
    assert words in result.stderr
    assert len(result.stderr.strip().splitlines()[0]) < 200
    as_json = run("trace", SEED, *args, "--json")
    assert as_json.exit_code == code and as_json.stdout == ""
    error = json.loads(as_json.stderr)["error"]
    assert error["exit_code"] == code and words in error["message"]


def test_missing_file_is_usage():
    result = run("trace", "no/such/file.ad")
    assert result.exit_code == 2 and "no such file" in result.stderr


def test_seed_index_out_of_range():
    result = run("trace", str(ROOT / "samples" / "sensitivity.ad"), "--seed", "k[2]")
    assert result.exit_code == 2 and re.search(r"out of range", result.stderr)


# -- the guide's captured examples are still what adcli prints --------------------------------------

def test_docs_examples_are_current(monkeypatch):
    import shlex

    monkeypatch.chdir(ROOT)   # the examples name samples/... relative to the repository
    doc = (ROOT / "docs" / "inspect.md").read_text()
    blocks = re.findall(r"```console\n\$ adcli (.*?)\n(.*?)```", doc, re.S)
    assert len(blocks) >= 8
    for command, expected in blocks:
        result = run(*shlex.split(command), env={"NO_COLOR": "1", "COLUMNS": "80"})
        got = [line.rstrip() for line in (result.stdout + result.stderr).splitlines()]
        want = [line.rstrip() for line in expected.splitlines()]
        assert got == want, command


def test_long_traces_show_their_ends_unless_full():
    deep = str(ROOT / "samples" / "deep.ad")
    text = run("trace", deep, "--set", "depth=200", "--mode", "reverse",
               env={"NO_COLOR": "1", "COLUMNS": "200"}).stdout
    assert "103 more rows" in text and "403 rows: the first and last 150 are shown" in text
    assert len(ok_json("trace", deep, "--set", "depth=200", "--mode", "reverse")["rows"]) == 403


# -- loops: the first and last iterations, and a row for those between (issue 12) -------------------

from test_loops import PROGRAMS as LOOP_PROGRAMS  # noqa: E402

SIN_LOOP = """\
input x: scalar = 0.5
input w: scalar = 1.5
h = x
repeat 4 {
  h = sin(w * h) + h
}
output y = h * h
"""


def _loop_pair(source):
    return adcli.loads(source, loops="never"), adcli.loads(source, loops="always")


def _iteration_pairs(unrolled, looped_trace, count):
    """(row of the looped trace, row of the unrolled trace) for every body row shown: the
    body's operations in order against the same iteration's unrolled nodes, by operation."""
    pairs = []
    rows = {row_name(r): r for r in looped_trace["rows"] if r.get("kind") is None}
    unrolled_rows = {r["var"]: r for r in looped_trace["unrolled"]["rows"]}
    for iteration in (1, count):
        body = sorted((r for r in looped_trace["rows"] if r.get("iteration") == iteration and r["op"] != "input"),
                      key=lambda r: int(r["var"].rsplit(".", 1)[1]))   # (reverse rows: backward order)
        made = [n for n in unrolled.graph.nodes if n.repeat is not None and n.repeat[1] == iteration - 1
                and n.op not in ("input", "const") and n.var in unrolled_rows]
        assert [r["op"] for r in body] == [n.op for n in made], iteration
        pairs += [(rows[row_name(r)], unrolled_rows[n.var]) for r, n in zip(body, made)]
    assert pairs
    return pairs


def _same(a, b):
    if a is None or b is None:
        return a is None and b is None
    return np.array_equal(np.asarray(a, dtype=float), np.asarray(b, dtype=float))


LOOP_CASES = {"sin_loop": SIN_LOOP, **{k: LOOP_PROGRAMS[k] for k in
                                       ("tanh_layer", "two_carried", "matrix_state_with_slices", "long_with_a_tail")}}


@pytest.mark.parametrize("name", LOOP_CASES)
def test_a_loop_trace_shows_the_first_and_last_iterations_as_unrolled(name):
    unrolled, looped = _loop_pair(LOOP_CASES[name])
    loop = next(n for n in looped.graph.nodes if n.op == "loop")
    count = loop.attrs["count"]
    seed = [parse_seed(looped, looped.input_names[0])]
    for mode in ("forward", "reverse"):
        if mode == "forward":
            got, want = forward_trace(looped, seed), forward_trace(unrolled, seed)
        else:
            got, want = reverse_trace(looped), reverse_trace(unrolled)
        # the rows (and the row of the iterations between) add up to the run's counts
        assert got.totals() == want.totals() == {
            "mults": {"primal": got.cost.mults_primal, "derivative": got.cost.mults_derivative},
            "flops": {"primal": got.cost.flops_primal, "derivative": got.cost.flops_derivative}}
        data = got.to_json()
        data["unrolled"] = want.to_json()
        for a, b in _iteration_pairs(unrolled, data, count):   # digit for digit
            assert _same(a["value"], b["value"]), (mode, a["var"], b["var"])
            if mode == "forward":
                assert all(_same(s, t) for s, t in zip(a["tangents"], b["tangents"])), (a["var"], b["var"])
            else:
                assert _same(a["adjoint"], b["adjoint"]), (a["var"], b["var"])
        middle = [r for r in data["rows"] if r.get("kind") == "iterations"]
        assert len(middle) == 1 and middle[0]["iterations"] == count - 2
        assert (middle[0]["first"], middle[0]["last"]) == (2, count - 1)
        assert {r["iteration"] for r in data["rows"] if "iteration" in r} == {1, count}
        if mode == "reverse":   # the marks add up to the cost panel's cached values, loops included
            assert got.cached_marks() == (got.cost.cached_values, got.cost.cached_inputs)
            for name_, g in got.results.items():
                np.testing.assert_allclose(g, want.results[name_], rtol=1e-12, atol=1e-14)   # (sum order)
            # the backward sweep runs the last iteration first
            its = [r["iteration"] for r in data["rows"] if "iteration" in r]
            assert its == sorted(its, reverse=True)
        else:
            for name_, ts in got.results.items():
                assert np.array_equal(ts[0], want.results[name_][0])


def test_trace_on_the_command_line_traces_a_repeat_past_the_node_limit(tmp_path):
    path = tmp_path / "sin_loop.ad"
    path.write_text(SIN_LOOP)
    env = {"NO_COLOR": "1", "COLUMNS": "200"}
    text = run("trace", path, "--node-limit", "8", env=env)
    assert text.exit_code == 0, text.output
    assert "iteration 1 of 4" in text.stdout and "iteration 4 of 4" in text.stdout
    assert "iterations 2 … 3, not shown" in text.stdout
    assert "h = v3.5 of iteration 4" in text.stdout
    reverse = run("trace", path, "--node-limit", "8", "--mode", "reverse", env=env).stdout
    adjoints = reverse[reverse.index("adjoints, in the order"):]
    assert adjoints.index("iteration 4 of 4") < adjoints.index("iteration 1 of 4")
    assert "v̄3.5 = v̄3.1 of iteration 2" in reverse and "v̄2 = v̄3.2 of iteration 1" in reverse
    data = ok_json("trace", path, "--node-limit", "8", "--mode", "reverse")
    loop = rows_by_var(data)["v3"]
    assert loop["op"] == "loop" and loop["count"] == 4 and loop["carried"] == ["h"]
    middle = next(r for r in data["rows"] if r.get("kind") == "iterations")
    assert middle["loop"] == "v3" and middle["iterations"] == 2 and middle["cached"]["values"] > 0
    one = ok_json("trace", path, "--node-limit", "8", "--node", "v3.3@4")
    assert one["rows"][0]["var"] == "v3.3" and one["rows"][0]["iteration"] == 4
    for args, words in ((["--node", "v3.3"], "name one: v3.3@1 or v3.3@4"),
                        (["--node", "v3.3@2"], "no node named 'v3.3@2'")):
        result = run("trace", path, "--node-limit", "8", *args)
        assert result.exit_code == 2 and words in result.stderr, result.output
    unrolled = ok_json("trace", path)   # under the limit: unrolled, as before
    assert not any("iteration" in r or r.get("kind") for r in unrolled["rows"])


def test_loop_trace_json_keys_are_snake_case_and_documented(tmp_path):
    path = tmp_path / "sin_loop.ad"
    path.write_text(SIN_LOOP)
    doc = (ROOT / "docs" / "inspect.md").read_text()
    section = doc[doc.index("## JSON"):doc.index("## `adcli show`: the IR")]
    for mode in ("forward", "reverse"):
        data = ok_json("trace", path, "--node-limit", "8", "--mode", mode)
        keys = {key for row in data["rows"] for key in row}
        unrolled = {key for row in ok_json("trace", path, "--mode", mode)["rows"] for key in row}
        assert keys - unrolled == {"loop", "iteration", "count", "carried", "kind", "first", "last",
                                   "iterations"}
        for key in keys - unrolled:   # what loops add (the rest: the example row above)
            assert re.fullmatch(r"[a-z][a-z0-9_]*", key), key
            assert f"`{key}`" in section, key
        if mode == "reverse":
            assert "`values`" in section


def test_trace_json_gives_the_consts_the_run_set(tmp_path):
    """As adcli grad --json: with `inputs`, the consts set by --at reproduce the run."""
    path = tmp_path / "scaled.ad"
    path.write_text("const c = 2.0\ninput x = 0.5\noutput y = c * sin(x)\n")
    data = ok_json("trace", path, "--at", "c=3")
    assert data["consts"] == {"c": 3.0} and data["inputs"] == {"x": 0.5}
    assert data["tangent"]["y"][0] == pytest.approx(3 * math.cos(0.5), rel=1e-15)
    grad = json.loads(run("grad", path, "--at", "c=3", "--json").stdout)
    assert grad["consts"] == data["consts"]
    assert ok_json("trace", path, "--mode", "reverse")["consts"] == {}
