"""Mask2Former masked-attention transformer decoder.

Learned queries attend to one pixel-decoder level per layer (coarsest first, round-robin), and
each query only sees the pixels its previous mask prediction marks as foreground (masked
attention). Class and mask predictions are made before the first layer and after every layer,
so every layer can be supervised (deep supervision).
"""

from __future__ import annotations

from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import nn

from weft_lightning.models.heads.position_encoding import SinePositionEncoding


def _xavier_(module: nn.Module) -> None:
    for param in module.parameters():
        if param.dim() > 1:
            nn.init.xavier_uniform_(param)


class AttentionLayer(nn.Module):
    """Post-norm multi-head attention block: ``x = LN(x + attn(x + pos_q, mem + pos_k, mem))``."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        _xavier_(self)

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor,
        query_pos: torch.Tensor,
        key_pos: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``x`` (B, Q, C) attends to ``memory`` (B, L, C); ``attn_mask`` is True where blocked."""
        # need_weights=False: fused attention, no (B*heads, Q, L) probabilities kept for backward
        out = self.attn(
            x + query_pos, memory + key_pos, memory, attn_mask=attn_mask, need_weights=False
        )[0]
        return self.norm(x + self.dropout(out))


class FeedForwardLayer(nn.Module):
    """Post-norm ReLU FFN block."""

    def __init__(self, dim: int, ffn_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        _xavier_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.dropout(F.relu(self.linear1(x)))
        return self.norm(x + self.dropout(self.linear2(hidden)))


class MLP(nn.Module):
    """``num_layers`` Linear layers with ReLU between them."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in pairwise(dims))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for index, layer in enumerate(self.layers):
            x = layer(x)
            if index < len(self.layers) - 1:
                x = F.relu(x)
        return x


class MaskedAttentionDecoder(nn.Module):
    """Queries -> per-layer class logits (B, Q, K+1) and mask logits (B, Q, H/4, W/4).

    Args:
        in_channels: width of the multi-scale features and of the mask features.
        num_classes: target classes (a "no object" class is added).
        hidden_dim: query width.
        num_queries: number of learned queries.
        heads: attention heads.
        ffn_dim: FFN width.
        dec_layers: decoder layers.
        num_levels: feature levels visited round-robin.
        mask_dim: width of the mask embedding (= mask-feature width).
    """

    def __init__(
        self,
        in_channels: int = 96,
        num_classes: int = 2,
        hidden_dim: int = 96,
        num_queries: int = 100,
        heads: int = 8,
        ffn_dim: int = 768,
        dec_layers: int = 9,
        num_levels: int = 3,
        mask_dim: int = 96,
    ) -> None:
        super().__init__()
        self.heads = heads
        self.num_levels = num_levels
        self.position = SinePositionEncoding(hidden_dim // 2, normalize=True)
        self.cross_attn = nn.ModuleList(
            AttentionLayer(hidden_dim, heads) for _ in range(dec_layers)
        )
        self.self_attn = nn.ModuleList(AttentionLayer(hidden_dim, heads) for _ in range(dec_layers))
        self.ffn = nn.ModuleList(FeedForwardLayer(hidden_dim, ffn_dim) for _ in range(dec_layers))
        self.decoder_norm = nn.LayerNorm(hidden_dim)
        self.query_feat = nn.Embedding(num_queries, hidden_dim)
        self.query_embed = nn.Embedding(num_queries, hidden_dim)
        self.level_embed = nn.Embedding(num_levels, hidden_dim)
        self.input_proj = nn.ModuleList(
            self._projection(in_channels, hidden_dim) for _ in range(num_levels)
        )
        self.class_embed = nn.Linear(hidden_dim, num_classes + 1)
        self.mask_embed = MLP(hidden_dim, hidden_dim, mask_dim, 3)

    @staticmethod
    def _projection(in_channels: int, dim: int) -> nn.Module:
        if in_channels == dim:
            return nn.Identity()
        conv = nn.Conv2d(in_channels, dim, 1)
        nn.init.kaiming_uniform_(conv.weight, a=1)
        assert conv.bias is not None
        nn.init.zeros_(conv.bias)
        return conv

    def forward(self, features: list[torch.Tensor], mask_features: torch.Tensor) -> dict:
        """Decode ``features`` (coarsest first) against ``mask_features`` (B, C, H/4, W/4).

        Returns ``{"pred_logits", "pred_masks", "aux_outputs": [earlier predictions]}``.
        """
        memories, positions, sizes = self._flatten(features)
        batch = mask_features.shape[0]
        query_pos = self.query_embed.weight[None].expand(batch, -1, -1)
        queries = self.query_feat.weight[None].expand(batch, -1, -1)
        logits, masks, attn_mask = self.predict(queries, mask_features, sizes[0])
        predictions = [(logits, masks)]
        for layer in range(len(self.cross_attn)):
            level = layer % self.num_levels
            attn_mask = _unblock_empty_rows(attn_mask)
            queries = self.cross_attn[layer](
                queries, memories[level], query_pos, positions[level], attn_mask
            )
            queries = self.self_attn[layer](queries, queries, query_pos, query_pos)
            queries = self.ffn[layer](queries)
            next_size = sizes[(layer + 1) % self.num_levels]
            logits, masks, attn_mask = self.predict(queries, mask_features, next_size)
            predictions.append((logits, masks))
        aux = [{"pred_logits": c, "pred_masks": m} for c, m in predictions[:-1]]
        return {"pred_logits": logits, "pred_masks": masks, "aux_outputs": aux}

    def _flatten(
        self, features: list[torch.Tensor]
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[tuple[int, int]]]:
        if len(features) != self.num_levels:
            raise ValueError(
                f"The decoder expects {self.num_levels} feature levels, got {len(features)}."
            )
        memories, positions, sizes = [], [], []
        for level, feature in enumerate(features):
            sizes.append((int(feature.shape[-2]), int(feature.shape[-1])))
            positions.append(self.position(feature).flatten(2).transpose(1, 2).to(feature.dtype))
            memory = self.input_proj[level](feature).flatten(2).transpose(1, 2)
            memories.append(memory + self.level_embed.weight[level])
        return memories, positions, sizes

    def predict(
        self, queries: torch.Tensor, mask_features: torch.Tensor, attn_size: tuple[int, int]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Class logits, mask logits and the next layer's attention mask (B*heads, Q, h*w)."""
        decoded = self.decoder_norm(queries)
        logits = self.class_embed(decoded)
        embedding = self.mask_embed(decoded)
        masks = torch.einsum("bqc,bchw->bqhw", embedding, mask_features)
        with torch.no_grad():
            small = F.interpolate(masks, size=attn_size, mode="bilinear", align_corners=False)
            blocked = small.sigmoid().flatten(2) < 0.5
            blocked = blocked.repeat_interleave(self.heads, dim=0)
        return logits, masks, blocked


def _unblock_empty_rows(attn_mask: torch.Tensor) -> torch.Tensor:
    """Let a query that would see no pixel at all attend everywhere (avoids NaN softmax)."""
    empty = attn_mask.all(dim=-1, keepdim=True)
    return attn_mask & ~empty
