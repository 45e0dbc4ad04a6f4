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
    # a method skipped everywhere gets no column (the note below the table says why)
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
