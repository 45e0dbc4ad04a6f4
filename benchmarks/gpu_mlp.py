"""GPU benchmark (run by hand on a machine with an NVIDIA GPU; figures go in
benchmarks/README.md, section "GPU (CuPy)").

The reverse-mode gradient of samples/mlp.ad, a two-layer tanh MLP with a
scalar mean-squared-error loss (batch 64, input dim 1024, hidden width
256 ... 8192), through adcli's Python API on backend cupy, next to the same
function's gradient in PyTorch CUDA (eager autograd) and JAX (jit of grad), in
one process, same values, same dtype. Each timing is the median of --repeat
runs after warm-up runs, with the device synchronised before the clock is read.

adcli is timed two ways (and the same gradient written by hand in CuPy, to
separate what eager CuPy costs from what adcli's interpreter adds):
- "sweeps": cost.time_s["sweeps"], what adcli reports: the forward and backward
  sweeps on the device (synchronised at both ends), the gradient left on the GPU;
- "call": the whole Program.jacobian call: inputs copied to the device, the
  memory prediction, the sweeps, and the gradient copied back to the host
  (the API takes and returns host arrays).
Torch and JAX get device-resident inputs and leave the gradient on the device,
which is what "sweeps" measures for adcli.

    PYTHONPATH=. python3 benchmarks/gpu_mlp.py [--widths 256,1024,4096,8192]
        [--batch 64] [--inputs 1024] [--repeat 30] [--dtype float64] [--profile] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")   # JAX shares the GPU with torch/CuPy

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def median_time(fn, sync, repeat, warmup=3):
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeat):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def problem(width, batch, inputs):
    import numpy as np

    import adcli

    program = adcli.load(ROOT / "samples" / "mlp.ad", set={"n": inputs, "h": width, "batch": batch})
    host = program.resolve_inputs()
    graph = program.graph
    consts = {name: np.asarray(graph.nodes[i].attrs["value"]) for name, i in graph.consts.items()}
    return program, host, consts


def torch_grad(host, consts, dtype):
    import torch

    dev = torch.device("cuda")
    tdtype = getattr(torch, dtype)
    X = torch.as_tensor(consts["X"], dtype=tdtype, device=dev)
    target = torch.as_tensor(consts["target"], dtype=tdtype, device=dev)
    params = [torch.as_tensor(host[n], dtype=tdtype, device=dev).requires_grad_(True)
              for n in ("W1", "b1", "w2", "b2")]

    def run():
        W1, b1, w2, b2 = params
        hidden = torch.tanh(X @ W1 + b1)
        loss = torch.mean((hidden @ w2 + b2 - target) ** 2)
        return torch.autograd.grad(loss, params)

    return run, torch.cuda.synchronize


def cupy_by_hand(host, consts, dtype):
    """The same gradient written by hand in CuPy: the kernels adcli's rules launch,
    without the interpreter (what eager CuPy costs on this machine)."""
    import cupy as cp

    X, target = (cp.asarray(consts[n], dtype=dtype) for n in ("X", "target"))
    W1, b1, w2, b2 = (cp.asarray(host[n], dtype=dtype) for n in ("W1", "b1", "w2", "b2"))

    def run():
        hidden = cp.tanh(X @ W1 + b1)
        residual = hidden @ w2 + b2 - target
        cp.mean(residual ** 2)
        d_pred = (2.0 / residual.size) * residual
        d_w2 = hidden.T @ d_pred
        d_b2 = d_pred.sum()
        d_z = cp.outer(d_pred, w2) * (1.0 - hidden * hidden)
        return X.T @ d_z, d_z.sum(axis=0), d_w2, d_b2

    return run


def jax_grad(host, consts, dtype):
    import jax
    import jax.numpy as jnp

    jdtype = getattr(jnp, dtype)
    X = jnp.asarray(consts["X"], dtype=jdtype)
    target = jnp.asarray(consts["target"], dtype=jdtype)
    params = [jnp.asarray(host[n], dtype=jdtype) for n in ("W1", "b1", "w2", "b2")]

    def loss(W1, b1, w2, b2):
        hidden = jnp.tanh(X @ W1 + b1)
        return jnp.mean((hidden @ w2 + b2 - target) ** 2)

    grad = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3)))
    state = {}

    def run():
        state["out"] = grad(*params)
        return state["out"]

    def sync():
        if "out" in state:
            jax.block_until_ready(state["out"])

    return run, sync


def rel_err(a, b):
    import numpy as np

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def profile_gpu(fn, sync, calls, path):
    """Kernels, copies and their device time per call, read from a CUPTI trace
    (torch.profiler sees every kernel of the process, CuPy's too)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    fn()
    sync()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        sync()
    prof.export_chrome_trace(str(path))
    with open(path) as f:
        events = json.load(f)["traceEvents"]
    summary = {"kernels": 0, "kernel_us": 0.0, "memcpy": 0, "memcpy_us": 0.0, "memset": 0,
               "by_kernel": {}, "memcpy_kinds": {}, "api": {}}
    for e in events:
        cat = e.get("cat", "")
        if cat in ("cuda_runtime", "cuda_driver"):
            a = summary["api"].setdefault(e.get("name", "?"), [0, 0.0])
            a[0] += 1
            a[1] += e.get("dur", 0)
        if cat == "kernel":
            summary["kernels"] += 1
            summary["kernel_us"] += e.get("dur", 0)
            name = e.get("name", "?")[:70]
            k = summary["by_kernel"].setdefault(name, [0, 0.0])
            k[0] += 1
            k[1] += e.get("dur", 0)
        elif cat == "gpu_memcpy":
            summary["memcpy"] += 1
            summary["memcpy_us"] += e.get("dur", 0)
            kind = e.get("name", "?")
            summary["memcpy_kinds"][kind] = summary["memcpy_kinds"].get(kind, 0) + 1
        elif cat == "gpu_memset":
            summary["memset"] += 1
    per_call = {"kernels": summary["kernels"] / calls, "kernel_us": summary["kernel_us"] / calls,
                "memcpy": summary["memcpy"] / calls, "memcpy_us": summary["memcpy_us"] / calls,
                "memset": summary["memset"] / calls,
                "memcpy_kinds": {k: v / calls for k, v in summary["memcpy_kinds"].items()},
                "top_kernels": sorted(((n, c / calls, t / calls) for n, (c, t) in summary["by_kernel"].items()),
                                      key=lambda item: -item[2])[:12],
                "api": sorted(((n, c / calls, t / calls) for n, (c, t) in summary["api"].items()),
                              key=lambda item: -item[2])[:10]}
    return per_call


def node_profile(program, be, dtype, runs=10, sync=False):
    """Host time per node of one VJP (the same sweeps as the gradient), from the
    interpreter's observer; with sync, the device is synchronised at each node,
    so a node's figure includes its device time."""
    stamps = []

    def observer(runner, event, node, value, derivative):
        if sync:
            be.synchronize()
        stamps.append((event, node, time.perf_counter()))

    table = {}
    for i in range(runs + 1):
        stamps.clear()
        program.vjp({"loss": 1.0}, backend=be, dtype=dtype, measure_memory=False, warmup=False,
                    observer=observer)
        if i == 0:
            continue
        for (e0, n0, t0), (e1, n1, t1) in zip(stamps, stamps[1:]):
            if e1 == "reverse-forward":
                label = f"fwd v{n1.id + 1} {n1.op}"
            elif e0 == "backward":
                label = f"bwd v{n0.id + 1} {n0.op}"
            else:
                label = "between sweeps (residuals, seed)"
            table.setdefault(label, []).append(t1 - t0)
    rows = [(label, statistics.median(ts) * 1e6) for label, ts in table.items()]
    total = sum(us for _, us in rows)
    return rows, total


def transfer_probe(be, nbytes):
    """Device-to-host and host-to-device copy of nbytes: pageable vs pinned host memory."""
    import cupy
    import cupyx
    import numpy as np

    n = nbytes // 8
    dev = cupy.random.standard_normal(n)
    host = np.random.default_rng(0).standard_normal(n)
    pinned = cupyx.empty_pinned((n,), dtype=np.float64)

    def d2h_pageable():
        cupy.asnumpy(dev)

    def d2h_pinned():
        dev.get(out=pinned)

    def d2h_pinned_fresh():
        cupy.get_default_pinned_memory_pool().free_all_blocks()
        out = cupyx.empty_pinned((n,), dtype=np.float64)
        dev.get(out=out)

    def h2d_pageable():
        cupy.asarray(host)

    def h2d_pinned():
        pinned[...] = host
        cupy.asarray(pinned)

    return {name: median_time(fn, be.synchronize, 5, 1)[0] for name, fn in
            (("d2h pageable", d2h_pageable), ("d2h pinned (buffer reused)", d2h_pinned),
             ("d2h pinned (fresh buffer)", d2h_pinned_fresh),
             ("h2d pageable", h2d_pageable), ("h2d via a pinned buffer", h2d_pinned))}


def host_profile(fn, calls=20, top=14):
    import cProfile
    import io
    import pstats

    fn()
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(calls):
        fn()
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(top)
    return out.getvalue()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", default="256,1024,4096,8192")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--inputs", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    parser.add_argument("--profile", action="store_true", help="profile adcli and torch at the largest width")
    parser.add_argument("--no-jax", action="store_true")
    parser.add_argument("--json", default=None, help="write all figures to this file")
    parser.add_argument("--trace-dir", default=None, help="where the profiler's traces go")
    args = parser.parse_args()

    import numpy as np
    import torch

    if args.dtype == "float32":
        torch.backends.cuda.matmul.allow_tf32 = False   # plain float32 everywhere
    jax_ok = not args.no_jax
    if jax_ok:
        try:
            import jax

            jax.config.update("jax_enable_x64", True)
            jax.config.update("jax_default_matmul_precision", "highest")
        except Exception as exc:   # noqa: BLE001
            print(f"JAX unavailable: {exc}")
            jax_ok = False

    from adcli.backends import get_backend

    be = get_backend("cupy")
    print(f"GPU: {be.device}; CuPy {be.xp.__version__}, torch {torch.__version__}"
          + (f", JAX {jax.__version__}" if jax_ok else "") + f"; dtype {args.dtype}; batch {args.batch}, "
          f"input dim {args.inputs}; median of {args.repeat} after warm-up", flush=True)
    rows = []
    for width in [int(w) for w in args.widths.split(",")]:
        program, host, consts = problem(width, args.batch, args.inputs)
        params = width * args.inputs + 2 * width + 1

        sweeps = []

        def adcli_call(measure_memory=False):
            result = program.jacobian(mode="reverse", backend=be, dtype=args.dtype,
                                      measure_memory=measure_memory, warmup=False)
            sweeps.append(result.cost.time_s["sweeps"])
            return result

        first = program.jacobian(mode="reverse", backend=be, dtype=args.dtype)   # default: with warm-up
        warm_first = first.cost.time_s.get("warmup")
        call_t, _ = median_time(adcli_call, be.synchronize, args.repeat)
        sweep_t = statistics.median(sweeps[-args.repeat:])
        sweeps.clear()
        median_time(lambda: adcli_call(True), be.synchronize, max(5, args.repeat // 3))
        sweep_mem_t = statistics.median(sweeps[-max(5, args.repeat // 3):])

        hand_t, _ = median_time(cupy_by_hand(host, consts, args.dtype), be.synchronize, args.repeat)
        trun, tsync = torch_grad(host, consts, args.dtype)
        torch_t, _ = median_time(trun, tsync, args.repeat)
        grads = [g.detach().cpu().numpy() for g in trun()]
        err = max(rel_err(first.gradient[n], g) for n, g in zip(("W1", "b1", "w2", "b2"), grads))
        row = {"width": width, "params": params, "adcli_sweeps_s": sweep_t, "adcli_sweeps_hook_s": sweep_mem_t,
               "adcli_call_s": call_t, "adcli_first_warmup_s": warm_first,
               "adcli_first_sweeps_s": first.cost.time_s["sweeps"], "peak_bytes": first.cost.peak_bytes,
               "torch_s": torch_t, "cupy_by_hand_s": hand_t, "rel_err_vs_torch": err,
               "counts": first.cost.counts()}
        if jax_ok:
            jrun, jsync = jax_grad(host, consts, args.dtype)
            jax_t, _ = median_time(jrun, jsync, args.repeat)
            jgrads = [np.asarray(g) for g in jrun()]
            row["jax_s"] = jax_t
            row["rel_err_vs_jax"] = max(rel_err(first.gradient[n], g)
                                        for n, g in zip(("W1", "b1", "w2", "b2"), jgrads))
        rows.append(row)
        print(f"  width {width}: adcli sweeps {sweep_t * 1e3:.3f} ms, call {call_t * 1e3:.3f} ms, "
              f"cupy by hand {hand_t * 1e3:.3f} ms, torch {torch_t * 1e3:.3f} ms" + (f", jax {row['jax_s'] * 1e3:.3f} ms" if jax_ok else "")
              + f"; rel err vs torch {err:.1e}", flush=True)
        del trun
        torch.cuda.empty_cache()

    report = {"device": be.device, "dtype": args.dtype, "batch": args.batch, "inputs": args.inputs,
              "repeat": args.repeat, "rows": rows}
    if args.profile:
        width = max(int(w) for w in args.widths.split(","))
        program, host, consts = problem(width, args.batch, args.inputs)
        trace_dir = Path(args.trace_dir or os.environ.get("OUT", "/tmp"))

        def sweeps_only():
            return program.jacobian(mode="reverse", backend=be, dtype=args.dtype, measure_memory=False,
                                    warmup=False)

        gpu_adcli = profile_gpu(sweeps_only, be.synchronize, 5, trace_dir / "trace_adcli.json")
        trun, tsync = torch_grad(host, consts, args.dtype)
        gpu_torch = profile_gpu(trun, tsync, 5, trace_dir / "trace_torch.json")
        small, shost, sconsts = problem(256, args.batch, args.inputs)
        host_text = host_profile(lambda: small.jacobian(mode="reverse", backend=be, dtype=args.dtype,
                                                        measure_memory=False, warmup=False))
        nodes = {}
        for w, prog in ((256, small), (width, program)):
            for sync in (False, True):
                nodes[(w, sync)] = node_profile(prog, be, args.dtype, sync=sync)
        transfers = transfer_probe(be, 8 * width * args.inputs)
        report["profile"] = {"width": width, "adcli": gpu_adcli, "torch": gpu_torch, "host_width_256": host_text,
                             "nodes": {f"{w}{'-sync' if s else ''}": v for (w, s), v in nodes.items()},
                             "transfers": transfers}
        print(f"\nProfile at width {width} (per call, from a CUPTI trace):")
        for name, prof in (("adcli", gpu_adcli), ("torch", gpu_torch)):
            print(f"  {name}: {prof['kernels']:.0f} kernels, {prof['kernel_us']:.0f} us of kernel time; "
                  f"{prof['memcpy']:.0f} copies ({prof['memcpy_us']:.0f} us) {prof['memcpy_kinds']}; "
                  f"{prof['memset']:.0f} memsets")
            for kname, count, us in prof["top_kernels"]:
                print(f"      {us:9.1f} us  x{count:<4.0f} {kname}")
            print("    CUDA API calls (host side):")
            for aname, count, us in prof["api"]:
                print(f"      {us:9.1f} us  x{count:<4.0f} {aname}")
        print("\nHost time per node of one VJP (median us; sync: the device synchronised at each node):")
        labels = [label for label, _ in nodes[(width, False)][0]]
        cols = list(nodes)
        print(f"  {'node':<44}" + "".join(f"{(str(w) + (' sync' if s else '')):>12}" for w, s in cols))
        lookup = {c: dict(nodes[c][0]) for c in cols}
        for label in labels:
            print(f"  {label[:44]:<44}" + "".join(f"{lookup[c].get(label, float('nan')):>12.1f}" for c in cols))
        print(f"  {'total':<44}" + "".join(f"{nodes[c][1]:>12.1f}" for c in cols))
        print(f"\nCopies of {8 * width * args.inputs / 1e6:.0f} MB (the W1 gradient), median ms:")
        for name, t in transfers.items():
            print(f"  {name:<28} {t * 1e3:8.2f} ms  ({8 * width * args.inputs / t / 1e9:.1f} GB/s)")
        print("\nHost profile of adcli's whole call at width 256 (cProfile, by own time):")
        print(host_text)

    header = (f"{'width':>6} {'params':>10} {'adcli sweeps':>13} {'adcli call':>11} {'cupy hand':>10}"
              f" {'torch':>9}")
    header += f" {'jax':>9}" if jax_ok else ""
    header += f" {'adcli/torch':>12}" + (f" {'adcli/jax':>10}" if jax_ok else "") + f" {'call/torch':>11}"
    print(f"\n{be.device}, {args.dtype}, batch {args.batch}, input dim {args.inputs} (times in ms, medians)")
    print(header)
    for r in rows:
        line = (f"{r['width']:>6} {r['params']:>10,} {r['adcli_sweeps_s'] * 1e3:>13.3f} "
                f"{r['adcli_call_s'] * 1e3:>11.3f} {r['cupy_by_hand_s'] * 1e3:>10.3f} {r['torch_s'] * 1e3:>9.3f}")
        if jax_ok:
            line += f" {r['jax_s'] * 1e3:>9.3f}"
        line += f" {r['adcli_sweeps_s'] / r['torch_s']:>11.2f}x"
        if jax_ok:
            line += f" {r['adcli_sweeps_s'] / r['jax_s']:>9.2f}x"
        line += f" {r['adcli_call_s'] / r['torch_s']:>10.2f}x"
        print(line)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1, default=str)


if __name__ == "__main__":
    main()
