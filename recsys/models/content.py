"""Content encoders for the list features of a side table (prep/vocab.py: id 0 is padding).

- `TextCNN` (Kim, 2014): a title's or a description's word ids -> word embeddings, a 1-D
  convolution over windows of `width` words, ReLU, the maximum over the positions that hold a
  word. Word order within the window matters; where in the text does not.
- a bag of values (genres, tags): the mean of the values' embeddings (`nn.EmbeddingBag`).
`ListEncoders` holds one per list feature and concatenates their outputs: with the categorical
and numeric features of a `Tower` (two_tower.py) they are the content item encoder, which places
an item that has no interactions yet.
"""
from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F

WORD_DIM = 32
CHANNELS = 32
WIDTH = 3
BAG_DIM = 16


class TextCNN(nn.Module):
    """ids [B, L] (0 = padding) -> [B, channels]; all-padding rows give zeros."""

    def __init__(self, vocab: int, dim: int = WORD_DIM, channels: int = CHANNELS, width: int = WIDTH):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim, padding_idx=0)
        self.conv = nn.Conv1d(dim, channels, width, padding=width // 2)

    def forward(self, ids: Tensor) -> Tensor:
        h = F.relu(self.conv(self.embed(ids).transpose(1, 2)))  # [B, C, L]
        return h.masked_fill((ids == 0).unsqueeze(1), 0.0).amax(dim=2)


class ListEncoders(nn.Module):
    """One encoder per list feature (`specs`: kind "text" or "values", cardinality) -> the
    concatenation of their outputs, `width` wide."""

    def __init__(self, specs: list[dict]):
        super().__init__()
        self.encoders = nn.ModuleList(
            TextCNN(s["cardinality"]) if s["kind"] == "text"
            else nn.EmbeddingBag(s["cardinality"], BAG_DIM, mode="mean", padding_idx=0)
            for s in specs)
        self.width = sum(CHANNELS if s["kind"] == "text" else BAG_DIM for s in specs)

    def forward(self, lists: list[Tensor]) -> list[Tensor]:
        return [enc(ids) for enc, ids in zip(self.encoders, lists)]
