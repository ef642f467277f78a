"""``cnnlab explain`` and ``cnnlab viz``: attribution maps through Captum on real trained models, checked
for what they claim (evidence for the target, the sanity checks of Adebayo et al.), and their bad input.

The default model is the suite's shared run (``trained_run``: the tutorial's seednet, one epoch on
mnist5k); the colour model is a ``folder:`` run trained here on real digits saved as RGB files.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT, make_image_folder
from PIL import Image
from torch import nn

import cnnlab
from cnnlab.cli import main as cli_main
from cnnlab.errors import UserError
from cnnlab.explain import DEFAULT_METHOD, METHODS
from cnnlab.explain.attribution import attribute, attribute_images, black_baseline, class_scores, explain, last_conv
from cnnlab.explain.sanity import (
    LOC_MIN,
    RHO_MAX,
    check_method_sanity,
    format_sanity,
    ink_mask,
    localisation,
    pick_default,
    randomisation,
    reinitialised,
    sanity_checks,
    validation_images,
)
from cnnlab.explain.viz import visualize
from cnnlab.models import MODELS, build_model
from cnnlab.spec import to_model_input

N_SANITY = 64  # the issue asks for at least 50 validation digits


@pytest.fixture(scope="module")
def predictor(trained_run: Path):
    return cnnlab.load(trained_run)


@pytest.fixture(scope="module")
def digits(predictor):
    """The first validation digits of mnist5k (uint8 [N, 1, 28, 28]) and their labels."""
    return validation_images(predictor, N_SANITY)


def save_digit(path: Path, pixels: torch.Tensor, dark_on_light: bool = True) -> Path:
    """A validation digit uint8 [1, H, W] as a PNG, drawn dark on white like a scan."""
    grey = pixels[0].numpy()
    Image.fromarray(255 - grey if dark_on_light else grey).save(path)
    return path


def test_registering_the_commands_loads_neither_torch_nor_captum():
    code = (
        "import argparse, sys; from cnnlab.explain.cli import register; register(argparse.ArgumentParser()"
        ".add_subparsers()); loaded = {'torch', 'captum'} & set(sys.modules); assert not loaded, loaded"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr


# ---- Captum on any model -------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(MODELS))
def test_gradcam_uses_the_last_convolution_of_every_cnnlab_model(name: str):
    model = build_model(name, 1, 28, 10)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]  # resnet9: inside its residual blocks too
    assert last_conv(model) is convs[-1]
    maps = attribute(
        model.eval(), torch.randn(2, 1, 28, 28), torch.tensor([3, 5]), "gradcam", torch.zeros(1, 1, 1, 1), 10
    )
    assert maps.shape == (2, 28, 28) and torch.isfinite(maps).all()


def test_gradcam_finds_the_last_convolution_of_a_torchvision_model():
    from torchvision.models import resnet18

    model = resnet18(num_classes=4).eval()
    assert last_conv(model) is model.layer4[1].conv2
    maps = attribute(model, torch.randn(2, 3, 64, 64), torch.tensor([0, 3]), "gradcam", torch.zeros(1, 3, 1, 1), 4)
    assert maps.shape == (2, 64, 64) and torch.isfinite(maps).all()


def test_class_scores_drop_the_log_softmax_and_split_a_single_logit():
    model = build_model("seednet", 1, 28, 10).eval()
    x = torch.randn(3, 1, 28, 28)
    logits = class_scores(model, 10)(x)
    assert torch.allclose(torch.log_softmax(logits, dim=1), model(x), atol=1e-6)
    binary = build_model("seednet", 1, 28, 1).eval()
    scores = class_scores(binary, 2)(x)
    assert torch.allclose(torch.softmax(scores, dim=1)[:, 1], torch.sigmoid(binary(x))[:, 0], atol=1e-6)


# ---- the maps mean something -------------------------------------------------------------------


def target_scores(predictor, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    scores = class_scores(predictor.model, 10)
    with torch.no_grad():
        return scores(to_model_input(predictor.spec, images)).gather(1, labels[:, None])[:, 0]


@pytest.mark.parametrize("method", ["saliency", "integrated-gradients", "occlusion"])
def test_blacking_out_the_top_pixels_costs_the_target_far_more_than_random_pixels(predictor, digits, method: str):
    images, labels = digits[0][:32], digits[1][:32]
    maps = attribute_images(predictor, images, labels, method)
    assert maps.shape == (32, 28, 28)
    before = target_scores(predictor, images, labels)

    def drop(index: torch.Tensor) -> float:
        x = images.clone().flatten(2)
        x[torch.arange(len(x))[:, None], 0, index] = 0
        return float((before - target_scores(predictor, x.view_as(images), labels)).mean())

    k = 40  # about 5 % of the pixels
    top = maps.flatten(1).topk(k, dim=1).indices
    random = torch.rand(maps.flatten(1).shape, generator=torch.Generator().manual_seed(0)).topk(k, dim=1).indices
    assert drop(top) > 3 * drop(random) > 0


def test_integrated_gradients_add_up_to_the_score_difference_from_black(predictor, digits):
    images, labels = digits[0][:16], digits[1][:16]
    maps = attribute_images(predictor, images, labels, "integrated-gradients")
    black = torch.zeros_like(images)
    gap = target_scores(predictor, images, labels) - target_scores(predictor, black, labels)
    assert torch.allclose(maps.sum(dim=(1, 2)), gap, rtol=0.05, atol=0.1)  # completeness, up to 32 steps


def test_gradcam_and_saliency_are_evidence_magnitudes(predictor, digits):
    for method in ("gradcam", "saliency"):
        maps = attribute_images(predictor, digits[0][:8], digits[1][:8], method)
        assert (maps >= 0).all() and (maps.flatten(1).amax(dim=1) > 0).all()


# ---- the sanity checks ---------------------------------------------------------------------------


def test_randomisation_measure_tells_identical_maps_from_unrelated_ones():
    maps = torch.rand(20, 28, 28, generator=torch.Generator().manual_seed(1))
    assert randomisation(maps, maps) == (pytest.approx(1.0), 0)
    assert randomisation(maps, 2 * maps + 1) == (pytest.approx(1.0), 0)  # ranks, not values
    other = torch.rand(20, 28, 28, generator=torch.Generator().manual_seed(2))
    rho, constant = randomisation(maps, other)
    assert abs(rho) < 0.05 and constant == 0
    assert randomisation(maps, torch.zeros_like(maps)) == (1.0, 20)  # constant maps: no ranking, each a failure


def test_localisation_is_one_at_chance_and_the_inverse_ink_share_at_best(digits):
    images = digits[0][:32]
    ink = ink_mask(images)
    assert ink.any(dim=(1, 2)).all() and not ink.all(dim=(1, 2)).any()
    # dilation: every pixel at or above 128 is ink, and so is each of its 8 neighbours
    assert ink[images[:, 0] >= 128].all()
    on_ink = localisation(ink.float() + 1e-3 * torch.rand(ink.shape), images)
    share = ink.float().flatten(1).mean(dim=1)
    top = round(0.1 * 28 * 28)
    best = (torch.minimum(torch.ones(len(share)), ink.flatten(1).sum(1) / top) / share).mean()
    assert on_ink == pytest.approx(float(best), rel=1e-5)
    assert localisation((~ink).float(), images) == 0.0
    chance = localisation(torch.rand(images.shape[0], 28, 28, generator=torch.Generator().manual_seed(3)), images)
    assert 0.8 < chance < 1.2


def test_reinitialised_model_has_fresh_weights_and_the_same_shape(predictor):
    fresh = reinitialised(predictor.model, seed=0)
    again = reinitialised(predictor.model, seed=0)
    for (name, a), b, c in zip(
        predictor.model.state_dict().items(), fresh.state_dict().values(), again.state_dict().values()
    ):
        assert a.shape == b.shape and not torch.equal(a, b), name
        assert torch.equal(b, c), name  # seeded
    assert fresh is not predictor.model


def test_the_default_method_passes_both_sanity_checks_on_the_default_model(predictor, digits):
    images, labels = digits
    assert len(images) >= 50
    row = check_method_sanity(predictor, images, labels, DEFAULT_METHOD)
    assert row["randomisation_rho"] < RHO_MAX and row["randomisation_pass"]
    assert row["localisation"] > LOC_MIN and row["localisation_pass"] and row["passes"]


@pytest.mark.slow
def test_sanity_table_picks_the_documented_default_and_reports_failures(trained_run: Path, capsys):
    rows = sanity_checks(trained_run, n=N_SANITY)
    assert [r["method"] for r in rows] == list(METHODS)
    assert pick_default(rows) == DEFAULT_METHOD
    for r in rows:  # every verdict follows from its numbers, and failures are shown
        assert r["randomisation_pass"] == (max(r["rho_signed"], r["rho_abs"]) < RHO_MAX)
        assert r["localisation_pass"] == (r["localisation"] > LOC_MIN)
        assert r["randomisation_pass"] == (r["randomisation_rho"] < RHO_MAX and not r["constant_maps"])
    table = format_sanity(rows)
    assert "FAIL" in table and f"widest margin over both checks: {DEFAULT_METHOD}" in table
    # integrated gradients are (x - black) * gradient: their |map| keeps the digit's shape whatever the
    # weights, the failure Adebayo et al. report for gradient x input
    ig = next(r for r in rows if r["method"] == "integrated-gradients")
    assert ig["rho_abs"] > RHO_MAX and not ig["passes"]
    assert cli_main(["explain", str(trained_run), "--sanity", "--method", "saliency", "-n", "50", "--json"]) == 0
    (only,) = json.loads(capsys.readouterr().out)
    assert only["method"] == "saliency" and only["n"] == 50


# ---- cnnlab explain ------------------------------------------------------------------------------


def test_explain_command_json_png_and_agreement_with_predict(trained_run: Path, digits, tmp_path: Path, capsys):
    images, labels = digits
    files = [save_digit(tmp_path / f"digit{i}.png", images[i]) for i in range(3)]
    out = tmp_path / "out"
    assert cli_main(["explain", str(trained_run), *map(str, files), "--out", str(out), "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    predicted = cnnlab.predict(trained_run, files)
    assert [r["image"] for r in results] == [str(f) for f in files]
    for r, p in zip(results, predicted):
        assert set(r) == {
            "image", "label", "probability", "known_score", "unknown", "method", "target", "attribution", "png"
        }  # fmt: skip
        assert (r["known_score"], r["unknown"]) == pytest.approx((p["known_score"], p["unknown"]), abs=1e-5)
        assert (r["label"], r["probability"]) == (p["label"], pytest.approx(p["probability"], rel=1e-5))
        assert r["method"] == DEFAULT_METHOD and r["target"] == r["label"]
        amap = torch.tensor(r["attribution"])
        assert amap.shape == (28, 28) and amap.max() > 0
        with Image.open(r["png"]) as png:
            assert png.format == "PNG" and png.width > 2 * png.height  # input, map, overlay side by side
    assert sorted(p.name for p in out.iterdir()) == [f"digit{i}-{DEFAULT_METHOD}.png" for i in range(3)]


def test_explain_a_chosen_target_and_method_in_python(trained_run: Path, digits, tmp_path: Path):
    images, _ = digits
    path = save_digit(tmp_path / "d.png", images[0])
    (mine,) = explain(trained_run, path, method="occlusion", target="3", out=tmp_path / "o")
    (again,) = explain(trained_run, [path], method="occlusion", target=3, out=tmp_path / "o")
    assert mine["target"] == "3" and mine["method"] == "occlusion"
    assert mine["attribution"] == again["attribution"]  # a class by name or by index, same map
    assert Path(mine["png"]).name == "d-occlusion.png"


def test_explain_writes_beside_the_checkpoint_by_default_and_names_repeated_stems_apart(
    trained_run: Path, digits, tmp_path: Path
):
    images, _ = digits
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a, b = save_digit(tmp_path / "a" / "x.png", images[0]), save_digit(tmp_path / "b" / "x.png", images[1])
    results = explain(trained_run, [a, b], method="saliency")
    pngs = [Path(r["png"]) for r in results]
    assert [p.name for p in pngs] == ["x-saliency.png", "x-2-saliency.png"]
    assert all(p.parent == trained_run / "explain" and p.is_file() for p in pngs)


@pytest.mark.parametrize(
    "extra, message",
    [(["--method", "gradcam++"], "unknown method 'gradcam++'; choose one of"),
     (["--target", "12"], "no class '12' in this model"),
     (["--target", "cat"], "no class 'cat' in this model"),
     (["--target", "-1"], "no class '-1' in this model")],
)  # fmt: skip
def test_bad_method_or_target_is_one_line_exit_2_and_writes_nothing(
    trained_run: Path, digits, tmp_path: Path, capsys, extra: list[str], message: str
):
    path = save_digit(tmp_path / "d.png", digits[0][0])
    out = tmp_path / "out"
    assert cli_main(["explain", str(trained_run), str(path), "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not out.exists()


def test_an_unreadable_or_missing_image_alone_is_exit_2_and_writes_nothing(trained_run: Path, tmp_path: Path, capsys):
    """(A bad file among good ones is skipped with a warning: tests/test_predict_files.py.)"""
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image at all")
    out = tmp_path / "out"
    for bad, message in ((junk, "not a readable image"), (tmp_path / "missing.png", "no such file")):
        assert cli_main(["explain", str(trained_run), str(bad), "--out", str(out)]) == 2
        lines = capsys.readouterr().err.splitlines()
        assert lines[0].startswith(f"warning: {bad}: ") and message in lines[0], lines
        assert len(lines) == 2 and lines[1].startswith("error: ")
    assert not out.exists()
    assert cli_main(["explain", str(trained_run)]) == 2
    assert "no images given" in capsys.readouterr().err


# ---- cnnlab viz ------------------------------------------------------------------------------------


@pytest.mark.slow  # draws every feature map twice
def test_viz_draws_filters_and_every_convolutions_feature_maps(trained_run: Path, digits, tmp_path: Path, capsys):
    assert cli_main(["viz", str(trained_run), "--out", str(tmp_path / "v"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["layers"] == [{"name": "conv1", "shape": [10, 12, 12]}, {"name": "conv2", "shape": [20, 4, 4]}]
    assert "validation image 0" in result["image"]
    for key in ("filters_png", "feature_maps_png"):
        with Image.open(result[key]) as png:
            assert png.format == "PNG"
    path = save_digit(tmp_path / "seven.png", digits[0][1])
    mine = visualize(trained_run, path, tmp_path / "v2")
    assert mine["image"] == str(path) and mine["label"] == cnnlab.predict(trained_run, path)[0]["label"]
    assert Path(mine["filters_png"]).parent == tmp_path / "v2"


def test_viz_refuses_an_unreadable_image(trained_run: Path, tmp_path: Path, capsys):
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"\xff\xd8 broken")
    assert cli_main(["viz", str(trained_run), "--image", str(junk), "--out", str(tmp_path / "v")]) == 2
    assert capsys.readouterr().err.startswith(f"error: {junk}: ")
    assert not (tmp_path / "v").exists()


# ---- cnnlab eval: most confused pairs, Grad-CAM in the mistakes gallery ---------------------------


def test_most_confused_lists_off_diagonal_counts_largest_first():
    from cnnlab.metrics import format_most_confused, most_confused

    matrix = torch.tensor([[5, 2, 0], [3, 7, 3], [0, 1, 9]])
    pairs = most_confused(matrix, ["a", "b", "c"])
    assert pairs == [
        {"true": "b", "predicted": "a", "count": 3}, {"true": "b", "predicted": "c", "count": 3},
        {"true": "a", "predicted": "b", "count": 2}, {"true": "c", "predicted": "b", "count": 1},
    ]  # fmt: skip
    assert format_most_confused(pairs, limit=2).splitlines() == [
        "most confused (true → predicted: count), top 2:",
        "  b → a: 3",
        "  b → c: 3",
    ]
    assert most_confused(torch.eye(3, dtype=torch.long), ["a", "b", "c"]) == []


@pytest.mark.slow  # evaluates 1000 digits twice, with pictures
def test_eval_reports_most_confused_and_draws_gradcam_on_its_mistakes(trained_run: Path, tmp_path: Path, capsys):
    assert cli_main(["eval", str(trained_run), "--out", str(tmp_path / "e"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    matrix = torch.tensor(result["confusion_matrix"])
    pairs = result["most_confused"]
    assert pairs and sum(p["count"] for p in pairs) == int(matrix.sum() - matrix.trace())
    assert [p["count"] for p in pairs] == sorted((p["count"] for p in pairs), reverse=True)
    classes = [row["class"] for row in result["per_class"]]
    for p in pairs:
        assert p["count"] == matrix[classes.index(p["true"]), classes.index(p["predicted"])] > 0
    with Image.open(result["mistakes_png"]) as png:  # two columns per mistake: the image and its Grad-CAM
        assert png.format == "PNG" and png.width > png.height
    assert cli_main(["eval", str(trained_run), "--out", str(tmp_path / "e")]) == 0
    text = capsys.readouterr().out
    first = pairs[0]
    assert f"  {first['true']} → {first['predicted']}: {first['count']}" in text


# ---- a folder: colour run ----------------------------------------------------------------------------


@pytest.mark.slow
def test_explain_viz_and_sanity_on_a_folder_colour_run(colour_run: Path, mnist5k, tmp_path: Path):
    predictor = cnnlab.load(colour_run)
    assert (predictor.spec.channels, predictor.spec.size, predictor.preprocessing.recipe) == (3, 32, "resize")
    rgb = Image.fromarray(mnist5k.splits["val"].images[7, 0].numpy()).convert("RGB").resize((45, 45))
    rgb.save(tmp_path / "photo.jpg")
    for method in METHODS:
        (r,) = explain(colour_run, tmp_path / "photo.jpg", method=method, out=tmp_path / "o")
        assert torch.tensor(r["attribution"]).shape == (32, 32) and r["label"] in predictor.spec.classes
        assert Path(r["png"]).is_file()
    with pytest.raises(UserError, match="no class 'class9'"):
        explain(colour_run, tmp_path / "photo.jpg", target="class9")
    (r,) = explain(colour_run, tmp_path / "photo.jpg", target="class7", method="gradcam", out=tmp_path / "o")
    assert r["target"] == "class7"
    v = visualize(colour_run, out=tmp_path / "v")
    assert [layer["shape"][0] for layer in v["layers"]] == [10, 20]
    (row,) = sanity_checks(colour_run, ["saliency"], n=8)
    assert row["localisation"] is None and row["localisation_pass"] is None  # on digits only: "n/a"
    assert row["passes"] == row["randomisation_pass"]  # judged on randomisation alone
    assert -1 <= row["randomisation_rho"] <= 1


def test_black_baseline_is_pixel_zero_as_the_model_sees_it(predictor):
    base = black_baseline(predictor)
    expected = to_model_input(predictor.spec, torch.zeros(1, 1, 1, 1, dtype=torch.uint8))
    assert torch.allclose(base, expected)


# ---- issue 23: Grad-CAM on small maps, constant maps, repeats, colour verdicts ------------------------


@pytest.fixture(scope="module")
def resnet_at_32(tmp_path_factory: pytest.TempPathFactory, mnist5k) -> Path:
    """tv:resnet18 from scratch at --image-size 32, two steps on a small ``folder:`` of real digits: its last
    convolution's map is 1x1, so its Grad-CAM is constant."""
    root = tmp_path_factory.mktemp("resnet32")
    folder = make_image_folder(root / "imgs", mnist5k, per_class=6)
    out = root / "run"
    cnnlab.train(
        dataset=f"folder:{folder}", model="tv:resnet18", image_size=32, max_steps=2, batch_size=8,
        out=str(out), progress=False,
    )  # fmt: skip
    return out


@pytest.mark.slow
def test_gradcam_on_a_1x1_last_map_warns_naming_the_size(resnet_at_32: Path, tmp_path: Path, capsys):
    from cnnlab.explain.attribution import gradcam_grid, small_grid_warning

    predictor = cnnlab.load(resnet_at_32)
    assert gradcam_grid(predictor.model, 3, 32) == (1, 1)
    message = small_grid_warning(predictor)
    assert message is not None and "1x1" in message and "--image-size" in message and "--method" in message
    image = tmp_path / "d.png"
    save_digit(image, torch.full((1, 20, 20), 200, dtype=torch.uint8).tril())
    (r,) = explain(resnet_at_32, image, method="gradcam", out=tmp_path / "o")
    amap = torch.tensor(r["attribution"])
    assert float(amap.max() - amap.min()) <= 1e-5 * float(amap.max())  # one value everywhere, up to rounding
    err = capsys.readouterr().err
    assert err.count("warning: Grad-CAM") == 1 and "1x1" in err
    explain(resnet_at_32, image, method="saliency", out=tmp_path / "o")
    assert "Grad-CAM" not in capsys.readouterr().err


def test_seednets_8x8_gradcam_grid_gives_no_warning(predictor):
    from cnnlab.explain.attribution import gradcam_grid, small_grid_warning

    assert gradcam_grid(predictor.model, 1, 28) == (8, 8)
    assert small_grid_warning(predictor) is None


def test_constant_maps_count_as_failures_never_as_zero():
    varied = torch.arange(16.0).view(1, 4, 4)
    constant = torch.zeros(1, 4, 4)
    rho, constant_count = randomisation(torch.cat([varied, constant]), torch.cat([varied.flip(-1), constant]))
    assert constant_count == 1
    # the old rule averaged the constant pair in as ρ = 0; it counts as ρ = 1 (no evidence the map changed)
    assert rho == pytest.approx((spearman_of(varied, varied.flip(-1)) + 1.0) / 2)


def spearman_of(a: torch.Tensor, b: torch.Tensor) -> float:
    from cnnlab.explain.sanity import spearman

    value = spearman(a, b)
    assert value is not None
    return value


@pytest.mark.slow
def test_sanity_fails_a_constant_gradcam_and_reports_localisation_na_on_colour(resnet_at_32: Path):
    (row,) = sanity_checks(resnet_at_32, ["gradcam"], n=6)
    assert row["constant_maps"] >= 1 and not row["randomisation_pass"] and not row["passes"]
    assert row["margin"] < 0 and pick_default([row]) is None
    assert row["localisation"] is None and row["localisation_pass"] is None  # colour: no ink mask
    table = format_sanity([row])
    assert "counted as a failure" in table and "n/a" in table and "no method passes" in table
    assert "judged on randomisation only" in table


def test_sanity_repeats_report_the_spread_and_pass_only_when_every_repeat_passes(trained_run: Path):
    rows = sanity_checks(trained_run, ["saliency", "integrated-gradients"], n=8, repeats=3)
    for row in rows:
        assert row["repeats"] == 3 and row["n"] == 8
        low, high = row["spread"]["randomisation_rho"]
        assert low <= row["randomisation_rho"] <= high
        low, high = row["spread"]["margin"]
        assert low == row["margin_min"] <= row["margin"] <= high
        assert row["passes"] == (row["passed"] == 3)
    # three different image sets and random models: the spread is a real spread
    saliency = rows[0]["spread"]["randomisation_rho"]
    assert saliency[0] < saliency[1]
    table = format_sanity(rows)
    assert "x 3 sets" in table and "[" in table
    single = sanity_checks(trained_run, ["saliency"], n=8)[0]
    assert single["repeats"] == 1 and single["spread"]["margin"] == [single["margin"], single["margin"]]


def test_sanity_on_another_dataset_split(trained_run: Path, idx_test_dir: Path):
    (row,) = sanity_checks(trained_run, ["saliency"], n=4, dataset="mnist", data_dir=idx_test_dir, split="test")
    assert row["images"] == "mnist test" and row["n"] == 4
    assert "on 4 mnist test images" in format_sanity([row])


def test_a_failing_default_is_said_plainly():
    row = {
        "method": "saliency", "n": 40, "repeats": 1, "randomisation_rho": 0.57, "rho_signed": 0.57, "rho_abs": 0.57,
        "constant_maps": 0, "randomisation_pass": False, "localisation": 2.0, "localisation_pass": True,
        "passes": False, "margin": -0.14, "margin_min": -0.14, "spread": {},
    }  # fmt: skip
    table = format_sanity([row], default="saliency")
    assert "no method passes both checks" in table and "the default method, saliency, does not pass here" in table


@pytest.mark.slow
def test_viz_of_a_torchvision_model_shows_the_input_and_one_map_per_stage(resnet_at_32: Path, tmp_path: Path):
    v = visualize(resnet_at_32, out=tmp_path / "v")
    # ResNet-18 at 32x32: the stem (conv1, bn1, relu) at 16x16, then layer1..layer4 (maxpool's 8x8 is layer1's too)
    assert v["rows"] == ["input", "relu", "layer1", "layer2", "layer3", "layer4"]
    assert [layer["shape"] for layer in v["layers"]] == [
        [64, 16, 16],
        [64, 8, 8],
        [128, 4, 4],
        [256, 2, 2],
        [512, 1, 1],
    ]
    with Image.open(v["feature_maps_png"]) as png:
        assert png.format == "PNG"


def test_viz_of_seednet_starts_with_the_input(trained_run: Path, tmp_path: Path):
    assert visualize(trained_run, out=tmp_path / "v")["rows"] == ["input", "conv1", "conv2"]
