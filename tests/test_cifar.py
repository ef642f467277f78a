"""CIFAR-10 and CIFAR-100 from the binary version, offline: small files written here in the real format
(a label byte or two, then the red, green and blue 32x32 planes) are read back pixel for pixel, trained
and evaluated on by the CLI, and damaged files, or a folder holding only the pickled Python version,
are one line each. Nothing is ever unpickled."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnlab.cli import main
from cnnlab.data import load_data, make_batches
from cnnlab.data.cifar import CIFAR10
from cnnlab.errors import UserError

TRAIN_PER_FILE, TEST_RECORDS = 60, 50  # 300 training records in 5 files: 270 train / 30 val


def photos(n: int, first_id: int, seed: int) -> np.ndarray:
    """``n`` random RGB photos [N, 32, 32, 3] (height, width, channel: how an image viewer holds them),
    each carrying its id in the top-left pixel (red = id mod 256, green = id div 256)."""
    rgb = np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    ids = np.arange(first_id, first_id + n)
    rgb[:, 0, 0, 0], rgb[:, 0, 0, 1] = ids % 256, ids // 256
    return rgb


def records(rgb: np.ndarray, *labels: np.ndarray) -> bytes:
    """The binary version's records: the label bytes, then the red plane, the green plane, the blue plane."""
    planes = rgb.transpose(0, 3, 1, 2).reshape(len(rgb), 3 * 32 * 32)  # R plane, G plane, B plane, row by row
    columns = [np.asarray(label, np.uint8).reshape(-1, 1) for label in labels]
    return np.concatenate([*columns, planes], axis=1).tobytes()


def image_id(chw: torch.Tensor) -> int:
    return int(chw[0, 0, 0]) + 256 * int(chw[1, 0, 0])


def write_cifar10(folder: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``folder`` gets the six files of ``cifar-10-batches-bin``; returns what they hold, per source."""
    folder.mkdir(parents=True)
    rgb = photos(5 * TRAIN_PER_FILE + TEST_RECORDS, 0, seed=10)
    labels = np.arange(len(rgb)) % 10
    for k, name in enumerate(CIFAR10.train_files):
        part = slice(k * TRAIN_PER_FILE, (k + 1) * TRAIN_PER_FILE)
        (folder / name).write_bytes(records(rgb[part], labels[part]))
    test = slice(5 * TRAIN_PER_FILE, None)
    (folder / "test_batch.bin").write_bytes(records(rgb[test], labels[test]))
    (folder / "batches.meta.txt").write_text("\n".join(CIFAR10_NAMES) + "\n")
    return {"train": (rgb[: 5 * TRAIN_PER_FILE], labels[: 5 * TRAIN_PER_FILE]), "test": (rgb[test], labels[test])}


CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A --data-dir holding ``cifar-10-batches-bin/``, as the binary archive extracts."""
    root = tmp_path_factory.mktemp("cifar")
    return root, write_cifar10(root / "cifar-10-batches-bin")


def assert_exactly(split, rgb: np.ndarray, labels: np.ndarray) -> None:
    """Every image of ``split`` is the photo its id names, channel order included, with its label."""
    expected = torch.from_numpy(rgb).permute(0, 3, 1, 2)  # → [N, C, H, W]: red, green, blue
    ids = [image_id(img) for img in split.images]
    assert len(set(ids)) == len(ids)
    first = image_id(expected[0])
    assert split.images.dtype == torch.uint8 and split.images.shape[1:] == (3, 32, 32)
    assert torch.equal(split.images, expected[[i - first for i in ids]])
    assert split.labels.tolist() == [int(labels[i - first]) for i in ids]


def test_cifar10_reads_exactly_the_pixels_channels_and_labels(cifar_root):
    root, truth = cifar_root
    data = load_data("cifar10", root, ("train", "val", "test"), download=False)
    assert list(data.spec.classes) == CIFAR10_NAMES and (data.spec.channels, data.spec.size) == (3, 32)
    train, val, test = (data.splits[s] for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (270, 30, TEST_RECORDS)
    assert_exactly(test, *truth["test"])
    assert [image_id(img) for img in test.images] == list(range(300, 350))  # the file's order
    assert_exactly(train, *truth["train"])
    assert_exactly(val, *truth["train"])
    assert torch.bincount(val.labels).tolist() == [3] * 10  # stratified
    assert not {image_id(i) for i in train.images} & {image_id(i) for i in val.images}
    red_of_test_photo_7 = torch.from_numpy(truth["test"][0][7, :, :, 0])
    assert torch.equal(test.images[7, 0], red_of_test_photo_7)  # channel 0 is the red plane


def test_the_files_may_also_lie_directly_in_the_data_dir(tmp_path: Path):
    truth = write_cifar10(tmp_path / "flat")
    data = load_data("cifar10", tmp_path / "flat", ("test",), download=False)
    assert_exactly(data.splits["test"], *truth["test"])


def test_cifar100_fine_and_coarse_labels(tmp_path: Path):
    folder = tmp_path / "cifar-100-binary"
    folder.mkdir()
    rgb = photos(240, 0, seed=3)
    fine, coarse = np.arange(240) % 100, np.arange(240) % 20
    (folder / "train.bin").write_bytes(records(rgb[:200], coarse[:200], fine[:200]))  # coarse byte first
    (folder / "test.bin").write_bytes(records(rgb[200:], coarse[200:], fine[200:]))
    data = load_data("cifar100", tmp_path, ("test",), download=False)
    assert len(data.spec.classes) == 100 and data.spec.classes[:3] == ("apple", "aquarium_fish", "baby")
    assert_exactly(data.splits["test"], rgb[200:], fine[200:])
    coarse_data = load_data("cifar100-coarse", tmp_path, ("test", "train"), download=False)
    assert len(coarse_data.spec.classes) == 20 and coarse_data.spec.classes[0] == "aquatic_mammals"
    assert_exactly(coarse_data.splits["test"], rgb[200:], coarse[200:])
    assert len(coarse_data.splits["train"]) == 180


def one_bad_file(tmp_path: Path, damage) -> Path:
    write_cifar10(tmp_path / "cifar-10-batches-bin")
    path = tmp_path / "cifar-10-batches-bin" / "test_batch.bin"
    damage(path)
    return path


def oversized(path: Path) -> None:
    with open(path, "r+b") as f:  # 10,001 records: one more than a CIFAR-10 file holds (sparse, no disk used)
        f.truncate(10_001 * CIFAR10.record)


def wrong_label(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[3 * CIFAR10.record] = 10  # record 3's label byte
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda p: p.write_bytes(p.read_bytes()[:-1]), r"153,649 bytes is not a cifar-10-batches-bin file"),
        (lambda p: p.write_bytes(b""), r"0 bytes is not a cifar-10-batches-bin file"),
        (oversized, r"30,733,073 bytes is not .* up to 10,000 records of 3,073 bytes"),
        (wrong_label, r"record 3 has label 10 \(expected 0 to 9\)"),
    ],
    ids=["truncated", "empty", "oversized", "label-out-of-range"],
)
def test_a_damaged_file_is_one_line_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture, damage, message):
    path = one_bad_file(tmp_path, damage)
    with pytest.raises(UserError, match=message) as info:
        load_data("cifar10", tmp_path, ("test",), download=False)
    assert str(info.value).startswith(f"{path}: ") and "\n" not in str(info.value)


def test_a_truncated_training_file_stops_train_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture):
    write_cifar10(tmp_path / "cifar-10-batches-bin")
    path = tmp_path / "cifar-10-batches-bin" / "data_batch_4.bin"
    path.write_bytes(path.read_bytes()[:-100])
    argv = ["train", "--dataset", "cifar10", "--data-dir", str(tmp_path), "--max-steps", "1"]
    assert main([*argv, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: ") and "truncated or corrupt" in err and err.count("\n") == 1, err


class Unpickled:
    """Unpickling this object creates the file ``marker``: proof that something unpickled it."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def python_version_only(root: Path, marker: Path) -> Path:
    """``root/cifar-10-batches-py/`` as the Python version's archive extracts, each file a pickle."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in ["batches.meta", *(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        (folder / name).write_bytes(pickle.dumps(Unpickled(marker)))
    return folder


def test_a_folder_with_only_the_python_version_is_one_line_and_nothing_is_unpickled(
    tmp_path: Path, capsys: pytest.CaptureFixture
):
    root, marker = tmp_path / "data", tmp_path / "unpickled"
    python_version_only(root, marker)
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    for argv in (
        ["train", "--dataset", "cifar10", "--data-dir", str(root), "--out", str(tmp_path / "run")],
        ["datasets", "--data-dir", str(root)],
    ):
        code = main(argv)
        out, err = capsys.readouterr()
        if argv[0] == "train":  # online it would fetch the binary version; here the download fails
            assert code == 2 and err.count("\n") == 1, err
            assert "holds only the Python version of cifar10 (cifar-10-batches-py)" in err
            assert "cifar-10-binary.tar.gz" in err and "Traceback" not in err
            assert not (tmp_path / "run").exists()
        else:
            assert code == 0 and _row(out, "cifar10").split()[2:4] == ["10", "no"]
    assert not marker.exists()  # nothing was unpickled
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before  # the failed download left nothing


def _row(table: str, name: str) -> str:
    return next(line for line in table.splitlines() if line.split()[:1] == [name])


@pytest.mark.slow
def test_train_eval_and_datasets_offline_on_the_binary_files(cifar_root, tmp_path: Path, capsys):
    root, _ = cifar_root
    assert main(["datasets", "--data-dir", str(root)]) == 0
    assert _row(capsys.readouterr().out, "cifar10").split()[1:4] == ["3x32x32", "10", "yes"]

    run = tmp_path / "run"
    argv = ["train", "--dataset", "cifar10", "--data-dir", str(root), "--model", "tutorialnet"]
    argv += ["--max-steps", "4", "--batch-size", "32", "--augment", "2", "--out", str(run), "--quiet"]
    assert main(argv) == 0, capsys.readouterr().err
    capsys.readouterr()
    assert main(["eval", str(run), "--split", "test", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["dataset"], result["split"], result["n"]) == ("cifar10", "test", TEST_RECORDS)
    assert len(result["confusion_matrix"]) == 10 and sum(map(sum, result["confusion_matrix"])) == TEST_RECORDS


def test_augmentation_mirrors_and_shifts_cifar_images(cifar_root):
    """``--augment 1`` on cifar10: each prepared image is its photo shifted by at most one pixel,
    mirrored left-right in about half of the cases."""
    root, _ = cifar_root
    data = load_data("cifar10", root, ("test",), download=False)
    split = data.splits["test"]
    batches = make_batches(split, data, 50, torch.device("cpu"), shuffle=False, augment=1)
    (x, _), *_ = list(batches.batches())
    mean, std = torch.tensor(data.spec.mean).view(1, 3, 1, 1), torch.tensor(data.spec.std).view(1, 3, 1, 1)
    seen = ((x * std + mean) * 255).round().to(torch.uint8)
    mirrored = 0
    for original, augmented in zip(split.images, seen):
        matches = [flip for flip in (False, True) if _is_shift_of(augmented, original.flip(2) if flip else original)]
        assert matches, "an augmented image is not a shift of its photo or of its mirror image"
        mirrored += matches == [True]
    assert 10 <= mirrored <= 40


def _is_shift_of(augmented: torch.Tensor, original: torch.Tensor, most: int = 1) -> bool:
    """Whether ``augmented`` is ``original`` moved by up to ``most`` pixels each way, black filled."""
    padded = torch.nn.functional.pad(original, (most,) * 4)
    size = original.shape[-1]
    return any(
        torch.equal(padded[:, dy : dy + size, dx : dx + size], augmented)
        for dy in range(2 * most + 1)
        for dx in range(2 * most + 1)
    )


@pytest.fixture
def archive_server(tmp_path: Path):
    """A local HTTP server for ``tmp_path/served``: its base URL."""
    import functools
    import http.server
    import threading

    served = tmp_path / "served"
    served.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(served)))
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def publish_cifar10(tmp_path: Path, base: str, monkeypatch: pytest.MonkeyPatch, damaged: bool = False) -> dict:
    """Pack a small ``cifar-10-batches-bin/`` as the real archive is packed, serve it at ``base`` and
    point cnnlab's CIFAR-10 format at it (with its MD5, or a wrong one if ``damaged``)."""
    import dataclasses
    import hashlib
    import tarfile

    from cnnlab.data import cifar

    truth = write_cifar10(tmp_path / "packing" / "cifar-10-batches-bin")
    archive = tmp_path / "served" / "cifar-10-binary.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "packing" / "cifar-10-batches-bin", arcname="cifar-10-batches-bin")
    md5 = "0" * 32 if damaged else hashlib.md5(archive.read_bytes()).hexdigest()
    fmt = dataclasses.replace(CIFAR10, url=base + archive.name, md5=md5)
    monkeypatch.setitem(cifar.FORMATS, "cifar10", fmt)
    return truth


def test_a_missing_cifar10_is_downloaded_checked_and_extracted(tmp_path: Path, monkeypatch, archive_server):
    truth = publish_cifar10(tmp_path, archive_server, monkeypatch)
    data_dir = tmp_path / "data"
    data = load_data("cifar10", data_dir, ("test",))
    assert_exactly(data.splits["test"], *truth["test"])
    assert sorted(p.name for p in data_dir.iterdir()) == ["cifar-10-batches-bin"]  # the archive was removed


def test_a_cifar10_download_failing_its_checksum_leaves_nothing(tmp_path: Path, monkeypatch, archive_server):
    publish_cifar10(tmp_path, archive_server, monkeypatch, damaged=True)
    data_dir = tmp_path / "data" / "cifar"
    with pytest.raises(UserError, match=r"test files not found .* and the download failed \(RuntimeError"):
        load_data("cifar10", data_dir, ("test",))
    assert not (tmp_path / "data").exists()
