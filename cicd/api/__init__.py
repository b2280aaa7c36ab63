"""The HTTP and WebSocket API of the cicd server (an adapter at the edge).

``create_app(service, server_names=...)`` builds the Quart-Trio application and
``serve(app, host=..., port=..., shutdown_trigger=...)`` runs it with hypercorn in
the current Trio run. ``docs/api.md`` describes the API for its users.
"""

from __future__ import annotations

from cicd.api.app import create_app
from cicd.api.contract import RunServiceProtocol
from cicd.api.guard import DEFAULT_SERVER_NAMES
from cicd.api.openapi import openapi_document
from cicd.api.server import serve

__all__ = ["DEFAULT_SERVER_NAMES", "RunServiceProtocol", "create_app", "openapi_document", "serve"]
