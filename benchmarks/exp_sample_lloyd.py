#!/usr/bin/env python
"""Would Lloyd over the reservoir sample improve the finished model at high dimension? (issue 29; measured no:
on 60,000 digits at 784 features, k = 100, 20 Lloyd iterations over the 10,000-record sample made the
model 0.25 % dearer on the data, from the refined centres too.) Prints the data's cost of each candidate.

    python benchmarks/exp_sample_lloyd.py digits 60000 784 100 5   # set, records, features, k, centre factor
"""
import json, sys, time
import numpy as np, torch
sys.path.insert(0, ".")
from onepass import _blas
from onepass.algorithms import kmeans
from onepass.data.batches import Batch
import kmeans_hd_sets
from profile_kmeans_hd import cost

setname, n, d, k, factor = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
torch.set_num_threads(1); _blas.set_block_threads(2)
kmeans.WIDE_CENTER_FACTOR = factor
x = kmeans_hd_sets.make(setname, n, d)
t0 = time.perf_counter()
st = kmeans.init({"k": k}, x.shape[1])
for s in range(0, len(x), 5000):
    kmeans.update(st, Batch(torch.from_numpy(x[s:s + 5000])))
t1 = time.perf_counter()
m = kmeans.finalize(st); t2 = time.perf_counter()
C = m.tensors["centers"].double()
out = {"factor": factor, "k": k, "update": round(t1 - t0, 2), "finalize": round(t2 - t1, 2), "from": m.meta["centres_from"],
       "final": cost(x, C.numpy())}
S = st.tensors["sample"][:st.meta["sample_filled"]].double()
w = torch.ones(len(S), dtype=torch.float64)
for it in (2, 5, 20):
    t = time.perf_counter()
    E, _ = kmeans._lloyd(S, w, C[None], it, 0.0)
    out[f"lloyd{it}"] = cost(x, E[0].numpy()); out[f"lloyd{it}_s"] = round(time.perf_counter() - t, 2)
R = st.tensors["refined"]
out["refined"] = cost(x, R.numpy())
E, _ = kmeans._lloyd(S, w, R[None], 20, 0.0); out["refined_lloyd20"] = cost(x, E[0].numpy())
print(json.dumps(out), flush=True)
