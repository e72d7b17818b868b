"""The neural topic model: its bound trains, it finds known topics, and it reads counts as SageMaker's users have
them (LibSVM, CSV, a vocab.txt), refusing bad counts by record."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

import onepass
from onepass import Batch, State, load_model, testing as T
from onepass.algorithms import ntm
from onepass.datasets import topic_model, topics
from onepass.errors import DataError, IncompatibleStateError, UsageError
from onepass.train import train

from conftest import run_cli, write_csv

# Topics of 5 over 100 words, documents of 60 words, 10 epochs: the default decoder (ProdLDA, its logits batch-
# normalized) finds four of them at cosine 0.81-0.98 and merges the fifth into others (0.43): see ntm.py, "Defaults".
RECOVERED_COSINE, RECOVERED_TOPICS = 0.8, 4


def _documents(n: int, seed: int, d: int = 100, k: int = 5) -> np.ndarray:
    return np.concatenate(list(topics(n, d, k, seed)))


def _libsvm(path, x: np.ndarray):
    with open(path, "w") as f:
        for row in x:
            f.write("0 " + " ".join(f"{j + 1}:{int(v)}" for j, v in enumerate(row) if v) + "\n")
    return path


def _matched_cosines(learnt: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Cosine similarity of each known topic with the learnt one the Hungarian algorithm pairs it with."""
    a = known / np.linalg.norm(known, axis=1, keepdims=True)
    b = learnt / np.linalg.norm(learnt, axis=1, keepdims=True)
    sim = a @ b.T
    rows, cols = linear_sum_assignment(-sim)
    return sim[rows, cols]


@pytest.mark.parametrize("decoder", ["prodlda", "nvdm"])
@pytest.mark.parametrize("sparse", [False, True])
def test_the_bound_has_finite_gradients_even_for_long_documents(decoder, sparse):
    rng = np.random.default_rng(0)
    x = rng.poisson(0.5, size=(64, 30)).astype(np.float32)
    x[0] = 0.0          # an empty document is skipped
    x[1, 3] = 50_000.0  # a very long one
    batch = torch.from_numpy(x)
    state = ntm.init({"num_topics": 3, "decoder": decoder, "batch_norm": True}, n_features=30)
    before = {k: v.clone() for k, v in ntm.parameters(state.tensors, state.hyperparameters).items()}
    params = {k: v.clone().requires_grad_(True) for k, v in before.items()}
    eps = torch.randn(63, 3, generator=torch.Generator().manual_seed(1))
    kept = batch[1:].to_sparse_csr() if sparse else batch[1:]
    rec, kl = ntm._losses(params, state.tensors, state.hyperparameters, kept, eps, training=True)
    grads = torch.autograd.grad((rec + kl).mean(), list(params.values()))
    assert all(bool(torch.isfinite(g).all()) for g in grads)
    assert bool((kl >= 0).all()), "a KL divergence is never negative"
    state = ntm.update(state, Batch(batch.to_sparse_csr() if sparse else batch))
    after = ntm.parameters(state.tensors, state.hyperparameters)
    assert all(bool(torch.isfinite(after[k]).all()) and not torch.equal(after[k], before[k]) for k in before)
    assert state.meta["documents_trained"] == 63 and state.meta["records_seen"] == 64


def test_learnt_topics_recover_the_topics_documents_were_drawn_from():
    docs, known = _documents(20_000, 1), topic_model(100, 5)
    state = ntm.init({"num_topics": 5}, n_features=100)
    for _ in range(10):
        for i in range(0, len(docs), 256):
            state = ntm.update(state, Batch(torch.from_numpy(docs[i:i + 256])))
    model = ntm.finalize(state)
    cosines = _matched_cosines(model.topic_word().numpy(), known)
    assert (cosines > RECOVERED_COSINE).sum() >= RECOVERED_TOPICS, cosines
    assert model.meta["topic_uniqueness"] > 0.6
    # a document drawn from one recovered topic alone is given mostly that topic
    rows, matched = linear_sum_assignment(-(known @ model.topic_word().numpy().T))
    found = [k for k in range(5) if cosines[k] > RECOVERED_COSINE]
    pure = np.stack([np.random.default_rng(k).multinomial(200, known[k]) for k in found]).astype(np.float32)
    weights = model.predict(torch.from_numpy(pure))["topic_weights"]
    assert weights.argmax(1).tolist() == [int(matched[k]) for k in found]


def test_cli_trains_on_libsvm_with_a_vocabulary_and_predicts_topic_weights(tmp_path):
    train_docs, test_docs = _documents(3000, 1, d=40, k=4), _documents(500, 2, d=40, k=4)
    data, held = _libsvm(tmp_path / "train.libsvm", train_docs), _libsvm(tmp_path / "test.libsvm", test_docs)
    words = [f"w{i:02d}" for i in range(40)]
    (tmp_path / "vocab.txt").write_text("\n".join(words) + "\n")
    out = tmp_path / "run"
    result = run_cli("train", "ntm", "--data", str(data), "--out", str(out), "--feature-dim", "40",
                     "--num-topics", "4", "--epochs", "3", "--learning-rate", "0.02",
                     "--vocab", str(tmp_path / "vocab.txt"),
                     "--validation", str(held), "--test", str(held), "--quiet", check=True)
    assert "topic 0: w" in result.stdout, result.stdout  # top words print as words
    model = load_model(out)
    assert all(w in words for topic in model.meta["topics"] for w in topic)
    assert ntm.vocabulary(State.load(out)) == words
    events = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    finished = next(e for e in events if e["event"] == "finished")
    assert 1 < finished["test:perplexity"] < 40, "a perplexity between 1 and the vocabulary's size"
    assert 0.25 <= finished["test:topic_uniqueness"] <= 1
    assert sum(e["event"] == "validation" for e in events) == 3
    inspected = json.loads(run_cli("inspect", str(out), "--json", check=True).stdout)
    state_facts = next(v for k, v in inspected.items() if k.endswith("state.safetensors"))
    assert state_facts["summary"]["topics"] == model.meta["topics"] and len(model.meta["topics"][0]) == 10
    predicted = run_cli("predict", str(out), "--data", str(held), check=True)
    rows = [json.loads(line)["topic_weights"] for line in predicted.stdout.splitlines()]
    assert len(rows) == 500 and all(len(r) == 4 and abs(sum(r) - 1) < 1e-5 for r in rows)


def test_sparse_and_dense_counts_train_the_same_model(tmp_path):
    docs = _documents(1000, 3, d=30, k=3)
    hp = {"num_topics": 3}
    sparse = train("ntm", str(_libsvm(tmp_path / "d.libsvm", docs)), tmp_path / "s",
                   hyperparameters={**hp, "feature_dim": 30}, epochs=1, threads=1)
    dense = train("ntm", write_csv(tmp_path / "d.csv", docs), tmp_path / "d", hyperparameters=hp, epochs=1,
                  threads=1)
    for name, t in ntm.parameters(dense.state.tensors, dense.state.hyperparameters).items():
        assert torch.allclose(t, sparse.state.tensors[name], atol=1e-4), name


def test_a_count_past_the_vocabulary_names_its_line(tmp_path):
    bad = tmp_path / "bad.libsvm"
    bad.write_text("0 1:2 3:1\n0 2:1 41:3\n")
    result = run_cli("train", "ntm", "--data", str(bad), "--out", str(tmp_path / "r"), "--feature-dim", "40",
                     "--num-topics", "2", "--quiet")
    assert result.returncode == 3
    assert "bad.libsvm" in result.stderr and "line 2" in result.stderr, result.stderr


def test_a_negative_count_names_its_record(tmp_path):
    docs = _documents(300, 4, d=20, k=2)
    docs[123, 7] = -2.0
    path = write_csv(tmp_path / "neg.csv", docs)
    result = run_cli("train", "ntm", "--data", str(path), "--out", str(tmp_path / "r"), "--num-topics", "2",
                     "--mini-batch-size", "50", "--epochs", "1", "--quiet")
    assert result.returncode == 3
    assert "neg.csv" in result.stderr and "line 124" in result.stderr and "word 7 has count -2" in result.stderr, \
        result.stderr
    with pytest.raises(DataError, match="record 124 of the stream: word 7 has count -2"):
        state = ntm.init({"num_topics": 2}, n_features=20)
        for i in range(0, 300, 50):
            ntm.update(state, Batch(torch.from_numpy(docs[i:i + 50])))


def test_a_vocabulary_of_another_size_is_refused(tmp_path):
    (tmp_path / "vocab.txt").write_text("a\nb\nc\n")
    with pytest.raises(UsageError, match="3 words but the data 20 features"):
        ntm.init({"num_topics": 2, "vocab": str(tmp_path / "vocab.txt")}, n_features=20)


def test_continuing_on_new_data_keeps_the_vocabulary_and_merge_refuses_another(tmp_path):
    words = [f"w{i}" for i in range(20)]
    (tmp_path / "vocab.txt").write_text("\n".join(words))
    first = train("ntm", _documents(500, 5, d=20, k=2), tmp_path / "a", epochs=1,
                  hyperparameters={"num_topics": 2, "vocab": str(tmp_path / "vocab.txt")})
    more = train("ntm", _documents(500, 6, d=20, k=2), tmp_path / "b", init_from=tmp_path / "a", epochs=1)
    assert more.state.meta["records_seen"] == 1000
    assert ntm.vocabulary(more.state) == words
    assert more.model.meta["topics"][0][0] in words
    with pytest.raises(IncompatibleStateError, match="--init-from cannot change num_topics"):
        train("ntm", _documents(100, 7, d=20, k=2), tmp_path / "c", init_from=tmp_path / "a",
              hyperparameters={"num_topics": 3})
    plain = train("ntm", _documents(500, 8, d=20, k=2), tmp_path / "d", epochs=1, hyperparameters={"num_topics": 2})
    with pytest.raises(IncompatibleStateError, match="different vocabularies"):
        onepass.merge(first.state, plain.state)


def test_sub_sample_trains_on_about_that_share_of_the_documents():
    docs = torch.from_numpy(_documents(4000, 9, d=20, k=2))
    state = ntm.init({"num_topics": 2, "sub_sample": 0.25}, n_features=20, seed=3)
    for i in range(0, 4000, 200):
        state = ntm.update(state, Batch(docs[i:i + 200]))
    assert state.meta["records_seen"] == 4000
    assert 900 <= state.meta["documents_trained"] <= 1100


def test_training_stops_once_the_validation_loss_stops_improving(tmp_path):
    docs = _documents(400, 10, d=20, k=2)
    result = train("ntm", docs, tmp_path / "r", validation=docs[:100], epochs=50,
                   hyperparameters={"num_topics": 2, "num_patience_epochs": 1, "tolerance": 0.1})
    events = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert any(e["event"] == "early_stop" for e in events)
    assert result.state.meta["epochs_done"] < 50
    assert "perplexity" in result.model.meta["validation"]


# ------------------------------------------------------------------------------------------------- raw text

FOOD = ["pizza", "pasta", "cheese", "tomato", "oven", "basil", "garlic", "olive"]
SPORT = ["football", "goal", "match", "team", "coach", "league", "score", "player"]
MONEY = ["stock", "market", "price", "shares", "investor", "bank", "trade", "profit"]


def _texts(n: int, seed: int) -> list[str]:
    """Documents of three topics' words, with stop words, capitals and punctuation around them."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        mix = rng.dirichlet([0.2] * 3)
        words = [(FOOD, SPORT, MONEY)[t][rng.integers(8)] for t in rng.choice(3, size=25, p=mix)]
        out.append("The " + ", and ".join(words).capitalize() + "!")
    return out


def _csv_of_texts(path, texts: list[str]):
    import csv
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "review"])
        w.writerows(enumerate(texts))
    return path


def test_raw_text_trains_the_same_model_as_its_counts_in_libsvm(tmp_path):
    texts = _texts(1500, 0)
    from_text = train("ntm", str(_csv_of_texts(tmp_path / "docs.csv", texts)), tmp_path / "t", text_column="review",
                      hyperparameters={"num_topics": 3}, epochs=2, threads=1)
    words = ntm.vocabulary(from_text.state)
    assert sorted(words) == sorted(FOOD + SPORT + MONEY), "stop words and punctuation are left out"
    index = {w: i for i, w in enumerate(words)}
    counts = np.zeros((len(texts), len(words)), np.float32)
    for r, doc in enumerate(texts):
        for token in doc.lower().replace(",", " ").replace("!", " ").split():
            if token in index:
                counts[r, index[token]] += 1
    (tmp_path / "vocab.txt").write_text("\n".join(words))
    from_counts = train("ntm", str(_libsvm(tmp_path / "docs.libsvm", counts)), tmp_path / "c", epochs=2, threads=1,
                        hyperparameters={"num_topics": 3, "feature_dim": len(words),
                                         "vocab": str(tmp_path / "vocab.txt")})
    for name, t in from_text.state.tensors.items():
        assert torch.allclose(t.double(), from_counts.state.tensors[name].double(), atol=1e-6) \
            if t.is_floating_point() else torch.equal(t, from_counts.state.tensors[name]), name
    assert from_text.model.meta["topics"] == from_counts.model.meta["topics"]


def test_plain_text_and_json_lines_read_alike_and_words_outside_the_vocabulary_are_counted(tmp_path):
    texts = _texts(600, 1)
    (tmp_path / "docs.txt").write_text("\n".join(texts) + "\n")
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps({"body": t, "stars": 3}) + "\n" for t in texts))
    (tmp_path / "vocab.txt").write_text("\n".join(FOOD + SPORT))  # the money words are out of the vocabulary
    hp = {"num_topics": 2, "vocab": str(tmp_path / "vocab.txt")}
    plain = train("ntm", str(tmp_path / "docs.txt"), tmp_path / "p", data_format="text", hyperparameters=hp,
                  epochs=1)
    lines = train("ntm", str(tmp_path / "docs.jsonl"), tmp_path / "j", text_column="body", hyperparameters=hp,
                  epochs=1)
    for name in ntm.parameters(plain.state.tensors, plain.state.hyperparameters):
        assert torch.equal(plain.state.tensors[name], lines.state.tensors[name]), name
    assert plain.metrics["tokens"] == 600 * 25
    assert 0.2 < plain.metrics["oov_share"] < 0.5  # about a third of the words are money words
    predicted = run_cli("predict", str(tmp_path / "j"), "--data", str(tmp_path / "docs.jsonl"), "--text-column",
                        "body", check=True)
    rows = [json.loads(line)["topic_weights"] for line in predicted.stdout.splitlines()]
    expected = lines.model.predict(next(iter(ntm.examples(onepass.Stream(str(tmp_path / "docs.jsonl"),
                                                                         text_column="body"), {}, lines.model)
                                             .batches(600))).x)["topic_weights"]
    assert np.allclose(rows, expected.numpy(), atol=1e-6)


def test_a_text_column_of_a_sql_query_trains_as_the_same_texts_in_csv(tmp_path):
    import sqlite3
    texts = _texts(600, 3)
    with sqlite3.connect(tmp_path / "docs.db") as db:
        db.execute("CREATE TABLE reviews (id INTEGER, review TEXT)")
        db.executemany("INSERT INTO reviews VALUES (?, ?)", list(enumerate(texts)) + [(600, None)])
    db.close()
    url, hp = f"sqlite:///{tmp_path / 'docs.db'}", {"num_topics": 3}
    from_sql = train("ntm", url, tmp_path / "s", query="SELECT id, review FROM reviews WHERE id < 600 ORDER BY id",
                     text_column="review", hyperparameters=hp, epochs=1, threads=1)
    from_csv = train("ntm", str(_csv_of_texts(tmp_path / "docs.csv", texts)), tmp_path / "c", text_column="review",
                     hyperparameters=hp, epochs=1, threads=1)
    for name in ntm.parameters(from_sql.state.tensors, from_sql.state.hyperparameters):
        assert torch.equal(from_sql.state.tensors[name], from_csv.state.tensors[name]), name
    assert ntm.vocabulary(from_sql.state) == ntm.vocabulary(from_csv.state)
    with pytest.raises(DataError, match="row 601: field 'review' is missing, not text"):
        train("ntm", url, tmp_path / "bad", query="SELECT review FROM reviews ORDER BY id", text_column="review",
              hyperparameters=hp, epochs=1, threads=1)


def test_a_run_on_raw_text_resumes_with_the_same_vocabulary_and_state(tmp_path):
    from test_trainer_interface import _CrashAt
    path = str(_csv_of_texts(tmp_path / "docs.csv", _texts(3000, 2)))
    options = dict(text_column="review", hyperparameters={"num_topics": 3, "vocab_documents": 500}, epochs=2,
                   threads=1, mini_batch_size=100)
    whole = train("ntm", path, tmp_path / "whole", **options)
    with pytest.raises(KeyboardInterrupt):
        train("ntm", path, tmp_path / "part", checkpoint_every=1000, checkpoint_seconds=None,
              progress=_CrashAt(4500), **options)
    resumed = train("ntm", path, tmp_path / "part", resume=True, threads=1)
    T.assert_states_equal(whole.state, resumed.state, "resume on raw text")
    assert ntm.vocabulary(resumed.state) == ntm.vocabulary(whole.state)


@pytest.mark.parametrize("content, message", [
    (b'{"body": "a fine pizza"}\n{"body": 42}\n', "line 2: field 'body' is int, not text"),
    (b'{"body": "a fine pizza"}\n{"title": "no body"}\n', "line 2: field 'body' is missing, not text"),
])
def test_a_document_that_is_not_text_is_named(tmp_path, content, message):
    (tmp_path / "bad.jsonl").write_bytes(content)
    (tmp_path / "vocab.txt").write_text("pizza\nfine")
    with pytest.raises(DataError, match=message):
        train("ntm", str(tmp_path / "bad.jsonl"), tmp_path / "r", text_column="body", epochs=1,
              hyperparameters={"num_topics": 2, "vocab": str(tmp_path / "vocab.txt")})


def test_bad_utf8_in_plain_text_names_its_line(tmp_path):
    (tmp_path / "bad.txt").write_bytes(b"pizza and pasta\ncheese \xff\xfe oven\n")
    result = run_cli("train", "ntm", "--data", str(tmp_path / "bad.txt"), "--data-format", "text", "--out",
                     str(tmp_path / "r"), "--num-topics", "2", "--min-df", "1", "--quiet")
    assert result.returncode == 3 and "bad.txt, line 2: not UTF-8" in result.stderr, result.stderr


def test_the_vocabulary_sketch_keeps_frequent_words_in_bounded_memory():
    from onepass.data.text import MisraGries
    rng = np.random.default_rng(0)
    sketch = MisraGries(capacity=50)
    for _ in range(5000):  # 10 words in every other document, 100,000 rare words once each
        doc = {f"rare{rng.integers(10**9)}" for _ in range(20)}
        if rng.random() < 0.5:
            doc |= {f"common{i}" for i in range(10)}
        sketch.add(doc)
        assert len(sketch.counts) <= 50
    assert sorted(sketch.vocabulary(10, min_df=2, max_df=1.0)) == sorted(f"common{i}" for i in range(10))


# -------------------------------------------------------------------------------------------- scikit-learn

def test_the_scikit_learn_transformer_fits_counts_like_latent_dirichlet_allocation():
    import scipy.sparse as sp
    from sklearn.base import clone
    from onepass.sklearn import NTM

    docs = _documents(4000, 11, d=40, k=4)
    model = NTM(n_components=4, max_iter=3, learning_rate=0.02, random_state=0).fit(sp.csr_matrix(docs))
    assert model.components_.shape == (4, 40) and np.allclose(model.components_.sum(1), 1, atol=1e-5)
    weights = model.transform(docs[:10])
    assert weights.shape == (10, 4) and np.allclose(weights.sum(1), 1, atol=1e-5)
    assert 1 < model.perplexity(docs[:500]) < 40
    assert model.score(docs[:500]) < 0
    again = clone(model).fit(sp.csr_matrix(docs))
    assert np.array_equal(again.components_, model.components_), "the same data and seed give the same topics"
    # partial_fit goes on from where the state stands; a chunk of other documents makes one more pass
    steps = model.n_batch_iter_
    model.partial_fit(docs[:1000])
    assert model.n_batch_iter_ == steps + 4 and model.state_.meta["records_seen"] == 3 * 4000 + 1000
    with pytest.raises(ValueError, match="negative"):
        NTM(n_components=2).fit(-docs[:10])
    assert onepass.NTM is NTM


# ------------------------------------------------------------------------------------ packed topic counts

def test_packed_topic_counts_train_in_one_pass_and_num_topics_network_is_the_unpacked_one():
    docs = _documents(1200, 4, d=30, k=3)
    alone = ntm.init({"num_topics": 3, "sub_sample": 0.8}, n_features=30)
    both = ntm.init({"num_topics": 3, "extra_num_topics": "2,6", "sub_sample": 0.8}, n_features=30)
    for i in range(0, len(docs), 200):
        alone = ntm.update(alone, Batch(torch.from_numpy(docs[i:i + 200])))
        both = ntm.update(both, Batch(torch.from_numpy(docs[i:i + 200])))
    for name, t in ntm.parameters(alone.tensors, alone.hyperparameters).items():
        assert torch.equal(t, both.tensors[name]), name
    six = ntm.finalize(both, num_topics=6)
    assert six.meta["num_topics"] == 6 and six.transform(torch.from_numpy(docs[:5])).shape == (5, 6)
    assert ntm.finalize(both).meta["num_topics"] == 3
    with pytest.raises(UsageError, match="trained 3, 2, 6 topics"):
        ntm.finalize(both, num_topics=5)
    with pytest.raises(UsageError, match="extra_num_topics"):
        ntm.init({"num_topics": 3, "extra_num_topics": "3"}, n_features=30)


def test_finalize_picks_a_packed_topic_count_by_validation_perplexity_and_plots_its_topics(tmp_path):
    docs = _documents(2000, 5, d=30, k=3)
    result = train("ntm", docs[:1600], tmp_path / "r", validation=docs[1600:], epochs=2, threads=1,
                   hyperparameters={"num_topics": 2, "extra_num_topics": "3,8", "learning_rate": 0.02})
    counts = ntm.describe(result.state)["topic_counts"]  # what inspect --json shows of the state
    assert sorted(counts) == ["2", "3", "8"] and len(counts["8"]["topics"]) == 8
    best = min(counts, key=lambda k: counts[k]["validation_perplexity"])
    assert ntm.finalize(result.state, select="perplexity").meta["num_topics"] == int(best)
    done = run_cli("finalize", str(tmp_path / "r"), "--num-topics", "8", "--plot", str(tmp_path / "topics.png"),
                   check=True)
    assert "model: 8 topics" in done.stdout and (tmp_path / "topics.png").read_bytes()[:4] == b"\x89PNG"
    assert load_model(tmp_path / "r").meta["num_topics"] == 8
