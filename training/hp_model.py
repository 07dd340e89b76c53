"""The variable-rate mean-scale hyperprior model ("hp" family), in Keras 3 / TF.

    x -> g_a -> y -> (x gain[q]) -> y_s -> h_a -> z -> round -> z_hat
    z_hat -> h_s -> (mu, log sigma) for every element of y_s
    y_hat_s = round(y_s - mu) + mu -> (x inverse_gain[q]) -> g_s -> x_hat

Rate: y_s - mu is modelled as a Gaussian of scale sigma convolved with a unit box (the integer the
coder sends is round(y_s - mu)); z by a per-channel non-parametric density (Balle et al. 2018,
"deep factorized"). One network serves every rate: each of the LEVELS rate-distortion trade-offs
has its own per-channel gain and inverse gain (Cui et al. 2021, gain units); a quality between two
levels interpolates their log-gains.

h_s is built from 3x3 convolutions, ReLU and depth-to-space only, so that the codec can run it in
exact integer arithmetic (the scale class of every element must be identical on every machine).

Transforms (the "transform" argument):
  "gdn16": latent at H/16 with M channels, four 5x5 stride-2 convolutions with GDN / IGDN.
  "l3ic8": today's l3ic transform (latent at H/8, 64 channels), warm-started from the 64c weights.
"""
import keras
import numpy as np
import tensorflow as tf
from keras import layers

from training import model as l3ic_model

# The rate-distortion trade-offs the levels are trained for: loss = bpp + lambda * 255^2 * MSE
# (MSE of [0,1] images), CompressAI's eight lambdas of its mean-scale model (~0.12 .. 1.6 bpp on
# Kodak).
LAMBDAS = (0.0018, 0.0035, 0.0067, 0.0130, 0.0250, 0.0483, 0.0932, 0.1800)
SCALE_MIN, SCALE_MAX = 0.11, 64.0   # sigma is clipped to this range (the coder's class range)
LIKELIHOOD_MIN = 1e-9


class GDN(layers.Layer):
    """Generalised divisive normalisation: y_i = x_i / sqrt(beta_i + sum_j gamma_ij x_j^2)
    (inverse=True multiplies instead: IGDN). beta and gamma are kept non-negative by storing
    their square roots."""

    def __init__(self, inverse=False, **kwargs):
        super().__init__(**kwargs)
        self.inverse = inverse

    def build(self, input_shape):
        c = int(input_shape[-1])
        self.beta_root = self.add_weight(shape=(c,), initializer="ones", name="beta_root")
        self.gamma_root = self.add_weight(
            shape=(1, 1, c, c), name="gamma_root",
            initializer=keras.initializers.Constant(np.sqrt(0.1) * np.eye(c)[None, None]))

    def call(self, x):
        x32 = tf.cast(x, tf.float32)
        gamma = tf.square(tf.cast(self.gamma_root, tf.float32))
        beta = tf.square(tf.cast(self.beta_root, tf.float32)) + 1e-6
        norm = tf.nn.conv2d(tf.square(x32), gamma, 1, "VALID") + beta
        y = x32 * (tf.sqrt(norm) if self.inverse else tf.math.rsqrt(norm))
        return tf.cast(y, x.dtype)

    def get_config(self):
        return {**super().get_config(), "inverse": self.inverse}


class DepthToSpace(layers.Layer):
    def call(self, x):
        return tf.nn.depth_to_space(x, 2)


def _policy(bfloat16):
    return "mixed_bfloat16" if bfloat16 else None


def build_gdn16(n=128, m=192, bfloat16=False):
    """Analysis and synthesis with the latent at H/16 x W/16 x m."""
    wide = _policy(bfloat16)
    x_in = keras.Input((None, None, 3), name="image")
    x = layers.Rescaling(2.0, offset=-1.0)(x_in)
    for i in range(3):
        x = layers.Conv2D(n, 5, 2, "same", name=f"ga_conv{i}", dtype=wide)(x)
        x = GDN(name=f"ga_gdn{i}", dtype=wide)(x)
    y = layers.Conv2D(m, 5, 2, "same", name="ga_latent")(x)
    g_a = keras.Model(x_in, y, name="g_a")

    y_in = keras.Input((None, None, m), name="latent")
    x = y_in
    for i in range(3):
        x = layers.Conv2DTranspose(n, 5, 2, "same", name=f"gs_deconv{i}", dtype=wide)(x)
        x = GDN(inverse=True, name=f"gs_igdn{i}", dtype=wide)(x)
    x = layers.Conv2DTranspose(3, 5, 2, "same", name="gs_out")(x)
    x_hat = layers.Lambda(lambda t: (t + 1.0) / 2.0, name="to_unit")(x)
    g_s = keras.Model(y_in, x_hat, name="g_s")
    return g_a, g_s


def build_l3ic8(bfloat16=False, channels=64, init_arrays=None):
    """Today's l3ic transform (latent H/8 x W/8 x channels), without the codebook clip;
    init_arrays: l3ic weights (training.weights layout) to start from."""
    g_a = l3ic_model.build_encoder(channels, bfloat16=bfloat16)
    g_s = l3ic_model.build_decoder(channels, bfloat16=bfloat16)
    if init_arrays is not None:
        from training import weights
        weights.assign_model_arrays(g_a, g_s, init_arrays)
    # training wants the decoder's output unclipped (the loss sees the overshoot); the codec clips
    out = g_s.get_layer("to_unit").input
    g_s = keras.Model(g_s.input, layers.Lambda(lambda t: (t + 1.0) / 2.0)(out), name="g_s")
    return g_a, g_s


def build_hyper(m, nz, hidden, latent_stride_log2=2):
    """h_a: y_s (m channels) -> z (nz channels, 4x coarser); h_s: z_hat -> 2m (mean, log scale).
    h_s uses only 3x3 and 1x1 convolutions, ReLU and depth-to-space (integer-exact in the
    codec); its last layer is 1x1, which keeps its cost at ~150 kMAC per latent position."""
    y_in = keras.Input((None, None, m), name="latent")
    h = layers.Conv2D(hidden, 3, 1, "same", activation="relu", name="ha_conv0")(y_in)
    h = layers.Conv2D(hidden, 5, 2, "same", activation="relu", name="ha_conv1")(h)
    z = layers.Conv2D(nz, 5, 2, "same", name="ha_conv2")(h)
    h_a = keras.Model(y_in, z, name="h_a")

    z_in = keras.Input((None, None, nz), name="z")
    h = layers.Conv2D(4 * hidden, 3, 1, "same", activation="relu", name="hs_conv0")(z_in)
    h = DepthToSpace(name="hs_d2s0")(h)
    h = layers.Conv2D(4 * hidden, 3, 1, "same", activation="relu", name="hs_conv1")(h)
    h = DepthToSpace(name="hs_d2s1")(h)
    params = layers.Conv2D(2 * m, 1, 1, "same", name="hs_out",
                           kernel_initializer=keras.initializers.VarianceScaling(0.1))(h)
    h_s = keras.Model(z_in, params, name="h_s")
    return h_a, h_s


class FactorizedDensity(layers.Layer):
    """Per-channel non-parametric density of z (Balle et al. 2018, appendix 6.1): a monotonic
    cumulative function built from softplus-positive matrices; filters (3, 3, 3)."""

    FILTERS = (3, 3, 3)
    INIT_SCALE = 10.0

    def build(self, input_shape):
        c = int(input_shape[-1])
        dims = (1,) + self.FILTERS + (1,)
        scale = self.INIT_SCALE ** (1 / (len(self.FILTERS) + 1))
        self.matrices, self.biases, self.factors = [], [], []
        for i in range(len(self.FILTERS) + 1):
            init = np.log(np.expm1(1 / scale / dims[i + 1]))
            self.matrices.append(self.add_weight(shape=(c, dims[i + 1], dims[i]), name=f"matrix{i}",
                                                 initializer=keras.initializers.Constant(init)))
            self.biases.append(self.add_weight(shape=(c, dims[i + 1], 1), name=f"bias{i}",
                                               initializer=keras.initializers.RandomUniform(-.5, .5)))
            if i < len(self.FILTERS):
                self.factors.append(self.add_weight(shape=(c, dims[i + 1], 1), name=f"factor{i}",
                                                    initializer="zeros"))

    def logits_cdf(self, v):
        """v: (C, 1, n) -> logits of the cumulative, (C, 1, n)."""
        for i, matrix in enumerate(self.matrices):
            v = tf.matmul(tf.nn.softplus(matrix), v) + self.biases[i]
            if i < len(self.factors):
                v += tf.tanh(self.factors[i]) * tf.tanh(v)
        return v

    def likelihood(self, z):
        """Probability mass of the unit interval around every element of z (B, h, w, C)."""
        c = tf.shape(z)[-1]
        v = tf.reshape(tf.transpose(z, [3, 0, 1, 2]), [c, 1, -1])
        lower, upper = self.logits_cdf(v - 0.5), self.logits_cdf(v + 0.5)
        sign = -tf.sign(lower + upper)
        p = tf.abs(tf.sigmoid(sign * upper) - tf.sigmoid(sign * lower))
        return tf.transpose(tf.reshape(p, tf.concat([[c], tf.shape(z)[:3]], 0)), [1, 2, 3, 0])

    def call(self, z):
        return self.likelihood(z)


def gaussian_likelihood(r, sigma):
    """Mass of [r - 1/2, r + 1/2] under N(0, sigma) (r = y_s - mu, possibly noisy)."""
    r = tf.abs(r)
    k = 1.0 / (sigma * np.sqrt(2.0))
    upper = 0.5 * tf.math.erfc((r - 0.5) * k)   # P(X > |r| - 1/2)
    lower = 0.5 * tf.math.erfc((r + 0.5) * k)   # P(X > |r| + 1/2)
    return upper - lower


def ste_round(x):
    return x + tf.stop_gradient(tf.round(x) - x)


class HyperpriorModel:
    """The four networks, the z density and the gain units; forward() for training and
    validation."""

    def __init__(self, transform="gdn16", bfloat16=False, n=128, m=192, nz=128, hidden=96,
                 init_arrays=None):
        if transform == "gdn16":
            self.g_a, self.g_s = build_gdn16(n, m, bfloat16)
            self.stride = 16
        elif transform == "l3ic8":
            m, nz = 64, 64
            self.g_a, self.g_s = build_l3ic8(bfloat16, m, init_arrays)
            self.stride = 8
        else:
            raise ValueError(f"unknown transform {transform!r}")
        self.transform, self.m, self.nz = transform, m, nz
        self.h_a, self.h_s = build_hyper(m, nz, hidden)
        self.density = FactorizedDensity(name="z_density")
        self.density.build((None, None, None, nz))
        levels = len(LAMBDAS)
        # log gains start at the high-rate optimum: the step size goes as lambda^-1/2
        init = 0.5 * np.log(np.array(LAMBDAS) / LAMBDAS[levels // 2])[:, None] * np.ones((1, m))
        self.log_gain = keras.Variable(init.astype(np.float32), name="log_gain")
        self.log_inverse_gain = keras.Variable(-init.astype(np.float32), name="log_inverse_gain")

    @property
    def networks(self):
        return {"g_a": self.g_a, "g_s": self.g_s, "h_a": self.h_a, "h_s": self.h_s}

    @property
    def trainable_variables(self):
        out = [v for net in self.networks.values() for v in net.trainable_variables]
        return out + self.density.trainable_variables + [self.log_gain, self.log_inverse_gain]

    def all_variables(self) -> dict:
        """Every weight by a stable name (for checkpoints and export)."""
        out = {}
        for name, net in self.networks.items():
            for v in net.weights:
                out[f"{name}/{v.path}"] = v
        for v in self.density.weights:
            out[f"z_density/{v.path}"] = v
        out["log_gain"], out["log_inverse_gain"] = self.log_gain, self.log_inverse_gain
        return out

    def forward(self, x, level, training=True):
        """x: (B, H, W, 3) in [0,1]; level: (B,) int level indices.
        Returns (x_hat, bits_y, bits_z), bits per image (B,)."""
        gain = tf.exp(tf.gather(self.log_gain, level))[:, None, None, :]
        inverse_gain = tf.exp(tf.gather(self.log_inverse_gain, level))[:, None, None, :]
        y = tf.cast(self.g_a(x, training=training), tf.float32)
        y_s = y * gain
        z = self.h_a(y_s, training=training)
        if training:
            z_noisy = z + tf.random.uniform(tf.shape(z), -0.5, 0.5)
            z_hat = ste_round(z)
        else:
            z_noisy = z_hat = tf.round(z)
        params = self.h_s(z_hat, training=training)
        mu, log_sigma = tf.split(params, 2, axis=-1)
        sigma = tf.exp(tf.clip_by_value(log_sigma, np.log(SCALE_MIN), np.log(SCALE_MAX)))
        if training:
            r = y_s + tf.random.uniform(tf.shape(y_s), -0.5, 0.5) - mu
        else:
            r = tf.round(y_s - mu)
        y_hat_s = ste_round(y_s - mu) + mu
        x_hat = self.g_s(y_hat_s * inverse_gain, training=training)
        x_hat = tf.cast(x_hat, tf.float32)
        lik_y = tf.maximum(gaussian_likelihood(r, sigma), LIKELIHOOD_MIN)
        lik_z = tf.maximum(self.density.likelihood(z_noisy), LIKELIHOOD_MIN)
        bits_y = -tf.reduce_sum(tf.math.log(lik_y), axis=[1, 2, 3]) / np.log(2.0)
        bits_z = -tf.reduce_sum(tf.math.log(lik_z), axis=[1, 2, 3]) / np.log(2.0)
        return x_hat, bits_y, bits_z
