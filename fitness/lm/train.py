"""Train the small GPT on the LM's train stories: resumable, early-stopped on validation loss.

A training folder holds:
- `tokenizer.json`: trained first, once;
- `model.safetensors` + `config.json`: the best model so far by validation loss (what stage 3
  loads; early stopping keeps it, since this model overfits the small train text);
- `train_state.safetensors` + `train_state.json`: the last state (weights, AdamW moments, step,
  curve, settings), written every `eval_every` steps to a temporary file and renamed, so a
  killed run resumes from the last evaluation. Batches and dropout are drawn from generators
  seeded by (seed, step), so a resumed run takes the same steps as an uninterrupted one;
- `curve.json` and `curve.png`: train and validation loss per evaluation.

`train_lm(out, minutes=..)` trains until `max_steps`, the time budget of this call, or
`patience` evaluations without a better validation loss; calling it again on the same folder
goes on from where it stopped (same settings, except that `max_steps` may grow and `patience`
change).
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from evo_rules.run_folder import make_folder

from .. import tinystories
from . import model as gpt
from . import tokenizer as toks

STATE = "train_state.safetensors"
STATE_JSON = "train_state.json"
CURVE = "curve.json"


@dataclass(frozen=True)
class TrainSettings:
    seed: int = 1
    max_steps: int = 2600
    batch: int = 8
    lr: float = 2e-3
    min_lr_ratio: float = 0.1
    warmup: int = 100
    weight_decay: float = 0.1
    eval_every: int = 200
    eval_sequences: int = 128
    patience: int = 4
    vocab_size: int = 2048
    model: dict = field(default_factory=lambda: asdict(gpt.GPTConfig()))
    data: str = ""  # TinyStories folder; empty: the shipped copies
    max_stories: int = 0  # 0: every lm-train story (tests use a few)
    # "story": every training sequence starts at a story's <|endoftext|> (nanochat's BOS-aligned
    # rows), so the model always reads a story from its beginning; "random": crops anywhere in the
    # packed stream (nanoGPT), so it also learns to start mid-story. Folders trained before this
    # setting existed are "random".
    windows: str = "story"

    def to_dict(self) -> dict:
        return asdict(self)


WINDOWS = ("story", "random")

# option of `evo-rules lm train` for each setting it sets (an error names both)
_OPTIONS = {"max_steps": "--max-steps", "seed": "--seed", "patience": "--patience", "n_layer": "--layers",
            "n_embd": "--width", "n_head": "--heads", "context": "--context"}


def check_run(settings: TrainSettings, minutes: float, threads: int, device: str) -> None:
    """ValueError naming the setting (and its option) for a value training cannot use: counts
    below 1 (a context of 0 trains on nothing and reports a validation loss of 0), a width that
    the heads do not divide, a time budget that is not a positive number, an unknown device."""
    def bad(name, why):
        option = f" ({_OPTIONS[name]})" if name in _OPTIONS else ""
        return ValueError(f"lm train: {name}{option}: {why}")

    if settings.windows not in WINDOWS:
        raise bad("windows", f"use one of {', '.join(WINDOWS)}, not {settings.windows!r}")
    if not isinstance(settings.model, dict):
        raise bad("model", f"must be a table of the model's shape, got {settings.model!r}")
    values = {**settings.to_dict(), **settings.model}
    lowest = {"seed": 0, "max_steps": 1, "batch": 1, "warmup": 0, "eval_every": 1, "eval_sequences": 1,
              "patience": 1, "vocab_size": 1, "max_stories": 0, "n_layer": 1, "n_head": 1, "n_embd": 1,
              "context": 1}
    for name, lo in lowest.items():
        v = values.get(name)
        if name in values and (not isinstance(v, int) or isinstance(v, bool) or v < lo):
            raise bad(name, f"must be an integer >= {lo}, got {v!r}")
    for name in ("lr", "min_lr_ratio", "weight_decay"):
        v = values[name]
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
            raise bad(name, f"must be a finite number >= 0, got {v!r}")
    if values["n_embd"] % values["n_head"]:
        raise bad("n_embd", f"the width {values['n_embd']} must be a multiple of the heads "
                  f"({values['n_head']}, --heads)")
    if not isinstance(minutes, (int, float)) or not math.isfinite(minutes) or minutes <= 0:
        raise ValueError(f"lm train: minutes (--minutes): must be a finite number > 0, got {minutes!r}")
    if not isinstance(threads, int) or threads < 0:
        raise ValueError(f"lm train: threads (--threads): must be 0 (every core) or more, got {threads!r}")
    try:
        torch.zeros(1, device=device or "cpu")
    except (RuntimeError, AssertionError) as exc:  # an unknown device, or one this torch lacks
        raise ValueError(f"lm train: device (--device) {device!r}: {(str(exc).splitlines() or [''])[0]}") from None


def _lr(s: TrainSettings, step: int) -> float:
    if step < s.warmup:
        return s.lr * (step + 1) / s.warmup
    frac = min(1.0, (step - s.warmup) / max(1, s.max_steps - s.warmup))
    return s.lr * (s.min_lr_ratio + (1 - s.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * frac)))


def _token_stream(tok, texts) -> np.ndarray:
    eot = toks.eot_id(tok)
    ids = [eot]
    for e in toks.encode_many(tok, texts):
        ids.extend(e)
        ids.append(eot)
    return np.asarray(ids, dtype=np.int64)


def _row_starts(stream: torch.Tensor, context: int, windows: str, eot: int) -> torch.Tensor | None:
    """Where a training row may start: at a story's <|endoftext|> (windows = "story"), or
    anywhere a full row fits (None: "random")."""
    if windows != "story":
        return None
    return torch.nonzero(stream[: len(stream) - context] == eot).flatten()


def training_batch(stream: torch.Tensor, row_starts: torch.Tensor | None, context: int, batch: int,
                   seed: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows of one step (inputs, next tokens): drawn from a generator seeded by (seed, step),
    so a resumed run takes exactly the steps an uninterrupted one would."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    if row_starts is None:
        starts = torch.randint(0, len(stream) - context - 1, (batch,), generator=g)
    else:
        starts = row_starts[torch.randint(0, len(row_starts), (batch,), generator=g)]
    xb = torch.stack([stream[s: s + context] for s in starts])
    yb = torch.stack([stream[s + 1: s + context + 1] for s in starts])
    return xb, yb


def _eval_batches(tok, texts, n: int, context: int) -> list[torch.Tensor]:
    """Fixed validation sequences: each story from its start (EOT first), cut to the context."""
    eot = toks.eot_id(tok)
    seqs = [[eot] + e[: context] for e in toks.encode_many(tok, texts[:n])]
    return [torch.tensor(s, dtype=torch.long)[None] for s in seqs if len(s) > 1]


@torch.no_grad()
def validation_loss(model, seqs) -> float:
    model.eval()
    total, count = 0.0, 0
    for s in seqs:
        logits = model(s[:, :-1])
        total += float(F.cross_entropy(logits[0], s[0, 1:], reduction="sum"))
        count += s.shape[1] - 1
    model.train()
    return total / max(count, 1)


def _save_state(out: Path, model, opt, info: dict) -> None:
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    names = {id(p): n for n, p in model.named_parameters()}
    for group in opt.param_groups:
        for p in group["params"]:
            st = opt.state.get(p)
            if st:
                n = names[id(p)]
                tensors[f"opt.{n}.exp_avg"] = st["exp_avg"].cpu().contiguous()
                tensors[f"opt.{n}.exp_avg_sq"] = st["exp_avg_sq"].cpu().contiguous()
                info.setdefault("opt_steps", {})[n] = float(st["step"])
    tmp = out / (STATE + ".tmp")
    save_file(tensors, str(tmp))
    tmp.replace(out / STATE)
    tmp = out / (STATE_JSON + ".tmp")
    tmp.write_text(json.dumps(info, indent=1, sort_keys=True))
    tmp.replace(out / STATE_JSON)


def _load_state(out: Path, model, opt) -> dict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        info = json.loads((out / STATE_JSON).read_text(encoding="utf-8"))
        tensors = load_file(str(out / STATE))
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        params = dict(model.named_parameters())
        for n, step in info.get("opt_steps", {}).items():
            opt.state[params[n]] = {"step": torch.tensor(step),
                                    "exp_avg": tensors[f"opt.{n}.exp_avg"].to(params[n].device),
                                    "exp_avg_sq": tensors[f"opt.{n}.exp_avg_sq"].to(params[n].device)}
        missing = [k for k in ("step", "best_val", "best_step", "curve") if k not in info]
        if missing:  # fields the training loop reads: refused here, not mid-training
            raise KeyError(f"no {', '.join(missing)}")
    except (ValueError, SafetensorError, OSError, KeyError, TypeError, AttributeError, RuntimeError) as exc:
        # a partly written or mismatched state; the best model so far (model.safetensors) is kept
        first = (str(exc).splitlines() or [""])[0]
        raise ValueError(f"{out}: training state unreadable ({type(exc).__name__}: {first}); "
                         "train into another folder (--out) to start over") from None
    return info


def _optimizer(model, s: TrainSettings):
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    rest = [p for n, p in model.named_parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": s.weight_decay},
                              {"params": rest, "weight_decay": 0.0}], lr=s.lr, betas=(0.9, 0.95))


def train_lm(out: str | Path, minutes: float = 15.0, settings: TrainSettings | None = None,
             threads: int = 0, progress: bool = True, log=print, steps: int | None = None,
             device: str = "cpu") -> dict:
    """Train (or continue training) the model in folder `out`; returns the curve summary.
    `steps` stops this call after that many steps (the run stays resumable)."""
    out = Path(out)
    check_run(settings or TrainSettings(), minutes, threads, device)  # before any file is written
    resumed = (out / STATE_JSON).exists()
    if out.is_dir() and not resumed and any(out.iterdir()):
        raise ValueError(f"{out}: holds other files and no training run; train into a new or empty folder")
    make_folder(out)  # a file in the folder's place: one clear line
    if resumed:
        try:
            saved = json.loads((out / STATE_JSON).read_text(encoding="utf-8"))["settings"]
            saved = {"windows": "random", **saved}  # trained before story-aligned rows existed
            unknown = sorted(set(saved) - set(TrainSettings.__dataclass_fields__))
            if unknown:
                raise KeyError(f"unknown settings {unknown}")
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{out / STATE_JSON}: unreadable training state ({type(exc).__name__}: {exc}); "
                             f"train into another folder (--out) to start over") from None
        changed = {}
        if settings is not None and settings.to_dict() != saved:
            new = settings.to_dict()
            diff = sorted(k for k in saved if saved[k] != new.get(k))
            # training longer (the schedule stretches to the new end) or more patiently is allowed
            if set(diff) <= {"max_steps", "patience"} and new["max_steps"] >= saved["max_steps"]:
                changed = {k: new[k] for k in diff}
            else:
                raise ValueError(f"{out}: holds a training run with other settings ({', '.join(diff)}); "
                                 "use another --out or the same settings (only --max-steps may grow, "
                                 "--patience may change)")
        settings = TrainSettings(**{**saved, **changed})
        try:
            check_run(settings, minutes, threads, device)
        except ValueError as exc:
            raise ValueError(f"{out / STATE_JSON}: {exc}") from None
    settings = settings or TrainSettings()
    # evo_rules sets OMP_NUM_THREADS=1 for its workers; training wants every core it is given
    torch.set_num_threads(threads or os.cpu_count() or 1)
    splits = tinystories.load_splits(settings.data or None)
    train_texts = tinystories.story_texts(splits["lm-train"])
    if settings.max_stories:
        train_texts = train_texts[: settings.max_stories]
    valid_texts = tinystories.story_texts(splits["valid"])
    new_tokenizer = not (out / toks.FILE).exists()
    tok = toks.train(train_texts, settings.vocab_size) if new_tokenizer else toks.load(out)
    cfg = gpt.GPTConfig.from_dict({**settings.model, "vocab_size": tok.get_vocab_size()})
    stream = torch.from_numpy(_token_stream(tok, train_texts))
    if len(stream) <= cfg.context + 1:
        raise ValueError(f"{len(stream)} train tokens: fewer than one context of {cfg.context}")
    val_seqs = _eval_batches(tok, valid_texts, settings.eval_sequences, cfg.context)
    if not val_seqs:  # a validation loss of nothing would read 0.0, the best possible
        raise ValueError(f"{tinystories.data_dir(settings.data or None)}: no validation stories "
                         "(the TinyStories files whose name holds 'valid')")
    if new_tokenizer:  # saved once the data is known good: a refused start leaves the folder empty
        toks.save(tok, out)
    row_starts = _row_starts(stream, cfg.context, settings.windows, toks.eot_id(tok))

    device = torch.device(device or "cpu")
    val_seqs = [v.to(device) for v in val_seqs]
    torch.manual_seed(settings.seed)
    model = gpt.GPT(cfg).to(device)
    opt = _optimizer(model, settings)
    info = {"settings": settings.to_dict(), "step": 0, "best_val": None, "best_step": None,
            "since_best": 0, "curve": [], "seconds": 0.0, "train_tokens": int(len(stream)),
            "n_params": model.n_params(), "stopped": None}
    if resumed:
        info = _load_state(out, model, opt)
        info["settings"].setdefault("windows", "random")
        if info["settings"] != settings.to_dict():
            info.update(settings=settings.to_dict(), stopped=None, since_best=0)
        log(f"lm train: resuming {out} at step {info['step']} (best validation loss "
            f"{info['best_val']} at step {info['best_step']})")
    else:
        log(f"lm train: {model.n_params():,} parameters, {len(stream):,} train tokens "
            f"({len(train_texts)} stories), {len(val_seqs)} validation stories -> {out}")
    model.train()
    started = mark = time.perf_counter()
    budget = minutes * 60.0
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=settings.max_steps, initial=info["step"], unit="step", desc="lm train", leave=False)
    running, n_running = info.get("running", 0.0), info.get("n_running", 0)
    first_step = info["step"]
    stop = info.get("stopped") if info.get("stopped") in ("early stop", "max steps") else None
    while stop is None:
        step = info["step"]
        if step >= settings.max_steps:
            stop = "max steps"
            break
        if time.perf_counter() - started >= budget or (steps is not None and step - first_step >= steps):
            stop = "time budget"
            break
        xb, yb = training_batch(stream, row_starts, cfg.context, settings.batch, settings.seed, step)
        xb, yb = xb.to(device), yb.to(device)
        torch.manual_seed(settings.seed * 7_919 + step)  # dropout masks
        for group in opt.param_groups:
            group["lr"] = _lr(settings, step)
        loss = F.cross_entropy(model(xb).reshape(-1, cfg.vocab_size), yb.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        running += float(loss.detach())
        n_running += 1
        info["step"] = step + 1
        if bar:
            bar.update(1)
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
        if info["step"] % settings.eval_every == 0 or info["step"] == settings.max_steps:
            val = validation_loss(model, val_seqs)
            now = time.perf_counter()
            info["seconds"] += now - mark
            mark = now
            info["curve"].append({"step": info["step"], "train": running / n_running, "valid": val,
                                  "tokens": info["step"] * settings.batch * cfg.context,
                                  "seconds": round(info["seconds"], 1)})
            running, n_running = 0.0, 0
            info.update(running=0.0, n_running=0)
            if info["best_val"] is None or val < info["best_val"]:
                info.update(best_val=val, best_step=info["step"], since_best=0)
                gpt.save(model, out, {"trained_steps": info["step"], "valid_loss": val})
            else:
                info["since_best"] += 1
                if info["since_best"] >= settings.patience:
                    stop = "early stop"
            info["stopped"] = stop
            _save_state(out, model, opt, info)
            write_curve(out, info)
            log(f"lm train: step {info['step']}  train {info['curve'][-1]['train']:.3f}  "
                f"valid {val:.3f}  (best {info['best_val']:.3f} at {info['best_step']})")
    if bar:
        bar.close()
    info.update(stopped=stop, running=running, n_running=n_running)
    _save_state(out, model, opt, info)  # a stop between evaluations resumes from this very step
    log(f"lm train: stopped ({stop}) at step {info['step']}; best validation loss "
        f"{info['best_val']} at step {info['best_step']}; model in {out}")
    return {k: info[k] for k in ("step", "best_val", "best_step", "stopped", "seconds", "curve")}


def write_curve(out: Path, info: dict) -> None:
    (out / CURVE).write_text(json.dumps({"curve": info["curve"], "best_step": info["best_step"],
                                         "best_valid": info["best_val"]}, indent=1))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    c = info["curve"]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([r["tokens"] / 1e6 for r in c], [r["train"] for r in c], label="train")
    ax.plot([r["tokens"] / 1e6 for r in c], [r["valid"] for r in c], label="validation")
    if info["best_step"]:
        ax.axvline(info["best_step"] * c[0]["tokens"] / c[0]["step"] / 1e6, ls=":", c="k", label="kept")
    ax.set_xlabel("train tokens (millions)")
    ax.set_ylabel("loss (nats/token)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "curve.png", dpi=110)
    plt.close(fig)


def main_settings(**overrides) -> TrainSettings:
    return replace(TrainSettings(), **overrides)
