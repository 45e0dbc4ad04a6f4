"""adcli compare: recommendations, accuracy, scaling slopes, plots, JSON, errors."""
import json

import pytest
from click.testing import CliRunner

import adcli
from adcli.cli import cli
from adcli.compare import compare, fit_slope, parse_scale, scale
from adcli.decide import seconds
from adcli.errors import UsageProblem
from adcli.fd import TOLERANCE, finite_differences

SAMPLES = ["seed_example", "chain", "mlp", "deep", "sensitivity"]


def run(*args, input=None):
    return CliRunner().invoke(cli, list(args), input=input)


def test_sensitivity_recommends_forward():
    result = compare(adcli.load("samples/sensitivity.ad"), repeat=1)
    assert result.recommendation["mode"] == "forward"
    assert "2 passes instead of 200" in result.recommendation["reason"]


def test_mlp_recommends_reverse_and_names_the_numbers():
    result = compare(adcli.load("samples/mlp.ad"), repeat=1)
    rec = result.recommendation
    assert rec["mode"] == "reverse"
    fwd = result.runs["forward"].cost
    rev = result.runs["reverse"].cost
    assert f"{rev.mults_derivative:,} derivative mults instead of {fwd.mults_derivative:,}" in rec["reason"]
    assert f"{rev.values_moved:,} values moved instead of {fwd.values_moved:,}" in rec["reason"]
    assert "1 pass instead of 353" in rec["reason"]


SQUARE_CHAIN = """
dim n = 6
input x: vec[n] = ones
const A: mat[n, n] = randn(seed=1)
const B: mat[n, n] = randn(seed=2)
const C: mat[n, n] = randn(seed=3)
output y = C @ (B @ (A @ x))
"""


def test_square_chain_reason_names_the_figures_that_decided():
    result = compare(adcli.loads(SQUARE_CHAIN), repeat=1)
    rec = result.recommendation
    # forward |x|·|b|·(|a|+|y|) = 6·6·12 = 432 = reverse |y|·|a|·(|b|+|x|): the
    # multiplications tie, so what decides is the predicted time (or, within the
    # near-tie margin, the predicted memory if it differs by over 10%, else forward),
    # and the reason says which.
    assert result.runs["forward"].cost.mults_derivative == 432
    assert result.runs["reverse"].cost.mults_derivative == 432
    plans = rec["predicted"]["modes"]
    chosen, other = rec["mode"], "reverse" if rec["mode"] == "forward" else "forward"
    assert seconds(plans[chosen]["time_s"]) in rec["reason"]
    assert seconds(plans[other]["time_s"]) in rec["reason"]
    if "less memory" in rec["reason"]:   # a near tie, and the peaks differ by more than 10%
        assert plans[chosen]["peak_bytes"] < 0.9 * plans[other]["peak_bytes"]
    elif "a tie" in rec["reason"]:        # and the derivative mults are equal: forward
        assert chosen == "forward"
    else:
        assert plans[chosen]["time_s"] < plans[other]["time_s"]


@pytest.mark.parametrize("name", SAMPLES)
def test_finite_differences_agree_with_reverse(name):
    program = adcli.load(f"samples/{name}.ad")
    result = compare(program, repeat=1)
    acc = result.runs["central_differences"].accuracy["reverse"]
    assert acc["max_rel"] <= TOLERANCE["float64"]
    assert result.runs["forward"].accuracy["reverse"]["max_rel"] <= 1e-12
    assert result.runs["reverse"].accuracy["forward"]["max_rel"] <= 1e-12


def test_accuracy_rows_are_real_differences():
    # A linear function has no truncation error; a steep exponential has plenty:
    # the reported difference must reflect that, not a constant.
    linear = compare(adcli.loads("input x: vec[3] = [1, 2, 3]\noutput y = 2 * x"), repeat=1)
    steep = compare(adcli.loads("input x: vec[3] = [1, 2, 3]\noutput y = exp(3 * x)"), repeat=1)
    small = linear.runs["central_differences"].accuracy["reverse"]["max_rel"]
    large = steep.runs["central_differences"].accuracy["reverse"]["max_rel"]
    assert large > small
    assert large > 0
    # and float32 differences are larger than float64 ones
    f32 = compare(adcli.loads("input x: vec[3] = [1, 2, 3]\noutput y = exp(3 * x)"), repeat=1,
                  dtype="float32")
    assert f32.runs["central_differences"].accuracy["reverse"]["max_rel"] > large


def test_finite_difference_counts():
    program = adcli.load("samples/chain.ad")
    result = finite_differences(program)
    n, m = 3, 2
    assert result.cost.passes == n
    assert result.cost.primal_sweeps == 2 * n
    assert result.cost.mults_derivative == m * n          # one division per entry
    assert result.cost.mults_primal == 2 * n * 42         # 2n evaluations of 4·3 + 5·4 + 2·5 mults


DEEP = """
dim n = 6
dim depth = 4
input x: vec[n] = randn(seed=1)
const W: mat[n, n] = randn(seed=2) / sqrt(n)
h = x
repeat depth {
    h = tanh(W @ h)
}
output s = sum(h)
"""


def test_depth_sweep_slopes(tmp_path):
    path = tmp_path / "deep.ad"
    path.write_text(DEEP)
    sweep = scale(lambda dims: adcli.load(path, set=dims), "depth", [1, 2, 4, 8, 16, 32], {}, repeat=1)
    assert abs(sweep.slopes["reverse"]["cached_values"] - 1.0) <= 0.05
    assert sweep.slopes["forward"]["cached_values"] == 0.0
    assert sweep.slopes["forward"]["passes"] == 0.0


def test_input_size_sweep_slopes(tmp_path):
    path = tmp_path / "rn.ad"
    path.write_text("dim n = 4\ninput x: vec[n] = randn(seed=1)\noutput f = sum(sin(x) * x)\n")
    sweep = scale(lambda dims: adcli.load(path, set=dims), "n", [4, 16, 64, 256], {}, repeat=1)
    assert sweep.slopes["forward"]["passes"] == pytest.approx(1.0, abs=1e-9)
    assert sweep.slopes["reverse"]["passes"] == 0.0


def test_fit_slope_conventions():
    assert fit_slope([1, 2, 4], [0, 0, 0]) == 0.0
    assert fit_slope([1, 2, 4], [5, 5, 5]) == 0.0
    assert fit_slope([1, 2, 4, 8], [3, 12, 48, 192]) == pytest.approx(2.0)
    assert fit_slope([1], [1]) is None


def test_compare_json_keys():
    result = run("compare", "samples/mlp.ad", "--json", "--repeat", "1")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["kind"] == "compare"
    assert set(data["methods"]) == {"forward", "reverse", "central_differences"}
    for key, method in data["methods"].items():
        assert {"method", "backend", "cost", "accuracy", "time_s_median", "times_s", "predicted_bytes",
                "skipped"} <= set(method)
        assert method["method"] == key and method["backend"] == "numpy"
    assert set(data["recommendation"]) == {"mode", "reason", "disagreement", "mismatch", "checkpointed",
                                           "predicted"}
    assert set(data["recommendation"]["predicted"]["modes"]) == {"forward", "reverse"}
    assert data["recommendation"]["mismatch"] is None
    assert data["agreement"]["disagreeing"] == [] and data["agreement"]["tolerance"] == 1e-6
    assert all(pair["within_tolerance"] for pair in data["agreement"]["pairs"])
    assert data["recommendation"]["mode"] == "reverse"
    assert data["theory"]["predicted_pass_ratio"] == 353


def test_scale_json_has_points_and_slopes():
    result = run("compare", "samples/deep.ad", "--scale", "depth=1,2,4", "--json", "--repeat", "1")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [p["value"] for p in data["points"]] == [1, 2, 4]
    assert set(data["slopes"]) == {"forward", "reverse", "central_differences"}
    assert set(data["slopes"]["reverse"]) == {"passes", "derivative_mults", "cached_values",
                                              "peak_live_values", "peak_bytes", "time_s"}
    assert data["crossovers"] == []


def test_rich_output_mentions_recommendation():
    result = run("compare", "samples/sensitivity.ad", "--repeat", "1")
    assert result.exit_code == 0, result.output
    assert "recommendation: forward" in result.stdout
    assert "central diff." in result.stdout


@pytest.mark.parametrize("spec, message", [
    ("depth", "NAME=v1,v2"),
    ("depth=1,x", "whole numbers"),
    ("depth=4", "two or more"),
    ("depth=0,2", "two or more positive"),
])
def test_bad_scale_values(spec, message):
    result = run("compare", "samples/deep.ad", "--scale", spec, "--json")
    assert result.exit_code == 2
    assert result.stdout == ""
    error = json.loads(result.stderr)["error"]
    assert message in error["message"]


def test_unknown_scale_dim():
    result = run("compare", "samples/deep.ad", "--scale", "width=1,2")
    assert result.exit_code == 2
    assert "no dim named 'width'" in result.stderr


def test_parse_scale_sorts_and_dedups():
    assert parse_scale("n=10,1,10,100") == ("n", [1, 10, 100])
    with pytest.raises(UsageProblem):
        parse_scale("=1,2")


def test_memory_limit_skips_what_does_not_fit():
    # forward mode on the MLP needs all 353 tangent directions; under a small limit
    # it is chunked, and a limit below even one direction skips it with a note
    result = compare(adcli.load("samples/mlp.ad"), repeat=1, memory_limit=2_000)
    for name in ("forward", "reverse"):
        assert result.runs[name].skipped and "memory limit" in result.runs[name].skipped
    assert result.recommendation["mode"] is None
    assert "memory limit" in result.recommendation["reason"]


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib", reason="matplotlib (the plot extra) is not installed")
    target = tmp_path / "chain.png"
    result = run("compare", "samples/chain.ad", "--scale", "n=10,100", "--plot", str(target), "--repeat", "1")
    assert result.exit_code == 0, result.output
    data = target.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 5000
    assert b"matplotlib" in data   # the Software text chunk matplotlib writes


def test_plot_without_scale_is_a_usage_error():
    result = run("compare", "samples/chain.ad", "--plot", "x.png")
    assert result.exit_code == 2
    assert "--scale" in result.stderr


def test_several_backends_share_one_table():
    from adcli.backends import NumpyBackend

    class SecondNumpy(NumpyBackend):
        name = "numpy-copy"   # a stand-in second backend: CI has no GPU

    result = compare(adcli.load("samples/chain.ad"), repeat=1, backend=["numpy", SecondNumpy()])
    assert set(result.runs) == {f"{m}_{b}" for m in ("forward", "reverse", "central_differences")
                                for b in ("numpy", "numpy_copy")}
    assert result.runs["reverse_numpy"].cost.counts() == result.runs["reverse_numpy_copy"].cost.counts()
    assert result.runs["reverse_numpy_copy"].backend == "numpy-copy"
    data = result.to_json()
    assert data["methods"]["central_differences_numpy_copy"]["method"] == "central_differences"
    assert result.recommendation["mode"] == "reverse"
    assert result.backend == "numpy, numpy-copy"


def test_compare_rejects_unknown_backend():
    result = run("compare", "samples/chain.ad", "--backend", "numpy,gpu", "--json")
    assert result.exit_code == 2
    assert "--backend" in json.loads(result.stderr)["error"]["message"]
