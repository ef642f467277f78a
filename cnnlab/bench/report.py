"""The text form of a ``cnnlab bench`` result."""

from __future__ import annotations

from typing import Any


def _flags(r: dict[str, Any]) -> str:
    """The cnnlab side's execution flags in words: ``channels_last, compile (reduce-overhead)``."""
    flags = [k for k, on in r["cnnlab_flags"].items() if on]
    if r.get("compile_mode", "default") != "default":
        flags = [f"compile ({r['compile_mode']})" if k == "compile" else k for k in flags]
    return ", ".join(flags) or "no flags"


def format_bench(r: dict[str, Any]) -> str:
    """The bench result as a small table."""
    lines = [
        f"{r['model']} on {r['dataset']} ({r['train_images']:,} train / {r['val_images']:,} val images), "
        f"batch {r['batch_size']}, {r['epochs']} epoch(s), {r['device']} ({r['device_name']}, {r['threads']} threads)",
        f"model: {r['forward_flops_per_image'] / 1e6:.3f} MFLOP/image forward, "
        f"{r['train_flops_per_image'] / 1e6:.3f} training; matmul peak {r['matmul_gflops']:.1f} GFLOP/s "
        f"→ compute floor {r['floor_seconds_per_epoch']:.2f} s/epoch",
        "reference: the tutorial's loop (per-sample PIL → ToTensor → Normalize, DataLoader, .item() per step); "
        f"cnnlab: cnnlab train, the same options ({_flags(r)})",
        "",
        f"{'':<10} {'s/epoch':>8} {'images/s':>9} {'GFLOP/s':>8} {'of peak':>8} {'peak MB':>8} {'val acc':>8}",
    ]
    for name in ("reference", "cnnlab"):
        s = r[name]
        lines.append(
            f"{name:<10} {s['seconds_per_epoch']:>8.2f} {s['images_per_second']:>9,.0f} {s['gflops']:>8.1f} "
            f"{100 * s['fraction_of_peak']:>7.1f}% {s['peak_memory_mb']:>8.0f} {100 * s['val_accuracy']:>7.2f}%"
        )
    lines += [
        "",
        f"speedup {r['speedup']:.1f}x  (cnnlab is {r['cnnlab']['seconds_per_epoch'] / r['floor_seconds_per_epoch']:.1f}x "
        f"the compute floor); accuracy difference {100 * r['accuracy_difference']:+.2f} points",
    ]
    if r["speedup_ceiling"]:
        lines.append(
            f"convolution kernels alone: {r['conv_seconds_per_epoch']:.2f} s/epoch, "
            f"{100 * r['conv_share']:.0f}% of cnnlab's epoch; a loop on these kernels tops out at "
            f"{r['speedup_ceiling']:.1f}x here"
        )
    return "\n".join(lines + _target_lines(r))


def _met(ok: bool | None) -> str:
    return "met" if ok else "NOT met"


def _target_lines(r: dict[str, Any]) -> list[str]:
    """The speed goals: ≥ 3x per epoch, ≥ 5x sooner to the tutorial loop's accuracy, the fast recipe."""
    t = r.get("targets")
    if not t:
        return []
    lines = ["", "targets (cnnlab side: cnnlab train with these options):"]
    lines.append(f"  per epoch: {r['speedup']:.1f}x the tutorial loop (goal ≥ 3x): {_met(r['speedup'] >= 3)}")
    reached = t["cnnlab_seconds_to_reference_accuracy"]
    goal = (
        f"the tutorial loop's final {100 * t['reference_accuracy']:.2f}% (less {100 * t['tolerance']:.1f} points) "
        f"in {t['reference_seconds']:.1f} s"
    )
    if reached:
        lines.append(
            f"  {goal}: cnnlab there in {reached:.1f} s, {t['sooner']:.1f}x sooner (goal ≥ 5x): {_met(t['sooner'] >= 5)}"
        )
    else:
        lines.append(f"  {goal}: cnnlab never reached it: NOT met")
    fast = t.get("fast_recipe")
    if fast:
        ok = fast["seconds"] <= fast["tutorial_epochs_seconds"]
        lines.append(
            f"  --recipe fast: {fast['epochs']} epochs in {fast['seconds']:.1f} s, val acc "
            f"{100 * fast['val_accuracy']:.2f}%, against the tutorial loop's {fast['tutorial_epochs']} epochs "
            f"({fast['tutorial_epochs_seconds']:.1f} s): {_met(ok)}"
        )
    if "fast_recipe_mnist_test_accuracy" in t:
        acc = t["fast_recipe_mnist_test_accuracy"]
        lines.append(
            f"  --recipe fast on mnist5k, official MNIST test: {100 * acc:.2f}% (goal ≥ 98%): {_met(acc >= 0.98)}"
        )
    return lines
