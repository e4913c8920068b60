"""Sequence models: a user is what they did last, read in order.

`SASRec` (Kang & McAuley, 2018) reads the last L items with causal self-attention; `GRU4Rec`
(Hidasi et al., 2016) with a GRU. Both embed items in one table that is also the output layer
(score = the encoder's last state · the item's embedding), so they are factorised: the scoring
job ranks the catalogue with one matrix product per batch, and there is no per-user table.
With an item side table (`train.item_content`) an item's embedding is its id row plus the
content item encoder's vector (content.py `ItemContent`), in the input and in the output layer
alike, so an item with no interactions yet is placed by its side features.
Training (next item at every position, `recsys.train.objectives`) lives apart from the models.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from recsys.models.base import PAD, Recommender
from recsys.models.content import ItemContent
from recsys.models.features import FeatureTable


class ItemSequenceModel(Recommender):
    """Shared by the sequence models: the item table (row n_items is the padding item) and the
    factorised score. Subclasses implement `encode(seq) -> [B, L, d]` (causal: position t sees
    positions <= t only). `items` (a side table) adds the content item encoder to every item
    embedding, with `id_dropout` (content.py `ItemContent`)."""

    uses_history = True

    def __init__(self, n_items: int, dim: int, max_len: int, items: FeatureTable | None = None,
                 id_dropout: float = 0.0):
        super().__init__()
        self.n_items, self.dim, self.max_len = n_items, dim, max_len
        self.item = nn.Embedding(n_items + 1, dim, padding_idx=n_items)
        nn.init.normal_(self.item.weight, std=dim ** -0.5)
        with torch.no_grad():
            self.item.weight[n_items].zero_()
        self.content = ItemContent(items, dim, id_dropout) if items is not None else None

    def ids(self, seq: Tensor) -> Tensor:
        """PAD -> the padding row."""
        return torch.where(seq < 0, torch.full_like(seq, self.n_items), seq)

    def embed(self, ids: Tensor) -> Tensor:
        """Item ids (n_items: padding, a zero vector) of any shape -> their embeddings [..., d]."""
        vectors = self.item(ids)
        return vectors if self.content is None else self.content(ids, vectors)

    def output_table(self) -> Tensor:
        """[n_items, d]: every item's vector, what a full softmax scores against."""
        if self.content is None:
            return self.item.weight[: self.n_items]
        return self.item_vectors(torch.arange(self.n_items, device=self.item.weight.device))

    def encode(self, seq: Tensor) -> Tensor:
        raise NotImplementedError

    def history_vectors(self, seq: Tensor) -> Tensor:
        return self.encode(self.recent(seq))[:, -1]  # right-aligned: the newest item is last

    def item_vectors(self, items: Tensor) -> Tensor:
        return self.embed(items)

    def forward(self, seq: Tensor) -> Tensor:  # what training calls: states at every position
        return self.encode(seq)


class CausalBlock(nn.Module):
    """Pre-norm transformer block: causal multi-head self-attention, then a position-wise MLP.
    No dropout on the attention weights: [B, heads, L, L] masks are the slowest part of a CPU step."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        # SASRec's point-wise feed-forward keeps the width d (no 4x expansion): on the CPU the
        # dropout masks of a wider layer cost more than its matrix products.
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, d // self.heads).unbind(2)
        a = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                           attn_mask=mask)
        x = x + self.drop(self.proj(a.transpose(1, 2).reshape(b, n, d)))
        return x + self.drop(self.mlp(self.norm2(x)))


class SASRec(ItemSequenceModel):
    """Self-attentive sequential recommendation.

    Args: n_items, dim (d, divisible by heads), max_len (L: positions), blocks, heads, dropout,
    items and id_dropout (the content item encoder, optional).
    seq [B, L'] with L' <= L -> states [B, L', d]. A position attends to itself and to the real
    (non-padding) positions before it; a padding position only to itself, so no row of the
    attention is empty.

    >>> m = SASRec(10, dim=8, max_len=5, blocks=1, heads=2, dropout=0.0)
    >>> m.history_vectors(torch.tensor([[-1, -1, 3, 4, 5]])).shape
    torch.Size([1, 8])
    """

    def __init__(self, n_items: int, dim: int, max_len: int, blocks: int, heads: int,
                 dropout: float, items: FeatureTable | None = None, id_dropout: float = 0.0):
        super().__init__(n_items, dim, max_len, items, id_dropout)
        self.position = nn.Embedding(max_len, dim)
        nn.init.normal_(self.position.weight, std=0.02)
        self.blocks = nn.ModuleList(CausalBlock(dim, heads, dropout) for _ in range(blocks))
        self.norm = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)

    def encode(self, seq: Tensor) -> Tensor:
        b, n = seq.shape
        real = seq >= 0
        pos = torch.arange(self.position.num_embeddings - n, self.position.num_embeddings,
                           device=seq.device)  # right-aligned: the newest item has the last position
        x = self.embed(self.ids(seq)) * self.dim ** 0.5 + self.position(pos)
        x = self.drop(x) * real.unsqueeze(2)
        causal = torch.ones(n, n, dtype=torch.bool, device=seq.device).tril()
        allowed = (causal & real.unsqueeze(1)) | torch.eye(n, dtype=torch.bool, device=seq.device)
        mask = allowed.unsqueeze(1)  # [B, 1, L, L], shared by the heads
        for block in self.blocks:
            x = block(x, mask)
        return self.norm(x)


class GRU4Rec(ItemSequenceModel):
    """A GRU over the item sequence; the state after the newest item is the user.

    Args: n_items, dim, max_len, layers, dropout, items and id_dropout (as SASRec). The GRU
    starts from a zero state at a history's first real item (padding is skipped, not read), so a
    state depends on the items alone, not on how much padding came before them.
    """

    def __init__(self, n_items: int, dim: int, max_len: int, layers: int, dropout: float,
                 items: FeatureTable | None = None, id_dropout: float = 0.0):
        super().__init__(n_items, dim, max_len, items, id_dropout)
        self.gru = nn.GRU(dim, dim, num_layers=layers, batch_first=True,
                          dropout=dropout if layers > 1 else 0.0)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(dim, dim)

    def encode(self, seq: Tensor) -> Tensor:
        b, n = seq.shape
        lengths = (seq >= 0).sum(1).clamp(min=1)
        cols = torch.arange(n, device=seq.device)
        shift = (n - lengths).unsqueeze(1)
        # Left-padded -> right-padded (packing wants the real items first), and back after.
        right = seq.gather(1, (cols + shift) % n)
        packed = nn.utils.rnn.pack_padded_sequence(self.drop(self.embed(self.ids(right))), lengths.cpu(),
                                                   batch_first=True, enforce_sorted=False)
        states, _ = nn.utils.rnn.pad_packed_sequence(self.gru(packed)[0], batch_first=True,
                                                     total_length=n)
        index = ((cols - shift) % n).unsqueeze(2).expand(b, n, self.dim)
        return self.out(states.gather(1, index))
