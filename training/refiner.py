"""The "refiner": a TFLite model that gives the encoder dD/dlatent for latent refinement.

At encode time the codec may run a few Adam steps on the latent to lower distortion + lambda
rate through the fixed decoder. The runtime has only LiteRT, and TF's autodiff graph does not
convert to TFLite builtins (LeakyReluGrad, DepthwiseConv2dNativeBackpropInput, Cumprod, ...), so
the backward pass is written out here as an explicit vector-Jacobian product of forward ops only:

* a stride-1 'same' conv's VJP is a 'same' conv with the kernel rotated 180 degrees and its
  in/out channels swapped; depth_to_space's is space_to_depth; leaky_relu's a select on the
  forward pre-activation; clip's a mask;
* SSIM-type map means are differentiated analytically: with mu = G x etc. the gradient w.r.t. y
  is G^T(dS/dmu_y) + x G^T(dS/dE[xy]) + 2 y G^T(dS/dE[y^2]) (over the map size), where G^T, the
  adjoint of 'valid' Gaussian filtering, is zero-padding by 10 and the same filter (symmetric);
* a 2x2 'VALID' average pool's VJP spreads g/4 over the 2x2 block (zero for a dropped odd edge).

D per image (x = image / 255, y = decoder output, both in [0,1]), as the models were trained:
    D = MSE + ssim_weight (1 - SSIM) + ms_ssim_weight (1 - MS-SSIM)
SSIM: training.model.ssim_loss (mean of luminance x cs over map and channels). MS-SSIM: the five
standard scales and weights, 2x2 'VALID' average pooling between scales (as training's
ms_ssim_loss; PIL_l3ic.metrics pads odd sizes instead, which differs only for odd pooled sizes),
per scale and channel the mean cs (luminance x cs at the coarsest), clamped below at 0.01 as in
training (zero gradient there), product of the weighted powers, mean over channels.
The MS-SSIM term needs H, W >= 176 (11 pixels at the coarsest scale); the runtime skips
refinement below that. The rate term lives in the runtime (it is cheap and needs no network).
"""
import numpy as np
import tensorflow as tf

from training import model

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
MS_SSIM_MIN_SIZE = 176        # 11-pixel window at the coarsest of 5 scales
# The refinement's rate weight is the training lambda times this: with the training lambda alone,
# 30 steps raised the bytes by 0.8-1.6 % (16c) and 0.2 % (64c) on validation crops; x1.5 keeps
# them level (-0.3 %, -0.1 %) for about the same quality gain (docs/refine.md).
REFINE_LAMBDA_GAIN = 1.5
# Adam step size (latent units, cosine to 0) per model, from 30-step runs on validation crops:
# 64c gained +0.0048 / +0.0064 / +0.0074 SSIM at 0.05 / 0.1 / 0.2, 16c lost MS-SSIM above 0.05
# (+0.0018 / +0.0012 / +0.0006 at equal SSIM gains); docs/refine.md.
REFINE_LR = {"16c": 0.05, "32c": 0.1, "64c": 0.2}
REFINE_WEIGHTS = {"16c": (0.15, 0.06), "32c": (0.06, 0.03), "64c": (0.18, 0.08)}  # (ssim, ms_ssim)
_C1, _C2, _FLOOR, _PAD = 0.01 ** 2, 0.03 ** 2, 0.01, 10
_G = np.exp(-((np.arange(11) - 5) ** 2) / (2 * 1.5 ** 2))
_G = (_G / _G.sum()).astype(np.float32)


def _gauss(x):
    """Separable 11-tap Gaussian, 'valid', per channel (depthwise: a TFLite builtin)."""
    c = x.shape[-1]
    x = tf.nn.depthwise_conv2d(x, np.tile(_G.reshape(11, 1, 1, 1), (1, 1, c, 1)), [1] * 4, "VALID")
    return tf.nn.depthwise_conv2d(x, np.tile(_G.reshape(1, 11, 1, 1), (1, 1, c, 1)), [1] * 4, "VALID")


def _gauss_t(g):
    """Adjoint of _gauss: zero-pad by 10 on every side, then the same (symmetric) filter."""
    return _gauss(tf.pad(g, [[0, 0], [_PAD, _PAD], [_PAD, _PAD], [0, 0]]))


def _stats(x, y):
    """Filtered statistics and the luminance and contrast-structure maps, kept for the VJP."""
    f = _gauss(tf.concat([x, y, x * x, y * y, x * y], -1))   # one filter pass for all five
    mx, my, exx, eyy, exy = tf.split(f, 5, -1)
    q1 = mx * mx + my * my + _C1
    q2 = (exx - mx * mx) + (eyy - my * my) + _C2
    lum = (2 * mx * my + _C1) / q1
    cs = (2 * (exy - mx * my) + _C2) / q2
    return dict(mx=mx, my=my, q1=q1, q2=q2, lum=lum, cs=cs)


def _map_vjp(x, y, s, g_lum, g_cs):
    """dLoss/dy given dLoss/d(luminance map) (None: unused) and dLoss/d(cs map) (broadcastable)."""
    g_sxy = g_cs * 2.0 / s["q2"]
    g_syy = -g_cs * s["cs"] / s["q2"]
    g_my = -s["mx"] * g_sxy - 2.0 * s["my"] * g_syy    # sxy = E[xy] - mx my, syy = E[yy] - my^2
    if g_lum is not None:                               # and directly, through luminance
        g_my += g_lum * 2.0 * (s["mx"] - s["lum"] * s["my"]) / s["q1"]
    g_my, g_exy, g_eyy = tf.split(_gauss_t(tf.concat([g_my, g_sxy, g_syy], -1)), 3, -1)
    return g_my + x * g_exy + 2.0 * y * g_eyy


def _count(t):
    """Number of map positions (height x width) of a (1, h, w, c) tensor, as float."""
    return tf.cast(tf.shape(t)[1] * tf.shape(t)[2], tf.float32)


def _pool_vjp(g, like):
    """VJP of 2x2 'VALID' average pooling: g/4 on each pixel of its block (nearest upsampling
    as concat + depth_to_space), zeros on the odd last row/column that the pool dropped."""
    up = tf.nn.depth_to_space(tf.concat([g, g, g, g], -1), 2) * 0.25
    extra = tf.shape(like)[1:3] - tf.shape(up)[1:3]
    return tf.pad(up, [[0, 0], [0, extra[0]], [0, extra[1]], [0, 0]])


def distortion_and_grad(x, y, ssim_weight, ms_ssim_weight):
    """(D shaped [1], dD/dy) for x, y of shape (1, H, W, 3) in [0,1]."""
    d = tf.reduce_mean(tf.square(x - y), axis=[1, 2, 3])
    grad = 2.0 * (y - x) / tf.cast(tf.size(y), tf.float32)
    if ssim_weight:
        s = _stats(x, y)
        d += ssim_weight * (1.0 - tf.reduce_mean(s["lum"] * s["cs"], axis=[1, 2, 3]))
        g = -ssim_weight / (3.0 * _count(s["cs"]))                  # d/d(each map element)
        grad += _map_vjp(x, y, s, g * s["cs"], g * s["lum"])
    if ms_ssim_weight:
        xs, ys, stats, terms, live = [x], [y], [], [], []
        for j in range(len(MS_SSIM_WEIGHTS)):
            if j:
                xs.append(tf.nn.avg_pool2d(xs[-1], 2, 2, "VALID"))
                ys.append(tf.nn.avg_pool2d(ys[-1], 2, 2, "VALID"))
            s = _stats(xs[j], ys[j])
            m = s["cs"] * s["lum"] if j == len(MS_SSIM_WEIGHTS) - 1 else s["cs"]
            mean = tf.reduce_mean(m, axis=[1, 2], keepdims=True)    # (1, 1, 1, 3)
            stats.append(s)
            terms.append(tf.maximum(mean, _FLOOR))
            live.append(tf.cast(mean > _FLOOR, tf.float32))          # clamped: no gradient
        per_channel = 1.0
        for t, w in zip(terms, MS_SSIM_WEIGHTS):
            per_channel = per_channel * tf.pow(t, w)
        d += ms_ssim_weight * (1.0 - tf.reduce_mean(per_channel, axis=[1, 2, 3]))
        g_y = 0.0
        for j in reversed(range(len(MS_SSIM_WEIGHTS))):             # coarsest first
            s = stats[j]
            # d/d(term_j) of -w_ms mean_c prod_k term_k^w_k, spread over the map mean
            g = (-ms_ssim_weight / 3.0 * per_channel * MS_SSIM_WEIGHTS[j] / terms[j] * live[j]
                 / _count(s["cs"]))
            if j == len(MS_SSIM_WEIGHTS) - 1:
                local = _map_vjp(xs[j], ys[j], s, g * s["cs"], g * s["lum"])
            else:
                local = _map_vjp(xs[j], ys[j], s, None, g)
            g_y = local if j == len(MS_SSIM_WEIGHTS) - 1 else local + _pool_vjp(g_y, ys[j])
        grad += g_y
    return d, grad


def _decoder_arrays(decoder):
    """{layer name: (kernel, bias, kernel for the VJP)} and the inverse scale, as numpy."""
    convs = {}
    for name in ["dec_latent", "dec_conv2", "dec_conv3"] + [
            f"dec_res{i}_conv{k}" for i in range(3) for k in (1, 2)]:
        kernel, bias = (np.asarray(a, np.float32) for a in decoder.get_layer(name).get_weights())
        convs[name] = (kernel, bias, np.ascontiguousarray(kernel[::-1, ::-1].transpose(0, 1, 3, 2)))
    scale = float(np.asarray(decoder.get_layer("inverse_scale").get_weights()[0]))
    return convs, scale


def refiner_function(decoder, ssim_weight, ms_ssim_weight):
    """tf.function (latent (1,h,w,C) codebook values, image (1,8h,8w,3) pixels 0..255) ->
    (dD/dlatent, D shaped [1]), built from forward ops only (the decoder's weights as constants)."""
    convs, scale = _decoder_arrays(decoder)

    def conv(x, name):
        return tf.nn.conv2d(x, convs[name][0], 1, "SAME") + convs[name][1]

    def conv_vjp(g, name):
        return tf.nn.conv2d(g, convs[name][2], 1, "SAME")

    def leak_vjp(g, act):   # act > 0 exactly where the pre-activation is (the mask from the
        return tf.where(act > 0, g, model.LEAK * g)   # output lets grappler fuse conv+leaky)

    @tf.function
    def refine(latent, image):
        # forward, keeping the activations the backward pass needs
        h = tf.nn.depth_to_space(conv(latent * scale, "dec_latent"), 2)
        acts = []
        for i in range(3):
            acts.append(tf.nn.leaky_relu(conv(h, f"dec_res{i}_conv1"), model.LEAK))
            h = h + conv(acts[-1], f"dec_res{i}_conv2")
        act2 = tf.nn.leaky_relu(conv(h, "dec_conv2"), model.LEAK)
        h = tf.nn.depth_to_space(act2, 2)
        u = (tf.nn.depth_to_space(conv(h, "dec_conv3"), 2) + 1.0) / 2.0
        y = tf.clip_by_value(u, 0.0, 1.0)
        d, g = distortion_and_grad(image / 255.0, y, ssim_weight, ms_ssim_weight)
        # backward: clip passes the gradient inside [0, 1] (as TF's ClipByValue gradient)
        g = tf.where(tf.abs(u - 0.5) <= 0.5, 0.5 * g, 0.0)
        g = conv_vjp(tf.nn.space_to_depth(g, 2), "dec_conv3")
        g = conv_vjp(leak_vjp(tf.nn.space_to_depth(g, 2), act2), "dec_conv2")
        for i in reversed(range(3)):    # residual: identity plus the branch
            branch = leak_vjp(conv_vjp(g, f"dec_res{i}_conv2"), acts[i])
            g = g + conv_vjp(branch, f"dec_res{i}_conv1")
        g = conv_vjp(tf.nn.space_to_depth(g, 2), "dec_latent") * scale
        return g, d

    return refine


def _ms_ssim(x, y):
    """Straightforward 5-scale MS-SSIM (the definition above), for reference_gradient."""
    prod = 1.0
    for j, w in enumerate(MS_SSIM_WEIGHTS):
        if j:
            x, y = tf.nn.avg_pool2d(x, 2, 2, "VALID"), tf.nn.avg_pool2d(y, 2, 2, "VALID")
        lum, cs = model._ssim_maps(x, y)
        m = cs * lum if j == len(MS_SSIM_WEIGHTS) - 1 else cs
        prod = prod * tf.maximum(tf.reduce_mean(m, axis=[1, 2]), _FLOOR) ** w
    return tf.reduce_mean(prod, axis=-1)


def reference_gradient(decoder, latent, image, ssim_weight, ms_ssim_weight):
    """(dD/dlatent, D) by tf.GradientTape through the Keras decoder: the check for the above."""
    latent = tf.constant(latent, tf.float32)
    x = tf.constant(image, tf.float32) / 255.0
    with tf.GradientTape() as tape:
        tape.watch(latent)
        y = decoder(latent, training=False)
        d = tf.reduce_mean(tf.square(x - y), axis=[1, 2, 3])
        if ssim_weight:
            d += ssim_weight * model.ssim_loss(x, y)
        if ms_ssim_weight:
            d += ms_ssim_weight * (1.0 - _ms_ssim(x, y))
    return tape.gradient(d, latent).numpy(), d.numpy()


def convert_refiner(decoder, channels, ssim_weight, ms_ssim_weight, variant="float32") -> bytes:
    """The refiner as TFLite, builtin ops only; variant "float16" = float16 weights (half the
    file, computed in float32), "int8" = dynamic-range int8 weights."""
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    fn = refiner_function(decoder, ssim_weight, ms_ssim_weight)
    frozen = convert_variables_to_constants_v2(fn.get_concrete_function(
        tf.TensorSpec([1, None, None, channels], tf.float32),
        tf.TensorSpec([1, None, None, 3], tf.float32)))
    converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if variant in ("int8", "float16"):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if variant == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif variant not in ("int8", "float32"):
        raise ValueError(f"unknown refiner variant {variant!r}")
    return converter.convert()
