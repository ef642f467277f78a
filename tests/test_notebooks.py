"""The tutorial notebooks always run, and the committed ones are what their sources say.

Every ``examples/NN_*.py`` is executed as a notebook (nbclient, a fresh kernel of this interpreter,
working directory ``notebooks/``) with ``CNNLAB_SMOKE=1``, exactly as ``make notebooks`` executes it at
full size; a cell that raises fails the test. The kernel is offline (its proxies point at a closed port)
and its torchvision cache is a temporary folder; for ``05_your_photos`` that folder holds stand-in
weights under torchvision's file name, so its fine-tuned run is executed too. Every
``notebooks/NN_*.ipynb`` must hold the same cells as its source and be committed executed, with outputs
and pictures.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import jupytext
import nbformat
import pytest
from test_pretrained import stand_in_weights

from cnnlab.models import weights_file

ROOT = Path(__file__).resolve().parents[1]

_spec = importlib.util.spec_from_file_location("_build_notebooks", ROOT / "examples" / "_build_notebooks.py")
build = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build)

SOURCES = build.sources()
IDS = [s.stem for s in SOURCES]
PHOTOS_MODEL = "tv:resnet18"  # the model notebook 05 trains from scratch and fine-tunes
OFFLINE = "http://127.0.0.1:9"  # a proxy on a closed port: nothing is ever downloaded


def cells(nb) -> list[tuple[str, str]]:
    return [(cell.cell_type, cell.source.strip()) for cell in nb.cells]


def code_outputs(nb) -> list[dict]:
    return [output for cell in nb.cells if cell.cell_type == "code" for output in cell.outputs]


def test_the_seven_notebooks_are_there():
    assert IDS == ["00_hello_pytorch", "01_cnn_mnist", "02_backprop", "03_losses", "04_your_own_images",
                   "05_your_photos", "06_inside_the_cnn"]  # fmt: skip
    committed = sorted(p.stem for p in build.NOTEBOOKS.glob("*.ipynb"))
    assert committed == IDS, "every examples/NN_*.py needs its notebooks/NN_*.ipynb (run `make notebooks`)"


@pytest.mark.parametrize("source", SOURCES, ids=IDS)
def test_committed_notebook_matches_its_source(source: Path):
    notebook = build.notebook_for(source)
    assert cells(jupytext.read(notebook)) == cells(jupytext.read(source)), (
        f"{notebook.relative_to(ROOT)} is out of date with {source.relative_to(ROOT)}: run `make notebooks`"
    )
    assert nbformat.read(notebook, as_version=4).metadata["kernelspec"]["name"] == "cnnlab"


@pytest.mark.parametrize("source", SOURCES, ids=IDS)
def test_committed_notebook_is_executed_at_full_size(source: Path):
    nb = nbformat.read(build.notebook_for(source), as_version=4)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert [cell.execution_count for cell in code] == list(range(1, len(code) + 1)), "executed top to bottom"
    outputs = code_outputs(nb)
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "smoke test" not in text
    if source.stem != "00_hello_pytorch":
        assert "full size" in text
        assert any("image/png" in o.get("data", {}) for o in outputs), "pictures are shown inline"


@pytest.fixture
def kernel_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The environment of a smoke run: tiny sizes, runs and kernel files in tmp, offline data only, an
    empty torchvision cache (TORCH_HOME) and no way out to the internet."""
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "jupyter-runtime"))  # kernel connection files
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))  # where stand_in_weights writes
    env = {**os.environ, "CNNLAB_SMOKE": "1", "CNNLAB_RUNS": str(tmp_path / "runs")}
    env["IPYTHONDIR"] = str(tmp_path / "ipython")
    for optional in ("CNNLAB_MNIST_TEST", "CNNLAB_IMAGES", "CNNLAB_PHOTOS", "NO_PROXY", "no_proxy"):
        env.pop(optional, None)  # offline, embedded data only
    env |= {name: OFFLINE for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")}
    return env


@pytest.mark.slow
@pytest.mark.parametrize("source", SOURCES, ids=IDS)
def test_notebook_runs(source: Path, kernel_env: dict[str, str], tmp_path: Path):
    before = _files_we_could_litter()
    if source.stem == "05_your_photos":  # the fine-tuned run finds its (stand-in) weights in TORCH_HOME
        stand_in_weights(PHOTOS_MODEL)
    nb = build.execute(build.read_source(source), build.NOTEBOOKS, kernel_env, timeout=300)

    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert all(cell.execution_count for cell in code), "every code cell ran"
    outputs = code_outputs(nb)
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    if source.stem != "00_hello_pytorch":
        assert "smoke test" in text  # the notebook saw CNNLAB_SMOKE=1
        assert any("image/png" in o.get("data", {}) for o in outputs)
        assert (tmp_path / "runs").is_dir()
    if source.stem == "05_your_photos":  # both runs trained, were compared and evaluated on test/
        assert "best validation accuracy fine-tuned" in text and "no fine-tuned run" not in text
        assert "from scratch: 8 test images" in text and "fine-tuned: 8 test images" in text
        out = tmp_path / "runs" / "05_your_photos"
        assert (out / "scratch_vs_finetuned.png").is_file()
        config = json.loads((out / "finetuned" / "config.json").read_text())
        assert config["config"]["pretrained"] and config["config"]["freeze"] == 1
        assert config["pretrained_weights"] == weights_file(PHOTOS_MODEL).name
    new = _files_we_could_litter() - before
    assert not new, f"the notebook wrote into the repository: {sorted(new)[:5]}"


def _files_we_could_litter() -> set[Path]:
    """Files in the notebooks' working directory, beside their sources and in the default runs folder."""
    folders = (build.NOTEBOOKS, build.EXAMPLES, ROOT / "runs" / "notebooks")
    return {p for folder in folders if folder.exists() for p in folder.rglob("*") if "__pycache__" not in p.parts}
