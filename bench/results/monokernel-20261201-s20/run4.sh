# Session 20, call 4 (carries the model's first half): copies it; the machine stays warm for call 5
source bench/device_setup.sh >/dev/null 2>&1
ls -la /tmp/emb
