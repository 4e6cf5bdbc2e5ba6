"""Bench output: a markdown table (printed last) and a PNG plot beside the JSON records.

Reads records as `run.py` emits them; knows nothing about backends.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path


def table(records: list[dict]) -> str:
    timed = [r for r in records if "tokens_per_s" in r]
    if not timed:
        return "(no timings)"
    ctxs = sorted({r["context"] for r in timed})
    head = records[0]
    lines = [
        f"GPU: {head.get('gpu')}, copy bandwidth {head.get('copy_TBps') or 0:.2f} TB/s "
        f"(read+write), torch {head.get('torch')}, triton {head.get('triton')}, {head.get('date')}",
        "",
        "| model | backend | roofline tok/s | "
        + " | ".join(f"ctx {c}: tok/s (ms, % roofline)" for c in ctxs) + " |",
        "| --- | --- | --- | " + " | ".join("---" for _ in ctxs) + " |",
    ]
    rows: dict[tuple[str, str], dict[int, dict]] = defaultdict(dict)
    for r in timed:
        rows[(r["model"], r["backend"])][r["context"]] = r
    for (model, backend), by_ctx in rows.items():
        roof = next(iter(by_ctx.values())).get("roofline_tokens_per_s")
        cells = []
        for c in ctxs:
            r = by_ctx.get(c)
            if r is None:
                cells.append("")
                continue
            pct = f", {100 * r['tokens_per_s'] / roof:.0f}%" if roof else ""
            cells.append(f"{r['tokens_per_s']:,.0f} ({r['ms_per_token']:.3f} ms{pct})")
        roof_s = f"{roof:,.0f}" if roof else "-"
        lines.append(f"| {model} | {backend} | {roof_s} | " + " | ".join(cells) + " |")
    checks = [r for r in records if "check" in r]
    if checks:
        lines += ["", "Greedy check, teacher-forced against the reference backend in fp32 on the "
                  "same bf16 weights (a flip is a step where the fast path's token is not the "
                  "reference's argmax; its gap is the reference's max logit minus its logit of "
                  "that token):", ""]
        for r in checks:
            c = r["check"]
            s = ("every token equals the reference's argmax" if c["equal"] else
                 f"{c['flips']} near-tie flips (first at step {c['first_flip']}), max gap "
                 f"{c['max_flip_gap']:.4f}; median top-2 gap {c['median_top2_gap']:.3f}")
            t = (f" / T = {c['T']} (oracle drafts, {c['accepted']} of {c['drafted']} kept)"
                 if c.get("T") else "")
            lines.append(f"- {r['model']} / {r['backend']}{t} / ctx {r.get('context')}: "
                         f"{c['steps']} steps, {s}")
    errors = [r for r in records if "error" in r]
    for r in errors:
        lines.append(f"- ERROR {r['model']} / {r['backend']} / ctx {r.get('context')}: "
                     f"{r['error']}")
    return "\n".join(lines)


def plot(records: list[dict], png: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    timed = [r for r in records if "tokens_per_s" in r]
    if not timed:
        return False
    ctx = 1024 if any(r["context"] == 1024 for r in timed) else timed[0]["context"]
    models = list(dict.fromkeys(r["model"] for r in timed))
    backends = list(dict.fromkeys(r["backend"] for r in timed))
    fig, ax = plt.subplots(figsize=(2.2 * len(models) + 2, 4.5))
    width = 0.8 / max(len(backends), 1)
    for j, b in enumerate(backends):
        ys = [next((r["tokens_per_s"] for r in timed if r["model"] == m and r["backend"] == b
                    and r["context"] == ctx), 0) for m in models]
        ax.bar([i + j * width for i in range(len(models))], ys, width, label=b)
    for i, m in enumerate(models):
        roof = next((r["roofline_tokens_per_s"] for r in timed if r["model"] == m), None)
        if roof:
            ax.hlines(roof, i - 0.1, i + 0.9, colors="k", linestyles="--",
                      label="roofline" if i == 0 else None)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(models))], models)
    ax.set_yscale("log")
    ax.set_ylabel("tokens/s (batch 1, log scale)")
    ax.set_title(f"decode at context {ctx}, {timed[0].get('gpu')}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return True


def write_report(records: list[dict], stem: Path, command: str) -> str:
    text = f"Command: `{command}`\n\n" + table(records)
    stem.with_suffix(".md").write_text(text + "\n")
    if not plot(records, stem.with_suffix(".png")):
        print("(matplotlib not installed: no plot)")
    print(text)
    return text


def merge(paths: list[Path], stem: Path, command: str) -> str:
    """One report from the records of several runs (each record keeps its own run's copy
    bandwidth and roofline): `python -m agentfast.engine.bench.report OUT_STEM A.json B.json`."""
    import json

    latest: dict[tuple, dict] = {}  # a later run's record replaces an earlier one's
    for p in paths:
        for r in json.loads(Path(p).read_text()):
            kind = "check" if "check" in r else "error" if "error" in r else "time"
            latest[(r["model"], r["backend"], r.get("context"), kind)] = r
    records = list(latest.values())
    stem.with_suffix(".json").write_text(json.dumps(records, indent=1))
    return write_report(records, stem, command)


if __name__ == "__main__":
    import sys

    merge([Path(p) for p in sys.argv[2:]], Path(sys.argv[1]), " ".join(sys.argv[2:]))
