"""``cnnlab serve``: a draw-a-digit web page and a JSON prediction API for a trained run.

The app lives in :mod:`cnnlab.serve.app` (FastAPI), the model side in :mod:`cnnlab.serve.service`
and the MNIST-style preprocessing of drawings in :mod:`cnnlab.serve.preprocess`. FastAPI and uvicorn
are imported only when the command runs.
"""

from __future__ import annotations

import argparse
import ipaddress

from cnnlab.errors import UserError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("serve", help="a web page to draw digits on, and a JSON prediction API")
    p.add_argument("run", metavar="RUN_DIR|CHECKPOINT")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    p.add_argument("--max-upload-mb", type=float, default=2.0, help="largest request accepted, in MB (default 2)")
    p.add_argument(
        "--threads", type=int, default=1, help="torch threads per prediction (default 1: fastest for one small image)"
    )
    p.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    import torch
    import uvicorn

    from cnnlab.serve.app import create_app

    if not 0 <= args.port <= 65535:
        raise UserError(f"--port must be 0 to 65535 (got {args.port})")
    if not 0 < args.max_upload_mb <= 1024:  # also refuses nan and inf
        raise UserError(f"--max-upload-mb must be > 0 and at most 1024 (got {args.max_upload_mb})")
    if args.threads < 1:
        raise UserError(f"--threads must be ≥ 1 (got {args.threads})")
    torch.set_num_threads(args.threads)
    app = create_app(args.run, max_upload_bytes=int(args.max_upload_mb * 1024 * 1024))
    if not _is_loopback(args.host):
        print(f"warning: listening on {args.host}: anyone who can reach this machine can use the model")
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(f"serving {args.run} at http://{shown}:{args.port}/  (Ctrl-C to stop)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
