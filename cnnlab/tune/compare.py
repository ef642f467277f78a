"""Compare runs: one row per run directory (from its ``config.json`` and ``metrics.csv``), and
their validation curves in one picture."""

from __future__ import annotations

import csv
import datetime
import sys
from pathlib import Path
from typing import Any

from cnnlab.errors import UserError
from cnnlab.runs import read_config, read_metrics
from cnnlab.text import safe


def find_runs(root: str | Path) -> list[Path]:
    """Every run directory (a folder with a ``config.json``) under ``root``, ``root`` included, sorted."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: no such folder (give the folder that holds your runs, e.g. runs/)")
    return sorted(path.parent for path in root.rglob("config.json") if path.is_file())


def pick_runs(root: str | Path, names: list[str]) -> list[Path]:
    """The run directories ``names`` name: paths, or names relative to ``root``."""
    chosen = []
    for name in names:
        candidates = [Path(name), Path(root) / name]
        found = next((c for c in candidates if (c / "config.json").is_file()), None)
        if found is None:
            raise UserError(f"{name}: not a run directory (no config.json there or in {Path(root) / name})")
        chosen.append(found)
    return chosen


def describe_run(run_dir: Path, root: str | Path) -> dict[str, Any]:
    """One row: name (relative to ``root``), model, dataset, epochs done, best and final validation
    accuracy, status (``unreadable`` for a damaged ``config.json``), training seconds (sum of the
    epochs') and date (``started`` in ``config.json``, else when ``config.json`` last changed)."""
    try:
        payload = read_config(run_dir)
    except UserError:  # a damaged config.json: still listed, so the damage is seen
        payload = {"status": "unreadable"}
    options = payload.get("config") or {}
    rows = _metrics(run_dir)
    accuracies = [row["val_acc"] for row in rows if "val_acc" in row]
    try:
        name = run_dir.resolve().relative_to(Path(root).resolve()).as_posix()
    except ValueError:  # chosen by a path outside root
        name = run_dir.as_posix()
    date = payload.get("started") or datetime.datetime.fromtimestamp((run_dir / "config.json").stat().st_mtime)
    return {
        "name": name if name != "." else run_dir.resolve().name,
        "path": str(run_dir),
        "model": options.get("model"),
        "dataset": options.get("dataset"),
        "epochs": len(rows),
        "best_val_acc": max(accuracies) if accuracies else None,
        "final_val_acc": accuracies[-1] if accuracies else None,
        "status": payload.get("status", "unknown"),
        "seconds": sum(row.get("seconds", 0.0) for row in rows),
        "date": date if isinstance(date, str) else date.isoformat(sep=" ", timespec="seconds"),
    }


def list_runs(root: str | Path = "runs", names: list[str] | None = None) -> list[dict[str, Any]]:
    """:func:`describe_run` for the runs ``names`` (default: every run under ``root``); a run whose
    ``metrics.csv`` is unreadable is left out with a warning on stderr."""
    run_dirs = pick_runs(root, names) if names else find_runs(root)
    rows = []
    for run_dir in run_dirs:
        try:
            rows.append(describe_run(run_dir, root))
        except UserError as exc:
            print(f"warning: skipped {safe(str(exc))}", file=sys.stderr)
    return rows


def _metrics(run_dir: Path) -> list[dict[str, float]]:
    """The rows of ``metrics.csv``; none for a run stopped before its first epoch."""
    if not (run_dir / "metrics.csv").is_file():
        return []
    try:
        return read_metrics(run_dir)
    except (OSError, ValueError, TypeError, csv.Error) as exc:  # TypeError: a row with more or fewer fields
        raise UserError(f"{run_dir / 'metrics.csv'}: unreadable ({exc})") from None


def format_runs(rows: list[dict[str, Any]]) -> str:
    """The rows as an aligned text table."""
    header = ("name", "model", "dataset", "epochs", "best val", "final val", "status", "time", "date")
    table = [header] + [
        (
            r["name"],
            str(r["model"]),
            str(r["dataset"]),
            str(r["epochs"]),
            _percent(r["best_val_acc"]),
            _percent(r["final_val_acc"]),
            r["status"],
            f"{r['seconds']:.1f}s",
            r["date"],
        )  # fmt: skip
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    numeric = {3, 4, 5, 7}
    lines = [
        "  ".join(cell.rjust(w) if i in numeric else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths)))
        for row in table
    ]
    return "\n".join(line.rstrip() for line in lines)


def plot_runs(rows: list[dict[str, Any]], path: str | Path) -> Path:
    """Validation loss and accuracy per epoch of every run in ``rows``, overlaid."""
    from cnnlab import plots  # matplotlib loads only when a picture is drawn

    fig, (ax_loss, ax_acc) = plots.plt.subplots(1, 2, figsize=(11, 4.2))
    for row in rows:
        history = [r for r in _metrics(Path(row["path"])) if "val_acc" in r]
        if not history:
            continue
        epochs = [r["epoch"] for r in history]
        ax_loss.plot(epochs, [r["val_loss"] for r in history], "o-", markersize=3, label=row["name"])
        ax_acc.plot(epochs, [100 * r["val_acc"] for r in history], "o-", markersize=3, label=row["name"])
    ax_loss.set(xlabel="epoch", ylabel="validation loss", title="validation loss")
    ax_acc.set(xlabel="epoch", ylabel="validation accuracy (%)", title="validation accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    if len(rows) <= 12:
        ax_acc.legend(fontsize=8)
    return plots._save(fig, path)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"
