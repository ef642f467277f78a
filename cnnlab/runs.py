"""The run directory: everything one training run leaves behind.

``config.json`` (every option, class names, versions, and ``status``: running, finished,
interrupted, failed, or pruned by a sweep), ``metrics.csv`` (one row per epoch), ``last.pt`` and
``best.pt``, ``curves.png`` and ``confusion.png``. A run that did not finish says so in ``config.json``.

The run's lifecycle is written here for both engines (``cnnlab train`` and ``cnnlab backprop train``):
:func:`start_run` → ``running``; then :func:`finish_run` → ``finished``, or :func:`fail_run` →
``interrupted`` (Ctrl-C: its checkpoints can be resumed) or ``failed`` (with the ``error``).
"""

from __future__ import annotations

import csv
import io
import json
import shlex
import time
from pathlib import Path
from typing import Any

from cnnlab.atomic import check_writable, write_atomic
from cnnlab.errors import Diverged, Interrupted, UserError

RUNNING, FINISHED, INTERRUPTED, FAILED, PRUNED = "running", "finished", "interrupted", "failed", "pruned"
METRIC_COLUMNS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "seconds"]


def default_run_dir(model: str, dataset: str) -> Path:
    """``runs/<YYYYmmdd-HHMMSS>-<model>-<dataset>`` (made unique with a suffix if needed)."""
    base = Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-{model}-{file_name_part(dataset)}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def file_name_part(dataset: str) -> str:
    """A dataset name as part of a file name: ``folder:~/photos/cats`` → ``cats``, odd characters → ``_``."""
    name = Path(dataset.split(":", 1)[-1]).name or dataset.split(":", 1)[0]
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def create_run_dir(path: str | Path, overwrite: bool = False) -> Path:
    """Make ``path`` and prove it is writable before any training starts."""
    path = Path(path)
    refuse_existing_run(path, overwrite)
    try:
        path.mkdir(parents=True, exist_ok=True)
        check_writable(path)
    except OSError as exc:
        raise UserError(f"--out {path}: cannot write there ({exc.strerror or exc})") from None
    return path


def refuse_existing_run(path: str | Path, overwrite: bool = False) -> None:
    """Refuse (a UserError) a run directory ``path`` that already holds a run, unless ``overwrite``."""
    path = Path(path)
    if (path / "config.json").exists() and not overwrite:
        raise UserError(
            f"{path} already holds a run; continue it (--resume {shlex.quote(str(path))}; resume= in Python), "
            "choose another --out (out=), or pass --overwrite (overwrite=True)"
        )


def write_text_atomic(path: Path, text: str) -> None:
    """Replace ``path`` by ``text`` (UTF-8) with :func:`cnnlab.atomic.write_atomic`."""
    write_atomic(path, text.encode("utf-8"))


def write_config(run_dir: Path, config: dict[str, Any], status: str, **extra: Any) -> None:
    """Write ``config.json``: the options, ``status`` and anything in ``extra``."""
    from cnnlab.env import versions

    payload = {"status": status, **extra, "config": config, "versions": versions()}
    write_text_atomic(run_dir / "config.json", json.dumps(payload, indent=2) + "\n")


def read_config(run_dir: Path) -> dict[str, Any]:
    """The run's ``config.json`` as a dict; missing, unreadable, nested too deeply or not an object: a UserError."""
    path = Path(run_dir) / "config.json"
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{run_dir}: no config.json (is it a cnnlab run directory?)") from None
    except (OSError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise UserError(f"{path}: unreadable ({exc})") from None
    except RecursionError:
        raise UserError(f"{path}: unreadable (nested too deeply)") from None
    if not isinstance(payload, dict):
        raise UserError(f"{path}: unreadable (not a JSON object)")
    return payload


def set_status(run_dir: Path, status: str, **extra: Any) -> None:
    """Rewrite ``config.json`` with ``status`` and the fields in ``extra``."""
    payload = read_config(run_dir)
    payload.update(status=status, **extra)
    write_text_atomic(run_dir / "config.json", json.dumps(payload, indent=2) + "\n")


def start_run(run_dir: Path, config: dict[str, Any], **extra: Any) -> None:
    """A run begins: ``config.json`` with its options (``config``), ``extra`` and status ``running``."""
    write_config(run_dir, config, RUNNING, **extra)


def finish_run(run_dir: Path, result: dict[str, Any]) -> None:
    """A run ended as planned: status ``finished``, with its ``result`` (accuracies, steps, seconds)."""
    set_status(run_dir, FINISHED, result=result)


def fail_run(run_dir: Path, exc: BaseException) -> str:
    """Record why a run stopped early and return its status: ``interrupted`` for Ctrl-C
    (:class:`~cnnlab.errors.Interrupted` after a checkpoint, or ``KeyboardInterrupt`` from a second Ctrl-C,
    which keeps the last checkpoint; the checkpoints say how far it got),
    ``failed`` for anything else, with the ``error`` (a :class:`~cnnlab.errors.Diverged` run's message
    as is, else the exception's type and message)."""
    if isinstance(exc, (Interrupted, KeyboardInterrupt)):
        set_status(run_dir, INTERRUPTED)
        return INTERRUPTED
    mark_failed(run_dir, str(exc) if isinstance(exc, Diverged) else f"{type(exc).__name__}: {exc}")
    return FAILED


def mark_failed(run_dir: Path, error: str) -> None:
    """Status ``failed``, with ``error`` saying why."""
    set_status(run_dir, FAILED, error=error)


def prune_run(run_dir: Path, epoch: int) -> None:
    """A sweep stopped the run after ``epoch``, its validation accuracy below the other trials': status ``pruned``."""
    set_status(run_dir, PRUNED, pruned_at_epoch=epoch)


def is_running(run_dir: Path) -> bool:
    """Whether ``config.json`` still says ``running`` (the run is training, or its process was killed)."""
    return read_config(run_dir).get("status") == RUNNING


def write_metrics(run_dir: Path, history: list[dict[str, Any]]) -> None:
    """Rewrite ``metrics.csv`` from the whole history (so a resumed run never duplicates rows)."""
    columns = list(METRIC_COLUMNS)
    for row in history:
        columns += [key for key in row if key not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: _fmt(v) for k, v in row.items()})
    write_text_atomic(run_dir / "metrics.csv", buffer.getvalue())


def read_metrics(run_dir: Path) -> list[dict[str, float]]:
    with open(Path(run_dir) / "metrics.csv", encoding="utf-8") as f:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]


def _fmt(value: Any) -> Any:
    return f"{value:.6g}" if isinstance(value, float) else value
