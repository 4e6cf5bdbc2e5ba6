import json, sys, torch
from agentfast.engine import Engine, SamplingParams
from agentfast.spec_decode.replay import load_traces, _assistant_turns, trace_kind
from agentfast.spec_decode.tsim import match_lengths
from agentfast.spec_decode.mtp import make_drafter, mtp_logits
eng = Engine.load(device="cpu", drafter="ngram")
mtp = make_drafter("mtp", eng.model, eng.backend)
m = eng.backend.model
res = []
for tr in load_traces():
    kind = trace_kind(tr)
    for i in _assistant_turns(tr):
        prompt = eng.encode_chat(tr["messages"][:i])
        o = list(eng.generate(prompt, SamplingParams(max_tokens=128, temperature=0.0)).token_ids)
        L, P, S = match_lengths(eng.drafter, prompt, o)
        cache = m.new_cache(keep_hidden=True)
        with torch.inference_mode():
            m.forward(torch.tensor(prompt + o), 0, cache)
        mtp.bind(cache)
        # probability of the first draft: rerun the module's state to get logits
        for p in range(1, len(o)):
            hist = prompt + o[:p]
            d = mtp.propose(hist, 1)
            st = mtp._state(cache)
            n = len(hist)
            with torch.inference_mode():
                o1 = mtp._run(st, cache.hidden[n - 2:n - 1], hist[n - 1:n], n - 2)
                pr = torch.softmax(mtp_logits(mtp.cfg, mtp.modules[0], mtp.head, o1)[-1], -1)
            res.append((kind, int(P[p] > 0 and S[p] >= 2), int(d[0] == o[p]), float(pr.max())))
json.dump(res, open(sys.argv[1], "w"))
