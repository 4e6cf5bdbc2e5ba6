"""`agentfast train-mtp`: fit an MTP module to a model by self-distillation on its own outputs.

1. Built-in prompts (ALL_PROMPTS: hand-written PROMPTS plus templated ones over a few dozen
   topics and tasks: chat, code, JSON tool calls, file edits; nothing downloaded), and with
   `self_prompts` user messages the model writes itself (self_written_prompts), go
   through the model's chat template; the model continues them, batched (left-padded, one KV
   cache per layer), once per temperature (default greedy and 0.8). Every position keeps the
   main model's final hidden state (before the final norm) and the top-k of its next-token
   distribution.
2. The module (main model frozen) learns, at position t from (h_t, x_{t+1}), the main model's
   distribution at t+1 (over x_{t+2}): soft cross-entropy against the renormalized top-k, which
   is the KL to the main model's distribution up to a constant and the top-k truncation.
   Chained terms (`depth` > 1) train what drafting does for k > 1: the module's own output at
   t with x_{t+2} at position t+1 (and so on), attending to the first pass's keys and its own
   chain's, against the distribution at t+2 (t+3, ...).
3. Held-out prompts (every HOLDOUT-th) measure it: loss and top-1 agreement with the main
   model over their sequences, and on the first few the mean accepted drafts per step of real
   greedy speculative decoding (reference backend, MtpDrafter), whose output is checked against
   plain decode token for token.

Device-agnostic (CPU or CUDA); the saved file holds only the module (bf16) and metadata.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from agentfast.engine.config import ModelConfig
from agentfast.engine.errors import RequestError
from agentfast.engine.model import ModelWeights, rms_norm

from .mtp import (
    MtpDrafter,
    build_module,
    init_module,
    layer_forward,
    model_fingerprint,
    mtp_hidden,
    mtp_logits,
    save_module,
)

_SYS = "You are a helpful assistant."
_AGENT = ("You are a coding agent. Call tools with JSON: {\"name\": ..., \"arguments\": {...}}. "
          "Tools: read_file(path), write_file(path, content), run(command), search(query).")
_FILE = ("def load_config(path):\n    with open(path) as f:\n        data = f.read()\n"
         "    return parse(data)\n\n\ndef parse(text):\n    out = {}\n"
         "    for line in text.splitlines():\n        key, value = line.split('=')\n"
         "        out[key] = value\n    return out\n")

# (system, user) pairs: varied on purpose, a few dozen. The held-out ones: every HOLDOUT-th.
PROMPTS: list[tuple[str | None, str]] = [
    (None, "What is the capital of France?"),
    (None, "Explain what a hash map is in two sentences."),
    (_SYS, "Give me three tips for writing clean Python code."),
    (None, "Write a Python function that checks whether a number is prime."),
    (None, "Write a function in JavaScript that reverses a string."),
    (_SYS, "What is the difference between a list and a tuple in Python?"),
    (None, "Summarize the plot of Romeo and Juliet in a few sentences."),
    (None, "How do I create a virtual environment in Python?"),
    (_SYS, "Write a short poem about the ocean."),
    (None, "Translate 'Good morning, how are you?' into Spanish and French."),
    (None, "Write a SQL query that returns the ten most recent orders of each customer."),
    (_SYS, "Explain recursion to a beginner with an example."),
    (None, "What are the main causes of climate change?"),
    (None, "Write a bash command that counts the lines of every .py file in a folder."),
    (_SYS, "Write a Python class for a stack with push, pop and peek."),
    (None, "Tell me a fun fact about octopuses."),
    (None, "How does HTTP caching work?"),
    (_SYS, "List the planets of the solar system in order from the sun."),
    (None, "Write a unit test with pytest for a function add(a, b)."),
    (None, "Explain the difference between TCP and UDP."),
    (_SYS, "Give a recipe for a simple tomato pasta."),
    (None, "Write a Python function that merges two sorted lists."),
    (None, "What is a closure in JavaScript?"),
    (_SYS, "Write a haiku about autumn leaves."),
    (None, "Convert this JSON to YAML: {\"name\": \"app\", \"port\": 8080, \"debug\": true}"),
    (None, "Describe how a binary search works, step by step."),
    (_SYS, "Write a regular expression that matches an email address and explain it."),
    (None, "What should I pack for a three-day hiking trip?"),
    (_AGENT, "Read the file src/config.py and tell me what it does."),
    (_AGENT, "Run the test suite and report which tests fail."),
    (_AGENT, "Find where the function parse_args is defined in this repository."),
    (_AGENT, "Create a file hello.py that prints 'Hello, world!'."),
    (_AGENT, "Reply with a JSON tool call that reads README.md."),
    (_AGENT, "Call the search tool to look for 'TODO' comments."),
    (_AGENT, f"Here is config.py:\n```python\n{_FILE}```\nRename parse to parse_config and "
             "show the whole file after the edit."),
    (_AGENT, f"Here is config.py:\n```python\n{_FILE}```\nAdd a docstring to load_config and "
             "write the file back."),
    (_AGENT, f"Here is config.py:\n```python\n{_FILE}```\nMake parse ignore empty lines and "
             "lines starting with '#'. Show the new function."),
    (_AGENT, "The tool returned: {\"status\": \"ok\", \"files\": [\"main.py\", \"utils.py\", "
             "\"test_main.py\"]}. What next?"),
    (_AGENT, "The command `pytest -q` printed: 2 failed, 14 passed. FAILED test_main.py::"
             "test_parse - KeyError: 'port'. Explain and propose a fix."),
    (_AGENT, "Write the JSON arguments for write_file that create notes.txt with a todo list."),
    (None, "Write a Python script that downloads nothing and prints the first 10 Fibonacci "
           "numbers."),
    (_SYS, "Write a friendly email declining a meeting invitation."),
    (None, "What is the time complexity of quicksort and why?"),
    (None, "Write a Rust function that sums a vector of integers."),
    (_SYS, "Explain what an API is to a ten-year-old."),
    (None, "Write a Go HTTP handler that returns JSON {\"ok\": true}."),
    (_AGENT, "List the files in the current directory using the run tool."),
    (None, "Give me a short motivational quote and explain it."),
]

# More variety from templates: a few dozen topics and tasks, each once (no downloads).
_TOPICS = ["photosynthesis", "black holes", "the French Revolution", "volcanoes",
           "machine learning", "the stock market", "plate tectonics", "the Roman Empire",
           "electric cars", "honeybees", "the water cycle", "compound interest", "jazz music",
           "the internet", "renewable energy", "sleep", "the moon landing", "DNA",
           "inflation", "rainforests", "chess openings", "the printing press", "earthquakes",
           "public speaking", "time management", "the Great Wall of China", "solar panels",
           "gardening", "marathon training", "budgeting"]
_CHAT = ["Explain {} in simple terms.", "What are three interesting facts about {}?",
         "Write a short paragraph about {}.", "What are the pros and cons of {}?",
         "How would you describe {} to a child?"]
_LANGS = ["Python", "JavaScript", "Go", "Rust", "TypeScript", "Java", "C"]
_TASKS = ["returns the largest element of a list", "counts the vowels in a string",
          "checks whether a string is a palindrome", "computes the factorial of n",
          "removes duplicates from a list", "flattens a nested list", "reads a file line by line",
          "converts Celsius to Fahrenheit", "finds the second smallest number in an array",
          "validates an IPv4 address", "computes the average of a list of numbers",
          "capitalizes every word of a sentence", "sorts a list of dictionaries by a key",
          "returns the n-th Fibonacci number iteratively"]
_ACTIONS = ["read the file {}", "delete the file {}", "show the first 20 lines of {}",
            "run the tests in {}", "search for the word 'config' in {}"]
_PATHS = ["src/app.py", "docs/index.md", "tests/test_api.py", "setup.cfg", "lib/utils.js",
          "Makefile"]
_SNIPPETS = [
    "def area(w, h):\n    return w * h\n",
    "def greet(name):\n    print('Hello ' + name)\n",
    "import os\n\ndef size(path):\n    return os.path.getsize(path)\n",
    "function sum(xs) {\n  let s = 0;\n  for (const x of xs) s += x;\n  return s;\n}\n",
]
_EDITS = ["Add type hints.", "Add a docstring.", "Rename the function to something clearer.",
          "Handle invalid input with an exception.", "Write a test for it."]


def templated_prompts() -> list[tuple[str | None, str]]:
    out: list[tuple[str | None, str]] = []
    for i, topic in enumerate(_TOPICS):
        out.append((_SYS if i % 2 else None, _CHAT[i % len(_CHAT)].format(topic)))
        out.append((None, _CHAT[(i + 2) % len(_CHAT)].format(topic)))
    for i, task in enumerate(_TASKS):
        for j in range(3):
            out.append((_SYS if j == 1 else None,
                        f"Write a {_LANGS[(i + 3 * j) % len(_LANGS)]} function that {task}."))
    for i, path in enumerate(_PATHS):
        for j in range(len(_ACTIONS)):
            if (i + j) % 2 == 0:
                out.append((_AGENT, "Reply with a JSON tool call to "
                            + _ACTIONS[j].format(path) + "."))
    for i, code in enumerate(_SNIPPETS):
        for j, edit in enumerate(_EDITS):
            if (i + j) % 2 == 0:
                out.append((_AGENT, f"Here is the file:\n```\n{code}```\n{edit} "
                            "Show the whole file after the edit."))
    return out


ALL_PROMPTS = PROMPTS + templated_prompts()
HOLDOUT = 6  # every 6th prompt is held out for the acceptance measure


def prompt_ids(tokenizer, system: str | None, user: str) -> list[int]:
    msgs = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": user}]
    try:
        return tokenizer.encode_chat(msgs, add_generation_prompt=True)
    except Exception:  # noqa: BLE001 (a model without a chat template: the raw text)
        return tokenizer.encode((system + "\n" if system else "") + user)


# ---- batched generation with hidden states ------------------------------------------------

@dataclass
class Sequence:
    """One prompt + continuation. hidden/top_* at position t (t < len(tokens) - 1): the main
    model's final hidden state and the top-k of its distribution over token t+1."""

    tokens: torch.Tensor  # [L] int64
    hidden: torch.Tensor  # [L-1, H]
    top_ids: torch.Tensor  # [L-1, K] int64
    top_logp: torch.Tensor  # [L-1, K] float32
    prompt_len: int


def main_hidden(cfg: ModelConfig, w: ModelWeights, ids: torch.Tensor, pos: torch.Tensor,
                mask: torch.Tensor, cos_t: torch.Tensor, sin_t: torch.Tensor, kvs: list,
                start: int) -> torch.Tensor:
    """The main model over a batch (the reference math through mtp.layer_forward): ids/pos
    [B, T] at cache columns start.., mask [B, T, start+T] -> final hidden states [B, T, H]."""
    x = w.embed[ids]
    cos, sin = cos_t[pos], sin_t[pos]
    for lw, kv in zip(w.layers, kvs, strict=True):
        x = layer_forward(cfg, lw, x, cos, sin, mask, kv, start)
    return x


def _topk(cfg: ModelConfig, w: ModelWeights, hid: torch.Tensor, k: int, chunk: int = 256
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """hid [N, H] -> (top ids [N, k], their log-probs [N, k]) under the main model's head, in
    chunks of rows."""
    ids, lps = [], []
    for i in range(0, hid.shape[0], chunk):
        lg = F.linear(rms_norm(hid[i:i + chunk], w.norm, cfg.rms_norm_eps), w.lm_head).float()
        lp = torch.log_softmax(lg, -1)
        v, j = torch.topk(lp, k, -1)
        ids.append(j)
        lps.append(v)
    return torch.cat(ids), torch.cat(lps)


@torch.inference_mode()
def generate(cfg: ModelConfig, w: ModelWeights, cos_t: torch.Tensor, sin_t: torch.Tensor,
             prompts: list[list[int]], max_new: int, temperature: float, eos: set[int],
             gen: torch.Generator | None, topk: int = 16) -> list[Sequence]:
    """Continue every prompt (one batch, left-padded) for up to `max_new` tokens; greedy when
    temperature is 0. Returns each sequence with its hidden states and top-k targets."""
    dev = w.embed.device
    B, P = len(prompts), max(len(p) for p in prompts)
    cap = P + max_new
    pad = torch.tensor([P - len(p) for p in prompts], device=dev)
    ids = torch.zeros(B, cap, dtype=torch.int64, device=dev)
    for b, p in enumerate(prompts):
        ids[b, P - len(p):P] = torch.tensor(p, device=dev)
    col = torch.arange(cap, device=dev)
    pos_all = (col[None, :] - pad[:, None]).clamp(min=0)  # [B, cap] true positions
    kvs = [(torch.zeros(B, cfg.num_kv_heads, cap, cfg.head_dim, device=dev, dtype=w.embed.dtype),
            torch.zeros(B, cfg.num_kv_heads, cap, cfg.head_dim, device=dev, dtype=w.embed.dtype))
           for _ in w.layers]
    key_ok = col[None, :] >= pad[:, None]  # [B, cap] real (not padding) columns
    hid = torch.zeros(B, cap, cfg.hidden_size, device=dev, dtype=w.embed.dtype)
    tids = torch.zeros(B, cap, topk, dtype=torch.int64, device=dev)
    tlps = torch.zeros(B, cap, topk, device=dev)
    done = torch.zeros(B, dtype=torch.bool, device=dev)
    length = torch.full((B,), cap, device=dev)
    start, T = 0, P
    for step in range(max_new + 1):
        end = start + T
        q = col[start:end]
        mask = (col[None, None, :end] <= q[None, :, None]) & key_ok[:, None, :end]
        mask |= (col[None, None, :end] == q[None, :, None])  # padded rows see themselves
        x = main_hidden(cfg, w, ids[:, start:end], pos_all[:, start:end], mask, cos_t, sin_t,
                        kvs, start)
        hid[:, start:end] = x
        i, lp = _topk(cfg, w, x.reshape(B * T, -1), topk)
        tids[:, start:end], tlps[:, start:end] = i.view(B, T, -1), lp.view(B, T, -1)
        if step == max_new:
            break
        last = F.linear(rms_norm(x[:, -1], w.norm, cfg.rms_norm_eps), w.lm_head).float()
        if temperature > 0:
            probs = torch.softmax(last / temperature, -1)
            nxt = torch.multinomial(probs, 1, generator=gen)[:, 0]
        else:
            nxt = last.argmax(-1)
        ids[:, end] = torch.where(done, torch.zeros_like(nxt), nxt)
        newly = ~done & torch.isin(nxt, torch.tensor(sorted(eos), device=dev))
        length = torch.where(newly, torch.full_like(length, end + 1), length)
        done |= newly
        if bool(done.all()):
            break
        start, T = end, 1
    out = []
    for b in range(B):  # up to its EOS, else every column that had a forward (and one more)
        lo, hi = int(pad[b]), int(length[b]) if bool(done[b]) else end
        out.append(Sequence(ids[b, lo:hi].cpu(), hid[b, lo:hi - 1].clone(),
                            tids[b, lo:hi - 1].clone(), tlps[b, lo:hi - 1].clone(),
                            len(prompts[b])))
    return out


def self_written_prompts(cfg: ModelConfig, w: ModelWeights, cos_t: torch.Tensor,
                         sin_t: torch.Tensor, tokenizer, n: int, gen: torch.Generator,
                         batch: int = 64, max_new: int = 64, temperature: float = 1.0
                         ) -> list[tuple[str | None, str]]:
    """User messages the model writes itself (Magpie, Xu et al. 2024): the chat template up to
    where a user's text starts, continued at `temperature` until the end-of-turn token. Kept:
    messages that ended within `max_new` tokens, 8-600 characters, without special tokens,
    each once; `n` attempts, the system message cycling through none (the template's
    default), the assistant's and the coding agent's."""
    mark = "\u2063USER\u2063"
    eos = set(tokenizer.eos_ids) | set(cfg.eos_token_ids)
    prefixes = []
    systems: list[str | None] = [None, _SYS, _AGENT]
    for system in systems:
        msgs = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": mark}]
        text = tokenizer.render_chat(msgs, add_generation_prompt=False)
        if mark not in text:
            raise RequestError("self-written prompts: the chat template does not show the "
                               "user's text as given")
        prefixes.append(tokenizer.encode_rendered(text[:text.index(mark)]))
    out: list[tuple[str | None, str]] = []
    seen: set[str] = set()
    for i in range(0, n, batch):
        idx = [j % len(systems) for j in range(i, min(n, i + batch))]
        seqs = generate(cfg, w, cos_t, sin_t, [prefixes[j] for j in idx], max_new,
                        temperature, eos, gen, topk=1)
        for j, s in zip(idx, seqs, strict=True):
            new = s.tokens[s.prompt_len:].tolist()
            if not new or new[-1] not in eos:
                continue  # did not finish its message
            text = tokenizer.decode(new[:-1]).strip()
            key = " ".join(text.lower().split())
            if 8 <= len(text) <= 600 and "<|" not in text and key not in seen:
                seen.add(key)
                out.append((systems[j], text))
    return out


# ---- training --------------------------------------------------------------------------------

def _windows(seqs: list[Sequence], batch: int, seq_len: int, g: torch.Generator):
    """A batch of training windows: (seq, start, T) with positions start..start+T-1 all having
    a target at t+1 (t + 1 < len(hidden))."""
    lens = torch.tensor([max(len(s.hidden) - 1, 0) for s in seqs], dtype=torch.float)
    picks = torch.multinomial(lens, batch, replacement=True, generator=g).tolist()
    out = []
    for i in picks:
        n = len(seqs[i].hidden) - 1  # trainable positions 0..n-1
        T = min(seq_len, n)
        s = int(torch.randint(0, n - T + 1, (1,), generator=g))
        out.append((seqs[i], s, T))
    return out


def _soft_ce(logits: torch.Tensor, top_ids: torch.Tensor, top_logp: torch.Tensor
             ) -> torch.Tensor:
    """Cross-entropy of logits [N, V] against the renormalized top-k target [N, K]."""
    p = torch.softmax(top_logp, -1)
    return -(p * torch.log_softmax(logits, -1).gather(-1, top_ids)).sum(-1)


def _chain_mask(T: int, blocks: int, device) -> torch.Tensor:
    """Attention mask [blocks * T, blocks * T] of one training pass over blocks 0..blocks-1
    (block d: the depth-(d+1) inputs at positions +d). Block 0 is causal within itself; block
    d >= 1, row r, sees block 0 up to row r and blocks 1..d at row r (the depth-2..d+1 steps
    of the same chain): what the drafter's KV cache holds when it drafts d + 1 tokens ahead
    of position r (MtpDrafter.propose)."""
    r = torch.arange(T, device=device)
    causal = r[None, :] <= r[:, None]
    eye = torch.eye(T, dtype=torch.bool, device=device)
    zero = torch.zeros(T, T, dtype=torch.bool, device=device)
    rows = []
    for i in range(blocks):
        row = [causal] + [eye if 1 <= j <= i else zero for j in range(1, blocks)]
        rows.append(torch.cat(row, 1))
    return torch.cat(rows, 0)


def chain_outputs(cfg: ModelConfig, m, embed: torch.Tensor, h: torch.Tensor,
                  nxt: torch.Tensor, pos: torch.Tensor, cos_t: torch.Tensor,
                  sin_t: torch.Tensor) -> list[torch.Tensor]:
    """The module's outputs at depths 1..D over a batch of windows: h [B, T, H] the main
    model's hidden states at positions pos [B, T], nxt [B, D, T] the tokens that follow at
    each depth (depth d, row r: token r + d). Depth 1 from h; depth d > 1 from depth d-1's
    output at positions + d - 1, one pass over blocks 0..d-1 (block 0 again for its keys)
    under _chain_mask. Returns [o_1, ..., o_D], each [B, T, H]."""
    B, D, T = nxt.shape
    dev = h.device
    outs = [mtp_hidden(cfg, m, embed, h, nxt[:, 0], cos_t[pos], sin_t[pos],
                       _chain_mask(T, 1, dev)[None].expand(B, T, T))]
    for d in range(1, D):
        mask = _chain_mask(T, d + 1, dev)[None].expand(B, -1, -1)
        p = torch.cat([pos + j for j in range(d + 1)], 1)
        o = mtp_hidden(cfg, m, embed, torch.cat([h, *outs], 1),
                       torch.cat([nxt[:, j] for j in range(d + 1)], 1), cos_t[p], sin_t[p], mask)
        outs.append(o[:, d * T:])
    return outs


def mtp_loss(cfg: ModelConfig, w: ModelWeights, sd: dict[str, torch.Tensor], cos_t, sin_t,
             batch: list, depth: int = 2, vocab: torch.Tensor | None = None
             ) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss of the module `sd` (trainable tensors) on a batch of windows, at depths 1..depth:
    depth 1 from the main model's hidden states, depth d > 1 from the module's own depth d-1
    output (the recursive draft, as in MtpDrafter), each against the main model's distribution
    d positions on; loss = depth 1 + 0.5 x each deeper one. `w.embed` / `w.lm_head` in the
    module's dtype. `vocab` (sorted token ids that hold every target): the softmax runs over
    those rows of the LM head only."""
    dev = w.embed.device
    head = w.lm_head
    if vocab is not None:
        head = w.lm_head[vocab]
        remap = torch.full((cfg.vocab_size,), -1, dtype=torch.int64, device=dev)
        remap[vocab] = torch.arange(len(vocab), device=dev)
    m = build_module(cfg, sd, 0, dev, sd["mtp.0.eh_proj.weight"].dtype)
    B, T, D = len(batch), max(t for _, _, t in batch), max(1, depth)
    H = cfg.hidden_size
    h = torch.zeros(B, T, H, device=dev)
    nxt = torch.zeros(B, D, T, dtype=torch.int64, device=dev)
    pos = torch.zeros(B, T, dtype=torch.int64, device=dev)
    K = batch[0][0].top_ids.shape[1]
    tid = torch.zeros(B, D, T, K, dtype=torch.int64, device=dev)
    tlp = torch.zeros(B, D, T, K, device=dev)
    ok = torch.zeros(B, D, T, dtype=torch.bool, device=dev)
    for b, (s, st, n) in enumerate(batch):
        L = len(s.hidden)
        h[b, :n] = s.hidden[st:st + n].float()
        toks = s.tokens.to(dev)
        pos[b] = torch.arange(st, st + T, device=dev)
        for d in range(1, D + 1):  # depth d at row r: token st+r+d, target at st+r+d
            nd = max(min(n, L - st - d), 0)
            nxt[b, d - 1, :nd] = toks[st + d:st + nd + d]
            tid[b, d - 1, :nd] = s.top_ids[st + d:st + nd + d]
            tlp[b, d - 1, :nd] = s.top_logp[st + d:st + nd + d]
            ok[b, d - 1, :nd] = True
    outs = chain_outputs(cfg, m, w.embed, h, nxt, pos, cos_t, sin_t)
    losses, stats = [], {}
    for d, o in enumerate(outs, 1):
        k, i, lp = ok[:, d - 1], tid[:, d - 1], tlp[:, d - 1]
        logits = mtp_logits(cfg, m, head, o[k])
        if vocab is not None:
            i = remap[i]
        losses.append(_soft_ce(logits, i[k], lp[k]).mean())
        stats[f"loss{d}"] = float(losses[-1].detach())
        stats[f"top1_{d}"] = float((logits.argmax(-1) == i[k][:, 0]).float().mean())
    loss = losses[0] + 0.5 * sum(losses[1:], torch.zeros((), device=dev))
    return loss, stats


# ---- evaluation ------------------------------------------------------------------------------

def measure_acceptance(backend, drafter: MtpDrafter, prompts: list[list[int]], eos: set[int],
                       max_new: int) -> dict:
    """Greedy speculative decode of each prompt with `drafter` on the reference `backend`
    (whose caches keep hidden states): mean accepted drafts per step, and whether every output
    equals plain greedy decode token for token."""
    from agentfast.engine.sampling import SamplingParams

    p = SamplingParams(temperature=0.0, max_tokens=max_new)
    before = (drafter.steps, drafter.drafted, drafter.accepted)
    same, tokens = True, 0
    stop = frozenset(eos)
    for ids in prompts:
        outs = []
        for d in (drafter, None):
            cache = backend.new_cache()
            logits = backend.prefill(cache, ids, 0)
            kw = {} if d is None else {"drafter": d, "history": ids}
            outs.append(list(backend.decode(cache, logits, len(ids), p, stop, max_new, **kw)))
        same &= outs[0] == outs[1]
        tokens += len(outs[0])
    steps, drafted, accepted = (a - b for a, b in zip(
        (drafter.steps, drafter.drafted, drafter.accepted), before, strict=True))
    return {"prompts": len(prompts), "tokens": tokens, "steps": steps, "drafted": drafted,
            "accepted": accepted, "mean_accepted": accepted / steps if steps else 0.0,
            "lossless": same}


# ---- the command -----------------------------------------------------------------------------

def train_mtp(model: str | None, out: str | Path, steps: int = 300, seq_len: int = 128,
              lr: float = 2e-3, device: str | None = None, batch: int = 8, max_new: int = 96,
              gen_batch: int = 16, topk: int = 16, depth: int = 2, eval_tokens: int = 48,
              temperatures: tuple[float, ...] = (0.0, 0.8), restrict_vocab: bool | None = None,
              max_prompts: int | None = None, eval_prompts: int = 8, train_layer: bool = True,
              self_prompts: int = 0, seed: int = 0, overwrite: bool = False,
              dtype: torch.dtype | None = None, log: Callable[[str], None] = print) -> dict:
    """Generate, train, measure, save; returns the metadata written into the file.

    Each training prompt is continued once per temperature (0 = greedy). `train_layer=False`
    keeps the module's layer at its initial copy of the main model's last layer and fits only
    eh_proj and the norms (fewer parameters for little data). `restrict_vocab`
    (default: on CPU only): the training softmax runs over the tokens found in the main model's
    top-k anywhere in the data, the ones that compete, which cuts the LM head's cost; the
    held-out measures always use the full vocabulary. An existing `out` is an error unless
    `overwrite` (checked before any work)."""
    from agentfast.engine.backends.reference import ReferenceBackend
    from agentfast.engine.loaders import embedded_model_path, load_model

    if Path(out).exists() and not overwrite:
        raise RequestError(f"{out}: exists; train-mtp does not replace a file (pass --force)")
    for name, val, least in (("depth", depth, 1), ("gen_batch", gen_batch, 1),
                             ("self_prompts", self_prompts, 0), ("steps", steps, 0)):
        if val < least:
            raise RequestError(f"train-mtp: {name} {val}: at least {least}")
    t0 = time.perf_counter()
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    # the main model's dtype for generation (default: bf16 on a GPU, float32 on CPU); the
    # module always trains in float32
    dtype = dtype or (torch.bfloat16 if dev.type == "cuda" else torch.float32)
    torch.manual_seed(seed)
    loaded = load_model(model)
    cfg, tok = loaded.config, loaded.tokenizer
    max_len = min(cfg.max_position_embeddings, 4096)
    be = ReferenceBackend(cfg, loaded.weights, dev, dtype, max_len)  # CPU fp32: no copy
    be.keep_hidden = True
    w = be.model.w
    cos_t, sin_t = be.model.cos, be.model.sin
    eos = set(tok.eos_ids) | set(cfg.eos_token_ids)
    prompts = [prompt_ids(tok, s, u) for s, u in ALL_PROMPTS[:max_prompts]]
    held = prompts[HOLDOUT - 1::HOLDOUT]
    train = [p for i, p in enumerate(prompts) if (i + 1) % HOLDOUT]
    g = torch.Generator(device=dev).manual_seed(seed)
    written = []
    if self_prompts:
        written = self_written_prompts(cfg, w, cos_t, sin_t, tok, self_prompts, g,
                                       batch=gen_batch)
        train += [prompt_ids(tok, s, u) for s, u in written]
        log(f"self-written prompts: {len(written)} kept of {self_prompts}, "
            f"{time.perf_counter() - t0:.0f}s")

    seqs: list[Sequence] = []
    for temp in temperatures:  # greedy (what greedy drafting sees), sampled (diversity)
        for i in range(0, len(train), gen_batch):
            seqs += generate(cfg, w, cos_t, sin_t, train[i:i + gen_batch], max_new, temp, eos,
                             g, topk)
    held_seqs = generate(cfg, w, cos_t, sin_t, held, max_new, 0.0, eos, g, topk)
    n_gen = sum(len(s.tokens) - s.prompt_len for s in seqs)
    log(f"generated {n_gen} tokens ({sum(len(s.tokens) for s in seqs)} with prompts) in "
        f"{len(seqs)} sequences, {time.perf_counter() - t0:.0f}s")

    vocab = None
    if restrict_vocab or (restrict_vocab is None and dev.type == "cpu"):
        vocab = torch.unique(torch.cat([s.top_ids.reshape(-1) for s in seqs])).to(dev)
        log(f"training softmax over {len(vocab)} of {cfg.vocab_size} tokens")
    sd = {k: v.to(dev).requires_grad_(train_layer or ".layer." not in k) for k, v in
          init_module(cfg, loaded.weights, seed).items()}
    # The module trains in float32: the embedding and head it reads, in float32 too (a GPU
    # backend holds them in bf16), and TF32 matmuls where the device has them.
    tw = w
    if w.embed.dtype != torch.float32:
        e = w.embed.float()  # one copy when the head is the embedding (tied)
        tw = ModelWeights(e, [], w.norm, e if w.lm_head is w.embed else w.lm_head.float())
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    params = [v for v in sd.values() if v.requires_grad]  # the layer stays the main's last
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0, betas=(0.9, 0.98))
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min((s + 1) / warm, 0.5 * (
        1 + math.cos(math.pi * min(s / max(steps, 1), 1.0)))))
    gw = torch.Generator().manual_seed(seed)
    stats: dict[str, float] = {}
    t1 = time.perf_counter()
    ema = None
    for step in range(steps):
        loss, stats = mtp_loss(cfg, tw, sd, cos_t, sin_t, _windows(seqs, batch, seq_len, gw),
                               depth, vocab)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        val = float(loss.detach())
        ema = val if ema is None else 0.9 * ema + 0.1 * val
        if step % 25 == 0 or step == steps - 1:
            log(f"step {step + 1}/{steps}  loss {val:.3f} (ema {ema:.3f})  " + "  ".join(
                f"{k} {v:.3f}" for k, v in stats.items()) + f"  {time.perf_counter() - t1:.0f}s")

    final = {k: v.detach() for k, v in sd.items()}
    with torch.no_grad():  # held-out loss and top-1 agreement with the main model
        held_stats = mtp_loss(cfg, tw, final, cos_t, sin_t,
                              [(s, 0, len(s.hidden) - 1) for s in held_seqs], depth)[1]
    torch.backends.cuda.matmul.allow_tf32 = tf32
    del tw
    # Stored in bf16 like the file: measure what ships. The decode check runs in float32 (on a
    # GPU in bf16, the verification step and the plain step round differently and flip
    # near-ties: the first GPU module's check said lossless False for a 0.18 logit gap).
    if dtype != torch.float32:
        be = ReferenceBackend(cfg, loaded.weights, dev, torch.float32, max_len)
        be.keep_hidden = True
        w = be.model.w
    shipped = {k: v.to(torch.bfloat16).to(w.embed.dtype) for k, v in final.items()}
    drafter = MtpDrafter.from_weights(cfg, shipped, w.embed, w.lm_head, max_len, "trained")
    acc = measure_acceptance(be, drafter, held[:eval_prompts], eos, eval_tokens)
    log(f"held out: {held_stats}; greedy speculative decode on {acc['prompts']} prompts: "
        f"mean accepted {acc['mean_accepted']:.3f} per step, lossless {acc['lossless']}")
    name = Path(model).name if model else embedded_model_path().name
    meta = {
        "model_hash": model_fingerprint(cfg, loaded.weights), "model": name,
        "config": {"arch": cfg.arch, "hidden_size": cfg.hidden_size,
                   "num_layers": cfg.num_layers, "vocab_size": cfg.vocab_size},
        "train": {"steps": steps, "seq_len": seq_len, "batch": batch, "lr": lr,
                  "depth": depth, "topk": topk, "max_new": max_new, "seed": seed,
                  "train_layer": train_layer,
                  "temperatures": list(temperatures),
                  "softmax_vocab": cfg.vocab_size if vocab is None else len(vocab),
                  "prompts": len(train), "self_written_prompts": len(written),
                  "sequences": len(seqs), "generated_tokens": n_gen,
                  "device": str(dev), "seconds": round(time.perf_counter() - t0, 1),
                  "final": {k: round(v, 4) for k, v in stats.items()}},
        "heldout": {"sequences": len(held_seqs),
                    **{k: round(v, 4) for k, v in held_stats.items()},
                    "decode": {k: (round(v, 4) if isinstance(v, float) else v)
                               for k, v in acc.items()}},
    }
    save_module(out, final, meta)
    log(f"saved {out} ({Path(out).stat().st_size / 1e6:.1f} MB)")
    return meta
