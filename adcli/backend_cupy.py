"""The CuPy backend (NVIDIA GPUs): data movement, synchronisation, memory peak.

Every op of adcli.ops runs on CuPy through the same ``xp`` calls as on NumPy;
what differs between the two libraries is handled here and nowhere else:

- Data is made on the host (``randn``/``rand`` draw from NumPy's generator in
  adcli.build, initial values, ``--at`` values) and moved to the device once,
  by ``asarray``; consts and input values become 0-d or n-d device arrays, so
  no NumPy scalar (``np.float64``) meets a CuPy array in a rule.
- Results come back with ``to_host``: ``cupy.asnumpy``, or for large arrays a
  copy into page-locked (pinned) host memory, many times faster; no rule turns
  a device array into a Python number (each would wait for the device).
- Time: the device is synchronised before the clock is read at both ends,
  and the first run (kernel compilation, cuBLAS handles) is a warm-up whose
  time adcli.api reports apart, as ``time_s["warmup"]``.
- Memory: CuPy's pool keeps no peak, so a memory hook sums the bytes the pool
  hands out and takes back during the block and keeps the maximum.
"""
from __future__ import annotations

import time
from contextlib import contextmanager

from .backends import Backend

PINNED_FROM = 1 << 20   # bytes: smaller results come back through pageable memory


def cupy_problem() -> str | None:
    """Why CuPy cannot be used here, or None when it can."""
    try:
        import cupy
    except ImportError:
        return "CuPy is not installed"
    except Exception as exc:   # a broken CUDA install can fail the import in other ways
        return f"CuPy failed to load ({type(exc).__name__}: {exc})"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception:   # cudaErrorNoDevice, cudaErrorInsufficientDriver, no driver at all
        return "no CUDA device"
    return None if count > 0 else "no CUDA device"


def _peak_hook_class():
    from cupy.cuda import memory_hook

    class PeakHook(memory_hook.MemoryHook):
        """Bytes the memory pool handed out minus those it took back, and their maximum.

        The hook sees every allocation and free of every CuPy pool on this thread
        (the pool rounds sizes up: mem_size is what the device actually holds);
        an array allocated before the block and freed inside it lowers the figure,
        so the peak is the measured peak above the bytes in use when it began.
        """

        name = "adcli-peak"

        def __init__(self):
            self.now = 0
            self.peak = 0

        def malloc_postprocess(self, **kwargs):
            if kwargs.get("mem_ptr"):   # 0 when the allocation failed
                self.now += kwargs["mem_size"]
                if self.now > self.peak:
                    self.peak = self.now

        def free_postprocess(self, **kwargs):
            self.now -= kwargs["mem_size"]

    return PeakHook


class CupyBackend(Backend):
    name = "cupy"
    warmup = True

    def __init__(self):
        import cupy

        super().__init__(cupy)
        device = cupy.cuda.Device()
        props = cupy.cuda.runtime.getDeviceProperties(device.id)
        name = props["name"]
        self.device = name.decode() if isinstance(name, bytes) else str(name)
        self._hook_class = None

    def asarray(self, host_value, dtype):
        return self.xp.asarray(host_value, dtype=dtype)

    def to_host(self, value):
        xp = self.xp
        if isinstance(value, xp.ndarray) and value.nbytes >= PINNED_FROM:
            # A large result (a gradient) comes back through page-locked memory from
            # CuPy's pinned pool: measured on an H100, 64 MB in 1.2 ms instead of 18 ms.
            import cupyx

            value = xp.ascontiguousarray(value)
            out = cupyx.empty_pinned(value.shape, dtype=value.dtype)
            value.get(out=out)   # blocking
            return out
        return xp.asnumpy(value)

    def synchronize(self):
        self.xp.cuda.Device().synchronize()

    def available_memory(self) -> int:
        free, _total = self.xp.cuda.runtime.memGetInfo()
        return int(free + self.xp.get_default_memory_pool().free_bytes())

    @contextmanager
    def measure(self, enabled: bool = True):
        report = {"seconds": None, "peak_bytes": None}
        hook = None
        if enabled:
            if self._hook_class is None:
                self._hook_class = _peak_hook_class()
            hook = self._hook_class()
        self.synchronize()   # work queued before the block is not the block's
        start = time.perf_counter()
        try:
            if hook is not None:
                with hook:
                    yield report
            else:
                yield report
        finally:
            self.synchronize()
            report["seconds"] = time.perf_counter() - start
            if hook is not None:
                report["peak_bytes"] = int(hook.peak)
