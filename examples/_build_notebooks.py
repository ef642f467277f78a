"""Turn the jupytext sources in ``examples/`` into executed notebooks in ``notebooks/``.

    python examples/_build_notebooks.py            # every NN_*.py, full size (what `make notebooks` runs)
    python examples/_build_notebooks.py 01 03      # only the notebooks whose name starts with 01 or 03

Each ``examples/NN_name.py`` (jupytext percent format) is converted to a notebook, executed top to
bottom in a fresh kernel running *this* Python interpreter (so the notebook sees the same cnnlab,
whatever kernels the user has installed), with the working directory ``notebooks/``, and written to
``notebooks/NN_name.ipynb`` with its outputs. A failing cell stops the build with the cell's error.

The notebooks read ``CNNLAB_SMOKE=1`` (tiny runs for CI) and ``CNNLAB_RUNS`` (where runs are written,
default ``runs/notebooks``); tests/test_notebooks.py calls :func:`execute` the same way with both set.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
NOTEBOOKS = ROOT / "notebooks"
KERNELSPEC = {"name": "cnnlab", "display_name": "Python (cnnlab)", "language": "python"}


def sources() -> list[Path]:
    """The notebook sources: ``examples/NN_*.py`` in order (helpers like this file start with ``_``)."""
    return sorted(EXAMPLES.glob("[0-9][0-9]_*.py"))


def notebook_for(source: Path) -> Path:
    return NOTEBOOKS / f"{source.stem}.ipynb"


def read_source(source: Path) -> Any:
    """The ``.py`` source as an (unexecuted) notebook, with the ``cnnlab`` kernel in its metadata."""
    import jupytext

    nb = jupytext.read(source)
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    return nb


def execute(nb: Any, cwd: Path, env: dict[str, str] | None = None, timeout: int | None = None) -> Any:
    """Run every cell of ``nb`` in a fresh kernel of the current interpreter; return ``nb`` with outputs.

    ``env`` replaces the kernel's environment (default: this process's). A cell that raises makes this
    raise ``nbclient.exceptions.CellExecutionError`` with the cell and its traceback.
    """
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager
    from nbclient import NotebookClient

    # No kernel directories: the only spec left is ipykernel's built-in "python3", whose command is
    # this interpreter (sys.executable), never a "python3" kernel installed elsewhere on the machine.
    specs = KernelSpecManager(kernel_dirs=[])
    km = AsyncKernelManager(kernel_name="python3", kernel_spec_manager=specs)
    client = NotebookClient(
        nb,
        km=km,
        timeout=timeout,
        resources={"metadata": {"path": str(cwd)}},
        record_timing=False,
        coalesce_streams=True,  # one stdout/stderr block per cell, progress-bar redraws collapsed
    )
    client.execute(env=dict(os.environ if env is None else env))
    for cell in nb.cells:  # a finished progress bar (leave=False) leaves only blanks behind: drop them
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.outputs if o.output_type != "stream" or o.text.strip()]
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    return nb


def build(source: Path, env: dict[str, str] | None = None) -> Path:
    """Execute ``source`` at the size ``env`` asks for and write its ``.ipynb``."""
    import jupytext

    nb = execute(read_source(source), NOTEBOOKS, env)
    target = notebook_for(source)
    jupytext.write(nb, target, fmt="ipynb")
    return target


def main(argv: list[str]) -> int:
    NOTEBOOKS.mkdir(exist_ok=True)
    chosen = [s for s in sources() if not argv or any(s.stem.startswith(a) for a in argv)]
    if not chosen:
        print(f"no notebook source matches {argv}", file=sys.stderr)
        return 2
    env = {k: v for k, v in os.environ.items() if k != "CNNLAB_SMOKE"}  # committed notebooks: full size
    for source in chosen:
        started = time.perf_counter()
        print(f"executing {source.relative_to(ROOT)} ...", flush=True)
        target = build(source, env)
        print(f"  wrote {target.relative_to(ROOT)} in {time.perf_counter() - started:.0f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
