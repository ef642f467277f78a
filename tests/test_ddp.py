"""DistributedDataParallel through torchrun, on the CPU with gloo (two processes on 127.0.0.1).

The reference for every multi-process run is a one-process run with the same global batch:
``2 processes × --batch-size 32`` must follow ``1 process × --batch-size 64`` step for step.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT, run_cli
from hypothesis import given, settings
from hypothesis import strategies as st

import cnnlab
from cnnlab import distributed
from cnnlab.checkpoint import load_checkpoint
from cnnlab.cli import main
from cnnlab.commands import without_nproc
from cnnlab.data.loaders import Batches
from cnnlab.engine import World
from cnnlab.errors import UserError
from cnnlab.runs import read_metrics

TOLERANCE = 1e-5
RESUMED_TOLERANCE = 5e-4  # after a resume in one process (see the test)


def torchrun(*args: str, cwd: Path, rendezvous: tuple[str, ...] = ("--standalone",)) -> subprocess.CompletedProcess:
    """``python -m torch.distributed.run --nproc-per-node 2 ARGS`` with the repository importable."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", *rendezvous, *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=env, timeout=600)


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["model"]


def assert_same_weights(a: Path, b: Path, tolerance: float = TOLERANCE) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.allclose(wa[key], wb[key], rtol=0, atol=tolerance), (key, (wa[key] - wb[key]).abs().max())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    """Plain torchrun: 2 processes × batch 32 for 20 steps of seednet on mnist5k, default run dir."""
    cwd = tmp_path_factory.mktemp("ddp")
    result = torchrun(
        "-m", "cnnlab", "train", "--batch-size", "32", "--max-steps", "20", "--epochs", "2", "--deterministic", cwd=cwd
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (run_dir,) = (cwd / "runs").iterdir()  # named by rank 0 (a timestamp), shared with rank 1
    return run_dir, result


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One process × batch 64 on mnist5k: ``r20`` stops after 20 steps, ``r40`` after 40."""
    root = tmp_path_factory.mktemp("reference")
    for steps in (20, 40):
        cnnlab.train(
            batch_size=64, max_steps=steps, epochs=2, deterministic=True, out=str(root / f"r{steps}"), progress=False
        )
    return root


@pytest.mark.slow
def test_two_processes_follow_one_process_with_the_global_batch(ddp_run, reference: Path):
    run_dir, result = ddp_run
    assert_same_weights(run_dir / "last.pt", reference / "r20" / "last.pt")
    ddp_row = read_metrics(run_dir)[0]
    one_row = read_metrics(reference / "r20")[0]
    for key in ("train_loss", "train_acc", "val_loss", "val_acc"):  # all-reduced: the whole split's numbers
        assert ddp_row[key] == pytest.approx(one_row[key], rel=1e-4), key
    config = json.loads((run_dir / "config.json").read_text())
    assert (config["status"], config["world_size"], config["config"]["batch_size"]) == ("finished", 2, 32)
    assert {"best.pt", "curves.png", "confusion.png", "metrics.csv"} <= {p.name for p in run_dir.iterdir()}
    assert result.stdout.count("train loss") == 1 and result.stdout.count("run saved to") == 1  # rank 0 only


@pytest.mark.slow
def test_a_ddp_checkpoint_resumes_and_evaluates_in_one_process(ddp_run, reference: Path, tmp_path: Path):
    run_dir = shutil.copytree(ddp_run[0], tmp_path / "run")
    ckpt = load_checkpoint(run_dir / "last.pt")
    assert ckpt["world_size"] == 2 and not any(k.startswith("module.") for k in ckpt["model"])
    resumed = cnnlab.train(resume=str(run_dir), max_steps=40, progress=False)  # 1 process keeps the global batch 64
    assert json.loads((run_dir / "config.json").read_text())["config"]["batch_size"] == 64
    assert resumed.history[-1]["steps"] == 40
    # Two processes' float sums round differently from one's (about 1e-6 after 20 steps); 20 more steps on this
    # CPU grow that to about 1e-4, still far below the 20 steps' own change, which a wrong batch or lr would show
    moved = max(float((weights(reference / "r40" / "last.pt")[k] - weights(reference / "r20" / "last.pt")[k]).abs().max())
                for k in weights(run_dir / "last.pt"))  # fmt: skip
    assert moved > 10 * RESUMED_TOLERANCE
    assert_same_weights(run_dir / "last.pt", reference / "r40" / "last.pt", RESUMED_TOLERANCE)
    numbers = cnnlab.evaluate(run_dir, split="val")
    assert numbers["n"] == 1000 and numbers["accuracy"] > 0.5


@pytest.mark.slow
def test_nproc_resumes_a_one_process_run_over_uneven_last_batches(tmp_path: Path):
    """``cnnlab train --nproc 2``: digits has 1,437 training images, so each epoch's last global batch
    of 64 (29 images) splits 15/14; weighting by shard size keeps the runs equal."""
    common = dict(dataset="digits", batch_size=64, epochs=2, deterministic=True, progress=False)
    cnnlab.train(out=str(tmp_path / "full"), **common)  # 2 epochs of 23 steps
    cnnlab.train(out=str(tmp_path / "cut"), max_steps=10, **common)
    numbers = cnnlab.evaluate(tmp_path / "cut", split="val")  # a one-process checkpoint in `eval`
    assert numbers["n"] == 360
    result = run_cli("train", "--nproc", "2", "--resume", str(tmp_path / "cut"), "--max-steps", "46", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    config = json.loads((tmp_path / "cut" / "config.json").read_text())
    assert (config["status"], config["world_size"], config["config"]["batch_size"]) == ("finished", 2, 32)
    assert_same_weights(tmp_path / "cut" / "last.pt", tmp_path / "full" / "last.pt")
    assert [row["epoch"] for row in read_metrics(tmp_path / "cut")] == [1, 2]


DYING_RANK = """
import os, sys
import cnnlab

def die(step, loss):
    if step == 12 and os.environ["RANK"] == "1":
        os._exit(17)  # rank 1 dies after the checkpoint of step 10

cnnlab.train(dataset="digits", batch_size=32, epochs=1, checkpoint_every=5, out=sys.argv[1], progress=False,
             on_step=die)
"""


@pytest.mark.slow
def test_a_dying_rank_leaves_the_last_good_checkpoint(tmp_path: Path):
    script = tmp_path / "dying.py"
    script.write_text(DYING_RANK)
    rendezvous = ("--master-addr", "127.0.0.1", "--master-port", str(free_port()))
    result = torchrun(str(script), str(tmp_path / "run"), cwd=tmp_path, rendezvous=rendezvous)
    assert result.returncode != 0
    assert "exitcode  : 17" in result.stdout + result.stderr  # torchrun names the rank that died
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    assert (ckpt["step"], ckpt["epoch"], ckpt["batch"], ckpt["world_size"]) == (10, 1, 10, 2)
    resumed = cnnlab.train(resume=str(tmp_path / "run"), progress=False)  # in one process, global batch 64
    assert [(row["epoch"], row["steps"]) for row in resumed.history] == [(1, 23)]


@pytest.mark.slow
@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 40), per_process=st.integers(1, 6), size=st.integers(2, 4))
def test_shard_weights_make_the_averaged_gradient_the_global_mean(mnist5k, n: int, per_process: int, size: int):
    """Ranks' weighted mean-loss gradients, averaged as DDP does, equal the whole batch's mean gradient,
    also when the last batch splits unevenly or leaves a rank with nothing."""
    generator = torch.Generator().manual_seed(n * 100 + per_process * 10 + size)
    x = torch.randn(n, 3, generator=generator, dtype=torch.float64)
    y = torch.randint(0, 4, (n,), generator=generator)
    layer = torch.nn.Linear(3, 4).double()
    loss_fn = distributed.safe_loss(lambda out, target: torch.nn.functional.cross_entropy(out, target))
    global_batch = per_process * size
    shards = [Batches(n, mnist5k, global_batch, torch.device("cpu"), rank=r, world_size=size) for r in range(size)]
    everything = Batches(n, mnist5k, global_batch, torch.device("cpu"))  # only the sample order is used
    weights = [distributed.shard_weights(n, global_batch, r, size) for r in range(size)]
    for b, whole in enumerate(everything.batch_indices(1, 0)):
        expected = torch.autograd.grad(loss_fn(layer(x[whole]), y[whole]), layer.weight)[0]
        averaged = torch.zeros_like(expected)
        for r, shard in enumerate(shards):
            index = list(shard.batch_indices(1, b))[0]
            loss = loss_fn(layer(x[index]), y[index]) * weights[r][b]
            averaged += torch.autograd.grad(loss, layer.weight)[0] / size
        assert torch.allclose(averaged, expected, atol=1e-12)


def test_impossible_setups_fail_with_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture):
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    assert main(["train", "--nproc", str(gpus + 1), "--device", "cuda"]) == 2  # refused before torchrun starts
    assert "CUDA GPU" in capsys.readouterr().err
    assert main(["train", "--nproc", "0"]) == 2
    assert "--nproc must be" in capsys.readouterr().err
    monkeypatch.setenv("WORLD_SIZE", "2")  # what torchrun would set for a second process on this machine
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(gpus + 1))
    with pytest.raises(UserError, match="NCCL|CUDA GPU"):
        distributed.join("cuda")
    with pytest.raises(UserError, match="mps"):
        distributed.join("mps")


def test_without_torchrun_everything_is_one_process():
    world = distributed.join("cpu")
    assert type(world) is World  # no process group: the loop makes no collective call
    assert (world.rank, world.size, world.is_main) == (0, 1, True)
    model = torch.nn.Linear(2, 2)
    assert world.wrap(model) is model
    assert world.loss_weights(100, 64) is None
    assert world.run_on_main(lambda: 42) == 42
    assert without_nproc(["train", "--nproc", "2", "--epochs", "1", "--nproc=3"]) == [
        "train",
        "--epochs",
        "1",
    ]


@pytest.mark.slow
def test_nproc_children_never_import_from_the_current_folder(tmp_path: Path):
    """A `torch/` folder where the command runs is not imported by torchrun or its processes (python -P)."""
    planted = tmp_path / "torch"
    planted.mkdir()
    (planted / "__init__.py").write_text("raise SystemExit('the planted torch/ folder was imported')\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = ["train", "--nproc", "1", "--dataset", "digits", "--max-steps", "2", "--epochs", "1", "--quiet"]
    result = subprocess.run(  # -P: like the `cnnlab` script, the parent itself does not look in the cwd
        [sys.executable, "-P", "-m", "cnnlab", *args, "--out", "run"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "planted" not in result.stdout + result.stderr
    assert (tmp_path / "run" / "best.pt").is_file()
