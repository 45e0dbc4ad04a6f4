"""The compiled plans' arena (adcli/plan.py ArenaLayout, ArenaPool): large intermediates
computed into buffers kept between calls.

- results with the arena equal results with fresh arrays, bit for bit (the checking mode,
  plan.CHECK_ARENAS, which ADCLI_CHECK_PLANS=1 turns on, compares them on every call: here
  on every sample and on random programs, with every value that can have a buffer given one);
- nothing a caller gets back is or views a buffer: a second call leaves the first call's
  results as they were;
- values whose lifetimes overlap (views included) never share a buffer, and the buffers
  come to the plan's peak of live intermediates;
- two threads never share an arena; a measured run (tracemalloc) allocates afresh.
"""
import os
import subprocess
import sys
import threading
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import adcli
from adcli import plan as plan_module
from adcli.plan import ArenaMismatch, Plan
from adcli.staging import StagingXP, Tape
from conftest import SAMPLE, SAMPLES

sys.path.insert(0, str(Path(__file__).resolve().parent))
import progen  # noqa: E402

WAVE = Path(__file__).resolve().parent.parent / "benchmarks" / "programs" / "damped_wave.ad"
MODES = ("forward", "reverse")


@pytest.fixture
def checking(monkeypatch):
    """The checking mode, with a buffer for every value that can have one (even small ones),
    and a count of the checked calls."""
    monkeypatch.setattr(plan_module, "CHECK_ARENAS", True)
    calls = []
    checked = Plan._checked_call

    def counted(self, fresh, inputs):
        calls.append(self.label)
        return checked(self, fresh, inputs)

    monkeypatch.setattr(Plan, "_checked_call", counted)
    return calls


def wave(n: int = 1000):
    return adcli.loads(WAVE.read_text().replace("dim N = 1000000", f"dim N = {n}"), "wave.ad")


def bits(tree):
    return [np.ascontiguousarray(a).tobytes() for a in plan_module._result_arrays(tree, [])]


def plans_of(program):
    return [p for run in program._compiled.values()
            for p in (run.plans if hasattr(run, "plans") else run[:1])]


def test_the_environments_checking_mode_checks_the_arena():
    code = "from adcli import plan; print(plan.CHECK_ARENAS)"
    for env, want in (({"ADCLI_CHECK_PLANS": "1"}, "True"), ({}, "False")):
        environ = {k: v for k, v in os.environ.items() if k != "ADCLI_CHECK_PLANS"}
        out = subprocess.run([sys.executable, "-c", code], env={**environ, **env}, text=True,
                             capture_output=True, check=True, cwd=Path(adcli.__file__).parent.parent)
        assert out.stdout.strip() == want


# -- the same results -------------------------------------------------------------------------

@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_the_arena_gives_the_fresh_results_bit_for_bit_on_every_sample(path, checking):
    program = adcli.load(path)
    program.check_plans = True   # the interpreter too: the arena is checked inside the plans
    for mode in MODES:
        for chunk in (1, None):
            for _ in range(2):   # compiled, then replayed (the plans run)
                program.jacobian(mode=mode, chunk=chunk)
    program.evaluate()
    program.evaluate()
    program.jvp({n: np.full(program.input_shape(n), 0.5) for n in program.input_names})
    program.vjp({n: np.full(program.output_shape(n), 0.5) for n in program.output_names})
    assert checking, "no plan ran with an arena"
    assert any(p.arena for p in plans_of(program))


def test_the_arena_gives_the_fresh_results_on_random_programs(checking):
    import test_differential

    for seed in range(30):
        gp = progen.generate(progen.RandomChooser(seed))
        test_differential.check_program(gp, rng_seed=seed)
    assert len(checking) > 100


def test_the_checking_mode_finds_a_wrong_arena(checking):
    program = wave()
    program.jacobian(mode="forward")
    (sweep,) = plans_of(program)[-1:]
    correct = sweep._arena_fn

    def off(inputs, bufs):   # an injected bug: the arena run's tangents twice what they should be
        tangents, values = correct(inputs, bufs)
        return {k: {b: 2 * t for b, t in blocks.items()} for k, blocks in tangents.items()}, values
    sweep._arena_fn = off
    with pytest.raises(ArenaMismatch, match="differ from those with fresh arrays"):
        program.jacobian(mode="forward")

    def leaked(inputs, bufs):   # an injected bug: the right value, handed out in a buffer
        tangents, values = correct(inputs, bufs)
        buffer = next(b for b in bufs if b.shape == (1000,))
        for k, v in values.items():
            buffer[...] = v
            values[k] = buffer
        return tangents, values
    sweep._arena_fn = leaked
    with pytest.raises(ArenaMismatch, match="is, or views, a buffer"):
        program.jacobian(mode="forward")
    sweep._arena_fn = correct
    program.jacobian(mode="forward")


# -- nothing handed out is a buffer -----------------------------------------------------------

def test_a_second_call_leaves_the_first_calls_results_alone():
    program = wave(10**5 + 1)   # 800 kB values: over ARENA_MIN_BYTES, arena by default
    first = program.jacobian(mode="forward")
    kept = (first.value["y"].copy(), {n: b.copy() for n, b in first.blocks["y"].items()})
    second = program.jacobian(mode="forward", at={"a": 2.5, "k": 0.7})
    (sweep,) = plans_of(program)
    assert sweep.arena is not None and sweep._pool.made >= 1
    assert np.array_equal(first.value["y"], kept[0])
    for name, block in first.blocks["y"].items():
        assert np.array_equal(block, kept[1][name])
    assert not np.array_equal(second.value["y"], first.value["y"])
    # and what the second call gave equals a run without the arena
    sweep._pool, pool = None, sweep._pool
    try:
        fresh = program.jacobian(mode="forward", at={"a": 2.5, "k": 0.7})
    finally:
        sweep._pool = pool
    assert bits(fresh.blocks) == bits(second.blocks) and bits(fresh.value) == bits(second.value)


def test_reverse_mode_residuals_and_gradients_are_not_buffers(monkeypatch):
    monkeypatch.setattr(plan_module, "ARENA_MIN_BYTES", 1)
    program = adcli.load(SAMPLE["mlp.ad"])
    first = program.jacobian(mode="reverse")
    kept = {n: b.copy() for n, b in first.blocks["loss"].items()}
    at = {n: v + 0.25 for n, v in program.resolve_inputs().items()}
    program.jacobian(mode="reverse", at=at)
    forward, backward = plans_of(program)
    assert forward.arena and backward.arena
    for name, block in first.blocks["loss"].items():
        assert np.array_equal(block, kept[name]), name


# -- the layout -------------------------------------------------------------------------------

def spans(layout):
    return {index: (index, layout.ends[index], layout.buffer[index]) for index in layout.assigned}


def assert_disjoint(layout):
    """No two buffered values on one buffer are alive at once."""
    items = sorted(spans(layout).values())
    for i, (start, end, b) in enumerate(items):
        for start2, end2, b2 in items[i + 1:]:
            if b2 == b:
                assert start2 > end, (start, end, start2, end2)


def test_a_view_keeps_its_buffer_alive():
    tape = Tape(np)
    xp = StagingXP(tape)
    x = tape.input(np.linspace(0.1, 1.0, 12), "x")
    y = xp.exp(x)                 # 1: buffered
    v = y.reshape((3, 4)).T       # views of y: y's buffer lives until v's last read
    z = xp.sin(x)                 # 4: must not take y's buffer
    w = z * 2.0                   # 5: y's buffer is still held by v
    out = (v.T.reshape(-1) + w).sum()
    assert Plan(tape, [out], "p").arena is None   # 96 bytes: under ARENA_MIN_BYTES
    plan_module.ARENA_MIN_BYTES, saved = 1, plan_module.ARENA_MIN_BYTES
    try:
        plan = Plan(tape, [out], "p")
    finally:
        plan_module.ARENA_MIN_BYTES = saved
    arena = plan.arena
    y_index = next(i for i, (fn, _) in arena.assigned.items() if fn == "exp")
    z_index = next(i for i, (fn, _) in arena.assigned.items() if fn == "sin")
    assert arena.buffer[y_index] != arena.buffer[z_index]
    assert arena.ends[y_index] > z_index
    assert_disjoint(arena)
    want = plan.compile()([np.linspace(0.1, 1.0, 12)])
    for _ in range(2):
        got = plan._pool.run(plan._arena_fn, None, [np.linspace(0.1, 1.0, 12)])
        assert got[0] == want[0]


def test_the_buffers_come_to_the_peak_of_live_intermediates():
    program = wave(10**5)
    program.jacobian(mode="forward")
    (sweep,) = plans_of(program)
    arena = sweep.arena
    assert_disjoint(arena)
    # the most buffered values alive at once, counted from their spans; greedy assignment
    # in program order on same-sized values needs exactly that many buffers
    live = max(sum(1 for s, e, _ in spans(arena).values() if s <= i <= e)
               for i in arena.assigned)
    assert len(arena.sizes) == live
    assert arena.nbytes == live * 8 * 10**5
    # the outputs (y and its two tangents) are fresh: the three last products
    assert all(fn == "multiply" or fn in ("exp", "cos") for fn, _ in arena.assigned.values())
    assert "out=" not in "\n".join(sweep.function())   # show and codegen: fresh arrays


@pytest.mark.parametrize("path", [SAMPLE["mlp.ad"], SAMPLE["attention.ad"]], ids=lambda p: p.name)
def test_long_plans_run_their_arena_as_a_chain_of_functions(path, checking, monkeypatch):
    """A body cut into functions (BLOCK_LINES) passes its arena to each of them."""
    monkeypatch.setattr(plan_module, "BLOCK_LINES", 3)
    program = adcli.load(path)
    for mode in MODES:
        for _ in range(2):
            program.jacobian(mode=mode)
    assert any("_1(env, bufs)" in p.source(arena=True) for p in plans_of(program) if p.arena)
    assert checking


# -- threads, measuring -------------------------------------------------------------------------

def test_two_threads_never_share_an_arena():
    program = wave(10**5 + 2)   # (its own layout: arenas are shared by plans of one layout)
    program.jacobian(mode="forward")
    (sweep,) = plans_of(program)
    correct, seen = sweep._arena_fn, []
    both_in = threading.Barrier(2, timeout=20)

    def held(inputs, bufs):   # both calls hold their arena at once
        seen.append(bufs)
        both_in.wait()
        return correct(inputs, bufs)
    sweep._arena_fn = held
    results = [None, None]
    points = [{"a": 1.0, "k": 0.1}, {"a": 3.0, "k": 0.9}]

    def call(i):
        results[i] = program.jacobian(mode="forward", at=points[i])
    threads = [threading.Thread(target=call, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sweep._arena_fn = correct
    assert len(seen) == 2 and seen[0] is not seen[1]
    assert not any(np.shares_memory(a, b) for a in seen[0] for b in seen[1])
    assert len(sweep._pool.free) == 2   # both put back, kept for the next calls
    for i in range(2):
        alone = program.jacobian(mode="forward", at=points[i])
        assert bits(alone.blocks) == bits(results[i].blocks)


def test_a_measured_run_allocates_afresh(monkeypatch):
    tracing = []
    run = plan_module.ArenaPool.run

    def watched(self, fn, fresh, inputs):
        tracing.append(tracemalloc.is_tracing())
        return run(self, fn, fresh, inputs)
    monkeypatch.setattr(plan_module.ArenaPool, "run", watched)
    program = wave(10**5 + 3)
    measured = program.jacobian(mode="forward", measure_memory=True)
    (sweep,) = plans_of(program)
    assert sweep.arena is not None
    # (the untraced runs around the measured one, a warm-up or a retiming, may use it)
    assert not any(tracing)
    # what the fresh path allocates while the sweep runs (cos(3t) of the const t is made
    # while compiling): at least four arrays of N
    assert measured.cost.peak_bytes >= 4 * 8 * (10**5 + 3)
    assert measured.cost.peak_bytes <= measured.cost.predicted["peak_bytes"]
    program.jacobian(mode="forward")
    assert tracing and not any(tracing)


def test_plans_of_one_layout_share_their_arenas():
    """The sweeps of a chunked run are the same code on other constants: one arena serves
    them all, one after the other."""
    program = adcli.loads(WAVE.read_text().replace("dim N = 1000000", "dim N = 100000")
                          .replace("input a = 1.5", "input a: vec[3] = [1.5, 1.0, 0.5]")
                          .replace("output y = a * exp", "output y = sum(a) * exp"), "wave3.ad")
    program.jacobian(mode="forward", chunk=1)
    program.jacobian(mode="forward", chunk=1)
    sweeps = [p for p in plans_of(program) if p.arena]
    assert len(sweeps) >= 3
    assert len({id(p._pool) for p in sweeps}) < len(sweeps)
    assert sum(p._pool.made for p in {id(p._pool): p for p in sweeps}.values()) < len(sweeps)


def test_arenas_past_the_process_limit_are_not_made(monkeypatch):
    program = wave(10**5 + 4)
    program.jacobian(mode="forward")
    (sweep,) = plans_of(program)
    pool = sweep._pool
    made, held = pool.made, plan_module.HELD.bytes
    assert made >= 1 and held >= made * sweep.arena.nbytes
    monkeypatch.setattr(plan_module, "ARENA_MAX_BYTES", held)   # no room for another
    busy = pool.free[:]
    pool.free.clear()   # as if every arena were in use by another thread
    try:
        result = program.jacobian(mode="forward", at={"a": 2.0})
    finally:
        pool.free.extend(busy)
    assert pool.made == made and plan_module.HELD.bytes == held and not pool.free[len(busy):]
    nbytes = sweep.arena.nbytes
    assert np.allclose(result.value["y"], 2.0 * np.exp(-0.3 * np.linspace(0, 10, 10**5 + 4))
                       * np.cos(3 * np.linspace(0, 10, 10**5 + 4)))
    # a pool's bytes are given back when no plan holds it any more
    del program, sweep, pool, busy
    import gc
    gc.collect()
    assert plan_module.HELD.bytes <= held - made * nbytes
