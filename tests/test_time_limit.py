"""The time guard: a run predicted (by the machine model, adcli.machine) to take longer
than --time-limit (default 1 h; the API's time_limit, default none) is refused in one
sentence before it starts, as the memory guard refuses one that would not fit; compare
skips such a method and says why. A loop of 10^12 steps used to start without a word."""
import json

import pytest
from click.testing import CliRunner

import adcli
from adcli.cli import cli, parse_duration
from adcli.errors import ResourceProblem, UsageProblem

HUGE = "input x: scalar = 0.3\nrepeat 1000000000000 {\n  x = sin(x)\n}\noutput y = x\n"


def test_a_run_predicted_past_the_limit_is_refused_before_it_starts():
    program = adcli.loads(HUGE)
    with pytest.raises(ResourceProblem) as refused:
        program.jacobian(mode="forward", time_limit=3600)
    message = str(refused.value)
    # 3 operations a step (sin, its partial, the tangent's product), each at the
    # interpreter's price: days, not hours; what the ends add, from a loop of 10 steps
    ends = adcli.loads(HUGE.replace("1000000000000", "10"), loops="always").predict("forward").ops - 30
    assert message.startswith("forward mode is predicted to take about ")
    assert f"{3 * 10 ** 12 + ends:,} array operations" in message and message.endswith("over the time limit of 1 h")
    assert "days" in message
    assert "--time-limit" in refused.value.hint
    with pytest.raises(ResourceProblem, match="even keeping every step's residuals, which runs no step again"):
        program.vjp({"y": 1.0}, checkpoints=10, time_limit=3600)   # refused before any schedule is walked
    assert "try the other --mode" not in refused.value.hint   # reverse mode is past the limit too
    shorter = adcli.loads(HUGE.replace("1000000000000", "100000"), loops="always")
    with pytest.raises(ResourceProblem, match="loop steps run again") as again:
        shorter.vjp({"y": 1.0}, checkpoints=1, time_limit=60)   # keeping every residual would fit
    assert "keep more states with --checkpoints" in again.value.hint
    with pytest.raises(ResourceProblem, match="over the time limit"):
        program.jvp({"x": 1.0}, time_limit=3600)


def test_no_limit_by_default_in_the_api_and_small_runs_pass():
    program = adcli.loads("input x: scalar = 0.3\noutput y = sin(x)\n")
    assert program.jacobian(mode="forward", time_limit=1.0).jacobian.shape == (1, 1)
    assert program.jacobian(mode="reverse").jacobian.shape == (1, 1)


@pytest.mark.parametrize("text, seconds", [("90", 90), ("90s", 90), ("10min", 600), ("2h", 7200),
                                           ("1d", 86400), ("1.5h", 5400), ("500ms", 0.5), ("0", None),
                                           ("none", None)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


def test_the_cli_refuses_with_one_sentence_and_takes_0_for_none(tmp_path):
    huge = tmp_path / "huge.ad"
    huge.write_text(HUGE)
    runner = CliRunner()
    out = runner.invoke(cli, ["grad", str(huge), "--json"])
    assert out.exit_code == 1
    error = json.loads(out.stderr)["error"]
    assert error["kind"] == "resource" and "over the time limit of 1 h" in error["message"]
    assert (error["file"], error["line"], error["column"]) == (str(huge), 2, 1)   # the repeat's place
    text = runner.invoke(cli, ["grad", str(huge)])
    assert text.stderr.startswith(f"{huge}:2:1: error: forward mode is predicted")
    assert "\n  repeat 1000000000000 {\n  ^\n" in text.stderr
    bad = runner.invoke(cli, ["grad", str(huge), "--time-limit", "soon"])
    assert bad.exit_code == 2 and "is not a duration" in bad.stderr
    small = tmp_path / "small.ad"
    small.write_text("input x: scalar = 0.3\noutput y = sin(x)\n")
    assert runner.invoke(cli, ["grad", str(small), "--time-limit", "0"]).exit_code == 0


def test_compare_skips_what_would_pass_the_limit(tmp_path):
    source = tmp_path / "seed.ad"
    source.write_text("input x: vec[3] = [0.1, 0.2, 0.3]\noutput y = sum(sin(x) * x)\n")
    out = CliRunner().invoke(cli, ["compare", str(source), "--time-limit", "0.000000001", "--json"])
    assert out.exit_code == 0, out.output
    methods = json.loads(out.stdout)["methods"]
    for name in ("forward", "reverse"):
        assert "is predicted to take about" in methods[name]["skipped"]
        assert "over the time limit of" in methods[name]["skipped"]
    assert "evaluations are predicted to take about" in methods["central_differences"]["skipped"]
    recommendation = json.loads(out.stdout)["recommendation"]
    assert recommendation["mode"] is None   # it used to recommend a mode it had skipped
    assert recommendation["reason"].startswith("No mode can run: forward is out: it is predicted to take about")
    assert recommendation["reason"].count("over the time limit of") == 2
    assert json.loads(out.stdout)["device"].startswith("CPU")   # not "?" with every method skipped
    text = CliRunner().invoke(cli, ["compare", str(source), "--time-limit", "0.000000001"])
    assert "numpy on CPU" in text.stdout and "on ?" not in text.stdout


@pytest.mark.parametrize("t, shown", [(0.0123, "12.300 ms"), (2.5, "2.50 s"), (90, "1.5 min"),
                                      (161_209_743.93, "5.11 years")])
def test_compare_tables_read_long_times_as_refusals_do(t, shown):
    """compare's tables (the frontier's predicted times among them) said 161,209,743.93 s."""
    from adcli.render_compare import seconds

    assert seconds(t) == shown


def test_the_guard_prices_compiling_and_tracing_besides_the_sweeps():
    """A mode's first run compiles its sweeps, and a traced run (measure_memory, as the CLI
    runs) is slower per allocation: the guard adds both (adcli.machine.overheads). It let
    a 30,000-step unrolled loop predicted at 0.15 s take 18 s."""
    from adcli.machine import COMPILE_OP_S, TRACED_OP_S

    program = adcli.loads("input x: vec[3] = [0.1, 0.2, 0.3]\nrepeat 300 {\n  x = sin(x) * 0.999\n}\n"
                          "output y = sum(x * x)\n")
    ops = program.predict("reverse").ops
    sweeps = program.jacobian(mode="reverse", measure_memory=False, warmup=False).cost.predicted["time_s"]
    fresh = adcli.loads(program.graph.builder.text)
    limit = sweeps + ops * COMPILE_OP_S / 2
    with pytest.raises(ResourceProblem, match=r"array operations, compiling them included\), over the time limit"):
        fresh.jacobian(mode="reverse", time_limit=limit)
    assert program.jacobian(mode="reverse", time_limit=limit).jacobian.shape == (1, 3)   # compiled already
    with pytest.raises(ResourceProblem, match="tracing memory included"):
        program.jacobian(mode="reverse", time_limit=sweeps + ops * TRACED_OP_S / 2, measure_memory=True)


def test_checkpoints_auto_past_the_limit_is_refused_without_searching(tmp_path):
    """Checkpointing only runs steps again: past the limit keeping every residual, reverse
    mode is refused before --checkpoints auto searches for S (24-46 s on 10^12 steps): only
    that check words its refusal "even keeping every step's residuals"."""
    huge = tmp_path / "huge.ad"
    huge.write_text(HUGE)
    out = CliRunner().invoke(cli, ["grad", str(huge), "--mode", "reverse", "--checkpoints", "auto", "--json"])
    assert out.exit_code == 1
    error = json.loads(out.stderr)["error"]
    assert "even keeping every step's residuals" in error["message"]
    assert "try the other --mode" not in error["hint"]


def test_compare_on_a_loop_past_the_limit_recommends_nothing_and_says_why(tmp_path):
    """A 10^9-step loop: forward mode is past the time limit, reverse mode keeping every
    residual past the memory limit, and checkpointing only adds steps to a reverse run
    already past the time limit: nothing is recommended, each for its reason, and the
    search for S that --checkpoints auto makes (minutes) is not made."""
    path = tmp_path / "long.ad"
    path.write_text("input x: vec[3] = [0.1, 0.2, 0.3]\nrepeat 1000000000 {\n  x = sin(x) * 0.999\n}\n"
                    "output y = sum(x * x)\n")
    out = CliRunner().invoke(cli, ["compare", str(path), "--json", "--memory-limit", "1GB"])
    assert out.exit_code == 0, out.output
    recommendation = json.loads(out.stdout)["recommendation"]
    assert recommendation["mode"] is None
    reason = recommendation["reason"]
    assert "forward is out: it is predicted to take about" in reason and "over the time limit of 1 h" in reason
    assert "reverse does not fit" in reason and "over the memory limit of 1.0 GB" in reason
    assert recommendation["checkpointed"].startswith("Checkpointing cannot help: reverse mode is predicted")


LONG = "input x = 0.5\nrepeat 1000000000 {\n  x = sin(x) * 0.999\n}\noutput y = x\n"


def test_a_memory_refusal_on_a_loop_has_its_place_and_no_hint_the_time_limit_refuses(tmp_path):
    """Reverse mode keeping every residual of 10^9 steps needs about 1 TB; keeping fewer
    states, or forward mode, would each be past the time limit: the hint offers neither
    (found by a fresh-user review), and the refusal points at the repeat."""
    path = tmp_path / "long.ad"
    path.write_text(LONG)
    out = CliRunner().invoke(cli, ["grad", str(path), "--mode", "reverse", "--json"])
    assert out.exit_code == 1
    error = json.loads(out.stderr)["error"]
    assert "even one direction at a time, over the memory limit" in error["message"]
    assert (error["line"], error["column"]) == (2, 1)
    assert "--checkpoints" not in error["hint"] and "--mode" not in error["hint"]
    assert error["hint"].startswith("raise --memory-limit")
    roomy = CliRunner().invoke(cli, ["grad", str(path), "--mode", "reverse", "--json", "--time-limit", "0"])
    assert "--checkpoints auto" in json.loads(roomy.stderr)["error"]["hint"]   # no time limit: a way out


def test_checkpoints_auto_in_auto_mode_skips_the_search_when_reverse_is_past_the_limit(monkeypatch):
    program = adcli.loads(LONG, loops="always")

    def searched(*args, **kwargs):
        raise AssertionError("searched for S")
    monkeypatch.setattr(program, "choose_checkpoints", searched)
    with pytest.raises(ResourceProblem, match="forward mode is predicted to take about .* over the time limit"):
        program.jacobian(mode="auto", checkpoints="auto", time_limit=3600)
