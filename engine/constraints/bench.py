"""Compile statistics of constraints: time, states, table bytes (the cost of a new schema).

`python -m agentfast.engine.constraints.bench [schemas.json] [--model PATH]` prints one row per
schema of a corpus (default: tests/data/schemas.json) over the model's tokenizer (default: the
embedded SmolLM2), then min / median / max. Compiles bypass the automaton cache (each row is a
cold compile; the vocabulary is built once before).
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
    """One row per schema: name, states, transitions (CSR entries), table bytes, compile ms
    (schema -> regex -> outlines-core Index -> tables). `schemas` holds {"name", "schema",
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
                     a.tokens.numel(), "bytes": a.nbytes, "ms": ms})
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'schema':24} {'states':>7} {'trans':>9} {'KiB':>8} {'ms':>8}"]
    for r in rows:
        lines.append(f"{r['name']:24} {r['states']:7d} {r['transitions']:9d} "
                     f"{r['bytes'] / 1024:8.0f} {r['ms']:8.1f}")
    for label, f in (("min", min), ("median", statistics.median), ("max", max)):
        lines.append(f"{label:24} {f(r['states'] for r in rows):7.0f} "
                     f"{f(r['transitions'] for r in rows):9.0f} "
                     f"{f(r['bytes'] for r in rows) / 1024:8.0f} {f(r['ms'] for r in rows):8.1f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path(__file__).resolve().parents[2] / "tests" / "data" / "schemas.json"
    ap.add_argument("corpus", nargs="?", default=str(default))
    ap.add_argument("--model", default=None, help="checkpoint folder or .gguf (default: embedded)")
    args = ap.parse_args(argv)
    from ..loaders import load_model

    tokenizer = load_model(args.model).tokenizer
    schemas = json.loads(Path(args.corpus).read_text())
    print(format_table(compile_stats(schemas, tokenizer)))


if __name__ == "__main__":
    main()
