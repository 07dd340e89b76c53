"""PIL_l3ic.runtime: model registry, interpreters, threads, GPU-delegate fallback."""
import json
import os
import shutil
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from PIL_l3ic import runtime
from PIL_l3ic.runtime import ModelError


@pytest.fixture(autouse=True)
def _clean_runtime(monkeypatch):
    """Every test starts and ends with fresh caches and default settings."""
    for var in (runtime.ENV_MODEL_DIR, runtime.ENV_NUM_THREADS, runtime.ENV_GPU_DELEGATE):
        monkeypatch.delenv(var, raising=False)
    runtime.set_num_threads(None)
    runtime.reset()
    yield
    runtime.set_num_threads(None)
    runtime.reset()


@pytest.fixture
def model_copy(tmp_path, monkeypatch):
    """A writable copy of the model directory, selected through L3IC_MODEL_DIR."""
    src = runtime.model_dir()
    for f in src.iterdir():
        if f.suffix in (".json", ".tflite"):
            shutil.copy(f, tmp_path / f.name)
    monkeypatch.setenv(runtime.ENV_MODEL_DIR, str(tmp_path))
    runtime.reset()
    return tmp_path


def _run_encoder(net, x):
    return net.run(x.shape, lambda buf: buf.__setitem__(Ellipsis, x), lambda z: z.copy())


# ----------------------------------------------------------------------------- registry

def test_default_model_dir_has_all_models():
    d = runtime.model_dir()
    for q in runtime.QUALITIES:
        info = runtime.model_info(q)
        assert info.json_path == d / f"l3ic_{q}.json"
        assert info.encoder_path.is_file() and info.decoder_path.is_file()
        assert info.model_id == runtime.MODEL_IDS[q]
        assert info.channels == int(q[:-1])
        assert len(info.fingerprint) == 8
        assert runtime.model_info(info.model_id) is info   # by id, cached


@pytest.mark.parametrize("bad", ["8c", "32C ", 0, 4, None, True, 2.0])
def test_unknown_model(bad):
    with pytest.raises(ValueError, match="unknown l3ic model"):
        runtime.model_info(bad)


def test_env_model_dir(model_copy):
    assert runtime.model_dir() == model_copy
    assert runtime.model_info("16c").json_path.parent == model_copy


def test_missing_json_names_file(tmp_path, monkeypatch):
    monkeypatch.setenv(runtime.ENV_MODEL_DIR, str(tmp_path))
    with pytest.raises(ModelError, match=r"not found: .*l3ic_32c\.json") as e:
        runtime.model_info("32c")
    assert isinstance(e.value, OSError)


@pytest.mark.parametrize("edit, message", [
    (lambda m: "{not json", "cannot read"),
    (lambda m: {**m, "channels": 16}, "channels 16"),
    (lambda m: {**m, "model_id": 3}, "model_id 3"),
    (lambda m: {**m, "fingerprint": "xyz"}, "invalid"),
    (lambda m: {k: v for k, v in m.items() if k != "decoder"}, "invalid"),
])
def test_bad_json_names_file(model_copy, edit, message):
    path = model_copy / "l3ic_32c.json"
    new = edit(json.loads(path.read_text()))
    path.write_text(new if isinstance(new, str) else json.dumps(new))
    with pytest.raises(ModelError, match=message) as e:
        runtime.model_info("32c")
    assert "l3ic_32c.json" in str(e.value)


def test_missing_tflite_names_file(model_copy):
    (model_copy / "l3ic_16c_decoder.tflite").unlink()
    runtime.model_info("16c")                      # the JSON alone is fine
    with pytest.raises(ModelError, match=r"not found: .*l3ic_16c_decoder\.tflite"):
        runtime.network("16c", "decoder")


def test_garbage_tflite_names_file(model_copy):
    (model_copy / "l3ic_16c_encoder.tflite").write_bytes(b"this is not a flatbuffer" * 10)
    with pytest.raises(ModelError, match=r"l3ic_16c_encoder\.tflite"):
        runtime.network("16c", "encoder")


def test_mismatched_tflite_names_file(model_copy):
    # the 32c encoder where the 16c one should be: 32 output channels, JSON says 16
    shutil.copy(model_copy / "l3ic_32c_encoder.tflite", model_copy / "l3ic_16c_encoder.tflite")
    with pytest.raises(ModelError, match=r"l3ic_16c_encoder\.tflite does not match .*output"):
        runtime.network("16c", "encoder")


def test_bad_kind():
    with pytest.raises(ValueError):
        runtime.network("16c", "both")


# ----------------------------------------------------------------------------- laziness, caching

def test_import_is_lazy():
    code = ("import sys, PIL_l3ic; from PIL import Image; "
            "bad = [m for m in sys.modules if m.startswith(('ai_edge_litert', 'tflite_runtime', "
            "'tensorflow', 'PIL_l3ic._fse'))]; "
            "assert not bad, bad; assert not PIL_l3ic.runtime._networks; "
            "assert 'L3IC' in Image.OPEN and Image.EXTENSION['.l3c'] == 'L3IC'")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


def test_no_litert_banner_on_stderr(tmp_path):
    """A fresh process that encodes and decodes writes nothing to stderr (LiteRT's 'Created
    TensorFlow Lite XNNPACK delegate' line is filtered out)."""
    code = ("import io, PIL_l3ic; from PIL import Image; b = io.BytesIO(); "
            "Image.new('RGB', (64, 48), 'teal').save(b, 'L3IC', quality='16c'); "
            "b.seek(0); Image.open(b).load()")
    # the package under test (the checkout has no built _fse when the tests run on an install)
    env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(runtime.__file__))}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    assert r.stderr == b""


def test_banner_filter_passes_other_output(capfd):
    with runtime._without_litert_banner():
        os.write(2, b"before\n" + runtime.LITERT_BANNER + b"after\n")
    assert capfd.readouterr().err == "before\nafter\n"


def test_networks_are_cached():
    a = runtime.network("16c", "encoder")
    assert runtime.network("16c", "encoder") is a
    assert runtime.network(1, "encoder") is a
    assert runtime.network("16c", "decoder") is not a


def test_resize_only_when_shape_changes(monkeypatch):
    net = runtime.network("16c", "encoder")
    calls = []
    it = net._interpreter
    real = it.resize_tensor_input
    monkeypatch.setattr(it, "resize_tensor_input", lambda *a, **k: (calls.append(a), real(*a, **k)))
    x = np.full((1, 16, 24, 3), 100, np.float32)
    z1 = _run_encoder(net, x)
    z2 = _run_encoder(net, x)
    assert len(calls) == 1 and z1.shape == (1, 2, 3, 16)
    np.testing.assert_array_equal(z1, z2)
    _run_encoder(net, np.zeros((1, 8, 8, 3), np.float32))
    assert len(calls) == 2


def test_concurrent_runs_match_sequential():
    net = runtime.network("16c", "encoder")
    rng = np.random.default_rng(1)
    inputs = [rng.uniform(0, 255, (1, 8 * (1 + i % 3), 16, 3)).astype(np.float32)
              for i in range(12)]
    expected = [_run_encoder(net, x) for x in inputs]
    with ThreadPoolExecutor(6) as pool:
        got = list(pool.map(lambda x: _run_encoder(net, x), inputs))
    for e, g in zip(expected, got):
        np.testing.assert_array_equal(e, g)


def test_concurrent_first_use_creates_one_interpreter():
    barrier = threading.Barrier(4)

    def get(_):
        barrier.wait()
        return runtime.network("16c", "decoder")

    with ThreadPoolExecutor(4) as pool:
        nets = list(pool.map(get, range(4)))
    assert all(n is nets[0] for n in nets)


# ----------------------------------------------------------------------------- threads, GPU

def test_set_num_threads(monkeypatch):
    net = runtime.network("16c", "encoder")
    runtime.set_num_threads(1)
    assert runtime.num_threads() == 1
    assert runtime.network("16c", "encoder") is not net   # recreated with the new setting
    runtime.set_num_threads(None)
    monkeypatch.setenv(runtime.ENV_NUM_THREADS, "3")
    assert runtime.num_threads() == 3
    monkeypatch.setenv(runtime.ENV_NUM_THREADS, "many")
    with pytest.warns(RuntimeWarning, match="L3IC_NUM_THREADS"):
        assert runtime.num_threads() >= 1
    for bad in (0, -1, 1.5, "2", True):
        with pytest.raises(ValueError):
            runtime.set_num_threads(bad)


def test_thread_count_does_not_change_results():
    x = np.random.default_rng(2).uniform(0, 255, (1, 64, 48, 3)).astype(np.float32)
    runtime.set_num_threads(1)
    one = _run_encoder(runtime.network("32c", "encoder"), x)
    runtime.set_num_threads(2)
    two = _run_encoder(runtime.network("32c", "encoder"), x)
    np.testing.assert_array_equal(one, two)


def test_gpu_delegate_fallback(monkeypatch, tmp_path):
    x = np.random.default_rng(3).uniform(0, 255, (1, 32, 32, 3)).astype(np.float32)
    cpu = _run_encoder(runtime.network("16c", "encoder"), x)
    runtime.reset()
    monkeypatch.setenv(runtime.ENV_GPU_DELEGATE, str(tmp_path / "libno_such_delegate.so"))
    with pytest.warns(RuntimeWarning, match="GPU delegate .*libno_such_delegate.so.*CPU"):
        net = runtime.network("16c", "encoder")
    assert net.delegate is None
    np.testing.assert_array_equal(_run_encoder(net, x), cpu)


def test_backend_fallback_order(monkeypatch):
    import types
    fake = types.ModuleType("tflite_runtime.interpreter")
    fake.Interpreter, fake.load_delegate = object(), object()
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)   # import -> ImportError
    monkeypatch.setitem(sys.modules, "tflite_runtime", types.ModuleType("tflite_runtime"))
    monkeypatch.setitem(sys.modules, "tflite_runtime.interpreter", fake)
    assert runtime._backend() == (fake.Interpreter, fake.load_delegate)
    monkeypatch.setitem(sys.modules, "tflite_runtime.interpreter", None)
    monkeypatch.setitem(sys.modules, "tensorflow", None)
    with pytest.raises(ImportError, match="pip install ai-edge-litert"):
        runtime._backend()
