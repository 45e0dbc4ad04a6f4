"""Rich rendering of traces, IR listings and text graphs (imported only when printing text).

A trace is laid out to the console's width (the terminal's; COLUMNS where it is set; 80
for a file or a pipe with neither): one table with every column where it fits; else a
values table and a derivatives table (in reverse mode: the values of the forward sweep
in evaluation order, then the adjoints in the order the backward sweep fills them); else
one block per node. Columns are sized here (`fit_widths`): a column with words may wrap,
never below its longest word or its floor, so a number is never cut and a source line is
never wrapped one token per line; a layout that cannot meet those minimums is not used.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from rich import box
from rich.cells import cell_len
from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from .ir import format_shape
from .render import console
from .show import fmt_number
from .trace import bar_var, dot_var, epsilon, row_name

PREVIEW_ITEMS = 3
MAX_TABLE_ROWS = 300   # longer traces show their first and last rows unless --full
KEPT, READ = "●", "○"
GAP = 2                # characters between two columns: the padding and the (blank) divider


# -- values ----------------------------------------------------------------------------------------

def _short(x, digits: int = 6) -> str:
    x = float(x)
    if x != x or x in (float("inf"), float("-inf")):
        return fmt_number(x)
    if x == int(x) and abs(x) < 1e6:
        return str(int(x))
    return f"{x:.{digits}g}"


def preview(value, full: bool = False) -> str:
    """Scalars exactly (repr); arrays as a short elided preview, or everything with full."""
    if value is None:
        return "0"
    a = np.asarray(value)
    if a.dtype == object:
        return _nested(a.tolist()) if full else _preview_list(a, str)
    if a.ndim == 0:
        return fmt_number(a)
    if full:
        return full_array(a)
    return _preview_list(a, _short)


def _preview_list(a, fmt) -> str:
    if a.ndim == 1:
        items = [fmt(x) for x in a[:PREVIEW_ITEMS]]
        if a.shape[0] > PREVIEW_ITEMS + 1:
            items += ["…", fmt(a[-1])]
        elif a.shape[0] == PREVIEW_ITEMS + 1:
            items.append(fmt(a[-1]))
        return "[" + ", ".join(items) + "]"
    rows = [_preview_list(row, fmt) for row in a[:2]]
    if a.shape[0] > 2:
        rows.append("…")
    return "[" + ", ".join(rows) + "]"


def _nested(items) -> str:
    if isinstance(items, list):
        return "[" + ", ".join(_nested(i) for i in items) + "]"
    return str(items)


def full_array(a) -> str:
    """Every element, repr-exact; a matrix one row per line."""
    a = np.asarray(a)
    if a.ndim == 0:
        return fmt_number(a)
    if a.ndim == 1:
        return "[" + ", ".join(fmt_number(x) for x in a) + "]"
    return "[" + ",\n ".join(full_array(row) for row in a) + "]"


def _add(table, *cells):
    """Cells as plain text: source such as vec[n] is not Rich markup."""
    table.add_row(*[cell if isinstance(cell, Text) else Text(str(cell)) for cell in cells])


def work(row, what) -> str:
    part = row[what]
    return f"{part['primal']:,} + {part['derivative']:,}"


def shape_text(row) -> str:
    return format_shape(tuple(row["shape"]))


SOURCE_WIDTH = 80   # a longer source (a whole declaration, a huge expression) is cut, unless --full


def source_text(row, full: bool = True) -> str:
    """'5: x1 * x2'; long source lines are cut to SOURCE_WIDTH characters unless full."""
    source = row["source"]
    if not source:
        return ""
    if not full and len(source) > SOURCE_WIDTH:
        source = source[:SOURCE_WIDTH - 1] + "…"
    return f"{row['line']}: {source}" if row["line"] else source


# -- the header ---------------------------------------------------------------------------------------

def _inputs_line(trace) -> str:
    parts = []
    for name, value in trace.inputs.items():
        a = np.asarray(value)
        parts.append(f"{name} = {fmt_number(a)}" if a.ndim == 0 else
                     f"{name}: {format_shape(a.shape)} {preview(a)}")
    return "\n".join(parts) or "none"


def _seed_lines(trace) -> list[str]:
    lines = []
    many = len(trace.seeds) > 1
    for k, seed in enumerate(trace.seeds):
        described = []
        for name, d in seed["direction"].items():
            d = np.asarray(d)
            dotted = name[0] + "\u0307" + name[1:]
            if d.ndim == 0:
                described.append(f"{dotted} = {fmt_number(d)}")
            elif np.all(d == 1):
                described.append(f"{dotted} = 1 on every element")
            elif np.count_nonzero(d) == 1 and np.max(d) == 1:
                idx = np.unravel_index(int(np.argmax(d)), d.shape)
                described.append(f"{dotted}[{','.join(map(str, idx))}] = 1, its other elements 0")
            else:
                described.append(f"{dotted} = {preview(d)}")
        others = "; the other inputs' tangents 0" if set(seed["direction"]) != set(trace.inputs) else ""
        if trace.dual:
            tag = epsilon(k, len(trace.seeds))
            lines.append(f"{tag}: {', '.join(described)}{others}")
        else:
            tag = f"direction {k + 1} ({seed['label']})" if many else seed["label"]
            lines.append(f"{tag}: {', '.join(described)}{others}")
    return lines


def _header(trace, title: str) -> Panel:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    _add(grid, "file", trace.file)
    _add(grid, "inputs", _inputs_line(trace))
    if trace.mode == "forward":
        label = "ε" if trace.dual else ("seeds" if len(trace.seeds) > 1 else "seed")
        _add(grid, label, "\n".join(_seed_lines(trace)))
    else:
        us = ", ".join(f"{name} = {preview(v)}" for name, v in trace.cotangent.items())
        _add(grid, "cotangent", us + (f"  ({trace.cotangent_note})" if trace.cotangent_note else ""))
        _add(grid, "wrt", ", ".join(trace.wrt))
    return Panel(grid, title=title, title_align="left", expand=False, box=box.ROUNDED)


# -- fitting tables to the width -------------------------------------------------------------------------

@dataclass
class Col:
    """A column: its header, and how narrow it may be wrapped. `wrap`: its cells may wrap at
    spaces, never below their longest word nor below `floor` (or their width, if less).
    `whole`: its cells never wrap, though its header may ("mults" over "f + ∂")."""
    header: str
    justify: str = "left"
    style: str | None = None
    wrap: bool = False
    floor: int = 0
    whole: bool = False


def _text_width(text: str) -> int:
    return max((cell_len(line) for line in text.split("\n")), default=0)


def _longest_word(text: str) -> int:
    return max((cell_len(word) for line in text.split("\n") for word in line.split(" ")), default=0)


def fit_widths(cols: list, rows: list, width: int, strict: bool = False) -> list | None:
    """The width of each column so that the table is at most `width` characters wide:
    every column as wide as its widest cell where that fits, else the widest wrapping
    columns narrowed first (a common ceiling), none below its minimum. None when even
    the minimums do not fit, or with `strict` when anything would have to wrap."""
    natural, least = [], []
    for k, col in enumerate(cols):
        cells = [row[k] for row in rows]
        nat = max([_text_width(col.header)] + [_text_width(c) for c in cells])
        natural.append(nat)
        if col.whole:
            least.append(max([_longest_word(col.header)] + [_text_width(c) for c in cells]))
        elif col.wrap:
            word = max([_longest_word(col.header)] + [_longest_word(c) for c in cells])
            least.append(max(word, min(nat, col.floor)))
        else:
            least.append(nat)
    room = width - GAP * (len(cols) - 1)
    if sum(natural) <= room:
        return natural
    if strict or sum(least) > room:
        return None

    def at(ceiling):
        return [max(lo, min(nat, ceiling)) for lo, nat in zip(least, natural)]

    low, high = 0, max(natural)
    while low < high:   # the highest ceiling that fits
        mid = (low + high + 1) // 2
        if sum(at(mid)) <= room:
            low = mid
        else:
            high = mid - 1
    widths = at(low)
    spare = room - sum(widths)   # fewer than the columns held at the ceiling: one more each
    for k in range(len(widths)):
        if spare and widths[k] == low < natural[k]:
            widths[k] += 1
            spare -= 1
    return widths


def _justify(col: Col, rows: list, k: int) -> str:
    """Right-justified numbers, but a column of lists (which wrap) reads better on the left."""
    if col.justify == "right" and not col.whole and any(" " in row[k] for row in rows):
        return "left"
    return col.justify


def fitted_table(cols: list, rows: list, width: int, strict: bool = False) -> Table | None:
    """A table of plain-text rows at most `width` wide (None where it cannot be)."""
    widths = fit_widths(cols, rows, width, strict)
    if widths is None:
        return None
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1, 0, 0))
    for k, (col, w) in enumerate(zip(cols, widths)):
        table.add_column(Text(col.header), justify=_justify(col, rows, k), style=col.style, width=w,
                         no_wrap=not (col.wrap or col.whole), overflow="fold")
    for row in rows:
        _add(table, *row)
    return table


# -- the rows' cells ---------------------------------------------------------------------------------------

def _partials_text(row, full) -> str:
    parts = []
    for p in row["partials"]:
        value = p["value"]
        head = f"∂/∂{p['wrt']}: {p['text']}"
        shown = None if value is None else preview(value, full)
        text = head if shown is None or shown == p["text"] else f"{head} = {shown}"
        if p.get("used") is False:
            text += f" (unused: {dot_var(p['wrt'])} = 0)"
        parts.append(text)
    return "\n".join(parts)


def _tangent_from(row) -> str:
    text = row["tangent_text"]
    return f"{dot_var(row['var'])} = {text}" if text else ""


def _computed_as(row) -> str:
    return f"{bar_var(row['var'])} = {row['adjoint_text']}" if row["adjoint_text"] else ""


def kept_text(row) -> str:
    cached = row["cached"]
    parts = []
    if cached.get("values"):   # a loop's iterations not shown: their kept values in all
        parts.append(f"{KEPT} {cached['values']:,} values")
    if cached.get("inputs"):
        parts.append(f"{READ} {cached['inputs']:,} read")
    if cached["value"] == "intermediate":
        parts.append(f"{KEPT} value")
    elif cached["value"] == "input":
        parts.append(f"{READ} read")
    parts.extend(f"{KEPT} {p['text']}" for p in cached["partials"])
    return ", ".join(parts)


def _dual_text(row, full) -> str:
    dual = row["dual"]
    return preview(np.asarray(dual, dtype=object), full) if isinstance(dual, list) else dual


def _cells(trace, row, full) -> dict:
    """Every cell of one row, by column key."""
    cells = {"var": row["var"], "expression": row["expression"], "source": source_text(row, full),
             "shape": shape_text(row), "value": preview(row["value"], full),
             "mults": work(row, "mults"), "flops": work(row, "flops")}
    if trace.mode == "forward":
        cells["partials"] = _partials_text(row, full)
        cells["from"] = _tangent_from(row)
        for k, t in enumerate(row["tangents"]):
            cells[f"tangent{k}"] = preview(t, full)
        if trace.dual:
            cells["dual"] = _dual_text(row, full)
    else:
        cells["kept"] = kept_text(row)
        cells["adjoint"] = preview(row["adjoint"], full) if row["needed"] else "—"
        cells["computed"] = _computed_as(row)
    if row.get("kind") == "iterations":   # said again beside its work in the derivatives table
        cells["from" if trace.mode == "forward" else "computed"] = row["expression"]
    if row["op"] == "loop":   # a loop (or its iterations not shown) has no value of its own
        cells.update({key: "" for key in cells if key in ("shape", "value", "dual", "adjoint")
                      or key.startswith("tangent")})
    return cells


def _columns(trace, narrow: bool) -> dict:
    """Every column, by key. Narrow: the cost headers on two lines."""
    cost = "\n" if narrow else " "
    cols = {
        "var": Col("var", style="bold cyan"),
        "expression": Col("= expression", wrap=True, floor=12),
        "source": Col("source", style="dim", wrap=True, floor=18),
        "shape": Col("shape"),
        "value": Col("value", justify="right", wrap=True, floor=24),
        "mults": Col(f"mults{cost}f + ∂", justify="right", whole=True),
        "flops": Col(f"flops{cost}f + ∂", justify="right", whole=True),
        "partials": Col("local partials", wrap=True, floor=18),
        "from": Col("tangent from", wrap=True, floor=14),
        "kept": Col("kept" if narrow else "kept for the backward sweep", wrap=True, floor=10),
        "adjoint": Col("adjoint v̄", justify="right", wrap=True, floor=24),
        "computed": Col("computed as", wrap=True, floor=16),
        "dual": Col("dual value  a + b" + ("ε" if len(trace.seeds) == 1 else "ε₁ + …"), wrap=True,
                    floor=24),
    }
    for k, seed in enumerate(trace.seeds):
        cols[f"tangent{k}"] = Col(f"v̇  ({seed['label']})" if len(trace.seeds) > 1 else "tangent v̇",
                                  justify="right", wrap=True, floor=24)
    return cols


def shown_rows(trace, full: bool, rows: list | None = None) -> list:
    """The rows to draw; None marks the elided middle of a long trace."""
    rows = trace.rows if rows is None else rows
    if full or len(rows) <= MAX_TABLE_ROWS:
        return list(rows)
    half = MAX_TABLE_ROWS // 2
    return rows[:half] + [None] + rows[-half:]


def _table_rows(trace, keys: list, rows: list, full: bool) -> list:
    """Plain-text cells of the given columns; the elided middle as one row."""
    out = []
    before = None
    for row in shown_rows(trace, full, rows):
        heading = _heading(trace, row, before)
        if heading:
            out.append(["", heading] + [""] * (len(keys) - 2))
        before = row
        if row is None:
            hidden = len(trace.rows) - MAX_TABLE_ROWS
            out.append(["⋮", f"{hidden:,} more rows"] + [""] * (len(keys) - 2))
        else:
            cells = _cells(trace, row, full)
            out.append([cells[key] for key in keys])
    return out


def _tangent_keys(trace) -> list:
    return [f"tangent{k}" for k in range(len(trace.seeds))]


def _evaluation_order(trace) -> list:
    return trace.in_evaluation_order()


def _heading(trace, row, before) -> str | None:
    """'iteration 1 of 4' above the first row of each iteration of a loop's body shown."""
    if row is None or "iteration" not in row or row.get("kind"):
        return None
    if before is not None and before.get("loop") == row["loop"] and before.get("iteration") == row["iteration"]:
        return None
    count = next(r["count"] for r in trace.rows if r["op"] == "loop" and r["var"] == row["loop"] and "count" in r)
    return f"iteration {row['iteration']:,} of {count:,}"


def _layouts(trace):
    """The layouts, widest first: [(caption, column keys, rows in order)] per table."""
    if trace.mode == "forward" and trace.dual:
        yield [("rows in evaluation order", ["var", "expression", "source", "dual", "mults", "flops"],
                trace.rows)]
        yield [("values, in evaluation order", ["var", "expression", "source"], trace.rows),
               ("dual numbers, in evaluation order", ["var", "dual", "mults", "flops"], trace.rows)]
    elif trace.mode == "forward":
        tangents = _tangent_keys(trace)
        yield [("rows in evaluation order",
                ["var", "expression", "source", "shape", "value", "partials", "from"] + tangents
                + ["mults", "flops"], trace.rows)]
        yield [("values, in evaluation order", ["var", "expression", "source", "shape", "value"],
                trace.rows),
               ("derivatives, in evaluation order", ["var", "partials", "from"] + tangents + ["mults", "flops"],
                trace.rows)]
    else:
        yield [("rows in the order the backward sweep fills the adjoints",
                ["var", "expression", "source", "shape", "value", "kept", "adjoint", "computed", "mults",
                 "flops"], trace.rows)]
        yield [("values (the forward sweep), in evaluation order",
                ["var", "expression", "source", "shape", "value"], _evaluation_order(trace)),
               ("adjoints, in the order the backward sweep fills them",
                ["var", "kept", "adjoint", "computed", "mults", "flops"], trace.rows)]


def trace_tables(trace, full: bool, width: int) -> list:
    """Captions and tables of the widest layout that fits `width`; [] when none does."""
    for n, layout in enumerate(_layouts(trace)):
        cols = _columns(trace, narrow=n > 0)
        parts = []
        for caption, keys, rows in layout:
            table = fitted_table([cols[key] for key in keys], _table_rows(trace, keys, rows, full), width,
                                 strict=n == 0)
            if table is None:
                break
            parts += ([Text("")] if parts else []) + [Text(caption, style="dim"), table]
        else:
            return parts
    return []


# -- one block per node: the layout of last resort ----------------------------------------------------

def node_blocks(trace, full: bool) -> list:
    """Each node as a heading and a few labelled lines, wrapped to any width."""
    blocks = [(row, _node_lines(trace, row, full) if row else []) for row in shown_rows(trace, full)]
    label_width = max((cell_len(label) for _, lines in blocks for label, _ in lines), default=0)
    caption = ("nodes in evaluation order" if trace.mode == "forward"
               else "nodes in the order the backward sweep fills the adjoints")
    parts = [Text(caption, style="dim")]
    before = None
    for row, lines in blocks:
        heading = _heading(trace, row, before)
        before = row
        if heading:
            parts += [Text(""), Text(f"── {row['loop']}: {heading} ──", style="dim")]
        if row is None:
            parts += [Text(""), Text(f"⋮ {len(trace.rows) - MAX_TABLE_ROWS:,} more rows")]
            continue
        head = Text(row["var"], style="bold cyan")
        shape = "" if row["op"] == "loop" else f"   {shape_text(row)}"
        head.append(f" = {row['expression']}{shape}")
        if row["source"]:
            head.append(f"   {source_text(row, full)}", style="dim")
        grid = Table.grid(padding=(0, 2, 0, 0))
        grid.add_column(no_wrap=True, width=label_width, style="bold")
        grid.add_column(overflow="fold")
        for label, text in lines:
            _add(grid, label, text)
        parts += [Text(""), head, grid]
    return parts


def _node_lines(trace, row, full) -> list:
    """(label, text) lines of one node's block: its value, and its tangent or adjoint with
    how it is formed, as a course writes v̇4 = cos(v1)·v̇1 = -0.416."""
    cells = _cells(trace, row, full)
    lines = [("  value", cells["value"])]
    if trace.mode == "forward":
        if trace.dual:
            lines.append(("  dual", cells["dual"]))
        if cells["partials"]:
            lines.append(("  partials", cells["partials"]))
        if len(trace.seeds) == 1:
            formed = f"{cells['from']} = " if cells["from"] and cells["from"] != cells["tangent0"] else ""
            lines.append(("  tangent", formed + cells["tangent0"]))
        else:
            if cells["from"]:
                lines.append(("  tangent", cells["from"]))
            for k, seed in enumerate(trace.seeds):
                lines.append((f"  v̇ ({seed['label']})", cells[f"tangent{k}"]))
    else:
        if cells["kept"]:
            lines.append(("  kept", cells["kept"]))
        formed = f"{cells['computed']} = " if cells["computed"] and row["needed"] else ""
        lines.append(("  adjoint", formed + cells["adjoint"]))
    lines.append(("  work", f"mults {cells['mults']}, flops {cells['flops']} (f + ∂)"))
    return lines


# -- the footer ---------------------------------------------------------------------------------------------

def _footer_lines(trace) -> list:
    """(label, text) pairs."""
    totals = trace.totals()
    cost = trace.cost
    lines = []
    m, f = totals["mults"], totals["flops"]
    lines.append(("totals", f"mults {m['primal']:,} + {m['derivative']:,}, flops {f['primal']:,} + "
                            f"{f['derivative']:,}  (f: evaluating the function, ∂: building the derivative)"))
    if trace.mode == "forward":
        k = len(trace.seeds)
        if k == 1:
            lines.append(("cost", "1 forward pass: the same counts as adcli grad with this --direction"))
        else:
            lines.append(("cost", f"1 forward sweep carrying {k} directions (vector forward mode): f is "
                                  f"evaluated once; each tangent is a dense {k}-vector, so its zero "
                                  "entries are multiplied too"))
        jac = trace.jacobian_cost
        if jac:
            wrt = ",".join(jac["wrt"])
            traced = m["derivative"]
            lines.append(("vs grad", f"adcli grad --mode forward --wrt {wrt} counts "
                                     f"{jac['mults']['derivative']:,} derivative mults (this trace: "
                                     f"{traced:,}): its Jacobian seeds identity columns, and a product "
                                     "with one is free (A·I costs nothing); a traced direction is a "
                                     "dense array, multiplied like any tangent"))
        if any(p.get("used") is False for row in trace.rows for p in row["partials"]):
            lines.append(("unused", "a partial marked unused multiplies a zero tangent: forward mode "
                                    "neither computes nor counts it (shown for reading only)"))
        for name, ts in trace.results.items():
            shown = ", ".join(preview(t) for t in ts)
            lines.append(("J·v", f"{name} = {shown}"))
    else:
        values, inputs = trace.cached_marks()
        lines.append(("cached", f"{KEPT} {values:,} values kept (cached_values), {READ} {inputs:,} "
                                "input/const scalars read (cached_inputs)"))
        lines.append(("cost", "1 reverse pass: the same counts as adcli grad with this --cotangent; "
                              "a row's ∂ work is its forward-sweep partials plus sending its adjoint on"))
        for name, g in trace.results.items():
            lines.append(("uᵀ·J", f"{name} = {preview(g)}"))
    for row in trace.rows:
        if row["op"] == "loop" and "count" in row:
            count = row["count"]
            between = "" if count == 2 else \
                f", the {count - 2:,} between in one row (⋮) with their work summed"
            lines.append(("loop", f"{row['var']} runs its body {count:,} times: rows {row['var']}.1, "
                                  f"{row['var']}.2, … are its nodes; the first and last iterations are "
                                  f"shown{between}"))
    if len(trace.rows) > MAX_TABLE_ROWS:
        lines.append(("rows", f"{len(trace.rows):,} rows: the first and last {MAX_TABLE_ROWS // 2} are "
                              "shown; --full shows all, --json gives all as data"))
    arrays = [row_name(r) for r in trace.in_evaluation_order() if len(r["shape"]) > 0 and not r.get("kind")]
    if arrays:
        example = arrays[-1]
        lines.append(("arrays", f"vectors and matrices are shown elided; --full shows all, --node "
                                f"{example} one node in full"))
    return lines


def _footer(trace) -> Table:
    grid = Table.grid(padding=(0, 2, 0, 0))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    for label, text in _footer_lines(trace):
        _add(grid, label, text)
    return grid


def render_trace(trace, full: bool = False):
    out = console()
    title = f"adcli trace ({trace.mode} mode{', dual numbers' if trace.dual else ''})"
    parts = trace_tables(trace, full, out.width) or node_blocks(trace, full)
    out.print(Group(_header(trace, title), *parts, Text(""), _footer(trace)))


def render_node(trace, var: str):
    """One node in full."""
    row = trace.row(var)
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    _add(grid, "expression", f"{row['var']} = {row['expression']}")
    if row["source"]:
        _add(grid, "source", source_text(row))
    _add(grid, "shape", shape_text(row))
    _add(grid, "value", preview(row["value"], True))
    if trace.mode == "forward":
        if row["partials"]:
            _add(grid, "local partials", _partials_text(row, True))
        if row["tangent_text"]:
            _add(grid, "tangent from", _tangent_from(row))
        for k, (seed, t) in enumerate(zip(trace.seeds, row["tangents"])):
            label = f"tangent ({seed['label']})" if len(trace.seeds) > 1 else "tangent"
            _add(grid, label, preview(t, True))
        if trace.dual:
            _add(grid, "dual", _dual_text(row, True))
    else:
        kept = kept_text(row)
        if kept:
            _add(grid, "kept", kept)
        _add(grid, "adjoint", preview(row["adjoint"], True) if row["needed"] else "— (not needed)")
        if row["adjoint_text"]:
            _add(grid, "computed as", _computed_as(row))
    _add(grid, "mults f + ∂", work(row, "mults"))
    _add(grid, "flops f + ∂", work(row, "flops"))
    console().print(Panel(grid, title=f"{row['var']} ({trace.mode} mode)", title_align="left", expand=False))


def render_lines(lines: list):
    out = console()
    for line in lines:
        out.print(Text(line), overflow="ignore", crop=False)
