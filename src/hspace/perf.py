"""CPU performance helpers: keep glibc malloc from page-faulting big activation buffers.

Why (DESIGN.md section 2): glibc ``malloc`` serves every block above its mmap threshold
(adaptive, at most 32 MiB by default) with a fresh ``mmap`` and gives it back with
``munmap`` when freed. A U-Net forward at 256x256 allocates and frees many such
activation buffers per step, so every step page-faults them in again (and the kernel
zeroes each page). Raising the mmap threshold and the trim threshold keeps those buffers
in the heap and reuses them.

Measured on this project's 2-core CPU (``benchmarks/README.md``): a 77 M-parameter
256x256 ``UNet2DModel`` forward went from about 1.25-1.43 s to about 0.89 s (page faults
per 5 forwards: ~2.1-3.0 M -> ~0.3 M); the small 64x64 model is barely affected (its
buffers are small). The price is a higher resident set size: memory freed by PyTorch
stays in the process for reuse instead of going back to the OS.

Two ways to apply it:

* **In this process, at run time** -- :func:`tune_malloc` calls glibc ``mallopt`` through
  ``ctypes``. Effective immediately for later allocations; no restart needed. This is
  the recommended way for the CLI and long-running scripts (call it once at start-up).
* **For child processes** -- :func:`malloc_env` returns the ``MALLOC_MMAP_THRESHOLD_`` /
  ``MALLOC_TRIM_THRESHOLD_`` variables (glibc reads them only at process start, so setting
  them in ``os.environ`` of a running process does nothing for that process);
  :func:`set_malloc_env` puts them into ``os.environ`` so that every subprocess started
  afterwards inherits them. Or from a shell::

      MALLOC_MMAP_THRESHOLD_=2147483647 MALLOC_TRIM_THRESHOLD_=2147483647 hspace ...

An alternative allocator (``LD_PRELOAD`` of jemalloc or tcmalloc) fixes the same problem.
Neither is installed on this project's machines; the glibc settings need nothing extra.
On non-glibc platforms (macOS, Windows, musl) the functions do nothing and say so.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

__all__ = [
    "MALLOC_THRESHOLD",
    "malloc_env",
    "set_malloc_env",
    "malloc_env_active",
    "tune_malloc",
]

# Largest value glibc's mallopt accepts through its ``int`` argument (2 GiB - 1): allocations
# below this stay in the heap; anything bigger is still mmap'd (fine).
MALLOC_THRESHOLD = 2**31 - 1

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

_tuned: bool | None = None


def malloc_env(threshold: int = MALLOC_THRESHOLD) -> dict[str, str]:
    """The environment variables that make a *new* glibc process keep big buffers in its heap.

    Example:
        >>> subprocess.run(cmd, env={**os.environ, **malloc_env()})  # doctest: +SKIP
    """
    return {"MALLOC_MMAP_THRESHOLD_": str(int(threshold)), "MALLOC_TRIM_THRESHOLD_": str(int(threshold))}


def set_malloc_env(threshold: int = MALLOC_THRESHOLD, overwrite: bool = False) -> dict[str, str]:
    """Put :func:`malloc_env` into ``os.environ`` for child processes started from now on.

    Does not change the current process (glibc reads these at start-up; use
    :func:`tune_malloc` for that). Values the user already set are kept unless ``overwrite``.
    Returns the variables as they are now in ``os.environ``.
    """
    for key, value in malloc_env(threshold).items():
        if overwrite or key not in os.environ:
            os.environ[key] = value
    return {k: os.environ[k] for k in malloc_env(threshold)}


def malloc_env_active() -> bool:
    """True when this process was started with both variables set (as :func:`malloc_env` does)."""
    return all(k in os.environ for k in malloc_env())


def _libc() -> ctypes.CDLL | None:
    if platform.system() != "Linux":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # glibc only (musl has mallopt as a stub)
        return libc
    except (OSError, AttributeError):
        return None


def tune_malloc(threshold: int = MALLOC_THRESHOLD) -> bool:
    """Raise glibc's mmap and trim thresholds in *this* process (``mallopt``); True if applied.

    Safe to call more than once; a no-op returning False where glibc is not the allocator.
    Trade-off: faster steps for big models (no page faults on reused activation buffers),
    a higher steady resident set size (freed memory is kept for reuse).
    """
    global _tuned
    libc = _libc()
    if libc is None:
        _tuned = False
        return False
    value = ctypes.c_int(min(int(threshold), MALLOC_THRESHOLD))
    ok = bool(libc.mallopt(_M_MMAP_THRESHOLD, value)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, value))
    _tuned = ok
    return ok
