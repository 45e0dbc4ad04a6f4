"""Rich rendering of results for a terminal (imported only when printing text)."""
from __future__ import annotations

import os
import sys

import numpy as np
from rich import box
from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from .decide import seconds
from .ir import element_labels, format_shape

MAX_ROWS, MAX_COLUMNS = 12, 8


class _Stdout:
    """sys.stdout (whichever it is when written), written in pieces of 64 KiB, each flushed: one
    large write into a pipe whose reader left (`| head`) loses the rest silently, the next
    write fails, and adcli ends with status 141 as cat does."""

    def write(self, text: str) -> int:
        step = 1 << 16
        for start in range(0, len(text), step):
            sys.stdout.write(text[start:start + step])
            sys.stdout.flush()
        return len(text)

    def __getattr__(self, name):
        return getattr(sys.stdout, name)


class _Console(Console):
    def on_broken_pipe(self) -> None:
        """A closed pipe (`adcli ... | head`) goes back to adcli.cli, which ends quietly with
        status 141 as cat does; Rich's own handling would exit 1."""
        self.quiet = True
        raise BrokenPipeError


def console() -> Console:
    # Rich turns styles off when stdout is not a terminal. Rich's own NO_COLOR
    # handling drops colours but keeps bold and dim; NO_COLOR here means no
    # escape codes at all.
    if os.environ.get("NO_COLOR", ""):
        return _Console(highlight=False, soft_wrap=False, color_system=None, file=_Stdout())
    return _Console(highlight=False, soft_wrap=False, file=_Stdout())


def number(value: float) -> str:
    if not np.isfinite(value):
        return str(value)
    if value == 0:
        return "0"
    if abs(value) >= 1e6 or abs(value) < 1e-4:
        return f"{value:.6e}"
    return f"{value:.10g}"


def count(value) -> str:
    return "—" if value is None else f"{value:,}"


def human_bytes(n) -> str:
    from .api import _bytes

    return "—" if n is None else _bytes(n)


def _pick(total: int, limit: int, full: bool) -> list:
    """Indices to show, with None marking an elided run."""
    if full or total <= limit:
        return list(range(total))
    head = (limit + 1) // 2
    tail = limit - head
    return list(range(head)) + [None] + list(range(total - tail, total))


def _cell_width(texts) -> int:
    from rich.cells import cell_len

    return max((cell_len(t) for t in texts), default=0)


def jacobian_table(result, full: bool, width: int = 80, name: str | None = None, row_labels=None,
                   column_labels=None):
    """The Jacobian, elided to fit `width` columns of text, under a title line of its own
    (a table's title would wrap to the table's width). One row (a gradient, a VJP) is
    printed as that 1×n row where all of it fits, else as a column whose heading says it
    is the gradient (the row, turned): the orientation is never left to guess.
    Returns (renderable, note)."""
    from rich.console import Group

    row_names = result.rows if row_labels is None else row_labels
    column_names = result.columns if column_labels is None else column_labels
    m, n = result.shape   # entries are read from the blocks: J itself is never assembled here
    name = name or {"jacobian": "Jacobian", "jvp": "JVP  J·v", "vjp": "VJP  uᵀ·J"}[result.kind]
    table = Table(box=box.SIMPLE_HEAD)
    table.add_column("", style="bold cyan", no_wrap=True)
    if m == 1 and n > 1:
        labels = [column_names[j] for j in range(min(n, MAX_COLUMNS + 1))]
        cells = [number(result.entry(0, j)) for j in range(len(labels))]
        row_width = (_cell_width([row_names[0]]) + 2
                     + sum(max(_cell_width([a]), _cell_width([b])) + 3 for a, b in zip(labels, cells)))
        if n <= MAX_COLUMNS and row_width <= width:   # the whole row fits: print it as it is
            title = f"{name}  (1×{n})" + (f": one row, the gradient of {row_names[0]}"
                                           if result.kind == "jacobian" else "")
            for label in labels:
                table.add_column(label, justify="right", no_wrap=True)
            table.add_row(row_names[0], *cells)
            return Group(Text(title), table), ""
        rows = _pick(n, MAX_ROWS, full)
        if result.kind == "jacobian":
            title = (f"Gradient of {row_names[0]}: the 1×{n} Jacobian's one row, printed as a "
                     "column")
            heading = "gradient"
        else:
            title = f"{name}  (1×{n}): its one row, printed as a column"
            heading = "uᵀ·J"
        table.add_column(heading, justify="right", no_wrap=True)
        for j in rows:
            if j is None:
                table.add_row("⋮", "⋮")
            else:
                table.add_row(column_names[j], number(result.entry(0, j)))
        note = "" if len(rows) == n else f"showing {len(rows) - 1} of {n} entries; --full shows all"
        return Group(Text(title), table), note
    label_width = max((len(row_names[i]) for i in range(min(m, 50))), default=1)
    fitting = max(2, (width - label_width - 4) // 16)   # a number takes up to ~15 characters
    rows = _pick(m, MAX_ROWS, full)
    cols = _pick(n, min(MAX_COLUMNS, fitting), full)
    for j in cols:
        table.add_column("…" if j is None else column_names[j], justify="right", no_wrap=True)
    for i in rows:
        if i is None:
            table.add_row("⋮", *["⋱" if j is None else "⋮" for j in cols])
            continue
        table.add_row(row_names[i], *["…" if j is None else number(result.entry(i, j)) for j in cols])
    note = ""
    if len(rows) < m or len(cols) < n:
        note = (f"showing {sum(r is not None for r in rows)} of {m} rows and "
                f"{sum(c is not None for c in cols)} of {n} columns; --full shows all")
    return Group(Text(f"{name}  ({m}×{n})"), table), note


def cost_table(cost, mode: str, kind: str = "jacobian") -> Table:
    table = Table(box=box.SIMPLE, show_header=True, header_style="bold")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_column("meaning", style="dim")
    direction = "input" if mode == "forward" else "output"
    times = cost.time_s or {}
    predicted = cost.predicted or {}
    rows = [
        ("passes", count(cost.passes), f"one per {direction} scalar" if kind == "jacobian" else
         f"the one given {'direction' if kind == 'jvp' else 'cotangent'}"),
        ("sweeps", count(cost.sweeps), f"≤ {count(cost.chunk)} direction{'s' if cost.chunk != 1 else ''} each"),
        ("primal sweeps", count(cost.primal_sweeps), "evaluations of f"),
        ("mults: derivative", count(cost.mults_derivative), "× and ÷ building derivatives"),
        ("mults: primal", count(cost.mults_primal), "× and ÷ evaluating f"),
        ("flops: derivative", count(cost.flops_derivative), "all arithmetic, derivatives"),
        ("flops: primal", count(cost.flops_primal), "all arithmetic, evaluating f"),
        ("cached values", count(cost.cached_values), "kept for the backward sweep" if cost.checkpoints is None
         else "most kept at once: saved states, a step's residuals"),
        ("cached inputs", count(cost.cached_inputs), "inputs/consts it reads"),
        ("peak live values", count(cost.peak_live_values), "most scalars alive at once"),
        ("array operations", count(cost.ops), "primal and derivative"),
        ("values moved", count(cost.values_moved), "scalars they read and wrote"),
        ("peak bytes", human_bytes(cost.peak_bytes), "measured, during the sweeps"),
        ("  predicted", human_bytes(predicted.get("peak_bytes")), "from the graph, before running"),
        ("time: sweeps", seconds(times.get("sweeps") or 0), "wall clock"),
        ("  predicted", "—" if predicted.get("time_s") is None else seconds(predicted["time_s"]),
         "machine model"),
        ("time: parse, build", f"{times.get('parse', 0):.4f} s, {times.get('build', 0):.4f} s", ""),
    ]
    if cost.checkpoints is not None:   # after the mults: what the saved memory cost
        rows.insert(5, ("recomputed steps", count(cost.recomputed_steps),
                        f"loop steps run again, ≤ {count(cost.checkpoints)} states kept per loop"))
    for row in rows:
        table.add_row(*row)
    return table


MATRIX_ROWS, MATRIX_COLUMNS = 6, 6   # of a matrix-valued output in the value table


def matrix_text(value: np.ndarray, full: bool = False, width: int = 80) -> str:
    """A matrix as its rows, one line each, numbers aligned in columns, elided as the
    Jacobian is (⋮ for rows, … for columns) to lines of at most `width` characters;
    --full shows all."""
    rows = _pick(value.shape[0], MATRIX_ROWS, full)
    limit = value.shape[1] if full else MATRIX_COLUMNS
    while True:
        cols = _pick(value.shape[1], limit, full and limit == value.shape[1])
        cells = [["…" if j is None else number(value[i, j]) for j in cols] for i in rows if i is not None]
        widths = [_cell_width(column) for column in zip(*cells)]
        length = 4 + sum(widths) + 2 * (len(widths) - 1)
        if length <= width or limit <= 2:
            break
        limit -= 1
    lines, it = [], iter(cells)
    for k, i in enumerate(rows):
        if i is None:
            lines.append(" ⋮".ljust(length))
            continue
        text = ", ".join(cell.rjust(w) for cell, w in zip(next(it), widths))
        lines.append(("[[" if k == 0 else " [") + text + ("]]" if k == len(rows) - 1 else "],"))
    return "\n".join(lines)


def value_table(program, result, full: bool = False, width: int = 80) -> Table:
    """One row per output: its shape and value; a matrix printed as its rows."""
    table = Table(box=box.SIMPLE_HEAD, title="Value", title_justify="left")
    table.add_column("output", style="bold cyan")
    table.add_column("shape")
    table.add_column("value", justify="right")
    names = list(result.value)
    room = width - _cell_width(names + ["output"]) - _cell_width(
        [format_shape(np.shape(v)) for v in result.value.values()] + ["shape"]) - 7
    texts = {}
    for name, value in result.value.items():
        value = np.asarray(value)
        if value.ndim == 2 and value.size:
            texts[name] = matrix_text(value, full, room)
        elif value.size <= 6:
            text = ", ".join(number(v) for v in value.reshape(-1))
            texts[name] = text if value.ndim == 0 else f"[{text}]"
        else:
            flat = value.reshape(-1)
            texts[name] = "[" + ", ".join(number(v) for v in flat[:3]) + ", …, " + number(flat[-1]) + "]"
    column = _cell_width([line for text in texts.values() for line in text.split("\n")] + ["value"])
    for name, value in result.value.items():
        text = texts[name]
        if "\n" in text:   # a matrix's rows: a block set right as a whole (its ⋮ line is short)
            text = Text("\n".join(line.rjust(column) for line in text.split("\n")), justify="left")
        table.add_row(name, format_shape(np.shape(value)), text)
    return table


def render_derivative(program, result, full=False, summary=False, saved=None):
    out = console()
    graph = program.graph
    header = Table.grid(padding=(0, 2))
    header.add_column(style="bold")
    header.add_column()
    header.add_row("file", graph.filename)
    mode = result.mode + (f"  ({result.note})" if result.note else "")
    header.add_row("mode", mode)
    header.add_row("backend", f"{result.backend} on {result.device}, {result.dtype}")
    header.add_row("inputs", ", ".join(f"{w}: {format_shape(program.input_shape(w))}" for w in result.wrt))
    header.add_row("outputs", ", ".join(f"{o}: {format_shape(program.output_shape(o))}"
                                        for o in program.output_names))
    if result.chunk_note:
        header.add_row("chunk", result.chunk_note)
    out.print(Panel(header, title=f"adcli grad ({result.kind})", title_align="left", expand=False))
    out.print(value_table(program, result, full, out.width))
    if summary:
        m, n = result.shape
        out.print(Text(f"{'Jacobian' if result.kind == 'jacobian' else result.kind.upper()}: {m}×{n} "
                       "(not printed: --summary)"))
    else:
        table, note = jacobian_table(result, full, out.width)
        out.print(table)
        if note:
            out.print(Text(note, style="dim"))
    if saved:
        out.print(Text(f"saved the {result.shape[0]}×{result.shape[1]} Jacobian to {saved}"))
    out.print(Panel(cost_table(result.cost, result.mode, result.kind), title=f"cost ({result.mode} mode)",
                    title_align="left", expand=False))


def render_hessian(program, hessian, full=False):
    """adcli hessian: the value, the gradient, the Hessian (or H·v), the check against
    differences of the gradient, and the cost of the forward-over-reverse run."""
    out = console()
    result = hessian.result
    header = Table.grid(padding=(0, 2))
    header.add_column(style="bold")
    header.add_column()
    header.add_row("file", program.graph.filename)
    how = ("forward over reverse: one forward pass per input scalar through the gradient's nodes"
           if result.mode == "forward" else "reverse over reverse: one reverse pass per gradient element")
    header.add_row("mode", "forward over reverse: one Hessian-vector product" if result.kind == "jvp" else how)
    header.add_row("backend", f"{result.backend} on {result.device}, {result.dtype}")
    header.add_row("output", f"{hessian.output}: scalar")
    header.add_row("inputs", ", ".join(f"{w}: {format_shape(program.input_shape(w))}" for w in hessian.wrt))
    out.print(Panel(header, title=f"adcli hessian ({'H·v' if result.kind == 'jvp' else 'Hessian'})",
                    title_align="left", expand=False))
    out.print(Text(f"Value  {hessian.output} = {number(float(hessian.value))}"))
    gradient = Table(box=box.SIMPLE_HEAD)
    gradient.add_column("", style="bold cyan", no_wrap=True)
    gradient.add_column("gradient", justify="right", no_wrap=True)
    labels = [label for w in hessian.wrt for label in element_labels(w, program.input_shape(w))]
    values = np.concatenate([np.asarray(hessian.gradient[w]).reshape(-1) for w in hessian.wrt])
    picked = _pick(len(labels), MAX_ROWS, full)
    for i in picked:
        gradient.add_row(*(("⋮", "⋮") if i is None else (labels[i], number(values[i]))))
    out.print(Text(f"Gradient of {hessian.output}"))
    out.print(gradient)
    name = "Hessian-vector product  H·v" if result.kind == "jvp" else "Hessian"
    # rows are the gradient's elements, d<output>/d<input>[i]: labelled as the inputs' elements
    # (H is symmetric), which are shorter
    table, note = jacobian_table(result, full, out.width, name=name, row_labels=labels,
                                 column_labels=["H·v"] if result.kind == "jvp" else None)
    out.print(table)
    if note:
        out.print(Text(note, style="dim"))
    check = hessian.check
    if check["skipped"]:
        out.print(Text(f"central differences of the gradient: {check['skipped']}", style="yellow"))
    else:
        verdict = "agrees" if check["agrees"] else "DISAGREES"
        out.print(Text(f"central differences of the gradient ({check['evaluations']} evaluations): {verdict}, "
                       f"relative error {check['relative_error']:.1e} (tolerance {check['tolerance']:g})"))
    out.print(Panel(cost_table(result.cost, result.mode, result.kind),
                    title=f"cost ({result.mode} mode over the gradient's nodes)", title_align="left",
                    expand=False))
