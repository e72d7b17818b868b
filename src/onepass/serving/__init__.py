"""Serving: SageMaker's inference contract (GET /ping, POST /invocations, the multi-model API) over any onepass
model, as a Starlette app on uvicorn. `onepass serve RUN` from the command line; `create_app(Settings(model=...))` to
mount it in an ASGI stack of your own."""

from .app import Settings, create_app, run, sagemaker_settings

__all__ = ["Settings", "create_app", "run", "sagemaker_settings"]
