"""A lean re-implementation of ImageGPTForCausalImageModeling for training and export.

Why not use the transformers class directly: its eager attention and cache
objects make training on a 2-core CPU several times slower, and its cache
classes do not trace into a clean ONNX graph. This module keeps the exact
parameter names and shapes of the transformers model, so a state dict moves
between the two unchanged, and the export parity check compares the ONNX graph
against the transformers forward pass itself.

Numerics follow transformers >= 5: attention scores are divided by the exact
float sqrt(head_dim) (4.57.x truncated it to an int, which is wrong for
imagegpt-medium and -large).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class IGPTShape:
    """The ImageGPTConfig fields that determine the computation."""

    vocab_size: int = 513
    n_positions: int = 1024
    n_embd: int = 512
    n_layer: int = 24
    n_head: int = 8
    n_inner: int | None = None
    layer_norm_epsilon: float = 1e-5
    scale_attn_by_inverse_layer_idx: bool = False
    attention_span: int | None = None
    """S: token t attends to positions t-S..t only (a banded causal mask; None = all of
    0..t). Not an ImageGPTConfig field: transformers keeps it as an extra config attribute
    (saved in config.json, read back by from_config) but its own model ignores it, so the
    export carries it itself (export_bundle's attention_span, the manifest's model section)."""

    def __post_init__(self) -> None:
        span = self.attention_span
        if span is not None and (isinstance(span, bool) or not isinstance(span, int) or span < 1):
            raise ValueError(f"attention_span must be a positive integer, got {span!r}")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def inner_dim(self) -> int:
        return self.n_inner if self.n_inner is not None else 4 * self.n_embd

    @classmethod
    def from_config(cls, config) -> IGPTShape:
        """Refuse config options whose numerics this module does not reproduce."""
        if getattr(config, "add_cross_attention", False):
            raise ValueError("ImageGPT configs with cross attention are not supported")
        if not getattr(config, "scale_attn_weights", True):
            raise ValueError("scale_attn_weights=False is not supported")
        if getattr(config, "activation_function", "quick_gelu") != "quick_gelu":
            raise ValueError(f"activation {config.activation_function!r} is not supported")
        if config.n_embd % config.n_head:
            raise ValueError("n_embd must be divisible by n_head")
        return cls(
            vocab_size=config.vocab_size,
            n_positions=config.n_positions,
            n_embd=config.n_embd,
            n_layer=config.n_layer,
            n_head=config.n_head,
            n_inner=config.n_inner,
            layer_norm_epsilon=config.layer_norm_epsilon,
            scale_attn_by_inverse_layer_idx=bool(config.scale_attn_by_inverse_layer_idx),
            attention_span=getattr(config, "attention_span", None),
        )

    def to_config_kwargs(self) -> dict:
        span = {} if self.attention_span is None else {"attention_span": self.attention_span}
        return span | {
            "vocab_size": self.vocab_size,
            "n_positions": self.n_positions,
            "n_embd": self.n_embd,
            "n_layer": self.n_layer,
            "n_head": self.n_head,
            "n_inner": self.n_inner,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "scale_attn_by_inverse_layer_idx": self.scale_attn_by_inverse_layer_idx,
            "activation_function": "quick_gelu",
            "tie_word_embeddings": False,
        }


class RMSNorm(nn.Module):
    """ImageGPT's layer norm: no mean centring, no bias."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x / torch.sqrt(torch.mean(torch.square(x), dim=-1, keepdim=True) + self.eps)
        return x * self.weight


class Conv1D(nn.Module):
    """GPT-2's transposed linear layer (weight is [in, out]), kept for name and shape parity."""

    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_in, n_out))
        self.bias = nn.Parameter(torch.zeros(n_out))
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.bias, x.reshape(-1, x.shape[-1]), self.weight).view(
            *x.shape[:-1], self.weight.shape[1]
        )


def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(1.702 * x)


class Attention(nn.Module):
    def __init__(self, shape: IGPTShape, layer_idx: int):
        super().__init__()
        self.n_head = shape.n_head
        self.head_dim = shape.head_dim
        self.c_attn = Conv1D(shape.n_embd, 3 * shape.n_embd)
        self.c_proj = Conv1D(shape.n_embd, shape.n_embd)
        divisor = math.sqrt(shape.head_dim)
        if shape.scale_attn_by_inverse_layer_idx:
            divisor *= layer_idx + 1
        self.divisor = divisor
        self.span = shape.attention_span

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.n_head, self.head_dim).transpose(1, 2)

    def forward_train(self, x: torch.Tensor) -> torch.Tensor:
        """Full causal sequence with SDPA: the fast path for training (banded with a span)."""
        b, t, c = x.shape
        q, k, v = (self._heads(z) for z in self.c_attn(x).split(c, dim=2))
        if self.span is None or self.span >= t - 1:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=1.0 / self.divisor)
        else:
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=banded_mask(t, self.span, x.device), scale=1.0 / self.divisor
            )
        return self.c_proj(y.transpose(1, 2).reshape(b, t, c))

    def forward_step(
        self,
        x: torch.Tensor,
        past_key: torch.Tensor,
        past_value: torch.Tensor,
        hidden_past: torch.Tensor,
        hidden_new: torch.Tensor,
        capacity: int,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """New tokens attend to a preallocated cache and to each other; explicit ops trace cleanly.

        past_key is [B, H, D, C] and past_value [B, H, C, D] for a capacity C of which only
        the first past_length positions are valid; hidden_past (bool [1, C]) hides the rest
        and hidden_new (bool [t, t]) is the causal mask among the new tokens. `capacity` (C)
        is read from the first layer's buffer once per step, not per layer (fewer kernels).
        The scores over the cache and over the new tokens are concatenated (not the cache
        itself), so the graph never copies the cache; it returns only the new keys
        [B, H, D, t] and values [B, H, t, D], which the runner writes into its buffers.
        Unused positions must hold finite values (the runner keeps them zero): their weight
        after softmax is exactly 0. A divisor of 1 (the export folds the scale into the
        query weights) traces no division.
        """
        q, k, v = self.c_attn(x).split(x.shape[2], dim=2)
        # Every reshape takes its sizes from its own input's shape, so that the export can
        # turn it into a constant-shape Reshape (export/step_graph.py: _static_reshapes).
        q = q.view(q.shape[0], q.shape[1], self.n_head, self.head_dim).transpose(1, 2)
        new_key = k.view(k.shape[0], k.shape[1], self.n_head, self.head_dim).permute(0, 2, 3, 1)
        new_value = self._heads(v)
        scores_past = torch.matmul(q, past_key)
        scores_new = torch.matmul(q, new_key)
        if self.divisor != 1.0:
            scores_past = scores_past / self.divisor
            scores_new = scores_new / self.divisor
        low = torch.finfo(scores_past.dtype).min
        scores = torch.cat(
            [scores_past.masked_fill(hidden_past, low), scores_new.masked_fill(hidden_new, low)],
            dim=-1,
        )
        weights = torch.softmax(scores, dim=-1)
        y = torch.matmul(weights[..., :capacity], past_value) + torch.matmul(
            weights[..., capacity:], new_value
        )
        return self.c_proj(y.transpose(1, 2).flatten(2)), new_key, new_value

    def fold_scale_into_query(self) -> None:
        """Divide the query weights by the divisor once (export only; changes floats ~1e-7)."""
        c = self.c_attn.weight.shape[0]
        with torch.no_grad():
            self.c_attn.weight[:, :c] /= self.divisor
            self.c_attn.bias[:c] /= self.divisor
        self.divisor = 1.0


def banded_mask(t: int, span: int, device: torch.device | None = None) -> torch.Tensor:
    """bool [t, t], True where query i may attend key j: i - span <= j <= i."""
    offset = torch.arange(t, device=device).unsqueeze(1) - torch.arange(t, device=device)
    return (offset >= 0) & (offset <= span)


class MLP(nn.Module):
    def __init__(self, shape: IGPTShape):
        super().__init__()
        self.c_fc = Conv1D(shape.n_embd, shape.inner_dim)
        self.c_proj = Conv1D(shape.inner_dim, shape.n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(quick_gelu(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self, shape: IGPTShape, layer_idx: int):
        super().__init__()
        self.ln_1 = RMSNorm(shape.n_embd, shape.layer_norm_epsilon)
        self.attn = Attention(shape, layer_idx)
        self.ln_2 = RMSNorm(shape.n_embd, shape.layer_norm_epsilon)
        self.mlp = MLP(shape)


class Transformer(nn.Module):
    def __init__(self, shape: IGPTShape):
        super().__init__()
        self.wte = nn.Embedding(shape.vocab_size, shape.n_embd)
        self.wpe = nn.Embedding(shape.n_positions, shape.n_embd)
        self.h = nn.ModuleList(Block(shape, i) for i in range(shape.n_layer))
        self.ln_f = RMSNorm(shape.n_embd, shape.layer_norm_epsilon)


class IGPT(nn.Module):
    """Same state-dict keys as ImageGPTForCausalImageModeling (transformer.*, lm_head.weight)."""

    def __init__(self, shape: IGPTShape):
        super().__init__()
        self.shape = shape
        self.transformer = Transformer(shape)
        self.lm_head = nn.Linear(shape.n_embd, shape.vocab_size - 1, bias=False)
        for emb in (self.transformer.wte, self.transformer.wpe):
            nn.init.normal_(emb.weight, std=0.02)
        nn.init.normal_(self.lm_head.weight, std=0.02)
        scaled_std = 0.02 / math.sqrt(2 * shape.n_layer)
        for block in self.transformer.h:
            nn.init.normal_(block.attn.c_proj.weight, std=scaled_std)
            nn.init.normal_(block.mlp.c_proj.weight, std=scaled_std)

    def forward(
        self, input_ids: torch.Tensor, position_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Logits [B, T, vocab-1] for a full sequence.

        position_ids ([T] or [B, T]) are the learned positions the tokens are fed at;
        None means 0..T-1 (a 32-wide raster). codec/runtime/positions.py gives the layouts
        ("grid": token (row, col) of an N x N image at row * 32 + col).
        """
        tr = self.transformer
        if position_ids is None:
            position_ids = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = tr.wte(input_ids) + tr.wpe(position_ids)
        for block in tr.h:
            x = x + block.attn.forward_train(block.ln_1(x))
            x = x + block.mlp(block.ln_2(x))
        return self.lm_head(tr.ln_f(x))

    def forward_step(
        self, input_ids: torch.Tensor, past_length: torch.Tensor, past: list[torch.Tensor]
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits for new tokens after a preallocated KV cache, and the new keys and values.

        past = [k0, v0, k1, v1, ...] with keys [B, H, D, C] and values [B, H, C, D], of which
        the first past_length (int64 scalar tensor) positions are valid. Returns the logits
        [B, t, vocab-1] and [new_k0, new_v0, ...] ([B, H, D, t] and [B, H, t, D]).
        """
        if self.shape.attention_span is not None:
            # The float step graph has no ring cache; spans are exported as exact graphs only.
            raise ValueError("the float step graph does not support an attention span")
        tr = self.transformer
        new_pos = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = tr.wte(input_ids) + tr.wpe(new_pos + past_length)
        # The masks are built once per step and shared by every layer.
        capacity = past[0].shape[3]
        cache_pos = torch.arange(capacity, device=input_ids.device)
        hidden_past = (cache_pos >= past_length).unsqueeze(0)
        hidden_new = new_pos.unsqueeze(0) > new_pos.unsqueeze(1)
        news: list[torch.Tensor] = []
        for i, block in enumerate(tr.h):
            a, key, value = block.attn.forward_step(
                block.ln_1(x), past[2 * i], past[2 * i + 1], hidden_past, hidden_new, capacity
            )
            x = x + a
            x = x + block.mlp(block.ln_2(x))
            news += [key, value]
        return self.lm_head(tr.ln_f(x)), news


def from_transformers(model, attention_span: int | None = None) -> IGPT:
    """Copy an ImageGPTForCausalImageModeling's weights into the lean module (strict).

    attention_span overrides the config's (a checkpoint trained with a span carries it in
    config.json); None keeps the config's, which is None for every stock checkpoint.
    """
    shape = IGPTShape.from_config(model.config)
    if attention_span is not None:
        shape = dataclasses.replace(shape, attention_span=attention_span)
    lean = IGPT(shape)
    state = {k: v for k, v in model.state_dict().items() if not k.endswith(".attn.bias")}
    lean.load_state_dict(state, strict=True)
    return lean.eval()


def to_transformers(lean: IGPT):
    """Build an ImageGPTForCausalImageModeling holding the lean module's weights."""
    from transformers import ImageGPTConfig, ImageGPTForCausalImageModeling

    config = ImageGPTConfig(**lean.shape.to_config_kwargs())
    model = ImageGPTForCausalImageModeling(config)
    missing, unexpected = model.load_state_dict(lean.state_dict(), strict=False)
    missing = [k for k in missing if not k.endswith(".attn.bias")]
    if missing or unexpected:
        raise ValueError(f"state dict mismatch: missing {missing}, unexpected {unexpected}")
    return model.eval()
