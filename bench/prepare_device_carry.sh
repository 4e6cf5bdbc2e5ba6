#!/usr/bin/env bash
# On the CPU machine, before GPU runs: fill the ignored folders that `device` calls carry.
#   .whl/        wheels the GPU image lacks (cp312, manylinux): gguf, outlines-core, jsonschema,
#                and the server's (fastapi, uvicorn, pydantic, openai) with their dependencies
#   .whl_core/   the engine's wheels only (no server): what a call that also carries a GGUF half
#                fits (copy them to .whl/ on the device before bench/device_setup.sh)
#   .tok/        the embedded tokenizer as an HF folder (3.4 MB): constraint benches without the
#                GGUF (`python -m agentfast.engine.constraints.gpu_bench --tokenizer .tok`)
#   .carry/q0/ .carry/q1/ .carry/q2/   the embedded GGUF in three parts (a call carries at most
#                64 MiB with the tracked tree, 31 MB since session 34); carry one per call, the
#                next within 30 s (machine warm); each call copies its part to /tmp/emb, the
#                last sources bench/device_setup.sh, which reassembles the parts there.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx "/.whl/" .git/info/exclude || echo "/.whl/" >> .git/info/exclude
grep -qx "/.carry/" .git/info/exclude || echo "/.carry/" >> .git/info/exclude
grep -qx "/.whl_core/" .git/info/exclude || echo "/.whl_core/" >> .git/info/exclude
grep -qx "/.tok/" .git/info/exclude || echo "/.tok/" >> .git/info/exclude
for pkg in gguf outlines-core jsonschema jsonschema-specifications referencing rpds-py; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform any -d .whl "$pkg"
done
# the server and its tests (tests/server import fastapi; the logprobs test uses openai)
python3 -m pip download -q --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform any -d .whl fastapi uvicorn openai pydantic
mkdir -p .whl_core
for w in gguf outlines_core jsonschema jsonschema_specifications referencing rpds_py; do
  cp .whl/"$w"-*.whl .whl_core/
done
python3 - <<'PY'
import json
from agentfast.engine.constraints.gpu_bench import load_tokenizer
t = load_tokenizer(None)  # the embedded tokenizer, saved as tokenizer.json + its special tokens
__import__("os").makedirs(".tok", exist_ok=True)
t.tok.save(".tok/tokenizer.json")
json.dump({"eos_token": t.tok.id_to_token(t.eos_ids[0]),
           "bos_token": None if t.bos_id is None else t.tok.id_to_token(t.bos_id)},
          open(".tok/tokenizer_config.json", "w"))
PY
f=$(python3 -c "from agentfast.engine.loaders import embedded_model_path as p; print(p())")
rm -rf .carry/p0 .carry/p1 && mkdir -p .carry/q0 .carry/q1 .carry/q2
split -n 3 -d -a 1 "$f" .carry/part
for i in 0 1 2; do mv .carry/part$i .carry/q$i/part$i; done
cat .carry/q0/part0 .carry/q1/part1 .carry/q2/part2 | cmp - "$f" && echo "ready: .whl/, .whl_core/, .carry/q0-q2"
