"""The mode decision (adcli.decide): least predicted time among the modes that fit
the memory limit, one function for --mode auto, compare and the API."""
import json
import re

import pytest
from click.testing import CliRunner

import adcli
from adcli.cli import cli
from adcli.compare import compare
from adcli.decide import NEAR_TIE, decide, seconds
from adcli.machine import DEFAULTS, MachineModel

# Textbook scalar objectives: every one is a gradient, which reverse mode gets in
# one pass. Ranking by multiplications alone sent 12 of these to forward mode.
OBJECTIVES = [
    "sum(abs(x))", "sum(exp(x))", "sum(x^2)", "norm(x)", "logsumexp(x)", "max(x)",
    "-sum(log(x * x + 1))", "sum(tanh(x))", "sum(sqrt(x * x + 1))", "sum(x * x)",
    "sum(abs(x)) + max(x)", "mean(sin(x))", "sum(sigmoid(x))", "dot(x, sin(x))", "min(x) + sum(log1p(x * x))",
]


def objective(expr: str, n: int):
    return adcli.loads(f"dim n = {n}\ninput x: vec[n] = randn(seed=1)\noutput f = {expr}\n")


@pytest.mark.parametrize("n", [1000, 100_000])
@pytest.mark.parametrize("expr", OBJECTIVES)
def test_scalar_objectives_go_reverse(expr, n):
    decision = objective(expr, n).decide(memory_limit=2 * 10**9)
    if expr == "dot(x, sin(x))":
        # elementwise, then one product: forward mode's n directions stay a scaled Seed
        # (cos x·ẋ, then x·(that) is n mults, no more than reverse's), so forward is no
        # longer n times the work; measured at n = 100,000: 8.4 ms forward, 8.0-8.2 ms
        # reverse, 2.4 MB against 3.2 MB. Either may be picked; the prediction decides.
        f, r = decision.plans["forward"], decision.plans["reverse"]
        assert f.cost.mults_derivative == r.cost.mults_derivative == n
        assert decision.mode == ("forward" if f.time_s <= r.time_s else "reverse"), decision.reason
        return
    assert decision.mode == "reverse", decision.reason
    f, r = decision.plans["forward"], decision.plans["reverse"]
    assert r.cost.passes == 1 and (not f.fits or f.cost.passes == n)
    if f.fits:   # forward writes n × |node| values per node; the reason says so
        assert f"{r.cost.values_moved:,} values moved instead of {f.cost.values_moved:,}" in decision.reason


def test_the_reported_case_runs_reverse_in_milliseconds():
    # at n = 100,000 auto ran forward for 99.6 s and 11.9 GB; reverse takes milliseconds
    program = objective("sum(abs(x)) + max(x)", 100_000)
    result = program.jacobian(mode="auto", memory_limit=10**9, measure_memory=False)
    assert result.mode == "reverse"
    assert result.cost.predicted["time_s"] < 0.1


FEW_IN_MANY_OUT = """
dim m = 400
input a = 1.5
input k = 0.3
const t: vec[m] = linspace(0, 10)
output y = a * exp(-k * t) * cos(3 * t)
"""


def test_few_inputs_many_outputs_go_forward():
    decision = adcli.loads(FEW_IN_MANY_OUT).decide()
    assert decision.mode == "forward", decision.reason
    assert "2 passes instead of 400" in decision.reason


def test_a_mode_over_the_limit_is_not_chosen_and_the_reason_says_why():
    program = objective("sum(x * x)", 20_000)
    decision = program.decide(memory_limit=4 * 10**6)
    assert decision.mode == "reverse"
    # forward at 20,000 directions is chunked to fit; its chunk and time are in the plan
    plan = decision.plans["forward"]
    assert not plan.fits or plan.chunk < 20_000


def test_no_mode_fits_is_one_sentence_error():
    program = objective("sum(x * x)", 1000)
    with pytest.raises(adcli.errors.ResourceProblem) as caught:
        program.jacobian(mode="auto", memory_limit=9000)   # the 8 KB gradient fits, no sweep does
    assert "no mode can run" in caught.value.message


def test_near_ties_go_to_less_memory():
    # exactly equal predicted times: the one with the smaller predicted peak wins
    program = adcli.loads("input x: vec[3] = [1, 2, 3]\noutput y = sin(x)\n")
    decision = decide(program, model=MachineModel("numpy", 1.0, 1e30, 1e30))   # time = ops only
    f, r = decision.plans["forward"], decision.plans["reverse"]
    if abs(f.time_s - r.time_s) <= NEAR_TIE * max(f.time_s, r.time_s):
        smaller = "forward" if f.peak_bytes <= r.peak_bytes else "reverse"
        assert decision.mode == smaller
        assert "within 10%" in decision.reason or "a tie" in decision.reason


def test_the_decision_is_cached_per_program():
    program = objective("sum(x * x)", 500)
    assert program.decide() is program.decide()
    assert program.decide(memory_limit=10**6) is not program.decide(memory_limit=10**7)


def _cli(*args):
    return CliRunner().invoke(cli, list(args))


SAMPLES = ["samples/seed_example.ad", "samples/chain.ad", "samples/mlp.ad", "samples/deep.ad",
           "samples/sensitivity.ad"]


@pytest.mark.parametrize("path", SAMPLES)
@pytest.mark.parametrize("limit", ["1GB", "60KB", "20KB"])
def test_grad_and_compare_agree(path, limit):
    # text output: at a tight limit, --json may be refused for the JSON text itself
    graded = CliRunner().invoke(cli, ["grad", path, "--summary", "--memory-limit", limit],
                                env={"NO_COLOR": "1", "COLUMNS": "200"})
    compared = _cli("compare", path, "--json", "--memory-limit", limit, "--repeat", "1")
    assert compared.exit_code == 0, compared.output
    rec = json.loads(compared.stdout)["recommendation"]
    if graded.exit_code != 0:   # nothing fits: both say so
        assert rec["mode"] is None and "no mode can run" in graded.stderr
        return
    picked = re.search(r"mode\s+(forward|reverse)\s+\(auto picked", graded.stdout)
    assert picked and picked.group(1) == rec["mode"], (graded.stdout, rec)
    as_json = _cli("grad", path, "--json", "--memory-limit", limit)
    if as_json.exit_code == 0:   # the JSON text's own bytes count against the limit too
        assert json.loads(as_json.stdout)["mode"] == rec["mode"]
        if limit == "1GB":
            assert json.loads(as_json.stdout)["mode_note"] == "auto picked " + rec["predicted"]["reason"]


@pytest.mark.parametrize("path", SAMPLES)
def test_numbers_in_the_reason_are_the_numbers_in_the_json(path):
    data = json.loads(_cli("grad", path, "--json", "--memory-limit", "1GB").stdout)
    program = adcli.load(path)
    decision = program.decide(memory_limit=10**9)
    plans = decision.plans
    note = data["mode_note"]
    for mode, plan in plans.items():
        assert seconds(plan.time_s) in note, (mode, note)
    # whole counts (not times, byte sizes, ratios or percentages, which are checked above)
    tokens = re.findall(r"(\d[\d,.]*)(\s*(?:µs|ms|s\b|KB|MB|GB|B\b|×|%))?", note)
    numbers = {int(x.replace(",", "")) for x, unit in tokens if not unit and "." not in x}
    figures = set()
    for plan in plans.values():
        c = plan.cost
        figures |= {c.passes, c.sweeps, c.values_moved, c.mults_derivative, c.ops}
    figures |= {10}   # "within 10%"
    assert numbers <= figures | {int(NEAR_TIE * 100)}, (numbers - figures, note)


def test_predicted_beside_measured_in_grad_json_and_panel():
    data = json.loads(_cli("grad", "samples/mlp.ad", "--json").stdout)
    predicted = data["cost"]["predicted"]
    assert predicted["time_s"] > 0 and predicted["peak_bytes"] > 0
    shown = _cli("grad", "samples/mlp.ad", "--summary")
    assert "predicted" in shown.stdout


def test_compare_reports_when_measured_times_contradict_the_prediction():
    from adcli.compare import MethodRun, _timing_contradiction

    program = adcli.loads(FEW_IN_MANY_OUT)
    decision = program.decide()
    assert decision.mode == "forward"
    predicted = decision.plans["reverse"].time_s / decision.plans["forward"].time_s
    runs = {"forward": MethodRun("forward", times=[0.004]), "reverse": MethodRun("reverse", times=[0.001])}
    sentence = _timing_contradiction(runs, decision)
    assert sentence.startswith("the measured times contradict the prediction: forward was predicted "
                               f"{predicted:,.2g}× faster than reverse but measured 4× slower")
    agreeing = {"forward": MethodRun("forward", times=[0.001]), "reverse": MethodRun("reverse", times=[0.004])}
    assert _timing_contradiction(agreeing, decision) is None


def test_default_models_are_documented_constants():
    assert set(DEFAULTS) == {"numpy", "cupy"}
    for model in DEFAULTS.values():
        assert model.op_s > 0 and model.bandwidth > 0 and model.gemm_rate > 0
