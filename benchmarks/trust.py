"""Knowing what it doesn't know: the unknown rule and calibration (issue 24), and the data doctor.

    python benchmarks/trust.py                       # both parts
    python benchmarks/trust.py --part unknown        # the unknown rule and ECE only
    python benchmarks/trust.py --part doctor         # the doctor only
    CNNLAB_MNIST_TEST=/path/to/mnist-test python benchmarks/trust.py   # or --mnist-test DIR

**unknown.** Trains two models on mnist5k's digits 0–4 (``classes=0..4``): the tutorial recipe and
``--recipe fast``, each through ``cnnlab.train`` (so each gets its temperature and rule at the end of
training). Then scores, with the model's penultimate features and logits:

- known: the official MNIST test digits 0–4 (``--mnist-test``, the t10k IDX files);
- near-unknown: the official test digits 5–9;
- far-unknown: grey crops (random squares, 1/8 to all of the shorter side, seeded) of the real photos
  that scikit-learn (china, flower), matplotlib (grace_hopper) and scikit-image (astronaut, brick, camera,
  cell, chelsea, coffee, coins, grass, gravel, horse, ihc, moon, motorcycle, retina, rocket, hubble) ship,
  prepared as ``predict`` prepares any image; crops it leaves empty (``predict`` refuses them) are dropped.

Each score's AUROC (known vs near, known vs far) and the share of each set rejected at a threshold that
keeps 95 % of the validation digits: the top softmax probability, energy, Mahalanobis and kNN (k = 5)
from pytorch-ood, and the run's rule (``Predictor.known``). ECE before/after on the known test digits
comes from ``cnnlab.evaluate``. Targets are printed met/MISSED.

**doctor.** Writes mnist5k as a ``csv:`` dataset with 5 % of its training labels flipped (seeded) and
near-copies of 50 test digits planted in train (brightness ×0.9 and one pixel of shift), runs
``cnnlab.doctor`` and prints precision and recall of the flipped labels and the planted pairs found.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import random
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score

import cnnlab
from cnnlab.config import TrainConfig
from cnnlab.data import load_data
from cnnlab.inference import Predictor, load
from cnnlab.recipes import FAST as FAST_RECIPE
from cnnlab.spec import to_model_input
from cnnlab.trust.features import logits_and_features

KNOWN = ["0", "1", "2", "3", "4"]
PHOTOS = {  # package → photo files in it
    "sklearn": ["datasets/images/china.jpg", "datasets/images/flower.jpg"],
    "matplotlib": ["mpl-data/sample_data/grace_hopper.jpg"],
    "skimage": [
        f"data/{n}" for n in ("astronaut.png", "brick.png", "camera.png", "cell.png", "chelsea.png", "coffee.png",
                              "coins.png", "grass.png", "gravel.png", "horse.png", "ihc.png", "moon.png",
                              "motorcycle_left.png", "retina.jpg", "rocket.jpg", "hubble_deep_field.jpg")
    ],
}  # fmt: skip


def photo_files() -> list[Path]:
    files = []
    for package, names in PHOTOS.items():
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            print(f"note: {package} is not installed: its photos are left out of the far-unknown set")
            continue
        root = Path(spec.origin).parent
        files += [root / n for n in names if (root / n).is_file()]
    return files


def far_images(predictor: Predictor, per_photo: int = 100, seed: int = 0) -> tuple[torch.Tensor, int]:
    """Grey crops of the photos, prepared as ``predict`` does; (non-empty crops, empty ones dropped)."""
    rng, crops, empty = random.Random(seed), [], 0
    for path in photo_files():
        img = Image.open(path).convert("L")
        w, h = img.size
        for _ in range(per_photo):
            s = rng.randint(max(16, min(w, h) // 8), min(w, h))
            x, y = rng.randint(0, w - s), rng.randint(0, h - s)
            crop = predictor.prepare(img.crop((x, y, x + s, y + s)))
            if crop.max() > crop.min():
                crops.append(crop)
            else:
                empty += 1
    return torch.stack(crops), empty


def features(predictor: Predictor, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    out = [logits_and_features(predictor.model, to_model_input(predictor.spec, b)) for b in images.split(1000)]
    return torch.cat([o[0] for o in out]), torch.cat([o[1] for o in out])


def baselines(predictor: Predictor, train: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> dict:
    """Known-scores (higher = more known) of the single detectors, from pytorch-ood."""
    from pytorch_ood.detector import KNN, EnergyBased, Mahalanobis, MaxSoftmax

    logits, feats, labels = train
    maha = Mahalanobis(None).fit_features(feats, labels)
    knn = KNN(None, k=5)
    knn.fit_features(feats, labels)
    return {
        "top softmax probability": lambda z, f: -MaxSoftmax(None).predict_logits(z).float(),
        "energy": lambda z, f: -EnergyBased(None).predict_logits(z).float(),
        "Mahalanobis": lambda z, f: -maha.predict_features(f).float(),
        "kNN (cosine, k = 5)": lambda z, f: -knn.predict_features(f).float(),
        "rule: kNN + Mahalanobis + calibrated MSP": lambda z, f: predictor.rule.known_score(z, f),
    }


def auroc(known: torch.Tensor, unknown: torch.Tensor) -> float:
    y = np.r_[np.ones(len(known)), np.zeros(len(unknown))]
    return float(roc_auc_score(y, np.r_[known.double().numpy(), unknown.double().numpy()]))


def mark(ok: bool) -> str:
    return "met" if ok else "MISSED"


def unknown_part(work: Path, test_dir: Path, reuse: bool = False) -> None:
    test = load_data("mnist", test_dir, ("test",)).splits["test"]
    sets = {"known": test.images[test.labels < 5], "near": test.images[test.labels >= 5]}
    m5 = load_data("mnist5k", classes=KNOWN)
    recipes = {"tutorial": TrainConfig(), "fast": TrainConfig().replace(**FAST_RECIPE)}
    results = {}
    for name, cfg in recipes.items():
        t0 = time.perf_counter()
        if reuse and (work / name / "best.pt").is_file():
            run = argparse.Namespace(run_dir=work / name, best_val_acc=float("nan"))  # --reuse: trained before
        else:
            run = cnnlab.train(cfg, classes=KNOWN, out=str(work / name), overwrite=True, progress=False)
        predictor = load(run.run_dir)
        far, empty = far_images(predictor)
        print(f"\n{name} recipe: val acc {100 * run.best_val_acc:.2f}%, trained in {time.perf_counter() - t0:.0f} s, "
              f"T = {predictor.temperature:.3f}; far set {len(far)} crops of {len(photo_files())} photos "
              f"({empty} crops left empty by the digit preparation were dropped)")  # fmt: skip
        split = m5.splits
        tr = (*features(predictor, split["train"].images), split["train"].labels)
        va = features(predictor, split["val"].images)
        data = {k: features(predictor, v) for k, v in {**sets, "far": far}.items()}
        print(f"| {name}, score | near AUROC | far AUROC | known rejected | near rejected | far rejected |")
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        rows = {}
        for score_name, fn in baselines(predictor, tr).items():
            s = {k: fn(*v) for k, v in data.items()}
            threshold = torch.quantile(fn(*va).double(), 0.05)
            rejected = {k: float((v.double() < threshold).float().mean()) for k, v in s.items()}
            row = {
                "near": auroc(s["known"], s["near"]),
                "far": auroc(s["known"], s["far"]),
                **{f"rej_{k}": v for k, v in rejected.items()},
            }
            rows[score_name] = row
            print(f"| {score_name} | {row['near']:.3f} | {row['far']:.3f} | {100 * row['rej_known']:.1f} % | "
                  f"{100 * row['rej_near']:.1f} % | {100 * row['rej_far']:.1f} % |")  # fmt: skip
        rule_rows = predictor.known(sets["known"])  # the rule as predict applies it (its own stored threshold)
        rows["rule_known_rejected"] = sum(r["unknown"] for r in rule_rows) / len(rule_rows)
        cal = cnnlab.evaluate(run.run_dir, "mnist", test_dir, "test", out=work / f"{name}-eval")["calibration"]
        print(
            f"ECE on the test digits 0-4: {100 * cal['ece_before']:.2f}% before, {100 * cal['ece']:.2f}% after (T = {cal['temperature']:.3f})"
        )
        rows["ece"] = cal
        results[name] = rows
    rule = "rule: kNN + Mahalanobis + calibrated MSP"
    fast, tut = results["fast"][rule], results["tutorial"][rule]
    msp = results["tutorial"]["top softmax probability"]
    print("\ntargets:")
    print(f"  fast: near AUROC {fast['near']:.3f} ≥ 0.97: {mark(fast['near'] >= 0.97)}")
    print(f"  fast: far AUROC {fast['far']:.3f} ≥ 0.99: {mark(fast['far'] >= 0.99)}")
    print(f"  fast: far rejected {100 * fast['rej_far']:.1f} % ≥ 95 % with known test rejected "
          f"{100 * fast['rej_known']:.1f} % ≤ 7 %: {mark(fast['rej_far'] >= 0.95 and fast['rej_known'] <= 0.07)}")  # fmt: skip
    print(f"  tutorial: rule beats top softmax on near ({tut['near']:.3f} vs {msp['near']:.3f}) and far "
          f"({tut['far']:.3f} vs {msp['far']:.3f}): {mark(tut['near'] > msp['near'] and tut['far'] > msp['far'])}")  # fmt: skip
    for name, rows in results.items():
        ece = rows["ece"]
        print(
            f"  {name}: ECE after {100 * ece['ece']:.2f}% ≤ before {100 * ece['ece_before']:.2f}%: {mark(ece['ece'] <= ece['ece_before'])}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=("all", "unknown", "doctor"), default="all")
    parser.add_argument("--mnist-test", default=os.environ.get("CNNLAB_MNIST_TEST", "data/MNIST/raw"),
                        help="folder of the official MNIST t10k IDX files (env CNNLAB_MNIST_TEST; default data/MNIST/raw, where --dataset mnist downloads them)")  # fmt: skip
    parser.add_argument("--work", help="folder for the runs (default: a temporary one)")
    parser.add_argument("--reuse", action="store_true", help="use the runs already in --work instead of training")
    parser.add_argument("--folds", type=int, default=5, help="doctor: K of the K-fold training")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        if args.part in ("all", "unknown"):
            unknown_part(work, Path(args.mnist_test), args.reuse)
        if args.part in ("all", "doctor"):
            doctor_part(work, args.folds)


def write_sick_mnist5k(root: Path, flip: float = 0.05, planted: int = 50, seed: int = 0) -> tuple[Path, set, set]:
    """mnist5k as ``csv:`` data (train = its train split, test = its val split) with ``flip`` of the
    training labels changed to another digit and ``planted`` test digits copied into train as near
    copies (brightness ×0.85 + 10, saved as JPEG quality 80); returns (csv, flipped files, planted pairs)."""
    import csv
    import io

    m5 = load_data("mnist5k")
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows, flipped, pairs = [], set(), set()
    train, test = m5.splits["train"], m5.splits["val"]
    flips = set(rng.choice(len(train), int(flip * len(train)), replace=False).tolist())
    for split, part in (("train", train), ("test", test)):
        for i in range(len(part)):
            name = f"images/{split}{i}.png"
            Image.fromarray(part.images[i, 0].numpy()).save(root / name)
            label = int(part.labels[i])
            if split == "train" and i in flips:
                label = int((label + rng.integers(1, 10)) % 10)
                flipped.add(str(root / name))
            rows.append((name, label, split))
    for i in rng.choice(len(test), planted, replace=False).tolist():
        name = f"images/leak{i}.jpg"
        pixels = (test.images[i, 0].float() * 0.85 + 10).round().clamp(0, 255).to(torch.uint8).numpy()
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=80)
        (root / name).write_bytes(buffer.getvalue())
        rows.append((name, int(test.labels[i]), "train"))
        pairs.add(frozenset({str(root / name), str(root / f"images/test{i}.png")}))
    with open(root / "labels.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(("image", "label", "split"))
        writer.writerows(rows)
    return root / "labels.csv", flipped, pairs


def doctor_part(work: Path, folds: int) -> None:
    from cnnlab.doctor import doctor

    table, flipped, planted = write_sick_mnist5k(work / "sick-mnist5k")
    t0 = time.perf_counter()
    result = doctor(f"csv:{table}", folds=folds, out=work / "doctor", progress=True)
    seconds = time.perf_counter() - t0
    flagged = {f["image"] for f in result["label_issues"]}
    hits = len(flagged & flipped)
    precision, recall = hits / max(1, len(flagged)), hits / len(flipped)
    found_pairs = {frozenset(pair) for pair in result["duplicates"]}
    dup_found = len(found_pairs & planted)
    cross = sum(d["cross_split"] for d in result["duplicate_details"])
    print(f"\ndoctor on csv:{table} ({result['images']} images; {folds}-fold --recipe fast, {seconds:.0f} s):")
    print(f"  flipped labels: {len(flipped)}; flagged {len(flagged)}, of which flipped {hits}: "
          f"precision {100 * precision:.1f} %, recall {100 * recall:.1f} %")  # fmt: skip
    print(f"  planted train/test near copies: {len(planted)}; found {dup_found} ({100 * dup_found / len(planted):.0f} %); "
          f"pairs reported {len(found_pairs)} ({cross} across splits); odd images {len(result['odd'])}")  # fmt: skip
    print("targets:")
    print(f"  doctor: flipped labels recall {100 * recall:.1f} % ≥ 50 % at precision {100 * precision:.1f} % ≥ 50 %: "
          f"{mark(recall >= 0.5 and precision >= 0.5)}")  # fmt: skip
    print(
        f"  doctor: planted duplicates found {100 * dup_found / len(planted):.0f} % ≥ 90 %: {mark(dup_found >= 0.9 * len(planted))}"
    )


if __name__ == "__main__":
    main()
