"""The single-process server: the app on uvicorn, with the batching, on a socket bound before
the model loads (a taken port is one line, at once)."""

from __future__ import annotations

import contextlib
import signal
import socket
import sys

from resnet_jax.errors import UserError
from resnet_jax.serve import batching
from resnet_jax.serve.app import create_app
from resnet_jax.serve.service import Service


def listen(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: any free one); UserError if it is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listening = socket.socket(family, socket.SOCK_STREAM)
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listening.bind((host, port))
    except OSError as error:
        listening.close()
        raise UserError(f"cannot listen on {host}:{port}: {error.strerror or error}; choose "
                        f"another --port (or --host)") from None
    listening.listen(2048)
    return listening


def serve(service: Service, listening: socket.socket, *, api_key: str | None,
          max_delay_s: float, max_body_bytes: int, name: str) -> None:
    """Serves until SIGTERM or Ctrl-C, then stops accepting, answers what it accepted (what is
    queued for the device runs first) and returns."""
    import uvicorn

    batcher = batching.Batcher(service.engine.forward, service.engine.max_batch_size,
                               max_delay_s, service.metrics.batch_size.observe,
                               take=service.engine.images_to_run)
    service.submit = batcher.submit
    service.metrics.queue_depth.set_function(lambda: batcher.queued)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        async with batching.running(batcher):  # on shutdown: what is queued runs first
            service.compile_in_background()
            yield

    app = create_app(service, api_key=api_key, max_body_bytes=max_body_bytes,
                     lifespan=lifespan)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False,
                                           timeout_graceful_shutdown=60))
    # uvicorn drains on SIGTERM/SIGINT, then raises the signal again under the handlers it
    # found: these make that a normal end (exit 0) rather than death by the signal.
    for stop in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop, lambda *_: None)
    host, port = listening.getsockname()[:2]
    print(f"serving {name} on http://{host}:{port}/ (ready when /readyz says so"
          f"{'; API key required' if api_key else ''})", file=sys.stderr, flush=True)
    server.run(sockets=[listening])
    received, answered = service.metrics.totals()
    print(f"stopped: {received} requests received, {answered} answered", file=sys.stderr,
          flush=True)
