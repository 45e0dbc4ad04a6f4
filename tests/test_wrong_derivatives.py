"""Regression tests for derivatives that were once silently wrong.

Each case is checked against central differences (tests/conftest.py, which uses
only Program.evaluate) and across modes and chunk sizes, so it cannot pass by
both modes being wrong the same way."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

import adcli
from adcli.cli import cli
from adcli.compare import agreement, compare, difference, recommend
from conftest import fd_jacobian

# Forward mode through a gather that repeats an element, then a product: the
# matmul rules wrote into a seed-shaped result by assignment, so the second
# write to a repeated direction replaced the first (gave 10 for 1 + 10).
REPEATED_GATHERS = {
    "vec @ const": "input x = 2\nconst c: vec[2] = [1, 10]\noutput y = [x, x] @ c\n",
    "const @ vec": "input x = 2\nconst A: mat[3, 2] = randn(seed=1)\noutput y = A @ [x, x]\n",
    "dot": "input x = 2\nconst c: vec[2] = [1, 10]\noutput y = dot([x, x], c)\n",
    "concat": "input x: vec[2] = [1, 2]\nconst A: mat[3, 4] = randn(seed=1)\n"
              "output y = A @ concat(x, x)\n",
    "W @ matrix": "input x: vec[2] = [1, 2]\nconst W: mat[3, 2] = randn(seed=1)\n"
                  "M = [[x[0], x[0]], [x[1], x[0]]]\noutput y = W @ M\n",
    "matrix @ W": "input x: vec[2] = [1, 2]\nconst W: mat[2, 3] = randn(seed=1)\n"
                  "M = [[x[0], x[0]], [x[1], x[0]]]\noutput y = M @ W\n",
    "matrix @ vec, vec @ matrix": "input x: vec[2] = [1, 2]\nconst v: vec[2] = [3, 5]\n"
                                  "M = [[x[0], x[0]], [x[1], x[0]]]\noutput y = M @ v\noutput z = v @ M\n",
    "stacked rows": "input x: vec[2] = [1, 2]\nconst W: mat[4, 2] = randn(seed=1)\n"
                    "M = stack(x, x)\noutput y = W @ M.T\noutput z = M @ W.T\n",
    "sum of products": "input x = 2\nconst c: vec[2] = [1, 10]\noutput y = sum([x, x] * c)\n",
}


@pytest.mark.parametrize("name", list(REPEATED_GATHERS))
def test_repeated_gather_then_product(name):
    program = adcli.loads(REPEATED_GATHERS[name])
    expected = fd_jacobian(program)
    passes = sum(v.size for v in program.resolve_inputs().values())
    for chunk in sorted({1, 2, passes}):
        forward = program.jacobian(mode="forward", chunk=chunk, measure_memory=False)
        np.testing.assert_allclose(forward.jacobian, expected, rtol=1e-8, atol=1e-8)
        assert forward.cost.counts() == program.predict("forward", chunk=chunk).counts()
    reverse = program.jacobian(mode="reverse", measure_memory=False)
    np.testing.assert_allclose(reverse.jacobian, expected, rtol=1e-8, atol=1e-8)


def test_the_reported_case_gives_eleven():
    program = adcli.loads(REPEATED_GATHERS["vec @ const"])
    assert program.jacobian(mode="forward").jacobian.tolist() == [[11.0]]
    assert program.jacobian(mode="auto").jacobian.tolist() == [[11.0]]


# A VJP over outputs that are one node: seeds were keyed by node, so the second
# output's cotangent replaced the first.
ALIASED = "input x = 3\ny = x * x\noutput a = y\noutput b = y\n"
ALIASED_INPUT = "input x: vec[2] = [1, 2]\noutput y = x\noutput z = x\n"


def test_vjp_over_aliased_outputs_adds_the_cotangents():
    program = adcli.loads(ALIASED)
    result = program.vjp({"a": 1.0, "b": 1.0})
    assert float(result.cotangent["x"]) == 12.0
    assert result.cost.counts() == program.predict("reverse", single=True).counts()
    weighted = program.vjp({"a": 2.0, "b": -0.5})
    assert float(weighted.cotangent["x"]) == pytest.approx(1.5 * 6.0)


def test_vjp_over_outputs_that_are_an_input():
    program = adcli.loads(ALIASED_INPUT)
    result = program.vjp({"y": [1.0, 0.0], "z": [1.0, 0.0]})
    assert result.cotangent["x"].tolist() == [2.0, 0.0]
    jac = program.jacobian(mode="reverse").jacobian
    assert jac.tolist() == [[1, 0], [0, 1], [1, 0], [0, 1]]
    assert program.jacobian(mode="forward").jacobian.tolist() == jac.tolist()


def _cli(*args):
    return CliRunner().invoke(cli, list(args))


def test_aliased_cotangents_through_the_cli_and_trace(tmp_path):
    path = tmp_path / "alias.ad"
    path.write_text(ALIASED)
    result = _cli("grad", str(path), "--cotangent", "a=1", "--cotangent", "b=1", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["cotangent"] == {"x": 12.0}
    traced = _cli("trace", str(path), "--mode", "reverse", "--cotangent", "a=1", "--cotangent", "b=1",
                  "--json")
    assert traced.exit_code == 0, traced.output
    assert "12" in json.dumps(json.loads(traced.stdout))


def test_compare_with_aliased_outputs_agrees(tmp_path):
    comparison = compare(adcli.loads(ALIASED_INPUT), repeat=1)
    assert comparison.agreement["message"] is None
    assert comparison.recommendation["mismatch"] is None


# compare measured a forward/reverse disagreement and still recommended forward.

def _break_forward(monkeypatch, factor=1.1):
    real = adcli.api.Program.jacobian

    def wrong(self, mode="auto", **kwargs):
        result = real(self, mode=mode, **kwargs)
        if result.mode == "forward":
            for block in result.blocks.values():
                for name in block:
                    block[name] = block[name] * factor
            result.__dict__.pop("jacobian", None)
        return result

    monkeypatch.setattr(adcli.api.Program, "jacobian", wrong)


def test_compare_never_recommends_a_mode_that_disagrees(monkeypatch):
    _break_forward(monkeypatch)
    comparison = compare(adcli.load("samples/sensitivity.ad"), repeat=1)   # forward would win
    assert comparison.agreement["disagreeing"] == ["forward"]
    assert "central differences agree with reverse" in comparison.agreement["message"]
    rec = comparison.recommendation
    assert rec["mode"] == "reverse"
    assert rec["mismatch"] == comparison.agreement["message"]
    assert "forward is out: its Jacobian disagrees" in rec["reason"]
    assert comparison.runs["forward"].accuracy["reverse"]["within_tolerance"] is False


def test_compare_recommends_nothing_when_no_method_can_decide(monkeypatch):
    _break_forward(monkeypatch)
    comparison = compare(adcli.load("samples/sensitivity.ad"), repeat=1,
                         methods=("forward", "reverse"))
    assert comparison.agreement["disagreeing"] == ["forward", "reverse"]
    assert comparison.recommendation["mode"] is None
    assert "cannot tell which is right" in comparison.recommendation["reason"]


def test_compare_reports_the_disagreement_in_table_json_and_stderr(monkeypatch):
    _break_forward(monkeypatch)
    shown = _cli("compare", "samples/sensitivity.ad", "--repeat", "1")
    assert shown.exit_code == 0, shown.output
    assert "✗" in shown.stdout and "forward and reverse mode disagree" in shown.stdout
    assert "warning: forward and reverse mode disagree" in shown.stderr
    as_json = _cli("compare", "samples/sensitivity.ad", "--repeat", "1", "--json")
    data = json.loads(as_json.stdout)
    assert data["recommendation"]["mode"] == "reverse"
    assert data["agreement"]["disagreeing"] == ["forward"]
    assert "warning: forward and reverse mode disagree" in as_json.stderr


def test_fd_alone_disagreeing_points_at_fd():
    class Run:
        def __init__(self, jac):
            self.result = type("R", (), {"jacobian": np.asarray(jac, dtype=float)})()
            self.accuracy = {}   # as before compare's _accuracy fills it
    runs = {"forward": Run([[1.0, 2.0]]), "reverse": Run([[1.0, 2.0]]),
            "central_differences": Run([[1.0, 2.5]])}
    verdict = agreement(runs, "float64")
    assert verdict["disagreeing"] == ["central_differences"]
    assert "kink" in verdict["message"]


def test_difference_handles_non_finite_entries():
    same_nan = np.array([[np.nan, 1.0]])
    assert difference(same_nan, same_nan.copy()) == {"max_abs": 0.0, "max_rel": 0.0}
    one_nan = difference(np.array([[np.nan, 1.0]]), np.array([[1.0, 1.0]]))
    assert np.isnan(one_nan["max_rel"])
    assert difference(np.array([[np.inf, 2.0]]), np.array([[np.inf, 1.0]]))["max_rel"] == 1.0


# The non-finite warning named an earlier x^3 (whose ∂/∂3 is never used) for x^y at
# x = -2, and nothing for an overflow of a product of finite local derivatives.

def test_nonfinite_names_the_node_whose_partial_is_used(tmp_path):
    path = tmp_path / "pow.ad"
    path.write_text("input x = -2\ninput y = 2\na = x^3\noutput f = a + x^y\n")
    for mode in ("forward", "reverse"):
        result = _cli("grad", str(path), "--mode", mode, "--summary")
        assert result.exit_code == 0, result.output
        assert "(x^y)" in result.stderr and "pow.ad:4" in result.stderr, result.stderr
        assert "(x^3)" not in result.stderr


def test_nonfinite_names_where_a_product_of_finite_partials_overflows(tmp_path):
    path = tmp_path / "overflow.ad"
    path.write_text("input x = 1e-30\noutput f = sqrt(x) * 1e300\n")
    forward = _cli("grad", str(path), "--mode", "forward", "--summary")
    assert "tangent of v4 = mul (sqrt(x) * 1e300)" in forward.stderr, forward.stderr
    assert "overflow.ad:2" in forward.stderr
    reverse = _cli("grad", str(path), "--mode", "reverse", "--json")
    assert "adjoint of v1 = input" in reverse.stderr, reverse.stderr
    assert json.loads(reverse.stdout)["jacobian"] == [[None]]
    jvp = _cli("grad", str(path), "--direction", "x=1", "--summary")
    assert "tangent of v4" in jvp.stderr


def test_entries_read_from_blocks_equal_the_assembled_jacobian():
    # the text view reads a few entries from the blocks instead of assembling J
    program = adcli.loads("input x: vec[3] = [1, 2, 3]\ninput W: mat[2, 2] = [[1, 2], [3, 4]]\n"
                          "input s = 0.5\noutput y = sin(x) * s\noutput z = W @ [x[0], x[1]]\n"
                          "output f = sum(W * W)\n")
    for mode in ("forward", "reverse"):
        result = program.jacobian(mode=mode)
        entries = [[result.entry(i, j) for j in range(result.shape[1])] for i in range(result.shape[0])]
        assert "jacobian" not in result.__dict__   # nothing assembled so far
        np.testing.assert_array_equal(np.array(entries), result.jacobian)
        assert result.shape == result.jacobian.shape
