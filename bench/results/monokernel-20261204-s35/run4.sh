#!/bin/bash
# Session 35, calls 4 and 5 (carry .carry/q0, then .carry/q1): the embedded GGUF's first parts
# to /tmp/emb on the warm machine (call 6 brings the last).
mkdir -p /tmp/emb && cp .carry/q*/* /tmp/emb/ && ls /tmp/emb
