#!/usr/bin/env bash
# The GPU measurements of docs/benchmarks.md in one run, each step with a time
# limit, most important first, so that a short GPU lease measures what it can.
usage() {
  cat <<'EOF'
usage: scripts/gpu_benchmarks.sh VGG_WEIGHTS PHOTOS MODEL OUT [BUDGET_S]

Runs on a CUDA machine, in the repository root, in about 7 minutes:
  1. training step: bf16-cl-compile against the -pad8 / -slicepad levers
  2. stylization: compiled + CUDA graphs (-pad8 too), and fp32 eager + CUDA graphs
  3. the data loader alone on all cores (JPEG folder and prepared)
  4. train.py end to end (Lightning, defaults: bf16, channels_last, compile)
  5. stylize.py on a folder of 1920x1080 JPEGs, default and --compile --cuda-graphs
  6. tests/test_cuda.py
Writes OUT/log.txt and OUT/*.json; a step that would outlast BUDGET_S
(default 420) seconds in all is cut short or skipped. The training style image
is docs/chicago_wave.jpg (speed does not depend on it). DEVICE=cpu runs the
benchmark steps on the CPU instead (a check of the commands, slow).

  VGG_WEIGHTS  the Caffe VGG-16 file (vgg16_caffe_to_relu4_3.pth)
  PHOTOS       a folder of a few hundred photos
  MODEL        a trained .pth model file (for stylize.py)
  OUT          a folder for the results

examples:
  scripts/gpu_benchmarks.sh vgg16_caffe_to_relu4_3.pth photos/ wave.pth results/
  scripts/gpu_benchmarks.sh vgg.pth photos/ wave.pth results/ 300   # a shorter lease
EOF
}
case "${1:-}" in -h | --help) usage; exit 0 ;; esac
if [ $# -lt 4 ]; then usage >&2; exit 2; fi
VGG=$1 PHOTOS=$2 MODEL=$3 OUT=$4 BUDGET=${5:-420}
for f in "$VGG" "$MODEL"; do [ -f "$f" ] || { echo "error: $f: file not found" >&2; exit 2; }; done
[ -d "$PHOTOS" ] || { echo "error: $PHOTOS: folder not found" >&2; exit 2; }
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
mkdir -p "$OUT" && LOG=$OUT/log.txt && : > "$LOG"
WORK=$(mktemp -d)
START=$(date +%s)
step() {  # name limit_s command...: runs it unless the budget is spent
  local name=$1 limit=$2
  shift 2
  local left=$((BUDGET - $(date +%s) + START))
  if [ $left -lt 20 ]; then echo "== $name: skipped (${left} s left)" | tee -a "$LOG"; return; fi
  [ "$limit" -gt $left ] && limit=$left
  echo "== $name (limit ${limit} s, at $(($(date +%s) - START)) s)" | tee -a "$LOG"
  local t0=$(date +%s)
  timeout -k 5 "$limit" "$@" >> "$LOG" 2>&1
  echo "== $name: exit $? in $(($(date +%s) - t0)) s" | tee -a "$LOG"
}
DEVICE=${DEVICE:-cuda}
B="$PY scripts/benchmark.py --device $DEVICE --steps 10 --rounds 3 --warmup 3"
WORKERS=$(($(nproc) - 1))
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true; nproc
  $PY -c "import torch; print('torch', torch.__version__)"; git rev-parse --short HEAD; } 2>&1 | tee -a "$LOG"
$PY scripts/prepare_dataset.py --input "$PHOTOS" --output "$WORK/prepared" >> "$LOG" 2>&1 &
PREP=$!

step train-levers 200 $B --skip-inference --batch-size 16 \
  --train-configs bf16-cl-compile,bf16-cl-compile-pad8,bf16-cl-compile-slicepad --json "$OUT/train.json"
GRAPH=-graph
[ "$DEVICE" = cuda ] || GRAPH=  # CUDA graphs need CUDA
step stylize-levers 100 $B --skip-training --sizes 256,1024,1920x1080 \
  --infer-configs fp32,fp32$GRAPH,bf16-cl-compile$GRAPH,bf16-cl-compile$GRAPH-pad8 \
  --json "$OUT/stylize.json"
wait $PREP
step loader 40 bash -c "$B --loader-only --data '$PHOTOS' --batch-size 32 --workers $WORKERS \
  --json '$OUT/loader_jpeg.json' && $B --loader-only --data '$WORK/prepared' --batch-size 32 \
  --workers $WORKERS --json '$OUT/loader_prepared.json'"
step train.py 120 $PY train.py style=custom style.image=docs/chicago_wave.jpg style.name=gpu \
  loss=caffe "loss.vgg_weights=$VGG" "data.root=$WORK/prepared" data.batch_size=16 \
  trainer.max_steps=500 trainer.log_every_n_steps=50 trainer.enable_progress_bar=false \
  "trainer.accelerator=$([ "$DEVICE" = cuda ] && echo gpu || echo cpu)" "output_dir=$WORK/run"
$PY - "$WORK/run" 16 <<'EOF' 2>&1 | tee -a "$LOG"
import glob, sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
runs = sorted(glob.glob(f"{sys.argv[1]}/tb/**/events*", recursive=True))
ea = EventAccumulator(runs[-1]) if runs else None
if ea is not None and (ea.Reload() or True) and "loss/total" in ea.Tags()["scalars"]:
    loss = ea.Scalars("loss/total")
    if len(loss) >= 3:  # from the second logged step: compilation excluded
        a, b = loss[1], loss[-1]
        rate = (b.step - a.step) * int(sys.argv[2]) / (b.wall_time - a.wall_time)
        print(f"train.py: steps {a.step}-{b.step}: {rate:.0f} images/s sustained")
EOF
mkdir -p "$WORK/hd"
$PY -c "
import glob, sys
from PIL import Image
for i, f in enumerate(sorted(glob.glob(sys.argv[1] + '/*'))[:64]):
    Image.open(f).convert('RGB').resize((1920, 1080)).save(f'{sys.argv[2]}/{i:03d}.jpg', quality=90)
" "$PHOTOS" "$WORK/hd" >> "$LOG" 2>&1
S="$PY stylize.py --model $MODEL --input $WORK/hd --device $DEVICE --quiet"
step stylize-default 60 $S --output "$WORK/o1"
step stylize-compiled 90 $S --output "$WORK/o2" --compile --cuda-graphs
step tests 60 $PY -m pytest -q -p no:cacheprovider tests/test_cuda.py
echo "== done in $(($(date +%s) - START)) s" | tee -a "$LOG"
grep -E "^(train |stylize |data |kind|--|quality|train.py:|done )|images/s\)|passed|failed" "$LOG"
rm -rf "$WORK"
