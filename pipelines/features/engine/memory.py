"""Memory for big batches: the output blocks the engine maps itself, and the environment a
process computing features should start with.

Fresh memory costs 1-3 s per GB in page faults on the project's 2-core VM. The feature blocks
(4.1 GB for 10M transfers: 36 float64 and 31 float32 rows) are therefore mapped up front, on a spare thread while the inputs
are read, instead of page by page as the computing threads write features into it. It takes
ordinary 4 KB pages: asked for transparent huge pages (MADV_HUGEPAGE), the kernel compacted
memory to find them, and mapping 700 MB took 1.3 s more CPU on the VM.

The engine changes no process-wide setting: it runs beside DuckDB and whatever else shares
the process. Two such settings make it faster; they belong to the process that computes
features and are given in its environment when it starts (docs/architecture.md: settled per process,
not from library code), as `JOB_ENVIRONMENT` has them:
- numpy asks for transparent huge pages for every array of 4 MB or more; on the VM (THP
  defrag=madvise) their faults compact memory first. `NUMPY_MADVISE_HUGEPAGE=0`, read when
  numpy is imported, stops it.
- glibc maps each block of 32 MB or more afresh and unmaps it when freed, and trims its heap,
  so the engine's temporaries (80 MB each at 10M rows) fault in again and again.
  `MALLOC_MMAP_MAX_=0` and a high `MALLOC_TRIM_THRESHOLD_` keep freed memory for reuse (in
  the main thread; glibc maps other threads' blocks over 64 MB whatever the settings). The
  process then keeps its peak memory until it exits: fit for a batch job, not for a server.
Without them the engine took 20% more CPU on 2M transfers (user + system 6.7 s instead of
5.5 s) and 27% more on 5M (14.1 s instead of 11.1 s), nearly all of it system time.
"""

from __future__ import annotations

import mmap

import numpy as np

# For the environment of a process that computes big batches (a Dagster run worker, a
# benchmark's child) when it is started; nothing in the package writes it into os.environ.
JOB_ENVIRONMENT = {
    "NUMPY_MADVISE_HUGEPAGE": "0",
    "MALLOC_MMAP_MAX_": "0",
    "MALLOC_TRIM_THRESHOLD_": str(2**31 - 1),
}

_POPULATE_WRITE = getattr(mmap, "MADV_POPULATE_WRITE", 23)  # Linux 5.14+; Python 3.13 names it
_STEP = 64 << 20  # populate this much at a time, so other threads' faults never wait long


def populated_block(rows: int, n: int, dtype: type = np.float64) -> np.ndarray:
    """A zeroed (rows x n) array whose pages are mapped before anything is written.

    On a kernel without MADV_POPULATE_WRITE the block is still a zeroed anonymous mapping:
    its pages then fault in as they are written.
    """
    size = np.dtype(dtype).itemsize * rows * n
    if size == 0:
        return np.zeros((rows, n), dtype=dtype)
    buffer = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    try:
        for start in range(0, size, _STEP):
            buffer.madvise(_POPULATE_WRITE, start, min(_STEP, size - start))
    except OSError:  # EINVAL: an older kernel
        pass
    return np.frombuffer(buffer, dtype=dtype).reshape(rows, n)


def release_row(block: np.ndarray, i: int) -> None:
    """Give row `i` of a `populated_block` back to the system once it is copied out: the
    output frame then grows as the blocks shrink, instead of both being held at once (2 x 4.1
    GB at 10M transfers). Any other array is left alone; a released row reads as zeros, so the
    row must be copied out, not wrapped, before."""
    buffer = block.base
    while buffer is not None and not isinstance(buffer, mmap.mmap):
        # numpy keeps its buffer as .base, a memoryview keeps its object as .obj
        buffer = buffer.obj if isinstance(buffer, memoryview) else getattr(buffer, "base", None)
    if buffer is None:
        return
    row = block.shape[1] * block.itemsize
    start = -(-i * row // mmap.PAGESIZE) * mmap.PAGESIZE  # whole pages inside the row only
    stop = (i + 1) * row // mmap.PAGESIZE * mmap.PAGESIZE
    if stop > start:
        buffer.madvise(mmap.MADV_DONTNEED, start, stop - start)
