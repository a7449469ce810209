#!/usr/bin/env bash
# The hearing study's four arms side by side (docs/hearing-study.md). Each runs on one thread and stops at its
# config's cpu_budget_minutes of CPU time (counted across sittings), so running them together is fair however busy
# the machine is. Logs: runs/study/<arm>.log. `bash scripts/run_study.sh --resume` continues every arm from its
# latest checkpoint (raise cpu_budget_minutes first to train further).
set -euo pipefail
cd "$(dirname "$0")/.."
resume=()
if [ "${1:-}" = "--resume" ]; then resume=(--resume); fi
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
mkdir -p runs/study
arm() { python train_trainer.py --config "configs/study/$1.yaml" "${resume[@]}" >> "runs/study/$1.log" 2>&1; }
arm pool_baseline &
arm pool_dense &
# arms C and D read the same caches (qformer features, teacher targets): C's are built before both start
python train_trainer.py --config configs/study/qformer_dense.yaml --cache-only >> runs/study/qformer_dense.log 2>&1
arm qformer_dense &
arm qformer_dense_lora &
wait
echo "[study] all arms done: python -m audio_minichat.eval.study --models runs/study/*/final --out benchmarks/study"
