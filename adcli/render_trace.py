"""Rich rendering of traces, IR listings and text graphs (imported only when printing text)."""
from __future__ import annotations

import numpy as np
from rich import box
from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from .ir import format_shape
from .render import console
from .show import fmt_number
from .trace import bar_var, dot_var, epsilon

PREVIEW_ITEMS = 3
MAX_TABLE_ROWS = 300   # longer traces show their first and last rows unless --full
KEPT, READ = "●", "○"


# -- values ----------------------------------------------------------------------------------------

def _short(x) -> str:
    x = float(x)
    if x != x or x in (float("inf"), float("-inf")):
        return fmt_number(x)
    if x == int(x) and abs(x) < 1e6:
        return str(int(x))
    return f"{x:.6g}"


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


SOURCE_WIDTH = 40


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
    grid.add_column(style="bold")
    grid.add_column()
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


# -- tables ----------------------------------------------------------------------------------------------

def _partials_text(row, full) -> str:
    parts = []
    for p in row["partials"]:
        value = p["value"]
        head = f"∂/∂{p['wrt']}: {p['text']}"
        if value is None:
            parts.append(head)
            continue
        shown = preview(value, full)
        parts.append(head if shown == p["text"] else f"{head} = {shown}")
    return "\n".join(parts)


def forward_table(trace, full: bool) -> Table:
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    table.add_column("var", style="bold cyan", no_wrap=True)
    table.add_column("= expression", no_wrap=True)
    table.add_column("source", style="dim")
    if trace.dual:
        table.add_column("dual value  a + b" + ("ε" if len(trace.seeds) == 1 else "ε₁ + …"))
    else:
        table.add_column("shape", no_wrap=True)
        table.add_column("value", justify="right")
        table.add_column("local partials")
        table.add_column("tangent from")
        for k, seed in enumerate(trace.seeds):
            table.add_column(f"v̇  ({seed['label']})" if len(trace.seeds) > 1 else "tangent v̇",
                             justify="right")
    for row in _rows_with_costs(table, trace, full):
        cells = [row["var"], row["expression"], source_text(row, full)]
        if trace.dual:
            cells.append(preview(np.asarray(row["dual"], dtype=object), full)
                         if isinstance(row["dual"], list) else row["dual"])
        else:
            cells += [shape_text(row), preview(row["value"], full), _partials_text(row, full),
                      _tangent_from(row)]
            cells += [preview(t, full) for t in row["tangents"]]
        cells += [work(row, "mults"), work(row, "flops")]
        _add(table, *cells)
    return table


def shown_rows(trace, full: bool) -> list:
    """The rows to draw; None marks the elided middle of a long trace."""
    rows = trace.rows
    if full or len(rows) <= MAX_TABLE_ROWS:
        return list(rows)
    half = MAX_TABLE_ROWS // 2
    return rows[:half] + [None] + rows[-half:]


def _rows_with_costs(table, trace, full):
    """Add the cost columns, then yield the rows to show (elided runs drawn here)."""
    table.add_column("mults f + ∂", justify="right", no_wrap=True)
    table.add_column("flops f + ∂", justify="right", no_wrap=True)
    for row in shown_rows(trace, full):
        if row is None:
            _elided(table, trace, len(table.columns))
        else:
            yield row


def _elided(table, trace, columns: int):
    hidden = len(trace.rows) - MAX_TABLE_ROWS
    _add(table, "⋮", f"{hidden:,} more rows", *[""] * (columns - 2))


def _tangent_from(row) -> str:
    text = row["tangent_text"]
    return f"{dot_var(row['var'])} = {text}" if text else ""


def reverse_table(trace, full: bool) -> Table:
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    table.add_column("var", style="bold cyan", no_wrap=True)
    table.add_column("= expression", no_wrap=True)
    table.add_column("source", style="dim")
    table.add_column("shape", no_wrap=True)
    table.add_column("value", justify="right")
    table.add_column("kept for the backward sweep")
    table.add_column("adjoint v̄", justify="right")
    table.add_column("computed as")
    for row in _rows_with_costs(table, trace, full):
        adjoint = preview(row["adjoint"], full) if row["needed"] else "—"
        text = f"{bar_var(row['var'])} = {row['adjoint_text']}" if row["adjoint_text"] else ""
        _add(table, row["var"], row["expression"], source_text(row, full), shape_text(row),
                      preview(row["value"], full), kept_text(row), adjoint, text,
                      work(row, "mults"), work(row, "flops"))
    return table


def kept_text(row) -> str:
    cached = row["cached"]
    parts = []
    if cached["value"] == "intermediate":
        parts.append(f"{KEPT} value")
    elif cached["value"] == "input":
        parts.append(f"{READ} read")
    parts.extend(f"{KEPT} {p['text']}" for p in cached["partials"])
    return ", ".join(parts)


# -- the footer ---------------------------------------------------------------------------------------------

def _footer(trace) -> list:
    totals = trace.totals()
    cost = trace.cost
    lines = []
    m, f = totals["mults"], totals["flops"]
    lines.append(f"totals  mults {m['primal']:,} + {m['derivative']:,}, flops {f['primal']:,} + "
                 f"{f['derivative']:,}  (f: evaluating the function, ∂: building the derivative)")
    if trace.mode == "forward":
        if len(trace.seeds) == 1:
            lines.append(f"cost    {cost.passes} forward pass: the same counts as adcli grad with this "
                         "--direction")
        else:
            lines.append(f"cost    {cost.passes} forward passes, one per seed: the counts add up the "
                         "passes (adcli grad --direction runs one)")
        for name, ts in trace.results.items():
            shown = ", ".join(preview(t) for t in ts)
            lines.append(f"J·v     {name} = {shown}")
    else:
        values, inputs = trace.cached_marks()
        lines.append(f"cached  {KEPT} {values:,} values kept (cached_values), {READ} {inputs:,} "
                     "input/const scalars read (cached_inputs)")
        lines.append("cost    1 reverse pass: the same counts as adcli grad with this --cotangent; "
                     "a row's ∂ work is its forward-sweep partials plus sending its adjoint on")
        for name, g in trace.results.items():
            lines.append(f"uᵀ·J    {name} = {preview(g)}")
    if len(trace.rows) > MAX_TABLE_ROWS:
        lines.append(f"{len(trace.rows):,} rows: the first and last {MAX_TABLE_ROWS // 2} are shown; "
                     "--full shows all, --json gives all as data")
    arrays = [r["var"] for r in trace.rows if len(r["shape"]) > 0]
    if arrays:
        example = max(arrays, key=lambda var: int(var[1:]))
        lines.append(f"vectors and matrices are shown elided; --full shows all, --node {example} one "
                     "node in full")
    return [Text(line) for line in lines]


def render_trace(trace, full: bool = False):
    title = f"adcli trace ({trace.mode} mode{', dual numbers' if trace.dual else ''})"
    table = forward_table(trace, full) if trace.mode == "forward" else reverse_table(trace, full)
    caption = Text("rows in the order the backward sweep fills the adjoints" if trace.mode == "reverse"
                   else "rows in evaluation order", style="dim")
    _print(Group(_header(trace, title), caption, table, Text(""), *_footer(trace)))


def render_node(trace, var: str):
    """One node in full."""
    row = trace.row(var)
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
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
            dual = row["dual"]
            _add(grid, "dual", preview(np.asarray(dual, dtype=object), True) if isinstance(dual, list) else dual)
    else:
        kept = kept_text(row)
        if kept:
            _add(grid, "kept", kept)
        _add(grid, "adjoint", preview(row["adjoint"], True) if row["needed"] else "— (not needed)")
        if row["adjoint_text"]:
            _add(grid, "computed as", f"{bar_var(row['var'])} = {row['adjoint_text']}")
    _add(grid, "mults f + ∂", work(row, "mults"))
    _add(grid, "flops f + ∂", work(row, "flops"))
    _print(Panel(grid, title=f"{row['var']} ({trace.mode} mode)", title_align="left", expand=False))


def render_lines(lines: list):
    out = console()
    for line in lines:
        out.print(Text(line), overflow="ignore", crop=False)


def _print(renderable):
    out = console()
    if not out.is_terminal:   # a file or a pipe: as wide as the table needs, never wrapped
        from rich.measure import Measurement

        wide = out.options.update(width=100_000, max_width=100_000)
        out.width = max(out.width, Measurement.get(out, wide, renderable).maximum)
    out.print(renderable)
