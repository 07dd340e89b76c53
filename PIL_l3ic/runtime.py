"""Model registry and TFLite interpreters (LiteRT), created lazily, once per model, thread-safe.

Where the models are (first match wins)
    1. the directory named by the environment variable ``L3IC_MODEL_DIR``;
    2. the installed package ``PIL_l3ic.tflite_models`` (setup.cfg maps it to ``tflite_models/``);
    3. ``<repository>/tflite_models`` (a source checkout).
Each quality ``q`` in QUALITIES has ``l3ic_<q>.json`` naming ``l3ic_<q>_encoder.tflite`` and
``l3ic_<q>_decoder.tflite`` and optionally ``l3ic_<q>_refiner.tflite`` (used only by the
``refine`` save option; interfaces in docs/architecture.md).  A missing, unreadable or
inconsistent file raises ``ModelError`` (an OSError) whose message names the file.

Interpreter
    ``ai_edge_litert.interpreter`` (XNNPACK on the CPU), else ``tflite_runtime.interpreter``, else
    ``tensorflow.lite``.  Threads: ``set_num_threads(n)``, else the environment variable
    ``L3IC_NUM_THREADS``, else every core this process may use.  ``L3IC_GPU_DELEGATE=<library>``
    loads that delegate (e.g. libtensorflowlite_gpu_delegate.so); if it cannot be loaded a
    RuntimeWarning is issued and the CPU is used.  Settings are read when an interpreter is
    created; ``set_num_threads`` and ``reset`` drop the cached interpreters.

Nothing here imports the interpreter package or reads a file before the first ``model_info`` /
``network`` call, so ``import PIL_l3ic`` stays cheap.
"""
from __future__ import annotations

import contextlib
import ctypes
import importlib
import json
import os
import sys
import tempfile
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

QUALITIES = ("16c", "32c", "64c")
MODEL_IDS = {"16c": 1, "32c": 2, "64c": 3}
QUALITY_BY_ID = {v: k for k, v in MODEL_IDS.items()}
ENV_MODEL_DIR = "L3IC_MODEL_DIR"
ENV_NUM_THREADS = "L3IC_NUM_THREADS"
ENV_GPU_DELEGATE = "L3IC_GPU_DELEGATE"


class ModelError(OSError):
    """A model file is missing, unreadable or does not match its JSON description."""


@dataclass(frozen=True)
class ModelInfo:
    """The contents of ``l3ic_<q>.json`` with resolved paths."""
    quality: str
    model_id: int
    channels: int
    codebook_min: int
    codebook_max: int
    latent_scale: float
    fingerprint: bytes
    variant: str
    encoder_path: Path
    decoder_path: Path
    json_path: Path
    train_steps: int
    refiner_path: Path | None = None     # optional: encoder-side refinement (refine.py)
    refine_lambda: float = 0.0
    refine_lr: float = 0.05


_lock = threading.Lock()            # guards the caches below
_infos: dict[tuple[str, str], ModelInfo] = {}
_networks: dict[tuple[str, str, str], "Network"] = {}
_num_threads: int | None = None
_create_lock = threading.Lock()   # one interpreter creation at a time (never the same one twice)


def model_dir() -> Path:
    """The directory holding the model files (see the module docstring)."""
    env = os.environ.get(ENV_MODEL_DIR)
    if env:
        return Path(env)
    try:
        from importlib.resources import files
        path = Path(str(files("PIL_l3ic.tflite_models")))
        if path.is_dir():
            return path
    except (ImportError, TypeError, ValueError):
        pass
    return Path(__file__).resolve().parent.parent / "tflite_models"


def _quality(q: str | int) -> str:
    if isinstance(q, int) and not isinstance(q, bool):
        if q in QUALITY_BY_ID:
            return QUALITY_BY_ID[q]
    elif q in MODEL_IDS:
        return q
    raise ValueError(f"unknown l3ic model {q!r} (known: {', '.join(QUALITIES)})")


def model_info(quality: str | int) -> ModelInfo:
    """Metadata of one model (quality "16c"/"32c"/"64c" or model id 1/2/3), from its JSON."""
    q = _quality(quality)
    directory = model_dir()
    key = (str(directory), q)
    with _lock:
        info = _infos.get(key)
    if info is None:
        info = _load_info(directory, q)
        with _lock:
            _infos[key] = info
    return info


def _load_info(directory: Path, q: str) -> ModelInfo:
    path = directory / f"l3ic_{q}.json"
    try:
        with open(path, "rb") as f:
            meta = json.load(f)
    except FileNotFoundError:
        raise ModelError(f"l3ic model description not found: {path} (set {ENV_MODEL_DIR} to the "
                         "directory with the l3ic_<quality>.json and .tflite files)") from None
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot read l3ic model description {path}: {e}") from None
    try:
        fingerprint = bytes.fromhex(meta["fingerprint"])
        info = ModelInfo(
            quality=meta["quality"], model_id=int(meta["model_id"]),
            channels=int(meta["channels"]), codebook_min=int(meta["codebook_min"]),
            codebook_max=int(meta["codebook_max"]), latent_scale=float(meta["latent_scale"]),
            fingerprint=fingerprint, variant=str(meta.get("variant", "")),
            encoder_path=directory / meta["encoder"], decoder_path=directory / meta["decoder"],
            json_path=path, train_steps=int(meta.get("train_steps", 0)),
            refiner_path=directory / meta["refiner"] if meta.get("refiner") else None,
            refine_lambda=float(meta.get("refine_lambda", 0.0)),
            refine_lr=float(meta.get("refine_lr", 0.05)))
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ModelError(f"invalid l3ic model description {path}: {type(e).__name__}: {e}") from None
    problems = []
    if info.quality != q:
        problems.append(f"quality {info.quality!r} (expected {q!r})")
    if info.model_id != MODEL_IDS[q]:
        problems.append(f"model_id {info.model_id} (expected {MODEL_IDS[q]})")
    if info.channels != int(q[:-1]):
        problems.append(f"channels {info.channels} (expected {q[:-1]})")
    if (info.codebook_min, info.codebook_max) != (-15, 16):
        problems.append(f"codebook [{info.codebook_min}, {info.codebook_max}] (expected [-15, 16])")
    if len(fingerprint) != 8:
        problems.append("fingerprint is not 16 hex digits")
    if problems:
        raise ModelError(f"l3ic model description {path} does not match: {', '.join(problems)}")
    return info


# ----------------------------------------------------------------------------- settings

def set_num_threads(n: int | None) -> None:
    """Threads for the networks and the entropy coder; None: back to the default
    (``L3IC_NUM_THREADS`` or all cores).  Interpreters already created are dropped."""
    global _num_threads
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"number of threads must be a positive int or None, not {n!r}")
    with _create_lock, _lock:
        _num_threads = n
        _networks.clear()


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def num_threads() -> int:
    """The effective thread count (see set_num_threads)."""
    if _num_threads is not None:
        return _num_threads
    env = os.environ.get(ENV_NUM_THREADS)
    if env:
        try:
            n = int(env)
            if n >= 1:
                return n
        except ValueError:
            pass
        warnings.warn(f"ignoring {ENV_NUM_THREADS}={env!r} (not a positive integer)",
                      RuntimeWarning, stacklevel=2)
    return _cpu_count()


def reset() -> None:
    """Forget cached model descriptions and interpreters (after changing the environment)."""
    with _create_lock, _lock:
        _infos.clear()
        _networks.clear()


# ----------------------------------------------------------------------------- interpreters

def _backend() -> tuple[Any, Callable[..., Any]]:
    """(Interpreter class, load_delegate function) of the first runtime available."""
    for name in ("ai_edge_litert.interpreter", "tflite_runtime.interpreter"):
        try:
            mod = importlib.import_module(name)
            return mod.Interpreter, mod.load_delegate
        except ImportError:
            continue
    try:
        import tensorflow as tf
        return tf.lite.Interpreter, tf.lite.experimental.load_delegate
    except ImportError:
        raise ImportError("l3ic needs a TFLite runtime: pip install ai-edge-litert") from None


# LiteRT writes this to file descriptor 2 when it first applies XNNPACK; no setting turns it off
LITERT_BANNER = b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n"


@contextlib.contextmanager
def _without_litert_banner():
    """Capture file descriptor 2 for the block and pass on all it got but LITERT_BANNER, so
    that a user's terminal (and a progress bar) sees no runtime chatter; real errors still show."""
    try:
        if sys.stderr is not None:
            sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            rest = captured.read().replace(LITERT_BANNER, b"")
            if rest:
                os.write(2, rest)


class Network:
    """One TFLite model with its interpreter.  ``run`` is thread-safe (one lock per interpreter);
    the input tensor is resized (and tensors re-allocated) only when the shape changes."""

    def __init__(self, info: ModelInfo, kind: str):
        self.info = info
        self.kind = kind
        self._open({"encoder": info.encoder_path, "decoder": info.decoder_path,
                    "refiner": info.refiner_path}[kind])

    def _open(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._shape: tuple | None = None    # the input shapes the tensors are allocated for
        self._allocated = False
        self.delegate: str | None = None
        self._interpreter = self._create()

    def _create(self):
        interpreter_cls, load_delegate = _backend()
        if self.path is None or not self.path.is_file():
            raise ModelError(f"l3ic model file not found: {self.path} "
                             f"(described by {self.info.json_path})")
        kwargs: dict[str, Any] = {"num_threads": num_threads()}
        gpu = os.environ.get(ENV_GPU_DELEGATE)
        if gpu:
            try:
                ctypes.CDLL(gpu)   # fails cleanly (load_delegate leaves a broken object behind)
                kwargs["experimental_delegates"] = [load_delegate(gpu)]
                self.delegate = gpu
            except (OSError, ValueError, RuntimeError) as e:
                warnings.warn(f"{ENV_GPU_DELEGATE}: cannot load GPU delegate {gpu!r} ({e}); "
                              "running on the CPU", RuntimeWarning, stacklevel=4)
        try:
            it = interpreter_cls(model_path=str(self.path), **kwargs)
        except (ValueError, RuntimeError) as e:
            if "experimental_delegates" not in kwargs:
                raise ModelError(f"cannot load l3ic model file {self.path}: {e}") from None
            warnings.warn(f"{ENV_GPU_DELEGATE}: GPU delegate {gpu!r} failed on {self.path.name} "
                          f"({e}); running on the CPU", RuntimeWarning, stacklevel=4)
            del kwargs["experimental_delegates"]
            self.delegate = None
            try:
                it = interpreter_cls(model_path=str(self.path), **kwargs)
            except (ValueError, RuntimeError) as e2:
                raise ModelError(f"cannot load l3ic model file {self.path}: {e2}") from None
        self._check(it)
        self._in = it.get_input_details()[0]["index"]
        self._out = it.get_output_details()[0]["index"]
        return it

    def _check(self, it) -> None:
        c = self.info.channels
        want_in, want_out = ((3, c) if self.kind == "encoder" else (c, 3))
        ins, outs = it.get_input_details(), it.get_output_details()
        problems = []
        if len(ins) != 1 or len(outs) != 1:
            problems.append(f"{len(ins)} inputs and {len(outs)} outputs (expected 1 and 1)")
        else:
            for what, d, want in (("input", ins[0], want_in), ("output", outs[0], want_out)):
                sig = list(d.get("shape_signature", d["shape"]))
                if len(sig) != 4 or sig[-1] != want or d["dtype"].__name__ != "float32":
                    problems.append(f"{what} {sig} {d['dtype'].__name__} "
                                    f"(expected [1, H, W, {want}] float32)")
        if problems:
            raise ModelError(f"l3ic model file {self.path} does not match "
                             f"{self.info.json_path.name}: {'; '.join(problems)}")

    def _resize(self, shapes: dict[int, tuple[int, ...]]) -> None:
        """Resize the inputs {tensor index: shape} and re-allocate, only when the shapes differ
        from the last call's (call with self._lock held)."""
        key = tuple(sorted(shapes.items()))
        if key != self._shape:
            first = not self._allocated     # the first allocation applies XNNPACK
            self._shape = None              # a failed resize must not look current
            for index, shape in shapes.items():
                self._interpreter.resize_tensor_input(index, shape)
            with _without_litert_banner() if first else contextlib.nullcontext():
                self._interpreter.allocate_tensors()
            self._allocated = True
            self._shape = key

    def run(self, shape: tuple[int, ...], fill: Callable[[Any], None],
            take: Callable[[Any], Any]) -> Any:
        """Run once on an input of ``shape`` (1, H, W, C_in): ``fill(buffer)`` writes the input
        straight into the interpreter's float32 input tensor, ``take(output)`` reads the output
        tensor (a view, valid only during the call) and its result is returned."""
        shape = tuple(int(s) for s in shape)
        with self._lock:
            it = self._interpreter
            self._resize({self._in: shape})
            buf = it.tensor(self._in)()
            fill(buf)
            del buf   # the interpreter refuses to run while views of its tensors exist
            it.invoke()
            out = it.tensor(self._out)()
            try:
                return take(out)
            finally:
                del out


class Refiner(Network):
    """The refiner network (refine.py): inputs latent (1, h, w, C) and image (1, 8h, 8w, 3),
    outputs dD/dlatent (1, h, w, C) and the distortion D (one value); called as a function on
    (h, w, C) and (8h, 8w, 3) float32 arrays."""

    def _check(self, it) -> None:
        c = self.info.channels
        ins = {int(d["shape_signature"][-1]): d["index"] for d in it.get_input_details()
               if len(d["shape_signature"]) == 4 and d["dtype"].__name__ == "float32"}
        outs = it.get_output_details()
        grad = [d["index"] for d in outs if len(d["shape_signature"]) == 4
                and int(d["shape_signature"][-1]) == c]
        value = [d["index"] for d in outs if int(np.prod(d["shape_signature"])) == 1]
        if sorted(ins) != sorted({c, 3}) or len(ins) != 2 or len(grad) != 1 or len(value) != 1:
            raise ModelError(f"l3ic refiner file {self.path} does not match "
                             f"{self.info.json_path.name}: expected inputs [1, h, w, {c}] and "
                             f"[1, H, W, 3], outputs [1, h, w, {c}] and [1]")
        self._latent_in, self._image_in = ins[c], ins[3]
        self._grad_out, self._value_out = grad[0], value[0]

    def __call__(self, latent, image):
        with self._lock:
            it = self._interpreter
            self._resize({self._latent_in: (1, *latent.shape), self._image_in: (1, *image.shape)})
            it.set_tensor(self._latent_in, latent[None].astype(np.float32, copy=False))
            it.set_tensor(self._image_in, image[None].astype(np.float32, copy=False))
            it.invoke()
            return it.get_tensor(self._grad_out)[0], float(it.get_tensor(self._value_out).ravel()[0])


class FileNetwork(Network):
    """A network of the hp family (hp_codec): one .tflite file, one float32 input of c_in
    channels and one output of c_out channels, dynamic height and width."""

    def __init__(self, path: Path, c_in: int, c_out: int):
        self.info, self.kind = None, path.name
        self._channels = (c_in, c_out)
        self._open(path)

    def _check(self, it) -> None:
        ins, outs = it.get_input_details(), it.get_output_details()
        sigs = [list(d.get("shape_signature", d["shape"])) for d in (*ins, *outs)]
        if (len(ins), len(outs)) != (1, 1) or [s[-1] for s in sigs] != list(self._channels) \
                or any(len(s) != 4 for s in sigs):
            raise ModelError(f"l3ic model file {self.path} has inputs/outputs {sigs}, expected "
                             f"[1, H, W, {self._channels[0]}] -> [1, h, w, {self._channels[1]}]")


def _cached(key: tuple, make: Callable[[], Network]) -> Network:
    """The network cached under ``key``, made (once, under the creation lock) if missing."""
    with _lock:
        net = _networks.get(key)
    if net is not None:
        return net
    with _create_lock:
        with _lock:
            net = _networks.get(key)
        if net is None:
            net = make()
            with _lock:
                _networks[key] = net
    return net


def file_network(path: Path, c_in: int, c_out: int) -> FileNetwork:
    """The FileNetwork of a model file, created on first use and cached (per thread setting)."""
    if not path.is_file():
        raise ModelError(f"l3ic model file not found: {path}")
    return _cached((str(path), "file", f"{c_in}-{c_out}"), lambda: FileNetwork(path, c_in, c_out))


def network(quality: str | int, kind: str) -> Network:
    """The encoder, decoder or refiner network of a model, created on first use and cached;
    ModelError for a refiner the model does not have."""
    if kind not in ("encoder", "decoder", "refiner"):
        raise ValueError(f"kind must be 'encoder', 'decoder' or 'refiner', not {kind!r}")
    info = model_info(quality)
    if kind == "refiner" and info.refiner_path is None:
        raise ModelError(f"l3ic model {info.quality} has no refiner ({info.json_path.name} "
                         "names none; training.export writes one)")
    return _cached((str(info.json_path), info.quality, kind),
                   lambda: (Refiner if kind == "refiner" else Network)(info, kind))

