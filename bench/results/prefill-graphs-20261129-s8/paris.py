import torch
from agentfast.engine import Engine, SamplingParams
for be in ("graph", "monokernel"):
    eng = Engine.load(None, backend=be, device="cuda")
    msgs = [{"role": "user", "content": "What is the capital of France?"}]
    ids = eng.encode_chat(msgs)
    for gp in (True, False):
        eng.backend.graph_prefill = gp
        r = eng.chat(msgs)
        c = eng.backend.new_cache()
        lg = eng.backend.prefill(c, ids, 0)
        top = torch.topk(lg.float(), 5)
        print(be, "graph_prefill", gp, len(ids), repr(r.text[:80]), [(int(i), round(float(v), 3)) for v, i in zip(top.values, top.indices)])
