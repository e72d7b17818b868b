"""Serving benchmark: `onepass serve` against a bare Starlette/uvicorn app that returns a fixed answer (the ceiling
of the stack), loaded by wrk (Debian's `wrk`, not ours) over keep-alive on this machine.

    apt-get install wrk
    python benchmarks/run_serve.py [--seconds 10] [--connections 8] [--out benchmarks/results_serve.json]

For each model (k-means k = 10, the binary linear learner, PCA, on 50 features): single-record CSV requests
(requests/s, p50 and p99 latency at the load where throughput peaks over 1, 4 and 16 connections) and 1,000-record
CSV requests (records/s). The bare app reads the body and answers a constant of the same shape, so the ratio is what
parsing, predicting and encoding cost over the HTTP stack itself. Writes a JSON file and prints a Markdown table.

All servers run at once, measured in turn over --rounds passes (each figure its best round), so that a load from
other jobs that moves during the run falls on each alike; beside throughput, each server's own CPU time a request
(psutil), which that load hardly moves: on an idle machine with one server process, throughput follows it.

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


def wait_ready(port: int, timeout: float = 300, path: str = "/ping") -> None:
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
    try:
        wait_ready(port, path=ready)
    except BaseException:  # not ready in time: not left running
        proc.terminate()
        proc.wait()
        raise
    return proc


def start_mlserver(x: np.ndarray, y: np.ndarray, work: Path, venv: Path) -> tuple[subprocess.Popen, dict]:
    """MLServer (sklearn runtime) serving KMeans and LogisticRegression fitted on x: its process and, by name,
    (port, path, single-record body, 1,000-record body)."""
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
    return proc, {f"mlserver {name} (sklearn)": (proc, port, f"/v2/models/{name}/infer", bodies[1], bodies[1000])
                  for name in fitted}


def cpu_seconds(proc: subprocess.Popen) -> float:
    """CPU time of a server and its children so far: per request, a cost that the other jobs' load hardly moves."""
    import psutil

    total = 0.0
    for p in [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]:
        t = p.cpu_times()
        total += t.user + t.system
    return total


def measure(target: tuple, connections: int, seconds: float, work: Path, batch: bool = False) -> dict:
    proc, port, path, one, many = target
    before = cpu_seconds(proc)
    out = wrk(port, many if batch else one, connections, seconds, work, path)
    out["cpu_us_per_request"] = (cpu_seconds(proc) - before) / max(out["requests"], 1) * 1e6
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--rounds", type=int, default=3, help="passes over all servers, each figure its best")
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
                                "seconds": args.seconds, "rounds": args.rounds, "systems": {}}
    targets, procs = {}, []
    try:
        port = free_port()
        procs.append(serve([sys.executable, "-m", "uvicorn", "--app-dir", str(work), "bare:app", "--port", str(port),
                            "--log-level", "warning", "--no-access-log"], port))
        targets["bare starlette"] = (procs[-1], port, "/invocations", one, batch)
        for name, run in runs.items():
            port = free_port()
            procs.append(serve([sys.executable, "-m", "onepass", "serve", str(run), "--port", str(port)], port))
            targets[f"onepass {name}"] = (procs[-1], port, "/invocations", one, batch)
        if (Path(args.mlserver) / "bin" / "mlserver").exists():
            proc, more = start_mlserver(x, y, work, Path(args.mlserver))
            procs.append(proc)
            targets.update(more)
        else:
            print(f"MLServer not compared: no {args.mlserver}/bin/mlserver (see benchmarks/requirements-mlserver.txt)")
        # Rounds over all servers in turn (all started, idle but for the one measured): the other jobs' load moves
        # during a run, and interleaving spreads that over every server alike; each figure is its best round.
        runs_of: dict[str, dict] = {name: {"single": {c: [] for c in loads}, "batch": []} for name in targets}
        for _ in range(args.rounds):
            for name, target in targets.items():
                for c in loads:
                    runs_of[name]["single"][c].append(measure(target, c, args.seconds, work))
                runs_of[name]["batch"].append(measure(target, 4, args.seconds, work, batch=True))
        best = lambda rs: max(rs, key=lambda r: r["rps"])  # noqa: E731
        for name, r in runs_of.items():
            results["systems"][name] = {"single": [best(r["single"][c]) for c in loads], "batch": best(r["batch"]),
                                        "cpu_us_per_request": min(m["cpu_us_per_request"] for c in loads
                                                                  for m in r["single"][c])}
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait()
    results["machine"]["load_after"] = os.getloadavg()[0]
    Path(args.out).write_text(json.dumps(results, indent=1))
    bare = max(s["rps"] for s in results["systems"]["bare starlette"]["single"])
    bare_cpu = results["systems"]["bare starlette"]["cpu_us_per_request"]
    print("| server | single-record req/s (peak) | vs bare | p50 / p99 ms at peak | server CPU us a single-record "
          "request (vs bare) | 1,000-record batches: records/s | batches: records a server CPU-second |")
    print("|---|---|---|---|---|---|---|")
    for name, r in results["systems"].items():
        peak = max(r["single"], key=lambda s: s["rps"])
        print(f"| {name} | {peak['rps']:,.0f} ({peak['connections']} conn.) | {peak['rps'] / bare:.2f} x | "
              f"{peak['p50_ms']:.2f} / {peak['p99_ms']:.2f} | {r['cpu_us_per_request']:.0f} "
              f"({bare_cpu / r['cpu_us_per_request']:.2f} x) | {r['batch']['rps'] * 1000:,.0f} | "
              f"{1000 / r['batch']['cpu_us_per_request'] * 1e6:,.0f} |")


if __name__ == "__main__":
    main()
