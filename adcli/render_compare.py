"""Rich rendering of `adcli compare`: the method table, the recommendation,
theory next to measurement, scaling tables and a terminal chart."""
from __future__ import annotations

from math import log10

from rich import box
from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from .compare import FIGURES, METHODS, label
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
    if t >= 60:   # a minute or more in min, h, days, years, as refusals say it
        from .decide import seconds as spoken

        return spoken(t)
    return f"{t:,.2f} s" if t >= 1 else f"{t * 1e3:,.3f} ms"


COST_ROWS = [   # (printed label, MethodRun.figure key, format)
    ("passes", "passes", count),
    ("sweeps", "sweeps", count),
    ("derivative mults", "derivative_mults", count),
    ("derivative flops", "derivative_flops", count),
    ("primal flops", "primal_flops", count),
    ("cached values", "cached_values", count),
    ("peak live values", "peak_live_values", count),
    ("peak bytes (measured)", "peak_bytes", human_bytes),
    ("  predicted", "predicted_peak_bytes", human_bytes),
    ("time (median)", "time_s", seconds),
    ("  predicted", "predicted_time_s", seconds),
]
SHORT = {"forward": "F", "reverse": "R", "central_differences": "D"}
COLOURS = {"forward": "cyan", "reverse": "magenta", "central_differences": "yellow"}
HEADERS = {"central_differences": "central diff."}


def method_table(comparison, backend: str | None = None) -> Table:
    """One column per method (and backend; only `backend`'s where given). The cheapest
    entry of each row is marked ◂, among the methods whose Jacobian agrees with the
    others: a method that disagrees beyond the tolerance (✗ in its header and its
    accuracy rows) is not ranked."""
    # a method skipped everywhere gets no column (the note below the table says why), unless
    # every method was: then the table keeps its columns, each "skipped"
    ran = {run.name for run in comparison.runs.values() if not run.skipped}
    runs = {key: run for key, run in comparison.runs.items()
            if (run.name in ran or not ran) and backend in (None, run.backend)}
    wrong = set(comparison.agreement.get("disagreeing") or ())
    title = f"{comparison.file}: f: R^{comparison.n} → R^{comparison.m}" + (f", on {backend}" if backend else "")
    table = Table(box=box.SIMPLE_HEAD, title=title, title_justify="left")
    table.add_column("", no_wrap=True)
    several = len({run.backend for run in runs.values()}) > 1
    wide = len(runs) > 3   # several backends: shorter numbers, backend on a second header line
    for run in runs.values():
        header = HEADERS.get(run.name, label(run.name)) + (" ✗" if run.name in wrong else "")
        table.add_column(header + (f"\n({run.backend})" if several else ""), justify="right", no_wrap=True)
    for row_label, figure, fmt in COST_ROWS:
        if wide and fmt is count:
            fmt = compact
        values = {key: run.figure(figure) for key, run in runs.items()}
        ranked = [v for key, v in values.items() if v is not None and runs[key].name not in wrong]
        best = min(ranked) if ranked else None
        cells = []
        for key, run in runs.items():
            value = values[key]
            if run.skipped:
                cells.append(Text("skipped", style="dim"))
            elif value is not None and value == best and len(ranked) > 1 and run.name not in wrong:
                cells.append(Text(fmt(value) + " ◂", style="bold green"))
            else:
                cells.append(Text(fmt(value)))
        table.add_row(row_label, *cells)
    for reference in ("reverse", "forward"):
        for key, label_ in (("max_abs", "abs"), ("max_rel", "rel")):
            cells = [Text("—", style="dim") if reference not in run.accuracy
                     else _accuracy_cell(run.accuracy[reference], key) for run in runs.values()]
            if any(reference in run.accuracy for run in runs.values()):
                table.add_row(f"max {label_} diff vs {reference}", *cells)
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


def frontier_table(comparison) -> Group:
    """Reverse mode through the loops keeping at most S states, for each S tried, and
    forward mode for contrast: memory against recomputation (docs/counting.md)."""
    table = Table(box=box.SIMPLE, header_style="bold",
                  title="reverse mode through loops: states kept against steps run again",
                  title_justify="left")
    for name in ("states\nkept", "recomputed\nsteps", "cached\nvalues", "peak bytes", "time"):
        table.add_column(name, justify="right", no_wrap=True)

    def pair(a, b, fmt):   # (on two lines: one line each cut the time column at 80 columns)
        return f"{fmt(a) if a is not None else '—'} /\n{fmt(b) if b is not None else '—'}"

    for point in comparison.frontier:
        states = "all" if point.checkpoints is None else count(point.checkpoints)
        table.add_row(states, count(point.recomputed_steps), count(point.cached_values),
                      pair(point.peak_bytes, point.predicted_peak_bytes, human_bytes),
                      pair(point.time_s, point.predicted_time_s, seconds))
    forward = comparison.run_of("forward")
    if forward is not None and forward.cost is not None:
        table.add_row(Text("forward", style=COLOURS["forward"]), "0", "0",
                      pair(forward.cost.peak_bytes, forward.cost.predicted.get("peak_bytes"), human_bytes),
                      pair(forward.time, forward.cost.predicted.get("time_s"), seconds))
    notes = [Text(f"{'every residual kept' if p.checkpoints is None else f'{p.checkpoints:,} states'}: "
                  f"{p.skipped}", style="dim") for p in comparison.frontier if p.skipped]
    notes.append(Text("peak bytes and time: measured / predicted (time: the median); "
                      "states kept S: each loop reversed keeping at most S saved states (binomial "
                      "checkpointing, adcli grad --checkpoints S); all: every step's residuals kept; "
                      "forward mode keeps nothing", style="dim"))
    return Group(table, *notes)


def render_comparison(comparison):
    out = console()
    where = (f"{comparison.backend} on {comparison.device}" if "," not in comparison.backend else
             "; ".join(f"{b} on {d}" for b, d in zip(comparison.backend.split(", "),
                                                     comparison.device.split(", "))))
    wrong = comparison.agreement.get("disagreeing") or []
    unranked = (f" among the methods that agree ({', '.join(label(m) for m in wrong)}: ✗, disagrees "
                "beyond the tolerance, so not ranked)" if wrong else "")
    out.print(Panel(Text(f"{where}, {comparison.dtype}; "
                         f"wrt {', '.join(comparison.wrt)}; times are the median of {comparison.repeat} "
                         f"run(s); the cheapest entry of each row is marked ◂{unranked}"),
                    title="adcli compare", title_align="left", expand=False))
    table = method_table(comparison)
    backends = list(dict.fromkeys(run.backend for run in comparison.runs.values()))
    several = len(backends) > 1
    if several:   # side by side where that fits, else a table per backend: never a cut number
        from rich.measure import Measurement

        wide = Measurement.get(out, out.options.update(width=10_000, max_width=10_000), table).maximum
        if wide > out.width:
            table = Group(*[method_table(comparison, b) for b in backends])
    out.print(table)
    for run in comparison.runs.values():
        if run.skipped:
            name = label(run.name) + (f" ({run.backend})" if several else "")
            out.print(Text(f"{name}: {run.skipped}", style="dim"))
    if comparison.frontier:
        out.print(frontier_table(comparison))
    message = comparison.agreement.get("message")
    if message:
        out.print(Text(f"✗ {message}", style="bold red"))
    rec = comparison.recommendation
    title = f"recommendation: {rec['mode']}" if rec["mode"] else "recommendation: none"
    out.print(Panel(Text(rec["reason"]), title=title, title_align="left"))
    out.print(theory_table(comparison.theory))
    out.print(Text(comparison.theory["rule"], style="dim"))
    for entry in comparison.contractions:
        out.print(contraction_table(entry))


def contraction_table(entry) -> Group:
    """An einsum's order of pairwise products, chosen for the fewest mults, beside the
    left-to-right order (the matrix-chain problem: the order decides the cost)."""
    head = Text(f'einsum("{entry["subscripts"]}") at {entry["file"]}:{entry["line"]}: the order of its products')
    table = Table(box=box.SIMPLE, show_header=True)
    table.add_column("")
    table.add_column("order")
    table.add_column("primal mults", justify="right")
    table.add_row("chosen", entry["order"], f"{entry['mults']:,}")
    table.add_row("left to right", entry["left_to_right_order"], f"{entry['left_to_right_mults']:,}")
    return Group(head, table)


def _sweep_cell(run, figure) -> str:
    v = run.figure(figure)
    return (human_bytes(v) if figure == "peak_bytes" else seconds(v) if figure == "time_s" else count(v))


def _fitted(cols, rows, width, title):
    """A table whose cells never wrap (only its headers do), fitted to the width; a plain
    Rich table where even that cannot fit."""
    from rich.console import Group

    from .render_trace import fitted_table

    table = fitted_table(cols, rows, width)
    if table is None:
        table = Table(box=box.SIMPLE_HEAD)
        for col in cols:
            table.add_column(col.header, justify=col.justify)
        for row in rows:
            table.add_row(*row)
    return Group(Text(title), table, Text(""))


def sweep_tables(sweep, width: int) -> list:
    """One table per method (its figures at each value), the recommendation at each value
    with the crossover, and the fitted slopes, each fitted to `width`."""
    from .render_trace import Col

    parts = []
    for method in METHODS:
        cols = [Col(sweep.name, justify="right", whole=True)]
        cols += [Col(label(f).replace(" ", "\n", 1) if f != "passes" else "passes", justify="right",
                     whole=True) for f in FIGURES]
        rows = []
        for value, comparison, _ in sweep.points:
            run = None if comparison is None else comparison.run_of(method)
            if run is None or run.skipped:
                rows.append([str(value)] + ["skipped"] * len(FIGURES))
            else:
                rows.append([str(value)] + [_sweep_cell(run, f) for f in FIGURES])
        parts.append(_fitted(cols, rows, width, label(method)))
    parts += recommendation_table(sweep, width)
    cols = [Col("figure")] + [Col(label(m).replace(" ", "\n", 1), justify="right", whole=True)
                              for m in METHODS]
    rows = [[label(f)] + ["—" if sweep.slopes[m][f] is None else f"{sweep.slopes[m][f]:.2f}" for m in METHODS]
            for f in FIGURES]
    parts.append(_fitted(cols, rows, width, f"fitted log-log slopes: figure ~ {sweep.name}^slope"))
    return parts


def recommendation_table(sweep, width: int) -> list:
    """The recommendation at each value (with the predicted times that decided it) and a
    sentence on where it changes."""
    from .render_trace import Col

    cols = [Col(sweep.name, justify="right", whole=True), Col("forward\npredicted", justify="right", whole=True),
            Col("reverse\npredicted", justify="right", whole=True), Col("recommended", whole=True),
            Col("note", wrap=True, floor=20)]
    rows = []
    for value, comparison, note in sweep.points:
        if comparison is None:
            rows.append([str(value), "—", "—", "—", note or ""])
            continue
        rec = comparison.recommendation
        modes = (rec.get("predicted") or {}).get("modes") or {}
        times = [seconds(modes.get(m, {}).get("time_s")) if modes.get(m, {}).get("fits") else "does not fit"
                 for m in ("forward", "reverse")]
        remark = []
        if rec.get("disagreement"):
            remark.append("measured times contradict the prediction")
        if rec.get("mismatch"):
            remark.append("forward and reverse disagree")
        rows.append([str(value), *times, rec.get("mode") or "none", "; ".join(remark)])
    if not any(row[4] for row in rows):
        cols, rows = cols[:4], [row[:4] for row in rows]
    parts = [_fitted(cols, rows, width, f"recommendation at each {sweep.name}")]
    parts.append(Text(crossover_text(sweep)))
    parts.append(Text(""))
    return parts


def crossover_text(sweep) -> str:
    """'crossover: forward up to n=10, reverse from n=100 on' (every change), or that there is none."""
    done = sweep.recommended()
    if not done:
        return "crossover: none (no value ran)"
    name = sweep.name
    changes = sweep.crossovers()
    if not changes:
        mode = done[0][1] or "no mode"
        return (f"no crossover: {mode} is recommended at every {name} tried "
                f"({done[0][0]} to {done[-1][0]})")
    pieces = []
    for k, change in enumerate(changes):
        a, b = change["between"]
        pieces.append(f"{change['from'] or 'no mode'} up to {name}={a}, {change['to'] or 'no mode'} from "
                      f"{name}={b}" + (" on" if k == len(changes) - 1 else ""))
    untried = any(c["between"][1] - c["between"][0] > 1 for c in changes)
    return "crossover: " + "; then ".join(pieces) + (" (the exact point lies between the values tried)"
                                                     if untried else "")


def render_sweep(sweep):
    out = console()
    out.print(Panel(Text(f"scaling with {sweep.name} = {', '.join(map(str, sweep.values))}"),
                    title="adcli compare --scale", title_align="left", expand=False))
    for part in sweep_tables(sweep, out.width):
        out.print(part)
    for figure in ("derivative_mults", "cached_values"):
        out.print(text_chart(sweep, figure))
    for note in sweep.notes:
        out.print(Text(note, style="dim"))


def text_chart(sweep, figure, width: int = 56, height: int = 12) -> Panel:
    """A log-log scatter of one figure against the swept dim, in characters. A method
    whose figure is 0 (which a log scale cannot show) is named under the chart."""
    raw = {m: list(zip(*sweep.series(m, figure))) for m in METHODS}
    series = {m: [(x, y) for x, y in pts if y and y > 0] for m, pts in raw.items()}
    off = []
    for m, pts in raw.items():
        zeros = [x for x, y in pts if not (y and y > 0)]
        if zeros and len(zeros) == len(pts):
            off.append(f"{SHORT[m]} ({label(m)}) is 0 at every {sweep.name}")
        elif zeros:
            off.append(f"{SHORT[m]} ({label(m)}) is 0 at {sweep.name}={', '.join(map(str, zeros))}")
    left_out = ("not drawn, 0 has no place on a log scale: " + "; ".join(off)) if off else ""
    points = [p for pts in series.values() for p in pts]
    title = f"{label(figure)} vs {sweep.name} (log-log)"
    if not points:
        return Panel(Text(f"{label(figure)}: nothing positive to plot"
                          + (f"\n{left_out}" if left_out else "")), title=title, title_align="left",
                     expand=False)
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
        tick = f"{top:>10.3g} ┤" if i == 0 else f"{bottom:>10.3g} ┤" if i == height - 1 else " " * 11 + "│"
        text.append(tick)
        for char, style in row:
            text.append(char, style=style)
        text.append("\n")
    text.append(" " * 11 + "└" + "─" * width + "\n")
    left, right = f"{10 ** x0:g}", f"{10 ** x1:g}"
    text.append(" " * 12 + left + " " * max(width - len(left) - len(right), 1) + right + "\n")
    legend = "  ".join(f"{SHORT[m]} = {label(m)}" for m in METHODS) + "  * = overlap"
    text.append(" " * 12 + legend, style="dim")
    if left_out:
        text.append("\n" + left_out, style="dim")
    return Panel(text, title=title, title_align="left", expand=False)
