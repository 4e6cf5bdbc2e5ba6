# Session 28, call 2: bench/probes/fanin: a grid barrier (release-add, acquire poll) with its
# count spread over C counters polled by C lanes of warp 0, against one counter polled by
# thread 0 (the monokernel's wait today); 132 and 264 programs of 4 warps.
nvidia-smi -L
timeout 200 python bench/probes/fanin/fanin.py 3000
cp $OUT/fanin.json $OUT/run2-fanin.json 2>/dev/null; true
