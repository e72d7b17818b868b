"""`onepass serve`: SageMaker's inference contract over real HTTP, against a server started in the test."""

from __future__ import annotations

import http.client
import io
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("starlette")
uvicorn = pytest.importorskip("uvicorn")

from onepass import testing as T  # noqa: E402
from onepass.algorithms.base import Model  # noqa: E402
from onepass.data import recordio  # noqa: E402
from onepass.serving import Settings, create_app, sagemaker_settings  # noqa: E402
from onepass.train import train  # noqa: E402

from conftest import record_class, run_cli, write_csv  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(settings: Settings):
    """A real uvicorn server on a free loopback port, in a thread; yields its port."""
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="error",
                                           access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def call(port: int, method: str, path: str, body: bytes | str | None = None, **headers: str):
    """(status, headers, body) of one request."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    hdrs = {k.replace("_", "-"): v for k, v in headers.items()}
    conn.request(method, path, body=body.encode() if isinstance(body, str) else body, headers=hdrs)
    resp = conn.getresponse()
    out = resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    conn.close()
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A trained run of each algorithm, and the records to ask them about."""
    root = tmp_path_factory.mktemp("serve")
    rng = np.random.default_rng(0)
    x = T.gaussian_mixture(1500, 0)[:, :5].astype(np.float32)
    y_bin = (x @ rng.normal(size=5) > 0).astype(np.float32)
    y_multi = np.digitize(x[:, 0], np.quantile(x[:, 0], [0.33, 0.66])).astype(np.float32)
    out = {
        "kmeans": train("kmeans", x, root / "kmeans", hyperparameters={"k": 4}).out,
        "pca": train("pca", x, root / "pca", hyperparameters={"num_components": 2}).out,
        "binary": train("linear_learner", (x, y_bin), root / "binary",
                        hyperparameters={"predictor_type": "binary_classifier"}).out,
        "multiclass": train("linear_learner", (x, y_multi), root / "multiclass",
                            hyperparameters={"predictor_type": "multiclass_classifier", "num_classes": 3}).out,
        "regressor": train("linear_learner", (x, x[:, 0] * 2 + 1), root / "regressor",
                           hyperparameters={"predictor_type": "regressor"}).out,
        "fm": train("factorization_machines", (x, y_bin), root / "fm",
                    hyperparameters={"predictor_type": "binary_classifier", "num_factors": 2}).out,
        "ntm": train("ntm", _counts(x), root / "ntm", hyperparameters={"num_topics": 2}).out,
    }
    return root, x[:7], out


def _counts(x: np.ndarray) -> np.ndarray:
    """Word counts (what NTM reads) from the same records."""
    return np.round(np.abs(x) * 2).astype(np.float32)


def _predicted(run: Path, x: np.ndarray, tmp: Path) -> list[dict]:
    """What `onepass predict` answers for the records x (JSON lines)."""
    data = write_csv(tmp / f"{run.name}.csv", x)
    result = run_cli("predict", str(run), "--data", str(data), "--format", "jsonl", check=True)
    return [json.loads(line) for line in result.stdout.splitlines()]


def _bodies(x: np.ndarray) -> dict[str, tuple[str, bytes]]:
    """The same records in every request format SageMaker's clients send."""
    buf = io.StringIO()
    np.savetxt(buf, x, delimiter=",", fmt="%.9g")
    sparse = [{"data": {"features": {"keys": np.flatnonzero(r).tolist(), "shape": [x.shape[1]],
                                     "values": r[r != 0].tolist()}}} for r in x]
    dense_rec, sparse_rec = io.BytesIO(), io.BytesIO()
    recordio.write_recordio(dense_rec, x)
    recordio.write_recordio(sparse_rec, x, sparse=True)
    return {
        "csv": ("text/csv; label_size=0", buf.getvalue().encode()),
        "json": ("application/json", json.dumps({"instances": [{"features": r.tolist()} for r in x]}).encode()),
        "json-values": ("application/json", json.dumps(
            {"instances": [{"data": {"features": {"values": r.tolist()}}} for r in x]}).encode()),
        "json-bare": ("application/json", json.dumps(x.tolist()).encode()),  # the SDK's JSONSerializer of an array
        "json-sparse": ("application/json", json.dumps({"instances": sparse}).encode()),
        "jsonlines": ("application/jsonlines", "\n".join(json.dumps({"features": r.tolist()}) for r in x).encode()),
        "recordio": ("application/x-recordio-protobuf", dense_rec.getvalue()),
        "recordio-sparse": ("application/x-recordio-protobuf", sparse_rec.getvalue()),
        "npy": ("application/x-npy", _npy(x)),  # the SDK's NumpySerializer
    }


def _npy(x: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, x, allow_pickle=x.dtype == object)
    return buf.getvalue()


def _close(a, b) -> bool:
    return np.allclose(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("algo", ["kmeans", "pca", "binary", "multiclass", "regressor", "fm", "ntm"])
def test_every_request_format_answers_as_onepass_predict(runs, algo, tmp_path):
    root, x, out = runs
    x = _counts(x) if algo == "ntm" else x
    expected = _predicted(out[algo], x, tmp_path)
    key = "projections" if algo == "pca" else "predictions"
    with serving(Settings(model=str(out[algo]))) as port:
        bodies = {**_bodies(x), "npy-one-record": ("application/x-npy", _npy(x[0]))}  # a 1-D array: one record
        for name, (ctype, body) in bodies.items():
            status, headers, content = call(port, "POST", "/invocations", body, Content_Type=ctype)
            assert status == 200, (name, content)
            answer = json.loads(content)[key]
            want_all = expected[:1] if name == "npy-one-record" else expected
            assert len(answer) == len(want_all), name
            for got, want in zip(answer, want_all):
                assert got.keys() == want.keys() and all(_close(got[k], want[k]) for k in want), name
            assert headers["x-onepass-model"] == Model.load(out[algo]).checksum


def test_answers_come_in_every_accepted_type(runs):
    root, x, out = runs
    ctype, body = _bodies(x)["csv"]
    model = Model.load(out["binary"])
    with serving(Settings(model=str(out["binary"]))) as port:
        status, _, content = call(port, "POST", "/invocations", body, Content_Type=ctype)
        answer = json.loads(content)["predictions"]
        assert all(isinstance(a["predicted_label"], int) for a in answer)  # integers, as in AWS's examples
        status, headers, lines = call(port, "POST", "/invocations", body, Content_Type=ctype,
                                      Accept="text/html, application/jsonlines;q=0.9")
        assert status == 200 and headers["content-type"].startswith("application/jsonlines")
        assert [json.loads(line) for line in lines.splitlines()] == answer
        status, _, csv = call(port, "POST", "/invocations", body, Content_Type=ctype, Accept="text/csv")
        table = np.loadtxt(io.StringIO(csv.decode()), delimiter=",", ndmin=2)
        assert _close(table[:, 0], [a["score"] for a in answer]) and _close(table[:, 1], [a["predicted_label"]
                                                                                          for a in answer])
        status, _, rec = call(port, "POST", "/invocations", body, Content_Type=ctype,
                              Accept="application/x-recordio-protobuf")
        Record, at = record_class(), 0
        for a in answer:  # each record's label map holds the outputs, as SageMaker's RecordIO responses do
            _, n = struct.unpack_from("<II", rec, at)
            r = Record.FromString(rec[at + 8:at + 8 + n])
            assert _close(r.label["score"].float32_tensor.values, [a["score"]])
            assert list(r.label["predicted_label"].float32_tensor.values) == [a["predicted_label"]]
            at += 8 + ((n + 3) & ~3)
        assert at == len(rec)
    assert model.meta["predictor_type"] == "binary_classifier"


def test_client_mistakes_get_4xx_with_a_message_never_500(runs):
    root, x, out = runs
    with serving(Settings(model=str(out["kmeans"]), max_body_bytes=4096)) as port:
        cases = [
            (415, dict(Content_Type="application/octet-stream"), b"1,2,3,4,5", "Content-Type"),
            (406, dict(Content_Type="text/csv", Accept="text/html"), b"1,2,3,4,5", "Accept"),
            (400, dict(Content_Type="text/csv"), b"1,2,3", "5"),  # a wrong feature count names the expected
            (400, dict(Content_Type="text/csv"), b"1,2,x,4,5", "not a number"),
            (400, dict(Content_Type="application/json"), b"{\"instances\": [", "not JSON"),
            (400, dict(Content_Type="application/json"), b"{\"instances\": [{\"features\": [1, \"a\", 3, 4, 5]}]}",
             "record 1"),
            (400, dict(Content_Type="application/json"),
             b"{\"instances\": [{\"data\": {\"features\": {\"keys\": [9], \"shape\": [5], \"values\": [1]}}}]}",
             "outside"),
            (400, dict(Content_Type="application/jsonlines"), b"{\"features\": [1,2,3,4,5]}\n{oops", "line 2"),
            (400, dict(Content_Type="application/x-recordio-protobuf"), b"\x00\x01\x02\x03garbage!", "magic"),
            (400, dict(Content_Type="text/csv"), b"", "empty"),
            (406, dict(Content_Type="text/csv", Accept="application/x-npy"), b"1,2,3,4,5", "Accept"),  # as SageMaker
            (400, dict(Content_Type="application/x-npy"), b"\x93NUMPY garbage", "application/x-npy"),
            (400, dict(Content_Type="application/x-npy"), _npy(np.array([{"a": 1}], dtype=object)), "pickle"),
            (400, dict(Content_Type="application/x-npy"), _npy(np.zeros((2, 5, 1))), "shape (2, 5, 1)"),
            (400, dict(Content_Type="application/x-npy"), _npy(np.array([[1, 2, np.nan, 4, 5]])), "feature 3"),
            (400, dict(Content_Type="application/x-npy"), _npy(np.ones((2, 3))), "the model expects 5"),
            (413, dict(Content_Type="text/csv"), b"1,2,3,4,5\n" * 1000, "limit"),
        ]
        for status, headers, body, words in cases:
            got, _, content = call(port, "POST", "/invocations", body, **headers)
            message = json.loads(content)["message"]
            assert got == status and words in message, (status, headers, message)
        assert call(port, "GET", "/ping")[0] == 200  # still up


def test_a_bearer_token_guards_every_route_but_ping(runs):
    root, x, out = runs
    ctype, body = _bodies(x)["csv"]
    with serving(Settings(model=str(out["kmeans"]), auth_token="s3cret")) as port:
        assert call(port, "GET", "/ping")[0] == 200
        assert call(port, "POST", "/invocations", body, Content_Type=ctype)[0] == 401
        assert call(port, "POST", "/invocations", body, Content_Type=ctype, Authorization="Bearer nope")[0] == 401
        assert call(port, "GET", "/execution-parameters")[0] == 401
        assert call(port, "POST", "/invocations", body, Content_Type=ctype, Authorization="Bearer s3cret")[0] == 200


def test_overload_answers_503_at_once_instead_of_queueing(runs):
    root, x, out = runs
    with serving(Settings(model=str(out["kmeans"]), max_concurrency=1)) as port:
        held = socket.create_connection(("127.0.0.1", port))  # a request whose body never comes: in progress
        held.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\nContent-Length: 100\r\n\r\n1")
        time.sleep(0.3)
        status, _, content = call(port, "POST", "/invocations", b"1,2,3,4,5", Content_Type="text/csv")
        assert status == 503 and "busy" in json.loads(content)["message"]
        held.close()
        time.sleep(0.3)
        assert call(port, "POST", "/invocations", b"1,2,3,4,5", Content_Type="text/csv")[0] == 200


def test_a_new_model_is_swapped_in_while_clients_ask_and_none_is_lost_or_mixed(runs, tmp_path):
    root, x, out = runs
    run = tmp_path / "live"
    shutil.copytree(out["kmeans"], run)
    old, new = Model.load(run), Model.load(out["pca"])  # different algorithms: any mix would show in the keys
    ctype, body = _bodies(x)["csv"]
    answers: list[tuple[str, dict]] = []
    errors: list[object] = []
    stop = threading.Event()

    def client():
        while not stop.is_set():
            try:
                status, headers, content = call(port, "POST", "/invocations", body, Content_Type=ctype)
                if status != 200:
                    errors.append((status, content))
                answers.append((headers["x-onepass-model"], json.loads(content)))
            except Exception as e:  # a lost request
                errors.append(e)

    with serving(Settings(model=str(run))) as port:
        clients = [threading.Thread(target=client) for _ in range(4)]
        for c in clients:
            c.start()
        time.sleep(0.5)
        new.save(run / "model.safetensors")  # what train or finalize does: an atomic rename
        deadline = time.monotonic() + 10
        while not any(model == new.checksum for model, _ in answers[-4:]) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        stop.set()
        for c in clients:
            c.join()
        assert call(port, "GET", "/ping")[1]["x-onepass-model"] == new.checksum
    assert not errors
    kinds = {old.checksum: "predictions", new.checksum: "projections"}
    assert {m for m, _ in answers} == set(kinds)
    assert all(list(a) == [kinds[m]] for m, a in answers)  # each answer wholly from the model it names


def test_multi_model_endpoint_loads_only_verified_models_under_its_root(runs, tmp_path):
    root, x, out = runs
    (tmp_path / "outside").mkdir()
    shutil.copy(out["pca"] / "model.safetensors", tmp_path / "outside" / "model.safetensors")
    models = tmp_path / "models"
    shutil.copytree(out["kmeans"], models / "km")
    (models / "escape").symlink_to(tmp_path / "outside")
    (models / "junk").mkdir()
    (models / "junk" / "model.safetensors").write_bytes(b"\x00" * 64)
    ctype, body = _bodies(x)["csv"]
    with serving(Settings(model_root=str(models))) as port:
        assert call(port, "GET", "/ping")[0] == 200
        load = lambda name, url: call(port, "POST", "/models", json.dumps({"model_name": name, "url": url}),  # noqa
                                      Content_Type="application/json")
        assert load("km", "km")[0] == 200
        assert load("km", "km")[0] == 409
        for url in ("../outside", str(tmp_path / "outside"), "escape", "km/../../outside"):
            status, _, content = load("bad", url)
            assert status == 400 and "not inside the model root" in json.loads(content)["message"], url
        assert load("junk", "junk")[0] == 400  # not a verified onepass model
        assert load("none", "nowhere")[0] == 404
        assert json.loads(call(port, "GET", "/models")[2]) == {"models": [{"modelName": "km", "modelUrl": "km"}]}
        direct = call(port, "POST", "/models/km/invoke", body, Content_Type=ctype)
        by_header = call(port, "POST", "/invocations", body, Content_Type=ctype,
                         X_Amzn_SageMaker_Target_Model="km")
        assert direct[0] == by_header[0] == 200 and direct[2] == by_header[2]
        assert call(port, "DELETE", "/models/km")[0] == 200
        assert call(port, "POST", "/models/km/invoke", body, Content_Type=ctype)[0] == 404


def test_the_boto3_runtime_client_talks_to_the_server(runs):
    boto3 = pytest.importorskip("boto3")
    root, x, out = runs
    ctype, body = _bodies(x)["csv"]
    with serving(Settings(model=str(out["kmeans"]))) as port:
        client = boto3.client("sagemaker-runtime", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                              aws_access_key_id="test", aws_secret_access_key="test")
        reply = client.invoke_endpoint(EndpointName="local", Body=body, ContentType="text/csv",
                                       Accept="application/json")
        answer = json.loads(reply["Body"].read())["predictions"]
        assert len(answer) == len(x) and set(answer[0]) == {"closest_cluster", "distance_to_cluster"}


SDK_VENV = Path(__file__).parent.parent / ".venv-sdk"


def _sdk_python() -> Path:
    """.venv-sdk's Python with the SageMaker SDK v2 (tests/requirements-sdk.txt; .ci/run installs it): made here
    when missing, skipped, saying why, only when that install fails (no network, no venv module)."""
    python = SDK_VENV / "bin" / "python"
    if not list(SDK_VENV.glob("lib/python*/site-packages/sagemaker-2.*.dist-info")):  # importing it takes seconds
        made = subprocess.run(f"{sys.executable} -m venv {SDK_VENV} && {python} -m pip install -q -r "
                              f"{Path(__file__).parent / 'requirements-sdk.txt'}", shell=True, capture_output=True,
                              text=True)
        if made.returncode:
            pytest.skip(f"the SageMaker SDK v2 did not install into {SDK_VENV}: {made.stderr.strip()[-300:]}")
    return python


def test_the_sagemaker_sdk_predictor_reads_what_the_server_answers(runs, tmp_path):
    """The real SDK v2's Predictor, serializers and deserializers, through boto3's sagemaker-runtime client."""
    python = _sdk_python()
    root, x, out = runs
    np.save(tmp_path / "x.npy", x)
    keys = {"kmeans": "predictions", "pca": "projections"}
    with serving(Settings(model=str(out["kmeans"]))) as kmeans, serving(Settings(model=str(out["pca"]))) as pca:
        ports = {"kmeans": kmeans, "pca": pca}
        want = {algo: json.loads(call(port, "POST", "/invocations", _bodies(x)["csv"][1],
                                      Content_Type="text/csv")[2])[keys[algo]] for algo, port in ports.items()}
        client = subprocess.run([str(python), str(Path(__file__).parent / "sdk_client.py"), str(tmp_path / "x.npy"),
                                 str(tmp_path / "got.json"), *map(str, ports.values())], capture_output=True,
                                text=True, timeout=180)
    assert client.returncode == 0, client.stderr[-2000:]
    got = json.loads((tmp_path / "got.json").read_text())
    for algo, port in ports.items():
        assert len(got[str(port)]) == 8
        for name, answer in got[str(port)].items():
            if name == "csv->csv":  # CSVDeserializer: a list of rows of strings, the outputs' values in order
                assert _close(np.asarray(answer, dtype=float),
                              [[v for o in w.values() for v in np.ravel(o)] for w in want[algo]]), (algo, name)
                continue
            rows = answer if name == "csv->jsonlines" else answer[keys[algo]]  # JSONLinesDeserializer: a line each
            expected = want[algo][:1] if name == "npy-one-record->json" else want[algo]
            assert len(rows) == len(expected) and all(r.keys() == w.keys() and all(_close(r[k], w[k]) for k in w)
                                                      for r, w in zip(rows, expected)), (algo, name)


def test_the_container_entry_point_follows_sagemakers_environment():
    settings, server = sagemaker_settings({"SAGEMAKER_BIND_TO_PORT": "9090", "SAGEMAKER_MODEL_SERVER_WORKERS": "3",
                                           "SAGEMAKER_MODEL_SERVER_TIMEOUT": "30", "SAGEMAKER_MAX_PAYLOAD_IN_MB": "2"})
    assert server == {"host": "0.0.0.0", "port": 9090, "workers": 3}
    assert settings.model == "/opt/ml/model" and settings.timeout == 30 and settings.max_body_bytes == 2 * 2**20
    multi, _ = sagemaker_settings({"SAGEMAKER_MULTI_MODEL": "true"})
    assert multi.model is None and multi.model_root == "/opt/ml/models"


def test_serve_from_the_command_line_refuses_a_missing_model(tmp_path):
    result = run_cli("serve", str(tmp_path / "nothing"), "--port", str(_free_port()))
    assert result.returncode == 2 and "no such run folder or model file" in result.stderr


def test_a_forecaster_answers_sagemakers_deepar_requests(tmp_path):
    from onepass.testing import series_records, seasonal_series

    records = series_records(seasonal_series(40, 0))
    data = tmp_path / "series.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    train("deepar", str(data), tmp_path / "dar", hyperparameters={
        "time_freq": "M", "prediction_length": 4, "context_length": 8, "num_cells": 8, "num_layers": 1,
        "likelihood": "gaussian", "epochs": 1})
    model = Model.load(tmp_path / "dar")
    config = {"num_samples": 20, "output_types": ["mean", "quantiles"], "quantiles": ["0.1", "0.9"]}
    request = {"instances": records[:3], "configuration": config}
    with serving(Settings(model=str(tmp_path / "dar"))) as port:
        status, headers, content = call(port, "POST", "/invocations", json.dumps(request),
                                        Content_Type="application/json")
        assert status == 200, content
        answer = json.loads(content)["predictions"]
        assert len(answer) == 3 and set(answer[0]) == {"mean", "quantiles"}
        assert len(answer[0]["mean"]) == 4 and set(answer[0]["quantiles"]) == {"0.1", "0.9"}
        assert all(q1 <= q9 for q1, q9 in zip(answer[0]["quantiles"]["0.1"], answer[0]["quantiles"]["0.9"]))
        lines = call(port, "POST", "/invocations", "\n".join(json.dumps(r) for r in records[:2]),
                     Content_Type="application/jsonlines")
        assert lines[0] == 200 and len(lines[2].splitlines()) == 2
        assert call(port, "POST", "/invocations", b"1,2,3", Content_Type="text/csv")[0] == 415
        bad = call(port, "POST", "/invocations", json.dumps({"instances": [{"start": "2010-01-01"}]}),
                   Content_Type="application/json")
        assert bad[0] == 400 and "target" in json.loads(bad[2])["message"]
    assert model.meta["hyperparameters"]["prediction_length"] == 4
