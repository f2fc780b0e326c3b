"""What the language model says about a memory (stage 3): its view of each chunk, chunk
utilities, and the real continuation loss of a target under any selection of chunks.

A sequence the model reads is `<|endoftext|>` + the kept chunks in story order + the target
(and, for training labels only, the sentences after it). Chunk 0 is encoded as it starts a
story; every later chunk with its leading space, as it stands in the story.

Model features of candidate c, from one forward pass over the whole memory (attention averaged
over layers and heads):

| feature | meaning |
|---|---|
| attn_recent | attention the recent chunk's tokens pay to c's tokens (mean over the recent chunk's queries, summed over c's keys) |
| attn_last | attention the memory's last token (the one that predicts the target's first token) pays to c's tokens |
| attn_received | attention c's tokens receive from every later query, accumulated (the H2O heavy-hitter score), mean over c's tokens |
| surprisal | mean negative log-likelihood of c's tokens given the memory before it (nats / 4) |
| hidden_sim | cosine similarity of c's mean final hidden state and the recent chunk's |
| hidden_last | cosine similarity of c's mean final hidden state and the memory's last token's (the state that predicts the target) |
| help_recent | how much c helps the model predict the recent chunk: mean loss of the recent chunk read alone minus read after c (nats); the same measurement as a chunk's utility, made on the memory's own last sentence instead of the unseen target |
| imagined_gain | the model continues the whole memory greedily for 8 tokens (its own guess of what comes next); the mean log-probability gain of that continuation when c is read before the recent chunk, against the recent chunk alone |
| full_agree | over the same 8 positions, sum_y p_full(y) (log p_c(y) - log p_0(y)) = KL(p_full, p_0) - KL(p_full, p_c): how far c alone moves the model's next-token predictions toward what it predicts from the whole memory |
| sampled_gain | the chunk's expected utility if the model's reading of the whole memory were the truth: the model *samples* 8 continuations of 16 tokens from the whole memory (seeded by the episode's tokens), and at every sampled position sum_y p_full(y) (log p_c(y) - log p_0(y)) as in full_agree; mean over positions and samples. The greedy continuation of full_agree is one likely path; samples cover what the story may do next |
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from . import model as gpt
from . import tokenizer as toks



@dataclass(frozen=True)
class EpisodeTokens:
    chunks: tuple[tuple[int, ...], ...]  # memory chunks; the last is the recent one
    segments: tuple[tuple[int, ...], ...]  # target, then the look-ahead sentences used for labels

    @property
    def target(self) -> tuple[int, ...]:
        return self.segments[0]

    def sequence(self, kept: Sequence[int], n_segments: int = 1) -> tuple[list[int], list[tuple[int, int]]]:
        """Token ids of <eot> + kept chunks + segments, and each segment's (start, end)."""
        ids: list[int] = []
        for c in sorted(kept):
            ids.extend(self.chunks[c])
        spans = []
        for s in self.segments[:n_segments]:
            spans.append((len(ids) + 1, len(ids) + 1 + len(s)))
            ids.extend(s)
        return ids, spans

    def recall_mask(self) -> np.ndarray:
        """Target tokens that occur in the memory but not in the recent chunk."""
        older = {t for ch in self.chunks[:-1] for t in ch}
        recent = set(self.chunks[-1])
        return np.array([t in older and t not in recent for t in self.target], dtype=bool)


class MemoryLM:
    """A trained model and its tokenizer, with the batched forwards stage 3 needs."""

    def __init__(self, folder: str | Path, threads: int = 0, batch: int = 32, imagined: int = 8,
                 samples: int = 8, sample_tokens: int = 16, device: str = "cpu"):
        self.folder = Path(folder)
        self.imagined = imagined
        self.samples, self.sample_tokens = samples, sample_tokens
        self.device = torch.device(device or "cpu")
        self.model, self.meta = gpt.load(self.folder)
        self.model.to(self.device)
        self.tok = toks.load(self.folder)
        self.eot = toks.eot_id(self.tok)
        self.context = self.model.cfg.context
        self.batch = batch
        torch.set_num_threads(threads or os.cpu_count() or 1)

    def encode(self, chunks: Sequence[str], segments: Sequence[str]) -> EpisodeTokens:
        texts = [chunks[0]] + [" " + c for c in chunks[1:]] + [" " + s for s in segments]
        ids = toks.encode_many(self.tok, texts)
        return EpisodeTokens(tuple(tuple(i) for i in ids[: len(chunks)]),
                             tuple(tuple(i) for i in ids[len(chunks):]))

    def fits(self, ep: EpisodeTokens, n_segments: int) -> bool:
        after = max(sum(map(len, ep.segments[:n_segments])), self.imagined, self.sample_tokens)
        return 1 + sum(map(len, ep.chunks)) + after <= self.context

    # ------------------------------------------------------------------ losses

    @torch.inference_mode()
    def _batched(self, seqs: Sequence[Sequence[int]], fn) -> list:
        """fn(i, hidden (T, d), ids (T,)) for every sequence `[eot] + seqs[i]`, batched by length."""
        out: list = [None] * len(seqs)
        order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
        for b in range(0, len(order), self.batch):
            idx = order[b: b + self.batch]
            T = max(len(seqs[i]) for i in idx) + 1
            if T > self.context:
                raise ValueError(f"a sequence of {T} tokens is longer than the model's context {self.context}")
            x = torch.full((len(idx), T), self.eot, dtype=torch.long)
            for r, i in enumerate(idx):
                x[r, 1: 1 + len(seqs[i])] = torch.tensor(seqs[i], dtype=torch.long)
            x = x.to(self.device)
            h = self.model.hidden(x)
            for r, i in enumerate(idx):
                n = len(seqs[i]) + 1
                out[i] = fn(i, h[r, :n], x[r, :n])
        return out

    def span_losses(self, requests: Sequence[tuple[list[int], list[tuple[int, int]]]]) -> list[list[np.ndarray]]:
        """Per-token losses (nats) of each span of each sequence; spans index `[eot] + ids`."""
        W = self.model.tok.weight

        def fn(i, h, x):
            # position p - 1 predicts token p
            return [F.cross_entropy(h[a - 1: e - 1] @ W.T, x[a:e], reduction="none").cpu().numpy().astype(np.float64)
                    for a, e in requests[i][1]]

        return self._batched([r[0] for r in requests], fn)

    @torch.inference_mode()
    def generate(self, prefixes: Sequence[Sequence[int]], n: int) -> tuple[list[list[int]], list[torch.Tensor]]:
        """Greedy continuations of n tokens after `[eot] + prefix`, and the model's log-probs
        (n, vocab) at each generated position."""
        W = self.model.tok.weight
        seqs = [list(p) for p in prefixes]
        logps: list[list[torch.Tensor]] = [[] for _ in prefixes]
        for _ in range(n):
            def fn(i, h, x):
                return torch.log_softmax(h[-1] @ W.T, dim=-1)

            last = self._batched(seqs, fn)
            for i, lp in enumerate(last):
                logps[i].append(lp)
                seqs[i].append(int(lp.argmax()))
        return [s[len(p):] for s, p in zip(seqs, prefixes)], [torch.stack(l) for l in logps]

    # ------------------------------------------------------------------ the model's view

    @torch.inference_mode()
    def model_features(self, eps: Sequence[EpisodeTokens]) -> list[np.ndarray]:
        """(n - 1, len(MODEL_FEATURES)) features per episode: one forward over each memory for
        the attention, surprisal and hidden-state features; a greedy continuation of
        `self.imagined` tokens from the whole memory; short forwards of (chunk, recent chunk, continuation)."""
        view = self._view(eps)
        memories = [[t for ch in ep.chunks for t in ch] for ep in eps]
        g = self.imagined
        if any(1 + len(m) + g > self.context for m in memories):
            raise ValueError("a memory leaves no room for the imagined continuation (check fits() first)")
        gen, p_full = self.generate(memories, g) if g else ([[] for _ in eps], [None] * len(eps))
        W = self.model.tok.weight
        reqs, where = [], []
        for e, ep in enumerate(eps):
            recent = list(ep.chunks[-1])
            for c in [-1] + list(range(len(ep.chunks) - 1)):
                head = list(ep.chunks[c]) if c >= 0 else []
                reqs.append(head + recent + gen[e])
                where.append((e, c, len(head), len(recent)))

        def fn(i, h, x):
            e, c, lh, lr = where[i]
            a, b = 1 + lh, 1 + lh + lr  # the recent chunk's tokens
            rec = float(F.cross_entropy(h[a - 1: b - 1] @ W.T, x[a:b], reduction="mean"))
            if not g:
                return rec, None
            return rec, torch.log_softmax(h[b - 1: b - 1 + g] @ W.T, dim=-1)  # predicting gen[0..g-1]

        res = self._batched(reqs, fn)
        base = {}
        extra = [np.zeros((len(ep.chunks) - 1, 3)) for ep in eps]
        for (e, c, _, _), (rec, lp) in zip(where, res):
            if c < 0:
                base[e] = (rec, lp)
                continue
            rec0, lp0 = base[e]
            extra[e][c, 0] = rec0 - rec  # help_recent
            if g:
                d = lp - lp0
                idx = torch.tensor(gen[e], device=d.device)
                extra[e][c, 1] = float(d[torch.arange(g, device=d.device), idx].mean())  # imagined_gain
                extra[e][c, 2] = float((p_full[e].exp() * d).sum(-1).mean())  # full_agree
        sampled = [self.sampled_gain(ep)[:, None] for ep in eps]
        return [np.hstack([v, x, s]) for v, x, s in zip(view, extra, sampled)]

    @torch.inference_mode()
    def sampled_gain(self, ep: EpisodeTokens) -> np.ndarray:
        """(n - 1,) per candidate: `sampled_gain` (see the module docstring). The samples are
        seeded by the episode's own tokens, so a feature does not depend on batching or order."""
        S, L = self.samples, self.sample_tokens
        n = len(ep.chunks)
        if not S or not L or n < 2:
            return np.zeros(n - 1)
        memory = [t for ch in ep.chunks for t in ch]
        digest = hashlib.blake2b(np.asarray(memory, dtype=np.int64).tobytes(), digest_size=8).digest()
        gen = torch.Generator().manual_seed(int.from_bytes(digest, "little") >> 1)
        prefix = torch.tensor([self.eot] + memory, dtype=torch.long, device=self.device)
        ys, p_full = self.model.sample(prefix, S, L, gen)
        p_full = p_full.exp()
        recent = list(ep.chunks[-1])
        heads = [[]] + [list(ep.chunks[c]) for c in range(n - 1)]  # none, then each candidate
        rows = [[self.eot] + h + recent + y for h in heads for y in ys.tolist()]
        T = max(map(len, rows))
        x = torch.full((len(rows), T), self.eot, dtype=torch.long)
        ends = []
        for r, row in enumerate(rows):
            x[r, :len(row)] = torch.tensor(row, dtype=torch.long)
            ends.append(len(row))
        x = x.to(self.device)
        h = self.model.hidden(x)
        # position p - 1 predicts token p: the L positions before each row's end predict its sample
        pos = torch.tensor(ends)[:, None] - 1 - L + torch.arange(L)[None]
        hs = h[torch.arange(len(rows))[:, None], pos.to(self.device)]
        lp = torch.log_softmax(hs @ self.model.tok.weight.T, dim=-1).view(n, S, L, -1)
        expected = (p_full[None] * lp).sum(-1).mean(dim=(1, 2))  # (n,): E_full[log p(y | head, recent)]
        return (expected[1:] - expected[0]).double().cpu().numpy()

    @torch.inference_mode()
    def _view(self, eps: Sequence[EpisodeTokens]) -> list[np.ndarray]:
        out: list[np.ndarray | None] = [None] * len(eps)
        order = sorted(range(len(eps)), key=lambda i: sum(map(len, eps[i].chunks)))
        W = self.model.tok.weight
        for b in range(0, len(order), self.batch):
            idx = order[b: b + self.batch]
            T = max(sum(map(len, eps[i].chunks)) for i in idx) + 1
            x = torch.full((len(idx), T), self.eot, dtype=torch.long)
            for r, i in enumerate(idx):
                ids = [t for ch in eps[i].chunks for t in ch]
                x[r, 1: 1 + len(ids)] = torch.tensor(ids, dtype=torch.long)
            x = x.to(self.device)
            _, att, h = self.model(x, need_attention=True)
            att = att.mean(dim=1)  # (B, T, T)
            for r, i in enumerate(idx):
                out[i] = self._features(eps[i], att[r], h[r], x[r], W)
        return out  # type: ignore[return-value]

    @staticmethod
    def _features(ep: EpisodeTokens, A, h, x, W) -> np.ndarray:
        bounds = np.cumsum([1] + [len(c) for c in ep.chunks])
        n = len(ep.chunks)
        ra, re_ = int(bounds[n - 1]), int(bounds[n])
        end = re_
        nll = F.cross_entropy(h[: end - 1] @ W.T, x[1:end], reduction="none")
        hr = h[ra:re_].mean(0)
        rows = []
        for c in range(n - 1):
            a, e = int(bounds[c]), int(bounds[c + 1])
            if e <= a:
                rows.append([0.0] * 6)
                continue
            attn_recent = float(A[ra:re_, a:e].sum(1).mean()) if re_ > ra else 0.0
            attn_last = float(A[end - 1, a:e].sum())
            attn_received = float(A[a:end, a:e].sum()) / (e - a)
            surprisal = float(nll[a - 1: e - 1].mean()) / 4.0
            hidden_sim = float(F.cosine_similarity(h[a:e].mean(0), hr, dim=0)) if re_ > ra else 0.0
            hidden_last = float(F.cosine_similarity(h[a:e].mean(0), h[end - 1], dim=0))
            rows.append([attn_recent, attn_last, attn_received, surprisal, hidden_sim, hidden_last])
        return np.asarray(rows, dtype=np.float64).reshape(n - 1, 6)


def encode_episodes(lm: MemoryLM, eps: Sequence, n_segments: int) -> list[tuple]:
    """(episode, tokens) for the episodes whose memory and label sentences fit the context."""
    out = []
    for ep in eps:
        et = lm.encode(ep.chunks, (ep.target,) + ep.lookahead[: n_segments - 1])
        if lm.fits(et, n_segments):
            out.append((ep, et))
    return out


def leave_one_in(lm: MemoryLM, eps: Sequence[EpisodeTokens], n_segments: int) -> list[dict]:
    """Per episode: per-token losses of every segment given only the recent chunk (`base`),
    given candidate c plus the recent chunk (`with[c]`), and given the full memory (`full`)."""
    requests, where = [], []
    for e, ep in enumerate(eps):
        n = len(ep.chunks)
        kept_sets = [(n - 1,)] + [(c, n - 1) for c in range(n - 1)] + [tuple(range(n))]
        for j, kept in enumerate(kept_sets):
            requests.append(ep.sequence(kept, n_segments))
            where.append((e, j))
    losses = lm.span_losses(requests)
    out = [{"with": [None] * (len(ep.chunks) - 1)} for ep in eps]
    for (e, j), ls in zip(where, losses):
        n = len(eps[e].chunks)
        if j == 0:
            out[e]["base"] = ls
        elif j == n:
            out[e]["full"] = ls
        else:
            out[e]["with"][j - 1] = ls
    return out


def selection_losses(lm: MemoryLM, items: Iterable[tuple[EpisodeTokens, tuple[int, ...]]]) -> list[np.ndarray]:
    """Per-token target losses for each (episode, kept chunks) pair."""
    reqs = [ep.sequence(kept, 1) for ep, kept in items]
    return [ls[0] for ls in lm.span_losses(reqs)]
