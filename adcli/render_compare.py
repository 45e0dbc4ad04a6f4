"""Rich rendering of `adcli compare`: the method table, the recommendation,
theory next to measurement, scaling tables and a terminal chart."""
from __future__ import annotations

from math import log10

from rich import box
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from .compare import FIGURES, METHODS
from .render import console, count, human_bytes

def compact(value) -> str:
    """17,371,136 → 17.4M: for tables with a column per method and backend."""
    if value is None:
        return "—"
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e4)):
        if abs(value) >= size:
            return f"{value / (1e3 if unit == 'k' else size):.3g}{unit}"
    return f"{value:,}"


def seconds(t) -> str:
    if t is None:
        return "—"
    return f"{t:,.2f} s" if t >= 1 else f"{t * 1e3:,.3f} ms"


COST_ROWS = [
    ("passes", "passes", count),
    ("sweeps", "sweeps", count),
    ("derivative mults", "derivative mults", count),
    ("derivative flops", "derivative flops", count),
    ("primal flops", "primal flops", count),
    ("cached values", "cached values", count),
    ("peak live values", "peak live values", count),
    ("peak bytes (measured)", "peak bytes", human_bytes),
    ("  predicted", "predicted peak bytes", human_bytes),
    ("time (median)", "time", seconds),
    ("  predicted", "predicted time", seconds),
]
SHORT = {"forward": "F", "reverse": "R", "central differences": "D"}
COLOURS = {"forward": "cyan", "reverse": "magenta", "central differences": "yellow"}


def method_table(comparison) -> Table:
    # a method skipped everywhere gets no column (the note below the table says why)
    ran = {run.name for run in comparison.runs.values() if not run.skipped}
    runs = {label: run for label, run in comparison.runs.items() if run.name in ran or not ran}
    table = Table(box=box.SIMPLE_HEAD, title=f"{comparison.file}: f: R^{comparison.n} → R^{comparison.m}",
                  title_justify="left")
    table.add_column("", no_wrap=True)
    wide = len(runs) > 3   # several backends: shorter numbers, backend on a second header line
    for name in runs:
        header = name.replace("central differences", "central diff.").replace(" (", "\n(")
        table.add_column(header, justify="right", no_wrap=True)
    for label, figure, fmt in COST_ROWS:
        if wide and fmt is count:
            fmt = compact
        values = {name: run.figure(figure) for name, run in runs.items()}
        present = [v for v in values.values() if v is not None]
        best = min(present) if present else None
        cells = []
        for name, run in runs.items():
            value = values[name]
            if run.skipped:
                cells.append(Text("skipped", style="dim"))
            elif value is not None and value == best and len(present) > 1:
                cells.append(Text(fmt(value) + " ◂", style="bold green"))
            else:
                cells.append(Text(fmt(value)))
        table.add_row(label, *cells)
    for reference in ("reverse", "forward"):
        for key, label in (("max_abs", "abs"), ("max_rel", "rel")):
            cells = [Text("—", style="dim") if reference not in run.accuracy
                     else _accuracy_cell(run.accuracy[reference], key) for run in runs.values()]
            if any(reference in run.accuracy for run in runs.values()):
                table.add_row(f"max {label} diff vs {reference}", *cells)
    return table


def _accuracy_cell(entry, key) -> Text:
    """A difference, marked ✗ (visible without colour) beyond the documented tolerance."""
    if entry.get("within_tolerance", True):
        return Text(f"{entry[key]:.1e}")
    return Text(f"{entry[key]:.1e} ✗", style="bold red")


def theory_table(theory) -> Table:
    table = Table(box=box.SIMPLE, show_header=True, title="Theory next to measurement (forward ÷ reverse)",
                  title_justify="left")
    table.add_column("ratio")
    table.add_column("rule of thumb", justify="right")
    table.add_column("measured", justify="right")

    def fmt(x):
        return "—" if x is None else f"{x:,.3g}"

    table.add_row("passes (n ÷ m)", fmt(theory["predicted_pass_ratio"]), fmt(theory["measured_pass_ratio"]))
    table.add_row("derivative mults", fmt(theory["predicted_pass_ratio"]), fmt(theory["measured_mult_ratio"]))
    table.add_row("time", fmt(theory["predicted_pass_ratio"]), fmt(theory["measured_time_ratio"]))
    return table


def render_comparison(comparison):
    out = console()
    where = (f"{comparison.backend} on {comparison.device}" if "," not in comparison.backend else
             "; ".join(f"{b} on {d}" for b, d in zip(comparison.backend.split(", "),
                                                     comparison.device.split(", "))))
    out.print(Panel(Text(f"{where}, {comparison.dtype}; "
                         f"wrt {', '.join(comparison.wrt)}; times are the median of {comparison.repeat} "
                         "run(s); the cheapest entry of each row is marked ◂"),
                    title="adcli compare", title_align="left", expand=False))
    out.print(method_table(comparison))
    for name, run in comparison.runs.items():
        if run.skipped:
            out.print(Text(f"{name}: {run.skipped}", style="dim"))
    message = comparison.agreement.get("message")
    if message:
        out.print(Text(f"✗ {message}", style="bold red"))
    rec = comparison.recommendation
    title = f"recommendation: {rec['mode']}" if rec["mode"] else "recommendation: none"
    out.print(Panel(Text(rec["reason"]), title=title, title_align="left"))
    out.print(theory_table(comparison.theory))
    out.print(Text(comparison.theory["rule"], style="dim"))


def render_sweep(sweep):
    out = console()
    out.print(Panel(Text(f"scaling with {sweep.name} = {', '.join(map(str, sweep.values))}"),
                    title="adcli compare --scale", title_align="left", expand=False))
    for method in METHODS:
        table = Table(box=box.SIMPLE_HEAD, title=method, title_justify="left")
        table.add_column(sweep.name, justify="right")
        for figure in FIGURES:
            table.add_column(figure, justify="right")
        for value, comparison, note in sweep.points:
            if comparison is None or comparison.runs[method].skipped:
                table.add_row(str(value), *["skipped"] * len(FIGURES), style="dim")
                continue
            run = comparison.runs[method]
            cells = []
            for figure in FIGURES:
                v = run.figure(figure)
                cells.append(human_bytes(v) if figure == "peak bytes" else
                             ("—" if v is None else f"{v * 1e3:,.3f} ms") if figure == "time" else count(v))
            table.add_row(str(value), *cells)
        out.print(table)
    slopes = Table(box=box.SIMPLE_HEAD, title=f"fitted log-log slopes: figure ~ {sweep.name}^slope",
                   title_justify="left")
    slopes.add_column("figure")
    for method in METHODS:
        slopes.add_column(method, justify="right")
    for figure in FIGURES:
        cells = []
        for method in METHODS:
            s = sweep.slopes[method][figure]
            cells.append("—" if s is None else f"{s:.2f}")
        slopes.add_row(figure, *cells)
    out.print(slopes)
    for figure in ("derivative mults", "cached values"):
        out.print(text_chart(sweep, figure))
    for note in sweep.notes:
        out.print(Text(note, style="dim"))


def text_chart(sweep, figure, width: int = 56, height: int = 12) -> Panel:
    """A log-log scatter of one figure against the swept dim, in characters."""
    series = {m: [(x, y) for x, y in zip(*sweep.series(m, figure)) if y and y > 0] for m in METHODS}
    points = [p for pts in series.values() for p in pts]
    if not points:
        return Panel(Text(f"{figure}: nothing positive to plot"), expand=False)
    xs = [log10(p[0]) for p in points]
    ys = [log10(p[1]) for p in points]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    grid = [[(" ", None)] * width for _ in range(height)]
    for method, pts in series.items():
        for x, y in pts:
            col = 0 if x1 == x0 else round((log10(x) - x0) / (x1 - x0) * (width - 1))
            row = height // 2 if y1 == y0 else round((log10(y) - y0) / (y1 - y0) * (height - 1))
            cell = grid[height - 1 - row][col]
            mark = SHORT[method] if cell[0] == " " else "*"
            grid[height - 1 - row][col] = (mark, COLOURS[method] if mark != "*" else "bold")
    text = Text()
    top, bottom = 10 ** y1, 10 ** y0
    for i, row in enumerate(grid):
        label = f"{top:>10.3g} ┤" if i == 0 else f"{bottom:>10.3g} ┤" if i == height - 1 else " " * 11 + "│"
        text.append(label)
        for char, style in row:
            text.append(char, style=style)
        text.append("\n")
    text.append(" " * 11 + "└" + "─" * width + "\n")
    left, right = f"{10 ** x0:g}", f"{10 ** x1:g}"
    text.append(" " * 12 + left + " " * max(width - len(left) - len(right), 1) + right + "\n")
    legend = "  ".join(f"{SHORT[m]} = {m}" for m in METHODS) + "  * = overlap"
    text.append(" " * 12 + legend, style="dim")
    return Panel(text, title=f"{figure} vs {sweep.name} (log-log)", title_align="left", expand=False)
