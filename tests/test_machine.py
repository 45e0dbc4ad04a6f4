"""The machine model (adcli.machine): predicted time from counts, adcli calibrate,
and the per-machine cache."""
import json

import pytest
from click.testing import CliRunner

import adcli
import adcli.machine as machine
from adcli.cli import cli
from adcli.machine import DEFAULTS, MachineModel


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ADCLI_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(machine, "_loaded", {})
    return tmp_path


def test_time_is_the_three_terms_worked_by_hand():
    model = MachineModel("numpy", op_s=1e-6, bandwidth=1e9, gemm_rate=1e10)
    cost = adcli.loads("input x: vec[3] = [1, 2, 3]\nconst A: mat[2, 3] = ones\n"
                       "output y = A @ x\n").predict("reverse")
    # ops × op_s + values_moved × 8 / bandwidth + gemm_flops / gemm_rate
    expected = cost.ops * 1e-6 + cost.values_moved * 8 / 1e9 + cost.gemm_flops / 1e10
    assert model.time(cost, 8) == pytest.approx(expected)
    assert cost.gemm_flops == 2 * 2 * 3   # the primal matmul: 2 × rows × contraction


def test_gemm_flops_count_the_contractions_only():
    program = adcli.loads("dim n = 4\ninput A: mat[n, n] = ones\nconst B: mat[n, n] = ones\n"
                          "output y = sum(A @ B)\n")
    rev = program.predict("reverse")
    # primal A @ B: 2·n³; backward Ā = ȳ·Bᵀ with the cotangent a Seed after the sum's
    # expansion made it dense: one n×n×n product, 2·n³ flops
    assert rev.gemm_flops == 2 * 4**3 + 2 * 4**3
    assert program.predict("forward").gemm_flops == 2 * 4**3 + 0   # A's Seed selects rows of B


def test_defaults_until_calibrated(cache):
    assert machine.model_for("numpy") == DEFAULTS["numpy"]
    (cache / "machine.json").write_text("{not json")
    machine._loaded.clear()
    assert machine.model_for("numpy") == DEFAULTS["numpy"]   # an unreadable cache is ignored


def test_calibrate_measures_caches_and_is_used(cache):
    result = CliRunner().invoke(cli, ["calibrate", "--json", "--seconds", "1"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    model = data["model"]
    assert model["source"].startswith("calibrated")
    assert model["op_s"] > 0 and model["bandwidth"] > 0 and model["gemm_rate"] > 0
    assert {c["program"] for c in data["checks"]} >= {"overhead", "gemm"}
    assert (cache / "machine.json").exists()
    machine._loaded.clear()
    assert machine.model_for("numpy").to_json() == model
    shown = CliRunner().invoke(cli, ["calibrate", "--show", "--json"])
    assert json.loads(shown.stdout)["model"] == model
    text = CliRunner().invoke(cli, ["calibrate", "--show"])
    assert "µs per array operation" in text.stdout


def test_a_calibration_for_another_machine_is_not_used(cache):
    other = {"cupy|elsewhere|arm64|64|numpy 0": {"backend": "numpy", "op_s": 1.0, "bandwidth": 1.0,
                                                 "gemm_rate": 1.0, "source": "calibrated elsewhere"}}
    (cache / "machine.json").write_text(json.dumps(other))
    assert machine.model_for("numpy") == DEFAULTS["numpy"]
