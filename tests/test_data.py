from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_image_folder, write_idx

from cnnlab.data import epoch_order, load_data, make_batches, normalize
from cnnlab.data.idx import parse_idx, read_idx
from cnnlab.errors import UserError


def test_mnist5k_is_a_stratified_deterministic_4000_1000_split(mnist5k):
    train, val = mnist5k.splits["train"], mnist5k.splits["val"]
    assert train.images.shape == (4000, 1, 28, 28) and val.images.shape == (1000, 1, 28, 28)
    assert train.images.dtype == torch.uint8 and int(train.images.max()) > 200
    assert torch.bincount(val.labels).tolist() == [100] * 10
    again = load_data("mnist5k")
    assert torch.equal(again.splits["val"].images, val.images)


def test_digits_are_8x8_scaled_to_bytes():
    data = load_data("digits")
    assert data.spec.size == 8 and data.splits["train"].images.shape[1:] == (1, 8, 8)
    assert len(data.splits["train"]) + len(data.splits["val"]) == 1797
    assert int(data.splits["train"].images.max()) == 255


def test_normalize_matches_the_formula(mnist5k):
    images = mnist5k.splits["val"].images[:8]
    x = normalize(images, (0.1307,), (0.3081,))
    expected = (images.float() / 255 - 0.1307) / 0.3081
    assert torch.allclose(x, expected)


def test_idx_round_trip(tmp_path: Path):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    for compress in (False, True):
        path = write_idx(tmp_path / f"a{compress}", array, compress)
        assert np.array_equal(read_idx(path), array)


@pytest.mark.parametrize(
    "raw, message",
    [
        (b"\x00\x00", "not an IDX file"),
        (b"\x01\x00\x08\x01\x00\x00\x00\x01\x05", "bad magic"),
        (b"\x00\x00\x0d\x01\x00\x00\x00\x01\x05", "unsupported IDX data type"),
        (b"\x00\x00\x08\x03\x00\x00\x00\x02", "truncated IDX header"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x05\x01\x02", "truncated or corrupt"),
        (b"\x00\x00\x08\x03\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", "implausible shape"),
    ],
)
def test_corrupt_idx_is_a_user_error(raw: bytes, message: str):
    with pytest.raises(UserError, match=message):
        parse_idx(raw, "bad-file")


def test_truncated_gzip_names_the_file(tmp_path: Path):
    good = gzip.compress(bytes([0, 0, 8, 1, 0, 0, 0, 100]) + bytes(100))
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(UserError, match="train-labels-idx1-ubyte.gz.*corrupt or truncated gzip"):
        read_idx(path)


def test_mnist_test_split_reads_only_the_t10k_files(idx_test_dir: Path, mnist5k):
    data = load_data("mnist", idx_test_dir, ("test",), download=False)
    assert torch.equal(data.splits["test"].images, mnist5k.splits["val"].images)
    with pytest.raises(UserError, match="train files not found"):
        load_data("mnist", idx_test_dir, ("train",), download=False)


def test_torchvision_raw_layout_and_label_count_mismatch(tmp_path: Path):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    write_idx(raw / "t10k-images-idx3-ubyte", np.zeros((5, 28, 28), np.uint8))
    write_idx(raw / "t10k-labels-idx1-ubyte", np.zeros(5, np.uint8))
    data = load_data("fashion-mnist", tmp_path, ("test",), download=False)
    assert len(data.splits["test"]) == 5 and data.spec.classes[0] == "T-shirt/top"
    write_idx(raw / "t10k-labels-idx1-ubyte", np.zeros(4, np.uint8))
    with pytest.raises(UserError, match="5 images but t10k-labels-idx1-ubyte has 4 labels"):
        load_data("fashion-mnist", tmp_path, ("test",), download=False)


def test_missing_dataset_says_how_to_get_it(tmp_path: Path):
    with pytest.raises(UserError, match="run once online.*--data-dir"):
        load_data("kmnist", tmp_path, ("test",), download=False)
    with pytest.raises(UserError, match="unknown dataset"):
        load_data("imagenet")
    with pytest.raises(UserError, match="no 'test' split"):
        load_data("mnist5k", splits=("test",))


def test_folder_dataset_with_mixed_sizes_modes_and_junk(tmp_path: Path, mnist5k):
    root = make_image_folder(tmp_path / "imgs", mnist5k)
    (root / "class0" / "notes.txt").write_text("not an image")
    (root / "class1" / "broken.png").write_bytes(b"\x89PNG garbage")
    data = load_data(f"folder:{root}")
    assert data.spec.classes == ("class0", "class1", "class7")
    assert data.spec.channels == 3 and data.spec.size == 32  # an RGB image among them
    total = len(data.splits["train"]) + len(data.splits["val"])
    assert total == 36  # junk skipped
    batch = next(make_batches(data.splits["train"], data, 8, torch.device("cpu")).batches())
    assert batch[0].shape == (8, 3, 32, 32)


def test_folder_dataset_with_train_and_val_subfolders(tmp_path: Path, mnist5k):
    make_image_folder(tmp_path / "d" / "train", mnist5k, per_class=6, classes=(2, 3))
    make_image_folder(tmp_path / "d" / "val", mnist5k, per_class=3, classes=(2, 3))
    data = load_data(f"folder:{tmp_path / 'd'}", image_size=20)
    assert (len(data.splits["train"]), len(data.splits["val"])) == (12, 6) and data.spec.size == 20


def test_folder_errors(tmp_path: Path):
    with pytest.raises(UserError, match="no such folder"):
        load_data(f"folder:{tmp_path / 'nope'}")
    (tmp_path / "only").mkdir()
    with pytest.raises(UserError, match="at least two class"):
        load_data(f"folder:{tmp_path}")


def test_select_classes_relabels_in_order(mnist5k):
    data = load_data("mnist5k", classes=["3", "8"])
    assert data.spec.classes == ("3", "8")
    val = data.splits["val"]
    assert len(val) == 200 and set(val.labels.tolist()) == {0, 1}
    original = mnist5k.splits["val"]
    assert torch.equal(val.images[val.labels == 1], original.images[original.labels == 8])


def test_epoch_order_is_seeded_and_batches_cover_every_sample_once(mnist5k):
    assert torch.equal(epoch_order(100, 1, 2), epoch_order(100, 1, 2))
    assert not torch.equal(epoch_order(100, 1, 2), epoch_order(100, 1, 3))
    batches = make_batches(mnist5k.splits["train"], mnist5k, 64, torch.device("cpu"), shuffle=True, seed=5)
    seen = torch.cat([y for _, y in batches.batches(epoch=3)])
    order = epoch_order(4000, 5, 3)
    assert torch.equal(seen, mnist5k.splits["train"].labels[order])
    assert len(batches) == 63


def small_idx_test_folder(folder: Path, labels: list[int]) -> Path:
    """t10k IDX files of ``len(labels)`` 4x4 images whose pixels are ``10 * i + row``."""
    folder.mkdir()
    images = np.array([[[10 * i + r] * 4 for r in range(4)] for i in range(len(labels))], np.uint8)
    write_idx(folder / "t10k-images-idx3-ubyte", images)
    write_idx(folder / "t10k-labels-idx1-ubyte", np.array(labels, np.uint8))
    return folder


def test_a_valid_cache_entry_is_reused_without_decoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from cnnlab.data.cache import cached_tensors

    monkeypatch.setenv("CNNLAB_CACHE_DIR", str(tmp_path / "cache"))
    source = tmp_path / "source"
    source.write_bytes(b"x")
    built = []

    def build() -> dict[str, torch.Tensor]:
        built.append(1)
        return {"images": torch.zeros(2, 1, 3, 3, dtype=torch.uint8), "labels": torch.tensor([4, 5])}

    first, second = cached_tensors("t", [source], build), cached_tensors("t", [source], build)
    assert len(built) == 1 and torch.equal(first["labels"], second["labels"])


def cache_entry(folder: Path) -> Path:
    (entry,) = folder.glob("mnist-*.pt")
    return entry


@pytest.mark.parametrize(
    "damage, reason",
    [
        (lambda e: e["tensors"]["labels"].fill_(7), "does not match its content hash"),
        (lambda e: e["tensors"].pop("labels"), "is malformed"),
        (lambda e: e.pop("sha256"), "does not match its content hash"),
        (lambda e: e.update(key="0" * 64), "was made from other source files"),
        (lambda e: e.pop("format"), "is not in this version's format"),
    ],
    ids=["labels-all-7", "missing-labels", "missing-hash", "other-source", "old-format"],
)
def test_an_altered_or_malformed_cache_entry_is_rebuilt_with_one_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, damage, reason: str
):
    cache = tmp_path / "cache"
    monkeypatch.setenv("CNNLAB_CACHE_DIR", str(cache))
    folder = small_idx_test_folder(tmp_path / "idx", [0, 1, 2, 3, 4, 5])
    original = load_data("mnist", folder, ("test",), download=False).splits["test"]
    entry = torch.load(cache_entry(cache), weights_only=True)
    damage(entry)
    torch.save(entry, cache_entry(cache))
    capsys.readouterr()
    again = load_data("mnist", folder, ("test",), download=False).splits["test"]
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("warning: cache entry ") and reason in err, err
    assert again.labels.tolist() == [0, 1, 2, 3, 4, 5] and torch.equal(again.images, original.images)
    fresh = torch.load(cache_entry(cache), weights_only=True)  # the entry was rewritten whole
    assert fresh["tensors"]["labels"].tolist() == [0, 1, 2, 3, 4, 5]
    load_data("mnist", folder, ("test",), download=False)
    assert capsys.readouterr().err == ""  # and is trusted again


def test_an_unreadable_cache_entry_is_rebuilt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys):
    cache = tmp_path / "cache"
    monkeypatch.setenv("CNNLAB_CACHE_DIR", str(cache))
    folder = small_idx_test_folder(tmp_path / "idx", [3, 1])
    load_data("mnist", folder, ("test",), download=False)
    cache_entry(cache).write_bytes(b"not a torch file")
    assert load_data("mnist", folder, ("test",), download=False).splits["test"].labels.tolist() == [3, 1]
    assert "is unreadable" in capsys.readouterr().err


@pytest.fixture
def file_server(tmp_path: Path):
    """A local HTTP server for ``tmp_path/served``: (base URL, the paths requested so far)."""
    import functools
    import http.server
    import threading

    served = tmp_path / "served"
    served.mkdir()
    requested: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            requested.append(self.path)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(served)))
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", requested
    server.shutdown()
    server.server_close()


def serve_mnist_format(monkeypatch: pytest.MonkeyPatch, base: str, served: Path, labels: list[int]) -> None:
    """Publish t10k and train files at ``base`` as torchvision's FashionMNIST mirror, with their MD5s."""
    import hashlib

    import torchvision.datasets as tvd

    resources = []
    for stem in ("train", "t10k"):
        folder = small_idx_test_folder(served / stem, labels)
        for kind in ("images-idx3", "labels-idx1"):
            name = f"{stem}-{kind}-ubyte.gz"
            packed = gzip.compress((folder / f"t10k-{kind}-ubyte").read_bytes())
            (served / name).write_bytes(packed)
            resources.append((name, hashlib.md5(packed).hexdigest()))
    monkeypatch.setattr(tvd.FashionMNIST, "mirrors", [base])
    monkeypatch.setattr(tvd.FashionMNIST, "resources", resources)


def test_the_test_split_downloads_only_the_two_t10k_files(tmp_path: Path, monkeypatch, file_server):
    """What ``cnnlab eval RUN --dataset fashion-mnist --split test`` does on a machine without the files:
    torchvision's downloader fetches the two t10k files (MD5-checked) and nothing else."""
    base, requested = file_server
    serve_mnist_format(monkeypatch, base, tmp_path / "served", [2, 0, 1])
    data_dir = tmp_path / "data"
    test = load_data("fashion-mnist", data_dir, ("test",)).splits["test"]
    assert test.labels.tolist() == [2, 0, 1] and int(test.images[1, 0, 2, 0]) == 12  # 10 * image + row
    assert sorted(set(requested)) == ["/t10k-images-idx3-ubyte.gz", "/t10k-labels-idx1-ubyte.gz"]  # HEAD, GET
    raw = data_dir / "FashionMNIST" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]


def test_a_download_failing_its_checksum_leaves_nothing_behind(tmp_path: Path, monkeypatch, file_server):
    base, requested = file_server
    serve_mnist_format(monkeypatch, base, tmp_path / "served", [2, 0, 1])
    (tmp_path / "served" / "t10k-labels-idx1-ubyte.gz").write_bytes(b"tampered on the way")
    data_dir = tmp_path / "data" / "new"
    with pytest.raises(UserError, match=r"test files not found .* and the download failed \(RuntimeError"):
        load_data("fashion-mnist", data_dir, ("test",))
    assert "/t10k-labels-idx1-ubyte.gz" in requested  # it was fetched, then refused
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("dataset", ["mnist", "cifar10"])
def test_a_failed_download_into_a_new_data_dir_leaves_no_folder(tmp_path: Path, dataset: str):
    """Offline here: the download fails and ``--data-dir`` (and its missing parents) are not left behind."""
    data_dir = tmp_path / "nonexistent" / "data"
    with pytest.raises(UserError, match="download failed") as info:
        load_data(dataset, data_dir, ("test",))
    assert "\n" not in str(info.value) and not (tmp_path / "nonexistent").exists()


def test_a_failed_download_into_an_existing_data_dir_keeps_what_was_there(tmp_path: Path):
    from cnnlab.data.vision import fetch_without_leftovers

    data_dir = tmp_path / "data"
    (data_dir / "MNIST").mkdir(parents=True)
    (data_dir / "MNIST" / "notes.txt").write_text("mine")

    def partial_download() -> None:
        raw = data_dir / "MNIST" / "raw"
        raw.mkdir()
        (raw / "t10k-images-idx3-ubyte.gz").write_bytes(b"half a fi")
        raise ConnectionResetError("the connection dropped")

    failure = fetch_without_leftovers(data_dir / "MNIST" / "raw", [], partial_download)
    assert failure == " and the download failed (ConnectionResetError: offline?)"
    assert sorted(p.relative_to(data_dir).as_posix() for p in data_dir.rglob("*")) == ["MNIST", "MNIST/notes.txt"]


@pytest.mark.slow
def test_eval_with_a_nonexistent_data_dir_is_one_line_and_creates_nothing(tmp_path: Path, capsys):
    from cnnlab.cli import main

    run = tmp_path / "run"
    assert main(["train", "--dataset", "digits", "--max-steps", "1", "--out", str(run), "--quiet"]) == 0
    capsys.readouterr()
    missing = tmp_path / "nonexistent"
    assert main(["eval", str(run), "--dataset", "mnist", "--split", "test", "--data-dir", str(missing)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: mnist: test files not found") and err.count("\n") == 1, err
    assert not missing.exists()


def test_datasets_says_which_splits_are_there_offline(tmp_path: Path, idx_test_dir: Path, mnist5k):
    from cnnlab.data.registry import probe_available

    assert probe_available("mnist", idx_test_dir) == "test only"  # enough for eval --split test
    assert probe_available("mnist", tmp_path) == "no" and probe_available("mnist5k", tmp_path) == "yes"
    train = mnist5k.splits["train"]
    write_idx(tmp_path / "train-images-idx3-ubyte", train.images[:, 0].numpy())
    write_idx(tmp_path / "train-labels-idx1-ubyte", train.labels.numpy().astype(np.uint8))
    assert probe_available("mnist", tmp_path) == "train only"
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (tmp_path / name).write_bytes((idx_test_dir / name).read_bytes())
    assert probe_available("mnist", tmp_path) == "yes"
