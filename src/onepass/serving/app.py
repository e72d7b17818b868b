"""SageMaker's inference contract over any onepass model, as an ASGI app (Starlette) served by uvicorn.

Routes:
- ``GET /ping``: 200 once the model is loaded (503 before); the ``X-Onepass-Model`` header names it (its checksum).
- ``POST /invocations`` and ``POST /endpoints/NAME/invocations`` (the path the SageMaker runtime posts to): records
  in, predictions out (codecs.py). ``X-Amzn-SageMaker-Target-Model`` picks a model loaded through ``/models``.
- ``GET /execution-parameters``: what batch transform asks (``MULTI_RECORD``, the payload limit, the concurrency).
- With a model root (multi-model endpoint): ``POST /models`` ``{"model_name", "url"}`` (409 when loaded, 404 when
  the url is not a model under the root, 400 when it leads outside it), ``GET /models``, ``GET``/``DELETE
  /models/NAME``, ``POST /models/NAME/invoke``.

Every client mistake is a 4xx with a JSON body ``{"code", "type", "message"}`` naming what and where, never a 500,
and never takes the server down: 400 a malformed body or a wrong feature count, 401 a missing or wrong bearer token
(every route but ``/ping`` when a token is set), 404 an unknown model, 406 an Accept not served, 413 a body over
the limit (6 MiB, SageMaker's, by default), 415 a Content-Type not read. More than `max_concurrency` requests at
once get 503 at once instead of waiting in an unbounded queue; a prediction past `timeout` seconds gets 504.
Predictions of large bodies run in a worker thread, so a slow batch does not hold up pings and small requests.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .. import algorithms
from ..algorithms.base import Model
from ..data.sparse import CSR
from ..errors import OnepassError
from . import categorical, codecs
from .codecs import BadRequest
from .models import Registry, Slot

MAX_BODY_BYTES = 6 * 1024 * 1024  # SageMaker's InvokeEndpoint limit (6,291,456 bytes)
INLINE_BYTES = 64 * 1024  # bodies up to this are predicted on the event loop: a thread hop costs ~50 us a request
CONFIG_ENV = "ONEPASS_SERVE_CONFIG"  # how `serve` hands its settings to uvicorn's worker processes
log = logging.getLogger("onepass.serve")


@dataclass
class Settings:
    """What a server answers with and how."""

    model: str | None = None  # a run folder or a model file: the default model
    model_root: str | None = None  # multi-model endpoint: models load by name from under this folder only
    auth_token: str | None = None
    max_body_bytes: int = MAX_BODY_BYTES
    max_concurrency: int = 64
    timeout: float = 60.0  # SageMaker's: an invocation answers within 60 s
    default_accept: str = codecs.JSON
    device: str = "cpu"


def create_app(settings: Settings) -> Starlette:
    """The ASGI app for `settings` (its default model loaded and verified now: a bad model fails at start)."""
    slot = Slot.open(settings.model) if settings.model else None
    if slot is not None and not slot.ready:
        raise ValueError(f"{settings.model}: no readable onepass model there")
    registry = Registry(settings.model_root) if settings.model_root else None
    state = {"in_flight": 0}
    device = torch.device(settings.device)

    def problem(status: int, message: str, kind: str = "ClientError", headers: dict | None = None) -> JSONResponse:
        return JSONResponse({"code": status, "type": kind, "message": message}, status_code=status, headers=headers)

    def authorized(request: Request) -> bool:
        if not settings.auth_token:
            return True
        given = request.headers.get("authorization", "")
        return given.startswith("Bearer ") and hmac.compare_digest(given[7:].encode(), settings.auth_token.encode())

    async def body_of(request: Request) -> bytes:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > settings.max_body_bytes:
            raise BadRequest(413, f"the body has {int(length):,} bytes; the limit is {settings.max_body_bytes:,}")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > settings.max_body_bytes:
                raise BadRequest(413, f"the body is over the limit of {settings.max_body_bytes:,} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def predict(model: Model, records: codecs.Records) -> dict[str, np.ndarray]:
        x = records.x
        if isinstance(x, CSR):
            sparse_ok = getattr(algorithms.get(model.algorithm), "ACCEPTS_SPARSE", False)
            x = x.to_torch() if sparse_ok else torch.from_numpy(x.toarray())
        else:
            x = torch.from_numpy(x)
        with torch.no_grad():
            out = model.predict(x.to(device))
        return {k: v.detach().cpu().numpy() for k, v in out.items()}

    async def answer(request: Request, slot: Slot | None) -> Response:
        model = slot.current() if slot is not None else None
        if model is None:
            return problem(503, "no model is loaded", "ServiceUnavailable")
        body = await body_of(request)
        if hasattr(model, "predict_request"):  # a forecaster: series in, SageMaker's forecast objects out
            return await forecast(request, model, body)
        accept = codecs.choose_accept(request.headers.get("accept"), settings.default_accept)
        if categorical.applies(model.meta, request.headers.get("content-type")):  # raw values, hashed as trained
            records = codecs.Records(categorical.parse(body, request.headers.get("content-type"), model.meta))
        else:
            records = codecs.parse(body, request.headers.get("content-type"), model.meta.get("n_features"))
        if len(body) <= INLINE_BYTES:
            outputs = predict(model, records)
        else:
            try:
                outputs = await asyncio.wait_for(run_in_threadpool(predict, model, records), settings.timeout)
            except asyncio.TimeoutError:
                return problem(504, f"the prediction took longer than {settings.timeout:g} s", "Timeout")
        content = codecs.encode(outputs, accept, getattr(model, "json_key", "predictions"))
        return Response(content, media_type=accept, headers={"X-Onepass-Model": model.checksum or ""})

    async def forecast(request: Request, model: Model, body: bytes) -> Response:
        """DeepAR's contract: application/json {"instances": [...], "configuration": {...}} -> {"predictions":
        [...]}, or JSON lines of bare instances (batch transform) -> a line of forecast each."""
        kind = codecs.media_type(request.headers.get("content-type"))
        if kind not in (codecs.JSON, codecs.JSONLINES):
            raise BadRequest(415, f"Content-Type {request.headers.get('content-type')!r}: a forecaster reads "
                                  "application/json ({\"instances\": [...]}) or application/jsonlines")
        accept = codecs.choose_accept(request.headers.get("accept"), codecs.JSON if kind == codecs.JSON else
                                      codecs.JSONLINES, offered=(codecs.JSON, codecs.JSONLINES))
        if kind == codecs.JSON:
            req = codecs.loads_json(body, "application/json body")
        else:
            req = {"instances": [codecs.loads_json(line, f"application/jsonlines body, line {i}")
                                 for i, line in enumerate(body.splitlines(), 1) if line.strip()]}
        try:
            answer = await run_in_threadpool(model.predict_request, req)
        except OnepassError as e:  # a malformed series names itself
            raise BadRequest(400, str(e)) from None
        content = codecs.dumps(answer) if accept == codecs.JSON else \
            b"".join(codecs.dumps(p) + b"\n" for p in answer["predictions"])
        return Response(content, media_type=accept, headers={"X-Onepass-Model": model.checksum or ""})

    async def guarded(request: Request, handler) -> Response:
        """Auth, the concurrency bound and the error shape, around every route but /ping."""
        if not authorized(request):
            return problem(401, "a valid bearer token is required (Authorization: Bearer TOKEN)", "Unauthorized",
                           {"WWW-Authenticate": "Bearer"})
        if state["in_flight"] >= settings.max_concurrency:
            return problem(503, f"busy: {settings.max_concurrency} requests in progress; retry", "ServiceUnavailable")
        state["in_flight"] += 1
        try:
            return await handler(request)
        except BadRequest as e:
            return problem(e.status, str(e))
        except Exception:  # a bug of ours, not the client's: logged with its traceback, answered without it
            log.exception("onepass serve: request failed")
            return problem(500, "internal error (see the server's log)", "InternalServerError")
        finally:
            state["in_flight"] -= 1

    async def ping(request: Request) -> Response:
        ready = slot is not None and slot.current() is not None
        if not ready and registry is None:
            return Response(status_code=503)
        return Response(status_code=200, headers={"X-Onepass-Model": slot.model.checksum or ""} if ready else {})

    async def invocations(request: Request) -> Response:
        async def handle(request: Request) -> Response:
            target = request.headers.get("x-amzn-sagemaker-target-model")
            if target and registry is not None:
                chosen = registry.get(target)
                if chosen is None:
                    return problem(404, f"model {target!r} is not loaded", "ModelNotFound")
                return await answer(request, chosen)
            return await answer(request, slot)
        return await guarded(request, handle)

    async def execution_parameters(request: Request) -> Response:
        async def handle(request: Request) -> Response:
            return JSONResponse({"MaxConcurrentTransforms": settings.max_concurrency,
                                 "BatchStrategy": "MULTI_RECORD",
                                 "MaxPayloadInMB": max(1, settings.max_body_bytes // (1024 * 1024))})
        return await guarded(request, handle)

    async def models(request: Request) -> Response:
        async def handle(request: Request) -> Response:
            if registry is None:
                return problem(404, "this server has no model root (start it with --model-root DIR)", "NotFound")
            name = request.path_params.get("name")
            if request.method == "GET" and name is None:
                return JSONResponse({"models": registry.listing()})
            if request.method == "POST" and name is None:
                spec = codecs.loads_json(await body_of(request), "POST /models body")
                if not isinstance(spec, dict) or not isinstance(spec.get("model_name"), str) \
                        or not isinstance(spec.get("url"), str):
                    raise BadRequest(400, "POST /models needs {\"model_name\": NAME, \"url\": PATH}")
                try:
                    registry.load(spec["model_name"], spec["url"])
                except KeyError:
                    return problem(409, f"model {spec['model_name']!r} is already loaded", "Conflict")
                except FileNotFoundError as e:
                    return problem(404, str(e), "ModelNotFound")
                except ValueError as e:
                    return problem(400, str(e))
                return JSONResponse({"status": f"model {spec['model_name']!r} loaded"})
            chosen = registry.get(name)
            if chosen is None:
                return problem(404, f"model {name!r} is not loaded", "ModelNotFound")
            if request.method == "DELETE":
                registry.unload(name)
                return JSONResponse({"status": f"model {name!r} unloaded"})
            if request.url.path.endswith("/invoke"):
                return await answer(request, chosen)
            url = dict((m["modelName"], m["modelUrl"]) for m in registry.listing())[name]
            return JSONResponse({"modelName": name, "modelUrl": url})
        return await guarded(request, handle)

    routes = [
        Route("/ping", ping, methods=["GET"]),
        Route("/invocations", invocations, methods=["POST"]),
        Route("/endpoints/{endpoint}/invocations", invocations, methods=["POST"]),
        Route("/execution-parameters", execution_parameters, methods=["GET"]),
        Route("/models", models, methods=["GET", "POST"]),
        Route("/models/{name}", models, methods=["GET", "DELETE"]),
        Route("/models/{name}/invoke", models, methods=["POST"]),
    ]
    return Starlette(routes=routes)


def app_from_env() -> Starlette:
    """uvicorn's factory in each worker process: the settings `serve` put in the environment. Predictions on one
    compute thread a worker: requests are small (6 MiB at most) and run side by side (the worker's thread pool, the
    other workers), and torch's threads spinning against NumPy's BLAS pool made a 1,000-record k-means request 33 ms
    of CPU at two threads against 0.5 ms at one (2 cores, other jobs running)."""
    torch.set_num_threads(1)
    return create_app(Settings(**json.loads(os.environ[CONFIG_ENV])))


def sagemaker_settings(env: dict[str, str] | None = None) -> tuple[Settings, dict[str, Any]]:
    """The container contract: the model in /opt/ml/model (or /opt/ml/models with SAGEMAKER_MULTI_MODEL=true),
    bound to 0.0.0.0 on SAGEMAKER_BIND_TO_PORT (8080), workers and timeout from SAGEMAKER_MODEL_SERVER_WORKERS /
    _TIMEOUT (or the older MODEL_SERVER_WORKERS / _TIMEOUT), the payload limit from SAGEMAKER_MAX_PAYLOAD_IN_MB."""
    env = dict(os.environ if env is None else env)
    base = Path(env.get("SAGEMAKER_BASE_DIR", "/opt/ml"))
    multi = env.get("SAGEMAKER_MULTI_MODEL", "").lower() == "true"
    settings = Settings(model=None if multi else str(base / "model"), model_root=str(base / "models") if multi else None)
    if env.get("SAGEMAKER_MAX_PAYLOAD_IN_MB", "").isdigit():
        settings.max_body_bytes = int(env["SAGEMAKER_MAX_PAYLOAD_IN_MB"]) * 1024 * 1024
    timeout = env.get("SAGEMAKER_MODEL_SERVER_TIMEOUT") or env.get("SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS") \
        or env.get("MODEL_SERVER_TIMEOUT")
    if timeout and timeout.replace(".", "", 1).isdigit():
        settings.timeout = float(timeout)
    if env.get("SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT"):
        settings.default_accept = codecs.media_type(env["SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT"])
    workers = env.get("SAGEMAKER_MODEL_SERVER_WORKERS") or env.get("MODEL_SERVER_WORKERS") or "1"
    server = {"host": "0.0.0.0", "port": int(env.get("SAGEMAKER_BIND_TO_PORT", "8080")),
              "workers": int(workers) if workers.isdigit() and int(workers) > 0 else 1}
    return settings, server


def run(settings: Settings, host: str = "127.0.0.1", port: int = 8080, workers: int = 1,
        max_connections: int = 1000) -> None:
    """Serve until SIGINT/SIGTERM (uvicorn finishes the requests in progress, then stops)."""
    import uvicorn

    create_app(settings)  # load and verify the model here, so that a bad one fails before any worker starts
    os.environ[CONFIG_ENV] = json.dumps(asdict(settings))
    uvicorn.run("onepass.serving.app:app_from_env", factory=True, host=host, port=port, workers=workers,
                limit_concurrency=max_connections, h11_max_incomplete_event_size=64 * 1024,
                timeout_graceful_shutdown=25, log_level="warning", access_log=False)
