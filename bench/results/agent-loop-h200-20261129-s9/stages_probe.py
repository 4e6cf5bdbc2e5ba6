"""Agent bench with stage stamps: where a turn's host time goes (per turn, median over runs, ms).
usage: python s9_stages.py <backend> <device> <runs>"""
import sys, time, statistics, asyncio, anyio, json
from agentfast.engine import Engine
from agentfast.agent import bench as B, prompt as P, direct as D
from agentfast.server import scheduler as S

backend, device, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
pc = time.perf_counter
ST = []  # (name, t)
def stamp(n): ST.append((n, pc()))

ob = P.ChatPrompts.build
def build(self, *a, **k):
    stamp("build0"); r = ob(self, *a, **k); stamp("build1"); return r
P.ChatPrompts.build = build
osub = S.Scheduler.submit
def submit(self, work, timeout):
    od = work.on_done
    def on_done(r):
        stamp("ondone0"); od(r); stamp("ondone1")
    if od is not None: work.on_done = on_done
    stamp("submit0"); j = osub(self, work, timeout); stamp("submit1")
    opost = j.post
    def post(item):
        stamp("post_" + type(item).__name__); opost(item)
    j.post = post
    oq = j.q
    class Q:
        def put_nowait(self, it): oq.put_nowait(it)
        def qsize(self): return oq.qsize()
        def get_nowait(self):
            it = oq.get_nowait(); stamp("got_" + type(it).__name__); return it
        async def get(self):
            it = await oq.get(); stamp("got_" + type(it).__name__); return it
    j.q = Q()
    return j
S.Scheduler.submit = submit
ors = B.ReplayEngine.stream
def rstream(self, *a, **k):
    stamp("started"); g = ors(self, *a, **k); stamp("streamret"); return g
B.ReplayEngine.stream = rstream
orun = B.run_once
async def run_once(agent, engine, wd):
    ST.clear()
    from agentfast.agent.events import TurnFinished, ToolResult
    oagen = agent.run_stream
    async def rs(task, **kw):
        async for ev in oagen(task, **kw):
            if isinstance(ev, TurnFinished): stamp("fin")
            if isinstance(ev, ToolResult): stamp("toolres")
            if type(ev).__name__ == "ToolCallStarted": stamp("tcs")
            yield ev
    agent.run_stream = rs
    stamp("fin")
    rows = await orun(agent, engine, wd)
    del agent.run_stream
    rows_st = []
    cur = []
    for n, t in ST:
        cur.append((n, t))
        if n == "fin" and len(cur) > 1:
            rows_st.append(cur); cur = [(n, t)]
    for row, st in zip(rows, rows_st):
        row["stamps"] = st
    return rows
B.run_once = run_once

eng = Engine.load(None, backend=backend, device=device)
out = anyio.run(B.bench, eng, runs, 4, True)
# per turn: stage durations
def first(st, n, after=None):
    for name, t in st:
        if name == n and (after is None or t >= after): return t
def last(st, n):
    r = None
    for name, t in st:
        if name == n: r = t
    return r
table = {}
for rows in out["runs"]:
    for r in rows:
        st = r["stamps"]; t0 = st[0][1]
        model = (r["prefill_ms"] + r["decode_ms"]) / 1e3
        d = {}
        d["fin->build"] = first(st, "build0") - t0
        d["build"] = first(st, "build1") - first(st, "build0")
        d["build->submit"] = first(st, "submit0") - first(st, "build1")
        d["submit"] = first(st, "submit1") - first(st, "submit0")
        d["submit->started"] = first(st, "started") - first(st, "submit1")
        d["stream()"] = first(st, "streamret") - first(st, "started")
        lastStep = last(st, "post_Step")
        d["started->laststep-model"] = lastStep - first(st, "started") - model
        d["laststep->ondone"] = first(st, "ondone0") - lastStep
        d["ondone"] = first(st, "ondone1") - first(st, "ondone0")
        d["ondone->postDone"] = first(st, "post_Done") - first(st, "ondone1")
        d["postDone->gotDone"] = first(st, "got_Done") - first(st, "post_Done")
        d["gotLastStep_lag"] = last(st, "got_Step") - lastStep
        end = st[-1][1]
        tr = r["tool_ms"] / 1e3
        d["gotDone->fin-tool"] = end - first(st, "got_Done") - tr
        if first(st, "tcs"):
            d["gotDone->tcs"] = first(st, "tcs") - first(st, "got_Done")
            d["tcs->toolres-tool"] = last(st, "toolres") - first(st, "tcs") - tr
            d["toolres->fin"] = end - last(st, "toolres")
        else:
            d["gotDone->tcs"] = d["tcs->toolres-tool"] = d["toolres->fin"] = 0.0
        d["host"] = r["host_ms"] / 1e3
        for k, v in d.items():
            table.setdefault(r["turn"], {}).setdefault(k, []).append(v * 1e3)
keys = list(next(iter(table.values())).keys())
print("stage".ljust(26) + "".join(f"t{t:<7}" for t in table))
for k in keys:
    print(k.ljust(26) + "".join(f"{statistics.median(table[t][k]):<8.3f}" for t in table))
print("max host per turn:", [round(max(table[t]["host"]), 3) for t in table])
