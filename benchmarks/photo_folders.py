"""Real colour image folders to develop and measure cnnlab on, made from images that packages ship.

Two folders, each laid out ``train/<class>/``, ``val/<class>/``, ``test/<class>/`` for ``--dataset folder:PATH``:

``emoji``   Google's Noto Color Emoji (Debian ``fonts-noto-color-emoji``; images Apache-2.0, font OFL-1.1),
            each emoji's own bitmap as a 64 x 64 RGBA PNG, labelled by its Unicode emoji group (Debian
            ``unicode-data``'s ``emoji-test.txt``): 9 classes, from Activities to People & Body.
            Skin-tone variants are left out. Emoji that differ only by gender or by the people in them
            (``man technologist`` / ``woman technologist``, every ``family: ...``) share a split, so the
            test emoji are ones never seen in training, not a recoloured copy.
``crops``   crops of ten real photos: the seven colour photos that ship with scikit-image (``skimage.data``:
            public domain or CC0, the motorcycle from the Middlebury stereo set) and scikit-learn's two
            sample photos (CC BY 2.0), labelled by what the photo shows. Each photo is cut into a 3 x 3 grid
            of tiles; 6 tiles give training crops, 1 validation crops and 2 test crops, so no test crop
            shares a pixel with a training crop. Crops are 32-120 px, any aspect from 3:4 to 4:3, mirrored
            half of the time, brightness 0.8-1.2, saved as JPEG or PNG at their own size.

Both are unbalanced (the largest class about 6 times the smallest) and deterministic for a given ``--seed``.
Nothing is installed for you: a missing package is named with the command that installs it.

    python benchmarks/photo_folders.py                       # both, to data/photos/<name>/
    python benchmarks/photo_folders.py --out DIR --only crops
    python benchmarks/photo_folders.py --fixture tests/fixtures/photos   # the small slice the tests use
"""

from __future__ import annotations

import argparse
import hashlib
import re
import shutil
import sys
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFont

DEFAULT_OUT = Path("data/photos")
NOTO_FONT = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
EMOJI_TEST = Path("/usr/share/unicode/emoji/emoji-test.txt")
SPLITS = ("train", "val", "test")
EMOJI_SIDE = 64
SKIN_TONES = {"1F3FB", "1F3FC", "1F3FD", "1F3FE", "1F3FF"}
PEOPLE_WORDS = re.compile(r"\b(man|woman|men|women|person|people|boy|girl)\b")

# class -> (package, loader, licence); the loaders run only when that package is there
PHOTOS = {
    "astronaut": ("scikit-image", "skimage.data.astronaut", "public domain (NASA)"),
    "cat": ("scikit-image", "skimage.data.chelsea", "CC0 (Stefan van der Walt)"),
    "coffee": ("scikit-image", "skimage.data.coffee", "CC0 (Rachel Michetti)"),
    "rocket": ("scikit-image", "skimage.data.rocket", "public domain (SpaceX)"),
    "galaxies": ("scikit-image", "skimage.data.hubble_deep_field", "public domain (NASA)"),
    "retina": ("scikit-image", "skimage.data.retina", "CC0 (Mikael Häggström)"),
    "tissue": ("scikit-image", "skimage.data.immunohistochemistry", "no known copyright restrictions (CMMI)"),
    "motorcycle": ("scikit-image", "skimage.data.stereo_motorcycle", "Middlebury 2014 stereo set"),
    "pagoda": ("scikit-learn", "sklearn:china.jpg", "CC BY 2.0 (Flickr, via scikit-learn)"),
    "dahlia": ("scikit-learn", "sklearn:flower.jpg", "CC BY 2.0 (Flickr, via scikit-learn)"),
}
# training crops per class before shuffling onto the classes: unbalanced on purpose (about 6:1)
CROP_COUNTS = [240, 200, 170, 140, 120, 100, 80, 60, 50, 40]
GRID = 3
TILE_SPLITS = ["train"] * 6 + ["val"] + ["test"] * 2  # 9 tiles of the 3 x 3 grid
EMOJI_FRACTIONS = {"val": 0.1, "test": 0.2}


def need(module: str, package: str, how: str) -> None:
    """Stop with the install command when ``module`` is missing (this script installs nothing)."""
    try:
        __import__(module)
    except ImportError:
        sys.exit(f"error: {module} is missing; install it with: {how} {package}")


def need_file(path: Path, package: str) -> None:
    if not path.is_file():
        sys.exit(f"error: {path} is missing; install it with: apt-get install {package}")


def stable_fraction(seed: int, key: str) -> float:
    """A number in [0, 1) fixed by (seed, key): the same on every machine and Python version."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


# ---------------------------------------------------------------- emoji


def read_emoji_list(path: Path = EMOJI_TEST) -> list[tuple[str, str, str]]:
    """``(characters, name, group)`` of every fully-qualified emoji without a skin tone, Components left out."""
    group, out = "", []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# group:"):
            group = line.split(":", 1)[1].strip()
        elif line and not line.startswith("#") and "; fully-qualified" in line and group != "Component":
            codes = line.split(";")[0].split()
            if SKIN_TONES.isdisjoint(codes):
                name = line.split("#", 1)[1].strip().split(" ", 2)[2]  # "😀 E1.0 grinning face" -> name
                out.append(("".join(chr(int(c, 16)) for c in codes), name, group))
    return out


def emoji_key(name: str, group: str) -> str:
    """What variants of one emoji share: ``woman technologist`` -> ``technologist``, ``family: ...`` -> ``family``."""
    if group != "Flags" and ":" in name:
        name = name.split(":", 1)[0]
    return PEOPLE_WORDS.sub("", name).strip() or name


def class_folder(group: str) -> str:
    return re.sub(r"[^a-z]+", "_", group.lower()).strip("_")  # "Smileys & Emotion" -> "smileys_emotion"


def render_emoji(chars: str, font: ImageFont.FreeTypeFont, side: int = EMOJI_SIDE) -> Image.Image | None:
    """The font's own colour bitmap of one emoji, scaled into a transparent ``side`` square; None if missing."""
    if font.getlength(chars) > 1.5 * font.size:  # drawn as several glyphs: the font lacks this sequence
        return None
    canvas = Image.new("RGBA", (160, 160), (0, 0, 0, 0))
    ImageDraw.Draw(canvas).text((0, 0), chars, font=font, embedded_color=True)
    box = canvas.getbbox()
    if box is None:
        return None
    glyph = canvas.crop(box)
    glyph.thumbnail((side, side), Image.Resampling.LANCZOS)
    out = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    out.paste(glyph, ((side - glyph.width) // 2, (side - glyph.height) // 2))
    return out


def emoji_split(seed: int, key: str) -> str:
    u = stable_fraction(seed, "emoji:" + key)
    return "test" if u < EMOJI_FRACTIONS["test"] else "val" if u < sum(EMOJI_FRACTIONS.values()) else "train"


def make_emoji(folder: Path, seed: int) -> Counter:
    """The ``emoji`` folder; returns the count of images per (split, class)."""
    need_file(NOTO_FONT, "fonts-noto-color-emoji")
    need_file(EMOJI_TEST, "unicode-data")
    font = ImageFont.truetype(str(NOTO_FONT), 109)  # 109 px: the only size of the font's bitmaps
    counts: Counter = Counter()
    for i, (chars, name, group) in enumerate(read_emoji_list()):
        image = render_emoji(chars, font)
        if image is None:
            continue
        split, label = emoji_split(seed, emoji_key(name, group)), class_folder(group)
        (folder / split / label).mkdir(parents=True, exist_ok=True)
        image.save(folder / split / label / f"{i:04d}.png", optimize=True)
        counts[split, label] += 1
    return counts


# ---------------------------------------------------------------- crops


def load_photo(loader: str) -> np.ndarray:
    """One photo as an (H, W, 3) uint8 array."""
    if loader.startswith("sklearn:"):
        from sklearn.datasets import load_sample_image

        return load_sample_image(loader.split(":", 1)[1])
    import skimage.data

    image = getattr(skimage.data, loader.rsplit(".", 1)[1])()
    return image[0] if isinstance(image, tuple) else image  # stereo_motorcycle: (left, right, disparity)


def tiles(height: int, width: int) -> list[tuple[int, int, int, int]]:
    """The GRID x GRID tiles of an image as (left, top, right, bottom) boxes, row by row."""
    ys, xs = np.linspace(0, height, GRID + 1).astype(int), np.linspace(0, width, GRID + 1).astype(int)
    return [(xs[c], ys[r], xs[c + 1], ys[r + 1]) for r in range(GRID) for c in range(GRID)]


def random_crop(photo: Image.Image, box: tuple[int, int, int, int], rng: np.random.Generator) -> Image.Image:
    """A crop inside ``box``: side 32-120 px, aspect 3:4 to 4:3, mirrored half the time, brightness 0.8-1.2."""
    x0, y0, x1, y1 = box
    side, aspect = rng.uniform(32, 120), rng.uniform(3 / 4, 4 / 3)
    w, h = min(x1 - x0, round(side * aspect**0.5)), min(y1 - y0, round(side / aspect**0.5))
    left, top = int(rng.integers(x0, x1 - w + 1)), int(rng.integers(y0, y1 - h + 1))
    crop = photo.crop((left, top, left + w, top + h))
    if rng.random() < 0.5:
        crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return ImageEnhance.Brightness(crop).enhance(rng.uniform(0.8, 1.2))


def crop_counts(seed: int) -> dict[str, dict[str, int]]:
    """Crops per class and split: training counts shuffled onto the classes, val 15 % and test 30 % of them."""
    order = np.random.default_rng(seed).permutation(len(CROP_COUNTS))
    train = {name: CROP_COUNTS[j] for name, j in zip(PHOTOS, order)}
    return {
        name: {"train": n, "val": max(8, round(0.15 * n)), "test": max(15, round(0.3 * n))} for name, n in train.items()
    }


def make_crops(folder: Path, seed: int, classes: list[str] | None = None, scale: float = 1.0) -> Counter:
    """The ``crops`` folder (``classes`` and ``scale`` make smaller slices); returns counts per (split, class)."""
    need("skimage", "scikit-image", "pip install")
    need("sklearn", "scikit-learn", "pip install")
    counts: Counter = Counter()
    wanted = crop_counts(seed)
    for ci, label in enumerate(classes or list(PHOTOS)):
        photo = Image.fromarray(load_photo(PHOTOS[label][1])).convert("RGB")
        rng = np.random.default_rng([seed, ci])
        boxes = tiles(photo.height, photo.width)
        tile_split = [TILE_SPLITS[j] for j in rng.permutation(len(TILE_SPLITS))]
        for split in SPLITS:
            own = [b for b, s in zip(boxes, tile_split) if s == split]
            (folder / split / label).mkdir(parents=True, exist_ok=True)
            for i in range(max(2, round(scale * wanted[label][split]))):
                crop = random_crop(photo, own[int(rng.integers(len(own)))], rng)
                if i % 3 == 2:
                    crop.save(folder / split / label / f"{label}{i:04d}.png")
                else:
                    crop.save(folder / split / label / f"{label}{i:04d}.jpg", quality=90)
                counts[split, label] += 1
    return counts


# ---------------------------------------------------------------- the fixture


FIXTURE_CLASSES = ["cat", "coffee", "rocket"]  # CC0 / public domain sources only
FIXTURE_README = """\
A small real colour folder dataset for the tests: crops of three photos that ship with scikit-image
(`skimage.data`), made by `python benchmarks/photo_folders.py --fixture tests/fixtures/photos`
(seed 0), shrunk to at most 32 px.

| class | photo | licence |
| --- | --- | --- |
{rows}
"""


def make_fixture(folder: Path, seed: int) -> Counter:
    """A few dozen small images from CC0 / public-domain photos only, each shrunk to at most 32 px."""
    counts = make_crops(folder, seed, FIXTURE_CLASSES, scale=0.1)
    for path in folder.rglob("*.*"):
        if path.suffix in {".png", ".jpg"}:
            with Image.open(path) as image:
                image.load()
                image.thumbnail((32, 32), Image.Resampling.LANCZOS)
                image.save(path, **({"quality": 90} if path.suffix == ".jpg" else {}))
    rows = "\n".join(f"| `{c}` | `{PHOTOS[c][1]}` | {PHOTOS[c][2]} |" for c in FIXTURE_CLASSES)
    (folder / "README.md").write_text(FIXTURE_README.format(rows=rows))
    return counts


# ---------------------------------------------------------------- main

MAKERS = {"emoji": make_emoji, "crops": make_crops}


def count_table(name: str, counts: Counter) -> str:
    """A markdown table of images per class and split."""
    labels = sorted({label for _, label in counts})
    lines = [f"**{name}**", "", "| class | train | val | test |", "| --- | ---: | ---: | ---: |"]
    for label in labels:
        lines.append(f"| {label} | " + " | ".join(str(counts[s, label]) for s in SPLITS) + " |")
    totals = " | ".join(str(sum(n for (s, _), n in counts.items() if s == split)) for split in SPLITS)
    lines.append(f"| **all** | {totals} |")
    return "\n".join(lines)


def build(name: str, folder: Path, seed: int, maker) -> Counter:
    """Write into a temporary sibling and rename it into place, so a half-made folder never looks complete."""
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    counts = maker(partial, seed)
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    return counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"parent folder (default {DEFAULT_OUT})")
    parser.add_argument("--only", default=",".join(MAKERS), help="comma-separated folders to make (emoji,crops)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fixture", type=Path, help="make only the small test fixture, into this folder")
    args = parser.parse_args(argv)
    if args.fixture:
        print(count_table(str(args.fixture), build("fixture", args.fixture, args.seed, make_fixture)))
        return
    for name in args.only.split(","):
        if name not in MAKERS:
            parser.error(f"unknown folder {name!r}; choose from {', '.join(MAKERS)}")
        counts = build(name, args.out / name, args.seed, MAKERS[name])
        print(count_table(f"{args.out / name}  (folder:{args.out / name})", counts), end="\n\n")


if __name__ == "__main__":
    main()
