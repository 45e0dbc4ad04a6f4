"""The derivative as a program: staging, the compiled executor, `show --mode`, `codegen`.

- a run is compiled once per (mode, wrt, chunk, backend, dtype) and replayed after;
- the checking mode (what the random-program differential test runs with) compares every
  compiled run with the reference interpreter, to round-off, counts included, and a
  disagreement is raised, never swallowed;
- `adcli codegen` writes a module that imports nothing from adcli and reproduces the
  executor's value and Jacobian (and JVP, VJP) to round-off, run in a fresh interpreter.
  (Not bit for bit: the same operations can round differently at different addresses,
  as SIMD and BLAS kernels split sums by alignment.)
"""
import importlib.util
import re
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

import adcli
from adcli.api import PlanMismatch, same_to_roundoff
from adcli.cli import cli
from adcli.staging import StagingError, StagingXP, Tape
from adcli.tangents import Scaled
from conftest import SAMPLE, SAMPLES

MODES = ("forward", "reverse")


def same(a, b) -> bool:
    return same_to_roundoff(np, a, b)


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def load_module(path):
    spec = importlib.util.spec_from_file_location(f"generated_{abs(hash(str(path)))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- compiling once --------------------------------------------------------------------------

def test_a_run_is_compiled_once_then_replayed():
    program = adcli.load(SAMPLE["mlp.ad"])
    first = program.jacobian(mode="reverse")
    second = program.jacobian(mode="reverse")
    assert "compile" in first.cost.time_s and "compile" not in second.cost.time_s
    assert first.cost.counts() == second.cost.counts()
    for name in first.blocks["loss"]:
        assert same(first.blocks["loss"][name], second.blocks["loss"][name])
    # another chunk, dtype or mode is another compiled run
    program.jacobian(mode="reverse", dtype="float32")
    program.jacobian(mode="forward", chunk=7)
    assert len(program._compiled) == 3


def test_replayed_counts_are_the_staged_counts_and_the_prediction():
    for path in SAMPLES:
        program = adcli.load(path)
        for mode in MODES:
            program.jacobian(mode=mode)
            replayed = program.jacobian(mode=mode).cost
            assert replayed.counts() == program.predict(mode).counts(), (path.name, mode)


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_checking_mode_agrees_on_every_sample(path):
    program = adcli.load(path)
    program.check_plans = True
    for mode in MODES:
        for chunk in (1, 2, None):
            program.jacobian(mode=mode, chunk=chunk)
    program.jvp({n: np.full(program.input_shape(n), 0.5) for n in program.input_names})
    program.vjp({n: np.full(program.output_shape(n), 0.5) for n in program.output_names})


def test_checking_mode_reports_a_wrong_plan():
    program = adcli.load(SAMPLE["seed_example.ad"])
    program.jacobian(mode="reverse")
    compiled = next(iter(program._compiled.values()))
    backward = compiled.plans[-1]
    correct = backward.compile()

    def twice(t):   # (seed_example's adjoints are Scaleds: their scale doubled)
        return Scaled(t.seed, 2 * t.scale) if isinstance(t, Scaled) else 2 * t

    def doubled(inputs):   # an injected bug: every adjoint twice what it should be
        return {node: {b: twice(t) for b, t in blocks.items()} for node, blocks in correct(inputs).items()}

    backward._fn = doubled
    program.check_plans = True
    with pytest.raises(PlanMismatch, match="differs from the interpreter"):
        program.jacobian(mode="reverse")


def test_staging_refuses_to_let_data_decide_the_structure():
    tape = Tape(np)
    x = tape.input(np.arange(3.0), "x")
    y = StagingXP(tape).sin(x) * 2
    with pytest.raises(StagingError):
        bool(y)
    with pytest.raises(StagingError):
        float(y[0])
    assert [e.kind for e in tape.eqns] == ["call", "binary", "getitem"]


def test_plans_free_values_after_their_last_use():
    program = adcli.load(SAMPLE["mlp.ad"])
    program.jacobian(mode="reverse")
    forward, backward = next(iter(program._compiled.values())).plans
    assert any(line.strip().startswith("del ") for line in backward.lines)
    assert "inputs.clear()" in "\n".join(backward.function())   # the last sweep frees residuals
    assert any("+=" in line for line in forward.lines)          # a sum made in place


# -- show --mode ----------------------------------------------------------------------------

def test_show_mode_prints_the_adjoint_program():
    result = run("show", SAMPLE["seed_example.ad"], "--mode", "reverse")
    assert result.exit_code == 0, result.output
    text = result.output
    # x̄1 = cos x1 + x2 is a scaled seed of the output's direction: its scale is the program's
    # (x1_bar_scale); x̄2 = x1 is x1 itself as a scale, nothing to compute
    for piece in ("def reverse_forward_sweep(inputs):", "def backward_sweep(inputs):",
                  "x1_bar_scale = dv4_dx1 + x2", "dv4_dx1 = xp_cos(x1)", "# counts: mults"):
        assert piece in text, piece


def test_show_mode_prints_the_tangent_program():
    result = run("show", SAMPLE["seed_example.ad"], "--mode", "forward")
    assert result.exit_code == 0, result.output
    assert "def forward_sweep(inputs):" in result.output and "_dot" in result.output


def test_show_mode_refuses_json_and_a_kind_of_the_other_mode():
    result = run("show", SAMPLE["seed_example.ad"], "--mode", "forward", "--json")
    assert result.exit_code == 2 and "--json" in result.output
    result = run("codegen", SAMPLE["seed_example.ad"], "--mode", "reverse", "--kind", "jvp")
    assert result.exit_code == 2 and "--kind jvp is made by forward mode" in result.output


LINALG = """dim n = 3
input A: mat[n, n] = 0.3 * randn(seed=1)
input b: vec[n] = randn(seed=2)
input v: vec[6] = randn(seed=3)
M = A + n * eye(n)
L = cholesky(M @ M.T)
output y = solve(M, b) + inv(M) @ b + det(M) * diag(M) + logdet(M) + trace(M) + triangular_solve(L, b, lower=true)
output z = tril(A) + triu(A, 1) + diag(b) + fill_tril(v, n)
"""


def test_linear_algebra_is_staged_and_replayed():
    """xp.linalg calls are recorded (as linalg.solve, ...), so a compiled run replays them:
    the second call runs the plan, on other values too."""
    program = adcli.loads(LINALG)
    for mode in MODES:
        first = program.jacobian(mode=mode)
        second = program.jacobian(mode=mode)
        assert "compile" in first.cost.time_s and "compile" not in second.cost.time_s
        assert same(first.jacobian, second.jacobian)
        at = {"A": 0.2 * np.ones((3, 3)), "b": np.arange(3.0), "v": np.ones(6)}
        replayed = program.jacobian(mode=mode, at=at)
        staged_there = adcli.loads(LINALG).jacobian(mode=mode, at=at)   # compiled at that point
        assert "compile" not in replayed.cost.time_s and "compile" in staged_there.cost.time_s
        assert same(replayed.jacobian, staged_there.jacobian)
    plans = [plan for run in program._compiled.values() for plan in run.plans]
    functions = {fn for plan in plans for fn in plan.functions}
    assert {"linalg.solve", "linalg.inv", "linalg.det", "linalg.slogdet", "linalg.cholesky"} <= functions
    assert any("xp_linalg_inv(" in line for plan in plans for line in plan.lines)


@pytest.mark.parametrize("mode", MODES)
def test_generated_module_runs_linear_algebra(tmp_path, mode):
    path = tmp_path / "la.ad"
    path.write_text(LINALG)
    target = tmp_path / "grad.py"
    assert run("codegen", path, "--mode", mode, "-o", target).exit_code == 0
    source = target.read_text()
    assert "xp_linalg_solve = xp.linalg.solve" in source
    value, jacobian = load_module(target).jacobian()
    want = adcli.load(path).jacobian(mode=mode)
    for o in want.blocks:
        assert same(np.asarray(value[o]), want.value[o])
        for w in want.blocks[o]:
            assert same(jacobian[o][w], want.blocks[o][w]), (o, w)


# -- codegen ----------------------------------------------------------------------------------

@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
@pytest.mark.parametrize("mode", MODES)
def test_generated_module_reproduces_the_executor(tmp_path, path, mode):
    target = tmp_path / "grad.py"
    result = run("codegen", path, "--mode", mode, "-o", target)
    assert result.exit_code == 0, result.output
    source = target.read_text()
    assert not re.search(r"^\s*(import|from)\s+adcli", source, re.MULTILINE)
    module = load_module(target)
    value, jacobian = module.jacobian()
    program = adcli.load(path)
    want = program.jacobian(mode=mode)
    for o in want.blocks:
        assert same(np.asarray(value[o]), want.value[o])
        for w in want.blocks[o]:
            assert same(jacobian[o][w], want.blocks[o][w]), (o, w)


def test_generated_module_takes_other_inputs_and_runs_alone(tmp_path):
    target = tmp_path / "grad.py"
    assert run("codegen", SAMPLE["seed_example.ad"], "-o", target).exit_code == 0
    module = load_module(target)
    value, gradient = module.gradient(x1=1.0, x2=-2.0)
    assert value == pytest.approx(1.0 * -2.0 + np.sin(1.0))
    assert gradient["x1"] == pytest.approx(-2.0 + np.cos(1.0)) and gradient["x2"] == pytest.approx(1.0)
    # a fresh interpreter that cannot import adcli: only NumPy
    done = subprocess.run([sys.executable, "-I", "-S", "-c",
                           "import sys; sys.path[:0] = [p for p in %r if 'site-packages' in p]; "
                           "sys.modules['adcli'] = None; import runpy; runpy.run_path(%r, run_name='__main__')"
                           % (sys.path, str(target))], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "6.9092974268256" in done.stdout


WITH_CONSTS = """const A: mat[2, 3] = [[1, 2, 3], [4, 5, 6]]
const B = A * 2
const s = 3
input x: vec[3] = [0.5, -1, 2]
output y = A @ x + sum(A) * s
output z = sin(x) * B[1]
output w = sum(x * x) * s
"""


@pytest.mark.parametrize("kind, mode", [("jacobian", "forward"), ("jacobian", "reverse"),
                                        ("jvp", "forward"), ("vjp", "reverse")])
def test_generated_functions_take_consts_as_keywords(tmp_path, kind, mode):
    """jacobian(), jvp(), vjp() take each const by keyword, the file's value by default, and
    give what adcli gives with at= the same consts; a const other consts are computed from
    is refused in a sentence (the module holds B's value, not B = A * 2)."""
    path = tmp_path / "c.ad"
    path.write_text(WITH_CONSTS)
    target = tmp_path / "g.py"
    assert run("codegen", path, "--mode", mode, "--kind", kind, "-o", target).exit_code == 0
    module = load_module(target)
    program = adcli.load(path)
    B, x = np.array([[0.0, 1, -1], [2, 3, 7]]), np.array([1.0, 0.25, -2])
    given = ({"x": np.array([1.0, -1, 0.5])} if kind == "jvp" else
             {"y": np.array([1.0, 2]), "z": np.array([0.5, -1, 3]), "w": 2.0})
    for consts in ({}, {"B": B}, {"B": B, "s": -0.5}):
        at = {"x": x, **consts}
        if kind == "jacobian":
            value, blocks = module.jacobian(x, **consts)
            want = program.jacobian(mode=mode, at=at)
            for o in want.blocks:
                for w in want.blocks[o]:
                    assert same(blocks[o][w], want.blocks[o][w]), (consts, o, w)
        else:
            value, got = getattr(module, kind)(given, x, **consts)
            want = getattr(program, kind)(given, at=at)
            for name, part in (want.tangent if kind == "jvp" else want.cotangent).items():
                assert same(np.asarray(got[name]), part), (consts, name)
        for o in want.value:
            assert same(np.asarray(value[o]), want.value[o]), (consts, o)
    with pytest.raises(ValueError, match=r"^const A cannot be set here: the \.ad file computes B from it"):
        module.jacobian(x, A=B) if kind == "jacobian" else getattr(module, kind)(given, x, A=B)
    with pytest.raises(ValueError, match=r"const s has shape \(2,\), but it is declared \(\)"):
        module.jacobian(s=[1, 2]) if kind == "jacobian" else getattr(module, kind)(given, s=[1, 2])


def test_generated_gradient_passes_consts_on(tmp_path):
    path = tmp_path / "g.ad"
    path.write_text("const c = 2\ninput x = 1.5\noutput f = c * x^2\n")
    target = tmp_path / "g.py"
    assert run("codegen", path, "-o", target).exit_code == 0
    module = load_module(target)
    assert module.gradient(x=3.0, c=-1.0) == (pytest.approx(-9.0), {"x": pytest.approx(-6.0)})
    assert module.gradient() == (pytest.approx(4.5), {"x": pytest.approx(6.0)})


@pytest.mark.parametrize("kind, mode", [("jvp", "forward"), ("vjp", "reverse")])
def test_generated_jvp_and_vjp_take_the_direction_as_an_argument(tmp_path, kind, mode):
    path = SAMPLE["chain.ad"]
    target = tmp_path / "d.py"
    assert run("codegen", path, "--mode", mode, "--kind", kind, "-o", target).exit_code == 0
    module = load_module(target)
    program = adcli.load(path)
    rng = np.random.default_rng(3)
    for _ in range(2):   # two different directions through one module
        if kind == "jvp":
            given = {n: rng.standard_normal(program.input_shape(n)) for n in program.input_names}
            _, got = module.jvp(given)
            want = program.jvp(given).tangent
        else:
            given = {n: rng.standard_normal(program.output_shape(n)) for n in program.output_names}
            _, got = module.vjp(given)
            want = program.vjp(given).cotangent
        for name in want:
            assert same(np.asarray(got[name]), want[name]), name


def test_codegen_to_standard_output_and_for_cupy():
    result = run("codegen", SAMPLE["seed_example.ad"], "--backend", "cupy")
    assert result.exit_code == 0, result.output
    assert "import cupy" in result.output and "xp = cupy" in result.output


def test_codegen_refuses_an_input_named_like_its_own_variables(tmp_path):
    source = tmp_path / "bad.ad"
    source.write_text("input value = 1.0\noutput y = value * value\n")
    result = run("codegen", source)
    assert result.exit_code == 2 and "rename it in the file" in result.output


def test_round_off_is_tolerated_and_a_real_difference_is_not():
    a = np.array([1.0, -3.0, 1e-300, np.inf, np.nan])
    b = a.copy()
    b[1] = np.nextafter(b[1], 0)   # one unit of round-off
    assert same(a, b)
    b[1] = -3.0 * (1 + 1e-9)
    assert not same(a, b)
    assert not same(a, a[:4]) and not same(a, np.where(np.isnan(a), 0.0, a))


def test_results_never_share_memory_with_data_or_plans():
    """The whole identity seed makes A·I a view of A; a result handed to the caller is
    still its own array, so changing it changes neither the file's data nor the plans."""
    program = adcli.loads("const A: mat[3, 3] = [[1, 2, 3], [4, 5, 6], [7, 8, 10]]\n"
                          "input x: vec[3] = [1, 1, 1]\n"
                          "output y = A @ x\noutput z = x\n")
    for mode in MODES:
        first = program.jacobian(mode=mode)
        block = first.blocks["y"]["x"]
        assert np.array_equal(block, [[1, 2, 3], [4, 5, 6], [7, 8, 10]])
        block[...] = 0
        first.value["z"][...] = 99
        again = program.jacobian(mode=mode)
        assert np.array_equal(again.blocks["y"]["x"], [[1, 2, 3], [4, 5, 6], [7, 8, 10]]), mode
        assert np.array_equal(again.value["y"], [6, 15, 25]) and np.array_equal(again.value["z"], [1, 1, 1])


def test_a_run_too_large_to_keep_is_staged_every_time(monkeypatch):
    """-x with 300 directions makes its 300×300 seed a dense constant (720 KB): over a
    (lowered) limit, the plans are not kept after the run, and results stay right."""
    import adcli.execute

    monkeypatch.setattr(adcli.execute, "MAX_CACHED_CONSTANT_BYTES", 500_000)
    program = adcli.loads("input x: vec[300] = 1\noutput y = -x\n")
    for call in range(2):   # compiled the first time, found too large: staged by each run after
        result = program.jacobian(mode="forward")
        assert ("compile" in result.cost.time_s) == (call == 0)
        assert np.array_equal(result.jacobian, -np.eye(300))
    assert program._compiled == {} and program._last_compiled is None
    assert result.cost.counts() == program.predict("forward").counts()
    with pytest.raises(adcli.errors.ResourceProblem, match="too large to keep"):
        from adcli.codegen import derivative_program
        derivative_program(program, "forward")


def test_show_options_of_the_derivative_program_need_a_mode():
    result = run("show", SAMPLE["seed_example.ad"], "--kind", "vjp")
    assert result.exit_code == 2 and "add --mode forward or --mode reverse" in result.output


def test_generated_functions_check_shapes_and_take_partial_directions(tmp_path):
    target = tmp_path / "j.py"
    assert run("codegen", SAMPLE["mlp.ad"], "--mode", "forward", "--kind", "jvp", "-o", target).exit_code == 0
    module = load_module(target)
    with pytest.raises(ValueError, match="input b1 has shape \\(5,\\), but it is declared \\(16,\\)"):
        module.jvp({"b2": 1.0}, b1=np.zeros(5))
    with pytest.raises(ValueError, match="there is no input named 'q'"):
        module.jvp({"q": 1.0})
    program = adcli.load(SAMPLE["mlp.ad"])
    _, tangent = module.jvp({"b2": 1.0})   # the inputs left out get no tangent
    assert same(np.asarray(tangent["loss"]), program.jvp({"b2": 1.0}).tangent["loss"])
    done = subprocess.run([sys.executable, str(target)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_codegen_writes_only_to_a_py_file(tmp_path):
    result = run("codegen", SAMPLE["seed_example.ad"], "-o", tmp_path / "grad.npy")
    assert result.exit_code == 2 and "must end in .py" in result.output
    assert not (tmp_path / "grad.npy").exists()


@pytest.mark.parametrize("mode", ["forward", "reverse"])
def test_codegen_keeps_the_shape_of_an_empty_constant(tmp_path, mode):
    """prod of an empty slice: reverse mode's plan holds a float64[1, 0, 4] constant, which a
    list literal would write as [[]] (shape (1, 0)); the module must make it with its shape."""
    from adcli.codegen import derivative_program, module_source
    program = adcli.loads("input X: mat[3, 4] = randn(seed=1)\noutput e = prod(X[0:0, :])")
    path = tmp_path / f"empty_{mode}.py"
    path.write_text(module_source(derivative_program(program, mode), "empty.ad"))
    value, jacobian = load_module(path).jacobian()
    assert value["e"] == pytest.approx(1.0)
    assert not np.asarray(jacobian["e"]["X"]).any()


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_long_plans_run_as_a_chain_of_functions(path, monkeypatch):
    """A plan body longer than BLOCK_LINES runs as a chain of functions sharing the values
    that cross a cut (tracemalloc's line lookups scan a whole function): cut every few
    lines here, every sample's runs in both modes, chunked and whole, must equal the
    interpreter's (check_plans) and measure their memory."""
    from adcli import plan as plan_module

    monkeypatch.setattr(plan_module, "BLOCK_LINES", 3)
    program = adcli.load(path)
    program.check_plans = True
    for mode in ("forward", "reverse"):
        for chunk in (1, None):
            result = program.jacobian(mode=mode, chunk=chunk, measure_memory=True)
            assert result.cost.peak_bytes > 0
    compiled = [p for run in program._compiled.values() for p in run.plans]
    assert any(len(p.lines) > 3 for p in compiled)
    assert any("_1(env)" in p.source() for p in compiled)   # the chain was made


# -- constants folded while compiling -------------------------------------------------------------

def _plan_sources(program) -> str:
    return "\n".join(plan.source() for run in program._compiled.values() for plan in run.plans)


def test_what_rules_compute_from_constants_alone_is_folded_into_the_plan():
    """The seed of mean() (1/n on a diagonal: ones, a product, zeros, a strided write,
    broadcast_to) is the same on every call: computed once while compiling, it is a
    constant of the backward plan, which used to run those nine lines every call."""
    from conftest import SAMPLE

    program = adcli.load(SAMPLE["mlp.ad"])
    result = program.jacobian(mode="reverse")
    source = _plan_sources(program)
    assert "xp_ones" not in source and "xp_zeros" not in source and "xp_broadcast_to" not in source
    reference = adcli.load(SAMPLE["mlp.ad"])
    reference.check_plans = True   # against the interpreter, which folds nothing
    checked = reference.jacobian(mode="reverse")
    for name in result.blocks["loss"]:
        np.testing.assert_allclose(result.blocks["loss"][name], checked.blocks["loss"][name], rtol=1e-13, atol=0)


@pytest.mark.parametrize("mode", ["forward", "reverse"])
def test_folded_constants_are_never_written_by_a_later_call(mode):
    """A folded value is the same array on every call: nothing sharing its memory may be
    written at run time or handed to the caller. Every sample, at its defaults, at moved
    inputs, then at its defaults again: the third call equals the first bit for bit, and
    the second a fresh program's answer there."""
    from conftest import SAMPLES

    for path in SAMPLES:
        program = adcli.load(path)
        first = program.jacobian(mode=mode)
        moved = {name: np.asarray(value) * 1.01 + 0.003 for name, value in program.resolve_inputs().items()}
        second = program.jacobian(mode=mode, at=moved)
        third = program.jacobian(mode=mode)
        fresh = adcli.load(path).jacobian(mode=mode, at=moved)
        np.testing.assert_array_equal(first.jacobian, third.jacobian, err_msg=path.name)
        np.testing.assert_allclose(second.jacobian, fresh.jacobian, rtol=1e-12, atol=1e-300, err_msg=path.name)


# -- what the file's consts alone make, computed once per compiled run ---------------------------

WAVE_TEXT = """dim N = 1000
const t: vec[N] = linspace(0, 10)
input a = 1.5
input k = 0.3
output y = a * exp(-k * t) * cos(3 * t)
"""


def _calls(program) -> set:
    return {name for run in program._compiled.values() for plan in run.plans for name in plan.functions}


@pytest.mark.parametrize("mode", MODES)
def test_what_the_consts_alone_make_is_computed_once(mode):
    """cos(3t) of a const t is the same on every call: computed while compiling, kept once
    for the run (not once per sweep), and the answer is the one computing it on every call
    gives, bit for bit."""
    chunk = 1 if mode == "forward" else 7   # two sweeps; 143 backward sweeps
    program = adcli.loads(WAVE_TEXT, "wave.ad")
    folded = program.jacobian(mode=mode, chunk=chunk)
    (run,) = program._compiled.values()
    # (reverse mode: cos(3t) is a residual, handed on to the backward sweeps as a view of the
    # constant; 3t is a temporary, t.reshape a view of t)
    assert "cos" not in _calls(program) and "exp" in _calls(program)
    assert run.folded_bytes == 8 * 1000
    unfolded = adcli.loads(WAVE_TEXT, "wave.ad")
    unfolded.fold_consts = False
    computed = unfolded.jacobian(mode=mode, chunk=chunk)
    assert "cos" in _calls(unfolded)
    np.testing.assert_array_equal(folded.jacobian, computed.jacobian)
    np.testing.assert_array_equal(folded.value["y"], computed.value["y"])


@pytest.mark.parametrize("mode", MODES)
def test_a_run_that_sets_a_const_computes_from_it(mode):
    """A const set by `at` is not the file's: that run's plans take it as an argument and
    compute from it (another compiled run), and the file's folded values are not used
    for it, nor it for a later call at the file's values."""
    program = adcli.loads(WAVE_TEXT, "wave.ad")
    first = program.jacobian(mode=mode)
    other_t = np.linspace(0, 5, 1000)
    moved = program.jacobian(mode=mode, at={"t": other_t})
    again = program.jacobian(mode=mode)
    y = 1.5 * np.exp(-0.3 * other_t) * np.cos(3 * other_t)
    np.testing.assert_allclose(moved.value["y"], y, rtol=1e-14)
    np.testing.assert_allclose(np.asarray(moved.jacobian)[:, 1], -other_t * y, rtol=1e-13, atol=1e-300)
    np.testing.assert_array_equal(first.jacobian, again.jacobian)
    assert len(program._compiled) == 2 and sorted(k[-1] for k in program._compiled) == [False, True]


def test_folding_stays_within_the_constant_budget(monkeypatch):
    """What would pass the plans' constant budget is left to run on every call; the run is
    still compiled and kept (folding never costs a run its plans)."""
    from adcli import execute

    monkeypatch.setattr(execute, "MAX_CACHED_CONSTANT_BYTES", 4000)   # cos(3t) needs 8000
    program = adcli.loads(WAVE_TEXT, "wave.ad")
    result = program.jacobian(mode="forward")
    (run,) = program._compiled.values()
    assert "cos" in _calls(program) and run.folded_bytes == 0
    np.testing.assert_allclose(result.value["y"], 1.5 * np.exp(-0.3 * np.linspace(0, 10, 1000))
                               * np.cos(3 * np.linspace(0, 10, 1000)), rtol=1e-14)


def test_a_value_made_from_consts_that_is_returned_is_never_folded():
    """An output made from consts alone is handed to the caller, who may write into it:
    it is made afresh on every call, and writing into one call's result leaves the next
    call's as it was."""
    program = adcli.loads(WAVE_TEXT + "output z = cos(t) * 2\n", "wave.ad")
    first = program.jacobian(mode="reverse")
    first.value["z"][:] = 7.0
    second = program.jacobian(mode="reverse")
    np.testing.assert_allclose(second.value["z"], 2 * np.cos(np.linspace(0, 10, 1000)), rtol=1e-15)


def test_a_measured_run_counts_what_its_plans_folded():
    """peak_bytes is what the sweeps allocate plus what compiling folded for them (the
    memory they use besides their own): cos(3t) is in it, and the prediction bounds it."""
    program = adcli.loads(WAVE_TEXT.replace("1000", "100000"), "wave.ad")
    result = program.jacobian(mode="forward", measure_memory=True)
    (run,) = program._compiled.values()
    assert run.folded_bytes == 8 * 100000
    assert run.folded_bytes < result.cost.peak_bytes <= result.cost.predicted["peak_bytes"]


def test_show_and_codegen_compute_what_the_consts_make():
    """The derivative program printed or written out computes cos(3t) from t, as the file
    says, so that a generated module's const can be set; the program folds again after."""
    from adcli.codegen import derivative_program

    program = adcli.loads(WAVE_TEXT, "wave.ad")
    program.jacobian(mode="forward")
    dp = derivative_program(program, "forward")
    assert any("xp_cos" in line for plan in dp.compiled.plans for line in plan.function())
    assert program.fold_consts


@pytest.mark.parametrize("kind", ["forward", "reverse", "vjp", "jvp"])
def test_an_output_that_is_a_const_is_the_callers_own_array(kind):
    """An output that is a const, or made from consts alone, is also a residual in reverse
    mode (the backward sweep reads it): it is still copied for the caller, so that writing
    into one call's result changes neither the program's const nor a later call."""
    text = ("const t: vec[3] = linspace(0, 1)\nconst w = cos(3 * t)\ninput x: vec[3] = [0.3, -0.2, 0.5]\n"
            "output g = w\noutput c = t\noutput h = w * x\n")
    program = adcli.loads(text, "consts.ad")

    def call():
        if kind == "vjp":
            return program.vjp({"g": np.ones(3), "c": np.ones(3), "h": np.ones(3)})
        if kind == "jvp":
            return program.jvp({"x": np.ones(3)})
        return program.jacobian(mode=kind)
    for _ in range(2):   # (the second call replays the compiled run)
        result = call()
        result.value["g"][:] = 1e9
        result.value["c"][:] = -1e9
    w = np.cos(3 * np.linspace(0, 1, 3))
    for later in (call(), program.jacobian(mode="forward"), program.jacobian(mode="reverse")):
        np.testing.assert_allclose(later.value["g"], w, rtol=1e-15)
        np.testing.assert_allclose(later.value["c"], np.linspace(0, 1, 3), rtol=1e-15)
        np.testing.assert_allclose(later.value["h"], w * [0.3, -0.2, 0.5], rtol=1e-15)
    np.testing.assert_allclose(program.evaluate()["h"], w * [0.3, -0.2, 0.5], rtol=1e-15)


@pytest.mark.parametrize("mode", MODES)
def test_a_generated_modules_results_are_the_callers_own(tmp_path, mode):
    """What a generated module returns is never its own stored data (a const, an identity
    block made dense): writing into one call's results leaves the next call's as they were."""
    source = tmp_path / "consts.ad"
    source.write_text("dim n = 3\nconst t: vec[n] = linspace(0, 1)\nconst w = cos(3 * t)\n"
                      "input x: vec[n] = [0.3, -0.2, 0.5]\ninput s = 1.5\n"
                      "output g = w\noutput h = w * s + x\n")
    target = tmp_path / "grad.py"
    assert run("codegen", source, "--mode", mode, "-o", target).exit_code == 0
    module = load_module(target)
    first_value, first_jacobian = module.jacobian()
    want = ({o: np.array(v) for o, v in first_value.items()},
            {o: {i: np.array(b) for i, b in blocks.items()} for o, blocks in first_jacobian.items()})
    for value in first_value.values():
        np.asarray(value)[...] = 5.0
    for blocks in first_jacobian.values():
        for block in blocks.values():
            np.asarray(block)[...] = 5.0
    value, jacobian = module.jacobian()
    for o in want[0]:
        np.testing.assert_array_equal(value[o], want[0][o])
        for i in want[1][o]:
            np.testing.assert_array_equal(jacobian[o][i], want[1][o][i])
