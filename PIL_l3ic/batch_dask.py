"""The Dask side of ``PIL_l3ic.batch`` (``pip install 'PIL_l3ic[dask]'``; imported only when a
client or scheduler is used): connecting, a worker plugin, a runner, and readers that load
``.l3c`` files into a Dask bag or array for analysis pipelines.

    from distributed import Client
    from PIL_l3ic import batch, batch_dask
    client = Client("tcp://scheduler:8786")
    batch.convert("/data/photos/", "/data/l3c/", client=client)       # or scheduler="tcp://..."
    arr = batch_dask.read_array("/data/l3c/")        # (N, H, W, C) uint8, one chunk per image
    bag = batch_dask.read_bag("/data/l3c/**/*.l3c", with_path=True)   # (path, ndarray) items

Workers must be able to import PIL_l3ic and see the input and output paths (a shared or mounted
file system).  Start them with one thread each (``dask worker --nthreads 1 --nworkers N``):
threads of one worker share one interpreter per model, whose runs are serialised.
"""
from __future__ import annotations

import threading
from collections import Counter

import numpy as np
from distributed import Client, WorkerPlugin, as_completed
from distributed import progress as dask_progress
from distributed.comm import get_address_host
from distributed.utils import is_kernel

from PIL_l3ic import batch
from PIL_l3ic.conversion import pillow

_SHAPE = {"RGB": 3, "L": None, "RGBA": 4, "LA": 2}


class L3icWorkerPlugin(WorkerPlugin):
    """Runs on every worker, including ones that join or restart later: codec threads = the
    host's cores shared among the worker processes on that host (or ``threads``), and the
    encoders of ``warm`` loaded, once per process (the runtime's cache keeps them)."""
    name = "l3ic"

    def __init__(self, warm=(), workers_by_host=None, threads=None):
        self.warm = tuple(warm)
        self.workers_by_host = dict(workers_by_host or {})
        self.threads = threads

    def setup(self, worker):
        n = self.workers_by_host.get(get_address_host(worker.address), 1)
        batch.init_worker(self.threads or max(1, batch.cpu_count() // n), self.warm)


def connect(scheduler: str, workers: int | None = None) -> Client:
    """``"local"``: a LocalCluster of ``workers`` processes (default one per core) with one
    thread each; ``*.json``: a scheduler file; else a scheduler address (then ``workers``, if
    given, is how many workers to wait for)."""
    if scheduler == "local":
        return Client(n_workers=workers or batch.cpu_count(), threads_per_worker=1,
                      processes=True, dashboard_address=None)
    client = (Client(scheduler_file=scheduler) if str(scheduler).endswith(".json")
              else Client(scheduler))
    if workers:
        client.wait_for_workers(workers)
    return client


def disconnect(client: Client) -> None:
    client.close()     # also closes a LocalCluster that connect("local") started


def runner(client: Client, warm=(), progress: bool = True, threads: int | None = None):
    """``(run, slots)``: ``run(fn, tasks)`` submits every task (``retries=1``; a task whose
    worker dies is rescheduled by Dask) and yields ``(task, result or exception)`` as they
    complete; ``slots`` is the number of worker threads.  Registers ``L3icWorkerPlugin``."""
    info = client.scheduler_info(n_workers=-1)["workers"]
    client.register_plugin(L3icWorkerPlugin(warm, Counter(w["host"] for w in info.values()),
                                            threads), name="l3ic")
    slots = max(1, sum(w["nthreads"] for w in info.values()))

    def run(fn, tasks, **_):
        futures = [client.submit(fn, *t, pure=False, retries=1) for t in tasks]
        task_of = {f.key: t for f, t in zip(futures, tasks)}
        if progress and futures:
            _progress(futures)
        done = as_completed(futures)
        del futures    # each result is dropped from the cluster once read
        for f in done:
            try:
                res = f.result()
            except Exception as e:     # KilledWorker (its worker died too often), cancelled...
                res = e
            f.release()
            yield task_of.pop(f.key), res
    run.dask = True
    run.description = f"Dask cluster {client.scheduler.address} ({len(info)} workers, " \
                      f"{slots} threads)"
    return run, slots


def _progress(futures) -> None:
    """Dask's own progress: a widget in a notebook, else its text bar (stdout) in a thread."""
    if is_kernel():
        try:
            from IPython.display import display
            display(dask_progress(futures, notebook=True, multi=False))
            return
        except ImportError:
            pass
    threading.Thread(target=dask_progress, args=(futures,), daemon=True,
                     kwargs={"notebook": False, "multi": False}).start()


# ----------------------------------------------------------------------------- readers

def load(path: str) -> np.ndarray:
    """One .l3c file decoded to a uint8 array: (H, W, 3) RGB, (H, W) L, (H, W, 4) RGBA,
    (H, W, 2) LA."""
    return batch.retrying(_load, path)


def _load(path: str) -> np.ndarray:
    Image = pillow()
    with Image.open(path) as im:
        if im.format != "L3IC":
            raise ValueError(f"{path}: not an l3ic file (Pillow reads it as {im.format})")
        return np.asarray(im)


def _load_with_path(path: str) -> tuple[str, np.ndarray]:
    return path, load(path)


def read_bag(sources, *, with_path: bool = False, npartitions: int | None = None):
    """A ``dask.bag`` of decoded images (or ``(path, image)`` pairs) from .l3c files (a list,
    glob or folder tree, as in ``batch.decode``); any size and mode."""
    import dask.bag as db
    paths = [p for p, _ in batch.find(sources, "decode")]
    bag = db.from_sequence(paths, npartitions=npartitions or max(1, min(len(paths), 100)))
    return bag.map(_load_with_path if with_path else load)


def read_array(sources):
    """A ``dask.array`` (N, H, W[, C]) uint8, one chunk per image, from .l3c files that all
    have the same size and mode (read from their headers, nothing decoded until computed)."""
    import dask
    import dask.array as da
    from PIL_l3ic import container
    paths = [p for p, _ in batch.find(sources, "decode")]
    if not paths:
        raise ValueError(f"no .l3c files in {sources!r}")
    shapes = Counter()
    for p in paths:
        with open(p, "rb") as f:
            h = container.read_layout(f).header
        c = _SHAPE[h.mode]
        shapes[(h.height, h.width) + ((c,) if c else ())] += 1
    if len(shapes) > 1:
        raise ValueError(f"the images differ in size or mode ({dict(shapes)}); use read_bag")
    shape = next(iter(shapes))
    return da.stack([da.from_delayed(dask.delayed(load, pure=True)(p), shape, np.uint8)
                     for p in paths])
