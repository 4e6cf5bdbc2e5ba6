"""Compile statistics of constraints: time, states, table bytes (the cost of a new schema).

`python -m agentfast.engine.constraints.bench [schemas.json] [--model PATH] [--json FILE]` prints
one row per schema of a corpus (default: tests/data/schemas.json) over the model's tokenizer
(default: the embedded SmolLM2), then min / median / max. Table bytes are given twice: `full`,
every allowed transition listed (CSR: the former form), and `KiB`, the tables as built (default
next state + exceptions); `exc` counts the exception entries. Compiles bypass the automaton cache
(each row is a cold compile; the vocabulary is built once before).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

from ..tokenizer import Tokenizer


def compile_stats(schemas: list[dict[str, Any]], tokenizer: Tokenizer) -> list[dict[str, Any]]:
    """One row per schema: name, states, transitions (allowed (state, token) pairs), exceptions,
    table bytes as built and with every transition listed (full), compile ms (schema -> regex ->
    outlines-core Index -> tables). `schemas` holds {"name", "schema",
    "strict"?} dicts or bare schemas."""
    from . import build, json_schema
    from . import regex as regex_constraint

    build(regex_constraint("warm"), tokenizer)  # builds the vocabulary once, outside the rows
    rows = []
    for i, s in enumerate(schemas):
        entry = s if "schema" in s else {"name": f"schema{i}", "schema": s}
        t0 = time.perf_counter()
        c = json_schema(entry["schema"], strict=entry.get("strict", True))
        a = build(c, tokenizer)
        ms = (time.perf_counter() - t0) * 1e3
        rows.append({"name": entry["name"], "states": a.num_states, "transitions":
                     a.num_transitions, "exceptions": a.num_exceptions, "bytes": a.nbytes,
                     "full_bytes": a.full_csr_nbytes, "ms": ms})
    return rows


COLUMNS = (("states", "states", 7, 1), ("trans", "transitions", 9, 1),
           ("exc", "exceptions", 7, 1), ("full KiB", "full_bytes", 9, 1024),
           ("KiB", "bytes", 7, 1024), ("ms", "ms", 7, 1))


def format_table(rows: list[dict[str, Any]]) -> str:
    def line(label: str, values: list[float]) -> str:
        cells = [f"{v / div:{w}.1f}" if key == "ms" else f"{v / div:{w}.0f}"
                 for v, (_, key, w, div) in zip(values, COLUMNS, strict=True)]
        return f"{label:24} " + " ".join(cells)

    lines = [f"{'schema':24} " + " ".join(f"{h:>{w}}" for h, _, w, _ in COLUMNS)]
    lines += [line(r["name"], [r[k] for _, k, _, _ in COLUMNS]) for r in rows]
    for label, f in (("min", min), ("median", statistics.median), ("max", max)):
        lines.append(line(label, [f(r[k] for r in rows) for _, k, _, _ in COLUMNS]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path(__file__).resolve().parents[2] / "tests" / "data" / "schemas.json"
    ap.add_argument("corpus", nargs="?", default=str(default))
    ap.add_argument("--model", default=None, help="checkpoint folder or .gguf (default: embedded)")
    ap.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = ap.parse_args(argv)
    from ..loaders import load_model

    tokenizer = load_model(args.model).tokenizer
    schemas = json.loads(Path(args.corpus).read_text())
    rows = compile_stats(schemas, tokenizer)
    print(format_table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
