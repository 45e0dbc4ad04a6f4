"""Repeat calls: a jacobian() call with options it was called with before is answered from
what the first call worked out (Program._repeats: the decisions, the compiled run, the
file's consts, the prediction), converting only its inputs, running the plans and
wrapping the blocks. Its result must be the one the whole call gives, and nothing that
can change between calls (an input, a const, an option, the checking mode, the machine
model, the cache of compiled runs) may be answered from a stale record."""
import numpy as np
import pytest

import adcli
from adcli import api, machine
from adcli.api import PlanMismatch, Program, same_to_roundoff
from adcli.errors import ResourceProblem, UsageProblem, ValueProblem
from adcli.machine import MachineModel
from adcli.tangents import Scaled
from conftest import SAMPLE, SAMPLES

OPTIONS = ({"mode": "forward"}, {"mode": "reverse"}, {"mode": "auto"}, {"mode": "reverse", "chunk": 2},
           {"mode": "forward", "chunk": 3, "dtype": "float32"})


def same(a, b) -> bool:
    return same_to_roundoff(np, a, b)


class Whole:
    """Counts the calls that take the whole path (Program._prepare: the data made again)."""

    def __init__(self, monkeypatch):
        self.calls = 0
        prepare = Program._prepare

        def counted(program, *args, **kwargs):
            self.calls += 1
            return prepare(program, *args, **kwargs)

        monkeypatch.setattr(Program, "_prepare", counted)


def assert_same_result(short, whole):
    """Everything a result reports, but the times (time_s keeps its entries)."""
    for field in ("kind", "mode", "mode_requested", "outputs", "wrt", "row_spec", "column_spec", "note",
                  "chunk_note", "backend", "device", "dtype", "consts_set"):
        assert getattr(short, field) == getattr(whole, field), field
    assert short.consts.keys() == whole.consts.keys()
    for name in whole.consts:
        assert np.array_equal(short.consts[name], whole.consts[name]), name
    assert short.cost.counts() == whole.cost.counts()
    assert short.cost.predicted == whole.cost.predicted
    assert short.cost.peak_bytes == whole.cost.peak_bytes
    staged = lambda times: [k for k in times if k != "compile"]   # noqa: E731 (a fresh program's first call)
    assert staged(short.cost.time_s) == staged(whole.cost.time_s)
    assert short.value.keys() == whole.value.keys()
    for name in whole.value:
        assert same(short.value[name], whole.value[name]), name
    assert short.inputs.keys() == whole.inputs.keys()
    for name in whole.inputs:
        assert np.array_equal(short.inputs[name], whole.inputs[name]), name
    for o in whole.blocks:
        for w in whole.blocks[o]:
            assert short.blocks[o][w].shape == whole.blocks[o][w].shape
            assert short.blocks[o][w].dtype == whole.blocks[o][w].dtype
            assert same(short.blocks[o][w], whole.blocks[o][w]), (o, w)
    assert same(short.jacobian, whole.jacobian)


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_a_repeat_call_gives_what_the_whole_call_gives(path, monkeypatch):
    program = adcli.load(path)
    whole = Whole(monkeypatch)
    for options in OPTIONS:
        program.jacobian(**options)          # compiled, and its record kept
        program._repeats.clear()
        full = program.jacobian(**options)   # the whole call (the compiled run replayed)
        before = whole.calls
        short = program.jacobian(**options)
        assert whole.calls == before, (options, "a repeat call took the whole path")
        assert "compile" not in short.cost.time_s and short.cost.time_s["sweeps"] >= 0
        assert_same_result(short, full)
        assert program._last_compiled is program._repeats[next(reversed(program._repeats))].compiled


def test_a_repeat_call_takes_the_inputs_it_is_given():
    path = SAMPLE["mlp.ad"]
    program = adcli.load(path)
    rng = np.random.default_rng(5)
    for mode in ("forward", "reverse"):
        program.jacobian(mode=mode)
        for at in ({"b2": 0.25}, {"W1": rng.standard_normal(program.input_shape("W1")), "b2": np.float32(0.5)},
                   {"b1": rng.standard_normal(program.input_shape("b1")).astype(np.float32)},
                   {"b1": 1}, None):
            got = program.jacobian(mode=mode, at=at)
            want = adcli.load(path).jacobian(mode=mode, at=at)   # a program that never ran before
            assert_same_result(got, want)
            for name, value in (at or {}).items():   # as given (a scalar broadcast), in float64
                assert got.inputs[name].dtype == np.float64
                assert np.array_equal(got.inputs[name], np.broadcast_to(np.asarray(value, float),
                                                                        program.input_shape(name)))


def test_a_repeat_call_refuses_what_the_whole_call_refuses():
    program = adcli.load(SAMPLE["mlp.ad"])
    for _ in range(2):
        program.jacobian(mode="reverse")
        with pytest.raises(ValueProblem, match="the value given for input b1 is"):
            program.jacobian(mode="reverse", at={"b1": np.ones(3)})
        with pytest.raises(ValueProblem, match="is not numeric"):
            program.jacobian(mode="reverse", at={"b2": "x"})
        with pytest.raises(UsageProblem, match="there is no input or const named 'q'"):
            program.jacobian(mode="reverse", at={"q": 1.0})
        with pytest.raises(ResourceProblem, match="over the memory limit"):
            program.jacobian(mode="reverse", memory_limit=1000)
        with pytest.raises(ResourceProblem, match="over the time limit"):
            program.jacobian(mode="reverse", time_limit=1e-12)


CONSTS = """const A: mat[2, 3] = [[1, 2, 3], [4, 5, 6]]
const B = A * 2
input x: vec[3] = [0.5, -1, 2]
input z = sum(A)
output y = A @ x + sum(B[1] * x) * z
"""


@pytest.mark.parametrize("mode", ["forward", "reverse"])
def test_consts_and_defaults_changed_between_repeat_calls_are_honoured(mode):
    """A const set by at= (and B and z computed from it) for one call, then the file's again;
    set_defaults of an input, then of a const."""
    program = adcli.loads(CONSTS)
    A = np.array([[0.0, 1, -1], [2, 3, 7]])
    calls = [({}, None), ({"A": A}, None), ({}, None), ({"x": [1.0, 2, 3]}, None), ({}, None),
             ({}, {"x": [3.0, 0, 1]}), ({}, None), ({}, {"A": A}), ({}, None), ({"x": [1.0, 1, 1]}, None)]
    defaults = []   # the set_defaults calls so far, made again in the same order on a fresh program
    for at, new_defaults in calls:
        if new_defaults:
            program.set_defaults(new_defaults)
            defaults.append(new_defaults)
        got = program.jacobian(mode=mode, at=at)
        fresh = adcli.loads(CONSTS)
        for given in defaults:
            fresh.set_defaults(given)
        assert_same_result(got, fresh.jacobian(mode=mode, at=at))


def test_set_defaults_in_either_order_gives_one_answer():
    """set_defaults of one input leaves the others' defaults as the file has them: an input
    computed from a const follows that const when a later set_defaults sets it (it used to be
    frozen at the value it had when the first call was made)."""
    text = "const c = 2\ninput x = c * 3\ninput y = 1\noutput f = x * y\n"
    answers = []
    for order in ([{"y": 2}, {"c": 5}], [{"c": 5}, {"y": 2}], [{"c": 5, "y": 2}]):
        program = adcli.loads(text)
        for given in order:
            program.set_defaults(given)
        answers.append(program.jacobian(mode="reverse"))
    for result in answers:
        assert result.value["f"] == 30.0 and result.jacobian.tolist() == [[2.0, 15.0]]


def test_another_option_is_another_record():
    path = SAMPLE["chain.ad"]
    program = adcli.load(path)
    names = program.input_names
    options = [{"mode": "forward"}, {"mode": "reverse"}, {"mode": "reverse", "wrt": names[:1]},
               {"mode": "reverse", "wrt": names[-1]}, {"mode": "forward", "dtype": "float32"},
               {"mode": "forward", "chunk": 1}, {"mode": "reverse", "json": True}]
    for _ in range(2):
        for option in options:
            assert_same_result(program.jacobian(**option), adcli.load(path).jacobian(**option))
    assert len(program._repeats) == len(options)


def test_the_checking_mode_and_memory_measurement_still_run_after_repeat_calls():
    program = adcli.load(SAMPLE["seed_example.ad"])
    for _ in range(3):
        program.jacobian(mode="reverse")
    measured = program.jacobian(mode="reverse", measure_memory=True)
    assert measured.cost.peak_bytes > 0 and "traced" in measured.cost.time_s
    warm = program.jacobian(mode="reverse", warmup=True)
    assert "warmup" in warm.cost.time_s
    backward = program._last_compiled.plans[-1]
    correct = backward.compile()

    def doubled(inputs):   # an injected bug: every adjoint twice what it should be
        twice = lambda t: Scaled(t.seed, 2 * t.scale) if isinstance(t, Scaled) else 2 * t   # noqa: E731
        return {node: {b: twice(t) for b, t in blocks.items()} for node, blocks in correct(inputs).items()}

    backward._fn = doubled
    program.check_plans = True
    with pytest.raises(PlanMismatch, match="differs from the interpreter"):
        program.jacobian(mode="reverse")


def test_a_compiled_run_dropped_from_the_cache_is_compiled_again(monkeypatch):
    monkeypatch.setattr(api, "MAX_CACHED_RUNS", 1)
    path = SAMPLE["seed_example.ad"]
    program = adcli.load(path)
    for mode in ("forward", "reverse", "forward", "forward"):
        result = program.jacobian(mode=mode)
        assert len(program._compiled) == 1 and len(program._repeats) == 1
        assert program._last_compiled is next(iter(program._compiled.values()))
        assert_same_result(result, adcli.load(path).jacobian(mode=mode))
    assert "compile" not in result.cost.time_s   # the last: a repeat of the one before
    program.jvp({"x1": 1.0})   # another run: the jacobian's plans dropped, and its record with them
    kept = [record.compiled for record in program._repeats.values()]
    assert len(kept) == 1 and kept[0] is next(iter(program._compiled.values()))


def test_a_calibrated_model_prices_the_next_repeat_call(monkeypatch):
    monkeypatch.setattr(machine, "_loaded", {})
    program = adcli.load(SAMPLE["mlp.ad"])
    before = [program.jacobian(mode="reverse") for _ in range(2)][-1]
    slower = MachineModel("numpy", op_s=1e-3, bandwidth=1e6, gemm_rate=1e6, source="test")
    machine._loaded["numpy"] = slower
    after = program.jacobian(mode="reverse")
    assert after.cost.predicted["time_s"] == pytest.approx(slower.time(after.cost, 8))
    assert after.cost.predicted["time_s"] > 100 * before.cost.predicted["time_s"]
    assert program.jacobian(mode="reverse").cost.predicted == after.cost.predicted


def test_a_recipe_not_made_yet_is_made_by_the_whole_path(monkeypatch):
    """The first call set every input, so the file's recipes were never made: a repeat call
    without them takes the whole path, which checks the memory before making them."""
    program = adcli.loads("input x: vec[4] = randn(seed=3)\noutput y = sum(x * x)\n")
    program.jacobian(mode="reverse", at={"x": np.ones(4)})
    whole = Whole(monkeypatch)
    result = program.jacobian(mode="reverse")
    assert whole.calls == 1
    assert np.allclose(result.gradient["x"], 2 * result.inputs["x"])
    program.jacobian(mode="reverse")
    assert whole.calls == 1


def assert_same_single(short, whole):
    assert_same_result(short, whole)
    for part in ("tangent", "cotangent", "given"):
        mine, theirs = getattr(short, part), getattr(whole, part)
        assert (mine is None) == (theirs is None), part
        for name in theirs or {}:
            assert same(mine[name], theirs[name]), (part, name)


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_a_repeat_jvp_or_vjp_gives_what_the_whole_call_gives(path, monkeypatch):
    program = adcli.load(path)
    whole = Whole(monkeypatch)
    rng = np.random.default_rng(7)
    directions = lambda: {n: rng.standard_normal(program.input_shape(n)) for n in program.input_names[::2]}   # noqa: E731
    cotangents = lambda: {n: rng.standard_normal(program.output_shape(n)) for n in program.output_names}   # noqa: E731
    for kind, make, options in (("jvp", directions, {}), ("vjp", cotangents, {}),
                                ("vjp", cotangents, {"wrt": program.input_names[-1], "dtype": "float32"})):
        method = getattr(program, kind)
        method(make(), **options)
        for _ in range(2):   # other directions each time: data, not options
            given = make()
            program._repeats.clear()
            full = method(given, **options)
            before = whole.calls
            short = method(given, **options)
            assert whole.calls == before, (kind, "a repeat call took the whole path")
            assert "compile" not in short.cost.time_s
            assert_same_single(short, full)


def test_a_repeat_jvp_takes_its_inputs_and_refuses_what_the_whole_call_refuses():
    path = SAMPLE["mlp.ad"]
    program = adcli.load(path)
    direction = {"b1": np.ones(program.input_shape("b1")), "b2": 2.0}
    for _ in range(2):
        for at in (None, {"b2": 0.5}, {"W1": np.zeros(program.input_shape("W1"))}):
            got = program.jvp(direction, at=at)
            assert_same_single(got, adcli.load(path).jvp(direction, at=at))
            assert got.given["b1"] is not direction["b1"]   # a copy: the caller's array stays theirs
        with pytest.raises(ValueProblem, match="the direction for b1 is vec\\[3\\]"):
            program.jvp({"b1": np.ones(3), "b2": 2.0})
        with pytest.raises(UsageProblem, match="there is no input named 'q'"):
            program.jvp({"b2": 1.0, "q": 1.0})
        with pytest.raises(ResourceProblem, match="over the memory limit"):
            program.jvp(direction, memory_limit=1000)


def test_two_outputs_of_one_node_add_their_cotangents_on_every_call():
    program = adcli.loads("input x: vec[2] = [1, 2]\ny = sin(x)\noutput a = y\noutput b = y\n")
    for scale in (1.0, 2.0, 3.0):
        got = program.vjp({"a": [scale, 0.0], "b": [0.5, 1.0]})
        assert np.allclose(got.cotangent["x"], np.cos([1.0, 2.0]) * [scale + 0.5, 1.0])


RANDOM_PROGRAMS = 40


@pytest.mark.parametrize("start", range(0, RANDOM_PROGRAMS, 10))
def test_repeat_calls_on_random_programs_agree_with_the_whole_call_and_the_oracle(start):
    """tests/progen.py's random programs (every op, loops, gathers, outputs that are one
    node): at a second point, a repeat call's Jacobian equals the whole call's and the
    oracle's dual-number Jacobian there; so do a repeat JVP and VJP (J·v, uᵀ·J)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import progen

    for index in range(start, start + 10):
        gp = progen.generate(progen.RandomChooser(1000 + index))
        program = adcli.loads(gp.source, "generated.ad")
        rng = np.random.default_rng(index)
        moved = {d.name: np.asarray(d.value) * (1 + 0.01 * rng.standard_normal(np.shape(d.value)))
                 for d in gp.inputs}
        oracle = gp.jacobian(moved)
        with np.errstate(all="ignore"):
            finite = np.isfinite(oracle).all()
        scale = max(1.0, float(np.abs(oracle[np.isfinite(oracle)]).max(initial=0)))
        for mode in ("forward", "reverse"):
            program.jacobian(mode=mode)
            program._repeats.clear()
            program.jacobian(mode=mode)   # keeps the record
            short = program.jacobian(mode=mode, at=moved)
            program._repeats.clear()
            assert_same_result(short, program.jacobian(mode=mode, at=moved))
            if finite:
                assert np.abs(short.jacobian - oracle).max(initial=0) <= 1e-9 * scale, (mode, gp.source)
        v = {n: rng.standard_normal(program.input_shape(n)) for n in program.input_names}
        u = {n: rng.standard_normal(program.output_shape(n)) for n in program.output_names}
        for kind, given in (("jvp", v), ("vjp", u)):
            method = getattr(program, kind)
            method(given)
            short = method(given, at=moved)
            program._repeats.clear()
            assert_same_single(short, method(given, at=moved))
            if finite:
                flat = lambda d, names: np.concatenate([np.reshape(d[n], -1) for n in names])   # noqa: E731
                want = (oracle @ flat(v, program.input_names) if kind == "jvp"
                        else flat(u, program.output_names) @ oracle)
                assert np.abs(short.jacobian.reshape(-1) - want).max(initial=0) <= 1e-8 * scale * max(
                    1.0, float(np.abs(want).max(initial=0))), (kind, gp.source)
