"""The web app: one page to draw on and a small JSON API, over a :class:`ModelService`.

Routes: ``GET /`` (the page), ``GET /static/*``, ``GET /favicon.ico``, ``GET /healthz``,
``GET /api/model``, ``GET /api/examples`` (validation images to click), ``POST /api/predict``, ``POST /api/explain`` (and ``/api/docs``, ``/openapi.json`` only
when asked for). An image reaches ``/api/predict`` and ``/api/explain`` as a multipart form field ``file``,
as JSON ``{"image": "<base64 PNG, data: URL prefix allowed>"}`` or as the raw bytes of the body;
``/api/explain`` also takes ``method`` (``?method=``, a JSON key or a form field; default: ``cnnlab
explain``'s) and adds ``method``, ``target``, ``attribution`` and ``overlay`` (a PNG data URL) to the answer. Bad input
of any kind is a 4xx with a one-line ``detail``: 413 past the upload limit, 401 without the token
(when there is one), 400 for the rest (a ``Host`` header not in ``allowed_hosts`` included).
At most ``max_concurrent`` predictions run at once; the others wait their turn.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from anyio import CapacityLimiter, to_thread
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware

from cnnlab.errors import UserError
from cnnlab.serve.service import MAX_PIXELS, ModelService

STATIC = Path(__file__).parent / "static"
DEFAULT_MAX_UPLOAD = 20 * 1024 * 1024  # a phone's photo (a 48 MP JPEG is about 12 MB)
DEFAULT_MAX_CONCURRENT = 2  # predictions at once; each holds at most one decoded image of MAX_PIXELS
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it (or its declared length) exceeds ``limit``."""
    declared = request.headers.get("content-length", "")
    hint = "; start serve with a larger --max-upload-mb to accept it"
    if declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"upload too large: {int(declared):,} bytes (at most {limit:,}){hint}")
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise HTTPException(413, f"upload too large: over {limit:,} bytes{hint}")
        chunks.append(chunk)
    return b"".join(chunks)


async def image_bytes(request: Request, body: bytes) -> bytes:
    """The image inside a request body: a multipart ``file`` field, JSON ``image`` or the raw body."""
    if not body:
        raise HTTPException(400, "empty request: send an image as form field 'file' or JSON {\"image\": base64}")
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        return await _form_file(request, body)
    if kind == "application/json":
        return _json_image(body)
    return body


async def _form(request: Request, body: bytes) -> Any:
    async def replay() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        return await Request(request.scope, replay).form()
    except Exception as exc:  # malformed multipart: the parser's own exception types vary
        raise HTTPException(400, f"not a readable multipart form ({type(exc).__name__})") from None


async def _form_file(request: Request, body: bytes) -> bytes:
    form = await _form(request, body)
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        raise HTTPException(400, "no file in the form: send the image as form field 'file'")
    return await upload.read()


def _json_payload(body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise HTTPException(400, "the body is not valid JSON") from None
    except RecursionError:
        raise HTTPException(400, "the JSON is nested too deeply") from None
    if not isinstance(payload, dict):
        raise HTTPException(400, 'JSON must be an object {"image": "<base64 PNG>"}')
    return payload


def _json_image(body: bytes) -> bytes:
    payload = _json_payload(body)
    if "image" not in payload:
        raise HTTPException(400, 'the JSON object has no "image" key: send {"image": "<base64 PNG>"}')
    text = payload["image"]
    if not isinstance(text, str):
        raise HTTPException(400, '"image" must be a string of base64 (a PNG, data: URL prefix allowed)')
    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise HTTPException(400, "'image' is not valid base64") from None


async def explain_method(request: Request, body: bytes) -> str | None:
    """The ``method`` of an ``/api/explain`` request: the query parameter ``?method=``, else the JSON key
    or multipart form field ``method``; None (the default method) when there is none. One that is not
    a known method is a 400."""
    from cnnlab.explain.methods import METHODS

    method: Any = request.query_params.get("method")
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if method is None and kind == "application/json":
        method = _json_payload(body).get("method")
    elif method is None and kind == "multipart/form-data":
        method = (await _form(request, body)).get("method")
    if method is not None and method not in METHODS:
        shown = method if isinstance(method, str) else type(method).__name__
        raise HTTPException(400, f"unknown method {shown[:40]!r}; choose one of: {', '.join(METHODS)}")
    return method


def bearer_token_check(token: str | None):
    """A FastAPI dependency refusing (401) a request without ``Authorization: Bearer <token>``."""

    def check(request: Request) -> None:
        if token is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
            raise HTTPException(
                401, "this server needs a token: send 'Authorization: Bearer TOKEN'", {"WWW-Authenticate": "Bearer"}
            )

    return check


async def refuse(request: Request, exc: Exception) -> Any:
    """Answer a refusal (4xx) after clearing the local variables of the frames it passed through, and of
    the exceptions it chains: otherwise the request body (up to the upload limit) stays alive in cyclic
    garbage until a full collection, and a flood of refused uploads grows the server's memory."""
    seen: Any = exc
    while seen is not None:
        traceback.clear_frames(seen.__traceback__)
        seen = seen.__context__
    return await http_exception_handler(request, exc)  # type: ignore[arg-type]


def create_app(
    run_or_checkpoint: str | Path,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD,
    *,
    max_pixels: int = MAX_PIXELS,
    max_concurrent: int = DEFAULT_MAX_CONCURRENT,
    allowed_hosts: Sequence[str] | None = None,
    token: str | None = None,
    api_docs: bool = False,
    backend: str = "torch",
    onnx: str | Path | None = None,
    tta: bool = False,
) -> FastAPI:
    """The FastAPI app serving the model in ``run_or_checkpoint`` (loaded once, here).

    ``allowed_hosts``: the only ``Host`` headers answered (None: any); ``token``: required as a bearer
    token by ``/api/*``; ``api_docs``: serve ``/api/docs`` and ``/openapi.json`` (refused with a token: the
    docs page loads its script from a CDN, on the origin where the page keeps the token); ``backend``, ``onnx``:
    what computes the probabilities, ``tta``: average each answer with the mirror image's (see
    :func:`cnnlab.inference.load`)."""
    if api_docs and token is not None:
        raise UserError(
            "--api-docs cannot be used with --token (or CNNLAB_TOKEN): the docs page loads its script from a CDN "
            "on the origin where the page keeps the token; read the docs from a server without a token"
        )
    service = ModelService(run_or_checkpoint, max_pixels=max_pixels, backend=backend, onnx=onnx, tta=tta)
    app = FastAPI(
        title="cnnlab",
        docs_url="/api/docs" if api_docs else None,
        redoc_url=None,
        openapi_url="/openapi.json" if api_docs else None,
    )
    app.state.service = service
    if allowed_hosts is not None:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    limiter = CapacityLimiter(max_concurrent)
    authorised = Depends(bearer_token_check(token))
    app.add_exception_handler(StarletteHTTPException, refuse)

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> FileResponse:
        return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml")

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/api/model", dependencies=[authorised])
    def model() -> dict[str, Any]:
        return service.info()

    @app.get("/api/examples", dependencies=[authorised])
    async def examples() -> list[dict[str, str]]:
        return await to_thread.run_sync(service.examples, limiter=limiter)

    @app.post("/api/predict", dependencies=[authorised])
    async def predict(request: Request) -> JSONResponse:
        data = await image_bytes(request, await read_body(request, max_upload_bytes))
        try:
            return JSONResponse(await to_thread.run_sync(service.predict, data, limiter=limiter))
        except UserError as exc:
            raise HTTPException(400, str(exc)) from None

    @app.post("/api/explain", dependencies=[authorised])
    async def explain(request: Request) -> JSONResponse:
        body = await read_body(request, max_upload_bytes)
        data = await image_bytes(request, body)
        method = await explain_method(request, body)
        try:
            return JSONResponse(await to_thread.run_sync(service.explain, data, method, limiter=limiter))
        except UserError as exc:
            raise HTTPException(400, str(exc)) from None

    return app
