"""Worker processes of ``PIL_l3ic.batch`` on this machine: the usable cores, the set-up each
worker process runs once (Dask workers run it too, through ``batch_dask``'s plugin) and the
local runner, a pool of spawned processes.  Same contract as the Dask runner: ``run(fn, tasks)``
yields ``(task, result or exception)`` in completion order and has a ``description`` for the
report.  ``batch`` imports these names, which are part of its API."""
from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import FIRST_COMPLETED, BrokenExecutor, ProcessPoolExecutor, wait


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def init_worker(threads: int | None = None, warm=()) -> None:
    """Per process, once: codec threads and models loaded (``warm``: qualities to encode)."""
    from PIL_l3ic import runtime
    if threads and threads != runtime.num_threads():   # a change drops loaded interpreters
        runtime.set_num_threads(threads)
    for q in warm:
        runtime.network(q, "encoder")


def local_runner(workers: int | None = None, threads: int | None = None, warm=()):
    """A process pool (spawned, ``workers`` processes, default one per core); each process
    runs ``init_worker(threads, warm)`` once (threads default: cores // workers)."""
    n = workers or cpu_count()
    threads = threads or max(1, cpu_count() // n)

    def run(fn, tasks, in_flight: int | None = None):
        tasks, pending, ex, window = iter(tasks), {}, None, in_flight or 4 * n
        try:
            while True:
                ex = ex or ProcessPoolExecutor(n, mp_context=multiprocessing.get_context(
                    "spawn"), initializer=init_worker, initargs=(threads, tuple(warm)))
                broken = False
                for t in tasks:          # keep a bounded window in flight
                    try:
                        pending[ex.submit(fn, *t)] = t
                    except BrokenExecutor as e:
                        broken = True
                        yield t, e
                        break
                    if len(pending) >= window:
                        break
                if not pending and not broken:
                    return
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                broken = broken or any(isinstance(f.exception(), BrokenExecutor) for f in done)
                if broken:               # a process died (crash, OOM kill): all in flight fail
                    done, _ = wait(pending)
                for f in done:
                    t, e = pending.pop(f), f.exception()
                    yield t, (e if e is not None else f.result())
                if broken:               # ... and a new pool takes the rest
                    ex.shutdown(wait=False, cancel_futures=True)
                    ex = None
        finally:
            if ex is not None:
                ex.shutdown(wait=True, cancel_futures=True)
    run.description = f"local process pool ({n} workers x {threads} threads)"
    return run
