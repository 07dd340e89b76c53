"""PyTorch port of training.hp_model.HyperpriorModel, transform "gdn16" (for training on a GPU
machine that has PyTorch but no TensorFlow), and conversion to and from the Keras checkpoint
layout of training.hp_train (npz, one key per variable as HyperpriorModel.all_variables() names
them, plus meta/state and meta/recipe JSON).

The math is the Keras model's, line for line: TF "same" padding (asymmetric for a stride-2 5x5
convolution of an even size: 1 before, 2 after), Conv2DTranspose "same" (output = 2 x input),
depth-to-space in TF's DCR channel order, GDN / IGDN in float32, the deep factorized z density,
the Gaussian-convolved-with-a-box y likelihood, the per-level gain units. bf16=True computes the
layers that Keras runs under mixed_bfloat16 (the g_a / g_s convolutions but the last ones) in
bfloat16 and everything else in float32, as hp_train's precision "bfloat16" does.

Layouts: Keras Conv2D kernel (kh, kw, in, out) <-> torch (out, in, kh, kw); Keras
Conv2DTranspose kernel (kh, kw, out, in) <-> torch (in, out, kh, kw) (the same permutation);
GDN gamma_root (1, 1, c, c) <-> (c, c) here; everything else is kept as Keras has it.
Tensors are NCHW here (x in [0, 1], (B, 3, H, W)); bits are per image, as in Keras.
"""
import json
import math
import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# Duplicated from training/hp_model.py (which imports TensorFlow); tests/test_hp_torch.py checks
# that they are equal.
LAMBDAS = (0.0018, 0.0035, 0.0067, 0.0130, 0.0250, 0.0483, 0.0932, 0.1800)
SCALE_MIN, SCALE_MAX = 0.11, 64.0
LIKELIHOOD_MIN = 1e-9


def same_padding(size, k, s):
    """TF "SAME" padding of one dimension: (before, after)."""
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


class Conv(nn.Module):
    """keras.layers.Conv2D(cout, k, s, "same"); wide: computed in bfloat16 when enabled."""

    def __init__(self, cin, cout, k, s=1, relu=False, wide=False):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(cout, cin, k, k))
        self.bias = nn.Parameter(torch.zeros(cout))
        self.k, self.s, self.relu, self.wide = k, s, relu, wide
        self.bf16 = False

    def forward(self, x):
        (top, bottom), (left, right) = (same_padding(x.shape[d], self.k, self.s) for d in (2, 3))
        w, bias = self.weight, self.bias
        if self.wide and self.bf16:
            x, w, bias = x.bfloat16(), w.bfloat16(), bias.bfloat16()
        else:
            x = x.float()
        if top == bottom and left == right:
            y = F.conv2d(x, w, bias, self.s, (top, left))
        else:
            y = F.conv2d(F.pad(x, (left, right, top, bottom)), w, bias, self.s)
        return F.relu(y) if self.relu else y


class ConvTranspose(nn.Module):
    """keras.layers.Conv2DTranspose(cout, k, s, "same"): output size = s x input size."""

    def __init__(self, cin, cout, k, s=2, wide=False):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(cin, cout, k, k))
        self.bias = nn.Parameter(torch.zeros(cout))
        self.k, self.s, self.wide = k, s, wide
        self.bf16 = False

    def forward(self, x):
        h, w_ = x.shape[2] * self.s, x.shape[3] * self.s
        w, bias = self.weight, self.bias
        if self.wide and self.bf16:
            x, w, bias = x.bfloat16(), w.bfloat16(), bias.bfloat16()
        else:
            x = x.float()
        # TF pads the equivalent forward convolution by (k - s) // 2 before: the same offset
        pad = max(self.k - self.s, 0) // 2
        y = F.conv_transpose2d(x, w, bias, self.s, pad)
        return y[:, :, :h, :w_]


class GDN(nn.Module):
    """y_i = x_i / sqrt(beta_i + sum_j gamma_ji x_j^2) (inverse: times), in float32; gamma and
    beta stored as square roots, gamma_root[j, i] as Keras has it (in, out)."""

    def __init__(self, c, inverse=False):
        super().__init__()
        self.beta_root = nn.Parameter(torch.ones(c))
        self.gamma_root = nn.Parameter(math.sqrt(0.1) * torch.eye(c))
        self.inverse = inverse

    def forward(self, x):
        x32 = x.float()
        gamma = self.gamma_root.float().square().t().contiguous()[:, :, None, None]
        beta = self.beta_root.float().square() + 1e-6
        norm = F.conv2d(x32.square(), gamma, beta)
        y = x32 * (torch.sqrt(norm) if self.inverse else torch.rsqrt(norm))
        return y.to(x.dtype)


def depth_to_space(x, bs=2):
    """tf.nn.depth_to_space (DCR: input channel (i * bs + j) * C + c goes to offset (i, j))."""
    b, c, h, w = x.shape
    x = x.reshape(b, bs, bs, c // (bs * bs), h, w).permute(0, 3, 4, 1, 5, 2)
    return x.reshape(b, c // (bs * bs), h * bs, w * bs)


class FactorizedDensity(nn.Module):
    """hp_model.FactorizedDensity: per-channel monotonic cumulative, filters (3, 3, 3)."""

    FILTERS = (3, 3, 3)
    INIT_SCALE = 10.0

    def __init__(self, c):
        super().__init__()
        dims = (1,) + self.FILTERS + (1,)
        scale = self.INIT_SCALE ** (1 / (len(self.FILTERS) + 1))
        self.matrices, self.biases = nn.ParameterList(), nn.ParameterList()
        self.factors = nn.ParameterList()
        for i in range(len(self.FILTERS) + 1):
            init = float(np.log(np.expm1(1 / scale / dims[i + 1])))
            self.matrices.append(nn.Parameter(torch.full((c, dims[i + 1], dims[i]), init)))
            self.biases.append(nn.Parameter(torch.rand(c, dims[i + 1], 1) - 0.5))
            if i < len(self.FILTERS):
                self.factors.append(nn.Parameter(torch.zeros(c, dims[i + 1], 1)))

    def logits_cdf(self, v):
        for i, matrix in enumerate(self.matrices):
            v = torch.matmul(F.softplus(matrix), v) + self.biases[i]
            if i < len(self.factors):
                v = v + torch.tanh(self.factors[i]) * torch.tanh(v)
        return v

    def forward(self, z):
        """Mass of the unit interval around every element of z (B, C, h, w)."""
        b, c, h, w = z.shape
        v = z.float().permute(1, 0, 2, 3).reshape(c, 1, -1)
        lower, upper = self.logits_cdf(v - 0.5), self.logits_cdf(v + 0.5)
        sign = -torch.sign(lower + upper)
        p = torch.abs(torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower))
        return p.reshape(c, b, h, w).permute(1, 0, 2, 3)


def gaussian_likelihood(r, sigma):
    """Mass of [r - 1/2, r + 1/2] under N(0, sigma)."""
    r = torch.abs(r)
    k = 1.0 / (sigma * math.sqrt(2.0))
    return 0.5 * torch.erfc((r - 0.5) * k) - 0.5 * torch.erfc((r + 0.5) * k)


def ste_round(x):
    return x + (torch.round(x) - x).detach()


class HyperpriorTorch(nn.Module):
    """HyperpriorModel("gdn16"): g_a, g_s, h_a, h_s (ModuleDicts named by the Keras layers), the
    z density and the gain units. hs_out_kernel: 1 (today's hp_model) or 3 (older files)."""

    def __init__(self, n=128, m=192, nz=128, hidden=96, hs_out_kernel=1, bf16=False):
        super().__init__()
        self.n, self.m, self.nz, self.hidden, self.stride = n, m, nz, hidden, 16
        self.g_a = nn.ModuleDict()
        for i in range(3):
            self.g_a[f"ga_conv{i}"] = Conv(3 if i == 0 else n, n, 5, 2, wide=True)
            self.g_a[f"ga_gdn{i}"] = GDN(n)
        self.g_a["ga_latent"] = Conv(n, m, 5, 2)
        self.g_s = nn.ModuleDict()
        for i in range(3):
            self.g_s[f"gs_deconv{i}"] = ConvTranspose(m if i == 0 else n, n, 5, 2, wide=True)
            self.g_s[f"gs_igdn{i}"] = GDN(n, inverse=True)
        self.g_s["gs_out"] = ConvTranspose(n, 3, 5, 2)
        self.h_a = nn.ModuleDict({"ha_conv0": Conv(m, hidden, 3, 1, relu=True),
                                  "ha_conv1": Conv(hidden, hidden, 5, 2, relu=True),
                                  "ha_conv2": Conv(hidden, nz, 5, 2)})
        self.h_s = nn.ModuleDict({"hs_conv0": Conv(nz, 4 * hidden, 3, 1, relu=True),
                                  "hs_conv1": Conv(hidden, 4 * hidden, 3, 1, relu=True),
                                  "hs_out": Conv(hidden, 2 * m, hs_out_kernel, 1)})
        self.z_density = FactorizedDensity(nz)
        # log gains start at the high-rate optimum: the step size goes as lambda^-1/2
        init = 0.5 * np.log(np.array(LAMBDAS) / LAMBDAS[len(LAMBDAS) // 2])[:, None]
        init = init * np.ones((1, m))
        self.log_gain = nn.Parameter(torch.tensor(init, dtype=torch.float32))
        self.log_inverse_gain = nn.Parameter(torch.tensor(-init, dtype=torch.float32))
        self.keras_init()
        self.set_bf16(bf16)

    def set_bf16(self, on=True):
        for mod in self.modules():
            if isinstance(mod, (Conv, ConvTranspose)):
                mod.bf16 = on

    @torch.no_grad()
    def keras_init(self):
        """Keras' initialisers: glorot_uniform kernels, zero biases; hs_out VarianceScaling(0.1)
        (truncated normal, fan_in)."""
        for net in (self.g_a, self.g_s, self.h_a, self.h_s):
            for name, mod in net.items():
                if not isinstance(mod, (Conv, ConvTranspose)):
                    continue
                w = mod.weight
                rf = w.shape[2] * w.shape[3]
                fan_a, fan_b = w.shape[0] * rf, w.shape[1] * rf
                if name == "hs_out":
                    fan_in = fan_b   # torch conv (out, in, kh, kw)
                    std = math.sqrt(0.1 / fan_in) / 0.87962566103423978
                    nn.init.trunc_normal_(w, 0.0, std, -2 * std, 2 * std)
                else:
                    limit = math.sqrt(6.0 / (fan_a + fan_b))
                    nn.init.uniform_(w, -limit, limit)

    def analysis(self, x):
        h = x * 2.0 - 1.0
        for i in range(3):
            h = self.g_a[f"ga_gdn{i}"](self.g_a[f"ga_conv{i}"](h))
        return self.g_a["ga_latent"](h).float()

    def synthesis(self, y):
        h = y
        for i in range(3):
            h = self.g_s[f"gs_igdn{i}"](self.g_s[f"gs_deconv{i}"](h))
        return (self.g_s["gs_out"](h).float() + 1.0) / 2.0

    def hyper_synthesis(self, z_hat):
        h = depth_to_space(self.h_s["hs_conv0"](z_hat))
        h = depth_to_space(self.h_s["hs_conv1"](h))
        return self.h_s["hs_out"](h).float()

    def forward(self, x, level):
        """x: (B, 3, H, W) in [0, 1]; level: (B,) int64. Training mode (self.training) adds the
        uniform noise, eval mode rounds, as HyperpriorModel.forward(training=...)."""
        gain = torch.exp(self.log_gain[level])[:, :, None, None]
        inverse_gain = torch.exp(self.log_inverse_gain[level])[:, :, None, None]
        y_s = self.analysis(x) * gain
        h = y_s
        for name in ("ha_conv0", "ha_conv1", "ha_conv2"):
            h = self.h_a[name](h)
        z = h.float()
        if self.training:
            z_noisy = z + torch.rand_like(z) - 0.5
            z_hat = ste_round(z)
        else:
            z_noisy = z_hat = torch.round(z)
        mu, log_sigma = torch.split(self.hyper_synthesis(z_hat), self.m, dim=1)
        sigma = torch.exp(torch.clamp(log_sigma, math.log(SCALE_MIN), math.log(SCALE_MAX)))
        if self.training:
            r = y_s + torch.rand_like(y_s) - 0.5 - mu
        else:
            r = torch.round(y_s - mu)
        y_hat_s = ste_round(y_s - mu) + mu
        x_hat = self.synthesis(y_hat_s * inverse_gain)
        lik_y = torch.clamp_min(gaussian_likelihood(r, sigma), LIKELIHOOD_MIN)
        lik_z = torch.clamp_min(self.z_density(z_noisy), LIKELIHOOD_MIN)
        bits_y = -torch.log(lik_y).sum(dim=(1, 2, 3)) / math.log(2.0)
        bits_z = -torch.log(lik_z).sum(dim=(1, 2, 3)) / math.log(2.0)
        return x_hat, bits_y, bits_z


# -- the Keras checkpoint layout ------------------------------------------------------------------
def _kernel_to_keras(w):      # torch (out, in, kh, kw) or (in, out, kh, kw) -> Keras
    return w.transpose(2, 3, 1, 0)


def _kernel_from_keras(k):
    return k.transpose(3, 2, 0, 1)


def keras_keys(model: HyperpriorTorch):
    """(Keras key, torch state_dict key, kind) for every variable; kind: kernel, gamma, plain."""
    out = []
    for net in ("g_a", "g_s", "h_a", "h_s"):
        for layer, mod in getattr(model, net).items():
            if isinstance(mod, GDN):
                out.append((f"{net}/{layer}/beta_root", f"{net}.{layer}.beta_root", "plain"))
                out.append((f"{net}/{layer}/gamma_root", f"{net}.{layer}.gamma_root", "gamma"))
            else:
                out.append((f"{net}/{layer}/kernel", f"{net}.{layer}.weight", "kernel"))
                out.append((f"{net}/{layer}/bias", f"{net}.{layer}.bias", "plain"))
    d = model.z_density
    for i in range(len(d.matrices)):
        out.append((f"z_density/z_density/matrix{i}", f"z_density.matrices.{i}", "plain"))
        out.append((f"z_density/z_density/bias{i}", f"z_density.biases.{i}", "plain"))
        if i < len(d.factors):
            out.append((f"z_density/z_density/factor{i}", f"z_density.factors.{i}", "plain"))
    out += [("log_gain", "log_gain", "plain"), ("log_inverse_gain", "log_inverse_gain", "plain")]
    return out


def to_keras_arrays(model: HyperpriorTorch, dtype=np.float32) -> dict:
    sd = model.state_dict()
    out = {}
    for key, tkey, kind in keras_keys(model):
        a = sd[tkey].detach().float().cpu().numpy()
        a = _kernel_to_keras(a) if kind == "kernel" else a[None, None] if kind == "gamma" else a
        out[key] = np.ascontiguousarray(a).astype(dtype)
    return out


def load_keras_npz(path, model: HyperpriorTorch = None) -> dict:
    """The torch state_dict (float32) of a Keras-layout npz (checkpoint, best.npz or a float16
    compact file); with model, also loaded into it."""
    shapes = model_shapes(path)
    ref = model or HyperpriorTorch(**shapes)
    state = {}
    with np.load(path) as f:
        for key, tkey, kind in keras_keys(ref):
            a = f[key].astype(np.float32)
            a = _kernel_from_keras(a) if kind == "kernel" else a[0, 0] if kind == "gamma" else a
            state[tkey] = torch.from_numpy(np.ascontiguousarray(a))
    if model is not None:
        model.load_state_dict(state)
    return state


def model_shapes(path) -> dict:
    """HyperpriorTorch arguments (n, m, nz, hidden, hs_out_kernel) read off a Keras npz."""
    with np.load(path) as f:
        if "g_a/ga_conv0/kernel" not in f.files:
            raise ValueError(f"{path}: not a gdn16 hp checkpoint (the port has gdn16 only)")
        return {"n": f["g_a/ga_conv0/kernel"].shape[3],
                "m": f["g_a/ga_latent/kernel"].shape[3],
                "nz": f["h_a/ha_conv2/kernel"].shape[3],
                "hidden": f["h_a/ha_conv0/kernel"].shape[3],
                "hs_out_kernel": f["h_s/hs_out/kernel"].shape[0]}


def load_meta(path):
    """(state, recipe) dicts of a Keras-layout npz ({} where absent)."""
    with np.load(path) as f:
        state = json.loads(str(f["meta/state"])) if "meta/state" in f.files else {}
        recipe = json.loads(str(f["meta/recipe"])) if "meta/recipe" in f.files else {}
    return state, recipe


def model_from_keras_npz(path, bf16=False) -> HyperpriorTorch:
    model = HyperpriorTorch(**model_shapes(path), bf16=bf16)
    load_keras_npz(path, model)
    return model


def save_keras_npz(model, path, state: dict, recipe: dict, dtype=np.float32, compressed=False):
    """Write the weights in the Keras layout (loadable by hp_train.Trainer.load and
    hp_export.load) with meta/state (hp_train.State fields) and meta/recipe (hp_train.Recipe
    fields); atomically (a temporary file, then a rename)."""
    arrays = to_keras_arrays(model, dtype)
    meta = {"meta/state": np.array(json.dumps(state)), "meta/recipe": np.array(json.dumps(recipe))}
    tmp = path + ".tmp.npz"
    (np.savez_compressed if compressed else np.savez)(tmp, **arrays, **meta)
    os.replace(tmp, path)
