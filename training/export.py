"""Export trained weights to the TFLite files the codec runs (tflite_models/).

    python -m training.export [--qualities 16c 32c 64c] [--variant auto|float32|...] [--source x.npz]
    python -m training.export --refiner-only [--qualities ...] [--out-dir DIR]

For each quality: encoder and decoder .tflite with dynamic height and width (interfaces in
docs/architecture.md) and l3ic_<q>.json with what the runtime needs. With --variant auto (default)
every variant is converted and measured on the validation photos (never Kodak): the fastest
variant whose PSNR stays within 0.1 dB and MS-SSIM within 0.001 of float32 (and estimated bpp
within 1 %, see within_rule) is shipped, and the measurements are printed and written to
training/runs/export_<q>.json.

Variants (encoder, decoder): float32, float16, int8 (dynamic range: int8 weights, activations
quantised on the fly), int8-static (full integer: int8 weights and activations, ranges calibrated
on training.qat.calibration_crops of the TRAINING photos, float32 input and output tensors; meant
for weights fine-tuned with training.qat), and the mixes int8-static-encoder / int8-static-decoder
(that half static, the other dynamic int8).

Each export also writes l3ic_<q>_refiner.tflite (training.refiner: dD/dlatent for encoder-side
latent refinement) and its JSON keys; --refiner-only writes just that and adds the keys to the
existing JSON in --out-dir (whose fingerprint must match the weights), leaving the rest as it was.
"""
import argparse
import json
import os
import time

import numpy as np

from training import model, weights

MODEL_IDS = {"16c": 1, "32c": 2, "64c": 3}
OUT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tflite_models")
PAIRS = {"float32": ("float32", "float32"), "float16": ("float16", "float16"),
         "int8": ("int8", "int8"), "int8-static": ("int8-static", "int8-static"),
         "int8-static-encoder": ("int8-static", "int8"),
         "int8-static-decoder": ("int8", "int8-static")}
VARIANTS = tuple(PAIRS)
BPP_TOLERANCE = 0.01   # dynamic-range int8 costs 0.1-0.2 % (its encoder's activations stay float)
# Dynamic-range int8: 2.6x faster and 1/4 the file of float32; its gradient is rougher (cosine
# 0.97 with the exact one, float32 0.9999+), yet 30 steps gained as much on validation crops
# (16c: SSIM +0.0136 / +0.0124 at +1.6 % / +0.8 % bytes, docs/refine.md).  float16 weights run
# in half precision under XNNPACK on this CPU (cosine 0.97-0.99) and are slower: not used.
REFINER_VARIANT = "int8"


def convert(fn, signature, variant, representative=None):
    """One network as TFLite; int8-static calibrates its activation ranges on `representative`
    (a list of input arrays) and keeps float32 input and output tensors."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    frozen = convert_variables_to_constants_v2(fn.get_concrete_function(signature))
    converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen])
    if variant != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]  # int8: dynamic-range weights
    if variant == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if variant == "int8-static":
        converter.representative_dataset = lambda: ([x] for x in representative)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = converter.inference_output_type = tf.float32
    return converter.convert()


def representative_data(encoder):
    """Calibration inputs for int8-static: crops of the training photos as 0..255 pixels for the
    encoder, their rounded float latents for the decoder (the same crops training.qat uses)."""
    from training import data, qat

    crops = qat.calibration_crops(data.load_training_images(qat.CALIBRATION_SIZE))
    return [np.round(c * 255.0) for c in crops], qat.representative_latents(encoder, crops)


def build(quality, source=None):
    """Keras encoder/decoder with the committed (or given .npz) weights, and their float32 arrays."""
    channels = int(quality[:-1])
    encoder, decoder = model.build_encoder(channels), model.build_decoder(channels)
    arrays, meta = weights.load_npz(source or weights.committed_path(quality))
    weights.assign_model_arrays(encoder, decoder, arrays)
    return encoder, decoder, weights.model_arrays(encoder, decoder), meta


def pixel_decoder(decoder, channels):
    """The decoder with its output mapping 255 (y + 1) / 2 folded into the last conv (depth-to-space
    only moves values) and without the final clip: it outputs pixel values, unclipped; the codec
    rounds and clips them. Three elementwise passes over the image fewer at run time."""
    import keras

    fresh = model.build_decoder(channels)
    fresh.set_weights(decoder.get_weights())
    conv = fresh.get_layer("dec_conv3")
    kernel, bias = conv.get_weights()
    conv.set_weights([kernel * 127.5, bias * 127.5 + 127.5])
    return keras.Model(fresh.input, fresh.get_layer("to_unit").input)


def tflite_halves(encoder, decoder, channels, variants, representative=None):
    """{(role, variant): bytes} for role "encoder"/"decoder" and each variant of either half."""
    import tensorflow as tf

    pixels = pixel_decoder(decoder, channels)
    fns = {"encoder": (tf.function(lambda x: encoder(x / 255.0, training=False)), 3),
           "decoder": (tf.function(lambda z: pixels(z, training=False)), channels)}
    if "int8-static" in variants and representative is None:
        representative = representative_data(encoder)
    out = {}
    for i, role in enumerate(("encoder", "decoder")):
        fn, c = fns[role]
        for v in variants:
            out[role, v] = convert(fn, tf.TensorSpec([1, None, None, c], tf.float32), v,
                                   representative[i] if v == "int8-static" else None)
    return out


def _run(model_bytes, x):
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=model_bytes, num_threads=os.cpu_count())
    inp = it.get_input_details()[0]["index"]
    it.resize_tensor_input(inp, x.shape)
    it.allocate_tensors()
    it.set_tensor(inp, x)
    t = time.perf_counter()
    it.invoke()
    return it.get_tensor(it.get_output_details()[0]["index"]), time.perf_counter() - t


def measure(enc, dec, images):
    """Mean PSNR, MS-SSIM (tf.image, on RGB), estimated bpp and network seconds on images."""
    import tensorflow as tf

    psnr, msssim, bpp, secs = [], [], [], 0.0
    for im in images:
        x = (im * 255).round().astype(np.float32)[None]
        z, t1 = _run(enc, x)
        q = np.clip(np.round(z), model.CODEBOOK_MIN, model.CODEBOOK_MAX).astype(np.float32)
        y, t2 = _run(dec, q)
        y = np.clip(np.round(y), 0, 255)
        secs += t1 + t2
        mse = np.mean((y - x) ** 2)
        psnr.append(10 * np.log10(255 ** 2 / max(mse, 1e-10)))
        msssim.append(float(tf.image.ssim_multiscale(tf.constant(x), tf.constant(y), 255.0)[0]))
        bpp.append(model.empirical_bits(q[0].astype(np.int32)) / (x.shape[1] * x.shape[2]))
    return {"psnr": float(np.mean(psnr)), "ms_ssim": float(np.mean(msssim)),
            "bpp_estimate": float(np.mean(bpp)), "network_seconds": secs}


def choose_variant(pairs, images):
    results = {v: measure(*pairs[v], images) for v in pairs}
    return min(within_rule(results), key=lambda v: results[v]["network_seconds"]), results


def within_rule(results):
    """The variants whose PSNR stays within 0.1 dB and MS-SSIM within 0.001 of float32, and whose
    estimated bpp stays within BPP_TOLERANCE of float32's: a variant that quantises the encoder's
    activations moves latents across rounding boundaries and can buy its PSNR with bits (the QAT
    32c's int8-static-encoder: +0.06 dB, +2.7 % bpp against its float32; docs/speed.md)."""
    ref = results["float32"]
    return [v for v, r in results.items() if ref["psnr"] - r["psnr"] <= 0.1
            and ref["ms_ssim"] - r["ms_ssim"] <= 0.001
            and r["bpp_estimate"] <= ref["bpp_estimate"] * (1 + BPP_TOLERANCE)]


def export(quality, variant="auto", source=None, out_dir=OUT_DIR):
    from training.data import load_validation_images

    encoder, decoder, arrays, meta = build(quality, source)
    channels = int(quality[:-1])
    candidates = VARIANTS if variant == "auto" else (variant,)
    halves = tflite_halves(encoder, decoder, channels, {h for v in candidates for h in PAIRS[v]})
    pairs = {v: (halves["encoder", PAIRS[v][0]], halves["decoder", PAIRS[v][1]]) for v in candidates}
    results = None
    if variant == "auto":
        variant, results = choose_variant(pairs, load_validation_images(512))
        for v, r in results.items():
            print(f"{quality} {v:19s} psnr {r['psnr']:.3f} ms-ssim {r['ms_ssim']:.5f} "
                  f"bpp~ {r['bpp_estimate']:.3f} net {r['network_seconds']:.2f}s", flush=True)
    enc, dec = pairs[variant]
    fp = _fingerprint(arrays, variant)
    names = {"encoder": f"l3ic_{quality}_encoder.tflite", "decoder": f"l3ic_{quality}_decoder.tflite"}
    os.makedirs(out_dir, exist_ok=True)
    for key, blob in (("encoder", enc), ("decoder", dec)):
        with open(os.path.join(out_dir, names[key]), "wb") as f:
            f.write(blob)
    info = {"quality": quality, "model_id": MODEL_IDS[quality], "channels": channels,
            "codebook_min": model.CODEBOOK_MIN, "codebook_max": model.CODEBOOK_MAX,
            "latent_scale": float(arrays["encoder/latent_scale/0"]), "fingerprint": fp,
            "variant": variant, **names, "train_steps": int(meta.get("step", 0))}
    write_refiner(quality, decoder, meta, out_dir, info)
    _write_json(os.path.join(out_dir, f"l3ic_{quality}.json"), info)
    if results:
        os.makedirs(os.path.join(os.path.dirname(OUT_DIR), "training", "runs"), exist_ok=True)
        with open(os.path.join(os.path.dirname(__file__), "runs", f"export_{quality}.json"), "w") as f:
            json.dump({"chosen": variant, "validation": results}, f, indent=2)
    print(f"{quality}: {variant}, fingerprint {fp}, {len(enc) + len(dec)} bytes", flush=True)
    return info


def _fingerprint(arrays, variant):
    """The fingerprint files record: the trained weights and the exported variant."""
    return weights.fingerprint({**arrays, "variant": np.frombuffer(variant.encode(), np.uint8)})


def _write_json(path, info):
    with open(path, "w") as f:
        json.dump(info, f, indent=2)
        f.write("\n")


def write_refiner(quality, decoder, meta, out_dir, info):
    """Write l3ic_<q>_refiner.tflite and add its keys to info: the file, the rate weight (the
    training lambda, per bpp with MSE on [0,1], times REFINE_LAMBDA_GAIN), the Adam step size and
    the SSIM / MS-SSIM weights of the distortion it differentiates."""
    from training import refiner

    ssim_w, ms_ssim_w = refiner.REFINE_WEIGHTS[quality]
    blob = refiner.convert_refiner(decoder, int(quality[:-1]), ssim_w, ms_ssim_w, REFINER_VARIANT)
    info.update(refiner=f"l3ic_{quality}_refiner.tflite",
                refine_lambda=float(meta["lmbda"]) * refiner.REFINE_LAMBDA_GAIN,
                refine_lr=refiner.REFINE_LR[quality],
                refine_ssim_weight=ssim_w, refine_ms_ssim_weight=ms_ssim_w)
    with open(os.path.join(out_dir, info["refiner"]), "wb") as f:
        f.write(blob)
    print(f"{quality}: refiner {REFINER_VARIANT}, {len(blob)} bytes", flush=True)


def export_refiner(quality, source=None, out_dir=OUT_DIR):
    """--refiner-only: the refiner of the weights that out_dir's l3ic_<q>.json was exported from."""
    _, decoder, arrays, meta = build(quality, source)
    path = os.path.join(out_dir, f"l3ic_{quality}.json")
    with open(path) as f:
        info = json.load(f)
    if _fingerprint(arrays, info["variant"]) != info["fingerprint"]:
        raise SystemExit(f"{path}: fingerprint does not match the weights; export them first")
    write_refiner(quality, decoder, meta, out_dir, info)
    _write_json(path, info)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--qualities", nargs="+", default=["16c", "32c", "64c"], choices=list(MODEL_IDS))
    p.add_argument("--variant", default="auto", choices=("auto",) + VARIANTS)
    p.add_argument("--source", help="an .npz to export instead of the committed weights (one quality)")
    p.add_argument("--out-dir", default=OUT_DIR, help="where the model files go (default: "
                   "tflite_models/; another directory is used through L3IC_MODEL_DIR)")
    p.add_argument("--refiner-only", action="store_true", help="only write the refiner and add "
                   "its keys to the existing l3ic_<q>.json in --out-dir")
    args = p.parse_args(argv)
    for q in args.qualities:
        if args.refiner_only:
            export_refiner(q, args.source, args.out_dir)
        else:
            export(q, args.variant, args.source, args.out_dir)


if __name__ == "__main__":
    main()
