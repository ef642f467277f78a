"""The ``cnnlab serve`` command: check the options and the address, then run the app (see :mod:`cnnlab.serve`)."""

from __future__ import annotations

import argparse
import errno
import ipaddress
import os
import socket

from cnnlab.errors import UserError
from cnnlab.flags import TTA_HELP, add_backend_flags

TOKEN_ENV = "CNNLAB_TOKEN"
TIMEOUT_KEEP_ALIVE = 5  # seconds an idle connection stays open
LIMIT_CONCURRENCY = 32  # open connections at most; more get 503


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("serve", help="a web page for the model (draw, upload, webcam) and a JSON prediction API")
    p.add_argument("run", metavar="RUN_DIR|CHECKPOINT")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    p.add_argument(
        "--max-upload-mb", type=float, default=20.0,
        help="largest request accepted, in MiB (default 20: a phone's photo); larger ones get 413",
    )  # fmt: skip
    p.add_argument(
        "--threads", type=int, default=1, help="torch threads per prediction (default 1: fastest for one small image)"
    )
    p.add_argument(
        "--max-pixels", type=int, default=4096 * 4096,
        help="most pixels decoded per image (default 16777216 = 4096x4096): a larger JPEG is decoded at 1/2, "
        "1/4 or 1/8 scale to fit, other formats larger are refused (400); one image decodes to at most 4 bytes "
        "per pixel",
    )  # fmt: skip
    p.add_argument(
        "--max-concurrent", type=int, default=2,
        help="predictions computed at once, the others wait (default 2); bounds the memory in use",
    )  # fmt: skip
    p.add_argument(
        "--token", default=os.environ.get(TOKEN_ENV),
        help=f"require 'Authorization: Bearer TOKEN' on /api/* (default: ${TOKEN_ENV} if set); the page "
        "takes it from its address: http://HOST:PORT/#token=TOKEN",
    )  # fmt: skip
    p.add_argument(
        "--api-docs", action="store_true",
        help="also serve the API's docs at /api/docs and /openapi.json (not with --token: the docs page loads "
        "its script from a CDN)",
    )  # fmt: skip
    add_backend_flags(p)
    p.add_argument("--tta", action="store_true", help=TTA_HELP)
    p.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    import torch
    import uvicorn

    from cnnlab.serve.app import LOOPBACK_HOSTS, create_app

    _check_arguments(args)
    sock = bind(args.host, args.port)  # before anything is printed: a busy port or a bad host is one line
    try:
        torch.set_num_threads(args.threads)
        loopback = _is_loopback(args.host)
        app = create_app(
            args.run, max_upload_bytes=int(args.max_upload_mb * 1024 * 1024), max_pixels=args.max_pixels,
            max_concurrent=args.max_concurrent, allowed_hosts=LOOPBACK_HOSTS if loopback else None,
            token=args.token or None, api_docs=args.api_docs, backend=args.backend, onnx=args.onnx, tta=args.tta,
        )  # fmt: skip
        if not loopback and not args.token:
            print(
                f"warning: listening on {args.host} without --token: anyone who can reach this machine can use "
                f"the model; set --token (or {TOKEN_ENV}) and put a reverse proxy in front"
            )
        port = sock.getsockname()[1]
        shown = f"[{args.host}]" if ":" in args.host else args.host
        print(f"serving {args.run} at http://{shown}:{port}/  (Ctrl-C to stop)", flush=True)
        config = uvicorn.Config(
            app, log_level="warning", timeout_keep_alive=TIMEOUT_KEEP_ALIVE, limit_concurrency=LIMIT_CONCURRENCY
        )
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
    return 0


def _check_arguments(args: argparse.Namespace) -> None:
    if not 0 <= args.port <= 65535:
        raise UserError(f"--port must be 0 to 65535 (got {args.port})")
    if not 0 < args.max_upload_mb <= 1024:  # also refuses nan and inf
        raise UserError(f"--max-upload-mb must be > 0 and at most 1024 (got {args.max_upload_mb})")
    if args.threads < 1:
        raise UserError(f"--threads must be ≥ 1 (got {args.threads})")
    if not 1 <= args.max_pixels <= 8192 * 8192:
        raise UserError(f"--max-pixels must be 1 to {8192 * 8192:,} (got {args.max_pixels})")
    if args.max_concurrent < 1:
        raise UserError(f"--max-concurrent must be ≥ 1 (got {args.max_concurrent})")


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (as uvicorn would make it); a host that is not an address of
    this machine, or a port in use or not allowed, is a UserError."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise UserError(f"--host {host}: not an address this machine can listen on ({reason})") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        reason = (
            "in use (pick another --port, or 0 for any free one)" if exc.errno == errno.EADDRINUSE else exc.strerror
        )
        raise UserError(f"cannot listen on {host}:{port}: {reason}") from None
    sock.set_inheritable(True)
    return sock


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
