"""The monitoring-centre console: a live web console for on-call staff, scoped by tier.

`console.app.create_app(backend, settings)` builds the FastAPI app (pages, JSON API under
/api/, server-sent events, /metrics, /healthz, /readyz); `console.server.ConsoleServer`
serves it with uvicorn on a thread for `carewatch run` and `carewatch demo`.
"""
