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
        f"cnnlab: engine.fit ({_flags(r)})",
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
    return "\n".join(lines)
