"""The memory side of the resource guard: how much memory a run may use, and the
constants of the model that predicts how much it will (docs/counting.md, "Predicted
memory"; Program.predicted_peak_bytes applies them).
"""
from __future__ import annotations

import os

# The memory model (docs/counting.md, "Predicted memory"): the sweeps' peak bytes are
#   TEMPORARY_FACTOR × (peak live values, with the temporaries rules are known to hold) × itemsize
#   + the Jacobian's m·n values when several sweeps fill it (one sweep's result is a live value)
#   + SEED_INDEX_BYTES per element of the largest seeded block
#   + PER_NODE_BYTES per node + ARRAY_HEADER_BYTES per array kept for the backward sweep
#     (+ SPLIT_ENV_BYTES more per array in a program of over SPLIT_NODES nodes)
#   + BASE_BYTES (+ INDEXING_SCRATCH_BYTES when a rule indexes),
# fitted so that on every sample and chunk the prediction is at least the peak tracemalloc
# measures and at most twice it (tests/test_memory_prediction.py).
TEMPORARY_FACTOR = 1.6        # intermediates inside NumPy expressions beyond those counted
SEED_INDEX_BYTES = 0          # a Seed's index arrays are constants of the compiled plans
PER_NODE_BYTES = 9            # not an environment (plans keep values in local variables): fitted
# NumPy's array object (and its plan slot), per array alive at the busiest moment: programs
# of many small values (samples/black_scholes.ad, robot_arm.ad) spend more on headers than numbers
ARRAY_HEADER_BYTES = 150
# A plan too long for one function runs as a chain of functions that pass the values crossing
# a cut in a dict (adcli.plan, Plan._split_body): a reverse sweep's residuals all cross to its
# return. Per array: the dict's entry and index, and the copy made while it grows. A 6,000-node
# program (3,000 steps of sin(x) * 0.999 unrolled) measured 18% above a prediction without it.
SPLIT_ENV_BYTES = 60
SPLIT_NODES = 100             # programs this large may have plans that are split (BLOCK_LINES lines)
BASE_BYTES = 4500             # the run's own dictionaries and objects
INDEXING_SCRATCH_BYTES = 3000   # NumPy's fancy indexing allocates this much, whatever the size
# A loop node run by the interpreter holds its body's run dicts and schedule lookups while it
# runs (measured 18.7 KB above the values on a one-op body of 100,000 iterations)
LOOP_BYTES = 32_000
# Reverse mode with --checkpoints, interpreted: the schedule's actions are made as they are
# read (adcli.checkpoint.actions), by a stack of generators, one per work item entered and
# not finished, at most r + S deep (r the repetitions of the binomial schedule; one with a
# single slot): 365 B a level measured (S = 2, 300 to 10,000 steps, depth 24 to 140).
# Compiled plans hold none of it: the schedule is walked while compiling.
SCHEDULE_LEVEL_BYTES = 400
# and per state it keeps at once (at most S, at most the count), the interpreter's books of
# it beyond its values (the slot's list and tuple, its residual keys made per step, the
# holders' entries): 350-510 B measured (300 steps, S = 100 to 300, states of 1 and 10 numbers),
# but 1,700 B a state at 20,000 steps (S = 200 to 1,600, a state of 4 numbers: predicted at
# 600 B it was 0.65-0.78× the measured peak). 1,200 B keeps both within 1.1-2× (what makes
# the books grow with the steps is not pinned down: a loop of 10^5 steps and more may pass it)
SCHEDULE_STATE_BYTES = 1_200
# Writing a result as JSON (docs/counting.md, "Predicted memory"): per number written,
# a Python float in a list (32 B) and its text (up to 25 characters) held about twice;
# per row or column label, a str object and its text. report.derivative_json_pieces
# holds one chunk of report.JSON_CHUNK numbers or labels at a time; json.dumps all.
JSON_BYTES_PER_NUMBER = 100
JSON_BYTES_PER_LABEL = 200


def available_memory() -> int:
    """Bytes of memory this process can still use: the least of the machine's free
    memory (MemAvailable on Linux), what its own limits leave (RLIMIT_AS, `ulimit -v`,
    less the address space in use; RLIMIT_DATA likewise) and what its memory cgroup
    leaves (v2 memory.max − memory.current, v1 memory.limit_in_bytes − memory.usage_in_bytes)."""
    return min(x for x in (_system_available(), rlimit_available(), cgroup_available())
               if x is not None)


def _system_available() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 8 * 2**30


def _status_bytes(field: str) -> int | None:
    """A 'VmSize:   1234 kB' figure of /proc/self/status, in bytes."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def rlimit_available() -> int | None:
    """What the process's soft RLIMIT_AS (and RLIMIT_DATA) leave: the limit less the
    address space (data segment) already in use. None when unlimited."""
    try:
        import resource
    except ImportError:   # not on this platform
        return None
    left = []
    for limit, field in (("RLIMIT_AS", "VmSize"), ("RLIMIT_DATA", "VmData")):
        try:
            soft, _ = resource.getrlimit(getattr(resource, limit))
        except (AttributeError, OSError, ValueError):
            continue
        if soft == resource.RLIM_INFINITY or soft < 0:
            continue
        used = _status_bytes(field) or 0
        left.append(max(soft - used, 0))
    return min(left) if left else None


def cgroup_available(root: str = "/sys/fs/cgroup", own: str = "/proc/self/cgroup") -> int | None:
    """What the memory cgroup leaves (limit − usage), the least over the process's own
    cgroup and its ancestors, for cgroup v2 (ROOT/…/memory.max, memory.current) and v1
    (ROOT/memory/…/memory.limit_in_bytes, memory.usage_in_bytes). None when unlimited."""
    paths = {"v2": "/", "v1": "/"}
    try:
        with open(own) as f:
            for line in f:
                parts = line.rstrip("\n").split(":", 2)
                if len(parts) != 3:
                    continue
                if parts[0] == "0" and parts[1] == "":
                    paths["v2"] = parts[2]
                elif "memory" in parts[1].split(","):
                    paths["v1"] = parts[2]
    except OSError:
        pass
    left = []
    for base, path, limit_file, usage_file in (
            (root, paths["v2"], "memory.max", "memory.current"),
            (os.path.join(root, "memory"), paths["v1"], "memory.limit_in_bytes", "memory.usage_in_bytes")):
        parts = [p for p in path.split("/") if p and p != ".."]
        for depth in range(len(parts), -1, -1):   # own cgroup first, then its ancestors
            folder = os.path.join(base, *parts[:depth])
            limit = _read_number(os.path.join(folder, limit_file))
            if limit is None or limit >= 2**60:   # "max", or v1's "unlimited" (2^63 − a page)
                continue
            used = _read_number(os.path.join(folder, usage_file)) or 0
            left.append(max(limit - used, 0))
    return min(left) if left else None


def _read_number(path: str) -> int | None:
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):   # missing, unreadable, or "max"
        return None


def default_memory_limit(backend=None) -> int:
    """Half of the memory available to the backend's arrays (host memory for NumPy:
    available_memory, which heeds ulimit -v and cgroup limits)."""
    device = backend.available_memory() if backend is not None else None
    return int(0.5 * (available_memory() if device is None else device))
