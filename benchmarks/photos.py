"""Your own photos: cnnlab's recipes against a pixel random forest, on real colour image folders.

    python benchmarks/photo_folders.py          # once: makes data/photos/emoji and .../crops
    python benchmarks/photos.py                 # every folder under data/photos, every row
    python benchmarks/photos.py --folders data/photos/crops --rows forest,photos
    python benchmarks/photos.py --quick         # the same rows, a few steps each: checks that the script runs
    python benchmarks/photos.py --page docs/benchmarks/photos.md   # also write the tables into that page

For each folder (``train/ val/ test/``) it prints one markdown table, every row measured in this run,
each scored on the ``test/`` split:

* ``majority class``: always the largest training class;
* ``nearest mean colour``: the class whose mean training colour is nearest to the image's mean colour
  (the folder is not solved by colour alone when this is far below the models);
* ``pixel RandomForest``: scikit-learn's ``RandomForestClassifier(500)`` on the raw 16 x 16 RGB pixels
  (read by cnnlab's one image reader);
* ``tutorial recipe``: ``cnnlab train --dataset folder:X --recipe tutorial``;
* ``photos (default)``: ``cnnlab train --dataset folder:X`` with no other flag;
* ``photos --time-limit 1m``: the same, sized to one minute;
* ``tv:resnet18 from scratch``: ``cnnlab train --dataset folder:X --model tv:resnet18``;
* ``fast recipe`` (only with ``--rows``): ``--recipe fast``.

Each ``cnnlab train`` runs as its own process under ``nice -n 5``, with the cnnlab this script imports
(its wall time includes start-up and decoding); another process then scores its ``best.pt`` with
``cnnlab.evaluate(run, split="test")``. A row the cnnlab in use cannot run (an unknown flag) prints
``n/a`` with the error. With ``--page``, the tables and a line saying when and where they were measured
replace the ``photos-tables`` section of that page (see ``benchmarks/pages.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pages import check_page, machine_line, write_section

DEFAULT_ROOT = Path("data/photos")
DEFAULT_RUNS = Path("runs/bench-photos")
PIXEL_SIDE = 16
TREES = 500

# row key -> (label, extra `cnnlab train` flags); None marks a row computed here, not by cnnlab
ROWS: dict[str, tuple[str, list[str] | None]] = {
    "majority": ("majority class", None),
    "colour": ("nearest mean colour", None),
    "forest": (f"pixel RandomForest({TREES}) on {PIXEL_SIDE}x{PIXEL_SIDE} RGB", None),
    "tutorial": ("tutorial recipe (`--recipe tutorial`)", ["--recipe", "tutorial"]),
    "photos": ("photos (default: no flag)", []),
    "photos1m": ("photos `--time-limit 1m`", ["--time-limit", "1m"]),
    "resnet18": ("`--model tv:resnet18` from scratch", ["--model", "tv:resnet18"]),
    "fast": ("fast recipe (`--recipe fast`)", ["--recipe", "fast"]),
}
DEFAULT_ROWS = ["majority", "colour", "forest", "tutorial", "photos", "photos1m", "resnet18"]
QUICK_FLAGS = ["--max-steps", "3"]
# scores a run's best.pt on test/ in a process of its own, with the same cnnlab as its training
EVALUATE = "import cnnlab, json, sys; print(json.dumps(cnnlab.evaluate(sys.argv[1], split='test')['accuracy']))"


@dataclass
class Row:
    label: str
    accuracy: float | None  # test accuracy in [0, 1]; None: not run
    seconds: float
    note: str = ""


def read_split(folder: Path, split: str, classes: list[str] | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Every image of ``folder/split/<class>/`` as 16 x 16 RGB uint8 pixels, flattened, and its labels."""
    from cnnlab.data.images import read_image

    classes = classes or sorted(p.name for p in (folder / split).iterdir() if p.is_dir())
    pixels, labels = [], []
    for label, name in enumerate(classes):
        for path in sorted((folder / split / name).iterdir()):
            pixels.append(read_image(path, channels=3, size=PIXEL_SIDE).numpy().reshape(-1))
            labels.append(label)
    return np.stack(pixels), np.array(labels), classes


def classical_rows(folder: Path, keys: list[str], trees: int) -> dict[str, Row]:
    """The rows that need no network: majority class, nearest mean colour, pixel random forest."""
    from sklearn.ensemble import RandomForestClassifier

    start = time.perf_counter()
    x_train, y_train, classes = read_split(folder, "train")
    x_test, y_test, _ = read_split(folder, "test", classes)
    read_s = time.perf_counter() - start
    out: dict[str, Row] = {}
    if "majority" in keys:
        majority = np.bincount(y_train).argmax()
        out["majority"] = Row(ROWS["majority"][0], float(np.mean(y_test == majority)), 0.0, f"`{classes[majority]}`")
    if "colour" in keys:
        t0 = time.perf_counter()
        colour = lambda x: x.reshape(len(x), 3, -1).mean(axis=2)  # noqa: E731  mean R, G, B of each image
        means = np.stack([colour(x_train[y_train == c]).mean(axis=0) for c in range(len(classes))])
        guess = np.linalg.norm(colour(x_test)[:, None, :] - means[None], axis=2).argmin(axis=1)
        out["colour"] = Row(ROWS["colour"][0], float(np.mean(guess == y_test)), time.perf_counter() - t0)
    if "forest" in keys:
        t0 = time.perf_counter()
        forest = RandomForestClassifier(n_estimators=trees, n_jobs=2, random_state=0).fit(x_train, y_train)
        accuracy = float(np.mean(forest.predict(x_test) == y_test))
        label = ROWS["forest"][0].replace(str(TREES), str(trees))
        out["forest"] = Row(label, accuracy, time.perf_counter() - t0 + read_s, "incl. reading the images")
    return out


def cnnlab_row(folder: Path, key: str, runs: Path, extra: list[str]) -> Row:
    """Train one row's run in its own process (``nice -n 5``), then score its best.pt on ``test/``."""
    import cnnlab

    label, flags = ROWS[key]
    run_dir = (runs / folder.name / key).resolve()
    root = Path(cnnlab.__file__).resolve().parents[1]  # `-m cnnlab` puts its working directory first on sys.path
    command = ["nice", "-n", "5", sys.executable, "-m", "cnnlab", "train", "--dataset", f"folder:{folder.resolve()}",
               *(flags or []), *extra, "--out", str(run_dir), "--overwrite"]  # fmt: skip
    print("$", " ".join(command[3:]), file=sys.stderr, flush=True)
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=root, env=os.environ.copy())
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        return Row(label, None, seconds, f"n/a: {last_line(done)}")
    scored = subprocess.run([sys.executable, "-c", EVALUATE, str(run_dir)], capture_output=True, text=True, cwd=root)
    if scored.returncode != 0:
        return Row(label, None, seconds, f"n/a: eval: {last_line(scored)}")
    return Row(label, json.loads(scored.stdout.splitlines()[-1]), seconds, run_note(run_dir))


def last_line(done: subprocess.CompletedProcess) -> str:
    lines = (done.stderr or done.stdout).strip().splitlines() or [f"exit code {done.returncode}"]
    return lines[-1][:120]


def run_note(run_dir: Path) -> str:
    """What the run did, from its config.json: recipe, model, steps done of planned, why it stopped."""
    stored = json.loads((run_dir / "config.json").read_text())
    result, config = stored.get("result", {}), stored.get("config", {})
    recipe = stored.get("recipe", {}).get("name") or config.get("recipe", "")
    plan = (result.get("plan") or {}).get("steps")
    steps = f"{result.get('steps', '?')}" + (f" of {plan} planned" if plan else "") + " steps"
    stop = result.get("stop_reason") or ("early stop" if result.get("stopped_early") else "")
    return ", ".join(
        x for x in (f"{recipe} {config.get('model', '')}".strip(), steps, stop and f"stopped: {stop}") if x
    )


def table(folder: Path, rows: list[Row]) -> str:
    """One markdown table: what, test accuracy, wall time, note."""
    lines = [f"**folder:{folder}**", "", "| what | test accuracy | wall time | note |", "| --- | ---: | ---: | --- |"]
    for row in rows:
        accuracy = "n/a" if row.accuracy is None else f"{100 * row.accuracy:.1f} %"
        lines.append(f"| {row.label} | {accuracy} | {row.seconds:.0f} s | {row.note.replace('|', '/')} |")
    return "\n".join(lines)


def benchmark(folder: Path, keys: list[str], runs: Path, quick: bool, report: Callable[[str], None]) -> list[Row]:
    """Every row for one folder, in ``keys`` order."""
    classical = classical_rows(folder, [k for k in keys if ROWS[k][1] is None], trees=50 if quick else TREES)
    rows = []
    for key in keys:
        if key in classical:
            rows.append(classical[key])
        else:
            rows.append(cnnlab_row(folder, key, runs, QUICK_FLAGS if quick else []))
        report(f"  {folder.name}: {rows[-1]}")
    return rows


def folders_from(arg: str | None) -> list[Path]:
    """The folders named by ``--folders`` (paths, or names under the default root), or every default one."""
    if not arg:
        return sorted(p for p in DEFAULT_ROOT.iterdir() if (p / "train").is_dir()) if DEFAULT_ROOT.is_dir() else []
    return [Path(a) if ("/" in a or Path(a).is_dir()) else DEFAULT_ROOT / a for a in arg.split(",")]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folders", help=f"comma-separated folders or names under {DEFAULT_ROOT} (default: all)")
    parser.add_argument("--rows", default=",".join(DEFAULT_ROWS), help=f"comma-separated, from: {', '.join(ROWS)}")
    parser.add_argument("--runs", type=Path, default=DEFAULT_RUNS, help=f"where the runs go (default {DEFAULT_RUNS})")
    parser.add_argument("--quick", action="store_true", help=f"50 trees and {' '.join(QUICK_FLAGS)} per run")
    parser.add_argument("--page", type=Path, help="also write the tables into this page's photos-tables section")
    args = parser.parse_args(argv)
    keys = args.rows.split(",")
    if unknown := [k for k in keys if k not in ROWS]:
        parser.error(f"unknown rows {unknown}; choose from {', '.join(ROWS)}")
    folders = folders_from(args.folders)
    if missing := [f for f in folders if not (f / "train").is_dir() or not (f / "test").is_dir()]:
        parser.error(
            f"not a folder with train/ and test/: {missing[0]} (make them: python benchmarks/photo_folders.py)"
        )
    if not folders:
        parser.error(f"no folders under {DEFAULT_ROOT}; make them: python benchmarks/photo_folders.py")
    if problem := check_page(args.page, PAGE_SECTION):
        parser.error(problem)
    report = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    results = {folder: benchmark(folder, keys, args.runs, args.quick, report) for folder in folders}
    print("\n\n".join(table(folder, rows) for folder, rows in results.items()))
    if args.page:
        write_section(args.page, PAGE_SECTION, page_text(results, args.quick))
        report(f"wrote the tables into {args.page}")


PAGE_SECTION = "photos-tables"


def page_text(results: dict[Path, list[Row]], quick: bool) -> str:
    """The page section: the tables, the default recipe against the forest, when and where (and the command)."""
    command = "python benchmarks/photos.py" + (" --quick" if quick else "")
    parts = [table(folder, rows) for folder, rows in results.items()]
    margins = []
    for folder, rows in results.items():
        forest = next((r.accuracy for r in rows if r.label.startswith("pixel RandomForest")), None)  # any tree count
        default = next((r.accuracy for r in rows if r.label == ROWS["photos"][0]), None)
        if forest is not None and default is not None:
            margins.append(f"{100 * (default - forest):+.1f} points on {folder.name}")
    if margins:
        parts.append("`cnnlab train` with no flag against the pixel random forest: " + ", ".join(margins) + ".")
    return "\n\n".join([*parts, f"`{command}`, every row in one run. {machine_line()}"])


if __name__ == "__main__":
    main()
