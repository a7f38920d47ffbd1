"""OpenAI-compatible HTTP server with the safety trace on each choice, and a moderation endpoint on the [CLS] head.

    from safecls.serve import ServeSettings, create_app
    app = create_app(SafeClsModel.from_pretrained("runs/sft/final"), ServeSettings(api_keys=["sk-local"]))

Names load lazily, so `import safecls.serve.<module>` works without the `serve` extra (fastapi, uvicorn,
prometheus-client) until the app is built.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ServeSettings", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from safecls.serve.app import create_app

        return create_app
    if name == "ServeSettings":
        from safecls.serve.settings import ServeSettings

        return ServeSettings
    raise AttributeError(f"module 'safecls.serve' has no attribute {name!r}")
