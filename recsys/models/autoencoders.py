"""Autoencoders over a user's set of items: MultVAE and EASE.

Both read the user's recent items (`seq` [B, L], order ignored) and reconstruct a score for
every item of the catalogue; neither keeps a per-user table.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from recsys.models.base import Recommender


def bag(seq: Tensor, n_items: int) -> tuple[Tensor, Tensor]:
    """(ids with PAD -> n_items, per-sample weights 1 for real items and 0 for padding)."""
    real = seq >= 0
    return torch.where(real, seq, torch.full_like(seq, n_items)), real.float()


class MultVAE(Recommender):
    """Variational autoencoder with a multinomial likelihood (Liang et al., 2018).

    encoder: the L2-normalised multi-hot input -> tanh(hidden[0]) -> ... -> (mu, logvar) of
    size hidden[-1]; decoder: z -> tanh layers back to hidden[0] -> logits over the catalogue.
    The last decoder layer is a dot product with one vector per item (plus its bias), so the
    model is factorised: `history_vectors` is the decoder's last hidden layer (mu as z) with a
    constant 1 for the bias, `item_vectors` the rows of the output layer.

    Args: n_items, hidden (e.g. [600, 200]), dropout (on the input items, as in the paper),
    max_len (the newest items read).
    `encode(seq)` -> (mu, logvar); `decode_hidden(z)` -> [B, hidden[0]].
    """

    uses_history = True

    def __init__(self, n_items: int, hidden: list[int], dropout: float, max_len: int):
        super().__init__()
        self.max_len = max_len
        if len(hidden) < 2:
            raise ValueError(f"MultVAE needs at least two sizes (hidden..., latent), got {hidden}")
        self.n_items, self.dropout = n_items, dropout
        self.inp = nn.EmbeddingBag(n_items + 1, hidden[0], mode="sum", padding_idx=n_items)
        self.inp_bias = nn.Parameter(torch.zeros(hidden[0]))
        self.enc = nn.ModuleList(nn.Linear(a, b) for a, b in zip(hidden[:-2], hidden[1:-1]))
        self.latent = nn.Linear(hidden[-2], 2 * hidden[-1])
        back = hidden[::-1]
        self.dec = nn.ModuleList(nn.Linear(a, b) for a, b in zip(back[:-1], back[1:]))
        self.out = nn.Linear(hidden[0], n_items)
        nn.init.normal_(self.inp.weight, std=0.01)
        with torch.no_grad():
            self.inp.weight[n_items].zero_()

    def encode(self, seq: Tensor, drop: float = 0.0) -> tuple[Tensor, Tensor]:
        ids, weights = bag(seq, self.n_items)
        if drop > 0:
            weights = weights * (torch.rand_like(weights) >= drop).float()
        norm = weights.sum(1, keepdim=True).clamp(min=1.0).sqrt()
        h = torch.tanh(self.inp(ids, per_sample_weights=weights) / norm + self.inp_bias)
        for layer in self.enc:
            h = torch.tanh(layer(h))
        mu, logvar = self.latent(h).chunk(2, dim=1)
        return mu, logvar

    def decode_hidden(self, z: Tensor) -> Tensor:
        for layer in self.dec:
            z = torch.tanh(layer(z))
        return z

    def forward(self, seq: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """What training calls: (logits [B, n_items], mu, logvar), z sampled."""
        mu, logvar = self.encode(seq, self.dropout if self.training else 0.0)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if self.training else mu
        return self.out(self.decode_hidden(z)), mu, logvar

    def history_vectors(self, seq: Tensor) -> Tensor:
        h = self.decode_hidden(self.encode(self.recent(seq))[0])
        return torch.cat([h, torch.ones_like(h[:, :1])], dim=1)

    def item_vectors(self, items: Tensor) -> Tensor:
        return torch.cat([self.out.weight[items], self.out.bias[items].unsqueeze(1)], dim=1)


def ease_from_gram(gram: Tensor, lam: float) -> Tensor:
    """EASE's closed form: B = I - P diag(1/diag(P)) with P = (G + λI)⁻¹, diag(B) = 0, for the
    item Gram matrix G = XᵀX (float64 for the inversion; float32 out)."""
    p = torch.linalg.inv(gram + lam * torch.eye(len(gram), dtype=gram.dtype))
    b = -p / torch.diag(p)
    b.fill_diagonal_(0.0)
    return b.to(torch.float32)


class EASE(Recommender):
    """Embarrassingly shallow autoencoder (Steck, 2019): score(u, ·) = x_u B, B items x items
    with a zero diagonal, fitted in closed form (`recsys.train.fitted`), not by SGD.

    Not factorised: a user's scores are the sum of the rows of B of their items, one
    `embedding_bag` per batch (cost: history length x catalogue per user).
    """

    uses_history = True
    factorised = False

    def __init__(self, n_items: int, max_len: int):
        super().__init__()
        self.n_items, self.max_len = n_items, max_len
        self.register_buffer("weights", torch.zeros(n_items + 1, n_items))  # row n_items: padding

    def set_weights(self, b: Tensor) -> "EASE":
        """Install a fitted B [n_items, n_items]."""
        self.weights.zero_()
        self.weights[: self.n_items] = b
        return self

    def score_histories(self, seq: Tensor) -> Tensor:
        ids, weights = bag(self.recent(seq), self.n_items)
        return F.embedding_bag(ids, self.weights, per_sample_weights=weights, mode="sum")
