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
# # 04 · Your own images
#
# A trained network is only useful on images it has never seen. This notebook trains the tutorial's CNN
# on a plain folder of image files (one sub-folder per class, any size, PNG or JPEG), and then asks it
# about new files.
#
# To use your own pictures, set `CNNLAB_IMAGES` to their folder before starting Jupyter (or change the
# `MY_IMAGES` line below). Without it, the notebook first makes such a folder out of `mnist5k` digits,
# so it runs anywhere, offline.

# %% [markdown]
# ## 0. Settings
#
# `CNNLAB_SMOKE=1` (used by the test suite) uses a handful of images and a few training steps; leave it
# unset for the real thing. Everything is written under `runs/notebooks/04_your_own_images/` (or under
# `CNNLAB_RUNS`).

# %%
import os
import shutil
from pathlib import Path

import torch
from IPython import get_ipython
from IPython.display import Image, display
from PIL import Image as PILImage

import cnnlab
from cnnlab import plots
from cnnlab.data import load_data

SMOKE = os.environ.get("CNNLAB_SMOKE") == "1"
ROOT = Path(cnnlab.__file__).resolve().parents[1]  # the repository cnnlab is installed from (pip install -e .)
RUNS = Path(os.environ.get("CNNLAB_RUNS") or ROOT / "runs" / "notebooks")
OUT = RUNS / "04_your_own_images"
OUT.mkdir(parents=True, exist_ok=True)
MY_IMAGES = os.environ.get("CNNLAB_IMAGES")  # a folder with one sub-folder of images per class, or None


def show(path):
    print(os.path.relpath(path, ROOT))
    if get_ipython() is not None:  # in Jupyter the picture itself; as a plain script only its path
        display(Image(filename=str(path)))


print("smoke test" if SMOKE else "full size", "- writing under", os.path.relpath(OUT, ROOT))

# %% [markdown]
# ## 1. A folder of images
#
# cnnlab reads `folder:PATH` datasets laid out like this, the sub-folder names being the class names:
#
# ```text
# PATH/
#   zero/   img001.png  img002.jpg  ...
#   one/    ...
#   ...
# ```
#
# (or with `PATH/train/<class>/` and `PATH/val/<class>/` if you want to choose the validation images
# yourself). Unless `MY_IMAGES` is set, we write such a folder now: real MNIST digits from `mnist5k`,
# saved as image files under the English name of their digit. To show that size and format do not
# matter, every third image is enlarged to $56 \times 56$ and saved as JPEG.

# %%
NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
PER_CLASS = 8 if SMOKE else 400  # 400: every training digit of mnist5k

if MY_IMAGES:
    folder = Path(MY_IMAGES).expanduser()
else:
    folder = OUT / "digits"
    shutil.rmtree(folder, ignore_errors=True)
    train = load_data("mnist5k", splits=("train",)).splits["train"]
    for digit, name in enumerate(NAMES):
        (folder / name).mkdir(parents=True)
        index = (train.labels == digit).nonzero()[:PER_CLASS, 0]
        for k, i in enumerate(index.tolist()):
            img = PILImage.fromarray(train.images[i, 0].numpy())
            if k % 3 == 2:
                img.resize((56, 56)).save(folder / name / f"img{k:03d}.jpg", quality=95)
            else:
                img.save(folder / name / f"img{k:03d}.png")

for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
    files = sorted(f.name for f in sub.iterdir())
    print(f"{sub.name:>6}/  {len(files):4d} files: {', '.join(files[:3])}, ...")

# %% [markdown]
# `load_data` shows what cnnlab makes of the folder: the classes (sorted by name), the image shape every
# file is converted to (grey $28 \times 28$ here, because every image is grey), the 80/20 split into
# training and validation files (stratified: every class keeps its share) and the mean and standard
# deviation used to normalise them, measured on the training images.

# %%
dataset = f"folder:{folder}"
data = load_data(dataset)
print("classes:", data.spec.classes)
print(f"images: {data.spec.channels} x {data.spec.size} x {data.spec.size}")
print(f"train: {len(data.splits['train'])} files   val: {len(data.splits['val'])} files")
print("mean", data.spec.mean, "std", data.spec.std)

# %% [markdown]
# ## 2. Training
#
# Exactly as with the built-in datasets: `dataset="folder:PATH"`. Every file is decoded once, in
# parallel, and kept in cnnlab's cache; when the decoded images fit the memory budget they train from
# memory like MNIST, otherwise they stream from the files, so the folder may be larger than memory.

# %%
RUN = OUT / "run"
result = cnnlab.train(dataset=dataset, out=str(RUN), overwrite=True, epochs=1 if SMOKE else 9,
                      max_steps=5 if SMOKE else None)  # fmt: skip
print(f"\nbest validation accuracy {100 * result.best_val_acc:.2f}%")
show(RUN / "curves.png")

# %% [markdown]
# ## 3. Asking about new images
#
# `cnnlab.predict(run, files)` loads the best checkpoint, reads each file (any size, any mode), converts
# it exactly like the training images and returns the classes with the highest probabilities. The
# validation files were never trained on, so they are new to the network; two from each class:

# %%
val = load_data(dataset, memory_budget=0).splits["val"]  # a budget of 0 leaves the images in their files
new_files = [val.paths[i] for c in range(data.spec.num_classes) for i in (val.labels == c).nonzero()[:2, 0].tolist()]
answers = cnnlab.predict(RUN, new_files, topk=3)
correct = 0
for path, answer in zip(new_files, answers):
    truth = path.parent.name
    correct += answer["label"] == truth
    top = ", ".join(f"{label} {100 * p:.1f}%" for label, p in answer["topk"])
    print(f"{truth:>6}/{path.name:10} -> {answer['label']:6} [{top}]")
print(f"\n{correct} of {len(new_files)} right")

# %% [markdown]
# The same answers as pictures (`Predictor.read` converts a file the way the model sees it):

# %%
predictor = cnnlab.load(RUN)
images = torch.stack([predictor.read(p) for p in new_files])
captions = [f"{p.parent.name}\n-> {a['label']} {100 * a['probability']:.0f}%" for p, a in zip(new_files, answers)]
show(plots.plot_gallery(images, captions, OUT / "predictions.png", title="validation files: true -> predicted"))

# %% [markdown]
# Files from anywhere else work the same way. The repository ships three digit images in
# `examples/images/`; with the digit folder the classes are the English names (with your own folder this
# cell has nothing to say about digits and is skipped):

# %%
if not MY_IMAGES:
    for answer in cnnlab.predict(RUN, sorted((ROOT / "examples" / "images").glob("*.png")), topk=2):
        top = ", ".join(f"{label} {100 * p:.1f}%" for label, p in answer["topk"])
        print(f"{Path(answer['image']).name}: {answer['label']}  [{top}]")

# %% [markdown]
# ## 4. Where it goes wrong
#
# `cnnlab.evaluate` scores the whole validation split of the folder and draws the confusion matrix
# (rows: true class, columns: predicted). For photos or drawings that are dark on a light background
# (MNIST is light on dark) pass `invert=True` to `cnnlab.predict`, or `--invert` to `cnnlab predict`.

# %%
numbers = cnnlab.evaluate(RUN)
print(f"validation: {numbers['n']} files, accuracy {100 * numbers['accuracy']:.2f}%\n")
print(numbers["report"])
show(numbers["confusion_png"])

# %% [markdown]
# From here, the command line does the same: `cnnlab train --dataset folder:PATH --out runs/mine`, then
# `cnnlab predict runs/mine photo.jpg`.
