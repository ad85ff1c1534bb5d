"""Serving a model: an OpenAI-compatible API and a web page (`vrm serve`)."""

from __future__ import annotations

from vrm.serve.engine import Engine, Limits, Refused


def serve(model: str | None = None, host: str = "127.0.0.1", port: int = 8000, limits: Limits | None = None,
          log_level: str = "info") -> None:
    """Load ``model`` (the embedded one by default) and serve it until interrupted."""
    import uvicorn

    from vrm.model import load_model
    from vrm.serve.app import create_app

    loaded, processor = load_model(model)
    engine = Engine(loaded, processor, model or "vrm-tiny", limits)
    uvicorn.run(create_app(engine), host=host, port=port, log_level=log_level, timeout_keep_alive=5)


__all__ = ["Engine", "Limits", "Refused", "serve"]
