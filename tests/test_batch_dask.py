"""PIL_l3ic.batch on a Dask LocalCluster (2 worker processes, 1 thread each): report, resume,
byte-identity with the local pool, models loaded once per worker, a worker killed mid-write,
the CLI with --scheduler, and reading .l3c files into a Dask array or bag."""
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("distributed")
from distributed import Client, LocalCluster  # noqa: E402

from PIL_l3ic import batch, batch_dask, cli  # noqa: E402
from test_batch import BROKEN, GOOD, expected, make_tree, models, outputs  # noqa: E402,F401

N_GOOD = len(GOOD)


@pytest.fixture(scope="module")
def client(models):  # noqa: F811  (the model snapshot must be in the workers' environment)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as c:
        yield c


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return make_tree(tmp_path_factory.mktemp("src"))


@pytest.fixture(scope="module")
def local(tree, tmp_path_factory):
    """The reference: the same tree converted on the local process pool."""
    out = tmp_path_factory.mktemp("local")
    rep = batch.convert([tree], out, workers=2, progress=False)
    return out, rep


def test_cluster_matches_local_and_resumes(tree, local, client, tmp_path):
    ref, ref_rep = local
    out = tmp_path / "cluster"
    rep = batch.convert([tree], out, client=client, progress=True)   # Dask's progress bar
    d = rep.as_dict()
    assert (d["files"], d["converted"], d["skipped"], d["failed"]) == (11, N_GOOD, 0, 3)
    assert sorted(f["file"] for f in d["failures"]) == sorted(str(tree / b) for b in BROKEN)
    assert d["runner"].startswith("Dask cluster") and 1 <= d["worker_processes"] <= 2
    assert outputs(out) == outputs(ref)                       # byte-identical
    for k in ("bytes_in", "bytes_out", "pixels"):
        assert d[k] == ref_rep.as_dict()[k]
    for k in ("bpp", "mean_bpp"):   # sums in completion order: equal up to rounding
        assert d[k] == pytest.approx(ref_rep.as_dict()[k], rel=1e-12)
    rep = batch.convert([tree], out, client=client, progress=False)
    assert (rep.converted, rep.skipped, rep.failed) == (0, N_GOOD, 3)
    # decoding on the cluster gives the same PNGs as locally
    rep = batch.decode([out], tmp_path / "png_c", client=client, progress=False)
    assert (rep.converted, rep.failed) == (N_GOOD, 0)
    batch.decode([ref], tmp_path / "png_l", workers=1, progress=False)
    assert outputs(tmp_path / "png_c", ".png") == outputs(tmp_path / "png_l", ".png")
    assert sorted(outputs(tmp_path / "png_c", ".png")) == expected(".png")


def _count_network_loads():
    from PIL_l3ic import runtime
    if not hasattr(runtime, "_test_loads"):
        init = runtime.Network.__init__

        def counting(self, info, kind):
            runtime._test_loads.append(f"l3ic_{info.quality}_{kind}.tflite")
            init(self, info, kind)
        runtime.Network.__init__ = counting
    runtime._test_loads = []


def _loads():
    from PIL_l3ic import runtime
    return sorted(runtime._test_loads)


def test_models_loaded_once_per_worker(tree, client, tmp_path):
    client.run(_count_network_loads)
    rep = batch.convert([tree], tmp_path / "q16", "16c", client=client, progress=False)
    assert rep.converted == N_GOOD
    loads = client.run(_loads)
    assert len(loads) == 2      # the plugin loaded the 16c encoder once on each worker ...
    assert all(v == ["l3ic_16c_encoder.tflite"] for v in loads.values()), loads
    rep = batch.convert([tree], tmp_path / "q16", "16c", client=client, progress=False,
                        force=True)
    assert rep.converted == N_GOOD and client.run(_loads) == loads   # ... and never again
    batch.decode([tmp_path / "q16"], tmp_path / "png", client=client, progress=False)
    for v in client.run(_loads).values():       # decoders: loaded lazily, once per process
        assert v.count("l3ic_16c_decoder.tflite") <= 1


def _slow_first_write(marker):
    """Patch the workers: the first worker to write sleeps with half a file on disk."""
    import time as _time
    from PIL_l3ic import batch as _batch

    def slow(f, data):
        f.write(data[:len(data) // 2])
        f.flush()
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            f.write(data[len(data) // 2:])
            return
        os.write(fd, f"{os.getpid()} {f.name}".encode())
        os.close(fd)
        _time.sleep(120)       # killed before this ends
    _batch._write_data = slow


def _restore_writes():
    from PIL_l3ic import batch as _batch
    _batch._write_data = lambda f, data: f.write(data)


def test_worker_killed_mid_write(tree, local, client, tmp_path):
    ref, _ = local
    out, marker = tmp_path / "out", tmp_path / "marker"
    client.run(_slow_first_write, str(marker))
    try:
        with ThreadPoolExecutor(1) as ex:
            job = ex.submit(batch.convert, [tree], out, client=client, progress=False)
            deadline = time.time() + 60
            while time.time() < deadline and not (marker.exists() and marker.read_text()):
                time.sleep(0.05)
            pid, part = marker.read_text().split(" ", 1)
            size = os.path.getsize(part)
            assert Path(part).name.startswith(".") and part.endswith(".part") and size > 0
            os.kill(int(pid), signal.SIGKILL)      # the worker dies inside its write
            for f in out.rglob("*.l3c"):           # nothing truncated is ever visible
                with Image.open(f) as im:
                    im.verify()
            rep = job.result(timeout=120)
    finally:
        client.run(_restore_writes)
    # Dask re-ran the lost task on a live worker; files it had finished were skipped
    assert rep.failed == 3 and rep.converted + rep.skipped == N_GOOD, rep.text()
    assert outputs(out) == outputs(ref)
    assert [p for p in out.rglob("*") if p.is_file() and not p.name.startswith(".")
            and p.suffix != ".l3c"] == []
    rep = batch.convert([tree], out, client=client, progress=False)
    assert (rep.converted, rep.skipped) == (0, N_GOOD)
    client.wait_for_workers(2, timeout=60)     # the nanny restarted the killed worker


def test_cli_scheduler(tree, local, client, tmp_path, capsys):
    ref, _ = local
    out = tmp_path / "out"
    code = cli.main(["encode", str(tree), "-o", str(out), "--scheduler",
                     client.scheduler.address, "--workers", "2", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1 and f"11 files: {N_GOOD} converted" in err and "garbage.png" in err
    assert "Dask cluster" in err and outputs(out) == outputs(ref)


def test_read_array_and_bag(tree, local, client, tmp_path):
    ref, _ = local
    same = tmp_path / "same"
    for i in range(3):
        p = same / f"{i}.png"
        p.parent.mkdir(exist_ok=True)
        Image.open(tree / "top.png").rotate(90 * i).save(p)    # all 48x40 RGB
    batch.convert([same], tmp_path / "l3c", client=client, progress=False)
    arr = batch_dask.read_array(tmp_path / "l3c")
    assert arr.shape == (3, 40, 48, 3) and arr.dtype == np.uint8 and arr.numblocks[0] == 3
    got = arr.compute()                          # on the cluster (default client)
    for i in range(3):
        with Image.open(tmp_path / "l3c" / f"{i}.l3c") as im:
            assert np.array_equal(got[i], np.asarray(im))
    assert float(arr.mean().compute()) == pytest.approx(float(got.mean()))
    with pytest.raises(ValueError, match="differ in size or mode"):
        batch_dask.read_array(ref)
    bag = batch_dask.read_bag(ref, with_path=True)
    shapes = dict(bag.map(lambda t: (os.path.relpath(t[0], ref), t[1].shape)).compute())
    channels = {"RGB": (3,), "P": (3,), "RGBA": (4,), "L": ()}
    want = {str(Path(r).with_suffix(".l3c")): (h, w) + channels[m]
            for r, (w, h, m) in GOOD.items()}
    assert shapes == want
