"""The web app: one page to draw on and a small JSON API, over a :class:`ModelService`.

Routes: ``GET /`` (the page), ``GET /static/*``, ``GET /healthz``, ``GET /api/model``,
``POST /api/predict``. An image reaches ``/api/predict`` as a multipart form field ``file``, as JSON
``{"image": "<base64 PNG, data: URL prefix allowed>"}`` or as the raw bytes of the body. Bad input
of any kind is a 4xx with a one-line ``detail``: 413 past the upload limit, 400 for the rest.
"""

from __future__ import annotations

import base64
import binascii
import json
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from cnnlab.errors import UserError
from cnnlab.serve.service import ModelService

STATIC = Path(__file__).parent / "static"
DEFAULT_MAX_UPLOAD = 2 * 1024 * 1024


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it (or its declared length) exceeds ``limit``."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"upload too large: {int(declared):,} bytes (at most {limit:,})")
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise HTTPException(413, f"upload too large: over {limit:,} bytes")
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


async def _form_file(request: Request, body: bytes) -> bytes:
    async def replay() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form()
    except Exception as exc:  # malformed multipart: the parser's own exception types vary
        raise HTTPException(400, f"not a readable multipart form ({type(exc).__name__})") from None
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        raise HTTPException(400, "no file in the form: send the image as form field 'file'")
    return await upload.read()


def _json_image(body: bytes) -> bytes:
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise HTTPException(400, "the body is not valid JSON") from None
    text = payload.get("image") if isinstance(payload, dict) else None
    if not isinstance(text, str):
        raise HTTPException(400, 'JSON must be an object {"image": "<base64 PNG>"}')
    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise HTTPException(400, "'image' is not valid base64") from None


def create_app(run_or_checkpoint: str | Path, max_upload_bytes: int = DEFAULT_MAX_UPLOAD) -> FastAPI:
    """The FastAPI app serving the model in ``run_or_checkpoint`` (loaded once, here)."""
    service = ModelService(run_or_checkpoint)
    app = FastAPI(title="cnnlab", docs_url="/api/docs", redoc_url=None)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/api/model")
    def model() -> dict[str, Any]:
        return service.info()

    @app.post("/api/predict")
    async def predict(request: Request) -> JSONResponse:
        data = await image_bytes(request, await read_body(request, max_upload_bytes))
        try:
            return JSONResponse(await run_in_threadpool(service.predict, data))
        except UserError as exc:
            raise HTTPException(400, str(exc)) from None

    return app
