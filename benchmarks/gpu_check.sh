#!/usr/bin/env bash
# The prepared GPU run: everything a GPU must check, in one call, in at most 8 minutes on one
# H100, writing one results folder (its README.md collects the tables for the project README).
#
#   bash benchmarks/gpu_check.sh --prepare        # here, online: wheels to .whl/, data to .data/
#   bash benchmarks/gpu_check.sh [OUT]            # on the GPU machine (OUT default: $OUT or
#                                                 # runs/gpu_check)
#   bash benchmarks/gpu_check.sh --dry-run [OUT]  # every step on the CPU with tiny sizes
#
# The GPU machine has torch, Triton and CuPy but not snntorch, spikingjelly, tqdm, loguru, ninja
# or the data, and no network: --prepare downloads those wheels (no dependencies) into .whl/ and
# copies the four Fashion-MNIST .gz files into .data/fashion-mnist/ (both git-ignored through
# .git/info/exclude); carry both (the device tool's carry: [".whl", ".data"]). The run installs
# the wheels into .pkgs/ with --no-index and points SPIKEGRAD_DATA at the data.
#
# Steps (each with its own time limit, its exit status and seconds in OUT/steps.tsv; a failed
# step does not stop the others, the script's exit status is the number of failed steps):
#   env      versions, GPU, which optional modules import
#   check    python -m spikegrad.check on every device (CUDA rows: Triton, CuPy, torch)
#   tests    the test files whose CUDA variants run only on a GPU
#   cubin    the Triton kernels compiled for sm_80 and sm_90
#   speed    benchmarks/compare.py --mode speed on CUDA (layers incl. the Open Neuromorphic
#            workload: batch 16, T = 500, 16 384 neurons; the tutorial set eager and compiled)
#   train    benchmarks/compare.py, both frameworks, every rule, one epoch of Fashion-MNIST
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
MODE=run
case "${1:-}" in
  --prepare) MODE=prepare; shift ;;
  --dry-run) MODE=dry; shift ;;
  -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
esac

if [ "$MODE" = prepare ]; then
  grep -qx '/.whl/' .git/info/exclude 2>/dev/null || printf '/.whl/\n/.pkgs/\n/.data/\n' >> .git/info/exclude
  python3 -m pip download -q --no-deps -d .whl snntorch==1.0.0 spikingjelly==2.0.0 loguru tqdm \
    ninja || exit 1
  mkdir -p .data/fashion-mnist
  cp /usr/share/datasets/fashion-mnist/*-ubyte.gz .data/fashion-mnist/ || {
    echo "no Debian Fashion-MNIST here: apt-get install -y dataset-fashion-mnist"; exit 1; }
  du -sh .whl .data
  exit 0
fi

OUT_DIR=${1:-${OUT:-runs/gpu_check}}
mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
PY=${PYTHON:-python}
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --target .pkgs .whl/*.whl >"$OUT_DIR/pip.log" 2>&1 \
    || echo "warning: installing the carried wheels failed (see pip.log)"
  export PATH="$ROOT/.pkgs/bin:$PATH"
fi
export PYTHONPATH="$ROOT/.pkgs:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
[ -d .data/fashion-mnist ] && export SPIKEGRAD_DATA="$ROOT/.data/fashion-mnist"

if [ "$MODE" = dry ]; then  # the same steps on the CPU, tiny
  DEV=cpu; CHECK_ARGS="--interpret --no-timing"
  TESTS_K=(-k "not fresh_process and not interpreter_all_pass")  # those start processes
  SPEED_ARGS="--device cpu --quick --speed-set layers --T 4 --rules reset-term na --min-run-time 0.02"
  TRAIN_ARGS="--device cpu --quick --epochs 1 --train-subset 256 --test-subset 256 --rules reset-term na"
  LIMITS=(60 120 600 120 180 300)
else
  DEV=cuda; CHECK_ARGS=""; TESTS_K=()
  SPEED_ARGS="--device cuda --speed-set all --min-run-time 0.2"
  TRAIN_ARGS="--device cuda --epochs 1"
  LIMITS=(30 60 120 45 120 90)  # 465 s in all
fi

printf 'step\trc\tseconds\tcommand\n' > "$OUT_DIR/steps.tsv"
FAILED=0
step() {  # step NAME LIMIT COMMAND...
  local name=$1 limit=$2; shift 2
  local start=$SECONDS
  echo "== $name (limit ${limit}s): $*"
  timeout --kill-after=10 "$limit" "$@" >"$OUT_DIR/$name.txt" 2>&1
  local rc=$?
  printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - start))" "$*" >> "$OUT_DIR/steps.tsv"
  [ "$rc" -eq 0 ] || FAILED=$((FAILED + 1))
  tail -n 3 "$OUT_DIR/$name.txt"
}

step env "${LIMITS[0]}" $PY - <<'EOF'
import importlib, platform, torch
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda)
print("device:", torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA device")
if torch.cuda.is_available():
    print("capability", torch.cuda.get_device_capability())
for name in ("triton", "cupy", "snntorch", "spikingjelly", "torchvision", "tqdm", "matplotlib",
             "ninja", "loguru", "scipy"):
    try:
        mod = importlib.import_module(name)
        print(f"{name:13} {getattr(mod, '__version__', '?')}")
    except Exception as exc:  # noqa: BLE001
        print(f"{name:13} MISSING ({type(exc).__name__}: {exc})")
EOF
step check "${LIMITS[1]}" $PY -m spikegrad.check $CHECK_ARGS --json "$OUT_DIR/check.json"
TEST_FILES="tests/rules/test_triton_kernels.py tests/rules/test_triton_replay.py
  tests/rules/test_cupy_kernels.py tests/rules/test_cupy_launch.py tests/rules/test_ops.py
  tests/rules/test_first_use.py tests/neurons/test_spikingjelly_cupy.py tests/adapters/test_silence.py
  tests/rules/test_traffic.py tests/test_check.py tests/rules/test_stepfn.py
  tests/neurons/test_step_node_backend.py"
# shellcheck disable=SC2086
step tests "${LIMITS[2]}" $PY -m pytest -q -p no:cacheprovider "${TESTS_K[@]}" \
  --junitxml="$OUT_DIR/tests.xml" $TEST_FILES
step cubin "${LIMITS[3]}" $PY -m spikegrad.rules.triton_kernels.check --cubin --json "$OUT_DIR/cubin.json"
# shellcheck disable=SC2086
step speed "${LIMITS[4]}" $PY benchmarks/compare.py --mode speed $SPEED_ARGS --no-progress \
  --out "$OUT_DIR/speed"
# shellcheck disable=SC2086
step train "${LIMITS[5]}" $PY benchmarks/compare.py --framework both $TRAIN_ARGS --no-progress \
  --out "$OUT_DIR/train"

{
  echo "# GPU check ($MODE on $DEV), $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  echo '```'; cat "$OUT_DIR/env.txt"; echo '```'
  echo
  echo '| step | rc | seconds |'; echo '|---|---|---|'
  tail -n +2 "$OUT_DIR/steps.tsv" | awk -F'\t' '{print "| " $1 " | " $2 " | " $3 " |"}'
  for name in check tests cubin speed train; do
    echo; echo "## $name"; echo; echo '```'
    tail -n 60 "$OUT_DIR/$name.txt"
    echo '```'
    if [ -f "$OUT_DIR/$name/summary.md" ]; then echo; cat "$OUT_DIR/$name/summary.md"; fi
  done
} > "$OUT_DIR/README.md"
echo "results: $OUT_DIR/README.md ($FAILED failed steps)"
exit "$FAILED"
