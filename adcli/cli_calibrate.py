"""`adcli calibrate`: measure the machine model's constants (adcli.machine) and
cache them, so that --mode auto and compare predict time for this machine.

Registered on adcli.cli.cli when adcli.cli is imported; the engine is imported
inside the command, so start-up stays light.
"""
from __future__ import annotations

import json

import click

from .cli import cli, echo_out


@cli.command()
@click.option("--backend", type=click.Choice(["auto", "numpy", "cupy"]), default="auto", show_default=True,
              help="The backend to calibrate (auto = numpy).")
@click.option("--seconds", "budget", type=click.FloatRange(min=0.5, max=60), default=4.0, show_default=True,
              help="About how long the micro-benchmarks may run.")
@click.option("--show", is_flag=True, help="Print the model in use (calibrated or default); measure nothing.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
@click.option("--debug", is_flag=True, help="Show the traceback of an internal error.")
def calibrate(backend, budget, show, as_json, debug):
    """Measure this machine's op cost, bandwidth and GEMM rate; cache them.

    Three small programs are differentiated by adcli itself (a chain of scalar
    operations, wide elementwise work, matrix products); the fastest of several
    runs of each gives one constant. The result is cached per machine and backend
    in the user's cache directory and used by --mode auto and adcli compare."""
    from . import machine

    backend = "numpy" if backend == "auto" else backend
    if show:
        model = machine.model_for(backend)
        data = {"kind": "calibration", "model": model.to_json(), "saved": None, "checks": [],
                "seconds": 0.0}
    else:
        from .backends import get_backend

        get_backend(backend)   # one clear sentence when CuPy or a GPU is missing
        result = machine.calibrate(backend, budget)
        path = machine.save(result["model"])
        data = {"kind": "calibration", "model": result["model"].to_json(), "saved": str(path),
                "checks": result["checks"], "seconds": result["seconds"]}
    if as_json:
        echo_out(json.dumps(data))
        return
    m = data["model"]
    lines = [f"machine model for {m['backend']} ({m['source']})",
             f"  op_s        {m['op_s'] * 1e6:10.2f} µs per array operation",
             f"  bandwidth   {m['bandwidth'] / 1e9:10.2f} GB/s, elementwise work and reductions",
             f"  gemm_rate   {m['gemm_rate'] / 1e9:10.2f} Gflop/s, matmul-like work"]
    for check in data["checks"]:
        lines.append(f"  {check['program']:9s} {check['mode']:8s} measured {check['measured_s'] * 1e3:8.3f} ms, "
                     f"predicted {check['predicted_s'] * 1e3:8.3f} ms")
    if data["saved"]:
        lines.append(f"saved to {data['saved']} ({data['seconds']:.1f} s)")
    echo_out("\n".join(lines))
