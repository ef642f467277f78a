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
# # 06 · Inside the CNN
#
# A trained network answers "7" — but what did it look at? This notebook opens up the tutorial's CNN:
# the filters its first layer learnt, the feature maps an image produces, attribution maps (Grad-CAM,
# saliency, integrated gradients, occlusion — all computed by [Captum](https://captum.ai)) that point at
# the pixels behind an answer, the classes it confuses, and finally the two **sanity checks** of
# Adebayo et al. ("Sanity Checks for Saliency Maps", NeurIPS 2018) that tell a map that explains the
# model from one that merely looks convincing.

# %% [markdown]
# ## 0. Settings
#
# `CNNLAB_SMOKE=1` (used by the test suite) trains for a few steps and checks a handful of images; leave
# it unset for the real thing. Everything is written under `runs/notebooks/06_inside_the_cnn/` (or under
# `CNNLAB_RUNS`).

# %%
import os
from pathlib import Path

from IPython import get_ipython
from IPython.display import Image, display

import cnnlab
from cnnlab.explain import explain, format_sanity, sanity_checks, visualize

SMOKE = os.environ.get("CNNLAB_SMOKE") == "1"
ROOT = Path(cnnlab.__file__).resolve().parents[1]  # the repository cnnlab is installed from (pip install -e .)
RUNS = Path(os.environ.get("CNNLAB_RUNS") or ROOT / "runs" / "notebooks")
OUT = RUNS / "06_inside_the_cnn"
OUT.mkdir(parents=True, exist_ok=True)


def show(path):
    print(os.path.relpath(path, ROOT))
    if get_ipython() is not None:  # in Jupyter the picture itself; as a plain script only its path
        display(Image(filename=str(path)))


print("smoke test" if SMOKE else "full size", "- writing under", os.path.relpath(OUT, ROOT))

# %% [markdown]
# ## 1. The model
#
# The tutorial's network (`seednet`: two 5×5 convolutions with max-pooling and ReLU, then one linear
# layer) trained on `mnist5k` with the tutorial's settings — the same run as `cnnlab train`.

# %%
RUN = OUT / "run"
result = cnnlab.train(out=str(RUN), overwrite=True, epochs=1 if SMOKE else 9, max_steps=20 if SMOKE else None,
                      progress=False)  # fmt: skip
print(f"best validation accuracy {100 * result.best_val_acc:.2f}%")

# %% [markdown]
# ## 2. Filters and feature maps
#
# The first convolution has ten 5×5 filters; each is drawn scaled to its own range (white = large
# weights). Trained on digits, they become small stroke and edge detectors. The feature maps are what
# each convolution block outputs for one image (after pooling and ReLU): the ten 12×12 maps of the first
# block still look like the digit, the twenty 4×4 maps of the second are what the linear layer reads.
# `cnnlab viz RUN` draws the same two pictures.

# %%
pictures = visualize(RUN, out=OUT / "viz")
print(pictures["image"], "->", pictures["label"], f"({100 * pictures['probability']:.1f}%)")
show(pictures["filters_png"])
show(pictures["feature_maps_png"])

# %% [markdown]
# ## 3. Why this answer? Grad-CAM and saliency
#
# Both attribute the class score (the logit before `log_softmax`) to the input pixels:
#
# * **Grad-CAM** weighs the last convolution's feature maps $A_k$ by the mean gradient of the score
#   over each map, $\mathrm{ReLU}(\sum_k \alpha_k A_k)$, and stretches the result to the input's size.
# * **Saliency** is the size of the gradient itself, $|\partial\,\mathrm{score} / \partial x|$: how much each
#   pixel could move the score.
#
# `cnnlab.explain` (and `cnnlab explain RUN IMAGE...`) takes image files through the same preprocessing
# as `cnnlab predict` and saves the input, the map and the two overlaid. Here the three digit images
# that ship with the repository:

# %%
digits = sorted((ROOT / "examples" / "images").glob("digit-*.png"))
for method in ("gradcam", "saliency"):
    for r in explain(RUN, digits, method=method, out=OUT / "explain"):
        print(f"{Path(r['image']).name}: {r['label']} ({100 * r['probability']:.1f}%), {method} for {r['target']}")
        show(r["png"])

# %% [markdown]
# Any class can be explained, not only the answer: what in this image speaks for a **3**?

# %%
(r,) = explain(RUN, digits[0], method="saliency", target="3", out=OUT / "explain-3")
print(f"{Path(r['image']).name}: predicted {r['label']}, explained {r['target']}")
show(r["png"])

# %% [markdown]
# ## 4. Which classes does it confuse?
#
# `cnnlab.evaluate` (and `cnnlab eval`) lists the most-confused pairs, true → predicted, from the
# confusion matrix, and draws the most confidently wrong images with a Grad-CAM overlay of the wrong
# answer beside each.

# %%
numbers = cnnlab.evaluate(RUN, out=OUT / "eval")
print(f"validation accuracy {100 * numbers['accuracy']:.2f}% on {numbers['n']} digits")
for pair in numbers["most_confused"][:8]:
    print(f"  {pair['true']} → {pair['predicted']}: {pair['count']}")
show(numbers["mistakes_png"])

# %% [markdown]
# ## 5. Are the maps telling the truth? Two sanity checks
#
# A map can look like a digit and still say nothing about the model. Adebayo et al. proposed two checks,
# run here for every method on validation digits (each explained for its true class):
#
# * **Model randomisation.** Re-initialise every weight and explain the same images again. A map that
#   explains the *model* must change: the mean Spearman rank correlation ρ between the trained and the
#   random model's maps (for the maps and for their absolute values; the larger counts) must stay
#   below 0.5.
# * **Localisation.** The share of the top 10 % pixels of a map that fall on the digit's ink (dilated by
#   one pixel), divided by the ink's share of the image: 1.0 is chance; a useful map is above 1.5.
#
# `cnnlab explain --sanity RUN` prints the same table.

# %%
rows = sanity_checks(RUN, n=8 if SMOKE else 64)
print(format_sanity(rows))

# %% [markdown]
# What the table shows on the trained tutorial model (the README quotes the numbers):
#
# * **Saliency** passes both on this draw, and is the default of `cnnlab explain` — but narrowly: with
#   `--repeats 5` (five image sets, five random models) it fails randomisation on 2 or 3 of them. No
#   method passes every draw; the table says so when that happens.
# * **Integrated gradients** and **occlusion** point at the ink very well — and almost as well for the
#   random model: both multiply by (or black out) the input, so their magnitudes keep the digit's shape
#   whatever the weights. That is the failure the paper reports for gradient × input.
# * **Grad-CAM** changes with the weights, but it lands *off* the ink. seednet's convolutions have no
#   padding, so its last one produces an 8×8 grid that covers only the central 14×14 input pixels;
#   stretching it over all 28×28 pixels (as Grad-CAM does) moves every off-centre spot outwards. On
#   networks whose convolutions keep the image size (padding, as in `fastnet` or torchvision's models)
#   the grid covers the whole image.
#
# A method that fails a check is reported as failing: a convincing picture is not an explanation.
