"""The CuPy backend (NVIDIA GPUs): data movement, synchronisation, memory peak."""
from __future__ import annotations

import time
from contextlib import contextmanager

from .backends import Backend


def cupy_problem() -> str | None:
    """Why CuPy cannot be used here, or None when it can."""
    try:
        import cupy
    except Exception as exc:  # ImportError, or a broken CUDA install
        return f"CuPy is not installed ({type(exc).__name__})"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception:
        return "no CUDA device"
    return None if count > 0 else "no CUDA device"


class CupyBackend(Backend):
    name = "cupy"

    def __init__(self):
        import cupy

        super().__init__(cupy)
        props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        name = props["name"]
        self.device = name.decode() if isinstance(name, bytes) else str(name)

    def asarray(self, host_value, dtype):
        return self.xp.asarray(host_value, dtype=dtype)

    def to_host(self, value):
        return self.xp.asnumpy(value)

    def synchronize(self):
        self.xp.cuda.get_current_stream().synchronize()

    @contextmanager
    def measure(self, enabled: bool = True):
        # CuPy's pool has no peak figure: track used bytes through the pool's
        # malloc/free hooks and keep the maximum.
        from cupy.cuda import memory_hook

        report = {"seconds": None, "peak_bytes": None}

        class PeakHook(memory_hook.MemoryHook):
            name = "adcli-peak"

            def __init__(self, pool):
                self.pool = pool
                self.base = pool.used_bytes()
                self.peak = 0

            def malloc_postprocess(self, **kwargs):
                self.peak = max(self.peak, self.pool.used_bytes() - self.base)

        pool = self.xp.get_default_memory_pool()
        hook = PeakHook(pool)
        self.synchronize()
        start = time.perf_counter()
        try:
            if enabled:
                with hook:
                    yield report
            else:
                yield report
        finally:
            self.synchronize()
            report["seconds"] = time.perf_counter() - start
            if enabled:
                report["peak_bytes"] = hook.peak
