"""The l3ic auto-encoder (after Theis et al. 2017), quantiser and rate estimate, in Keras 3 / TF.

Encoder: [0,1] RGB -> [-1,1] -> Conv64 k5 s2 + LReLU -> Conv128 k5 s2 -> 3 residual blocks
         -> ConvN k5 s2 -> x latent scale.                      (latent H/8 x W/8 x N)
Decoder: latent / scale -> Conv512 k3 -> depth-to-space 2 -> 3 residual blocks
         -> Conv256 k3 + LReLU -> d2s 2 -> Conv12 k3 -> d2s 2 -> (y+1)/2 clipped to [0,1].

Training-speed choices (see docs/training.md): the second conv of every residual branch starts at
zero, so each block starts as the identity and the network trains like a shallow one first; the
output conv starts small, so the first images are mid-grey rather than clipped noise.

``bfloat16=True`` (train.py --precision bfloat16) computes the wide layers (every conv with 64 or
more outputs, its activation and the residual adds) in bfloat16 with float32 weights (Keras'
"mixed_bfloat16"): ~3x faster training on CPUs with AMX (docs/training.md). The layers that make
or read the latent, and the output conv, stay float32, so rounding to the codebook sees the same
precision as the float32 inference networks.
"""
import keras
import numpy as np
import tensorflow as tf
from keras import layers

CODEBOOK_MIN, CODEBOOK_MAX = -15, 16  # 32 integer values: index = value + 15
LEAK = 0.2
INITIAL_LATENT_SCALE = 2.0


class Scale(layers.Layer):
    """Multiply by one trainable scalar (the latent scale and its inverse in the decoder)."""

    def __init__(self, initial=1.0, **kwargs):
        super().__init__(**kwargs)
        self.initial = float(initial)

    def build(self, input_shape):
        self.scale = self.add_weight(shape=(), initializer=keras.initializers.Constant(self.initial),
                                     name="scale")

    def call(self, x):
        return x * self.scale

    def get_config(self):
        return {**super().get_config(), "initial": self.initial}


class DepthToSpace(layers.Layer):
    def call(self, x):
        return tf.nn.depth_to_space(x, 2)


def _conv(filters, kernel, name, stride=1, zero=False, small=False, dtype=None):
    init = "zeros" if zero else keras.initializers.HeNormal()
    if small:  # output layer: start near mid-grey so the final clip does not block gradients
        init = keras.initializers.VarianceScaling(0.01, "fan_in", "truncated_normal")
    return layers.Conv2D(filters, kernel, strides=stride, padding="same", name=name,
                         kernel_initializer=init, dtype=dtype)


def _wide(bfloat16: bool):
    """The dtype policy of the wide layers (None: the global policy, float32, which every other
    layer keeps; Keras casts their bfloat16 inputs to float32)."""
    return "mixed_bfloat16" if bfloat16 else None


def _residual_block(x, name, zero_init, dtype=None):
    y = _conv(128, 3, f"{name}_conv1", dtype=dtype)(x)
    y = layers.LeakyReLU(LEAK, dtype=dtype)(y)
    y = _conv(128, 3, f"{name}_conv2", zero=zero_init, dtype=dtype)(y)
    return layers.Add(name=f"{name}_add", dtype=dtype)([x, y])


def build_encoder(channels: int, zero_init: bool = True, bfloat16: bool = False) -> keras.Model:
    wide = _wide(bfloat16)
    x_in = keras.Input((None, None, 3), name="image")
    x = layers.Rescaling(2.0, offset=-1.0)(x_in)
    x = _conv(64, 5, "enc_conv1", stride=2, dtype=wide)(x)
    x = layers.LeakyReLU(LEAK, dtype=wide)(x)
    x = _conv(128, 5, "enc_conv2", stride=2, dtype=wide)(x)
    for i in range(3):
        x = _residual_block(x, f"enc_res{i}", zero_init, wide)
    x = _conv(channels, 5, "enc_latent", stride=2)(x)  # touches the latent: not warm-started
    z = Scale(INITIAL_LATENT_SCALE, name="latent_scale")(x)
    return keras.Model(x_in, z, name=f"encoder{channels}")


def build_decoder(channels: int, zero_init: bool = True, bfloat16: bool = False) -> keras.Model:
    wide = _wide(bfloat16)
    z_in = keras.Input((None, None, channels), name="latent")
    x = Scale(1.0 / INITIAL_LATENT_SCALE, name="inverse_scale")(z_in)
    x = _conv(512, 3, "dec_latent")(x)  # touches the latent: not warm-started
    x = DepthToSpace()(x)
    for i in range(3):
        x = _residual_block(x, f"dec_res{i}", zero_init, wide)
    x = _conv(256, 3, "dec_conv2", dtype=wide)(x)
    x = layers.LeakyReLU(LEAK, dtype=wide)(x)
    x = DepthToSpace(dtype=wide)(x)
    x = _conv(12, 3, "dec_conv3", small=zero_init)(x)
    x = DepthToSpace()(x)
    y = layers.Lambda(lambda t: tf.clip_by_value((t + 1.0) / 2.0, 0.0, 1.0), name="to_unit")(x)
    return keras.Model(z_in, y, name=f"decoder{channels}")


def quantise(z, mode: str):
    """Clip to the codebook range, then: 'noise' adds U(-0.5,0.5) (warm-up), 'hard' rounds with a
    straight-through gradient, 'eval' rounds."""
    z = tf.clip_by_value(z, CODEBOOK_MIN, CODEBOOK_MAX)
    if mode == "noise":
        return z + tf.random.uniform(tf.shape(z), -0.5, 0.5)
    if mode == "hard":
        return z + tf.stop_gradient(tf.round(z) - z)
    return tf.round(z)


def _codebook_weights(z):
    """Soft assignment of every value (clipped to the codebook range) to the 32 codebook entries:
    a triangular kernel over the two nearest, so histograms are smooth functions of z.
    Shape: z's shape + (32,)."""
    z = tf.clip_by_value(z, CODEBOOK_MIN, CODEBOOK_MAX)
    centers = tf.range(CODEBOOK_MIN, CODEBOOK_MAX + 1, dtype=z.dtype)
    return tf.nn.relu(1.0 - tf.abs(z[..., None] - centers))


def soft_histogram_bits(z, channel_weights=None):
    """Differentiable entropy estimate in bits per latent value, computed per channel (as the
    channel-wise entropy coder codes them) and averaged over channels (each counted with its
    channel_weights entry, when given: 0 leaves a channel's rate out of the loss).

    Each value spreads its mass over the two nearest codebook entries (triangular kernel), so the
    histogram is a smooth function of z and its entropy has a useful gradient."""
    flat = tf.reshape(z, [-1, tf.shape(z)[-1]])  # (values, channels)
    p = tf.reduce_mean(_codebook_weights(flat), axis=0)  # (channels, 32)
    p = p / tf.reduce_sum(p, axis=-1, keepdims=True)
    h = -tf.reduce_sum(p * tf.math.log(p + 1e-9), axis=-1) / np.log(2.0)
    if channel_weights is not None:
        h = h * channel_weights
    return tf.reduce_mean(h)


def _context_ids(s, axes):
    """The entropy coder's context of every symbol (docs/entropy.md, 'tans-ctx'): m = the most
    frequent symbol of the channel (ties: the lowest) over `axes`, a = min(|s - m|, 3),
    d = a(left) + a(up) with 0 outside, context 0 if d = 0, 1 if d <= 2, else 2.
    s: integer-valued (B, h, w, C) tensor, no gradient."""
    hist = tf.reduce_sum(tf.one_hot(tf.cast(s, tf.int32) - CODEBOOK_MIN, 32, dtype=s.dtype),
                         axis=axes, keepdims=True)                    # argmax: the first maximum
    m = tf.cast(tf.argmax(hist, axis=-1), s.dtype) + CODEBOOK_MIN   # (.., C) over the kept axes
    a = tf.minimum(tf.abs(s - m), 3.0)
    left = tf.pad(a[:, :, :-1], [[0, 0], [0, 0], [1, 0], [0, 0]])
    up = tf.pad(a[:, :-1], [[0, 0], [1, 0], [0, 0], [0, 0]])
    d = left + up
    return tf.cast(tf.minimum(d, 1.0) + tf.cast(d > 2.0, d.dtype), tf.int32)  # 0, 1, 2


def soft_histogram_bits_context(z, channel_weights=None):
    """As soft_histogram_bits, but the entropy of each symbol given its coder context (three
    contexts from the left and upper neighbours, the channel's mode taken over the batch): the
    rate the context coder pays, so training can learn latents that it codes cheaply.
    The contexts come from the rounded latent without gradient; the histograms stay soft."""
    rounded = tf.stop_gradient(tf.round(tf.clip_by_value(z, CODEBOOK_MIN, CODEBOOK_MAX)))
    ctx = tf.one_hot(_context_ids(rounded, axes=(0, 1, 2)), 3, dtype=z.dtype)  # (B, h, w, C, 3)
    joint = tf.einsum("bhwck,bhwcs->cks", ctx, _codebook_weights(z))  # (C, 3, 32) soft counts
    per_ctx = tf.reduce_sum(joint, axis=-1, keepdims=True)
    bits = -tf.reduce_sum(joint * tf.math.log(joint / (per_ctx + 1e-9) + 1e-9), axis=[1, 2])
    if channel_weights is not None:
        bits = bits * channel_weights
    n = tf.cast(tf.reduce_prod(tf.shape(z)[:3]), z.dtype)
    return tf.reduce_mean(bits) / n / np.log(2.0)


# MS-SSIM on training patches: the three finest scales of the standard five (a 64-pixel patch has
# no room for more with the 11-pixel window), their weights renormalised to sum to 1.
PATCH_MS_SSIM_WEIGHTS = tuple(w / (0.0448 + 0.2856 + 0.3001) for w in (0.0448, 0.2856, 0.3001))
_MS_SSIM_FLOOR = 0.01   # per-scale terms are clamped here before their fractional powers


def _gaussian_filter(x, size=11, sigma=1.5):
    """Separable Gaussian, 'valid', per channel (NHWC)."""
    g = np.exp(-((np.arange(size) - size // 2) ** 2) / (2 * sigma ** 2))
    g = tf.constant(g / g.sum(), x.dtype)
    c = x.shape[-1]
    x = tf.nn.depthwise_conv2d(x, tf.tile(tf.reshape(g, [size, 1, 1, 1]), [1, 1, c, 1]),
                               [1, 1, 1, 1], "VALID")
    return tf.nn.depthwise_conv2d(x, tf.tile(tf.reshape(g, [1, size, 1, 1]), [1, 1, c, 1]),
                                  [1, 1, 1, 1], "VALID")


def _ssim_maps(x, y):
    """SSIM's luminance and contrast-structure maps of images in [0,1] (11-pixel Gaussian window,
    'valid'), shared by the SSIM and MS-SSIM losses."""
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    mx, my = _gaussian_filter(x), _gaussian_filter(y)
    sxx = _gaussian_filter(x * x) - mx * mx
    syy = _gaussian_filter(y * y) - my * my
    sxy = _gaussian_filter(x * y) - mx * my
    return (2 * mx * my + c1) / (mx * mx + my * my + c1), (2 * sxy + c2) / (sxx + syy + c2)


def ms_ssim_loss(x, x_hat):
    """1 - MS-SSIM of images in [0,1] (batch mean), the definition of PIL_l3ic.metrics and
    tf.image.ssim_multiscale over PATCH_MS_SSIM_WEIGHTS, except that every per-scale term is
    clamped at _MS_SSIM_FLOOR (not at 0): x ** 0.07 has an infinite gradient at 0, which a
    badly decoded patch reaches (a non-finite loss in a 64c warm start)."""
    terms = []
    for i, _ in enumerate(PATCH_MS_SSIM_WEIGHTS):
        if i:
            x, x_hat = (tf.nn.avg_pool2d(t, 2, 2, "VALID") for t in (x, x_hat))
        luminance, cs = _ssim_maps(x, x_hat)
        if i == len(PATCH_MS_SSIM_WEIGHTS) - 1:   # the coarsest scale adds luminance
            cs = cs * luminance
        terms.append(tf.maximum(tf.reduce_mean(cs, axis=[1, 2]), _MS_SSIM_FLOOR))  # (batch, C)
    ms_ssim = tf.reduce_prod(tf.stack(terms) ** tf.constant(PATCH_MS_SSIM_WEIGHTS)[:, None, None],
                             axis=0)
    return 1.0 - tf.reduce_mean(ms_ssim)


def ssim_loss(x, x_hat):
    """1 - SSIM of images in [0,1] at full resolution (batch and channel mean; the single-scale
    SSIM of PIL_l3ic.metrics.ssim, 11-pixel Gaussian window): the MS-SSIM term gives this finest
    scale only 7 % of its weight, and SSIM is one of the issue's targets."""
    luminance, cs = _ssim_maps(x, x_hat)
    return 1.0 - tf.reduce_mean(luminance * cs)


def distortion(x, x_hat, ms_ssim_weight=0.0, ssim_weight=0.0, structural=True):
    """(MSE + ms_ssim_weight (1 - MS-SSIM) + ssim_weight (1 - SSIM), MSE): the training distortion.

    structural=False leaves the SSIM-family terms out; that is for the noise warm-up, where an
    untrained decoder gives contrast-structure terms <= 0 whose fractional powers have infinite
    gradients (0 x inf is NaN, so a zero weight would not do).  A weight of None also leaves its
    term out (and saves computing it)."""
    mse = tf.reduce_mean(tf.square(x - x_hat))
    total = mse
    if structural and ms_ssim_weight is not None:
        total += ms_ssim_weight * ms_ssim_loss(x, x_hat)
    if structural and ssim_weight is not None:
        total += ssim_weight * ssim_loss(x, x_hat)
    return total, mse


def _order0_bits(symbols: np.ndarray) -> float:
    """Bits of an ideal order-0 code of these codebook values (their empirical entropy x count)."""
    counts = np.bincount(symbols.ravel().astype(np.int64) - CODEBOOK_MIN, minlength=32)
    counts = counts[counts > 0].astype(np.float64)
    return float(-(counts * np.log2(counts / symbols.size)).sum())


def empirical_bits(indices: np.ndarray, table_bytes_per_channel: float = 12.0) -> float:
    """Bits of a per-channel order-0 coder for one image's latent (h, w, N), including a rough table
    cost per channel: the figure to report before the real coder is available."""
    return sum(_order0_bits(indices[..., c]) + 8 * table_bytes_per_channel
               for c in range(indices.shape[-1]))


def empirical_bits_context(indices: np.ndarray, table_bytes_per_channel: float = 30.0) -> float:
    """As empirical_bits for the context coder: per channel, the order-0 entropy of the symbols
    within each of the three contexts (mode per channel of this image), plus three tables."""
    ctx = _context_ids(tf.constant(indices[None].astype(np.float32)), axes=(0, 1, 2)).numpy()[0]
    return sum(_order0_bits(indices[..., c][ctx[..., c] == k]) for c in range(indices.shape[-1])
               for k in range(3)) + 8 * table_bytes_per_channel * indices.shape[-1]
