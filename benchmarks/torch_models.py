"""The benchmark's models written in PyTorch (CPU, float32), as a PyTorch user writes them.

Each entry of TORCH builds an `nn.Module` from graphdl's initial parameters and running
statistics (by name, like handwritten.py: dense weights transposed to `nn.Linear`'s
[out, in], conv weights from HWIO / HIO to OIHW / OIH, the first dense after a conv stack
re-ordered from graphdl's channels-last flatten to PyTorch's channels-first one, the LSTM's
four gate denses as `nn.LSTM`'s stacked [i, f, g, o] matrices) and gives the loss of a
batch. `TorchStep` is the train step: zero_grad, forward, loss, backward, Adam's step.
Only benchmarks import torch; the graphdl package never does.
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def jax_threads() -> int:
    """The cores XLA:CPU's thread pool uses: those this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _t(a) -> torch.Tensor:
    return torch.from_numpy(np.array(a, dtype=np.float32))


def _linear(p, prefix: str, order=None) -> nn.Linear:
    """graphdl's dense (w: [in, out]); `order` permutes w's rows (a flatten's layout)."""
    w = np.asarray(p[prefix + ".w"])
    if order is not None:
        w = w[order]
    layer = nn.Linear(*w.shape)
    with torch.no_grad():
        layer.weight.copy_(_t(w.T))
        layer.bias.copy_(_t(p[prefix + ".b"]))
    return layer


def _conv(p, prefix: str) -> nn.Module:
    """graphdl's conv, "same" padding: w [K, Cin, Cout] (1-D) or [Kh, Kw, Cin, Cout] (2-D)."""
    w = np.asarray(p[prefix + ".w"])
    kind = nn.Conv1d if w.ndim == 3 else nn.Conv2d
    layer = kind(w.shape[-2], w.shape[-1], w.shape[:-2], padding="same")
    with torch.no_grad():  # to [Cout, Cin, *K]
        layer.weight.copy_(_t(w.transpose(w.ndim - 1, w.ndim - 2, *range(w.ndim - 2))))
        layer.bias.copy_(_t(p[prefix + ".b"]))
    return layer


def _batch_norm(p, stats, prefix: str, spatial: int) -> nn.Module:
    """graphdl's batch_norm (running = 0.9 old + 0.1 batch) is PyTorch's momentum 0.1."""
    n = len(p[prefix + ".scale"])
    layer = (nn.BatchNorm1d if spatial == 1 else nn.BatchNorm2d)(n, eps=1e-5, momentum=0.1)
    with torch.no_grad():
        layer.weight.copy_(_t(p[prefix + ".scale"]))
        layer.bias.copy_(_t(p[prefix + ".bias"]))
        layer.running_mean.copy_(_t(stats[prefix + ".mean"]))
        layer.running_var.copy_(_t(stats[prefix + ".var"]))
    return layer


def _channels_first(spatial: tuple[int, ...], channels: int) -> np.ndarray:
    """Row order that makes a dense on graphdl's flatten of [..., C] (channels last) take
    PyTorch's flatten of [C, ...]: row (c, *s) of the re-ordered matrix is row (*s, c)."""
    index = np.arange(int(np.prod(spatial)) * channels).reshape(*spatial, channels)
    return np.moveaxis(index, -1, 0).reshape(-1)


# -- MLP (models/mlp.gdl) ---------------------------------------------------------------------
def mlp(p, stats) -> nn.Module:
    return nn.Sequential(
        _linear(p, "mlp.out.dense"), nn.ReLU(), nn.Dropout(0.5),
        _linear(p, "mlp.out.dense_1"), nn.ReLU(), nn.Dropout(0.5),
        _linear(p, "mlp.out.dense_2"))


def classify(model, batch, field: str = "x"):
    return F.cross_entropy(model(batch[field]), batch["y"])


# -- conv -> batch norm -> relu blocks, max pooling (models/cnn1d.gdl, models/cnn2d.gdl) -------
def _blocks(p, stats, name: str, groups, spatial: int) -> list[nn.Module]:
    pool = nn.MaxPool1d(2) if spatial == 1 else nn.MaxPool2d(2)
    layers, i = [], 0
    for n_blocks in groups:
        for _ in range(n_blocks):
            prefix = f"{name}.h.block" + (f"_{i}" if i else "") + ".out"
            layers += [_conv(p, prefix + ".conv"),
                       _batch_norm(p, stats, prefix + ".batch_norm", spatial), nn.ReLU()]
            i += 1
        layers.append(pool)
    return layers


def cnn1d(p, stats) -> nn.Module:
    return nn.Sequential(
        nn.Unflatten(1, (1, 40)),  # [B, 40] -> [B, 1, 40]: one channel, channels first
        *_blocks(p, stats, "cnn1d", (2, 2, 1), 1), nn.Flatten(),
        _linear(p, "cnn1d.out.dense", _channels_first((5,), 128)), nn.ReLU(), nn.Dropout(0.3),
        _linear(p, "cnn1d.out.dense_1"))


def cnn2d(p, stats) -> nn.Module:
    return nn.Sequential(
        *_blocks(p, stats, "cnn2d", (2, 2), 2), nn.Flatten(), nn.Dropout(0.25),
        _linear(p, "cnn2d.out.dense", _channels_first((2, 2), 64)), nn.ReLU(), nn.Dropout(0.5),
        _linear(p, "cnn2d.out.dense_1"))


# -- the deck's CNN, 28x28x1 (benchmarks/cnn_mnist.gdl) ----------------------------------------
def cnn_mnist(p, stats) -> nn.Module:
    return nn.Sequential(
        _conv(p, "cnn.h.conv"), nn.ReLU(), nn.MaxPool2d(2),
        _conv(p, "cnn.h.conv_1"), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        _linear(p, "cnn.out.dense", _channels_first((7, 7), 64)))


# -- the adding problem: nn.LSTM / nn.RNN, a linear head on the last h ------------------------
class Recurrent(nn.Module):
    def __init__(self, cell: nn.Module, head: nn.Linear):
        super().__init__()
        self.cell, self.head = cell, head

    def forward(self, x):
        out, _ = self.cell(x)
        return self.head(out[:, -1])


def _recurrent_weights(cell, w, b, inputs: int) -> None:
    """graphdl's [x, h] @ w + b as PyTorch's x @ W_ih^T + b_ih + h @ W_hh^T + b_hh: b_hh is
    zero and frozen, so the model has graphdl's one bias per gate (and Adam updates it once)."""
    with torch.no_grad():
        cell.weight_ih_l0.copy_(_t(w[:inputs].T))
        cell.weight_hh_l0.copy_(_t(w[inputs:].T))
        cell.bias_ih_l0.copy_(_t(b))
        cell.bias_hh_l0.zero_()
    cell.bias_hh_l0.requires_grad_(False)


LSTM = "adder.run.lstm."


def lstm(p, stats) -> nn.Module:
    # std.nn's gates forget f, write w, read r, candidate new are PyTorch's f, i, o, g;
    # its forget gate's + 1 goes into the bias
    gate = {g: np.asarray(p[f"{LSTM}{g}.dense.w"]) for g in ("f", "w", "r", "new")}
    bias = {g: np.asarray(p[f"{LSTM}{g}.dense.b"]) for g in ("f", "w", "r", "new")}
    bias["f"] = bias["f"] + 1.0
    order = ("w", "f", "new", "r")  # PyTorch's i, f, g, o
    w = np.concatenate([gate[g] for g in order], axis=1)
    hidden, inputs = w.shape[1] // 4, w.shape[0] - w.shape[1] // 4
    cell = nn.LSTM(inputs, hidden, batch_first=True)
    _recurrent_weights(cell, w, np.concatenate([bias[g] for g in order]), inputs)
    return Recurrent(cell, _linear(p, "adder.out.dense"))


def rnn(p, stats) -> nn.Module:
    w, b = np.asarray(p["adder.run.rnn.h.dense.w"]), np.asarray(p["adder.run.rnn.h.dense.b"])
    hidden = w.shape[1]
    cell = nn.RNN(w.shape[0] - hidden, hidden, nonlinearity="tanh", batch_first=True)
    _recurrent_weights(cell, w, b, w.shape[0] - hidden)
    return Recurrent(cell, _linear(p, "adder.out.dense"))


def regress(model, batch):
    return F.mse_loss(model(batch["x"]), batch["y"])


# -- the VAE (models/vae.gdl) -------------------------------------------------------------------
class VAE(nn.Module):
    def __init__(self, p):
        super().__init__()
        self.enc = _linear(p, "vae.enc.h.dense")
        self.mu, self.logvar = _linear(p, "vae.enc.out.dense"), _linear(p, "vae.enc.out.dense_1")
        self.dec = nn.Sequential(_linear(p, "vae.dec.out.dense"), nn.ReLU(),
                                 _linear(p, "vae.dec.out.dense_1"))

    def forward(self, x, eps=None):
        """Per example: the -ELBO from one reparameterised sample of z (noise `eps`, else
        drawn), KL(q(z|x) || N(0, I)) minus the Bernoulli log-likelihood of x."""
        h = F.relu(self.enc(x))
        mu, logvar = self.mu(h), self.logvar(h)
        std = torch.exp(0.5 * logvar)
        z = mu + std * (torch.randn_like(std) if eps is None else eps)
        reconstruction = -F.binary_cross_entropy_with_logits(self.dec(z), x, reduction="none").sum(-1)
        rate = (-torch.log(std) + 0.5 * (std ** 2 + mu ** 2) - 0.5).sum(-1)
        return rate - reconstruction


def vae(p, stats) -> nn.Module:
    return VAE(p)


def elbo(model, batch):
    return model((batch["x"] > 0.5).float()).mean()  # binarized in the step, as graphdl does


def centre_class(model, batch):
    return F.cross_entropy(model(batch["image"]), batch["mask"][:, 14, 14])


#: name (as in handwritten.HANDWRITTEN) -> (build(params, stats), loss(model, batch))
TORCH = {
    "mlp": (mlp, classify),
    "cnn1d": (cnn1d, classify),
    "cnn2d": (cnn2d, lambda model, batch: classify(model, batch, "image")),
    "lstm": (lstm, regress),
    "cnn_mnist": (cnn_mnist, centre_class),
    "rnn": (rnn, regress),
    "vae": (vae, elbo),
}


def torch_batch(batch: dict) -> dict[str, torch.Tensor]:
    """graphdl's batch ({"data.x": array}) as PyTorch tensors: images NHWC -> NCHW,
    integer labels as int64 (what F.cross_entropy takes)."""
    out = {}
    for key, value in batch.items():
        a = np.array(value)  # a copy of its own: PyTorch wants writable memory
        name = key.removeprefix("data.")
        if a.dtype.kind in "iu":
            out[name] = torch.from_numpy(a.astype(np.int64))
        else:
            if name == "image":
                a = np.moveaxis(a, -1, 1)
            out[name] = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    return out


class TorchStep:
    """One model's train step in PyTorch: zero_grad, forward, loss, backward, Adam."""

    def __init__(self, name: str, params, stats, batch, lr: float, threads: int | None = None):
        torch.set_num_threads(threads or jax_threads())
        build, self.loss_fn = TORCH[name]
        self.model = build(params, stats)
        self.model.train()
        self.batch = torch_batch(batch)
        trainable = [q for q in self.model.parameters() if q.requires_grad]
        self.optimizer = torch.optim.Adam(trainable, lr=lr, betas=(0.9, 0.999), eps=1e-8)

    def __call__(self) -> torch.Tensor:
        self.optimizer.zero_grad()
        loss = self.loss_fn(self.model, self.batch)
        loss.backward()
        self.optimizer.step()
        return loss.detach()
