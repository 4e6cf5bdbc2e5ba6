"""Session 8: where a turn's host time goes on the H200 host, and what keeps it low.
Part 1: the prompt build of each scripted turn replayed alone, after idling in different ways.
Part 2: the agent bench with variants patched in (no product change): switch interval, a
lingering engine worker, a loop that polls its job's items instead of sleeping in epoll."""
import collections
import json
import os
import queue
import statistics
import sys
import time

import anyio

from agentfast.agent import bench as B
from agentfast.agent import direct as D
from agentfast.agent import prompt as P
from agentfast.engine import Engine
from agentfast.server import scheduler as S

now = time.perf_counter
be = sys.argv[1]
runs = int(sys.argv[2]) if len(sys.argv) > 2 else 4
variants = sys.argv[3].split(",") if len(sys.argv) > 3 else ["base", "switch", "linger", "poll", "all"]
eng = Engine.load(None, device=os.environ.get("DEV", "cuda"), backend=be)

# ---- part 1 -------------------------------------------------------------------------------
CALLS = []
ob = P.ChatPrompts.build
def cap(self, session, messages, tools):
    CALLS.append((list(messages), tools, self)); return ob(self, session, messages, tools)
P.ChatPrompts.build = cap
anyio.run(B.bench, eng, 1, 4, False)
P.ChatPrompts.build = ob
calls = CALLS[-6:]
cp = calls[0][2]
def one_session(idle):
    ts = []
    for msgs, tools, _ in calls:
        idle()
        t0 = now(); cp.build("X", msgs, tools); ts.append(now() - t0)
    cp.release("X")
    return ts
def spin(d):
    def f():
        t = now() + d
        while now() < t: pass
    return f
def poll(d):
    def f():
        t = now() + d
        while now() < t: time.sleep(20e-6)
    return f
res = {}
for name, idle in [("b2b", lambda: None), ("sleep1ms", lambda: time.sleep(1e-3)),
                   ("sleep20ms", lambda: time.sleep(20e-3)), ("sleep200ms", lambda: time.sleep(0.2)),
                   ("spin20ms", spin(20e-3)), ("poll20ms", poll(20e-3)), ("poll200ms", poll(0.2))]:
    n = 3 if "200" in name else 10
    R = [one_session(idle) for _ in range(n)]
    res[name] = [statistics.median(r[i] for r in R) * 1e3 for i in range(6)]
    print(f"build ms {name:>11}: " + " ".join(f"{x:6.3f}" for x in res[name]), flush=True)

# ---- part 2 -------------------------------------------------------------------------------
orig_loop, orig_post, orig_turn = S.Scheduler._loop, S.Job.post, D.EngineChat.turn
LINGER = 2.0

def linger_loop(self):
    while True:
        try:
            job = self._q.get_nowait()
        except queue.Empty:
            end, job, got = now() + LINGER, None, False
            while now() < end:
                try:
                    job, got = self._q.get_nowait(), True
                    break
                except queue.Empty:
                    time.sleep(20e-6)
            if not got:
                job = self._q.get()
        if job is None:
            return
        if job.cancelled.is_set():
            continue
        try:
            self._run(job)
        except BaseException as e:
            job.post(e)

def poll_post(self, item):
    dq = getattr(self, "dq", None)
    if dq is not None:
        dq.append(item)
    else:
        orig_post(self, item)

async def poll_turn(self, messages, *, session, tools=None, tool_choice=None, response_format=None, **settings):
    # EngineChat.turn with the wait on job.dq (a deque the worker appends to) by sleep-polling
    from agentfast.agent.agent import Delta
    from agentfast.server.params import DEFAULT_TEMPERATURE, max_new_tokens, stops_of
    from agentfast.server.scheduler import Step, Work
    from agentfast.server.tool_parser import ToolParser
    eng = self.engine
    parallel = settings.get("parallel_tool_calls") is not False
    constraint, _ = self._constraint(tools, tool_choice, response_format, parallel)
    mode = D._tool_choice(tool_choice)[0]
    prompt = self.prompts.build(session, messages, tools or None)
    requested = settings.get("max_completion_tokens") or settings.get("max_tokens")
    max_new = max_new_tokens(requested, "max_tokens", len(prompt.ids), eng.max_context)
    parse_tools = bool(tools) and mode != "none"
    stops = stops_of(settings.get("stop")) + (("</tool_call>",) if parse_tools and not parallel else ())
    temperature = settings.get("temperature")
    params = self._params(max_new, DEFAULT_TEMPERATURE if temperature is None else temperature,
                          settings.get("top_p") or 1.0, settings.get("seed"), stops, constraint)
    def remember(r):
        if r.finish_reason != "cancelled":
            self.prompts.after(prompt, r.token_ids, r.stop, r.text)
    parser = ToolParser(self.formats, parallel) if parse_tools else None
    # the job exists before the worker can post: patch Job creation through submit
    job = self.scheduler.submit(Work(ids=prompt.ids, params=params, session=prompt.session, on_done=remember), None)
    dq = job.dq
    while True:
        if dq:
            item = dq.popleft()
        else:
            end = now() + 0.5e-3
            while not dq and now() < end:
                time.sleep(20e-6)
            if not dq:
                await anyio.lowlevel.checkpoint()
                continue
            item = dq.popleft()
        if isinstance(item, Step):
            if parser is not None:
                for ev in parser.push(item.text):
                    if ev.text or ev.kind != "content":
                        yield D._delta(ev)
            elif item.text:
                yield Delta("text", item.text)
            continue
        if isinstance(item, BaseException):
            raise item
        for ev in parser.finish() if parser is not None else ():
            if ev.text or ev.kind != "content":
                yield D._delta(ev)
        r = item.result
        completion = len(r.token_ids) + (1 if isinstance(r.stop, int) else 0)
        yield Delta("usage", prompt_tokens=r.prompt_tokens, completion_tokens=completion,
                    cached_tokens=r.reused_tokens, accepted=r.accepted_draft_tokens,
                    draft_length=r.accepted_draft_length, result=r)
        return

orig_job_init = S.Job.__init__
def poll_job_init(self, *a, **k):
    orig_job_init(self, *a, **k)
    self.dq = collections.deque()

def setv(v):
    sys.setswitchinterval(2e-4 if v in ("switch", "all") else 0.005)
    S.Scheduler._loop = linger_loop if v in ("linger", "all", "linger+poll") else orig_loop
    polled = v in ("poll", "all", "linger+poll")
    S.Job.post = poll_post if polled else orig_post
    S.Job.__init__ = poll_job_init if polled else orig_job_init
    D.EngineChat.turn = poll_turn if polled else orig_turn

import gc

summary = {}
for v in variants:
    sched = S._SCHEDULERS.get(eng)
    if sched is not None:
        sched.close()  # a fresh worker thread runs the variant's loop
    setv(v)
    out = anyio.run(B.bench, eng, runs, 4, True)
    gc.unfreeze()
    h = [x["host_ms"] for run in out["runs"] for x in run]
    pre = [x["host_pre_ms"] for run in out["runs"] for x in run]
    dec = [x["decode_ms"] for run in out["runs"] for x in run]
    summary[v] = out
    pf = [x["prefill_ms"] for run in out["runs"] for x in run]
    print(f"SUMMARY {be} {v:>6}: host median {statistics.median(h):.3f} mean {statistics.fmean(h):.3f} "
          f"max {max(h):.3f} | pre median {statistics.median(pre):.3f} max {max(pre):.3f} | "
          f"decode ms sum/run {sum(dec)/runs:.1f} | prefill ms median {statistics.median(pf):.2f} max {max(pf):.2f}", flush=True)
    print("   per turn:", " ".join(f"{x:.2f}" for x in h), flush=True)
outp = os.environ.get("OUT")
if outp:
    json.dump({"backend": be, "build_ms": res, "variants": summary}, open(f"{outp}/host_{be}.json", "w"), indent=1)
