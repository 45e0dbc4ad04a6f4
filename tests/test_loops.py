"""Repeats that stay loops (issue 12, part 1, first step): a `loop` node whose body graph
is built once and run once per iteration. Checked against the same file unrolled
(loops="never"): the same values and derivatives, in both modes and at every chunk, and
the same counts; the compiled plans against the interpreter (check_plans)."""
import math

import numpy as np
import pytest

import adcli
from adcli.errors import UsageProblem

PROGRAMS = {
    "tanh_layer": """
input x: vec[3] = [0.1, 0.2, 0.3]
input W: mat[3, 3] = 0.3 * randn(seed=1)
h = x
repeat 5 {
  h = tanh(W @ h + 0.5)
}
output y = sum(h * h)
""",
    "two_carried": """
input x: vec[4] = [0.1, -0.2, 0.3, 0.4]
input U: mat[4, 4] = 0.2 * randn(seed=2)
h = x
c = 0.5 * x
k = 1.0
repeat 4 {
  g = sigmoid(U @ h)
  c = g * c + (1 - g) * tanh(h)
  h = tanh(c) * g
  k = k * 2
}
output y = sum(h) + sum(c * c)
output z = g * k
""",
    "swap_and_rebind": """
input a: vec[2] = [0.3, 0.7]
input b: vec[2] = [1.1, -0.4]
input s: scalar = 0.9
repeat 3 {
  t = a
  a = b * s
  b = sin(t)
  unused = a + b
}
output y = a * b
output w = t
""",
    "matrix_state_with_slices": """
input A: mat[3, 3] = 0.4 * randn(seed=3)
input v: vec[3] = [1.0, 2.0, 3.0]
M = A
repeat 6 {
  M = 0.5 * (M @ A) + transpose(M)
  r = M[0:2, :] @ v
}
output y = sum(M) + sum(r * r)
""",
    # long enough that a prediction counts the steady iterations without walking them
    "long_with_a_tail": """
input x: vec[3] = [0.3, -0.1, 0.2]
input W: mat[3, 3] = 0.3 * randn(seed=4)
h = x
s = 0.0 * x
repeat 40 {
  s = s + h
  h = tanh(W @ h) + 0.1 * s
  last = sigmoid(h)
}
output y = sum(h) + sum(last)
""",
    # a repeat inside a repeat: the inner one a loop in the outer one's body
    "nested": """
input x: vec[3] = [0.1, 0.2, 0.3]
input W: mat[3, 3] = 0.4 * randn(seed=1)
h = x
repeat 4 {
  g = h
  repeat 3 {
    g = tanh(W @ g) + 0.1 * h
  }
  h = 0.5 * h + g
}
output y = sum(h * h)
""",
    # the inner repeat reads the outer index: unrolled inside the outer loop's body;
    # one with an index of its own stays a loop there
    "nested_with_indices": """
input x: vec[2] = [0.3, -0.2]
const X: mat[5, 2] = randn(seed=2)
input a: scalar = 0.7
h = x
repeat 5 as t {
  repeat 2 as j {
    h = sin(a * h + X[t] * 0.1 * j)
  }
  repeat 3 as k {
    h = h * (1 - 0.1 * k) + 0.01
  }
  h = h + 0.01 * t
}
output y = h
""",
    # the outer loop carries a name that only its inner repeats assign (an inner repeat of
    # one iteration: unrolled in the body)
    "carried_by_inner_repeats": """
input x: scalar = 0.4
input y: vec[2] = [0.7, -0.3]
h = y
repeat 3 {
  repeat 1 {
    h = tanh(0.5 * h) + sigmoid(x)
  }
  repeat 2 {
    h = h * x + 0.1
  }
}
output o = h[0] + sum(h)
""",
    "in_a_def": """
def walk(z, p) {
  repeat 3 {
    z = z * p + cos(z)
  }
  return z
}
input x: vec[2] = [0.2, 0.5]
input p: scalar = 0.8
output y = walk(x, p) + walk(2 * x, p)
""",
    # issue 12 item 2: bodies that read their index stay loops (positions moving by a fixed
    # step per iteration, the index as a number)
    "rnn_per_step_rows_and_weights": """
input x: vec[3] = [0.1, 0.2, 0.3]
input Ws: mat[15, 3] = 0.3 * randn(seed=6)
input U: mat[3, 4] = 0.2 * randn(seed=7)
input X: mat[5, 4] = randn(seed=8)
h = x
repeat 5 as t {
  h = tanh(Ws[t * 3:(t + 1) * 3, :] @ h + U @ X[t])
}
output y = sum(h * h)
""",
    "index_as_a_number": """
input x: vec[2] = [0.4, -0.3]
input a: scalar = 0.7
s = 0.0
h = x
repeat 4 as t {
  s = s + 0.1 * t + a * t
  h = sin(t * h) + cos(h / (t + 1)) * a
}
output y = sum(h) * s
""",
    "offsets_from_both_ends": """
input v: vec[8] = linspace(-1, 1)
input M: mat[3, 6] = 0.5 * randn(seed=9)
h = v[0:2]
repeat 3 as t {
  h = tanh(h * v[t + 1] + v[-1 - t] + M[1:3, (2 * t + 4) / 2] + v[2 * t:2 * t + 2])
  c = M[:, t] * v[t + 2]
}
output y = sum(h) + sum(c * c)
output z = h * c[0]
""",
    "count_of_two_with_a_block_of_rows": """
input A: mat[4, 3] = 0.5 * randn(seed=10)
input x: vec[3] = [0.2, 0.1, -0.3]
h = x
repeat 2 as t {
  h = sigmoid(sum(A[2 * t:2 * t + 2] * h, axis=0) + 0.5 * t)
}
output y = h
""",
}

COUNTS = ("mults_primal", "flops_primal", "mults_derivative", "flops_derivative", "ops", "values_moved",
          "cached_values", "cached_inputs", "passes", "sweeps")


def _pair(source):
    unrolled = adcli.loads(source, loops="never")
    looped = adcli.loads(source, loops="always")
    assert not any(n.op == "loop" for n in unrolled.graph.nodes)
    assert any(n.op == "loop" for n in looped.graph.nodes)
    looped.check_plans = True   # the compiled plans against the interpreter, every run
    return unrolled, looped


@pytest.mark.parametrize("name", PROGRAMS)
def test_values_match_the_unrolled_program(name):
    unrolled, looped = _pair(PROGRAMS[name])
    want, got = unrolled.evaluate(), looped.evaluate()
    assert want.keys() == got.keys()
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("mode", ["forward", "reverse"])
@pytest.mark.parametrize("name", PROGRAMS)
def test_derivatives_and_counts_match_the_unrolled_program(name, mode):
    unrolled, looped = _pair(PROGRAMS[name])
    passes = unrolled.predict(mode).passes
    for chunk in sorted({1, 2, passes}):
        want = unrolled.jacobian(mode=mode, chunk=chunk)
        got = looped.jacobian(mode=mode, chunk=chunk)
        for o in want.blocks:
            for w in want.blocks[o]:
                np.testing.assert_allclose(got.blocks[o][w], want.blocks[o][w], rtol=1e-12, atol=1e-14,
                                           err_msg=f"{o} wrt {w}, chunk {chunk}")
        for figure in COUNTS:
            assert getattr(got.cost, figure) == getattr(want.cost, figure), (figure, chunk)
        # a loop keeps each iteration's results to its end (docs/counting.md): never fewer
        # live values than unrolled, and no more than the results' values and tangents, and
        # in reverse mode the sums of the closed-over inputs' cotangents (an iteration's
        # backward adds to the sum so far while the loop still holds it: _loop_backward)
        results = sum(n.size for n in looped.graph.nodes if n.op == "loop_out")
        closed = sum(looped.graph.nodes[i].size for n in looped.graph.nodes if n.op == "loop"
                     for i in n.inputs[n.attrs["carried"]:] if looped.graph.nodes[i].op == "input")
        extra = 2 * (chunk + 1) * results + (chunk * closed if mode == "reverse" else 0)
        assert want.cost.peak_live_values <= got.cost.peak_live_values, chunk
        assert got.cost.peak_live_values <= want.cost.peak_live_values + extra, chunk
        predicted = looped.predict(mode, chunk=chunk)   # prediction = count, with loops
        for figure in COUNTS + ("peak_live_values",):
            assert getattr(predicted, figure) == getattr(got.cost, figure), (figure, chunk)


def test_a_repeat_past_the_node_limit_becomes_a_loop():
    source = "input x: scalar = 0.5\nrepeat 5000 {\n  x = sin(x)\n}\noutput y = x\n"
    with pytest.raises(adcli.errors.AdError):
        adcli.loads(source, node_limit=3000, loops="never")
    program = adcli.loads(source, node_limit=3000)
    assert [n.op for n in program.graph.nodes] == ["input", "loop", "loop_out"]
    # the chain rule by hand: dy/dx = prod cos(x_i)
    x, slope = 0.5, 1.0
    for _ in range(5000):
        slope *= math.cos(x)
        x = math.sin(x)
    for mode in ("forward", "reverse"):
        result = program.jacobian(mode=mode)
        assert result.value["y"] == pytest.approx(x, rel=1e-12)
        assert result.blocks["y"]["x"] == pytest.approx(slope, rel=1e-10)
        assert result.cost.mults_derivative == 4999   # one product per step after the first


# bodies that use their index other than as a position moving by a fixed step per
# iteration, or as a number: unrolled, and why (the node limit's hint says it)
NOT_LOOPS = {
    "t * t": ("s = s + X[t * t]", "it multiplies t by itself"),
    "a slice's length": ("s = s + sum(X[0:(t + 1) * 2])", "a slice's length changes with t"),
    "an axis": ("s = s + sum(sum(M, axis=t))", "an axis changes with t"),
    "a step": ("s = s + sum(X[t:t + 4:2])", "a slice with a step moves with t"),
    "wrapping": ("s = s + X[t - 1]", "a position counts from the end in some iterations only"),
    "a gather": ("s = s + sum(X[[t, 0]])", "a gather's positions change with t"),
    "integer data": ("s = s + X[lab[t]]", "a gather's positions change with t"),
    "integer data from t": ("s = s + sum(X[lab[0:2] + t])", "a gather's positions change with t"),
    "the index itself": ("s = s + X[t]\n  u = t", "it binds a name to its index t itself"),
}


def _not_a_loop(line, count=3):
    return (f"const X: vec[2000] = linspace(0, 1)\nconst lab: ivec[40] = arange\nconst M: mat[2, 3] = 1\n"
            f"input a = 0.5\ns = a\n"
            f"repeat {count} as t {{\n  {line}\n}}\noutput y = s\n")


def test_loops_that_cannot_stay_loops_are_unrolled():
    # the shape of a carried value changes, or the body uses the index otherwise than as
    # a moving position or a number: unrolled as before
    grows = "input x: vec[1] = [1.0]\nrepeat 3 {\n  x = concat(x, x)\n}\noutput y = sum(x)\n"
    for source in [grows] + [_not_a_loop(line, count=2 if "axis" in line else 3) for line, _ in NOT_LOOPS.values()]:
        program = adcli.loads(source, loops="always")
        assert not any(n.op == "loop" for n in program.graph.nodes), source
        assert program.evaluate() == adcli.loads(source, loops="never").evaluate()


@pytest.mark.parametrize("what", [what for what in NOT_LOOPS if what != "an axis"])   # (valid twice)
def test_the_node_limit_says_why_an_indexed_repeat_is_unrolled(what):
    line, why = NOT_LOOPS[what]
    with pytest.raises(adcli.errors.AdError) as caught:
        adcli.loads(_not_a_loop(line, count=40), node_limit=30)
    assert "node limit of 30" in caught.value.message
    assert f"cannot stay a loop: {why})" in caught.value.hint


def test_an_indexed_repeat_past_the_node_limit_stays_a_loop():
    source = ("const X: mat[901, 2] = randn(seed=1)\ninput W: mat[2, 2] = 0.1 * randn(seed=2)\n"
              "input h: vec[2] = [0.1, 0.2]\nrepeat 900 as t {\n"
              "  h = tanh(W @ h + X[t] - X[t + 1] + 0.001 * t)\n}\noutput y = sum(h)\n")
    program = adcli.loads(source, node_limit=3000)
    assert [n.op for n in program.graph.nodes].count("loop") == 1
    unrolled = adcli.loads(source, loops="never")
    for mode in ("forward", "reverse"):
        want, got = unrolled.jacobian(mode=mode), program.jacobian(mode=mode)
        np.testing.assert_allclose(got.jacobian, want.jacobian, rtol=1e-12, atol=1e-15)
        for figure in COUNTS:
            assert getattr(got.cost, figure) == getattr(want.cost, figure), (mode, figure)
        assert program.predict(mode).counts() == got.cost.counts()


@pytest.mark.parametrize("loops", ["always", "auto"])
def test_a_position_out_of_range_is_said_as_unrolled(loops):
    """The iteration whose position leaves the axis is found without unrolling, and said
    as the unrolled repeat says it: same sentence, same place, the iteration named."""
    for body, count in [("s = s + X[t + 3]", 40), ("s = s + sum(X[2 * t:2 * t + 2])", 40),
                        ("s = s + X[-1 - t]", 45), ("s = s + X[t]\n  s = s * X[40 - t]", 3),
                        ("s = s + X[t / 2]", 3)]:   # (not whole at t = 1: unrolled to say so)
        source = f"const X: vec[40] = linspace(0, 1)\ninput a = 0.5\ns = a\nrepeat {count} as t {{\n  {body}\n}}\noutput y = s\n"
        with pytest.raises(adcli.errors.AdError) as unrolled:
            adcli.loads(source, loops="never")
        with pytest.raises(adcli.errors.AdError) as looped:
            adcli.loads(source, loops=loops, node_limit=60)
        assert "(in iteration t = " in unrolled.value.message
        assert str(looped.value) == str(unrolled.value)
        assert looped.value.location == unrolled.value.location


def test_a_count_of_one_reads_its_index_as_unrolled():
    source = PROGRAMS["count_of_two_with_a_block_of_rows"].replace("repeat 2 ", "repeat 1 ")
    program = adcli.loads(source, loops="always")
    assert not any(n.op == "loop" for n in program.graph.nodes)   # one iteration: nothing to loop
    assert program.jacobian(mode="reverse").value["y"] == pytest.approx(
        adcli.loads(source, loops="never").jacobian(mode="reverse").value["y"], rel=1e-15)


def test_trace_shows_a_loop_by_its_first_and_last_iterations(tmp_path):
    import json

    from click.testing import CliRunner

    from adcli.cli import cli

    path = tmp_path / "deep.ad"
    path.write_text("input x: scalar = 0.5\nrepeat 200 {\n  x = sin(x)\n}\noutput y = x\n")
    for mode in ("forward", "reverse"):
        result = CliRunner().invoke(cli, ["trace", str(path), "--node-limit", "100", "--mode", mode, "--json"])
        assert result.exit_code == 0, result.output
        rows = json.loads(result.stdout)["rows"]
        assert {r["iteration"] for r in rows if "iteration" in r} == {1, 200}
        assert [r["iterations"] for r in rows if r.get("kind") == "iterations"] == [198]


def test_the_node_limit_applies_to_the_graph_as_written():
    """A loop's body counts once against the node limit, whatever the count: 10^9 steps
    of sin build into three nodes, and predicting either mode walks a few iterations (the
    per-iteration facts settle: adcli.interpret.Settling); reverse mode is then refused by
    the memory its residuals would need, in one sentence, before anything runs."""
    source = "input x: scalar = 0.5\nrepeat 1000000000 {\n  x = sin(x)\n}\noutput y = x\n"
    program = adcli.loads(source, node_limit=1000)
    assert [n.op for n in program.graph.nodes] == ["input", "loop", "loop_out"]
    forward, reverse = program.predict("forward"), program.predict("reverse")
    assert forward.flops_primal == 10**9   # sin: a flop per step
    # cos (a flop) and the tangent times it (a mult), but at the first step: the seed is 1
    assert forward.mults_derivative == 10**9 - 1 and forward.flops_derivative == 2 * 10**9 - 1
    assert reverse.cached_values == 10**9                              # cos x per step
    schedule = program._analysis(["x"], ["y"]).loops[program.graph.nodes[1].id]
    assert len(schedule.depends.head) + len(schedule.live.tail) + len(schedule.needed.tail) < 10
    with pytest.raises(adcli.errors.ResourceProblem, match="over the memory limit"):
        program.jacobian(mode="reverse", memory_limit=2**30)


STEADY_INDEXED = """
input x: vec[3] = [0.1, 0.2, 0.3]
input Ws: mat[363, 3] = 0.3 * randn(seed=6)
input X: mat[121, 3] = randn(seed=8)
h = x
s = 0.0
repeat 120 as t {
  h = tanh(Ws[t * 3:(t + 1) * 3, :] @ h + X[t + 1] * 0.01 * t)
  s = s + sum(h) * X[t, 0]
}
output y = sum(h * h) + s
"""


@pytest.mark.parametrize("name", ["long_with_a_tail", "two_carried", "matrix_state_with_slices", "indexed"])
def test_predictions_count_steady_iterations_exactly(name):
    """A prediction multiplies out the iterations that start as the one before did
    (interpret._Steady): over 120 iterations every figure must still be the run's. An
    index moving positions changes no count: its iterations are steady too."""
    source = STEADY_INDEXED if name == "indexed" else PROGRAMS[name]
    for count in ("40", "4", "6"):
        source = source.replace(f"repeat {count} ", "repeat 120 ")
    program = adcli.loads(source, loops="always")
    for mode in ("forward", "reverse"):
        for chunk in (1, None):
            predicted = program.predict(mode, chunk=chunk)
            with np.errstate(all="ignore"):
                counted = program.jacobian(mode=mode, chunk=chunk).cost
            for figure in COUNTS + ("peak_live_values",):
                assert getattr(predicted, figure) == getattr(counted, figure), (mode, chunk, figure)


def test_problems_inside_a_loop_are_said_without_a_wrong_node(tmp_path):
    """The node-by-node diagnoses need the program unrolled: inside a loop they say so,
    with the repeat's line, instead of blaming the loop's result or losing the place."""
    from click.testing import CliRunner

    from adcli.cli import cli

    nan = tmp_path / "nan.ad"
    nan.write_text("input x: vec[3] = 1\nrepeat 50 {\n  x = x + log(x - 3)\n}\noutput y = sum(x)\n")
    result = CliRunner().invoke(cli, ["grad", str(nan), "--node-limit", "80", "--mode", "reverse"])
    assert "the repeat at line 2" in result.output and "loop_out" not in result.output
    singular = tmp_path / "singular.ad"
    singular.write_text("input A: mat[3, 3] = 1\ninput x: vec[3] = 1\nrepeat 50 {\n  x = solve(A, x)\n}\n"
                        "output y = sum(x)\n")
    result = CliRunner().invoke(cli, ["grad", str(singular), "--node-limit", "40"])
    assert result.exit_code == 1
    assert "singular.ad:3:" in result.output and "inside this loop" in result.output
    assert "Traceback" not in result.output


def test_show_says_a_loop_in_a_line():
    program = adcli.loads(PROGRAMS["tanh_layer"], loops="always")
    from adcli.show import ir_lines

    text = "\n".join(ir_lines(program.graph))
    assert "loop v1 v2 v3 count=5 body=3 nodes carrying h" in text
    assert "Graph(" not in text


WIDE_BODY = ("repeat 2000 {\n  u = sin(0.9 * x)\n  v = exp(-u * u) * cos(x)\n  w = tanh(v + u) * sigmoid(x)\n"
             "  x = u + 0.5 * w + 0.1 * v")


@pytest.mark.parametrize("body", ["repeat 2000 {\n  x = sin(x)", "repeat 2000 as t {\n  x = sin(t * x) / (t + 1)",
                                  WIDE_BODY])
@pytest.mark.parametrize("mode", ["forward", "reverse"])
def test_a_loop_run_by_the_interpreter_stays_within_its_prediction(mode, body, monkeypatch):
    """A loop too long to keep as compiled plans is run by the interpreter, iteration by
    iteration, keeping a record per iteration in reverse mode: the memory prediction
    counts those (interpret.LOOP_RECORD_WIDE, memory.LOOP_BYTES), and each iteration's
    index where the backward reads it (interpret.LOOP_INDEX_WIDE)."""
    from adcli import execute

    monkeypatch.setattr(execute, "MAX_CACHED_EQUATIONS", 50)   # every run too large to keep
    source = f"input x = 0.5\n{body}\n}}\noutput y = x\n"
    program = adcli.loads(source, loops="always")
    for _ in range(2):
        result = program.jacobian(mode=mode, measure_memory=True)
        assert result.cost.peak_bytes <= result.cost.predicted["peak_bytes"]
        if mode == "reverse":   # (forward mode's few KB: the fixed LOOP_BYTES decide the ratio)
            assert result.cost.predicted["peak_bytes"] <= 2 * result.cost.peak_bytes
    assert program._too_large and not program._compiled


@pytest.mark.parametrize("body", [WIDE_BODY, "repeat 1000 {\n  x = tanh(x * W)"])
def test_a_loop_in_compiled_plans_stays_within_its_prediction(body):
    """Compiled plans keep an iteration's residuals as entries of the dict their forward
    sweep returns, which cost less than the interpreter's records: the prediction counts
    those entries (interpret.PLAN_RECORD_WIDE), never under (the wide body, 12 residual
    keys an iteration)."""
    source = f"input x: vec[10] = 0.1 * randn(seed=1)\nconst W: vec[10] = randn(seed=2)\n{body}\n}}\n" \
             "output y = sum(x)\n"
    program = adcli.loads(source, loops="always")
    result = program.jacobian(mode="reverse", measure_memory=True)
    assert result.cost.peak_bytes <= result.cost.predicted["peak_bytes"]


def test_a_loop_too_long_for_kept_plans_is_not_staged(monkeypatch):
    """Staged, each iteration records an equation per body node at least: past the plans'
    limit nothing would be kept, so the run is interpreted at once (a 100,000-step loop
    spent more time staging than running)."""
    from adcli import api, execute

    monkeypatch.setattr(execute, "MAX_CACHED_EQUATIONS", 500)
    source = "const X: mat[400, 2] = randn(seed=1)\ninput s: vec[2] = [0.1, 0.2]\nrepeat 400 as t {\n" \
             "  s = sin(s * X[t])\n}\noutput y = sum(s)\n"
    program = adcli.loads(source, loops="always")

    class Refused(execute.Stager):
        def __init__(self, *args, **kwargs):
            raise AssertionError("staged")
    monkeypatch.setattr(api, "Stager", Refused)
    for mode in ("forward", "reverse"):
        result = program.jacobian(mode=mode)
        assert result.cost.counts() == program.predict(mode).counts()
    short = adcli.loads(source.replace("400 as", "2 as"), loops="always")
    with pytest.raises(AssertionError, match="staged"):   # a short loop is still compiled
        short.jacobian(mode="reverse")


def test_evaluating_a_loop_too_long_for_plans_interprets_it(monkeypatch):
    """Program.evaluate (finite differences, compare's checks) runs a loop past the plans'
    limit by the interpreter, iteration by iteration, as the modes do: staged, every
    iteration was an equation of one plan (10^9 steps never ended)."""
    from adcli import execute

    monkeypatch.setattr(execute, "MAX_CACHED_EQUATIONS", 50)
    program = adcli.loads("input x: scalar = 0.3\nrepeat 400 {\n  x = sin(x)\n}\noutput y = x\n", loops="always")
    want = 0.3
    for _ in range(400):
        want = np.sin(want)
    assert float(program.evaluate()["y"]) == pytest.approx(want, rel=1e-14)
    assert not any(key[0] == "evaluate" for key in program._compiled)


@pytest.mark.parametrize("steps", [8, 400])
def test_evaluating_an_unrolled_program_too_large_for_plans_interprets_it(steps, monkeypatch):
    """An unrolled program whose primal plan is over the plans' limit is interpreted by
    Program.evaluate, whether that is seen from its node count (400 steps: 402 nodes) or
    only once staged (8 steps: 18 nodes, but softmax stages 5 equations a node, 41 in
    all). It used to fail with an internal IndexError (`adcli hessian` on a 150,000-step
    repeat, checking against differences)."""
    from adcli import execute

    monkeypatch.setattr(execute, "MAX_CACHED_EQUATIONS", 30)
    program = adcli.loads(f"input x: vec[3] = [0.1, 0.2, 0.3]\nrepeat {steps} {{\n  x = softmax(x) * 2\n}}\n"
                          "output y = sum(x * x)\n", loops="never", node_limit=10_000)
    want = np.array([0.1, 0.2, 0.3])
    for _ in range(steps):
        want = np.exp(want) / np.exp(want).sum() * 2
    assert (len(program.graph.nodes) > 30) == (steps == 400)
    for _ in range(2):
        assert float(program.evaluate()["y"]) == pytest.approx(float(np.sum(want * want)), rel=1e-13)
    assert not any(key[0] == "evaluate" for key in program._compiled)
