"""The pictures and numbers of the README's "Tune and compare" section.

    python benchmarks/tune_figures.py [--trials 16] [--epochs 3] [--out runs/tune-figures]

1. ``cnnlab lr-find`` for the tutorial's defaults (seednet, SGD with momentum 0.5, batch 64, mnist5k):
   docs/images/lr-find.png and the suggestions.
2. ``cnnlab sweep --trials N --epochs E --out OUT`` over the default search space, then
   ``cnnlab sweep --show --out OUT``: docs/images/sweep-history.png and sweep-importance.png, the
   trials and the best one. TPE draws its first trials at random (not seeded), so another sweep
   finds other values; the lr-find numbers repeat exactly (same seed, same batches).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from cnnlab.config import TrainConfig
from cnnlab.tune.lr_find import lr_find, plot_lr_find
from cnnlab.tune.sweep import format_summary, run_sweep, show_sweep

IMAGES = Path(__file__).resolve().parents[1] / "docs" / "images"


def lr_find_figure() -> None:
    print("$ cnnlab lr-find --out docs/images/lr-find.png")
    cfg = TrainConfig()
    found = lr_find(cfg)
    plot_lr_find(found, IMAGES / "lr-find.png", title="lr-find: seednet on mnist5k, SGD momentum 0.5, batch 64")
    print(
        f"{found['steps']} steps, stopped: {found['stopped']}; suggestion (valley) {found['valley']:.3g}, "
        f"steepest descent {found['steepest']:.3g}"
    )


def sweep_figures(trials: int, epochs: int, out: Path) -> None:
    print(f"$ cnnlab sweep --trials {trials} --epochs {epochs} --out {out} --quiet")
    run_sweep(TrainConfig(epochs=epochs, progress=False), trials, out=out)
    print(f"$ cnnlab sweep --show --out {out}")
    result = show_sweep(out=out)
    print(format_summary(result))
    for name, path in result["plots"].items():
        if path:
            shutil.copyfile(path, IMAGES / f"sweep-{name}.png")
            print(f"{path} -> docs/images/sweep-{name}.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="sweep folder (default: a temporary one)")
    args = parser.parse_args()
    IMAGES.mkdir(parents=True, exist_ok=True)
    lr_find_figure()
    if args.out is not None:
        sweep_figures(args.trials, args.epochs, args.out)
        return
    with tempfile.TemporaryDirectory() as folder:
        sweep_figures(args.trials, args.epochs, Path(folder) / "sweeps")


if __name__ == "__main__":
    main()
