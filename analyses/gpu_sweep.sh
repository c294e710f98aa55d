#!/usr/bin/env bash
# Sweep trials side by side on one lent GPU machine (the workplace's `device` tool), each trial in
# its own root so that none waits on another's base; the rows come back in one archive that
# analyses/gpu_collect.py merges into a local root for sweep.py --table-only.
#
#   bash analyses/gpu_sweep.sh TRIALS_FILE SECONDS
#
# TRIALS_FILE holds one trial per line: `root|preset|seeds|name:key=value,...[|strategies[|wait]]`
# (`wait`: start once the root's base is pre-trained, to share it with the line that trains it). Trials still
# training after SECONDS are stopped (their rows are missing, never partial). The machine has no
# network: the packages its image lacks travel as wheels in .whl/ (see the device tool's README).
set -u
trials=$1
seconds=$2
out=${OUT:-/tmp/gpu-out}
mkdir -p "$out" g
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PWD/src:$PWD/cli
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 CUBLAS_WORKSPACE_CONFIG=:4096:8
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, transformer_lens, mechrecall; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" || exit 1
start=$(date +%s)
pids=()
while IFS='|' read -r root preset seeds trial strategies wait; do
    [ -z "$root" ] && continue
    log="g/$root-${strategies:-both}.log"
    (
        # a line marked `wait` starts once its root's base is pre-trained (it shares that base)
        if [ "${wait:-}" = wait ]; then
            until grep -qs '"status": *"complete"' g/"$root"/bases/*/manifest.json; do sleep 3; done
        fi
        exec python3 analyses/sweep.py --root "g/$root" --preset "$preset" --seeds "$seeds" --trial "$trial" \
            --strategies "${strategies:-mixed,two-stage}" --device "${DEVICE:-cuda}" --threads 1 --no-progress
    ) >"$log" 2>&1 &
    pids+=($!)
    echo "started $root ($trial, seeds $seeds, ${strategies:-both} strategies${wait:+, after the base})"
done <"$trials"
while [ $(( $(date +%s) - start )) -lt "$seconds" ]; do
    alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=$((alive + 1)); done
    [ "$alive" -eq 0 ] && break
    sleep 5
done
for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
sleep 2
echo "elapsed $(( $(date +%s) - start )) s"
for log in g/*.log; do echo "== $log"; tail -4 "$log"; done
# each run's steps so far (finished or stopped), to read the speed of the ones that did not finish
find g -name train_log.json -printf '%p %TT\n' | sort
tar czf "$out/gpu.tgz" --exclude='*.safetensors' --exclude='*.pt' --exclude='*.arrow' --exclude=plotly.min.js --exclude=summary.html g
ls -la "$out"
