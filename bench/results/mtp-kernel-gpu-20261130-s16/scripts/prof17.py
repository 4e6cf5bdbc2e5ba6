"""Where ngram+mtp's per-turn time goes in the replay: GPU time of the kernel launches (CUDA
events), host time of the module fill and of the first-step proposal, against decode_s."""
import sys, time, collections, torch
from agentfast.kernels.monokernel.kernel import Monokernel
from agentfast.engine.backends import monokernel as MB
from agentfast.engine.backends import drafting as DR
from agentfast.spec_decode import replay as R
acc = collections.defaultdict(float); cnt = collections.Counter()
ev = []
orig_launch = Monokernel.launch
def launch(self, b, nsteps, **kw):
    e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    e0.record(); orig_launch(self, b, nsteps, **kw); e1.record(); ev.append((self.plan.mtp, e0, e1))
Monokernel.launch = launch
def timed(obj, name, key):
    f = getattr(obj, name)
    def g(*a, **k):
        torch.cuda.synchronize(); t0 = time.perf_counter(); r = f(*a, **k); torch.cuda.synchronize()
        acc[key] += time.perf_counter() - t0; cnt[key] += 1; return r
    setattr(obj, name, g)
timed(MB.MonokernelBackend, "_fill_module", "fill (launch queued)")
import agentfast.kernels.monokernel.weights as W
timed(W, "start_mtp", "start_mtp")
timed(W, "start_drafting", "start_drafting")
timed(W, "set_step_inputs", "set_step_inputs")
timed(W, "start_sequence", "start_sequence")
orig_replay = R.replay
started = []
def replay(*a, **k):
    if not started:  # the timed traces start: the warm-up's counts dropped
        torch.cuda.synchronize(); acc.clear(); cnt.clear(); ev.clear(); started.append(1)
    return orig_replay(*a, **k)
R.replay = replay
rc = R.main(sys.argv[1:])
torch.cuda.synchronize()
gpu = collections.defaultdict(float); n = collections.Counter()
for m, a, b in ev:
    gpu[m] += a.elapsed_time(b); n[m] += 1
print("launch GPU ms by mtp plan:", {k: round(v, 1) for k, v in gpu.items()}, dict(n))
print("host ms:", {k: round(v * 1e3, 1) for k, v in acc.items()}, dict(cnt))
