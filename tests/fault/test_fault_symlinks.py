"""Writes follow no planted links. Every file cnnlab writes goes through ``cnnlab.atomic``: a temporary
file made by ``mkstemp`` (``O_CREAT | O_EXCL | O_NOFOLLOW``) beside the target, then ``os.replace``.
A symlink planted where the temporary file or the ``--out`` probe used to be (a predictable name),
where the temporary file will be (a forced name collision), or at the target itself never changes
the file it points to."""

from __future__ import annotations

import itertools
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from cnnlab.atomic import temporary_suffix, write_atomic
from cnnlab.checkpoint import save_atomic
from cnnlab.data import cache
from cnnlab.runs import create_run_dir, write_text_atomic

PRECIOUS = b"the victim's own bytes\n"


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    path = tmp_path / "elsewhere" / "victim.txt"
    path.parent.mkdir()
    path.write_bytes(PRECIOUS)
    return path


def plant(link: Path, victim: Path) -> Path:
    link.symlink_to(victim)
    return link


def split_tensors() -> dict[str, torch.Tensor]:
    return {"images": torch.arange(2 * 3 * 4 * 4, dtype=torch.uint8).view(2, 3, 4, 4), "labels": torch.tensor([1, 0])}


def write_checkpoint(folder: Path) -> Path:
    save_atomic({"weights": torch.arange(4.0)}, folder / "last.pt")
    return folder / "last.pt"


def write_config(folder: Path) -> Path:
    write_text_atomic(folder / "config.json", json.dumps({"status": "running"}))
    return folder / "config.json"


def write_cache_entry(folder: Path) -> Path:
    source = folder / "source.bin"
    if not source.exists():  # the same source (size, mtime) gives the same entry name
        source.write_bytes(b"source")
    cache.cached_tensors("demo", [source], split_tensors)
    (entry,) = folder.glob("demo-*.pt")
    return entry


WRITERS: dict[str, Callable[[Path], Path]] = {
    "checkpoint": write_checkpoint,
    "config.json": write_config,
    "cache entry": write_cache_entry,
}


def check_written(target: Path) -> None:
    """The target is a real file with the writer's content."""
    assert target.is_file() and not target.is_symlink()
    if target.suffix == ".json":
        assert json.loads(target.read_text()) == {"status": "running"}
    elif target.name == "last.pt":
        assert torch.equal(torch.load(target, weights_only=True)["weights"], torch.arange(4.0))
    else:
        entry = torch.load(target, weights_only=True)
        assert torch.equal(entry["tensors"]["images"], split_tensors()["images"])


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The folder every writer writes into (the cache's folder too)."""
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setenv("CNNLAB_CACHE_DIR", str(out))
    return out


@pytest.mark.parametrize("writer", list(WRITERS))
def test_links_at_the_old_predictable_temporary_names_are_not_followed(folder: Path, victim: Path, writer: str):
    target = WRITERS[writer](folder)  # learn the target's name
    target.unlink()
    pid = os.getpid()
    plant(folder / f".{target.name}.tmp{pid}", victim)  # what the earlier checkpoint and text writers opened
    plant(target.with_suffix(f".tmp{pid}"), victim)  # what the earlier cache writer opened
    WRITERS[writer](folder)  # written again, with the links in place
    check_written(target)
    assert victim.read_bytes() == PRECIOUS


@pytest.mark.parametrize("writer", list(WRITERS))
def test_a_link_at_the_very_name_mkstemp_draws_is_skipped(
    folder: Path, victim: Path, writer: str, monkeypatch: pytest.MonkeyPatch
):
    """Force mkstemp's first candidate name onto a planted link: O_EXCL refuses it, the next is used."""
    target = WRITERS[writer](folder)  # learn the target's name
    target.unlink()
    link = plant(folder / f".planted{temporary_suffix(target.name)}", victim)
    names = itertools.chain(["planted", "free0001"], tempfile._RandomNameSequence())
    monkeypatch.setattr(tempfile, "_get_candidate_names", lambda: names)
    WRITERS[writer](folder)
    check_written(target)
    assert victim.read_bytes() == PRECIOUS and link.is_symlink()
    assert not (folder / f".free0001{temporary_suffix(target.name)}").exists()  # renamed onto the target


@pytest.mark.parametrize("writer", ["checkpoint", "config.json"])
def test_a_link_at_the_target_is_replaced_not_written_through(folder: Path, victim: Path, writer: str):
    name = {"checkpoint": "last.pt", "config.json": "config.json"}[writer]
    plant(folder / name, victim)
    target = WRITERS[writer](folder)
    check_written(target)
    assert victim.read_bytes() == PRECIOUS


def test_the_out_probe_follows_no_link(tmp_path: Path, victim: Path):
    """``create_run_dir`` proves the folder writable with a probe file mkstemp makes, never ``.write-test``."""
    out = tmp_path / "run"
    out.mkdir()
    link = plant(out / ".write-test", victim)
    assert create_run_dir(out) == out
    assert victim.read_bytes() == PRECIOUS and link.is_symlink()
    assert [p.name for p in out.iterdir()] == [".write-test"]  # the probe is gone, the link untouched


def test_a_failed_write_removes_its_temporary_file(tmp_path: Path):
    def fail(f) -> None:
        f.write(b"half")
        raise RuntimeError("the writer broke")

    target = tmp_path / "file.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="the writer broke"):
        write_atomic(target, fail)
    assert [p.name for p in tmp_path.iterdir()] == ["file.bin"] and target.read_bytes() == b"old"
