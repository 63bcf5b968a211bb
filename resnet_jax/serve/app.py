"""The HTTP face of the service (FastAPI): the endpoints, the token, the body limit, the
metrics and the page. Every error is `{"error": "..."}` with a 4xx status (5xx: our bug, or
not ready yet), and the next request is served.

    POST /v1/classify?top_k=5&threshold=   the run's answer, as predict.py --json writes it
    POST /v1/embed                         {"embedding": [...], "dimension": D}, unit length
    POST /v1/search?top_k=5                {"neighbors": [{"path", "similarity", "index",
                                           "class"?}]}, as embed.py --gallery --json
    POST /v1/gallery?name=NAME             adds the image to the gallery (201)
    GET  /v1/gallery/{index}/image         a gallery row's image file (the page's thumbnails)
    GET  /v1/model                         model, classes, task, preprocessing, checkpoint
    GET  /healthz /readyz /metrics /       alive; compiled; Prometheus; the page

A POST's image is the raw body (Content-Type: image/..., or application/octet-stream) or the
multipart field `file`. With an API key, every endpoint but /healthz, /readyz and the page
(static HTML, no data: it asks for the key) needs `Authorization: Bearer KEY`.
"""

from __future__ import annotations

import hmac
import logging
import os
import time

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from resnet_jax.serve import page
from resnet_jax.serve.service import RequestError, Service

PUBLIC = ("/healthz", "/readyz", "/")
RAW_TYPES = ("image/", "application/octet-stream")
DRAIN_BYTES = 64 * 2**20  # how much of an oversized body is read (and dropped) to answer 413


def create_app(service: Service, *, api_key: str | None = None,
               max_body_bytes: int = 20 * 2**20, lifespan=None) -> FastAPI:
    """The app around `service`. `lifespan`: an async context manager factory (app ->) that
    starts and drains the batching (the single-process server's); None on Ray Serve."""
    app = FastAPI(title="resnet-jax", docs_url=None, redoc_url=None, lifespan=lifespan)
    _answer_errors_as_json(app)
    _guard_and_measure(app, service, api_key)
    _model_routes(app, service, max_body_bytes)
    _operations_routes(app, service)
    return app


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _answer_errors_as_json(app: FastAPI) -> None:
    @app.exception_handler(RequestError)
    async def request_error(request, exc: RequestError):
        return _error(exc.status, exc.message)

    @app.exception_handler(RequestValidationError)
    async def invalid(request, exc: RequestValidationError):
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ()) if part != "query")
        return _error(422, f"{where}: {first.get('msg', 'invalid')}")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, exc: StarletteHTTPException):
        return _error(exc.status_code, str(exc.detail))


def _guard_and_measure(app: FastAPI, service: Service, api_key: str | None) -> None:
    """The API key's check, and every answer counted and timed by endpoint and status."""
    metrics = service.metrics

    @app.middleware("http")
    async def guard_and_measure(request: Request, call_next):
        started = time.perf_counter()
        metrics.received.inc()
        if api_key and request.url.path not in PUBLIC and not _authorized(request, api_key):
            response = _error(401, "this service needs its API key: send the header "
                                   "'Authorization: Bearer KEY'")
        else:
            try:
                response = await call_next(request)
            except Exception as bug:  # ours, not the client's: its traceback in the log
                logging.getLogger("resnet_jax.serve").exception("internal error")
                response = _error(500, f"internal error: {bug!r}")
        response.headers["X-Served-By"] = str(os.getpid())  # which process (replica)
        route = request.scope.get("route")
        endpoint = route.path if route is not None else "unmatched"
        metrics.requests.labels(endpoint, str(response.status_code)).inc()
        metrics.latency.labels(endpoint).observe(time.perf_counter() - started)
        return response


def _model_routes(app: FastAPI, service: Service, max_body_bytes: int) -> None:
    async def image(request: Request) -> bytes:
        return await _image_body(request, max_body_bytes)

    @app.post("/v1/classify")
    async def classify(request: Request, top_k: int = 5, threshold: float | None = None):
        return await service.classify(await image(request), top_k, threshold)

    @app.post("/v1/embed")
    async def embed(request: Request):
        return await service.embed(await image(request))

    @app.post("/v1/search")
    async def search(request: Request, top_k: int = 5):
        return await service.search(await image(request), top_k)

    @app.post("/v1/gallery", status_code=201)
    async def add(request: Request, name: str):
        return await service.add(name, await image(request))

    @app.get("/v1/gallery/{index}/image")
    async def gallery_image(index: int):
        path = service.gallery.image_file(index) if service.gallery is not None else None
        if path is None:
            raise RequestError(404, f"the gallery has no image {index}")
        return FileResponse(path)

    @app.get("/v1/model")
    async def model():
        return service.model_record()


def _operations_routes(app: FastAPI, service: Service) -> None:
    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz():
        if service.compile_error is not None:
            return _error(503, f"the model failed to compile: {service.compile_error!r}")
        if not service.ready:
            return JSONResponse({"ready": False, "batch_shapes": service.engine.batch_shapes},
                                status_code=503)
        return {"ready": True, "batch_shapes": service.engine.batch_shapes,
                "compilations_after_ready": service.compilations_after_ready()}

    @app.get("/metrics")
    async def prometheus():
        service.metrics.compilations_after_ready.set(service.compilations_after_ready())
        return Response(generate_latest(service.metrics.registry),
                        media_type=CONTENT_TYPE_LATEST)

    @app.get("/", response_class=HTMLResponse)
    async def index():
        return page.HTML


def _authorized(request: Request, api_key: str) -> bool:
    given = request.headers.get("authorization", "")
    scheme, _, token = given.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(),
                                                              api_key.encode())


async def _image_body(request: Request, limit: int) -> bytes:
    """The image a POST carries: its raw body, or its multipart field `file`. RequestError
    (413) past `limit` bytes, whether the client said the length or not."""
    content_type = request.headers.get("content-type", "").lower()
    multipart = content_type.startswith("multipart/form-data")
    if not multipart and not content_type.startswith(RAW_TYPES):
        raise RequestError(415, f"send the image as the body with Content-Type: image/... "
                                f"(or application/octet-stream), or as the multipart field "
                                f"'file'; got Content-Type {content_type or 'none'!r}")
    body, received = bytearray(), 0
    async for chunk in request.stream():
        received += len(chunk)
        if received <= limit:
            body += chunk
        elif received > limit + DRAIN_BYTES:
            break  # past what is worth reading to answer properly: the connection closes
    if received > limit:
        # read (and dropped) rather than refused unread: a client that sends its whole body
        # before reading the answer gets the 413, not a broken pipe
        raise RequestError(413, f"the body is over the limit of {limit:,} bytes "
                                f"(--max_body_mb)")
    if not multipart:
        return bytes(body)

    async def receive():  # the body read above, once more, for the form parser
        return {"type": "http.request", "body": bytes(body), "more_body": False}

    try:
        form = await Request(request.scope, receive).form(max_files=8, max_fields=8)
    except (StarletteHTTPException, ValueError) as error:
        raise RequestError(400, f"the multipart body cannot be read: "
                                f"{getattr(error, 'detail', error)}") from None
    unknown = sorted(set(form.keys()) - {"file"})
    if unknown:
        raise RequestError(400, f"unknown field {unknown[0]!r}: send the image as the field "
                                f"'file'")
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise RequestError(400, "the multipart body has no file field 'file'")
    return await upload.read()
