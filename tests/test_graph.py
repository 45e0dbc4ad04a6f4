"""`adcli graph` (DOT, Mermaid, text; collapsed repeats; reverse-mode marks) and `adcli show`
(the IR listing round-trips the node count)."""
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

import adcli
from adcli.cli import cli
from adcli.show import build_view, cache_plan, cached_totals

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = sorted((ROOT / "samples").glob("*.ad"))
DEEP = str(ROOT / "samples" / "deep.ad")
SEED = str(ROOT / "samples" / "seed_example.ad")
DOT = shutil.which("dot")
needs_dot = pytest.mark.skipif(DOT is None, reason="Graphviz's dot is not installed "
                               "(apt-get install graphviz); DOT syntax is still checked by shape")

# A literal made inside the first iteration only (it is shared afterwards), and a nested repeat:
# later iterations have fewer nodes than the first, and must still map by operation.
LOOPY = """\
input x: vec[3] = [1.0, 2.0, 3.0]
h = x
repeat 5 {
    h = h * 0.5 + sin(h)
    repeat 2 {
        h = tanh(h)
    }
}
output y = sum(h)
"""


def run(*args, env=None):
    return CliRunner().invoke(cli, [str(a) for a in args], env=env)


def ok(*args) -> str:
    result = run(*args)
    assert result.exit_code == 0, result.output
    return result.stdout


def ids(p):
    return getattr(p, "name", p)


@pytest.fixture(scope="module")
def loopy(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("graph") / "loopy.ad"
    path.write_text(LOOPY)
    return str(path)


MERMAID_NODE = re.compile(r'^\s*(v\d+)(\["|\(\[")')
DOT_NODE = re.compile(r"^\s*(v\d+) \[label=")


def mermaid_nodes(text):
    return [m.group(1) for line in text.splitlines() if (m := MERMAID_NODE.match(line))]


def dot_nodes(text):
    return [m.group(1) for line in text.splitlines() if (m := DOT_NODE.match(line))]


# -- DOT -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", SAMPLES, ids=ids)
@pytest.mark.parametrize("mode", ["forward", "reverse"])
def test_dot_is_well_formed(path, mode):
    text = ok("graph", path, "--format", "dot", "--mode", mode)
    assert text.startswith("digraph adcli {") and text.rstrip().endswith("}")
    assert text.count("{") == text.count("}")
    declared = set(dot_nodes(text))
    for src, dst in re.findall(r"^\s*(v\d+) -> (v\d+)", text, re.M):
        assert src in declared and dst in declared
    if mode == "reverse":
        assert "style=dashed" in text and 'label="adjoint"' in text


@needs_dot
@pytest.mark.parametrize("path", SAMPLES, ids=ids)
def test_dot_renders_with_graphviz(path):
    text = ok("graph", path, "--format", "dot", "--mode", "reverse")
    done = subprocess.run([DOT, "-Tsvg"], input=text.encode(), capture_output=True)
    assert done.returncode == 0, done.stderr.decode()
    assert b"<svg" in done.stdout


@needs_dot
def test_output_renders_an_svg(tmp_path):
    target = tmp_path / "mlp.svg"
    result = run("graph", str(ROOT / "samples" / "mlp.ad"), "--output", target)
    assert result.exit_code == 0, result.output
    assert target.read_bytes().lstrip().startswith((b"<?xml", b"<svg"))


def test_output_without_dot_says_how_to_get_it(tmp_path):
    result = run("graph", SEED, "--output", tmp_path / "g.svg", env={"PATH": str(tmp_path)})
    assert result.exit_code == 1
    assert "apt-get install graphviz" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    as_json = run("graph", SEED, "--output", tmp_path / "g.svg", "--json", env={"PATH": str(tmp_path)})
    assert as_json.exit_code == 1 and json.loads(as_json.stderr)["error"]["exit_code"] == 1


@pytest.mark.parametrize("args", [["--output", "g.txt"], ["--output", "g.svg", "--format", "mermaid"],
                                  ["--format", "html"], ["--mode", "both"]])
def test_graph_usage_errors(args):
    result = run("graph", SEED, *args)
    assert result.exit_code == 2, result.output


# -- Mermaid and collapsing --------------------------------------------------------------------------

@pytest.mark.parametrize("path", SAMPLES + ["loopy"], ids=ids)
def test_mermaid_expanded_has_one_node_per_ir_node(path, loopy):
    path = loopy if path == "loopy" else path
    text = ok("graph", path, "--format", "mermaid", "--expand")
    assert text.startswith("flowchart TB")
    nodes = mermaid_nodes(text)
    graph = adcli.load(path).graph
    assert sorted(nodes) == sorted(n.var for n in graph.nodes)
    assert len(nodes) == len(graph.nodes)
    for src, dst in re.findall(r"^\s*(v\d+) -->\s*(v\d+)", text, re.M):
        assert src in nodes and dst in nodes


def test_collapsed_deep_has_fewer_nodes_than_expanded():
    graph = adcli.load(DEEP).graph
    collapsed = mermaid_nodes(ok("graph", DEEP, "--format", "mermaid"))
    expanded = mermaid_nodes(ok("graph", DEEP, "--format", "mermaid", "--expand"))
    assert len(expanded) == len(graph.nodes) == 35
    assert len(collapsed) < len(expanded)
    assert len(collapsed) == 5          # x, W, one matmul and one tanh for all 16 iterations, sum
    dot = ok("graph", DEEP, "--format", "dot")
    assert len(dot_nodes(dot)) == 5 < len(dot_nodes(ok("graph", DEEP, "--format", "dot", "--expand")))
    assert 'label="repeat ×16 (line 11)"' in dot and "next iteration" in dot
    assert 'subgraph repeat1["repeat ×16 (line 11)"]' in ok("graph", DEEP, "--format", "mermaid")


def test_collapsing_maps_iterations_by_operation(loopy):
    graph = adcli.load(loopy).graph
    view = build_view(graph)
    body = [vn for vn in view.nodes.values() if vn.cluster is not None]
    assert [vn.node.op for vn in body] == ["mul", "sin", "add", "tanh", "tanh"]
    for vn in body:   # every member is the same operation as its representative
        assert {graph.nodes[m].op for m in vn.members} == {vn.node.op}
        assert len(vn.members) == 5
    total = sum(len(vn.members) for vn in view.nodes.values())
    assert total == len(graph.nodes)
    assert ("v7", "v3", "next") in view.edges   # the last tanh feeds the next iteration's mul


def test_text_tree():
    text = ok("graph", SEED)
    assert "output f" in text and "v5 = add v3 v4 : f64[]" in text
    assert "v4 = sin v1 : f64[]" in text and "v1 = input x1 : f64[]" in text
    deep = ok("graph", DEEP, "--format", "text")
    assert "↻ v4 (from the previous iteration)" in deep and "stands for 16 nodes" in deep


# -- reverse mode: what is cached, and the adjoint flow ------------------------------------------------

@pytest.mark.parametrize("path", SAMPLES, ids=ids)
def test_reverse_graph_marks_what_the_cost_panel_counts(path):
    program = adcli.load(path)
    graph = program.graph
    info = cache_plan(graph, list(graph.inputs), list(graph.outputs))["nodes"]
    cost = program.jacobian(mode="reverse", measure_memory=False).cost
    assert cached_totals(graph, info) == (cost.cached_values, cost.cached_inputs)
    data = json.loads(ok("graph", path, "--mode", "reverse", "--expand", "--json"))
    marked = {n["key"] for n in data["nodes"] if n["kept"]}
    expected = {graph.nodes[i].var for i, e in info.items() if e["value"] or e["partials"]}
    assert marked == expected
    adjoint = [e for e in data["edges"] if e["kind"] == "adjoint"]
    data_edges = {(e["from"], e["to"]) for e in data["edges"] if e["kind"] == "data"}
    assert adjoint and all((e["to"], e["from"]) in data_edges for e in adjoint)   # reversed


def test_reverse_mermaid_styles_adjoint_edges():
    text = ok("graph", SEED, "--format", "mermaid", "--mode", "reverse")
    assert "v5 -.->|adjoint| v3" in text and "linkStyle" in text and "class v4 kept" in text
    assert "kept: cos(v1)" in text


# -- adcli show --------------------------------------------------------------------------------------------

EQUATION = re.compile(r"^  (v\d+):f64\[[0-9,]*\] = (\w+)((?: v\d+)*)")
DECLARATION = re.compile(r"^  (v\d+):f64\[[0-9,]*\] \S+")


@pytest.mark.parametrize("path", SAMPLES + ["loopy"], ids=ids)
def test_show_round_trips_the_node_count(path, loopy):
    path = loopy if path == "loopy" else path
    graph = adcli.load(path).graph
    text = ok("show", path)
    lines = text.splitlines()
    equations = [EQUATION.match(line) for line in lines]
    equations = [m for m in equations if m]
    declared = [m.group(1) for line in lines if (m := DECLARATION.match(line)) and " = " not in line]
    assert len(equations) + len(declared) == len(graph.nodes)
    assert sorted([m.group(1) for m in equations] + declared, key=lambda v: int(v[1:])) == \
        [n.var for n in graph.nodes]
    for m in equations:   # each equation names its op and inputs as the IR does
        node = graph.nodes[int(m.group(1)[1:]) - 1]
        assert m.group(2) == node.op
        assert m.group(3).split() == [graph.nodes[i].var for i in node.inputs]
    counts = re.search(r"^nodes by op \((\d+)\): (.*)$", text, re.M)
    assert int(counts.group(1)) == len(graph.nodes)
    assert sum(int(part.rsplit(" ", 1)[1]) for part in counts.group(2).split(", ")) == len(graph.nodes)
    assert lines[1].startswith("inputs") and "outputs" in text.split("equations")[0]


def test_show_format():
    text = ok("show", str(ROOT / "samples" / "mlp.ad"))
    assert re.search(r"^  v7:f64\[8,16\] = matmul v1 v3 +# mlp\.ad:15$", text, re.M)
    assert re.search(r"^  v15:f64\[\] = mean v14 +# mlp\.ad:19$", text, re.M)
    assert "  loss = v15:f64[]" in text
    data = json.loads(ok("show", str(ROOT / "samples" / "mlp.ad"), "--json"))
    assert data["kind"] == "ir" and len(data["nodes"]) == 15 and sum(data["counts"].values()) == 15


def test_show_names_every_const_unnamed_arrays_by_value(tmp_path):
    """eye(n) and the seed directions grad and hessian write are consts with neither a name nor
    one number: show lists them by their values when there are at most 16, else by their count
    (the listing once had a blank there)."""
    path = tmp_path / "eye.ad"
    path.write_text("input x: vec[2] = [1, 2]\ninput y: vec[5] = 1\n"
                    "output s = sum(eye(2) @ x) + sum(eye(5) @ y)\n")
    text = ok("show", path)
    assert re.search(r"^  v\d+:f64\[2,2\] \[\[1,0\],\[0,1\]\] +# eye\.ad:3$", text, re.M)
    assert re.search(r"^  v\d+:f64\[5,5\] \(25 numbers\) +# eye\.ad:3$", text, re.M)
    path.write_text("input x: vec[2] = [1, 2]\ndef f(x) = sum(x^3)\noutput H = hessian(f)(x)\n")
    text = ok("show", path)
    assert re.search(r"^  v\d+:f64\[2\] \[1,0\] ", text, re.M)
    assert re.search(r"^  v\d+:f64\[2\] \[0,1\] ", text, re.M)


def test_show_errors():
    assert run("show", "no/such.ad").exit_code == 2
    result = run("show", SEED, "--set", "n=x", "--json")
    assert result.exit_code == 2 and json.loads(result.stderr)["error"]["exit_code"] == 2


def test_deep_text_tree_needs_no_recursion():
    text = ok("graph", DEEP, "--set", "depth=700", "--expand")   # 1,400 levels
    assert text.count(" = tanh ") == 700 and "⋯  " in text


def test_show_prints_a_loop_body_once_under_its_equation(tmp_path):
    path = tmp_path / "loop.ad"
    path.write_text("input x: scalar = 0.5\ninput w: scalar = 1.5\nh = x\nrepeat 4 {\n  h = sin(w * h) + h\n}\n"
                    "output y = h * h\n")
    text = ok("show", path, "--node-limit", "8")
    lines = text.splitlines()
    at = next(n for n, line in enumerate(lines) if line.startswith("  v3:loop = loop v1 v2 count=4"))
    body = [line.split("  #")[0].rstrip() for line in lines[at + 1:at + 7]]
    assert body == ["    v3.1:f64[] = carried h: v1 going in, then the iteration before's v3.5",
                    "    v3.2:f64[] = read v2",
                    "    v3.3:f64[] = mul v3.2 v3.1",
                    "    v3.4:f64[] = sin v3.3",
                    "    v3.5:f64[] = add v3.4 v3.1",
                    "    results after each of the 4 iterations: h = v3.5"]
    assert lines[at + 7].startswith("  v4:f64[] = loop_out v3 h")
    data = json.loads(ok("show", path, "--node-limit", "8", "--json"))
    loop = next(n for n in data["nodes"] if n["op"] == "loop")
    assert loop["body"][2] == "v3.3:f64[] = mul v3.2 v3.1" and len(loop["body"]) == 6
    derivative = ok("show", path, "--node-limit", "8", "--mode", "reverse")
    assert derivative.rstrip().splitlines()[-1].startswith("# the loop v3 (the repeat at line 4, 4 iterations)")


def test_a_loop_is_drawn_with_its_body_once(tmp_path):
    """A repeat that stays a loop (past --node-limit): the loop node and its body, built
    once, in one cluster; params fed by the loop node, a next-iteration edge from the
    carried result back to its param, the loop's result read from the body's result."""
    from click.testing import CliRunner

    from adcli.cli import cli

    path = tmp_path / "loop.ad"
    path.write_text("input x: vec[2] = [0.3, 0.5]\nconst X: mat[6, 2] = randn(seed=3)\nh = x\n"
                    "repeat 6 as t {\n    h = tanh(h * X[t] + 0.1 * t)\n}\noutput y = sum(h)\n")

    def run(*args):
        result = CliRunner().invoke(cli, ["graph", str(path), "--node-limit", "10", *args])
        assert result.exit_code == 0, result.output
        return result.stdout

    dot = run("--format", "dot")
    assert 'label="loop ×6 (line 4): its body, built once"' in dot
    assert '"v4.9" -> "v4.1" [style=bold' in dot and "next iteration" in dot   # h carried
    assert '"v4.9" -> v5;' in dot and "v4 -> v5;" not in dot                    # the loop's result
    assert 'v4 -> "v4.2";' in dot and '"v4.4" [label="v4.4: the loop\'s index' in dot
    mermaid = run("--format", "mermaid")
    assert "v4_9 ==>|next iteration| v4_1" in mermaid and "v4.9" not in mermaid.replace('["v4.9', "")
    text = run()
    assert "↻ v4.9 (from the previous iteration)" in text and "v4.9 = tanh v4.8" in text
    data = json.loads(run("--json"))
    body = [n for n in data["nodes"] if n["key"].startswith("v4.")]
    assert len(body) == 9 and all(n["cluster"] == "loop ×6 (line 4): its body, built once" for n in body)
    assert {"from": "v4.9", "to": "v4.1", "kind": "next"} in data["edges"]
    reverse = run("--mode", "reverse", "--format", "dot")   # the graph's adjoint flow: y, the loop, x
    assert sorted(line.split(" [")[0].strip() for line in reverse.splitlines() if 'label="adjoint"' in line) == \
        ["v4 -> v1", "v5 -> v4", "v6 -> v5"]
