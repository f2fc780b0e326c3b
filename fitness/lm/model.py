"""A small GPT (nanoGPT style): pre-norm blocks, learned positions, tied embeddings, dropout.

`forward(idx)` returns logits. `forward(idx, need_attention=True)` also returns the attention
probabilities of every layer (mean over heads) and the last hidden states: stage 3 reads the
model's own view of a memory from them. Saved without pickle: weights as safetensors, the
config as JSON (`save` / `load`).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

WEIGHTS = "model.safetensors"
CONFIG = "config.json"


@dataclass(frozen=True)
class GPTConfig:
    vocab_size: int = 2048
    context: int = 384
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0  # measured: dropout doubles a CPU step (mask RNG); early stopping regularises instead

    @classmethod
    def from_dict(cls, d: dict) -> "GPTConfig":
        known = set(cls.__dataclass_fields__)
        bad = sorted(set(d) - known)
        if bad:
            raise ValueError(f"model config: unknown keys {bad}")
        return cls(**d)


class Attention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.n_head = cfg.n_head
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=False)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=False)
        self.dropout = cfg.dropout

    def forward(self, x, need_attention: bool = False):
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        if not need_attention:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                               dropout_p=self.dropout if self.training else 0.0)
            att = None
        else:  # the explicit path: same numbers, and the probabilities are kept
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(k.shape[-1])
            mask = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
            att = scores.masked_fill(~mask, float("-inf")).softmax(dim=-1)
            y = att @ v
            att = att.mean(dim=1)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return F.dropout(self.proj(y), self.dropout, self.training), att


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.n_embd)
        self.attn = Attention(cfg)
        self.ln2 = nn.LayerNorm(cfg.n_embd)
        self.fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=False)
        self.out = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=False)
        self.dropout = cfg.dropout

    def forward(self, x, need_attention: bool = False):
        a, att = self.attn(self.ln1(x), need_attention)
        x = x + a
        h = self.out(F.gelu(self.fc(self.ln2(x))))
        return x + F.dropout(h, self.dropout, self.training), att

    def cached(self, x, kv):
        """The block on new positions x given the keys and values of the earlier ones (or None),
        in eval mode; returns its output and the keys and values so far."""
        a = self.ln1(x)
        B, T, C = a.shape
        nh = self.attn.n_head
        q, k, v = (t.view(B, T, nh, C // nh).transpose(1, 2) for t in self.attn.qkv(a).split(C, dim=2))
        if kv is not None:
            k, v = torch.cat([kv[0], k], dim=2), torch.cat([kv[1], v], dim=2)
        # no cache: the whole prefix, causal; with one: a single new position that sees all before it
        y = F.scaled_dot_product_attention(q, k, v, is_causal=kv is None)
        x = x + self.attn.proj(y.transpose(1, 2).reshape(B, T, C))
        return x + self.out(F.gelu(self.fc(self.ln2(x)))), (k, v)


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.tok = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.pos = nn.Embedding(cfg.context, cfg.n_embd)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd)
        self.apply(self._init)
        for name, p in self.named_parameters():  # GPT-2's scaled init of residual projections
            if name.endswith("proj.weight") or name.endswith("out.weight"):
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init(m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, 0.0, 0.02)

    def hidden(self, idx):
        """Final hidden states (after the last norm); logits are `hidden @ tok.weight.T`."""
        return self._trunk(idx, False)[0]

    def forward(self, idx, need_attention: bool = False):
        h, atts = self._trunk(idx, need_attention)
        logits = h @ self.tok.weight.T  # tied embeddings
        if need_attention:
            return logits, torch.stack(atts, dim=1), h  # att: (B, layers, T, T)
        return logits

    def _trunk(self, idx, need_attention: bool):
        T = idx.shape[1]
        if T > self.cfg.context:
            raise ValueError(f"sequence of {T} tokens is longer than the model's context {self.cfg.context}")
        x = self.tok(idx) + self.pos(torch.arange(T, device=idx.device))
        x = F.dropout(x, self.cfg.dropout, self.training)
        atts = []
        for b in self.blocks:
            x, att = b(x, need_attention)
            atts.append(att)
        return self.ln_f(x), atts

    @torch.inference_mode()
    def sample(self, prefix: torch.Tensor, n: int, length: int, generator: torch.Generator):
        """n continuations of `length` tokens sampled (temperature 1) after the 1-D token ids
        `prefix`, with a key/value cache (one short forward per token, not one over the whole
        sequence). Returns the tokens (n, length) and the model's log-probabilities (n, length,
        vocab) at each sampled position: the distribution each token was drawn from."""
        T0 = prefix.shape[0]
        if T0 + length - 1 > self.cfg.context:
            raise ValueError(f"{T0} + {length} tokens are longer than the model's context {self.cfg.context}")
        x = self.tok(prefix[None]) + self.pos(torch.arange(T0, device=prefix.device))
        caches = []
        for b in self.blocks:
            x, kv = b.cached(x, None)
            caches.append(tuple(t.expand(n, -1, -1, -1) for t in kv))
        logits = (self.ln_f(x[:, -1]) @ self.tok.weight.T).expand(n, -1)
        ys, lps = [], []
        for i in range(length):
            lp = torch.log_softmax(logits, dim=-1)
            # drawn where the generator lives (a CPU one: the same samples on any device)
            y = torch.multinomial(lp.exp().to(generator.device), 1, generator=generator)[:, 0].to(lp.device)
            ys.append(y)
            lps.append(lp)
            if i == length - 1:
                break
            x = self.tok(y)[:, None] + self.pos(torch.tensor([T0 + i], device=prefix.device))
            for j, b in enumerate(self.blocks):
                x, caches[j] = b.cached(x, caches[j])
            logits = self.ln_f(x[:, -1]) @ self.tok.weight.T
        return torch.stack(ys, 1), torch.stack(lps, 1)

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters()) - self.pos.weight.numel()


def save(model: GPT, folder: str | Path, extra: dict | None = None) -> None:
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = folder / (WEIGHTS + ".tmp")
    save_file(state, str(tmp))
    tmp.replace(folder / WEIGHTS)
    meta = {"model": asdict(model.cfg), **(extra or {})}
    tmp = folder / (CONFIG + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2, sort_keys=True))
    tmp.replace(folder / CONFIG)


def load(folder: str | Path) -> tuple[GPT, dict]:
    """The model in eval mode and its config.json (with whatever training wrote there)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    try:
        meta = json.loads((folder / CONFIG).read_text())
        cfg = GPTConfig.from_dict(meta["model"])
    except FileNotFoundError:
        raise ValueError(f"{folder}: no {CONFIG}: not a saved model folder") from None
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"{folder / CONFIG}: not a model config ({exc})") from None
    model = GPT(cfg)
    try:
        state = load_file(str(folder / WEIGHTS))
        model.load_state_dict(state)
    except FileNotFoundError:
        raise ValueError(f"{folder}: no {WEIGHTS}") from None
    except (SafetensorError, RuntimeError, OSError) as exc:
        raise ValueError(f"{folder / WEIGHTS}: unreadable or mismatched weights ({str(exc).splitlines()[0]})") from None
    model.eval()
    return model, meta
