"""Binomial checkpointing in reverse mode (issue 12 item 3): a loop reversed keeping at
most S states. The recomputed steps against the closed form p(l, S) (adcli.checkpoint,
docs/counting.md), the derivatives against reverse mode keeping every step's residuals,
prediction = count, the compiled plans against the interpreter, measured memory falling
as S falls, --checkpoints auto under a memory limit, and the CLI (grad, compare)."""
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import adcli
from adcli.checkpoint import recomputations
from adcli.cli import cli
from adcli.errors import ResourceProblem, UsageProblem

sys.path.insert(0, str(Path(__file__).parent))
from test_loops import PROGRAMS  # noqa: E402

SCALAR_LOOP = """
input x: scalar = 0.3
input a: scalar = 0.9
repeat {l} {{
  x = sin(a * x) + 0.1
}}
output y = x * x
"""

LAYER = """
dim n = {n}
input x: vec[n] = 0.1 * randn(seed=1)
input W: mat[n, n] = randn(seed=2) / sqrt(n)
h = x
repeat {l} {{
  h = tanh(W @ h)
}}
output loss = sum(h^2)
"""


def _looped(source):
    program = adcli.loads(source, loops="always")
    assert any(n.op == "loop" for n in program.graph.nodes)
    return program


@pytest.mark.parametrize("steps, states", [(10, 1), (10, 2), (10, 3), (10, 5), (37, 1), (37, 4),
                                           (100, 5), (100, 10), (100, 99), (2, 1), (64, 3)])
def test_recomputed_steps_are_the_closed_form(steps, states):
    program = _looped(SCALAR_LOOP.format(l=steps))
    got = program.jacobian(mode="reverse", checkpoints=states)
    assert got.cost.recomputed_steps == recomputations(steps, states)
    assert program.predict("reverse", checkpoints=states).counts() == got.cost.counts()
    want = program.jacobian(mode="reverse")
    assert want.cost.recomputed_steps == 0 and want.cost.checkpoints is None
    np.testing.assert_array_equal(got.jacobian, want.jacobian)   # the same arithmetic, in the same order


def test_the_reference_numbers():
    """The issue's table: l = 10, S = 3 → 15; l = 100, S = 5 → 316; S = 1 → l(l − 1)/2."""
    for steps, states, want in [(10, 3, 15), (100, 5, 316), (30, 1, 435)]:
        program = _looped(SCALAR_LOOP.format(l=steps))
        assert program.jacobian(mode="reverse", checkpoints=states).cost.recomputed_steps == want


@pytest.mark.parametrize("states", [1, 2, 3, 50])
@pytest.mark.parametrize("name", PROGRAMS)
def test_derivatives_and_counts_with_checkpoints(name, states):
    """Every loop test program, at every chunk: the Jacobian of reverse mode without
    checkpoints, the prediction equal to the run, the compiled plans equal to the
    interpreter (check_plans)."""
    plain = adcli.loads(PROGRAMS[name], loops="always")
    passes = plain.predict("reverse").passes
    for chunk in sorted({1, 2, passes}):
        program = adcli.loads(PROGRAMS[name], loops="always")
        program.check_plans = True
        want = plain.jacobian(mode="reverse", chunk=chunk)
        got = program.jacobian(mode="reverse", chunk=chunk, checkpoints=states)
        for o in want.blocks:
            for w in want.blocks[o]:
                np.testing.assert_allclose(got.blocks[o][w], want.blocks[o][w], rtol=1e-13, atol=1e-15,
                                           err_msg=f"{o} wrt {w}, chunk {chunk}")
        predicted = program.predict("reverse", chunk=chunk, checkpoints=states)
        assert predicted.counts() == got.cost.counts(), f"chunk {chunk}"
        if got.cost.sweeps == 1:   # (later sweeps record their steps, partials included, again)
            assert got.cost.mults_derivative == want.cost.mults_derivative


def test_several_backward_sweeps_recompute_all_but_the_first_chain_again():
    """With k backward sweeps (a vector output, one row per sweep), the first uses the
    forward sweep's chain of saved states; every later one runs the schedule's other
    steps again: p(l, S) + (k − 1)(p(l, S) − (l − 1)) (docs/counting.md)."""
    source = """
input x: vec[3] = [0.1, 0.2, 0.3]
repeat 12 {
  x = sin(x) * 0.9 + 0.05
}
output y = x
"""
    program = _looped(source)
    for states in (1, 2, 4):
        p = recomputations(12, states)
        got = program.jacobian(mode="reverse", chunk=1, checkpoints=states).cost
        assert got.sweeps == 3
        assert got.recomputed_steps == p + 2 * (p - 11)
        one = program.jacobian(mode="reverse", chunk=3, checkpoints=states).cost
        assert one.sweeps == 1 and one.recomputed_steps == p


@pytest.mark.parametrize("name, count, states, chunk", [
    ("swap_and_rebind", 40, 1, 1), ("swap_and_rebind", 40, 3, 4), ("swap_and_rebind", 77, 2, 1),
    ("tanh_layer", 77, 2, None), ("tanh_layer", 40, 5, None), ("two_carried", 40, 3, None),
    ("long_with_a_tail", 40, 2, None)])
def test_prediction_equals_the_run_where_it_replays_work_items(name, count, states, chunk):
    """Long enough for a prediction to replay work items and count a one-slot item's steps
    in closed form (_Checkpointed._walk, _one_slot): every count and the memory model's
    inputs equal the run's. swap_and_rebind swaps its state, so the cotangents it hands on
    change kind every other step: no step of it is a model for the next; and with a
    sweep per output row its final sweep meets nodes no cotangent reaches, whose residuals
    must go all the same (its peak grew by 2 values every 2 steps)."""
    source = re.sub(r"repeat (\d+)", f"repeat {count}", PROGRAMS[name], count=1)
    program = _looped(source)
    got = program.jacobian(mode="reverse", chunk=chunk, checkpoints=states).cost
    predicted = program.predict("reverse", chunk=chunk, checkpoints=states)
    assert predicted.counts() == got.counts()
    assert predicted.peak_values_with_temporaries == got.peak_values_with_temporaries
    assert predicted.peak_arrays == got.peak_arrays
    plain = program.jacobian(mode="reverse", chunk=chunk).cost
    assert got.mults_derivative == plain.mults_derivative or got.sweeps > 1
    assert got.peak_live_values < plain.peak_live_values


def test_a_billion_steps_are_predicted_from_their_likes():
    """10^9 steps are predicted without walking them (about a second here): the
    recomputed steps are p(l, S); the primal work is the run's without checkpoints plus
    one step's per recomputed step; the states kept are those of any loop long enough to
    fill the S slots."""
    def program(steps):
        return _looped(SCALAR_LOOP.format(l=steps))

    one_step = program(11).predict("reverse").mults_primal - program(10).predict("reverse").mults_primal
    steps = 10 ** 9
    big = program(steps)
    plain = big.predict("reverse")
    for states in (10, 1000):
        got = big.predict("reverse", checkpoints=states)
        p = recomputations(steps, states)
        assert got.recomputed_steps == p
        assert got.mults_primal == plain.mults_primal + p * one_step
        assert got.mults_derivative == plain.mults_derivative
        assert got.cached_values == program(10 * states).predict("reverse", checkpoints=states).cached_values


def test_cached_values_fall_to_the_saved_states():
    """A 400-step layer of width 20: keeping every step's residuals caches each step's
    state (read by the matmul's VJP; tanh's partial is remade from its output, the next
    state; a step's tanh output is the next step's state, one value) and the partial of
    sum(h^2) outside the loop: 400 × 20 + 20. With S states: the S − 1 saved beyond the
    state going in (the caller's), one step's residuals (its state and its tanh output,
    two values once the steps are run again) and that partial."""
    program = _looped(LAYER.format(n=20, l=400))
    full = program.jacobian(mode="reverse").cost
    assert full.cached_values == 400 * 20 + 20
    for states in (2, 5, 20):
        cost = program.jacobian(mode="reverse", checkpoints=states).cost
        assert cost.cached_values == (states - 1) * 20 + 2 * 20 + 20


def test_measured_memory_falls_as_the_states_fall():
    program = _looped(LAYER.format(n=50, l=600))
    peaks = {}
    for states in (None, 64, 8, 2):
        result = program.jacobian(mode="reverse", checkpoints=states, measure_memory=True)
        peaks[states] = result.cost.peak_bytes
        assert result.cost.peak_bytes <= result.cost.predicted["peak_bytes"]
    assert peaks[None] > peaks[64] > peaks[8] > peaks[2]
    assert peaks[None] > 3 * peaks[8]


def test_auto_keeps_every_residual_when_they_fit_and_fewer_states_when_not():
    program = _looped(LAYER.format(n=30, l=500))
    roomy = program.jacobian(mode="reverse", checkpoints="auto")
    assert roomy.cost.checkpoints is None
    full = program.required_bytes("reverse", ["x", "W"], ["loss"], 1, 8)
    tight = program.required_bytes("reverse", ["x", "W"], ["loss"], 1, 8, 4)
    limit = (full + tight) // 2
    got = program.jacobian(mode="reverse", checkpoints="auto", memory_limit=limit, measure_memory=True)
    assert got.cost.checkpoints is not None and got.cost.checkpoints >= 4
    # the most states that fit: one more would not
    assert program.required_bytes("reverse", ["x", "W"], ["loss"], 1, 8, got.cost.checkpoints) <= limit
    if got.cost.checkpoints < 500:   # (more states than steps change nothing)
        assert program.required_bytes("reverse", ["x", "W"], ["loss"], 1, 8, got.cost.checkpoints + 1) > limit
    np.testing.assert_array_equal(got.jacobian, roomy.jacobian)
    with pytest.raises(ResourceProblem, match="even keeping one state per loop"):
        program.jacobian(mode="reverse", checkpoints="auto", memory_limit=program.resident_bytes(8) + 1000)


def test_auto_mode_picks_reverse_with_checkpoints_when_the_limit_demands_it():
    """Under a limit that every residual does not fit, reverse mode keeping fewer states
    still beats forward mode on a scalar loss of 930 inputs: the decision says so."""
    program = _looped(LAYER.format(n=30, l=500))
    full = program.required_bytes("reverse", ["x", "W"], ["loss"], 1, 8)
    decision = program.decide(memory_limit=full - 10_000, checkpoints="auto")
    assert decision.mode == "reverse"
    assert decision.plans["reverse"].checkpoints is not None
    assert "--checkpoints" in decision.reason and "over the memory limit" in decision.reason
    plain = program.decide(memory_limit=full - 10_000)
    assert plain.plans["reverse"].checkpoints is None


def test_explicit_checkpoints_are_not_said_to_be_over_the_limit():
    """--checkpoints S given, not chosen for the limit: the decision says how many states
    and steps, and nothing about a memory limit that did not choose them."""
    program = _looped(LAYER.format(n=4, l=50))
    decision = program.decide(checkpoints=3)
    reverse = decision.plans["reverse"]
    assert reverse.checkpoints == 3
    if decision.mode == "reverse":
        assert "at most 3 states" in decision.reason
    assert "over the memory limit" not in decision.reason


def test_checkpoints_that_change_nothing_say_why(tmp_path):
    """A program with no loop to checkpoint: the result's note (the CLI's mode line, JSON
    mode_note) says why, instead of ignoring --checkpoints in silence."""
    unrolled = adcli.loads(SCALAR_LOOP.format(l=5))   # a short repeat: unrolled by default
    note = unrolled.jacobian(mode="reverse", checkpoints=2).note
    assert note.startswith("--checkpoints 2 changes nothing: the repeat at line 4 is written out")
    assert 'loops="always"' in note
    assert "changes nothing" in unrolled.vjp({"y": 1.0}, checkpoints=2).note
    flat = adcli.loads("input x: scalar = 0.5\noutput y = sin(x)\n")
    assert flat.jacobian(mode="reverse", checkpoints=2).note == \
        "--checkpoints 2 changes nothing: this program has no repeat"
    growing = tmp_path / "growing.ad"
    growing.write_text("input x: vec[2] = [0.5, 0.1]\nrepeat 3 {\n  x = concat(x, x)\n}\noutput y = sum(x)\n")
    out = CliRunner().invoke(cli, ["grad", str(growing), "--checkpoints", "2", "--mode", "reverse", "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["mode_note"] == ("--checkpoints 2 changes nothing: the repeat at line 2 "
                                                  "cannot stay a loop: a value it carries changes shape, or "
                                                  "its body computes nothing")
    once = adcli.loads("input x: scalar = 0.5\nrepeat 1 {\n  x = sin(x)\n}\noutput y = x\n", loops="always")
    assert "runs 1 time: no loop of steps to checkpoint" in once.jacobian(mode="reverse", checkpoints=2).note
    assert _looped(SCALAR_LOOP.format(l=5)).jacobian(mode="reverse", checkpoints=2).note == ""


@pytest.mark.parametrize("states", [4, 5, 100])
def test_checkpoints_as_many_as_the_steps_say_what_they_keep(states):
    """S ≥ l − 1 states keep the state of every step of an l-step loop, and the binomial
    schedule still runs each step but the last once more, for its residuals
    (p(l, S) = l − 1): the note says so, and that without --checkpoints none runs again."""
    program = _looped(SCALAR_LOOP.format(l=5))
    result = program.jacobian(mode="reverse", checkpoints=states)
    assert result.cost.recomputed_steps == 4
    assert result.note == (f"--checkpoints {states} keeps the state every step starts from (no loop has more than "
                           "5 steps), not its residuals: 4 steps still run again to make them; without "
                           "--checkpoints every step's residuals are kept and none runs again")
    assert program.jacobian(mode="reverse").cost.recomputed_steps == 0
    fewer = program.jacobian(mode="reverse", checkpoints=3)
    assert fewer.note == "" and fewer.cost.recomputed_steps > 4


def test_memory_refusals_say_the_states_kept_and_hint_fewer():
    """A reverse-mode refusal names the states it was predicted keeping under
    --checkpoints S and hints fewer; without --checkpoints it hints --checkpoints auto,
    even where the repeat was written out for being small."""
    program = _looped(LAYER.format(n=40, l=300))
    with pytest.raises(ResourceProblem) as refused:
        program.jacobian(mode="reverse", checkpoints=5, memory_limit=60_000)
    assert "keeping at most 5 states per loop" in str(refused.value)
    assert "keep fewer loop states than --checkpoints 5" in refused.value.hint
    with pytest.raises(ResourceProblem) as refused:
        program.jacobian(mode="reverse", memory_limit=60_000)
    assert "--checkpoints auto" in refused.value.hint
    small = adcli.loads(LAYER.format(n=40, l=20))   # unrolled by default
    assert not small._loop_count()
    with pytest.raises(ResourceProblem) as refused:
        small.jacobian(mode="reverse", memory_limit=30_000)
    assert "--checkpoints auto" in refused.value.hint


def test_programs_without_loops_and_forward_mode_ignore_checkpoints():
    unrolled = adcli.loads(SCALAR_LOOP.format(l=5))   # a short repeat: unrolled by default
    assert unrolled.jacobian(mode="reverse", checkpoints=2).cost.checkpoints is None
    program = _looped(SCALAR_LOOP.format(l=5))
    assert program.jacobian(mode="forward", checkpoints=2).cost.checkpoints is None
    with pytest.raises(UsageProblem, match="--checkpoints"):
        program.jacobian(mode="reverse", checkpoints=0)


def test_one_vjp_with_checkpoints():
    program = _looped(LAYER.format(n=6, l=30))
    want = program.vjp({"loss": 1.0})
    got = program.vjp({"loss": 1.0}, checkpoints=3)
    np.testing.assert_array_equal(got.matrix, want.matrix)
    assert got.cost.recomputed_steps == recomputations(30, 3)


def _cli(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_grad_checkpoints_on_the_command_line(tmp_path):
    path = tmp_path / "rnn.ad"
    path.write_text(LAYER.format(n=8, l=40))   # 40 steps: unrolled unless --checkpoints keeps it a loop
    result = _cli("grad", path, "--mode", "reverse", "--checkpoints", "3", "--json")
    assert result.exit_code == 0, result.output
    cost = json.loads(result.stdout)["cost"]
    assert cost["checkpoints"] == 3 and cost["recomputed_steps"] == recomputations(40, 3)
    text = _cli("grad", path, "--mode", "reverse", "--checkpoints", "3", "--summary")
    assert "recomputed steps" in text.stdout
    plain = json.loads(_cli("grad", path, "--mode", "reverse", "--json").stdout)
    assert plain["cost"]["checkpoints"] is None and plain["cost"]["recomputed_steps"] == 0
    for bad in ("0", "-2", "x", "1.5"):
        result = _cli("grad", path, "--checkpoints", bad)
        assert result.exit_code == 2 and "--checkpoints" in result.stderr
    result = _cli("grad", path, "--mode", "forward", "--checkpoints", "2")
    assert result.exit_code == 2 and "forward mode keeps none" in result.stderr


def test_compare_shows_the_frontier(tmp_path):
    path = tmp_path / "rnn.ad"
    path.write_text(LAYER.format(n=8, l=40))
    result = _cli("compare", path, "--json", "--repeat", "1")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    states = [p["checkpoints"] for p in data["frontier"]]
    assert states == [1, 2, 4, 8, 16, 32, None]
    for point in data["frontier"]:
        want = 0 if point["checkpoints"] is None else recomputations(40, point["checkpoints"])
        assert point["recomputed_steps"] == want
        assert point["peak_bytes"] is not None and point["time_s"] is not None
    kept = [p["cached_values"] for p in data["frontier"]]
    assert kept == sorted(kept)   # more states: more kept
    text = _cli("compare", path, "--repeat", "1")
    assert "reverse mode through loops" in text.stdout and "recomputed" in text.stdout


def test_compare_without_a_loop_has_no_frontier(tmp_path):
    path = tmp_path / "f.ad"
    path.write_text("input x: vec[3] = 1\noutput y = sum(sin(x))\n")
    data = json.loads(_cli("compare", path, "--json", "--repeat", "1").stdout)
    assert data["frontier"] == []
    result = _cli("compare", path, "--plot", tmp_path / "f.png")
    assert result.exit_code == 2 and "--plot" in result.stderr


def test_compare_plots_the_frontier(tmp_path):
    pytest.importorskip("matplotlib", reason="--plot needs the optional matplotlib extra")
    path = tmp_path / "rnn.ad"
    path.write_text(LAYER.format(n=4, l=12))
    image = tmp_path / "frontier.png"
    result = _cli("compare", path, "--repeat", "1", "--plot", image)
    assert result.exit_code == 0, result.output
    assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_says_when_checkpointing_beats_the_pick(tmp_path):
    """A 3,000-step layer of width 64 under 1 MB: every residual needs about 5.4 MB, so
    --mode auto picks forward (64 passes); reverse mode keeping fewer states fits and is
    predicted faster: the recommendation keeps grad's pick and says so, with the command."""
    path = tmp_path / "deep.ad"
    path.write_text(LAYER.format(n=64, l=3000))
    program = adcli.load(str(path))
    assert program._loop_count() == 0   # 3,000 small steps: unrolled, as grad runs them
    looped = adcli.load(str(path), loops="always")
    from adcli.compare import recommend

    rec = recommend(program, {}, 10**6, None, None, "numpy", "float64", looped)
    assert rec["mode"] == "forward"
    assert rec["checkpointed"] and "--checkpoints" in rec["checkpointed"] and "faster" in rec["checkpointed"]
    assert rec["checkpointed"] in rec["reason"]
    roomy = recommend(program, {}, 10**9, None, None, "numpy", "float64", looped)
    assert roomy["mode"] == "reverse" and roomy["checkpointed"] is None
