#!/usr/bin/env bash
# One command for a fresh GPU machine with no network: offline install, environment, the gpu tests, the headline
# benchmark rows, one summary. Run from anywhere (it works in the repository root); OUT_DIR is relative to
# where it is run.
#
#   bash benchmarks/device_check.sh [OUT_DIR]             # GPU: <= 9 minutes on an H100 / H200
#   bash benchmarks/device_check.sh --dry-run [OUT_DIR]   # CPU: the same plan on tiny shapes (CI runs this)
#
# OUT_DIR (default benchmarks/out/) receives seven files: summary.md, device_check.log (every stage's output),
# stages.tsv, env.json, bench_loss.json, bench_sampler.json, bench_trainer.json (earlier copies are replaced).
# The summary is printed last, then one line: `device_check: done in S s; stages K/6 ok ...; targets ...`.
# Exit status: 0 when every stage finished ok (a missed target is a measurement, not an error), 1 otherwise.
#
# Each stage runs under its own cap (`timeout`); a stage that fails or runs out of time is recorded and the next
# one starts. Caps, from per-row cost estimates on an H100 / H200 (README, "Measuring on a GPU", says how they
# were estimated), each about 1.5-2x its estimate:
#   install    65 s  editable build of r1fast._C (38 CPU-seconds of C++ here, ~16 s critical path) + peer wheels
#   env        25 s  imports of torch and each peer
#   gpu-tests  90 s  51 tests, ~100 Triton compiles at ~0.4 s (4 pytest workers where pytest-xdist is installed)
#   loss      140 s  10 rows x 11 calls of <= 0.2 s (softcap and fp32-head rows since issue 11); Triton compiles of
#                    each variant; Liger's fused loss compiles with torch.compile
#   sampler    90 s  model init, 20 CUDA-graph captures, 256 decode steps, HF generate 256 steps at ~20-60 ms
#   trainer   105 s  3 models, 2 steps each (one warm-up, one measured); TRL's 2 x HF generate of 128 x 256 tokens
# 515 s of caps plus 20 s kept for the summary (and a stage's kill grace) fit the 540 s budget; a stage never runs
# past the budget's end (its cap shrinks to what is left, and a stage left under 5 s is skipped), so the whole check
# ends within R1FAST_CHECK_BUDGET_S (default 540 s). None of the estimates has been checked on a GPU yet.
#
# Peers travel as wheels in .whl/ at the repository root (git-ignored), downloaded on a machine with network for
# the GPU machine's Python 3.12 on x86-64 (README, "Measuring on a GPU"):
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 -d .whl \
#     trl==1.16.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 liger-kernel==0.8.5
# Each peer is installed with its needs resolved offline against what the machine has plus .whl/; one that cannot
# be (a need missing from .whl/) is left out, and the summary says "not installed".
# shellcheck disable=SC2317  # install and gpu_tests run through `bash -c`, under timeout
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd) || exit 2

DRY=0
OUT_DIR=$ROOT/benchmarks/out
for arg in "$@"; do
    case $arg in
        --dry-run) DRY=1 ;;
        -h | --help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) echo "device_check: unknown option $arg (usage: device_check.sh [--dry-run] [OUT_DIR])" >&2; exit 2 ;;
        *) OUT_DIR=$arg ;;
    esac
done
mkdir -p "$OUT_DIR" || exit 2
OUT_DIR=$(cd "$OUT_DIR" && pwd)  # relative to where the command was given
cd "$ROOT" || exit 2
LOG=$OUT_DIR/device_check.log
STAGES=$OUT_DIR/stages.tsv
rm -f "$OUT_DIR"/{summary.md,device_check.log,stages.tsv,env.json,bench_loss.json,bench_sampler.json,bench_trainer.json}

export DRY PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if ((DRY)); then
    export TRITON_INTERPRET=1 CUDA_VISIBLE_DEVICES=  # CPU even where a GPU is: the Triton kernels interpreted
else
    unset TRITON_INTERPRET
fi
BUDGET=${R1FAST_CHECK_BUDGET_S:-540}
RESERVE=15  # seconds kept for the summary
GRACE=5     # seconds between a stage's SIGTERM and its SIGKILL

# stage NAME CAP_S COMMAND...: runs COMMAND under min(CAP_S, what the budget has left), its output to the console
# and the log; records name, status, exit code, seconds and cap in stages.tsv. Never ends the run.
stage() {
    local name=$1 cap=$2
    shift 2
    local left=$((BUDGET - SECONDS - RESERVE - GRACE))
    if ((left < 5)); then
        echo "#### stage $name: skipped, the ${BUDGET} s budget is spent" | tee -a "$LOG"
        printf '%s\tskipped\t-\t0\t%s\tbudget spent\n' "$name" "$cap" >>"$STAGES"
        return
    fi
    local note=""
    if ((cap > left)); then
        note="cap cut from $cap s to $left s by the budget"
        cap=$left
    fi
    echo "#### stage $name (cap $cap s): $*" | tee -a "$LOG"
    local start=$SECONDS
    timeout --kill-after=$GRACE "$cap" "$@" 2>&1 | tee -a "$LOG"
    local rc=${PIPESTATUS[0]} status=ok
    case $rc in
        0) ;;
        124 | 137) status="timed out" ;;
        *) status="failed (exit $rc)" ;;
    esac
    [[ $status == ok ]] || echo | tee -a "$LOG"  # a stage cut short may leave its last line unfinished
    echo "#### stage $name: $status after $((SECONDS - start)) s" | tee -a "$LOG"
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$status" "$rc" "$((SECONDS - start))" "$cap" "$note" >>"$STAGES"
}

# The offline install: r1fast itself (building r1fast._C with the machine's cmake, ninja and pybind11), then each
# peer whose wheel is in .whl/. A peer that cannot be installed is reported and left out, not a failure.
install() {
    local rc=0 peer wheel dry=()
    if ((DRY)); then
        dry=(--dry-run)  # pip resolves the peers offline and installs nothing
        echo "dry run: r1fast is not reinstalled (would run: $PY -m pip install --no-index --no-build-isolation" \
            "--no-deps -e .)"
    else
        "$PY" -m pip install --no-index --no-build-isolation --no-deps -e . || rc=1
    fi
    if compgen -G ".whl/*.whl" >/dev/null; then
        for peer in trl==1.16.0 liger-kernel flash-attn; do
            wheel=${peer%%==*}
            if ! compgen -G ".whl/${wheel//-/_}-*.whl" >/dev/null; then
                echo "peer ${peer}: no wheel in .whl/, not installed"
                continue
            fi
            "$PY" -m pip install --no-index --find-links .whl "${dry[@]}" "$peer" ||
                echo "peer ${peer}: could not be installed offline (a need missing from .whl/? see above), left out"
        done
    else
        echo "no .whl/ folder: peers as the machine has them"
    fi
    "$PY" -c "import r1fast, r1fast._C; print('r1fast', r1fast.__version__, 'with', r1fast._C.__file__)" || rc=1
    return "$rc"
}

gpu_tests() {
    local files extra=()
    mapfile -t files < <(grep -rl --include='*.py' 'mark\.gpu' tests | sort)
    if ((!DRY)) && "$PY" -c "import xdist" 2>/dev/null; then
        extra+=(-n 4)  # Triton compiles dominate: four processes compile side by side
    fi
    if "$PY" -c "import pytest_timeout" 2>/dev/null; then
        extra+=(--timeout 60)  # one hung test must not take the whole stage
    fi
    "$PY" -m pytest -m gpu -v -rfE --tb=short -p no:cacheprovider "${extra[@]}" "${files[@]}"
}
export -f install gpu_tests

: >"$LOG"
: >"$STAGES"
mode=$( ((DRY)) && echo 'DRY RUN, ')
echo "device_check: ${mode}out $OUT_DIR, budget $BUDGET s, python $(command -v "$PY")" | tee -a "$LOG"
# The headline rows: the loss at N = 8192, H = 1536; the sampler at the 0.5B shape (256 sequences, prompt 128, 256
# new tokens, HF generate for all 256); one warm trainer step each. The dry run: the same rows at --smoke shapes.
if ((DRY)); then
    loss_args=(--smoke)
    sampler_args=(--smoke --hf-new-tokens 4)
    trainer_args=(--smoke --steps 1)
else
    loss_args=(--shapes 8192x1536)
    sampler_args=(--shapes 0.5B --seqs 256 --prompt-lens 128 --new-tokens 256 --hf-new-tokens 256)
    trainer_args=(--steps 1)
fi
stage install 65 bash -c install
stage env 25 "$PY" benchmarks/device_check.py env "$OUT_DIR"
stage gpu-tests 90 bash -c gpu_tests
stage loss 140 "$PY" benchmarks/bench_loss.py "${loss_args[@]}" --json "$OUT_DIR/bench_loss.json"
stage sampler 90 "$PY" benchmarks/bench_sampler.py "${sampler_args[@]}" --no-kernel --json "$OUT_DIR/bench_sampler.json"
stage trainer 105 "$PY" benchmarks/bench_trainer.py "${trainer_args[@]}" --json "$OUT_DIR/bench_trainer.json"

summary_flags=(--elapsed "$SECONDS")
((DRY)) && summary_flags+=(--dry-run)
"$PY" benchmarks/device_check.py summary "$OUT_DIR" "${summary_flags[@]}" 2>&1 | tee -a "$LOG"
rc=${PIPESTATUS[0]}
if [[ ! -s $OUT_DIR/summary.md ]]; then  # the summary itself broke: the stages' statuses are still known
    failed=$(awk -F'\t' '$2 != "ok" {printf "%s%s %s", sep, $1, $2; sep = "; "}' "$STAGES")
    echo "device_check: done in $SECONDS s; the summary failed (exit $rc); stages not ok: ${failed:-none}; log $LOG"
    exit 1
fi
exit "$rc"
