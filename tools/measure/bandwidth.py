"""The machine's memory bandwidth, as numpy streams it: what a GEMV over weights that do not
fit in the caches can read per second.

Two streams over a buffer much larger than the last-level cache (4x it, at least 256 MiB),
split over ``threads`` threads (numpy releases the GIL in both): a read (a max reduction,
SIMD in numpy, so the memory and not the arithmetic limits it) and a copy (bytes read +
bytes written; the write-allocate traffic of the destination is not counted, so a copy
reads as a little slower than the memory is). Each is the best of ``repeats`` passes, as a
peak is; the bound a roofline uses is the faster of the two.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

MIN_BYTES = 256 << 20
MAX_BYTES = 2 << 30


def last_level_cache_bytes() -> int | None:
    """The largest CPU cache Linux reports (sysfs), or None where it reports none."""
    sizes = []
    for f in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        text = f.read_text().strip().upper()
        unit = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
        digits = text.rstrip("KMG")
        if digits.isdigit():
            sizes.append(int(digits) * unit)
    return max(sizes) if sizes else None


def buffer_bytes() -> int:
    llc = last_level_cache_bytes() or 0
    return min(MAX_BYTES, max(MIN_BYTES, 4 * llc))


def memory_bandwidth(threads: int = 1, repeats: int = 5, nbytes: int | None = None) -> dict:
    """GB/s (1e9 bytes) of the read and the copy stream, the faster as ``gbps``."""
    nbytes = nbytes or buffer_bytes()
    threads = max(1, threads)
    src = np.ones(nbytes // 4, np.float32)
    dst = np.empty_like(src)
    src_parts, dst_parts = np.array_split(src, threads), np.array_split(dst, threads)
    with ThreadPoolExecutor(threads) as pool:

        def best(fn) -> float:
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                list(pool.map(fn, range(threads)))
                times.append(time.perf_counter() - t0)
            return min(times)

        read_s = best(lambda i: src_parts[i].max())
        copy_s = best(lambda i: np.copyto(dst_parts[i], src_parts[i]))
    read, copy = nbytes / read_s / 1e9, 2 * nbytes / copy_s / 1e9
    return {
        "gbps": max(read, copy),
        "read_gbps": read,
        "copy_gbps": copy,
        "buffer_bytes": nbytes,
        "threads": threads,
        "repeats": repeats,
    }
