"""Serving benchmark: `onepass serve` against a bare Starlette/uvicorn app that returns a fixed answer (the ceiling
of the stack), loaded by wrk (Debian's `wrk`, not ours) over keep-alive on this machine.

    apt-get install wrk
    python benchmarks/run_serve.py [--seconds 10] [--connections 8] [--out benchmarks/results_serve.json]

For each model (k-means k = 10, the binary linear learner, PCA, on 50 features): single-record CSV requests
(requests/s, p50 and p99 latency at the load where throughput peaks over 1, 4 and 16 connections) and 1,000-record
CSV requests (records/s). The bare app reads the body and answers a constant of the same shape, so the ratio is what
parsing, predicting and encoding cost over the HTTP stack itself. Writes a JSON file and prints a Markdown table.

The peer, where benchmarks/.venv-mlserver holds it (benchmarks/requirements-mlserver.txt): MLServer 1.7.1 serving
scikit-learn's KMeans (k = 10) and LogisticRegression fitted on the same records, through its V2 inference protocol
(JSON tensors; the same records, one and 1,000 at a time), one process (parallel_workers 0) as onepass serves.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
BARE = '''
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

ANSWER = b'{"predictions": [{"closest_cluster": 3, "distance_to_cluster": 1.5}]}'

async def invocations(request):
    await request.body()
    return Response(ANSWER, media_type="application/json")

async def ping(request):
    return Response(status_code=200)

app = Starlette(routes=[Route("/invocations", invocations, methods=["POST"]), Route("/ping", ping)])
'''
LUA = '''wrk.method = "POST"
wrk.headers["Content-Type"] = "{ctype}"
wrk.body = io.open("{body}", "rb"):read("*a")
done = function(summary, latency, requests)
  io.write(string.format("RESULT %d %d %f %f %f\\n", summary.requests, summary.errors.status + summary.errors.connect
    + summary.errors.read + summary.errors.write + summary.errors.timeout, summary.duration / 1e6,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(port: int, timeout: float = 60, path: str = "/ping") -> None:
    import http.client

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            c.request("GET", path)
            if c.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"no server on port {port}")


def wrk(port: int, body: Path, connections: int, seconds: float, work: Path, path: str = "/invocations") -> dict:
    script = work / f"post_{body.stem}.lua"
    ctype = "application/json" if body.suffix == ".json" else "text/csv"
    script.write_text(LUA.format(body=body, ctype=ctype))
    out = subprocess.run(["wrk", "-t", "1", "-c", str(connections), "-d", f"{int(seconds)}s", "-s", str(script),
                          f"http://127.0.0.1:{port}{path}"], capture_output=True, text=True, check=True).stdout
    n, errors, duration, p50, p99 = re.search(r"RESULT (\S+) (\S+) (\S+) (\S+) (\S+)", out).groups()
    return {"requests": int(n), "errors": int(errors), "rps": int(n) / float(duration), "p50_ms": float(p50),
            "p99_ms": float(p99), "connections": connections}


def serve(cmd: list[str], port: int, ready: str = "/ping", cwd: Path | None = None) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=cwd)
    wait_ready(port, path=ready)
    return proc


def mlserver(x: np.ndarray, y: np.ndarray, work: Path, venv: Path, loads: tuple, seconds: float) -> dict:
    """MLServer (sklearn runtime) serving KMeans and LogisticRegression fitted on x, loaded by wrk as onepass is."""
    import joblib
    from sklearn.cluster import KMeans
    from sklearn.linear_model import LogisticRegression

    root, port = work / "mlserver", free_port()
    fitted = {"kmeans": KMeans(10, n_init=1, random_state=0).fit(x), "linear": LogisticRegression().fit(x, y)}
    for name, model in fitted.items():
        (root / name).mkdir(parents=True)
        joblib.dump(model, root / name / "model.joblib")
        (root / name / "model-settings.json").write_text(json.dumps(
            {"name": name, "implementation": "mlserver_sklearn.SKLearnModel", "parameters": {"uri": "./model.joblib"}}))
    (root / "settings.json").write_text(json.dumps({"http_port": port, "grpc_port": free_port(), "metrics_port":
                                                    free_port(), "parallel_workers": 0, "metrics_endpoint": None}))
    bodies = {}
    for n, name in ((1, "v2_one.json"), (1000, "v2_batch.json")):
        bodies[n] = work / name
        bodies[n].write_text(json.dumps({"inputs": [{"name": "input-0", "shape": [n, x.shape[1]], "datatype": "FP32",
                                                     "data": x[:n].ravel().tolist()}]}))
    proc = serve([str(venv / "bin" / "mlserver"), "start", str(root)], port, ready="/v2/models/linear/ready")
    out = {}
    try:
        for name in fitted:
            path = f"/v2/models/{name}/infer"
            single = [wrk(port, bodies[1], c, seconds, work, path) for c in loads]
            out[f"mlserver {name} (sklearn)"] = {"single": single, "batch": wrk(port, bodies[1000], 4, seconds, work,
                                                                                path)}
    finally:
        proc.terminate()
        proc.wait()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--out", default=str(HERE / "results_serve.json"))
    ap.add_argument("--mlserver", default=str(HERE / ".venv-mlserver"), help="the venv holding MLServer (skipped, "
                                                                              "saying so, when it has none)")
    args = ap.parse_args()
    import onepass

    work = Path(tempfile.mkdtemp(prefix="onepass-serve-bench-"))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20000, 50)).astype(np.float32)
    y = (x[:, :5].sum(1) > 0).astype(np.float32)
    runs = {"kmeans": onepass.train("kmeans", x, work / "kmeans", hyperparameters={"k": 10}).out,
            "linear_learner": onepass.train("linear_learner", (x, y), work / "ll",
                                            hyperparameters={"predictor_type": "binary_classifier"}).out,
            "pca": onepass.train("pca", x, work / "pca", hyperparameters={"num_components": 10}).out}
    one, batch = work / "one.csv", work / "batch.csv"
    np.savetxt(one, x[:1], delimiter=",", fmt="%.6g")
    np.savetxt(batch, x[:1000], delimiter=",", fmt="%.6g")
    (work / "bare.py").write_text(BARE)
    loads = (1, 4, 16)
    results: dict[str, dict] = {"machine": {"cores": os.cpu_count(), "load_before": os.getloadavg()[0]},
                                "seconds": args.seconds, "systems": {}}
    port = free_port()
    proc = serve([sys.executable, "-m", "uvicorn", "--app-dir", str(work), "bare:app", "--port", str(port),
                  "--log-level", "warning", "--no-access-log"], port)
    try:
        single = [wrk(port, one, c, args.seconds, work) for c in loads]
        results["systems"]["bare starlette"] = {"single": single, "batch": wrk(port, batch, 4, args.seconds, work)}
    finally:
        proc.terminate()
        proc.wait()
    for name, run in runs.items():
        port = free_port()
        proc = serve([sys.executable, "-m", "onepass", "serve", str(run), "--port", str(port)], port)
        try:
            single = [wrk(port, one, c, args.seconds, work) for c in loads]
            results["systems"][f"onepass {name}"] = {"single": single, "batch": wrk(port, batch, 4, args.seconds, work)}
        finally:
            proc.terminate()
            proc.wait()
    if (Path(args.mlserver) / "bin" / "mlserver").exists():
        results["systems"].update(mlserver(x, y, work, Path(args.mlserver), loads, args.seconds))
    else:
        print(f"MLServer not compared: no {args.mlserver}/bin/mlserver (see benchmarks/requirements-mlserver.txt)")
    results["machine"]["load_after"] = os.getloadavg()[0]
    Path(args.out).write_text(json.dumps(results, indent=1))
    bare = max(s["rps"] for s in results["systems"]["bare starlette"]["single"])
    print("| server | single-record req/s (peak) | vs bare | p50 / p99 ms at peak | 1,000-record batches: records/s |")
    print("|---|---|---|---|---|")
    for name, r in results["systems"].items():
        peak = max(r["single"], key=lambda s: s["rps"])
        print(f"| {name} | {peak['rps']:,.0f} ({peak['connections']} conn.) | {peak['rps'] / bare:.2f} x | "
              f"{peak['p50_ms']:.2f} / {peak['p99_ms']:.2f} | {r['batch']['rps'] * 1000:,.0f} |")


if __name__ == "__main__":
    main()
