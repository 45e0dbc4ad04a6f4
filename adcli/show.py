"""The IR as text (`adcli show`) and as a picture (`adcli graph`: DOT, Mermaid, a text tree).

Everything here works on shapes alone: nothing is evaluated. The helpers that
write a node as an expression (``v1 * v2``, ``sin(v1)``) and a local partial
as text (``cos(v1)``) are shared with adcli.trace.

Collapsed repeats: a node unrolled from a ``repeat`` carries its provenance
(``Node.repeat`` = repeat id, iteration, count, line, position). By default a
graph shows the first iteration's nodes once, inside a cluster labelled
``repeat ×16 (line 11)``; later iterations' nodes are mapped onto the first
iteration's by their position among the iteration's operations, and an edge
from one iteration into the next becomes a "next iteration" edge.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from math import prod

import numpy as np

from .ops import REGISTRY, norm_partial_text

SYMBOLS = {"add": "+", "sub": "-", "mul": "*", "div": "/", "pow": "^", "less": "<", "less_equal": "<=",
           "greater": ">", "greater_equal": ">=", "equal": "==", "not_equal": "!=",
           "logical_and": "and", "logical_or": "or"}
BINARY_FUNCTIONS = ("maximum", "minimum")


# -- numbers, shapes, names -----------------------------------------------------------------

def fmt_number(x) -> str:
    """A float as Python writes it (repr-exact), whole numbers without '.0': 6, 2.5838531634528574."""
    x = float(x)
    if x != x:
        return "nan"
    if x in (float("inf"), float("-inf")):
        return "inf" if x > 0 else "-inf"
    if x == int(x) and abs(x) < 1e16:
        return str(int(x))
    return repr(x)


def typed_shape(shape, dtype: str = "f64") -> str:
    """jaxpr style: f64[] for a scalar, f64[8,16] for a matrix."""
    return f"{dtype}[{','.join(str(d) for d in shape)}]"


def literal_value(node):
    """The number of an unnamed scalar const (a literal such as 2), else None."""
    if node.op == "const" and "name" not in node.attrs and node.shape == ():
        return float(node.attrs["value"])
    return None


SHOWN_CONST_ELEMENTS = 16   # an unnamed array const of at most this many elements is shown by value


def const_label(node) -> str:
    """What a const is, in a listing: its name; a literal's number; an unnamed array (eye(n),
    a derivative's seed direction) by its values when they are few, else by its size, so that
    no const's line is left blank."""
    if "name" in node.attrs:
        return node.attrs["name"]
    value = literal_value(node)
    if value is not None:
        return fmt_number(value)
    array = np.asarray(node.attrs["value"])
    if array.size <= SHOWN_CONST_ELEMENTS:
        return _nested_numbers(array)
    return f"({array.size:,} numbers)"


def _nested_numbers(a) -> str:
    """[[1,0],[0,1]]: an array's numbers as nested lists without spaces."""
    if a.ndim == 0:
        return fmt_number(a)
    return "[" + ",".join(_nested_numbers(part) for part in a) + "]"


def index_array_text(a, most: int = 8) -> str:
    """Integer data (a gather's indices) on one line: [0, 2, 2], or ivec[40] when long."""
    if a.size > most:
        return f"ivec[{a.shape[0]}]" if a.ndim == 1 else f"imat[{a.shape[0]}, {a.shape[1]}]"
    return str(a.tolist()).replace(" ", "") if a.ndim > 1 else ", ".join(map(str, a.tolist())).join("[]")


def _moving(b, a: int, index: str) -> str:
    """a·t + b as the language writes it: 't', 't + 1', '2 * t - 1'."""
    term = index if a == 1 else f"-{index}" if a == -1 else f"{a} * {index}"
    return term if not b else f"{term} + {b}" if b > 0 else f"{term} - {-b}"


def _key_text(key, shape=(), steps=None, index="t") -> str:
    """An index node's key as written; `steps` (Node.key_steps): parts that move with a
    loop's index, shown as a·t + b (the key itself is iteration 0's)."""
    parts = []
    for axis, k in enumerate(key):
        step = steps[axis] if steps else 0
        if step and isinstance(k, slice):
            parts.append(f"{_moving(k.start, step, index)}:{_moving(k.stop, step, index)}")
        elif step:
            parts.append(_moving(k, step, index))
        elif isinstance(k, slice):
            size = shape[axis] if axis < len(shape) else None
            stop = "" if k.stop is None or (k.stop == size and k.step in (None, 1)) else k.stop
            text = f"{'' if k.start in (None, 0) or k.step not in (None, 1) else k.start}:{stop}"
            if k.step not in (None, 1):   # a step slice: its start too, always
                text = f"{k.start}:{stop}:{k.step}"
            parts.append(text)
        elif hasattr(k, "shape"):
            parts.append(index_array_text(k))
        else:
            parts.append(str(k))
    return ", ".join(parts)


def _node_key_text(graph, node) -> str:
    return _key_text(node.attrs.get("key", ()), graph.nodes[node.inputs[0]].shape, node.key_steps,
                     node.key_index or "t")


def expression(graph, node, name=None) -> str:
    """The node as an expression of earlier nodes: 'v1 * v2', 'sin(v1)', 'v2 @ v1', 'sum(v8)',
    'input x1', 'const W' or a literal '2'. `name(i)` names input node i (default v<i+1>)."""
    name = name or (lambda i: graph.nodes[i].var)
    op = node.op
    args = [name(i) for i in node.inputs]
    if op == "input":
        return f"input {node.attrs['name']}"
    if op == "const":
        value = literal_value(node)
        if value is not None:
            return fmt_number(value)
        return f"const {const_label(node)}"
    if op in SYMBOLS and len(args) == 2:
        return f"{args[0]} {SYMBOLS[op]} {args[1]}"
    if op == "matmul":
        return f"{args[0]} @ {args[1]}"
    if op == "neg":
        return f"-{args[0]}"
    if op == "logical_not":
        return f"not {args[0]}"
    if op in ("index", "gather"):
        return f"{args[0]}[{_node_key_text(graph, node)}]"
    if op == "scatter_add":
        rows = node.shape[0]
        return f"scatter_add({args[0]}, {index_array_text(node.attrs['index'])}, {rows})"
    if op == "transpose":
        axes = node.attrs.get("axes")
        return f"{args[0]}.T" if axes is None else f"transpose({args[0]}, [{', '.join(map(str, axes))}])"
    if op == "reshape":
        return f"reshape({args[0]}, {', '.join(str(d) for d in node.attrs.get('shape', node.shape))})"
    if op == "einsum":
        return f'einsum("{node.attrs["subscripts"]}", {", ".join(args)})'
    extra = []
    if op == "multigammaln":
        extra.append(str(node.attrs["d"]))
    if op == "norm" and node.attrs.get("ord") not in (None, 2.0, "fro"):   # NumPy's defaults left out
        order = node.attrs["ord"]
        extra.append(f"ord={repr(order) if order in ('fro', 'nuc') else order if isinstance(order, str) else fmt_number(order)}")
    if node.attrs.get("axis") is not None:
        axis = node.attrs["axis"]   # several axes as the language writes them: [0, 2]
        extra.append(f"axis={list(axis) if isinstance(axis, tuple) else axis}")
    if node.attrs.get("keepdims"):
        extra.append("keepdims=true")
    return f"{op}({', '.join(args + extra)})"


def partial_text(graph, node, i, name=None) -> str:
    """How ∂node/∂(input i) is written: 'cos(v1)', 'v2', '1', '1/8' (from the op's partial_text)."""
    name = name or (lambda j: graph.nodes[j].var)
    prim = REGISTRY.get(node.op)
    texts = list(getattr(prim, "partial_text", None) or [])
    src = graph.nodes[node.inputs[i]]
    if not texts:
        return f"∂{node.var}/∂{name(src.id)}"
    text = texts[min(i, len(texts) - 1)]
    if node.op == "norm":   # it depends on ord
        text = norm_partial_text(node.attrs)

    def substitute(match):
        key = match.group(1)
        if key == "out":
            return name(node.id)
        j = int(key[1:])
        return name(node.inputs[j]) if j < len(node.inputs) else match.group(0)

    text = re.sub(r"\{(x\d+|out)\}", substitute, text)
    if "count" in text and node.op == "mean":
        text = text.replace("count", str(prod(src.shape) // max(prod(node.shape), 1)))
    return text


def place(graph, node) -> str:
    base = os.path.basename(graph.filename)
    return f"{base}:{node.line}" if node.line else base


def equation(graph, node, dtype: str = "f64", name=None) -> str:
    """One IR equation, jaxpr-like: 'v7:f64[8,16] = matmul v1 v3  # mlp.ad:15'. `name(i)` names
    node i (default its var; a loop body's nodes: v3.1, v3.2, ...)."""
    name = name or (lambda j: graph.nodes[j].var)
    head = f"{name(node.id)}:{typed_shape(node.shape, dtype)}"
    if node.op == "input":
        body = f"input {node.attrs['name']}"
    elif node.op == "const":
        body = f"const {const_label(node)}"
    elif node.op == "loop":   # its body is a graph of its own: said in a line, not printed
        inner = node.attrs["body"]
        carried = ", ".join(node.attrs["results"][:node.attrs["carried"]]) or "nothing"
        body = (f"loop {' '.join(name(i) for i in node.inputs)} count={node.attrs['count']:,} "
                f"body={len(inner.nodes) - len(inner.inputs)} nodes carrying {carried}")
        head = f"{name(node.id)}:loop"
    elif node.op == "loop_out":
        body = f"loop_out {name(node.inputs[0])} {node.attrs['name']}"
    else:
        body = " ".join([node.op] + [name(i) for i in node.inputs])
        attrs = []
        for key, value in node.attrs.items():
            if key in ("value", "name", "result_shape", "targets") or value is None:
                continue
            if key in ("carried", "outer") and node.op == "input":
                continue
            if key == "key":
                value = f"[{_node_key_text(graph, node)}]"
            elif hasattr(value, "shape"):   # integer data: a scatter's targets
                value = index_array_text(value)
            elif isinstance(value, tuple):
                value = "(" + ",".join(str(v) for v in value) + ")"
            attrs.append(f"{key}={value}")
        if attrs:
            body += " " + " ".join(attrs)
    return f"{head} = {body}  # {place(graph, node)}"


# -- adcli show --------------------------------------------------------------------------------

def op_counts(graph) -> dict:
    counts: dict = {}
    for node in graph.nodes:
        counts[node.op] = counts.get(node.op, 0) + 1
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def ir_lines(graph, dtype: str = "f64") -> list[str]:
    """The listing `adcli show` prints: inputs, consts and outputs first, then one equation per
    node that is neither, then the counts of nodes by op."""
    nodes = graph.nodes
    lines = [f"# {graph.filename}: {len(nodes)} nodes after inlining and unrolling"]

    def aligned(pairs):
        """'text  # place' lines with the comments in one column."""
        width = max((len(text) for text, _ in pairs), default=0)
        return [f"  {text.ljust(width)}  # {where}" for text, where in pairs]

    def decl(node, label):
        return f"{node.var}:{typed_shape(node.shape, dtype)} {label}", place(graph, node)

    lines.append(f"inputs ({len(graph.inputs)})")
    lines.extend(aligned([decl(nodes[i], name) for name, i in graph.inputs.items()]))
    consts = [n for n in nodes if n.op == "const"]
    lines.append(f"consts ({len(consts)})")
    lines.extend(aligned([decl(n, const_label(n)) for n in consts]))
    lines.append(f"outputs ({len(graph.outputs)})")
    for name, i in graph.outputs.items():
        node = nodes[i]
        lines.append(f"  {name} = {node.var}:{typed_shape(node.shape, dtype)}")
    body = [n for n in nodes if n.op not in ("input", "const")]
    lines.append(f"equations ({len(body)})")
    pairs = []
    for n in body:
        pairs.append(tuple(equation(graph, n, dtype).rsplit("  # ", 1)))
        if n.op == "loop":
            pairs.extend(loop_body_pairs(graph, n, dtype))
    lines.extend(aligned(pairs))
    counts = op_counts(graph)
    lines.extend(contraction_lines(graph))
    lines.append(f"nodes by op ({len(nodes)}): " + ", ".join(f"{op} {n}" for op, n in counts.items()))
    return lines


def loop_body_pairs(graph, loop, dtype: str = "f64", indent: str = "  ", name=None) -> list:
    """A loop's body under its equation, once (it runs `count` times): its params (the carried
    values, then those it reads from outside), its equations, and its results; nodes named
    v3.1, v3.2, ... for loop v3. (text, place) pairs, indented."""
    name = name or (lambda j: graph.nodes[j].var)
    body, nc = loop.attrs["body"], loop.attrs["carried"]
    prefix = name(loop.id)
    inner = lambda j: f"{prefix}.{j + 1}"   # noqa: E731
    pairs = []
    for p, i in enumerate(loop.inputs):
        param = body.nodes[p]
        what = (f"carried {param.attrs.get('carried', '')}: {name(i)} going in, then the iteration before's "
                f"{inner(body.outputs[loop.attrs['results'][p]])}" if p < nc else f"read {name(i)}")
        pairs.append((f"{indent}{inner(p)}:{typed_shape(param.shape, dtype)} = {what}", place(graph, loop)))
    for node in body.nodes[len(loop.inputs):]:
        if node.op == "input":   # a param after the loop's inputs: its index, a number
            pairs.append((f"{indent}{inner(node.id)}:{typed_shape(node.shape, dtype)} = the loop's index, "
                          f"0 … {loop.attrs['count'] - 1:,}", place(graph, loop)))
            continue
        pairs.append(tuple(indent + part if k == 0 else part
                           for k, part in enumerate(equation(body, node, dtype, inner).rsplit("  # ", 1))))
        if node.op == "loop":
            pairs.extend(loop_body_pairs(body, node, dtype, indent + "  ", inner))
    results = ", ".join(f"{n} = {inner(body.outputs[n])}" for n in loop.attrs["results"])
    pairs.append((f"{indent}results after each of the {loop.attrs['count']:,} iterations: {results}",
                  place(graph, loop)))
    return pairs


def contraction_lines(graph) -> list[str]:
    """Each einsum's pairwise contractions: the order chosen (fewest mults, adcli.einsum) and
    what the left-to-right order would cost."""
    from .einsum import report

    entries = report(graph)
    if not entries:
        return []
    lines = [f"einsum contraction orders ({len(entries)})"]
    for e in entries:
        call = f'einsum("{e["subscripts"]}", {", ".join(e["operands"])})'
        lines.append(f"  {e['node']} = {call}  # {e['file']}:{e['line']}")
        steps = "; ".join(f"{step['subscripts']} {step['mults']:,}" for step in e["steps"])
        lines.append(f"    chosen:        {e['order']}: {e['mults']:,} mults")
        lines.append(f"    left to right: {e['left_to_right_order']}: {e['left_to_right_mults']:,} mults")
        if steps:
            lines.append(f"    the chosen products: {steps}")
    return lines


def ir_json(graph, dtype: str = "f64") -> dict:
    nodes = graph.nodes
    return {
        "kind": "ir",
        "file": graph.filename,
        "inputs": {name: {"var": nodes[i].var, "shape": list(nodes[i].shape)} for name, i in graph.inputs.items()},
        "consts": {n.var: {"name": n.attrs.get("name"), "shape": list(n.shape),
                           "literal": literal_value(n)} for n in nodes if n.op == "const"},
        "outputs": {name: {"var": nodes[i].var, "shape": list(nodes[i].shape)} for name, i in graph.outputs.items()},
        "nodes": [{"var": n.var, "op": n.op, "inputs": [nodes[i].var for i in n.inputs],
                   "shape": list(n.shape), "line": n.line, "text": n.text,
                   "expression": expression(graph, n), "equation": equation(graph, n, dtype),
                   "repeat": None if n.repeat is None else
                   dict(zip(("id", "iteration", "count", "line", "position"), n.repeat)),
                   **({"body": [text for text, _ in loop_body_pairs(graph, n, dtype, indent="")]}
                      if n.op == "loop" else {})}
                  for n in nodes],
        "counts": op_counts(graph),
        "contractions": contraction_report(graph),
    }


def contraction_report(graph) -> list:
    from .einsum import report

    return report(graph)


# -- what reverse mode keeps -----------------------------------------------------------------

def cache_plan(graph, wrt: list, outputs: list) -> dict:
    """What reverse mode's forward sweep keeps for the backward sweep, per node:
    {node id: {"value": "intermediate" | "input" | None, "partials": [(input index, text, size)]}},
    from Runner.residual_plan. Intermediate values and partials add up to Cost.cached_values,
    inputs/consts the backward sweep reads to Cost.cached_inputs. Also the plan, and the
    Analysis and (predicting) Runner it came from, which reach into loop bodies."""
    from .interpret import Analysis, Runner

    analysis, runner = Analysis(graph, wrt, outputs), Runner(graph, None, None)
    plan = runner.residual_plan(analysis)
    return {"plan": plan, "nodes": plan_marks(graph, plan), "analysis": analysis, "runner": runner}


def plan_marks(graph, plan, name=None) -> dict:
    """cache_plan's per-node marks of one residual plan (partials written with `name`)."""
    from .interpret import is_leaf

    info = {n.id: {"value": None, "partials": []} for n in graph.nodes}
    seen = set()
    for node_id, entries in plan.items():
        node = graph.nodes[node_id]
        for i, keys in entries:
            for key in keys:
                if key in seen:
                    continue
                seen.add(key)
                if isinstance(key, tuple):
                    spec = REGISTRY[node.op].partial_for(i)
                    shape = node.shape if spec is None or spec.like == "out" else \
                        graph.nodes[node.inputs[0]].shape
                    info[node_id]["partials"].append((i, partial_text(graph, node, i, name), prod(shape)))
                else:
                    info[key]["value"] = "input" if is_leaf(graph.nodes[key]) else "intermediate"
    return info


def cached_totals(graph, info: dict) -> tuple[int, int]:
    """(cached values, cached inputs) as the cost panel counts them."""
    values = inputs = 0
    for node_id, entry in info.items():
        size = graph.nodes[node_id].size
        if entry["value"] == "intermediate":
            values += size
        elif entry["value"] == "input":
            inputs += size
        values += sum(p[2] for p in entry["partials"])
    return values, inputs


# -- the graph view --------------------------------------------------------------------------------

@dataclass
class ViewNode:
    key: str                     # the representative's var, e.g. "v3"
    node: object                 # the representative IR node
    members: list = field(default_factory=list)   # IR node ids it stands for
    cluster: int | str | None = None   # repeat id when collapsed into a cluster ("loopN": a loop's body)
    kept: str = ""               # reverse mode: what the backward sweep keeps or reads
    body_label: str = ""         # a loop body's node: what it computes, in the view's names


@dataclass
class GraphView:
    graph: object
    mode: str
    expanded: bool
    nodes: dict                  # key -> ViewNode, in topological order of representatives
    edges: list                  # (src key, dst key, kind): "data", "next" (iteration), "adjoint"
    clusters: dict               # repeat id -> label
    notes: list = field(default_factory=list)

    def node_label_lines(self, view_node) -> list[str]:
        node = view_node.node
        if view_node.body_label:   # (its ids are its body's own)
            return [f"{view_node.key}: {view_node.body_label}", typed_shape(node.shape)]
        members = view_node.members
        head = node.var if len(members) == 1 else \
            f"{node.var} … {self.graph.nodes[members[-1]].var} ({len(members)} nodes)"
        if node.op in ("input", "const"):
            what = expression(self.graph, node)
            if node.op == "const" and literal_value(node) is not None:
                what = f"const {what}"
        else:
            what = node.op
        shapes = {self.graph.nodes[m].shape for m in members}
        shape = typed_shape(node.shape) + (" (shape varies)" if len(shapes) > 1 else "")
        lines = [f"{head}: {what}", shape]
        outputs = [name for name, i in self.graph.outputs.items() if i in members]
        if outputs:
            lines.append("output " + ", ".join(outputs))
        if view_node.kept:
            lines.append(view_node.kept)
        return lines


def _collapsible(graph) -> tuple[dict, dict, list]:
    """Map later iterations' nodes onto the first iteration's: (rep, clusters, notes)."""
    groups: dict = {}
    meta: dict = {}
    for node in graph.nodes:
        if node.repeat is None or node.op in ("input", "const"):
            continue
        rid, iteration, count, line, _ = node.repeat
        groups.setdefault(rid, {}).setdefault(iteration, []).append(node.id)
        meta[rid] = (count, line)
    rep, clusters, notes = {}, {}, []
    for rid, iterations in groups.items():
        first = iterations.get(min(iterations))
        ok = True
        mapping = {}
        for it, ids in iterations.items():
            if len(ids) > len(first):
                ok = False
                break
            for pos, node_id in enumerate(ids):
                if graph.nodes[node_id].op != graph.nodes[first[pos]].op:
                    ok = False
                    break
                mapping[node_id] = first[pos]
            if not ok:
                break
        count, line = meta[rid]
        if not ok:
            notes.append(f"repeat at line {line} is shown expanded: its iterations differ")
            continue
        rep.update(mapping)
        clusters[rid] = f"repeat ×{count} (line {line})"
    return rep, clusters, notes


def build_view(graph, mode: str = "forward", expand: bool = False) -> GraphView:
    """The graph to draw: collapsed repeats unless `expand`; with mode 'reverse', what the
    backward sweep keeps (w.r.t. all inputs, for all outputs) and adjoint-flow edges."""
    rep, clusters, notes = ({}, {}, []) if expand else _collapsible(graph)
    if expand:   # clusters still group every iteration's nodes, one per repeat
        for node in graph.nodes:
            if node.repeat is not None and node.op not in ("input", "const"):
                rid, _, count, line, _ = node.repeat
                clusters[rid] = f"repeat ×{count} (line {line})"
    nodes: dict = {}
    for node in graph.nodes:
        target = graph.nodes[rep.get(node.id, node.id)]
        view_node = nodes.get(target.var)
        if view_node is None:
            cluster = target.repeat[0] if target.repeat is not None and target.repeat[0] in clusters \
                and target.op not in ("input", "const") else None
            view_node = nodes[target.var] = ViewNode(target.var, target, [], cluster)
        view_node.members.append(node.id)
    edges: list = []
    seen = set()

    def add(src, dst, kind):
        if (src, dst, kind) not in seen:
            seen.add((src, dst, kind))
            edges.append((src, dst, kind))

    def key_of(node_id):
        return graph.nodes[rep.get(node_id, node_id)].var

    loops = {}   # a loop node drawn -> its body's view keys
    for view_node in list(nodes.values()):
        if view_node.node.op == "loop":
            loops[view_node.node.id] = _loop_body(view_node, nodes, clusters, add)
    for node in graph.nodes:
        for i in node.inputs:
            src = graph.nodes[i]
            if node.op == "loop_out" and src.id in loops:   # from the body's result, not the loop
                position = node.attrs["position"]
                body = src.attrs["body"]
                add(loops[src.id][body.outputs[list(body.outputs)[position]]], key_of(node.id), "data")
                continue
            carried = (not expand and node.id in rep and i in rep and src.repeat is not None
                       and node.repeat is not None and src.repeat[0] == node.repeat[0]
                       and src.repeat[1] < node.repeat[1])
            add(key_of(i), key_of(node.id), "next" if carried else "data")
    if mode == "reverse":
        cache = cache_plan(graph, list(graph.inputs), list(graph.outputs))
        for node_id, entries in cache["plan"].items():
            for i, _ in entries:
                add(key_of(node_id), key_of(graph.nodes[node_id].inputs[i]), "adjoint")
        for view_node in nodes.values():
            if view_node.body_label:   # a loop's body: the loop node says what it keeps
                continue
            entry = cache["nodes"][view_node.node.id]
            parts = []
            if entry["value"] == "intermediate":
                parts.append("kept: value")
            elif entry["value"] == "input":
                parts.append("read by the backward sweep")
            parts.extend(f"kept: {text}" for _, text, _ in entry["partials"])
            view_node.kept = "; ".join(parts)
    return GraphView(graph, mode, expand, nodes, edges, clusters, notes)


def _loop_body(view_node, nodes, clusters, add) -> dict:
    """Draw a loop node's body once, in a cluster with the loop node: its params fed by the
    loop node, a "next iteration" edge from each carried result back to its param. Body
    nodes are named as trace names them (v3.1, v3.2, ... for the body of loop v3). Returns
    {body node id: view key}."""
    loop = view_node.node
    body, carried = loop.attrs["body"], loop.attrs["carried"]
    cluster = f"loop{loop.id}"
    clusters[cluster] = f"loop ×{loop.attrs['count']:,} (line {loop.line}): its body, built once"
    view_node.cluster = cluster
    keys = {b.id: f"{loop.var}.{b.id + 1}" for b in body.nodes}
    for b in body.nodes:
        if b.op == "input":
            what = (f"param {b.attrs['carried']} (carried)" if "carried" in b.attrs else
                    "the loop's index" if "index" in b.attrs else f"param {b.attrs.get('outer', '')}".strip())
        else:
            what = " ".join([b.op] + [keys[i] for i in b.inputs])
        nodes[keys[b.id]] = ViewNode(keys[b.id], b, [], cluster, body_label=what)
    for b in body.nodes:
        if b.op == "input":
            add(loop.var, keys[b.id], "data")
        for i in b.inputs:
            add(keys[i], keys[b.id], "data")
    out_ids = list(body.outputs.values())
    for q in range(carried):
        add(keys[out_ids[q]], keys[q], "next")
    return keys


# -- DOT -----------------------------------------------------------------------------------------------

def _dot_id(key: str) -> str:
    """A node's DOT id: its key, quoted when it is not a plain name (v4.1, in a loop's body)."""
    return key if key.replace("_", "").isalnum() else _dot_quote(key)


def _dot_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_dot(view: GraphView) -> str:
    g = view.graph
    out = ["digraph adcli {",
           f"  label={_dot_quote(_title(view))};",
           '  labelloc="t";',
           "  rankdir=TB;",
           '  node [shape=box, style="rounded", fontname="Helvetica", fontsize=10];',
           '  edge [fontname="Helvetica", fontsize=9];']

    def node_line(vn, indent="  "):
        label = "\\n".join(line.replace("\\", "\\\\").replace('"', '\\"')
                           for line in view.node_label_lines(vn))
        attrs = [f'label="{label}"']
        if vn.node.op == "input":
            attrs += ["shape=ellipse"]
        elif vn.node.op == "const":
            attrs += ["shape=ellipse", 'style="dashed"']
        if set(vn.members) & set(g.outputs.values()):
            attrs += ["peripheries=2"]
        if vn.kept.startswith("kept"):
            attrs += ['style="rounded,filled"', 'fillcolor="#fde9c9"']
        elif vn.kept:
            attrs += ['color="#b9770e"']
        return f"{indent}{_dot_id(vn.key)} [{', '.join(attrs)}];"

    for rid, label in view.clusters.items():
        members = [vn for vn in view.nodes.values() if vn.cluster == rid]
        if not members:
            continue
        out.append(f"  subgraph cluster_repeat{rid} {{")
        out.append(f"    label={_dot_quote(label)};")
        out.append('    style="dashed"; color="#7f8c8d";')
        out.extend(node_line(vn, "    ") for vn in members)
        out.append("  }")
    out.extend(node_line(vn) for vn in view.nodes.values() if vn.cluster is None)
    for src, dst, kind in view.edges:
        src, dst = _dot_id(src), _dot_id(dst)
        if kind == "data":
            out.append(f"  {src} -> {dst};")
        elif kind == "next":
            out.append(f'  {src} -> {dst} [style=bold, color="#2e86c1", label="next iteration", '
                       "constraint=false];")
        else:
            out.append(f'  {src} -> {dst} [style=dashed, color="#c0392b", fontcolor="#c0392b", '
                       f'label="adjoint", constraint=false];')
    out.append("}")
    return "\n".join(out) + "\n"


def _title(view: GraphView, text: bool = False) -> str:
    """The first line of every format; the reverse-mode legend names what that format draws
    (a text tree has no colours, dashes or fills: its marks are words in parentheses)."""
    g = view.graph
    how = "expanded" if view.expanded else "repeats collapsed"
    if view.mode != "reverse":
        extra = ""
    elif text:
        extra = ("; (kept: …) is what the backward sweep keeps, (read by the backward sweep) an input "
                 "or const it reads")
    else:
        extra = "; dashed red: adjoint flow of the backward sweep; filled: kept for it"
    return f"{os.path.basename(g.filename)}: {len(g.nodes)} nodes ({how}){extra}"


# -- Mermaid -----------------------------------------------------------------------------------------

def _mermaid_label(lines: list) -> str:
    text = "<br/>".join(lines)
    return text.replace('"', "#quot;")


def _mermaid_id(key: str) -> str:
    """A node's Mermaid id: a loop body's v4.1 is v4_1 there (its label keeps v4.1)."""
    return key.replace(".", "_")


def to_mermaid(view: GraphView) -> str:
    out = ["flowchart TB", f"  %% {_title(view)}"]

    def node_line(vn, indent="  "):
        label = _mermaid_label(view.node_label_lines(vn))
        if vn.node.op in ("input", "const"):
            return f'{indent}{_mermaid_id(vn.key)}(["{label}"])'
        return f'{indent}{_mermaid_id(vn.key)}["{label}"]'

    for rid, label in view.clusters.items():
        members = [vn for vn in view.nodes.values() if vn.cluster == rid]
        if not members:
            continue
        out.append(f'  subgraph repeat{rid}["{_mermaid_label([label])}"]')
        out.extend(node_line(vn, "    ") for vn in members)
        out.append("  end")
    out.extend(node_line(vn) for vn in view.nodes.values() if vn.cluster is None)
    links = 0
    adjoint_links = []
    for src, dst, kind in view.edges:
        src, dst = _mermaid_id(src), _mermaid_id(dst)
        if kind == "data":
            out.append(f"  {src} --> {dst}")
        elif kind == "next":
            out.append(f"  {src} ==>|next iteration| {dst}")
        else:
            out.append(f"  {src} -.->|adjoint| {dst}")
            adjoint_links.append(links)
        links += 1
    if adjoint_links:
        out.append(f"  linkStyle {','.join(map(str, adjoint_links))} stroke:#c0392b,color:#c0392b")
    kept = [_mermaid_id(vn.key) for vn in view.nodes.values() if vn.kept.startswith("kept")]
    if kept:
        out.append("  classDef kept fill:#fde9c9,stroke:#b9770e")
        out.append(f"  class {','.join(kept)} kept")
    return "\n".join(out) + "\n"


# -- a text tree ---------------------------------------------------------------------------------------

MAX_DEPTH_SHOWN = 40   # the text tree's indentation restarts beyond this depth


def to_text(view: GraphView) -> str:
    """Each output as a tree of what it is computed from; shared nodes are shown once
    ('shown above'), values carried from the previous iteration of a repeat are marked ↻."""
    g = view.graph
    incoming: dict = {}
    for src, dst, kind in view.edges:
        if kind in ("data", "next"):
            incoming.setdefault(dst, []).append((src, kind))
    lines = [_title(view, text=True)]
    shown = set()

    def label(vn) -> str:
        node = vn.node
        body = vn.body_label or (expression(g, node) if node.op in ("input", "const") else
                                 " ".join([node.op] + [g.nodes[i].var for i in node.inputs]))
        text = f"{vn.key} = {body} : {typed_shape(node.shape)}"
        if len(vn.members) > 1:
            text += f"  [{view.clusters.get(vn.cluster, 'repeat')}: stands for {len(vn.members)} nodes]"
        if vn.kept:
            text += f"  ({vn.kept})"
        return text

    def walk(root):
        """Depth first with an explicit stack: long chains must not hit Python's recursion limit."""
        stack = [(root, "", True, "data")]
        while stack:
            key, prefix, last, kind = stack.pop()
            branch = "└─ " if last else "├─ "
            if kind == "next":
                lines.append(f"{prefix}{branch}↻ {key} (from the previous iteration)")
                continue
            if key in shown and incoming.get(key):
                lines.append(f"{prefix}{branch}{key} (shown above)")
                continue
            shown.add(key)
            lines.append(f"{prefix}{branch}{label(view.nodes[key])}")
            children = incoming.get(key, [])
            inner = prefix + ("   " if last else "│  ")
            if len(inner) > 3 * MAX_DEPTH_SHOWN:   # very deep: start again at the left margin
                inner = "⋯  "
            for n in reversed(range(len(children))):
                src, k = children[n]
                stack.append((src, inner, n == len(children) - 1, k))

    key_of = {member: vn.key for vn in view.nodes.values() for member in vn.members}
    for name, i in g.outputs.items():
        key = key_of[i]   # a node of a later iteration is drawn as the first iteration's
        lines.append(f"output {name}" + ("" if key == g.nodes[i].var else
                                          f" = {g.nodes[i].var}, the repeat's last iteration"))
        walk(key)
    if view.mode == "reverse":
        lines.append("adjoints flow up each branch (from a node to the nodes it is computed from), "
                     "in the backward sweep")
    lines.extend(view.notes)
    return "\n".join(lines) + "\n"


def view_json(view: GraphView) -> dict:
    return {
        "kind": "graph",
        "file": view.graph.filename,
        "mode": view.mode,
        "expanded": view.expanded,
        "nodes": [{"key": vn.key, "op": vn.node.op, "shape": list(vn.node.shape),
                   "members": [view.graph.nodes[m].var for m in vn.members],
                   "cluster": view.clusters.get(vn.cluster), "kept": vn.kept or None}
                  for vn in view.nodes.values()],
        "edges": [{"from": s, "to": d, "kind": k} for s, d, k in view.edges],
        "clusters": [{"id": rid, "label": label} for rid, label in view.clusters.items()],
        "notes": view.notes,
    }
