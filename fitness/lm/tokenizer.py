"""Byte-level BPE tokenizer (the `tokenizers` package), trained on the LM's train stories.

Saved as `tokenizer.json` (plain JSON). Token 0 is `<|endoftext|>`: it separates stories in
training and starts every sequence the model reads in stage 3.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

FILE = "tokenizer.json"
EOT = "<|endoftext|>"


def train(texts: Sequence[str], vocab_size: int = 2048):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOT], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(list(texts), trainer=trainer)
    return tok


def save(tok, folder: str | Path) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / (FILE + ".tmp")
    tok.save(str(tmp))
    tmp.replace(folder / FILE)


def load(folder: str | Path):
    from tokenizers import Tokenizer

    path = Path(folder) / FILE
    if not path.exists():
        raise ValueError(f"{folder}: no {FILE}")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises its own Exception type for bad JSON
        raise ValueError(f"{path}: not a tokenizer file ({exc})") from None


def eot_id(tok) -> int:
    i = tok.token_to_id(EOT)
    if i is None:
        raise ValueError(f"tokenizer has no {EOT} token")
    return i


def encode_many(tok, texts: Sequence[str]) -> list[list[int]]:
    return [e.ids for e in tok.encode_batch(list(texts))]
