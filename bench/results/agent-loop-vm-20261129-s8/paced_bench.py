"""Agent bench with an instant model: every generation yields the scripted text's tokens at once
(no model); host = wall - tool on each turn: the loop's own work and hand-offs, on this machine."""
import sys, time, statistics, anyio, cProfile, pstats
from agentfast.engine import Engine, Chunk, Generation, GenerationResult
from agentfast.agent import bench as B
eng = Engine.load()
tok = eng.tokenizer
def fast_stream(prompt, params, session=None, **kw):
    c = params.constraint
    text = B.SCRIPT[_i[0] % len(B.SCRIPT)]; _i[0] += 1
    ids = tok.encode(text, add_special=False)
    g = Generation(iter(()))
    def run():
        s0 = time.perf_counter()
        time.sleep(0.002)  # prefill
        t0 = time.perf_counter()
        for i in ids:
            time.sleep(0.0005)
            yield Chunk(tok.decode([i]), [i])
        g.result = GenerationResult(text=text, token_ids=ids, finish_reason="stop", prompt_tokens=len(prompt),
                                    reused_tokens=0, prefilled_tokens=len(prompt), stop=min(eng.eos_ids),
                                    ttft_s=t0 - s0, decode_s=time.perf_counter() - t0)
    g._it = run()
    return g
_i = [0]
eng.stream = fast_stream
prof = len(sys.argv) > 1
out = anyio.run(B.bench, eng, 1, 4, True)
_i[0] = 0
if prof:
    pr = cProfile.Profile(); pr.enable()
out = anyio.run(B.bench, eng, 10, 4, False)
if prof:
    pr.disable(); pstats.Stats(pr).sort_stats("cumtime").print_stats(45)
h = [[r["host_ms"] for r in run] for run in out["runs"]]
per_turn = [statistics.median(run[i] for run in h) for i in range(6)]
print("host ms per turn (median of 10 runs):", [round(x, 3) for x in per_turn])
print("all: median %.3f max %.3f" % (statistics.median(x for r in h for x in r), max(x for r in h for x in r)))
