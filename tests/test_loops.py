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
        # live values than unrolled, and no more than the results' values and tangents
        results = sum(n.size for n in looped.graph.nodes if n.op == "loop_out")
        assert want.cost.peak_live_values <= got.cost.peak_live_values, chunk
        assert got.cost.peak_live_values <= want.cost.peak_live_values + 2 * (chunk + 1) * results, chunk
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


def test_loops_that_cannot_stay_loops_are_unrolled():
    # the shape of a carried value changes, or the body reads the index: unrolled as before
    grows = "input x: vec[1] = [1.0]\nrepeat 3 {\n  x = concat(x, x)\n}\noutput y = sum(x)\n"
    indexed = "input x: vec[3] = [1.0, 2.0, 3.0]\ns = 0.0\nrepeat 3 as t {\n  s = s + x[t]\n}\noutput y = s\n"
    for source in (grows, indexed):
        program = adcli.loads(source, loops="always")
        assert not any(n.op == "loop" for n in program.graph.nodes)


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


def test_a_loop_runs_no_more_than_its_budget():
    # 2.5 body nodes per node of the limit: past that, refused as the unrolled repeat is
    source = "input x: scalar = 0.5\nrepeat 5000 {\n  x = sin(x)\n}\noutput y = x\n"
    with pytest.raises(adcli.errors.AdError) as caught:
        adcli.loads(source, node_limit=1000)
    assert "node limit of 1,000" in caught.value.message


@pytest.mark.parametrize("name", ["long_with_a_tail", "two_carried", "matrix_state_with_slices"])
def test_predictions_count_steady_iterations_exactly(name):
    """A prediction multiplies out the iterations that start as the one before did
    (interpret._Steady): over 120 iterations every figure must still be the run's."""
    source = PROGRAMS[name]
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


@pytest.mark.parametrize("mode", ["forward", "reverse"])
def test_a_loop_run_by_the_interpreter_stays_within_its_prediction(mode, monkeypatch):
    """A loop too long to keep as compiled plans is run by the interpreter, iteration by
    iteration, keeping a record per iteration in reverse mode: the memory prediction
    counts those (interpret.LOOP_RECORD_WIDE, memory.LOOP_BYTES)."""
    from adcli import execute

    monkeypatch.setattr(execute, "MAX_CACHED_EQUATIONS", 50)   # every run too large to keep
    source = "input x = 0.5\nrepeat 2000 {\n  x = sin(x)\n}\noutput y = x\n"
    program = adcli.loads(source, loops="always")
    for _ in range(2):
        result = program.jacobian(mode=mode, measure_memory=True)
        assert result.cost.peak_bytes <= result.cost.predicted["peak_bytes"]
    assert program._too_large and not program._compiled
