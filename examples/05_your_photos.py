# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python (cnnlab)
#     language: python
#     name: cnnlab
# ---

# %% [markdown]
# # 05 · Your photos: fine-tuning a pretrained network
#
# Notebook 04 trained the tutorial's small CNN on grey digits, 400 of each. Real photos are harder:
# colour, any size and shape, and usually only a few dozen or a few hundred per class. Two answers work:
# a recipe made for few colour photos (a small residual network, photo augmentation, a schedule sized by
# the data), and — the usual answer of fastai, Keras and torchvision's own tutorials — not starting from
# random weights but from a network that has already learnt to see, teaching it only your classes. This
# notebook trains on the same small folder of colour photos twice — from scratch with cnnlab's `photos`
# recipe, and torchvision's ResNet-18 fine-tuned from its ImageNet weights — and compares the two.
#
# To use your own photos, set `CNNLAB_PHOTOS` to their folder before starting Jupyter (or change the
# `MY_PHOTOS` line below): one sub-folder per class, or `train/<class>/` and `test/<class>/`. Without it,
# the notebook cuts a folder of photos out of the two sample photos that ship with scikit-learn, so it
# runs anywhere, offline.

# %% [markdown]
# ## 0. Settings
#
# `CNNLAB_SMOKE=1` (used by the test suite) uses a handful of tiny images and a few training steps;
# leave it unset for the real thing (about ten minutes on two CPU cores). Everything is written under
# `runs/notebooks/05_your_photos/` (or under `CNNLAB_RUNS`).

# %%
import os
import shutil
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from IPython import get_ipython
from IPython.display import Image, display
from matplotlib.patches import Rectangle
from PIL import Image as PILImage
from PIL import ImageEnhance
from sklearn.datasets import load_sample_images

import cnnlab
from cnnlab import plots
from cnnlab.data import load_data
from cnnlab.models import default_weights, weights_file

SMOKE = os.environ.get("CNNLAB_SMOKE") == "1"
ROOT = Path(cnnlab.__file__).resolve().parents[1]  # the repository cnnlab is installed from (pip install -e .)
RUNS = Path(os.environ.get("CNNLAB_RUNS") or ROOT / "runs" / "notebooks")
OUT = RUNS / "05_your_photos"
OUT.mkdir(parents=True, exist_ok=True)
MY_PHOTOS = os.environ.get("CNNLAB_PHOTOS")  # a folder with one sub-folder of photos per class, or None

MODEL = "tv:resnet18"  # the network to fine-tune: any name `cnnlab models` lists, with the tv: prefix
IMAGE_SIZE = 32 if SMOKE else 64  # the side the network sees; ImageNet's is 224, far slower on a CPU
EPOCHS = 2 if SMOKE else 6
FREEZE = 1  # epochs in which only the new head of the fine-tuned network learns
SCRATCH_OPTIONS = dict(recipe="photos", image_size=IMAGE_SIZE, max_steps=2 if SMOKE else None, overwrite=True)
OPTIONS = dict(model=MODEL, image_size=IMAGE_SIZE, epochs=EPOCHS, batch_size=32, optimizer="adam", lr=0.001,
               max_steps=2 if SMOKE else None, overwrite=True)  # fmt: skip


def show(path):
    print(os.path.relpath(path, ROOT))
    if get_ipython() is not None:  # in Jupyter the picture itself; as a plain script only its path
        display(Image(filename=str(path)))


print("smoke test" if SMOKE else "full size", "- writing under", os.path.relpath(OUT, ROOT))

# %% [markdown]
# ## 1. What a pretrained network is
#
# A **pretrained network** is a network whose weights were already trained, by someone else, on a large
# dataset — here torchvision's ResNet-18, trained on ImageNet's 1.28 million photos of 1,000 classes.
# Its convolutions have learnt what photos are made of: edges and colour blobs in the first layers,
# textures and parts in the middle ones, whole objects near the end. Only its last layer (the
# **classifier head**, a `Linear(512, 1000)`) is about ImageNet's particular classes.
#
# **Fine-tuning** keeps everything but that head, puts a new head sized for *your* classes in its place,
# and trains on your photos. A few hundred images are then often enough, where a network trained
# **from scratch** (random weights) would need tens of thousands.
#
# `--freeze N` does it in two phases, like fastai's `fine_tune`: for the first N epochs only the new
# head learns (the rest is frozen: no gradients, no updates). A head that starts random sends large,
# random gradients back; if the pretrained layers followed them from the first step they would forget
# much of what they know. Once the head makes sense, every layer is unfrozen and the whole network
# adjusts to your photos.
#
# A pretrained network also expects its images **the way it was trained on them**: torchvision's
# ResNet-18 weights resize the shorter side of a photo to 256 pixels, cut the central 224 × 224 square
# out of it, and normalise each colour channel with ImageNet's mean (0.485, 0.456, 0.406) and standard
# deviation (0.229, 0.224, 0.225). With `pretrained=True` cnnlab does exactly that, for training,
# evaluation and prediction alike; `image_size` scales it down for speed (64 here: shorter side to
# 73 = 64 · 256 / 224, central 64 × 64). From scratch, cnnlab squeezes each whole photo into the square
# and normalises with the mean and standard deviation of your own training images.
#
# The weights come from torchvision's cache, `$TORCH_HOME/hub/checkpoints/` (by default
# `~/.cache/torch/hub/checkpoints/`), and are downloaded into it the first time when the machine is
# online. What torchvision says about them:

# %%
weights = default_weights(MODEL)
print(
    f"{MODEL}: {weights.meta['num_params']:,} parameters, ImageNet top-1 {weights.meta['_metrics']['ImageNet-1K']['acc@1']}%"
)
print(f"weights: {weights.url} ({weights.meta['_file_size']:.0f} MB)")
print(f"cached as {weights_file(MODEL)}: {'yes' if weights_file(MODEL).is_file() else 'not yet'}")

# %% [markdown]
# ## 2. A folder of photos
#
# cnnlab reads `folder:PATH` datasets laid out like this, the sub-folder names being the class names:
#
# ```text
# PATH/
#   train/
#     flowers/   IMG_0001.jpg  IMG_0002.jpg  ...
#     trees/     ...
#   test/
#     flowers/   ...
#     trees/     ...
# ```
#
# (`PATH/<class>/` without `train/` and `test/` works too; the validation images are then held out of
# it.) Unless `MY_PHOTOS` is set, we make such a folder now out of the two sample photos that ship with
# scikit-learn, a pagoda in Beijing's Summer Palace and a dahlia, cut into regions that make four
# classes:
#
# | class | what | colour |
# | --- | --- | --- |
# | `pagoda` | the pagoda's roofs, beams, pillars and windows | orange and red, green trim |
# | `petals` | the dahlia's petals | orange |
# | `trees` | the pine and the bushes around the pagoda | green |
# | `leaves` | the blurred leaves behind the dahlia | dark green |
#
# Every image is a random crop of its region: 40 to 160 pixels on a side, up to a third wider than tall
# or taller than wide, mirrored half of the time, made up to 25 % brighter or darker, saved as JPEG or
# PNG. The classes pair up by colour on purpose — pagoda and petals are both orange, trees and leaves
# both green — so that colour alone does not tell them apart: the network has to look at shapes and
# textures. The test crops come from other parts of the photos than the training crops (the pagoda's
# lower floor, the dahlia's lower rim and the second dahlia below it, the trees on the other side of
# the pagoda, the leaves on the other side of the dahlia), so no test image shows pixels seen in
# training.

# %%
# (left, top, right, bottom) boxes in each 640 x 427 photo, for the training and for the test crops
REGIONS = {
    "pagoda": ("china", [(100, 95, 320, 250)], [(90, 255, 345, 345)]),
    "trees": ("china", [(550, 170, 640, 427), (460, 300, 640, 427)], [(0, 160, 55, 427), (370, 320, 455, 427)]),
    "petals": ("flower", [(175, 90, 440, 290)], [(175, 290, 440, 355), (290, 375, 460, 427)]),
    "leaves": ("flower", [(0, 0, 165, 427)], [(460, 0, 640, 427)]),
}
PER_CLASS = {"train": 6, "test": 2} if SMOKE else {"train": 80, "test": 25}


def random_crop(photo, boxes, rng):
    """A crop of random size (40-160 px), aspect (3:4 to 4:3), mirror and brightness inside one of the boxes."""
    areas = np.array([(r - x) * (b - y) for x, y, r, b in boxes], dtype=float)
    x0, y0, x1, y1 = boxes[rng.choice(len(boxes), p=areas / areas.sum())]
    side, aspect = rng.uniform(40, 160), rng.uniform(3 / 4, 4 / 3)
    w, h = min(x1 - x0, round(side * aspect**0.5)), min(y1 - y0, round(side / aspect**0.5))
    left, top = rng.integers(x0, x1 - w + 1), rng.integers(y0, y1 - h + 1)
    crop = photo.crop((left, top, left + w, top + h))
    if rng.random() < 0.5:
        crop = crop.transpose(PILImage.Transpose.FLIP_LEFT_RIGHT)
    return ImageEnhance.Brightness(crop).enhance(rng.uniform(0.75, 1.25))


def sample_photos():
    """scikit-learn's two sample photos (640 x 427 JPEGs shipped with it): {"china": ..., "flower": ...}."""
    sample = load_sample_images()
    return {Path(name).stem: PILImage.fromarray(image) for name, image in zip(sample.filenames, sample.images)}


def make_photo_folder(folder, photos, seed=0):
    rng = np.random.default_rng(seed)
    for name, (photo, train_boxes, test_boxes) in REGIONS.items():
        for split, boxes in (("train", train_boxes), ("test", test_boxes)):
            (folder / split / name).mkdir(parents=True)
            for i in range(PER_CLASS[split]):
                crop = random_crop(photos[photo], boxes, rng)
                if i % 2:
                    crop.save(folder / split / name / f"{name}{i:03d}.jpg", quality=90)
                else:
                    crop.save(folder / split / name / f"{name}{i:03d}.png")


def plot_regions(photos, path):
    """The two photos with each class's boxes: training crops inside the solid ones, test crops the dashed."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    for ax, (photo_name, photo) in zip(axes, photos.items()):
        ax.imshow(photo)
        ax.axis("off")
        for k, (name, (where, train_boxes, test_boxes)) in enumerate(REGIONS.items()):
            if where != photo_name:
                continue
            colour = f"C{k}"
            for boxes, style in ((train_boxes, "-"), (test_boxes, "--")):
                for x0, y0, x1, y1 in boxes:
                    ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec=colour, ls=style, lw=2))
                    ax.text(
                        x0 + 4,
                        y0 + 16,
                        name,
                        color=colour,
                        fontsize=9,
                        bbox={"fc": "white", "alpha": 0.7, "lw": 0, "pad": 1},
                    )
    fig.suptitle("where the crops come from: training (solid), test (dashed)")
    fig.savefig(path, dpi=80, bbox_inches="tight", pil_kwargs={"quality": 85})
    plt.close(fig)
    return path


if MY_PHOTOS:
    folder = Path(MY_PHOTOS).expanduser()
else:
    folder = OUT / "photos"
    shutil.rmtree(folder, ignore_errors=True)
    photos = sample_photos()
    make_photo_folder(folder, photos)
    show(plot_regions(photos, OUT / "regions.jpg"))

dataset = f"folder:{folder}"
for sub in sorted(d for d in folder.rglob("*") if d.is_dir()):
    names = sorted(f.name for f in sub.iterdir() if f.is_file())
    if names:
        print(f"{str(sub.relative_to(folder)) + '/':14} {len(names):4d} files: {', '.join(names[:3])}, ...")

# %% [markdown]
# `load_data` says what cnnlab makes of the folder: the classes (sorted by name), the training images
# with 20 % of each class held out for validation (there is no `val/` folder), and the test images. A
# memory budget of 0 leaves the images in their files (we want their names here); decoded at
# `IMAGE_SIZE`, as the from-scratch run will see them, some training photos look like this:

# %%
TEST = "test" if (folder / "test").is_dir() else "val"  # your own folder may have no test/
files = load_data(dataset, splits=("train", "val", "test") if TEST == "test" else ("train", "val"), memory_budget=0)
print("classes:", files.spec.classes)
print(", ".join(f"{split}: {len(files.splits[split])} files" for split in files.splits))
decoded = load_data(dataset, splits=("train",), image_size=IMAGE_SIZE).splits["train"]
first = [i for c in range(files.spec.num_classes) for i in (decoded.labels == c).nonzero()[:2, 0].tolist()]
captions = [files.spec.classes[int(decoded.labels[i])] for i in first]
show(plots.plot_gallery(decoded.images[first], captions, OUT / "photos.png", title="training photos"))

# %% [markdown]
# How far does colour alone go? A classifier that gives each test image the class whose training images
# have the nearest average colour:


# %%
def mean_colour(path):
    return np.asarray(PILImage.open(path).convert("RGB"), dtype=float).mean(axis=(0, 1))


train_files, test_files = files.splits["train"], files.splits[TEST]
train_colours = np.stack([mean_colour(p) for p in train_files.paths])
centres = np.stack([train_colours[train_files.labels.numpy() == c].mean(axis=0) for c in range(files.spec.num_classes)])
test_colours = np.stack([mean_colour(p) for p in test_files.paths])
nearest = np.linalg.norm(test_colours[:, None] - centres[None], axis=2).argmin(axis=1)
colour_accuracy = (nearest == test_files.labels.numpy()).mean()
print(f"nearest average colour: {100 * colour_accuracy:.1f}% of the {len(test_files)} {TEST} images right")

# %% [markdown]
# ## 3. From scratch, with the `photos` recipe
#
# A **recipe** is a named set of training options that a run starts from; any option you give still
# overrides it. The tutorial's recipe was sized for 60,000 grey digits: on a few hundred colour photos it
# stops after a few dozen optimiser steps, without any augmentation. The `photos` recipe — what `cnnlab train --dataset folder:PATH` uses when you name no recipe —
# is made for this case: a small residual network with BatchNorm, photo augmentation (each training
# image is randomly cropped, flipped and colour-jittered every time it is seen, so a few hundred photos
# look like many more), SGD with a one-cycle schedule and label smoothing, a length sized from the number
# of training images, early stopping on validation accuracy and a bounded wall time. The equivalent
# command:
#
# ```bash
# cnnlab train --recipe photos --dataset folder:PATH --image-size 64 --out runs/scratch
# ```

# %%
SCRATCH = OUT / "scratch"
scratch = cnnlab.train(dataset=dataset, out=str(SCRATCH), **SCRATCH_OPTIONS)
used = cnnlab.load(SCRATCH).config  # the options the run used: the recipe's, with ours on top
print(f"\nthe photos recipe chose: model {used.model}, augment {used.augment!r}, {used.optimizer} with "
      f"{used.schedule} (lr {used.lr}), label smoothing {used.label_smoothing}, batch {used.batch_size}")  # fmt: skip
print(
    f"trained {len(scratch.history)} epochs; best validation accuracy from scratch: {100 * scratch.best_val_acc:.1f}%"
)

# %% [markdown]
# ## 4. Fine-tuned
#
# torchvision's ResNet-18 (11 million parameters), starting from its ImageNet weights with a new head
# for our classes, only the new head learning during the first epoch, then six epochs in all with Adam:
#
# ```bash
# cnnlab train --model tv:resnet18 --pretrained --freeze 1 --dataset folder:PATH --image-size 64 --epochs 6 \
#     --batch-size 32 --optimizer adam --lr 0.001 --out runs/finetuned
# ```
#
# On a machine without internet and without the weights file in its cache, this stops before training
# with one line naming the file and the folder it belongs in; copy the file there (from a machine that
# has run this once, or from the URL torchvision names) and run the cell again. The rest of the notebook
# then shows the from-scratch run alone.

# %%
TUNED = OUT / "finetuned"
shutil.rmtree(TUNED, ignore_errors=True)  # never compare with a fine-tuned run left over from before
try:
    tuned = cnnlab.train(dataset=dataset, out=str(TUNED), pretrained=True, freeze=FREEZE, **OPTIONS)
    print(f"\nbest validation accuracy fine-tuned: {100 * tuned.best_val_acc:.1f}%")
except cnnlab.UserError as error:
    tuned = None
    print(error)
    print(f"-> no fine-tuned run. To make one: download {weights.url} where you are online, "
          f"copy it into {weights_file(MODEL).parent}/ and run this cell again")  # fmt: skip

# %% [markdown]
# ## 5. The two validation curves, side by side
#
# Validation accuracy and loss after every epoch. The dotted line marks where the fine-tuned run unfroze
# its pretrained layers. The from-scratch run takes many more (and cheaper) epochs: its network is smaller,
# and an augmented photo is a new photo every epoch.

# %%
RUN_DIRS = {"from scratch": SCRATCH} | ({"fine-tuned": TUNED} if tuned else {})
runs = {label: result.history for label, result in (("from scratch", scratch), ("fine-tuned", tuned)) if result}
fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(10, 3.8))
for label, history in runs.items():
    epochs = [row["epoch"] for row in history]
    ax_acc.plot(epochs, [100 * row["val_acc"] for row in history], marker="o", label=label)
    ax_loss.plot(epochs, [row["val_loss"] for row in history], marker="o", label=label)
if tuned:
    for ax in (ax_acc, ax_loss):
        ax.axvline(FREEZE + 0.5, color="grey", linestyle=":")
ax_acc.set(xlabel="epoch", ylabel="validation accuracy (%)", title="validation accuracy")
ax_loss.set(xlabel="epoch", ylabel="validation loss", title="validation loss")
for ax in (ax_acc, ax_loss):
    ax.legend()
    ax.grid(alpha=0.3)
if not tuned:
    fig.suptitle("from scratch only: the pretrained weights were not available")
fig.savefig(OUT / "scratch_vs_finetuned.png", dpi=110, bbox_inches="tight")
plt.close(fig)
show(OUT / "scratch_vs_finetuned.png")
for label, history in runs.items():
    accs = [100 * row["val_acc"] for row in history]
    print(f"{label:>12}: {len(accs)} epochs, validation accuracy best {max(accs):.1f}%, last {accs[-1]:.1f}%")
if not tuned:
    print("(only the from-scratch run: the fine-tuned run needs the pretrained weights, see section 4)")

# %% [markdown]
# ## 6. On the test images
#
# `cnnlab.evaluate(run, split="test")` scores the images in `test/`, which neither run trained or chose
# its best epoch on, with the run's own preprocessing, and draws the confusion matrix (rows: true class,
# columns: predicted). The command is `cnnlab eval runs/scratch --split test`.
#
# Compare each run's test accuracy with its validation accuracy above, and with the average colour
# (before the `photos` recipe, this notebook trained ResNet-18 from scratch for 6 epochs with Adam: 69 % on
# test, below the colour guess's 72 %).
# The validation images were held out of `train/`, so they are cut from the same regions of the photos
# as the training images; the test images come from other regions. A network that has learnt its
# training regions by heart scores well on validation and worse on test. That gap — few images, and
# new images that differ from them — is where starting from a network that already knows what photos
# are made of usually helps most.

# %%
print(f"nearest average colour: accuracy {100 * colour_accuracy:.1f}%")
for label, run in RUN_DIRS.items():
    numbers = cnnlab.evaluate(run, split=TEST)
    versus = "above" if numbers["accuracy"] > colour_accuracy else "not above"
    print(
        f"\n{label}: {numbers['n']} {TEST} images, accuracy {100 * numbers['accuracy']:.1f}% ({versus} the colour guess)"
    )
    print(numbers["report"])
    show(numbers["confusion_png"])
if not tuned:
    print("\n(no fine-tuned run to evaluate: see section 4)")

# %% [markdown]
# ## 7. Asking about single photos
#
# `cnnlab.predict(run, files)` reads each file the way its run was trained (the fine-tuned run: shorter
# side resized, centre crop, ImageNet's mean and standard deviation) and returns the most probable classes;
# `cnnlab predict runs/finetuned photo.jpg` on the command line. One test photo of each class:

# %%
one_each = [test_files.paths[int((test_files.labels == c).nonzero()[0, 0])] for c in range(files.spec.num_classes)]
for label, run in RUN_DIRS.items():
    print(f"{label}:")
    for answer in cnnlab.predict(run, one_each, topk=2):
        top = ", ".join(f"{name} {100 * p:.0f}%" for name, p in answer["topk"])
        print(f"  {Path(answer['image']).parent.name:>7}/{Path(answer['image']).name:12} -> {top}")

# %% [markdown]
# ## 8. From the command line
#
# Everything above, with `PATH` your folder of photos:
#
# ```bash
# cnnlab train --dataset folder:PATH --image-size 64 --out runs/scratch   # the photos recipe, from scratch
# cnnlab models                                  # torchvision's classifiers: parameters, ImageNet top-1
# cnnlab train --model tv:resnet18 --pretrained --freeze 1 --dataset folder:PATH --image-size 64 \
#     --epochs 6 --batch-size 32 --optimizer adam --lr 0.001 --out runs/finetuned
# cnnlab eval runs/finetuned --split test
# cnnlab predict runs/finetuned photo.jpg
# cnnlab export runs/finetuned --format onnx     # or serve it: cnnlab serve runs/finetuned
# ```
#
# Larger `--image-size` (up to the weights' own 224) usually helps a pretrained network, at a cost in
# speed that grows with the square of the side; a GPU makes 224 practical.
