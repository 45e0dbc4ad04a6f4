"""Array backends. The only module that imports an array library for the modes.

A ``Backend`` bundles the array module ``xp`` with what differs between
libraries: moving data to and from the host, synchronising before reading a
clock, and measuring the peak bytes of array memory.
"""
from __future__ import annotations

import time
from contextlib import contextmanager


class Backend:
    name = "?"
    device = "?"
    warmup = False   # run once untimed-in-total before the measured run (time_s["warmup"])

    def __init__(self, xp):
        self.xp = xp

    def available_memory(self) -> int | None:
        """Bytes free for arrays on the device; None: host memory (adcli.api decides)."""
        return None

    def asarray(self, host_value, dtype):
        return self.xp.asarray(host_value, dtype=dtype)

    def to_host(self, value):
        return value

    def synchronize(self):
        pass

    @contextmanager
    def measure(self, enabled: bool = True):
        """Measure wall time and peak array bytes of the enclosed block."""
        yield {"seconds": None, "peak_bytes": None}


class NumpyBackend(Backend):
    name = "numpy"

    def __init__(self):
        import numpy

        super().__init__(numpy)
        import platform
        self.device = f"CPU ({platform.machine() or 'unknown'})"

    @contextmanager
    def measure(self, enabled: bool = True):
        # NumPy reports its array allocations to tracemalloc, so its peak is
        # the measured peak of array (and Python) memory during the block.
        import tracemalloc

        report = {"seconds": None, "peak_bytes": None}
        started_here = enabled and not tracemalloc.is_tracing()
        if started_here:
            tracemalloc.start()
            tracemalloc.reset_peak()
        start = time.perf_counter()
        try:
            yield report
        finally:
            report["seconds"] = time.perf_counter() - start
            if started_here:
                report["peak_bytes"] = tracemalloc.get_traced_memory()[1]
                tracemalloc.stop()


class CupyUnavailable(Exception):
    pass


_NUMPY = None


def get_backend(name: str = "numpy") -> Backend:
    from .errors import AdError, UsageProblem

    if name in ("numpy", "auto"):   # auto: NumPy, also where a GPU is present
        global _NUMPY
        if _NUMPY is None:   # it keeps no state of a run: one serves every call
            _NUMPY = NumpyBackend()
        return _NUMPY
    if name == "cupy":
        from .backend_cupy import CupyBackend, cupy_problem

        problem = cupy_problem()
        if problem:
            raise AdError("the cupy backend needs CuPy and a CUDA GPU; install adcli[cuda13] on a "
                          f"machine with an NVIDIA GPU (found: {problem})")
        return CupyBackend()
    raise UsageProblem(f"unknown backend '{name}'; choose numpy, cupy or auto")


def special_functions(xp):
    """The special functions (erf, gammaln, digamma, zeta, ...) for the array module `xp`:
    ``scipy.special`` for NumPy, ``cupyx.scipy.special`` for CuPy, and for a module that
    records calls (adcli.staging's, adcli.derive's) its own. Imported on first use, never at
    start: most programs need none, and SciPy takes longer to import than all of adcli."""
    from .derive import NodeArrays
    from .staging import StagingXP

    if isinstance(xp, (StagingXP, NodeArrays)):   # modules that record calls: their own
        return xp.special
    if getattr(xp, "__name__", "") == "cupy":
        import cupyx.scipy.special

        return cupyx.scipy.special
    import scipy.special

    return scipy.special
