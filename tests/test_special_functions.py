"""The special functions from SciPy (issue 13, part 2): erf, erfc, gammaln, digamma,
multigammaln and log_softmax. Values against SciPy, the conventions outside their domains,
their documented costs, the plumbing that reaches the backend's special-function module
(staging, plans, codegen, CuPy's cupyx), and that SciPy is imported only when used.

Their derivatives are checked against finite differences, with both modes and prediction
= count, in test_ops.py and test_counts.py like every op's.
"""
import math
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import scipy.special as sp

import adcli
from adcli.backends import special_functions
from adcli.errors import AdError
from adcli.staging import StagingXP, Tape

from conftest import ROOT, SAMPLE, fd_jacobian, jacobians

X = [0.1, -0.4, 0.7, 2.5]
POSITIVE = [0.3, 1.0, 2.5, 7.0]
NEGATIVE = [-0.5, -1.5, -2.3, -3.7]   # between the poles


@pytest.mark.parametrize("name, at, expected", [
    ("erf", X, sp.erf), ("erfc", X, sp.erfc), ("gammaln", POSITIVE, sp.gammaln),
    ("gammaln", NEGATIVE, sp.gammaln), ("digamma", POSITIVE, sp.digamma), ("digamma", NEGATIVE, sp.digamma),
])
def test_values_are_scipys(name, at, expected):
    program = adcli.loads(f"input x: vec[4] = {at}\noutput y = {name}(x)")
    np.testing.assert_allclose(program.evaluate()["y"], expected(np.array(at)), rtol=1e-15, atol=0)


def test_gammaln_of_negative_numbers_is_the_log_of_the_absolute_value():
    """Γ(-0.5) = -2√π < 0: gammaln is log 2√π, and its derivative is still digamma(-0.5)."""
    program = adcli.loads("input x = -0.5\noutput y = gammaln(x)")
    assert program.evaluate()["y"] == pytest.approx(math.log(2 * math.sqrt(math.pi)), rel=1e-15)
    for result in jacobians(program):
        assert result.jacobian[0, 0] == pytest.approx(sp.digamma(-0.5), rel=1e-14)


@pytest.mark.parametrize("d", [1, 2, 3, 5])
def test_multigammaln_is_scipys_inside_its_domain(d):
    a = np.array([[2.6, 3.0, 4.5], [5.25, 7.0, 10.0]])
    program = adcli.loads(f"dim d = {d}\ninput a: mat[2, 3] = {a.tolist()}\noutput y = multigammaln(a, d)")
    np.testing.assert_allclose(program.evaluate()["y"], sp.multigammaln(a, d), rtol=1e-14)
    derivative = sum(sp.digamma(a - j / 2) for j in range(d))
    for result in jacobians(program):
        np.testing.assert_allclose(np.diag(result.jacobian), derivative.reshape(-1), rtol=1e-13)


def test_multigammaln_takes_d_by_keyword():
    """multigammaln(a, d=3), SciPy's keyword, is multigammaln(a, 3), in constant data too."""
    a = np.array([2.5, 4.0])
    keyword = adcli.loads(f"input a: vec[2] = {a.tolist()}\nconst c = multigammaln(3.5, d=2)\n"
                          "output y = multigammaln(a, d=3) + c")
    np.testing.assert_allclose(keyword.evaluate()["y"], sp.multigammaln(a, 3) + sp.multigammaln(3.5, 2),
                               rtol=1e-14)
    positional = adcli.loads(f"input a: vec[2] = {a.tolist()}\noutput y = multigammaln(a, 3)")
    np.testing.assert_array_equal(keyword.jacobian().jacobian, positional.jacobian().jacobian)


def test_multigammaln_below_its_domain_is_the_same_sum():
    """a ≤ (d - 1)/2: SciPy refuses; adcli takes the sum of gammaln (log |Γ_d(a)|), as JAX does,
    and +inf at a pole (a - j/2 = 0 here for a = 1, d = 3)."""
    program = adcli.loads("input a: vec[2] = [0.7, 1.0]\noutput y = multigammaln(a, 3)")
    with np.errstate(all="ignore"):
        value = program.evaluate()["y"]
    want = 3 * 2 / 4 * math.log(math.pi) + sum(sp.gammaln(0.7 - j / 2) for j in range(3))
    assert value[0] == pytest.approx(want, rel=1e-14)
    assert value[1] == math.inf
    with pytest.raises(ValueError):
        sp.multigammaln(np.array([0.7]), 3)


@pytest.mark.parametrize("axis", [None, 0, 1, -1])
def test_log_softmax_is_scipys(axis):
    x = np.array([[0.5, -1.0, 2.0], [3.0, 0.25, -0.75]])
    call = "log_softmax(x)" if axis is None else f"log_softmax(x, axis={axis})"
    program = adcli.loads(f"input x: mat[2, 3] = {x.tolist()}\noutput y = {call}")
    np.testing.assert_allclose(program.evaluate()["y"], sp.log_softmax(x, axis=axis), rtol=1e-15, atol=1e-15)
    fwd, rev = jacobians(program)
    np.testing.assert_allclose(fwd.jacobian, rev.jacobian, rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(fwd.jacobian, fd_jacobian(program), rtol=1e-7, atol=1e-9)


def test_log_softmax_is_stable_where_softmax_underflows():
    """log(softmax(x)) is -inf where softmax underflows; log_softmax stays x - max - log Σ,
    and its Jacobian is I - 1·softmax(x)ᵀ, finite everywhere."""
    program = adcli.loads("input x: vec[3] = [1000, 0, -1000]\noutput y = log_softmax(x)")
    assert program.evaluate()["y"] == pytest.approx([0.0, -1000.0, -2000.0], abs=1e-12)
    softmax = np.array([1.0, 0.0, 0.0])
    for result in jacobians(program):
        np.testing.assert_allclose(result.jacobian, np.eye(3) - softmax[None, :], atol=1e-300)
    with np.errstate(all="ignore"):
        naive = adcli.loads("input x: vec[3] = [1000, 0, -1000]\noutput y = log(softmax(x))").evaluate()["y"]
    assert naive[2] == -math.inf


def test_erfc_keeps_its_tail_where_1_minus_erf_does_not():
    program = adcli.loads("input x = 10\noutput y = erfc(x)\noutput z = 1 - erf(x)")
    values = program.evaluate()
    assert values["y"] == pytest.approx(2.088487583762545e-45, rel=1e-14) and values["z"] == 0.0
    for result in jacobians(program):   # -2/√π e^(-100), for both (erf's is the opposite)
        assert result.jacobian[0, 0] == pytest.approx(-2 / math.sqrt(math.pi) * math.exp(-100), rel=1e-14)
        assert result.jacobian[1, 0] == pytest.approx(-result.jacobian[0, 0], rel=1e-14)


def test_single_precision():
    program = adcli.loads("input x: vec[3] = [0.3, 1.2, 2.5]\n"
                          "output y = erf(x) + erfc(x) + gammaln(x) + digamma(x) + multigammaln(x + 1, 2)"
                          " + log_softmax(x)")
    for f64, f32 in zip(jacobians(program), jacobians(program, dtype="float32")):
        assert f32.jacobian.dtype == np.float32
        np.testing.assert_allclose(f32.jacobian, f64.jacobian, rtol=1e-5)
        assert f32.cost.counts() == f64.cost.counts()


# -- costs (docs/counting.md) -------------------------------------------------------------------------

@pytest.mark.parametrize("d", [1, 2, 4])
def test_multigammaln_costs_grow_with_d(d):
    """Primal: (3d - 2 + [d > 1]) flops per element; partial Σ digamma(a - j/2): 3d - 2 flops
    and no mults; its propagation a scale (k·s mults and flops) on a dense tangent."""
    s = 3
    program = adcli.loads(f"input x: vec[{s}] = [2, 3, 4]\nconst C: mat[{s}, {s}] = 0.5 * rand(seed=1)\n"
                          f"u = C @ x + 2\nv = multigammaln(u, {d})\noutput y = C @ v")
    for result in jacobians(program):
        # around the op: C·x and C·v (s·s mults, 2·s·s flops each) and + 2 (1 flop)
        assert result.cost.flops_primal == 4 * s * s + s * (1 + 3 * d - 2 + (d > 1))
        assert result.cost.mults_primal == 2 * s * s
        # k = s directions: the op's scale s·s, and the const product on a dense derivative
        # (C·v̇ forward, Cᵀ·ū reverse; the other is with a Seed: free) s·s·s
        assert result.cost.mults_derivative == s * s + s ** 3
        assert result.cost.flops_derivative == (3 * d - 2) * s + s * s + 2 * s ** 3
        assert result.cost.counts() == program.predict(result.mode).counts()


def test_log_softmax_costs():
    """Primal 5n + s flops (max, shift, exp, Σ, log of s sums, subtract); partial exp(out):
    1 flop per element; propagation k·n mults and 3·k·n flops in either mode."""
    program = adcli.loads("input x: mat[2, 3] = rand(seed=1)\nconst C: mat[2, 2] = 0.5 * rand(seed=2)\n"
                          "u = C @ x\nv = log_softmax(u, axis=1)\noutput y = C @ v")
    n, s = 6, 2
    fwd, rev = jacobians(program)
    for result in (fwd, rev):
        # C·x and C·v: 2·2·3 = 12 mults, 24 flops each
        assert result.cost.flops_primal == 48 + 5 * n + s and result.cost.mults_primal == 24
        # partial n; the op k·n mults, 3·k·n flops; the const product on a dense derivative
        # after (forward: C·v̇) or before (reverse: Cᵀ·ū) it 12 mults, 24 flops per
        # direction (the other is with a Seed: free); k = 6 directions either way
        assert result.cost.mults_derivative == n * n + n * 12
        assert result.cost.flops_derivative == n + 3 * n * n + n * 24


# -- errors ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, message", [
    ("input x = 3\noutput y = multigammaln(x)", "multigammaln takes 2 arguments, got 1"),
    ("input x = 3\noutput y = multigammaln(x, 0)", "multigammaln's d must be positive, got 0"),
    ("input x = 3\noutput y = multigammaln(x, 1.5)", "multigammaln's d must be an integer, got 1.5"),
    ("input x = 3\ninput k = 2\noutput y = multigammaln(x, k)", "'k' is not a dim"),
    ("input x = 3\noutput y = multigammaln(x, 20000)", "multigammaln's d must be at most 10,000, got 20,000"),
    ("input x = 3\noutput y = multigammaln(x, 2, d=2)", "multigammaln's d is given twice (second argument and d=)"),
    ("input x = 3\noutput y = multigammaln(x, p=2)", "multigammaln has no argument 'p'"),
    ("input x = 3\noutput y = multigammaln(x, d=0)", "multigammaln's d must be positive, got 0"),
    ("input x = 3\noutput y = erf(x, x)", "erf takes 1 argument, got 2"),
    ("input x: vec[2] = ones\noutput y = log_softmax(x, axis=1)", "axis=1 is out of range for vec[2]"),
    ("input x: vec[2] = ones\noutput y = log_softmax(x, dim=0)", "log_softmax has no argument 'dim'"),
    ("input gammaln = 1\noutput y = gammaln", "'gammaln' is a built-in function"),
])
def test_errors(text, message):
    with pytest.raises(AdError, match=re.escape(message)):
        adcli.loads(text)


def test_error_points_at_d():
    with pytest.raises(AdError) as caught:
        adcli.loads("input x = 3\noutput y = multigammaln(x, 0.5)", "m.ad")
    text = caught.value.render()
    assert text.startswith("m.ad:2:28: error: multigammaln's d must be an integer, got 0.5")
    assert text.splitlines()[-1] == " " * 29 + "^"   # under the 0.5 (the line is indented by 2)


def test_special_functions_in_constant_data():
    program = adcli.loads("const c: vec[2] = erf([0.5, 1]) + gammaln(3)\ninput x = 1\noutput y = c * x")
    np.testing.assert_allclose(program.evaluate()["y"], sp.erf([0.5, 1.0]) + math.log(2), rtol=1e-15)


# -- the plumbing ------------------------------------------------------------------------------------

def test_the_backend_hook_picks_the_module_of_the_array_module(monkeypatch):
    assert special_functions(np) is sp
    # CuPy's: cupyx.scipy.special (stand-ins here: the machine may have no CuPy)
    fake = types.ModuleType("cupyx.scipy.special")
    for name in ("cupyx", "cupyx.scipy", "cupyx.scipy.special"):
        monkeypatch.setitem(sys.modules, name, fake if name.endswith("special") else types.ModuleType(name))
    sys.modules["cupyx"].scipy = sys.modules["cupyx.scipy"]
    sys.modules["cupyx.scipy"].special = fake
    assert special_functions(types.SimpleNamespace(__name__="cupy")) is fake


def test_staging_records_special_functions_as_equations():
    tape = Tape(np)
    xp = StagingXP(tape)
    x = tape.input(np.array([0.5, 1.5]), "x")
    special = special_functions(xp)
    y = special.erf(x) + special.gammaln(2.0)   # a constant argument: computed now, not recorded
    assert [(e.kind, e.name) for e in tape.eqns] == [("special", "erf"), ("binary", "add")]
    np.testing.assert_allclose(y.value, sp.erf([0.5, 1.5]))


def _imports_scipy(args) -> bool:
    """Whether the command line, run in a fresh interpreter, imports SciPy."""
    code = ("import sys\nfrom adcli.cli import main\ntry:\n    main(%r)\nexcept SystemExit:\n    pass\n"
            "print('SCIPY' if any(m == 'scipy' or m.startswith('scipy.') for m in sys.modules) else 'NO SCIPY')"
            % (args,))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1] == "SCIPY"


def test_scipy_is_imported_only_by_programs_that_use_it(tmp_path):
    """Start-up time is a feature: parsing and running a program without special functions
    never imports SciPy; one with erf does (so the check can tell)."""
    assert not _imports_scipy(["grad", str(SAMPLE["seed_example.ad"]), "--json"])
    special = tmp_path / "special.ad"
    special.write_text("input x = 0.5\noutput y = erf(x)\n")
    assert _imports_scipy(["grad", str(special), "--json"])


def test_generated_module_imports_scipy_special_only_when_used(tmp_path):
    from click.testing import CliRunner

    from adcli.cli import cli

    source = tmp_path / "s.ad"
    source.write_text("input x: vec[3] = [0.3, 1.2, 2.5]\n"
                      "output y = sum(erf(x) * gammaln(x) + digamma(x)) + multigammaln(x[2], 3)\n")
    for mode in ("forward", "reverse"):
        target = tmp_path / f"grad_{mode}.py"
        result = CliRunner().invoke(cli, ["codegen", str(source), "--mode", mode, "-o", str(target)])
        assert result.exit_code == 0, result.output
        text = target.read_text()
        assert "import scipy.special" in text and "adcli" not in text.split('"""')[2]
        # a fresh interpreter that cannot import adcli: NumPy and SciPy only
        done = subprocess.run([sys.executable, "-I", "-S", "-c",
                               "import sys; sys.path[:0] = [p for p in %r if 'site-packages' in p]; "
                               "sys.modules['adcli'] = None; import runpy; "
                               "m = runpy.run_path(%r); print(repr(m['gradient']()[1]['x'].tolist()))"
                               % (sys.path, str(target))], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        got = np.array(eval(done.stdout.strip().splitlines()[-1]))
        want = adcli.load(source).jacobian(mode=mode).jacobian.reshape(-1)
        np.testing.assert_allclose(got, want, rtol=1e-14)
    cupy = CliRunner().invoke(cli, ["codegen", str(source), "--backend", "cupy"])
    assert cupy.exit_code == 0 and "import cupyx.scipy.special" in cupy.output
    assert "sp_erf = cupyx.scipy.special.erf" in cupy.output
    plain = CliRunner().invoke(cli, ["codegen", str(SAMPLE["seed_example.ad"])])
    assert plain.exit_code == 0 and "scipy" not in plain.output and "sp_" not in plain.output
