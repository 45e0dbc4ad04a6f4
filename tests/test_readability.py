"""Readability: traces, Jacobians and comparisons laid out to the terminal's width (80 and 200
columns), vector forward mode and the partials a trace shows, compare's marks for a method
that disagrees, --scale's recommendation and crossover, snake_case JSON keys that the README
documents, a window around the caret on a long line, the text graph's legend, and README's
Use section."""
import json
import re
import sys
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from rich.cells import cell_len

import adcli
from adcli.cli import cli
from adcli.compare import compare, scale
from adcli.errors import CARET_WINDOW, SourceLocation

ROOT = Path(__file__).resolve().parent.parent
SEED = str(ROOT / "samples" / "seed_example.ad")
MLP = str(ROOT / "samples" / "mlp.ad")
CHAIN = str(ROOT / "samples" / "chain.ad")
DEEP = str(ROOT / "samples" / "deep.ad")
README = (ROOT / "README.md").read_text()

# The chaotic logistic map: the derivative after 60 steps is ~1e11, and a central
# difference step of ~1e-5 lands on an unrelated orbit.
LOGISTIC = """\
dim steps = 60
input r = 3.9
input x0 = 0.3
x = x0
repeat steps {
    x = r * x * (1 - x)
}
output y = x
"""


def run(*args, width=None, input=None):
    env = {"NO_COLOR": "1"}
    if width is not None:
        env["COLUMNS"] = str(width)
    return CliRunner().invoke(cli, [str(a) for a in args], env=env, input=input)


def ok(*args, width=None) -> str:
    result = run(*args, width=width)
    assert result.exit_code == 0, result.output
    return result.stdout


def data(*args) -> dict:
    result = run(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def assert_fits(text: str, width: int):
    long = [line for line in text.splitlines() if cell_len(line.rstrip()) > width]
    assert not long, f"{len(long)} lines wider than {width}: {long[0]!r}"


def flat(text: str) -> str:
    """The text with box drawing removed and every run of whitespace made one space:
    a value wrapped over lines (in a block or a panel) reads as one string again."""
    text = re.sub(r"[│╭╮╰╯─]", " ", text)
    return " ".join(text.split())


def cells(line: str) -> list:
    """A table row split into its cells (columns are two or more spaces apart)."""
    return re.split(r"\s{2,}", line.strip())


# -- item 1: the trace fits the width ------------------------------------------------------------

@pytest.mark.parametrize("width", [80, 120, 200])
@pytest.mark.parametrize("args", [
    [SEED, "--mode", "forward", "--seed", "x1"],
    [SEED, "--mode", "reverse"],
    [SEED, "--seed", "x1", "--seed", "x2"],
    [SEED, "--dual", "--seed", "x1", "--seed", "x2"],
    [MLP, "--mode", "reverse"],
    [MLP],
    [CHAIN],
    [CHAIN, "--mode", "reverse", "--node", "v5"],
    [DEEP, "--mode", "reverse"],
], ids=lambda a: " ".join(Path(x).name if "/" in str(x) else str(x) for x in a))
def test_every_trace_fits_the_width(args, width):
    assert_fits(ok("trace", *args, width=width), width)


def test_the_course_example_at_80_columns_keeps_every_digit_and_header():
    text = ok("trace", SEED, "--mode", "forward", "--seed", "x1", width=80)
    assert_fits(text, 80)
    assert "…" not in text            # nothing cut: every value, header and source fits
    for digits in ("0.9092974268256817", "6.909297426825682", "-0.4161468365471424",
                   "2.5838531634528574", "5: x1 * x2 + sin(x1)", "v̇4 = cos(v1)·v̇1"):
        assert digits in text, digits
    # two tables: values, then derivatives with the cost columns (headers over two lines)
    assert "values, in evaluation order" in text and "derivatives, in evaluation order" in text
    header = next(line for line in text.splitlines() if line.startswith("var ") and "partials" in line)
    assert "local partials" in header and "tangent from" in header and "tangent v̇" in header
    v4 = next(line for line in text.splitlines() if line.startswith("v4 ") and "v̇4" in line)
    assert cells(v4)[-2:] == ["0 + 1", "1 + 2"]   # mults f + ∂, flops f + ∂


def test_the_course_example_at_200_columns_is_one_table():
    text = ok("trace", SEED, "--mode", "forward", "--seed", "x1", width=200)
    assert_fits(text, 200)
    assert "rows in evaluation order" in text and "values, in evaluation order" not in text
    header = next(line for line in text.splitlines() if line.startswith("var "))
    for column in ("= expression", "source", "value", "local partials", "tangent from", "tangent v̇",
                   "mults f + ∂", "flops f + ∂"):
        assert column in header, column
    v4 = next(line for line in text.splitlines() if line.startswith("v4 "))
    assert "0.9092974268256817" in v4 and "∂/∂v1: cos(v1) = -0.4161468365471424" in v4


def test_a_reverse_trace_splits_into_the_forward_sweep_and_the_backward_sweep():
    text = ok("trace", SEED, "--mode", "reverse", width=80)
    assert_fits(text, 80)
    assert "…" not in text
    lines = text.splitlines()
    values = lines.index("values (the forward sweep), in evaluation order")
    adjoints = lines.index("adjoints, in the order the backward sweep fills them")
    order = [line.split()[0] for line in lines[values:adjoints] if re.match(r"v\d+ ", line)]
    assert order == ["v1", "v2", "v3", "v4", "v5"]
    order = [line.split()[0] for line in lines[adjoints:] if re.match(r"v\d+ ", line)]
    assert order == ["v5", "v4", "v3", "v2", "v1"]
    v1 = next(line for line in lines[adjoints:] if line.startswith("v1 "))
    assert cells(v1) == ["v1", "○ read", "2.5838531634528574", "v̄1 = v̄3·v2 + v̄4·cos(v1)", "0 + 0", "0 + 0"]


def _expected_strings(trace_json) -> list:
    """What a trace must show whole: every value, tangent and adjoint (as its preview),
    every source and every way a tangent or adjoint is formed."""
    from adcli.render_trace import preview, source_text

    out = []
    for row in trace_json["rows"]:
        out.append(preview(row["value"]))
        out.append(source_text(row, False))
        if "adjoint" in row:
            if row["needed"]:
                out.append(preview(row["adjoint"]))
            if row["adjoint_text"]:
                out.append(row["adjoint_text"])
        else:
            out += [preview(t) for t in row["tangents"]]
            out += [preview(p["value"]) for p in row["partials"] if p["value"] is not None]
            if row["tangent_text"]:
                out.append(row["tangent_text"])
    for values in (trace_json.get("gradient") or {}).values():
        out.append(preview(values))
    for name, value in trace_json["inputs"].items():
        out.append(preview(value))
    return [s for s in out if s]


@pytest.mark.parametrize("mode", ["reverse", "forward"])
def test_the_mlp_trace_at_80_columns_shows_every_value_whole(mode):
    """Issue: every adjoint was '…', and value, source and 'computed as' were dropped."""
    text = ok("trace", MLP, "--mode", mode, width=80)
    assert_fits(text, 80)
    shown = flat(text)
    rest = shown
    for expected in sorted(_expected_strings(data("trace", MLP, "--mode", mode)), key=len, reverse=True):
        assert expected in shown, expected
        rest = rest.replace(expected, "")
    assert "…" not in rest   # the only … are the previews' own (a vector's elided middle)


def test_piped_output_follows_columns():
    """Written to a pipe (CliRunner is one) with COLUMNS=80, no line is wider than 80."""
    for args in ([SEED, "--mode", "forward", "--seed", "x1"], [MLP, "--mode", "reverse"]):
        result = run("trace", *args, width=80)
        assert_fits(result.stdout, 80)


# -- item 2: vector forward mode, every partial, the reason grad counts less ------------------------

def test_several_seeds_run_one_sweep_and_evaluate_f_once():
    one = data("trace", SEED, "--seed", "x1")
    two = data("trace", SEED, "--seed", "x1", "--seed", "x2")
    assert two["cost"]["passes"] == 2
    assert two["cost"]["sweeps"] == two["cost"]["primal_sweeps"] == 1
    assert two["totals"]["mults"]["primal"] == one["totals"]["mults"]["primal"]
    assert two["totals"]["flops"]["primal"] == one["totals"]["flops"]["primal"]
    for what in ("mults", "flops"):
        assert two["totals"][what] == two["cost"][what]
    by_var = {row["var"]: row for row in two["rows"]}
    assert by_var["v3"]["tangents"] == [3.0, 2.0]
    assert two["tangent"] == {"f": [2.5838531634528574, 2.0]}
    text = ok("trace", SEED, "--seed", "x1", "--seed", "x2", width=80)
    assert "1 forward sweep carrying 2 directions (vector forward mode): f is evaluated once" in flat(text)


def test_vector_sweep_matches_separate_passes_on_every_sample():
    for path in sorted((ROOT / "samples").glob("*.ad")):
        program = adcli.load(path)
        names = program.input_names[:2]
        from adcli.trace import forward_trace, parse_seed

        seeds = [parse_seed(program, n) for n in names]
        together = forward_trace(program, seeds)
        for k, seed in enumerate(seeds):
            alone = forward_trace(program, [seed])
            for name, tangents in alone.results.items():
                assert np.allclose(together.results[name][k], tangents[0], rtol=1e-12, atol=1e-12)
        first = forward_trace(program, seeds[:1])
        assert together.totals()["mults"]["primal"] == first.totals()["mults"]["primal"]
        assert together.totals() == {"mults": {"primal": together.cost.mults_primal,
                                               "derivative": together.cost.mults_derivative},
                                     "flops": {"primal": together.cost.flops_primal,
                                               "derivative": together.cost.flops_derivative}}


def test_a_row_lists_the_partial_of_every_input():
    rows = {row["var"]: row for row in data("trace", SEED, "--seed", "x1")["rows"]}
    assert rows["v3"]["partials"] == [{"wrt": "v1", "text": "v2", "value": 3.0, "used": True},
                                      {"wrt": "v2", "text": "v1", "value": 2.0, "used": False}]
    assert rows["v3"]["tangent_text"] == "v̇1·v2"     # what is computed, and counted
    text = ok("trace", SEED, "--seed", "x1", width=200)
    assert "∂/∂v2: v1 = 2 (unused: v̇2 = 0)" in text
    assert "a partial marked unused multiplies a zero tangent" in flat(text)
    # a const's partial is never listed (mlp: v14 = v12 ^ v13 with v13 the literal 2)
    rows = {row["var"]: row for row in data("trace", MLP)["rows"]}
    assert [p["wrt"] for p in rows["v14"]["partials"]] == ["v12"]


def test_the_trace_says_why_grad_counts_no_mults():
    text = flat(ok("trace", SEED, "--seed", "x1", width=80))
    assert ("adcli grad --mode forward --wrt x1 counts 0 derivative mults (this trace: 2): its "
            "Jacobian seeds identity columns, and a product with one is free (A·I costs nothing)") in text
    trace = data("trace", SEED, "--seed", "x1")
    grad = data("grad", SEED, "--mode", "forward", "--wrt", "x1")
    assert trace["jacobian_cost"]["mults"] == grad["cost"]["mults"]
    assert trace["jacobian_cost"]["flops"] == grad["cost"]["flops"]
    assert trace["jacobian_cost"]["wrt"] == ["x1"] and trace["totals"]["mults"]["derivative"] == 2


# -- item 3: the Jacobian's orientation ---------------------------------------------------------------

def test_a_gradient_that_fits_is_printed_as_its_row():
    text = ok("grad", SEED, width=80)
    lines = text.splitlines()
    title = lines.index("Jacobian  (1×2): one row, the gradient of f")
    header = next(line for line in lines[title:] if "x1" in line)
    assert cells(header) == ["x1", "x2"]
    row = next(line for line in lines[title:] if line.strip().startswith("f "))
    assert cells(row) == ["f", "2.583853163", "2"]
    # with --wrt x1 the 1×1 Jacobian is laid out the same way: f labels the row
    lines = ok("grad", SEED, "--wrt", "x1", width=80).splitlines()
    title = lines.index("Jacobian  (1×1)")
    assert cells(next(line for line in lines[title:] if "x1" in line)) == ["x1"]
    assert cells(next(line for line in lines[title:] if line.strip().startswith("f "))) == ["f", "2.583853163"]


def test_a_long_gradient_is_a_column_that_says_so():
    text = ok("grad", MLP, width=80)
    assert_fits(text, 80)
    lines = text.splitlines()
    # the title is a line of its own, never wrapped to the (narrow) table's width
    title = lines.index("Gradient of loss: the 1×353 Jacobian's one row, printed as a column")
    assert cells(lines[title + 2]) == ["gradient"]
    assert cells(lines[title + 4])[0] == "W1[0,0]"
    assert "showing 12 of 353 entries; --full shows all" in text
    vjp = ok("grad", MLP, "--cotangent", "loss=1", width=80)
    assert "VJP  uᵀ·J  (1×353): its one row, printed as a column" in vjp.splitlines()


def test_a_gradient_row_too_wide_for_the_width_turns_into_a_column(tmp_path):
    path = tmp_path / "six.ad"
    path.write_text("input x: vec[6] = [1, 2, 3, 4, 5, 6]\noutput s = sum(sin(x) * x)\n")
    wide = ok("grad", path, width=200)
    assert "Jacobian  (1×6): one row, the gradient of s" in wide
    narrow = ok("grad", path, width=80)
    assert_fits(narrow, 80)
    assert "Gradient of s: the 1×6 Jacobian's one row, printed as a column" in narrow


# -- item 4: compare ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def logistic(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("readability") / "logistic.ad"
    path.write_text(LOGISTIC)
    return str(path)


def test_the_logistic_map_end_to_end(logistic):
    as_json = run("compare", logistic, "--repeat", "1", "--json")
    assert as_json.exit_code == 0, as_json.output
    result = json.loads(as_json.stdout)
    assert result["agreement"]["disagreeing"] == ["central_differences"]
    fd = result["methods"]["central_differences"]["accuracy"]["reverse"]
    assert fd["within_tolerance"] is False and fd["max_rel"] > 0.5 and fd["max_abs"] > 1e3
    assert result["methods"]["forward"]["accuracy"]["reverse"]["within_tolerance"] is True
    assert result["recommendation"]["mode"] in ("forward", "reverse")
    assert "warning: central differences disagree with reverse mode" in as_json.stderr

    text = run("compare", logistic, "--repeat", "1", width=80)
    assert text.exit_code == 0
    assert "warning: central differences disagree" in text.stderr
    out = text.stdout
    assert_fits(out, 80)
    lines = out.splitlines()
    header = next(line for line in lines if "central diff." in line)
    assert cells(header) == ["forward", "reverse", "central diff. ✗"]
    rows = [cells(line) for line in lines[lines.index(header) + 2:] if line.strip()][:15]
    rows = [row for row in rows if len(row) == 4]
    assert len(rows) >= 11
    for row in rows:
        assert "◂" not in row[3], row   # a method that disagrees is not ranked
    marked = {row[0] for row in rows if "◂" in row[1] + row[2]}
    assert {"derivative mults", "passes"} <= marked   # the AD modes are still ranked
    accuracy = [row for row in rows if row[0].startswith("max ") and row[0].endswith("vs reverse")]
    assert all(row[3].endswith("✗") for row in accuracy)
    assert "central differences: ✗, disagrees beyond the tolerance, so not ranked" in flat(out)


def test_scale_text_gives_the_recommendation_at_each_value_and_the_crossover():
    text = ok("compare", CHAIN, "--scale", "n=1,100", "--repeat", "1", width=80)
    assert_fits(text, 80)
    lines = text.splitlines()
    start = lines.index("recommendation at each n")
    rows = [cells(line) for line in lines[start:start + 8] if re.match(r"\s*\d+ ", line)]
    assert [(row[0], row[-1]) for row in rows] == [("1", "forward"), ("100", "reverse")]
    assert ("crossover: forward up to n=1, reverse from n=100 on (the exact point lies between the "
            "values tried)") in flat(text)
    sweep = data("compare", CHAIN, "--scale", "n=1,100", "--repeat", "1")
    assert sweep["crossovers"] == [{"between": [1, 100], "from": "forward", "to": "reverse"}]
    assert [p["recommendation"]["mode"] for p in sweep["points"]] == ["forward", "reverse"]


def test_scale_without_a_change_says_there_is_no_crossover():
    text = flat(ok("compare", DEEP, "--scale", "depth=1,2", "--repeat", "1", width=80))
    assert re.search(r"no crossover: (forward|reverse) is recommended at every depth tried \(1 to 2\)", text)


def test_a_zero_series_is_named_under_the_chart():
    text = flat(ok("compare", DEEP, "--scale", "depth=1,2", "--repeat", "1", width=80))
    assert ("not drawn, 0 has no place on a log scale: F (forward) is 0 at every depth; D (central "
            "differences) is 0 at every depth") in text


def test_scale_tables_never_wrap_a_cell():
    """A 138.804 ms time or a 1,234,567 count stays on one line at 80 columns."""
    from rich.console import Console

    from adcli.render_compare import sweep_tables

    sweep = scale(lambda dims: adcli.load(DEEP, set=dims), "depth", [1, 2, 4], {}, repeat=1)
    for _, comparison, _ in sweep.points:
        for run_ in comparison.runs.values():
            run_.times = [0.138804]
            run_.result.cost.mults_derivative = 1_234_567
            run_.result.cost.peak_bytes = 123_456_789
    console = Console(width=80, file=open("/dev/null", "w"), color_system=None)
    with console.capture() as captured:
        for part in sweep_tables(sweep, 80):
            console.print(part)
    text = captured.get()
    assert_fits(text, 80)
    rows = [line for line in text.splitlines() if re.match(r"\s*[124] ", line)]
    per_method = [row for row in rows if len(cells(row)) == 7]   # depth and its 6 figures
    assert len(per_method) == 9
    for row in per_method:
        assert row.rstrip().endswith("138.804 ms") and "1,234,567" in row and "123.5 MB" in row, row


def test_two_backends_without_a_gpu_run_numpy_with_a_note(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)   # import cupy -> ImportError, on any machine
    result = run("compare", CHAIN, "--backend", "numpy,cupy", "--repeat", "1", "--json")
    assert result.exit_code == 0, result.output
    assert ("note: --backend numpy,cupy: cupy cannot run here (CuPy is not installed); comparing on "
            "numpy only") in result.stderr
    body = json.loads(result.stdout)
    assert body["backend"] == "numpy" and set(body["methods"]) == {"forward", "reverse", "central_differences"}
    alone = run("compare", CHAIN, "--backend", "cupy", "--repeat", "1")
    assert alone.exit_code == 1 and "the cupy backend needs CuPy" in alone.stderr


@pytest.fixture(scope="module")
def two_backends():
    from adcli.backends import NumpyBackend

    class SecondNumpy(NumpyBackend):
        name = "numpy-copy"   # a stand-in second backend: CI has no GPU

    # loaded under a short name: the table titles hold the file name, and a long
    # checkout path would wrap them at 80 columns
    return compare(adcli.loads(Path(CHAIN).read_text(), "chain.ad"), repeat=1,
                   backend=["numpy", SecondNumpy()])


@pytest.mark.parametrize("width", [80, 200])
def test_two_backends_side_by_side_or_a_table_each(two_backends, width, monkeypatch, capsys):
    from adcli.render_compare import render_comparison

    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("COLUMNS", str(width))
    render_comparison(two_backends)
    out = capsys.readouterr().out
    assert_fits(out, width)
    table = out[:out.index("recommendation")]
    assert "…" not in table   # no cell cut to fit
    titles = [line.strip() for line in table.splitlines() if "f: R^3 → R^2" in line]
    if width == 80:
        assert [t.split(", on ")[-1] for t in titles] == ["numpy", "numpy-copy"]
    else:
        assert len(titles) == 1 and "(numpy-copy)" in table


# -- item 5: snake_case JSON keys, every one documented -------------------------------------------------

def _keys(value, path=()):
    if isinstance(value, dict):
        for key, inner in value.items():
            yield key, path
            yield from _keys(inner, path + (key,))
    elif isinstance(value, list):
        for inner in value:
            yield from _keys(inner, path)


@pytest.fixture(scope="module")
def compare_documents():
    plain = data("compare", CHAIN, "--repeat", "1")
    swept = data("compare", CHAIN, "--scale", "n=1,100", "--repeat", "1")
    return plain, swept


def test_compare_json_keys_are_snake_case(compare_documents):
    for document in compare_documents:
        bad = {key for key, _ in _keys(document) if not re.fullmatch(r"[a-z][a-z0-9_]*", key)}
        assert not bad, bad
    plain, swept = compare_documents
    assert set(plain["methods"]) == {"forward", "reverse", "central_differences"}
    assert plain["methods"]["central_differences"]["method"] == "central_differences"
    assert isinstance(swept["slopes"]["reverse"]["cached_values"], float)   # jq .slopes.reverse.cached_values
    assert set(swept["slopes"]["forward"]) == {"passes", "derivative_mults", "cached_values",
                                               "peak_live_values", "peak_bytes", "time_s"}
    assert all(set(point["methods"]) == set(plain["methods"]) for point in swept["points"])
    # grad's cost uses the same spelling
    assert "cached_values" in data("grad", CHAIN)["cost"]


def test_every_compare_json_key_is_documented(compare_documents):
    section = README[README.index("## Compare the modes"):README.index("## Calibrate the time model")]
    missing = set()
    for document in compare_documents:
        for key, path in _keys(document):
            if path and path[-1] in ("methods", "slopes", "accuracy", "modes") or \
                    (len(path) >= 2 and path[-2] == "slopes"):
                continue   # method, reference and figure names: listed as values
            if f"`{key}`" not in section:
                missing.add(key)
    assert not missing, missing
    for name in ("forward", "reverse", "central_differences", "passes", "derivative_mults",
                 "cached_values", "peak_live_values", "peak_bytes", "time_s"):
        assert f"`{name}`" in section, name


# -- item 6: messages --------------------------------------------------------------------------------

def test_an_error_on_a_long_line_shows_a_window_around_the_caret(tmp_path):
    path = tmp_path / "long.ad"
    path.write_text("input x = 1.0\noutput y = " + "x + " * 2000 + "$ + " + "x + " * 2000 + "x\n")
    result = run("grad", path)
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert len(result.stderr) < 600
    source = next(i for i, line in enumerate(lines) if line.startswith("  ") and "x + x" in line)
    shown, caret = lines[source], lines[source + 1]
    assert shown.startswith("  …") and shown.endswith("…")
    assert len(shown) <= CARET_WINDOW + 4
    assert caret.strip() == "^" and shown[caret.index("^")] == "$"


def test_the_caret_window_keeps_short_lines_and_both_ends():
    short = SourceLocation("f.ad", 1, 5, "a = $b\n").caret()
    assert short == "  a = $b\n      ^"
    text = "".join(chr(ord("a") + i % 26) for i in range(1000))
    start = SourceLocation("f.ad", 1, 3, text).caret().splitlines()
    assert start[0] == "  " + text[:CARET_WINDOW] + "…" and start[1] == "    ^"
    end = SourceLocation("f.ad", 1, 1000, text).caret().splitlines()
    assert end[0] == "  …" + text[-CARET_WINDOW:]
    assert end[0][end[1].index("^")] == text[-1]


def test_a_50000_term_sum_does_not_echo_the_whole_line(tmp_path):
    path = tmp_path / "sum.ad"
    path.write_text("input x = 1.0\noutput y = " + " + ".join(["x"] * 50_000) + "\n")
    result = run("grad", path)
    assert len(result.stderr) < 1000   # a line of 200 KB is not echoed, whether or not it parses


def test_the_text_graph_legend_names_what_text_shows():
    text = ok("graph", SEED, "--mode", "reverse")
    first = text.splitlines()[0]
    assert "dashed" not in first and "filled" not in first and "red" not in first
    assert "(kept: …)" in first and "(read by the backward sweep)" in first
    assert "(kept: cos(v1))" in text
    mermaid = ok("graph", SEED, "--mode", "reverse", "--format", "mermaid")
    assert "dashed red: adjoint flow of the backward sweep; filled: kept for it" in mermaid


def test_the_show_legend_names_every_prefix_shown_programs_use(tmp_path):
    """`adcli show --mode` programs call xp_F and sp_F: the legend above them says what
    those are, as it does for vN, vN_dot, vN_bar, dvN_dvM, tN and cN."""
    path = tmp_path / "special.ad"
    path.write_text("input x: vec[2] = [0.5, 1.5]\noutput y = sum(erf(x) * sin(x))\n")
    for mode in ("forward", "reverse"):
        text = ok("show", path, "--mode", mode)
        legend = " ".join(line for line in text.splitlines() if line.startswith("#"))
        used = set(re.findall(r"\b(xp|sp)_[a-z]+\(", text))
        assert used == {"xp", "sp"}, text
        for prefix in ("vN:", "vN_dot:", "vN_bar:", "dvN_dvM:", "tN:", "cN:", "xp_F:", "sp_F:"):
            assert prefix in legend, prefix


# -- item 7: README's Use section ------------------------------------------------------------------

def test_readme_use_section_says_how_to_call_adcli():
    use = README[README.index("## Use"):README.index("`adcli grad FILE` options:")]
    assert ". .venv/bin/activate" in use and ".venv/bin/adcli" in use
    assert "`adcli --version`" in use
    assert run("--version").exit_code == 0


def test_readme_grad_options_are_grad_options():
    table = README[README.index("`adcli grad FILE` options:"):README.index("Colour follows the terminal")]
    options = re.findall(r"^\| `(--[a-z-]+)", table, re.M)
    assert "--mode" in options and "--version" not in options
    help_text = ok("grad", "--help")
    for option in options:
        assert option in help_text, option
    assert run("grad", SEED, "--version").exit_code == 2


def test_no_combining_mark_is_split_from_its_letter():
    """v̇ and v̄ are a letter and a combining mark: a wrapped column must not separate them."""
    text = ok("trace", SEED, "--seed", "x1", width=80) + ok("trace", SEED, "--mode", "reverse", width=80)
    for line in text.splitlines():
        stripped = line.lstrip()
        assert not stripped or not unicodedata.combining(stripped[0]), line


# -- language: keyword typos, data functions without arguments ------------------------------------

@pytest.mark.parametrize("typo, keyword", [("inptu x = 2.0", "input"), ("ouptut y = 2", "output"),
                                           ("cosnt c = 1", "const"), ("dmi n = 3", "dim")])
def test_a_misspelt_statement_keyword_gets_a_suggestion(tmp_path, typo, keyword):
    path = tmp_path / "typo.ad"
    path.write_text(typo + "\n")
    result = CliRunner().invoke(cli, ["grad", str(path), "--json"])
    assert result.exit_code == 1
    error = json.loads(result.stderr)["error"]
    assert error["kind"] == "syntax" and error["line"] == 1
    assert error["hint"].startswith(f"did you mean '{keyword}'?")


def test_no_suggestion_for_a_word_unlike_any_keyword(tmp_path):
    path = tmp_path / "other.ad"
    path.write_text("input x = 2\nfoo y = x\n")
    error = json.loads(CliRunner().invoke(cli, ["grad", str(path), "--json"]).stderr)["error"]
    assert error.get("hint") in (None, "") or "did you mean" not in error["hint"]


def test_randn_and_rand_without_arguments_use_seed_zero():
    values = {form: adcli.loads(f"input x: vec[4] = {form}\noutput y = sum(x)\n").resolve_inputs()["x"]
              for form in ("randn", "randn()", "randn(seed=0)")}
    np.testing.assert_array_equal(values["randn"], values["randn(seed=0)"])
    np.testing.assert_array_equal(values["randn()"], values["randn(seed=0)"])
    uniform = adcli.loads("input x: vec[4] = rand\noutput y = sum(x)\n").resolve_inputs()["x"]
    np.testing.assert_array_equal(uniform, np.random.default_rng(0).random(4))
