#!/usr/bin/env bash
# The GPU half of the speed benchmarks, as one short script: run it once on a machine with a CUDA GPU
# (about 5 minutes on an H100) from the repository root. It needs torch and torchvision there, not an
# install of cnnlab (it runs the package from this checkout), and no dataset (--synthetic data).
#
#   bash benchmarks/gpu_check.sh                 # results in ./gpu-results/*.json
#   OUT=/some/dir bash benchmarks/gpu_check.sh
#   DEVICE=cpu N=600 EPOCHS=2 bash benchmarks/gpu_check.sh   # a quick dry run of the script itself
#
# Files: hello.json, one NAME.json per line below, summary.txt and errors.log (8 in all).
# Each line is `cnnlab bench`: the tutorial's reference loop and cnnlab's trainer on the same data,
# 3 epochs (the median epoch leaves out the first one's warm-up and compilation):
#   tutorial          seednet, batch 64, SGD 0.01/0.5, fp32, channels-last
#   tutorial_amp      the same with bf16 autocast
#   tutorial_graphs   the same with torch.compile mode reduce-overhead (CUDA graphs: one launch a step)
#   fastnet_amp       fastnet, bf16 autocast, batch 64
#   fastnet_amp_b1024 fastnet, bf16 autocast, batch 1024 (lr 0.1): images/s of a large-batch run
set -u
OUT=${OUT:-gpu-results}
DEVICE=${DEVICE:-cuda}
N=${N:-60000}
EPOCHS=${EPOCHS:-3}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

run() {  # run NAME ARGS...: one bench, its JSON in $OUT/NAME.json, a line in $OUT/summary.txt
    local name=$1
    shift
    if timeout 240 "$PY" -m cnnlab bench --synthetic "$N" --epochs "$EPOCHS" --device "$DEVICE" --json "$@" \
        >"$OUT/$name.json" 2>>"$OUT/errors.log"; then
        "$PY" - "$OUT/$name.json" "$name" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
ref, lab = r["reference"], r["cnnlab"]
print(f"{sys.argv[2]:<18} reference {ref['seconds_per_epoch']:7.2f} s/epoch  cnnlab {lab['seconds_per_epoch']:6.2f} s/epoch "
      f"({lab['images_per_second']:>9,.0f} img/s)  speedup {r['speedup']:5.1f}x  "
      f"val acc {100 * ref['val_accuracy']:.2f} / {100 * lab['val_accuracy']:.2f}%")
EOF
    else
        echo "$name failed: $(tail -n 1 "$OUT/errors.log")"
    fi | tee -a "$OUT/summary.txt"
}

"$PY" -m cnnlab hello --json >"$OUT/hello.json" 2>&1 && cat "$OUT/hello.json"
run tutorial                                   # cnnlab train's defaults (channels-last), with the targets
run tutorial_nchw --no-channels-last --no-fast-recipe  # is channels-last also the faster layout on CUDA?
run tutorial_amp --amp --no-fast-recipe
run tutorial_graphs --compile-mode reduce-overhead --no-fast-recipe
run fastnet_amp --model fastnet --amp --no-fast-recipe
run fastnet_amp_b1024 --model fastnet --amp --batch-size 1024 --lr 0.1 --no-fast-recipe
