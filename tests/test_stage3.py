"""Stage 3 end to end with a tiny model trained in seconds: data, training (resumable), save and
load without pickle, episodes, features, utilities and their cache, the search, and real-LM
scoring of finalists and baselines."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")  # the lm extra; CI installs it

from evo_rules.fitness import tinystories  # noqa: E402
from evo_rules.fitness.memory_text import TEXT_FEATURES, text_features  # noqa: E402

TINY_MODEL = dict(vocab_size=512, context=384, n_layer=1, n_head=2, n_embd=32, dropout=0.0)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """A small TinyStories folder: 80 train-split stories and 60 validation-split stories."""
    d = tmp_path_factory.mktemp("tinystories")
    files = tinystories.load_files()
    train = [s.text for s in files["tinystories_sample.txt"][:80]]
    valid = [s.text for s in files["tinystories_valid_first1000.txt"][:60]]
    (d / "sample_train.txt").write_text("".join(t + "\n<|endoftext|>\n" for t in train) + "Once upon a")
    (d / "mini_valid.txt").write_text("".join(t + "\n<|endoftext|>\n" for t in valid))
    return d


def _settings(data_dir, **kw):
    from evo_rules.fitness.lm.train import main_settings

    return main_settings(max_steps=30, eval_every=10, eval_sequences=8, vocab_size=512,
                         model=TINY_MODEL, data=str(data_dir), lr=5e-3, warmup=5, **kw)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, data_dir) -> Path:
    from evo_rules.fitness.lm.train import train_lm

    out = tmp_path_factory.mktemp("lm")
    res = train_lm(out, minutes=5, settings=_settings(data_dir), progress=False, log=lambda m: None)
    assert res["stopped"] == "max steps" and res["step"] == 30
    return out


# ---------------------------------------------------------------------- data


def test_sentences_keep_quotes_and_split_on_lines():
    text = 'Tom said, "Hi!" Sue smiled. Why?\nThe end.'
    assert tinystories.sentences(text) == ['Tom said, "Hi!"', "Sue smiled.", "Why?", "The end."]


def test_splits_are_disjoint_by_story_and_drop_the_unfinished_tail(data_dir):
    sp = tinystories.load_splits(data_dir)
    assert len(sp["lm-train"]) == 80  # the trailing "Once upon a" is not a story
    texts = [{s.text for s in sp[p]} for p in tinystories.SPLITS]
    for i in range(len(texts)):
        for j in range(i + 1, len(texts)):
            assert not texts[i] & texts[j]
    assert sum(len(sp[p]) for p in ("train", "valid", "test")) == 60
    # a story's split is a function of its text alone: adding files never moves it
    assert all(tinystories.split_of(s) == p for p in ("train", "valid", "test") for s in sp[p])


def test_malformed_file_is_an_error_naming_it(tmp_path):
    (tmp_path / "broken_valid.txt").write_text("no separator here at all")
    with pytest.raises(tinystories.TinyStoriesFormatError, match="broken_valid.txt"):
        tinystories.load_splits(tmp_path)
    (tmp_path / "broken_valid.txt").write_bytes(b"\xff\xfe<|endoftext|>")
    with pytest.raises(tinystories.TinyStoriesFormatError, match="broken_valid.txt.*UTF-8"):
        tinystories.load_splits(tmp_path)


def test_episodes_hold_memory_before_the_target():
    story = tinystories.Story(" ".join(f"Sentence {i}." for i in range(12)), "x_valid.txt", 0)
    eps = tinystories.episodes([story], min_target=6, targets_per_story=3)
    assert [len(e.chunks) for e in eps] == [6, 9, 11]
    for e in eps:
        assert e.target == f"Sentence {len(e.chunks)}."
        assert e.target not in e.chunks


def test_text_features_read_the_memory_only():
    chunks = ["Once there was a girl named Lily.", "She went to the park.", "Lily threw the ball to Max.",
              "Max ran."]
    X = text_features(chunks)
    assert X.shape == (3, len(TEXT_FEATURES))
    col = dict(zip(TEXT_FEATURES, X.T))
    assert col["first"].tolist() == [1, 0, 0]
    assert col["recency"].tolist() == [1 / 3, 2 / 3, 1] and col["back"].tolist() == [1 / 3, 1 / 2, 1]
    assert col["names_recent"].tolist() == [0, 0, 1]  # "Max" is in the recent chunk and chunk 2
    assert col["name_intro"][0] == 1  # Lily first named there, named again later


# ---------------------------------------------------------------------- the model


def test_training_resumes_exactly(tmp_path, data_dir, tiny_model):
    from evo_rules.fitness.lm import model as gpt
    from evo_rules.fitness.lm.train import train_lm

    out = tmp_path / "split"
    quiet = dict(progress=False, log=lambda m: None)
    first = train_lm(out, minutes=5, settings=_settings(data_dir), steps=13, **quiet)
    assert first["stopped"] == "time budget" and first["step"] == 13
    with pytest.raises(ValueError, match="other settings.*seed"):
        train_lm(out, settings=_settings(data_dir, seed=2), **quiet)
    second = train_lm(out, minutes=5, **quiet)  # continues with the saved settings
    assert second["step"] == 30 and second["stopped"] == "max steps"
    a, _ = gpt.load(tiny_model)
    b, _ = gpt.load(out)
    for (n, p), (_, q) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(p, q), n
    def points(folder):
        return [(c["step"], c["train"], c["valid"]) for c in json.loads((folder / "curve.json").read_text())["curve"]]

    assert points(out) == points(tiny_model)  # the train loss of the split step counts too
    assert (out / "curve.png").stat().st_size > 1000


def test_story_rows_start_at_a_story_and_random_rows_anywhere():
    from evo_rules.fitness.lm.train import _row_starts, training_batch

    eot = 0
    stream = torch.tensor([0, 5, 6, 7, 0, 8, 9, 0, 4, 4, 4, 4, 4, 0, 3, 3, 3, 3, 3, 3, 0])
    starts = _row_starts(stream, 4, "story", eot)
    assert starts.tolist() == [0, 4, 7, 13]  # the last <|endoftext|> has no full row after it
    for step in range(20):
        xb, yb = training_batch(stream, starts, 4, 6, seed=1, step=step)
        assert (xb[:, 0] == eot).all()
        assert torch.equal(xb[:, 1:], yb[:, :-1])
    xb, _ = training_batch(stream, _row_starts(stream, 4, "random", eot), 4, 64, seed=1, step=0)
    assert not (xb[:, 0] == eot).all()
    again, _ = training_batch(stream, _row_starts(stream, 4, "random", eot), 4, 64, seed=1, step=0)
    assert torch.equal(xb, again)  # seeded by (seed, step)


def test_a_folder_trained_before_story_rows_resumes_as_random(tmp_path, data_dir):
    from evo_rules.fitness.lm.train import STATE_JSON, train_lm

    out = tmp_path / "old"
    quiet = dict(progress=False, log=lambda m: None)
    train_lm(out, minutes=5, settings=_settings(data_dir, windows="random"), steps=10, **quiet)
    state = json.loads((out / STATE_JSON).read_text())
    del state["settings"]["windows"]  # as written before the setting existed
    (out / STATE_JSON).write_text(json.dumps(state))
    res = train_lm(out, minutes=5, **quiet)
    assert res["step"] == 30
    assert json.loads((out / STATE_JSON).read_text())["settings"]["windows"] == "random"


def test_model_round_trip_and_bad_files(tmp_path, tiny_model):
    from evo_rules.fitness.lm import model as gpt

    m, meta = gpt.load(tiny_model)
    x = torch.randint(0, 512, (2, 20))
    out = tmp_path / "copy"
    gpt.save(m, out)
    m2, _ = gpt.load(out)
    assert torch.equal(m(x), m2(x))
    logits, att, h = m(x, need_attention=True)
    assert torch.allclose(logits, m(x), atol=1e-5)  # the explicit attention path equals SDPA
    assert torch.allclose(att.sum(-1), torch.ones_like(att.sum(-1)), atol=1e-5)
    (out / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="model.safetensors"):
        gpt.load(out)
    assert b"pickle" not in (tiny_model / "model.safetensors").read_bytes()[:200]


# ---------------------------------------------------------------------- the task


@pytest.fixture(scope="module")
def task(tmp_path_factory, data_dir, tiny_model):
    from evo_rules.fitness.memory import MemoryTask

    cache = tmp_path_factory.mktemp("cache")
    return MemoryTask(model=str(tiny_model), data=str(data_dir), cache_dir=str(cache), threads=1)


def test_task_caches_lm_numbers(task, monkeypatch):
    import evo_rules.fitness.memory as mem

    assert list(task.cache_dir.glob("*.npz"))
    for p in ("train", "valid", "test"):
        assert task.parts[p].n_episodes > 0
    b = task.batch("train")
    assert set(b.X) == set(task.features) and len(task.features) == 20
    # probabilities per episode, from the utilities
    assert np.allclose(np.bincount(b.groups, weights=b.y), 1.0)

    def boom(*a, **k):
        raise AssertionError("recomputed although cached")

    monkeypatch.setattr(mem, "precompute", boom)
    again = mem.MemoryTask(model=str(task.model_dir), data=task.data, cache_dir=str(task.cache_dir))
    assert again.fingerprint == task.fingerprint
    assert np.array_equal(again.parts["valid"].u_target, task.parts["valid"].u_target)


def test_utility_is_the_real_loss_difference(task):
    """A cached utility equals loss(target | recent) - loss(target | chunk + recent) from fresh
    forwards, and the model features do not depend on the target."""
    from evo_rules.fitness.lm.memory import MemoryLM, selection_losses
    from evo_rules.fitness.memory import episodes_for

    lm = MemoryLM(task.model_dir, threads=1)
    eps = episodes_for(task.stories(), task.settings)["valid"]
    ep = next(e for e in eps if lm.fits(lm.encode(e.chunks, (e.target,) + e.lookahead[:1]), 2))
    et = lm.encode(ep.chunks, (ep.target,))
    n = len(ep.chunks)
    base, with0 = selection_losses(lm, [(et, (n - 1,)), (et, (0, n - 1))])
    d = task.parts["valid"]
    assert d.u_target[0] == pytest.approx(base.mean() - with0.mean(), abs=1e-5)
    other = lm.encode(ep.chunks, ("A completely different target sentence.",))
    assert np.allclose(lm.model_features([et])[0], lm.model_features([other])[0])


def test_cached_sampling_is_the_model_and_sampled_gain_its_expectation(task):
    """The key/value-cached sampler gives the same log-probabilities as a plain forward over
    prefix + samples; `sampled_gain` is seeded by the episode alone (same numbers alone or in a
    batch) and equals its definition recomputed from plain forwards."""
    from evo_rules.fitness.lm.memory import MemoryLM
    from evo_rules.fitness.memory import episodes_for

    lm = MemoryLM(task.model_dir, threads=1, samples=3, sample_tokens=5)
    prefix = torch.tensor([lm.eot] + list(range(40, 90)))
    ys, lp = lm.model.sample(prefix, 4, 6, torch.Generator().manual_seed(3))
    assert ys.shape == (4, 6) and lp.shape == (4, 6, TINY_MODEL["vocab_size"])
    full = torch.cat([prefix[None].expand(4, -1), ys], 1)
    with torch.inference_mode():
        ref = torch.log_softmax(lm.model(full), -1)[:, len(prefix) - 1: len(prefix) + 5]
    assert torch.allclose(ref, lp, atol=1e-4)
    with pytest.raises(ValueError, match="context"):
        lm.model.sample(torch.zeros(380, dtype=torch.long), 1, 10, torch.Generator())

    eps = episodes_for(task.stories(), task.settings)["valid"][:3]
    ets = [lm.encode(e.chunks, (e.target,)) for e in eps]
    et = ets[1]
    g = lm.sampled_gain(et)
    assert g.shape == (len(et.chunks) - 1,) and np.all(np.isfinite(g))
    assert np.array_equal(g, lm.model_features(ets)[1][:, -1])  # in a batch: the same numbers
    # the definition, from plain forwards: E over the full memory's next-token distributions along
    # the same samples, of log p(. | chunk + recent) minus log p(. | recent)
    memory = [t for ch in et.chunks for t in ch]
    import hashlib

    seed = int.from_bytes(hashlib.blake2b(np.asarray(memory, dtype=np.int64).tobytes(), digest_size=8).digest(),
                          "little") >> 1
    ys, _ = lm.model.sample(torch.tensor([lm.eot] + memory), 3, 5, torch.Generator().manual_seed(seed))

    def expected(head):
        out = []
        with torch.inference_mode():
            for y in ys.tolist():
                pf = torch.log_softmax(lm.model(torch.tensor([[lm.eot] + memory + y])), -1)[0, -6:-1].exp()
                seq = [lm.eot] + head + list(et.chunks[-1]) + y
                lc = torch.log_softmax(lm.model(torch.tensor([seq])), -1)[0, -6:-1]
                out.append(float((pf * lc).sum(-1).mean()))
        return np.mean(out)

    base = expected([])
    want = [expected(list(et.chunks[c])) - base for c in range(len(et.chunks) - 1)]
    assert np.allclose(g, want, atol=1e-4)


def test_score_and_resample(task):
    m = task.score("valid", lambda X: X["recency"])
    d = task.parts["valid"]
    starts = np.r_[d.starts(), len(d.groups)]
    want = np.mean([d.u_target[starts[e + 1] - 1] for e in range(d.n_episodes)])  # the latest candidate
    assert m["utility_k2"] == pytest.approx(want)
    units = task.score_units("valid", lambda X: X["recency"] + X["attn_recent"])  # one per episode
    assert units.mean() == pytest.approx(task.score("valid", lambda X: X["recency"] + X["attn_recent"])["utility_k2"])
    assert task.unit_clusters("valid").shape == units.shape == (d.n_episodes,)
    assert math.isnan(task.score("valid", lambda X: X["recency"] * np.nan)["utility_k2"])  # invalid, not a choice
    r = task.resample(1001)
    assert r.fingerprint != task.fingerprint
    assert r.parts["test"] is task.parts["test"]
    assert r.parts["train"].n_episodes + r.parts["valid"].n_episodes == \
        task.parts["train"].n_episodes + task.parts["valid"].n_episodes


def test_final_evaluation_real_lm(task):
    from evo_rules.fitness.lm.memory import MemoryLM, selection_losses
    from evo_rules.fitness.lm.scoring import _test_episodes

    rules = [{"name": "recency rule", "text": "(mul w x.recency)", "weights": [1.0]}]
    res = task.final_evaluation(rules, progress=False)
    rows = {(r["K"], r["selection"]): r for r in res["rows"]}
    for k in (2, 3):
        for name in ("full memory", "recent-only", "StreamingLLM (first + recent)", "H2O (heavy hitters)",
                     "lexical overlap", "random", "oracle (cross-fitted)", "recency rule"):
            assert (k, name) in rows
        assert rows[(k, "recent-only")]["diff_vs_recent"] == 0.0
        # the recency rule keeps the most recent chunks: it is recent-only, and its fresh forwards
        # equal the cached ones that recent-only reads at K = 2
        assert rows[(k, "recency rule")]["loss"] == pytest.approx(rows[(k, "recent-only")]["loss"], abs=1e-5)
        full = rows[(k, "full memory")]
        if full["diff_vs_recent"] < 0:  # full memory helps this tiny model: it closes all of its gap
            assert full["gap_closed"] == pytest.approx(1.0)
        else:  # no gap to close: no share of it either
            assert math.isnan(full["gap_closed"])
    # K = 3 recent-only, rerun now from scratch, equals the table
    lm = MemoryLM(task.model_dir, threads=1)
    eps = _test_episodes(task, lm)
    fresh = selection_losses(lm, [(et, tuple(range(len(et.chunks) - 3, len(et.chunks)))) for _, et in eps])
    assert np.mean([f.mean() for f in fresh]) == pytest.approx(rows[(3, "recent-only")]["loss"], abs=1e-5)
    assert "StreamingLLM" in res["text"] and res["episodes"] == task.parts["test"].n_episodes


def test_search_reports_real_lm_table(tmp_path, task, data_dir, tiny_model):
    from evo_rules.app import run_search

    cfg = {"run": {"generations": 2, "population": 10},
           "task": {"name": "tinystories-memory",
                    "settings": {"model": str(tiny_model), "data": str(data_dir),
                                 "cache_dir": str(task.cache_dir), "threads": 1}},
           "search": {"seed_linear": True},
           "rerun": {"seeds": 2, "finalists": 2},
           "evaluation": {"backend": "serial"}}
    report = run_search(cfg, out=str(tmp_path / "run"))
    final = report["final"]
    names = {r["selection"] for r in final["rows"]}
    assert "linear rule" in names and "full memory" in names
    if report["winner"]:
        assert "searched rule (winner)" in names
    assert final["precompute_seconds"] is not None
    from evo_rules.report import format_report

    assert "stage 3, real LM" in format_report(report)


def test_lm_train_refuses_a_folder_of_other_files(tmp_path):
    from evo_rules.fitness.lm.train import train_lm

    (tmp_path / "report.json").write_text("{}")
    with pytest.raises(ValueError, match="holds other files"):
        train_lm(tmp_path, progress=False, log=lambda m: None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]  # nothing written


def test_cli_lm_train_bad_folder_is_one_line(tmp_path, capsys):
    from evo_rules.cli import main

    (tmp_path / "train_state.json").write_text("{not json")
    assert main(["lm", "train", "--out", str(tmp_path), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train_state.json" in err[0]
