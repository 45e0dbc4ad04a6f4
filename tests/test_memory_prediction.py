"""Memory predictions are honest: on every sample, in both modes and at every chunk
size, the predicted peak of the sweeps is at least the peak tracemalloc measures
and at most twice it; the chunk choice and the refusal use that same prediction."""
import tracemalloc

import pytest

import adcli
from conftest import SAMPLES

CASES = [(path, mode, dtype) for path in SAMPLES for mode in ("forward", "reverse")
         for dtype in ("float64", "float32")]


# The same run's traced peak moves by up to about 1 KB with the process's state (what
# earlier tests left in Python's allocator): within that, a miss is noise, not the model.
NOISE_BYTES = 1024


# Known over-predictions past twice the measured peak, each with why (docs/counting.md).
# bundle_adjustment.ad, reverse, float32, 45 directions a sweep: a scatter-add's k·count
# int64 places are counted as the interpreter makes them each run; a compiled plan makes
# them once, while compiling (index arithmetic on constants), so at run time they are not
# there: 169,920 B predicted against 77,456 B measured (2.19×). Waiting scales (lazyscale11)
# took the measured peak from 84 KB to 77 KB, past the 2× the prediction had kept.
LOOSER_BOUND = {("bundle_adjustment.ad", "reverse", "float32"): 2.3}


@pytest.mark.parametrize("path, mode, dtype", CASES, ids=lambda v: getattr(v, "name", v))
def test_predicted_peak_bounds_the_measured_peak(path, mode, dtype):
    bound = LOOSER_BOUND.get((path.name, mode, dtype), 2)
    program = adcli.load(path)
    passes = program.predict(mode).passes
    for chunk in sorted({1, 2, 7, passes} & set(range(1, passes + 1))):
        # the largest of two runs: the measurement, not the prediction, is noisy
        runs = [program.jacobian(mode=mode, chunk=chunk, dtype=dtype, measure_memory=True) for _ in range(2)]
        measured = max(r.cost.peak_bytes for r in runs)
        predicted = runs[0].cost.predicted["peak_bytes"]
        assert measured - NOISE_BYTES <= predicted <= bound * (measured + NOISE_BYTES), (chunk, predicted, measured)


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_chunk_choice_is_the_largest_whose_prediction_fits(path):
    program = adcli.load(path)
    wrt, outputs = program._wrt(None), program.output_names
    for mode in ("forward", "reverse"):
        passes = program.predict(mode).passes
        one = program.required_bytes(mode, wrt, outputs, 1, 8)
        every = program.required_bytes(mode, wrt, outputs, passes, 8)
        if every <= one:   # one sweep needs no separate Jacobian buffer: it can be the least
            continue
        limit = (one + every) // 2
        chunk, note = program.choose_chunk(mode, wrt, outputs, limit, 8)
        assert program.required_bytes(mode, wrt, outputs, chunk, 8) <= limit
        assert chunk == passes or program.required_bytes(mode, wrt, outputs, chunk + 1, 8) > limit
        assert note.startswith(f"chunk {chunk} of {passes} directions per sweep")


def test_refusal_uses_the_same_prediction():
    program = adcli.load(SAMPLES[0])
    wrt, outputs = program._wrt(None), program.output_names
    passes = program.predict("reverse").passes
    # one direction at a time or all at once, whichever needs less (all at once runs the
    # whole identity seed, which needs no index arrays, so it can be the least)
    need = min(program.required_bytes("reverse", wrt, outputs, chunk, 8) for chunk in (1, passes))
    with pytest.raises(adcli.errors.ResourceProblem) as caught:
        program.jacobian(mode="reverse", memory_limit=need - 1)
    assert "even one direction at a time" in caught.value.message
    program.jacobian(mode="reverse", memory_limit=need)   # exactly enough runs


# Gathers and scatter-adds at a size where their index arrays and contributions dominate:
# an embedding bag (rows gathered by token, summed by segment: repeated indices on both
# sides) and a vector output, so that both modes take many directions per sweep.
EMBEDDING_BAG = """
dim V = 50
dim D = 16
dim N = 2000
const tok: ivec[N] = randint(V, seed=1)
const seg: ivec[N] = randint(50, seed=2)
input E: mat[V, D] = 0.1 * randn(seed=3)
input w: vec[D] = randn(seed=4)
h = E[tok, :]
pooled = scatter_add(h, seg, 50)
output loss = sum(log_softmax(pooled @ w)) + sum(gammaln(abs(pooled) + 1))
"""
GATHERS = """
dim n = 3000
dim m = 40
const idx: ivec[n] = randint(m, seed=1)
const col: ivec[n] = randint(8, seed=2)
const pick: imat[n, 1] = randint(8, seed=5)
input A: mat[m, 8] = randn(seed=3)
input x: vec[m] = randn(seed=4)
g = x[idx] * A[idx, col] + take_along_axis(A[idx, :], pick, axis=1)[:, 0] * 0.5
output y = scatter_add(g, col, 8) + sum(A[:, col], axis=1)[0:8]
"""


# the same with a vector output, so that reverse mode takes several directions per sweep
# (found by a review: float32 runs copy bincount's weights to float64, uncounted then)
EMBEDDING_BAG_VECTOR = EMBEDDING_BAG.replace("dim N = 2000", "dim N = 5000").replace(
    "output loss = sum(log_softmax(pooled @ w)) + sum(gammaln(abs(pooled) + 1))",
    "input B: mat[4, 50] = randn(seed=5)\noutput out = tanh(B @ (pooled @ w))")


@pytest.mark.parametrize("source", [EMBEDDING_BAG, GATHERS, EMBEDDING_BAG_VECTOR],
                         ids=["embedding_bag", "gathers", "embedding_bag_vector"])
@pytest.mark.parametrize("mode", ["forward", "reverse"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_gathers_and_scatter_adds_at_scale(source, mode, dtype, request):
    """The whole first call, compiling included, stays under a memory limit set to exactly
    what the check requires for its chunk (and uses at least a third of it); the sweeps'
    measured peak is never above the prediction. (The compiled sweeps may use far less:
    what a gathered Seed makes dense is folded into the plan's constants when it is
    compiled, on real values, which is what the prediction bounds.)"""
    if source is EMBEDDING_BAG_VECTOR and dtype == "float32" and mode == "reverse":
        # a known defect, strict: the day it is fixed this test says so
        request.applymarker(pytest.mark.xfail(strict=True, reason=(
            "float32 reverse mode copies bincount's weights to float64 (k·count), which the prediction "
            "does not count yet: 35.9 MB measured against 32.8 MB predicted (session note 2026-11-25)")))
    itemsize = 8 if dtype == "float64" else 4
    adcli.loads(source).jacobian(mode=mode, chunk=1, dtype=dtype)   # imports done, not traced
    passes = adcli.loads(source).predict(mode).passes
    for chunk in sorted({1, 7, passes} & set(range(1, passes + 1))):
        program = adcli.loads(source)   # nothing compiled yet
        wrt, outputs = program._wrt(None), program.output_names
        limit = program.required_bytes(mode, wrt, outputs, chunk, itemsize)
        tracemalloc.start()
        try:
            first = program.jacobian(mode=mode, chunk=chunk, dtype=dtype, memory_limit=limit)
            whole_call = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert limit / 3 <= whole_call <= limit, (chunk, whole_call, limit)
        again = program.jacobian(mode=mode, chunk=chunk, dtype=dtype, memory_limit=limit, measure_memory=True)
        assert again.cost.peak_bytes - NOISE_BYTES <= again.cost.predicted["peak_bytes"], chunk
        assert first.blocks.keys() == again.blocks.keys()


def test_a_long_unrolled_program_whose_plans_are_split_stays_within_its_prediction():
    """1,500 steps of sin(x) · 0.999 unrolled (3,002 nodes): the plans run as chains of
    functions passing the values that cross a cut in a dict (adcli.plan), and a reverse
    sweep's residuals all cross to its return. Without pricing that dict
    (memory.SPLIT_ENV_BYTES), the prediction was 315 KB against 370 KB measured."""
    source = "input x: vec[3] = [0.1, 0.2, 0.3]\nrepeat 1500 {\n  x = sin(x) * 0.999\n}\noutput y = sum(x * x)\n"
    program = adcli.loads(source)
    assert len(program.graph.nodes) > 3000   # unrolled (loops="auto": under the node limit)
    result = program.jacobian(mode="reverse", measure_memory=True)
    assert result.cost.peak_bytes <= result.cost.predicted["peak_bytes"] <= 2 * result.cost.peak_bytes


# Repeats that stay loops (docs/counting.md, "Predicted memory"). Compiled plans unroll a
# loop and hold no per-iteration record; the interpreter, which runs a loop too large to
# keep as plans, does. Loop programs of the loop tests and the samples, kept as loops.
def _loop_sources():
    from test_checkpointing import LAYER, SCALAR_LOOP
    from test_loops import PROGRAMS

    sources = {name: PROGRAMS[name] for name in ("tanh_layer", "two_carried", "nested", "nested_with_indices",
                                                 "rnn_per_step_rows_and_weights", "in_a_def")}
    sources["long_with_a_tail_200"] = PROGRAMS["long_with_a_tail"].replace("repeat 40", "repeat 200").replace(
        "0.1 * s", "0.001 * s")   # (s grows with the count: sigmoid(h) would overflow)
    sources["layer_n10_l200"] = LAYER.format(n=10, l=200)
    sources["layer_n100_l300"] = LAYER.format(n=100, l=300)
    sources["scalar_l300"] = SCALAR_LOOP.format(l=300)
    for path in SAMPLES:
        if path.name in ("deep.ad", "deep_stack.ad", "gmm.ad", "robot_arm.ad"):
            sources[path.name] = path.read_text()
    return sources


LOOP_SOURCES = _loop_sources()
# Known over-predictions past twice the measured peak: loops whose values are single
# numbers, NumPy scalars of 32 B that the model prices as arrays (ARRAY_HEADER_BYTES, and
# SPLIT_ENV_BYTES in plans this long): scalar_l300 reverse 2.03x measured.
LOOP_LOOSER_BOUND = {("scalar_l300", "reverse", None): 2.3}
LOOP_CASES = [(name, mode, states) for name in LOOP_SOURCES
              for mode, states in (("forward", None), ("reverse", None), ("reverse", 3))
              if not (name == "layer_n100_l300" and mode == "forward")]   # (interpreted: its Seeds pass the budget)


@pytest.mark.parametrize("name, mode, states", LOOP_CASES, ids=lambda v: str(v))
def test_loops_compiled_stay_within_their_prediction(name, mode, states):
    """A loop kept as a loop, compiled into plans, forward, reverse, and reverse keeping
    3 states: measured ≤ predicted ≤ 2× measured. The prediction counted the interpreter's
    records for every run until compiled runs were told apart: 3-16x the measured peak."""
    program = adcli.loads(LOOP_SOURCES[name], loops="always")
    assert any(n.op == "loop" for n in program.graph.nodes)
    bound = LOOP_LOOSER_BOUND.get((name, mode, states), 2)
    runs = [program.jacobian(mode=mode, checkpoints=states, measure_memory=True) for _ in range(2)]
    assert not runs[0].cost.interpreted
    measured = max(r.cost.peak_bytes for r in runs)
    predicted = runs[0].cost.predicted["peak_bytes"]
    assert measured - NOISE_BYTES <= predicted <= bound * (measured + NOISE_BYTES), (predicted, measured)


@pytest.mark.parametrize("states", [None, 3, 100, 300])
@pytest.mark.parametrize("mode", ["forward", "reverse"])
def test_loops_interpreted_stay_within_their_prediction(mode, states, monkeypatch):
    """A loop too large for plans (here: a plan limit of 10 equations) is run by the
    interpreter, which keeps a record per iteration, LOOP_BYTES a loop and, checkpointing,
    its schedule's generators and the books of the states it saves: all predicted."""
    from adcli import execute
    from test_checkpointing import LAYER

    if mode == "forward" and states is not None:
        return
    monkeypatch.setattr(execute, "MAX_CACHED_EQUATIONS", 10)
    program = adcli.loads(LAYER.format(n=10, l=300), loops="always")
    runs = [program.jacobian(mode=mode, checkpoints=states, measure_memory=True) for _ in range(2)]
    assert runs[0].cost.interpreted
    measured = max(r.cost.peak_bytes for r in runs)
    predicted = runs[0].cost.predicted["peak_bytes"]
    assert measured - NOISE_BYTES <= predicted <= 2 * (measured + NOISE_BYTES), (predicted, measured)


def _layer_program():
    from test_checkpointing import LAYER

    return adcli.loads(LAYER.format(n=10, l=300), loops="always")


@pytest.mark.parametrize("mode", ["forward", "reverse"])
def test_a_loop_interpreted_for_its_constants_is_predicted_so(mode, monkeypatch):
    """A run whose plans' constants pass the budget is found so only while compiling, and
    interpreted: its reported prediction is the interpreter's, which bounds what it measures
    (the prediction made before compiling, of plans, would not)."""
    from adcli import execute

    monkeypatch.setattr(execute, "MAX_CACHED_CONSTANT_BYTES", 1)
    program = _layer_program()
    wrt, outputs = program._wrt(None), program.output_names
    chunk = program.predict(mode).passes
    compiled = program.predicted_peak_bytes(mode, wrt, outputs, chunk, 8)
    interpreted = program.predicted_peak_bytes(mode, wrt, outputs, chunk, 8, interpreted=True)
    assert compiled < interpreted
    runs = [program.jacobian(mode=mode, measure_memory=True) for _ in range(2)]
    assert all(r.cost.interpreted for r in runs)
    assert runs[0].cost.predicted["peak_bytes"] == interpreted
    assert max(r.cost.peak_bytes for r in runs) - NOISE_BYTES <= interpreted


@pytest.mark.parametrize("mode", ["forward", "reverse"])
def test_a_run_interpreted_after_compiling_is_refused_past_the_limit(mode):
    """At a memory limit that fits the compiled plans' need but leaves their constants no
    room, compiling gives up and the interpreter would run the loop, needing more than the
    limit: refused in a sentence at the repeat, before it runs; at the interpreted need it runs."""
    program = _layer_program()
    wrt, outputs = program._wrt(None), program.output_names
    passes = program.predict(mode).passes
    limit = program.required_bytes(mode, wrt, outputs, passes, 8) + 1
    interpreted = program.predicted_peak_bytes(mode, wrt, outputs, passes, 8, interpreted=True) + \
        program.resident_bytes(8)
    assert limit < interpreted
    with pytest.raises(adcli.errors.ResourceProblem) as caught:
        program.jacobian(mode=mode, memory_limit=limit)
    assert caught.value.message == (f"{mode} mode is too large to keep as compiled plans, and run by the "
                                    f"interpreter it needs about {interpreted / 1000:,.1f} KB, over the memory "
                                    f"limit of {limit / 1000:,.1f} KB")
    assert caught.value.location.line == 6   # the repeat
    assert "raise --memory-limit" in caught.value.hint
    result = _layer_program().jacobian(mode=mode, memory_limit=interpreted, measure_memory=True)
    assert result.cost.peak_bytes <= result.cost.predicted["peak_bytes"]


def test_one_vjp_interpreted_after_compiling_is_refused_past_the_limit(monkeypatch):
    """The other way to give up while compiling: more equations than the plans' limit
    where the operations predicted were fewer (this VJP: 2,405 operations, 3,306 equations)."""
    from adcli import execute

    monkeypatch.setattr(execute, "MAX_CACHED_EQUATIONS", 3000)
    program = _layer_program()
    wrt, outputs = program._wrt(None), program.output_names
    assert not program.interpreted_before_compiling("reverse", wrt, outputs, 1, single=True)
    resident = program.resident_bytes(8)
    compiled = program.predicted_peak_bytes("reverse", wrt, outputs, 1, 8, single=True) + resident
    interpreted = program.predicted_peak_bytes("reverse", wrt, outputs, 1, 8, single=True, interpreted=True) + resident
    assert compiled < interpreted
    with pytest.raises(adcli.errors.ResourceProblem, match="^one VJP is too large to keep as compiled plans, "
                                                           "and run by the interpreter it needs about"):
        program.vjp({"loss": 1.0}, memory_limit=compiled)
    result = _layer_program().vjp({"loss": 1.0}, memory_limit=interpreted, measure_memory=True)
    assert result.cost.interpreted
    assert result.cost.peak_bytes - NOISE_BYTES <= result.cost.predicted["peak_bytes"] == interpreted - resident


def test_the_checking_mode_is_predicted_as_interpreted():
    """ADCLI_CHECK_PLANS=1 runs the interpreter after the plans, in the same measured run:
    a loop program's prediction is then the interpreter's (the plans' was 0.3-0.7x)."""
    program = _layer_program()
    program.check_plans = True
    for mode, states in (("forward", None), ("reverse", None), ("reverse", 3)):
        result = program.jacobian(mode=mode, checkpoints=states, measure_memory=True)
        assert result.cost.peak_bytes - NOISE_BYTES <= result.cost.predicted["peak_bytes"]


@pytest.mark.parametrize("states", [2, 3, 5, 10, 40])
def test_the_schedule_nests_no_deeper_than_predicted(states):
    """checkpoint.actions keeps a generator per work item entered and not finished; the
    prediction of an interpreted run counts r + S of them (SCHEDULE_LEVEL_BYTES each)."""
    from adcli import checkpoint
    from test_checkpointing import SCALAR_LOOP

    for steps in (2, 3, 10, 37, 100, 299, 1000):
        deepest = 0
        stack = [checkpoint.expand(0, steps, 0, states)]   # as checkpoint.actions walks them
        while stack:
            deepest = max(deepest, len(stack))
            for item in stack[-1]:
                if isinstance(item, tuple):
                    stack.append(checkpoint.expand(*item))
                    break
            else:
                stack.pop()
        program = adcli.loads(SCALAR_LOOP.format(l=steps), loops="always")
        assert deepest <= program._schedule_depth(states), steps
