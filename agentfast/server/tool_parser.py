"""Tool calls parsed from the model's own output format, on streamed text.

Formats: Hermes/Qwen (`<tool_call>{"name": ..., "arguments": {...}}</tool_call>`, any number,
text around them), Mistral (`[TOOL_CALLS][{"name": ..., "arguments": {...}}, ...]`, and the
v11+ tokenizers' `[TOOL_CALLS]name[ARGS]{...}`, repeated per call) and Llama 3
(`<|python_tag|>`? `{"name": ..., "parameters": {...}}` objects at the very start, `;`-separated).
Streaming-safe: text that could still become an opening tag is held back, so no raw tag leaks
into content; the arguments object is forwarded fragment by fragment as it arrives (the raw JSON
text the model wrote, so the fragments concatenate to the final `arguments` string). Knows only
text: no tokens, no HTTP.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field

HERMES_OPEN, HERMES_CLOSE = "<tool_call>", "</tool_call>"
MISTRAL_OPEN = "[TOOL_CALLS]"
PYTHON_TAG = "<|python_tag|>"
_HEAD = re.compile(r'\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*"(?:arguments|parameters)"\s*:')
_LLAMA_START = re.compile(r'\{\s*"name"')
_LLAMA_PARTIAL = re.compile(r'\{\s*("(n(a(m(e)?)?)?)?)?$')
MISTRAL_ARGS = "[ARGS]"
_MISTRAL_V11 = re.compile(r"([A-Za-z_][\w.\-]*)\[ARGS\]")
_MISTRAL_V11_PARTIAL = re.compile(r"[A-Za-z_][\w.\-]*(\[(A(R(G(S)?)?)?)?)?$")


@dataclass
class Event:
    kind: str  # "content" (text), "call" (index, id, name: a call starts), "args" (index, text)
    text: str = ""
    index: int = 0
    id: str = ""
    name: str = ""


class _Scan:
    """Incremental end-finder of the JSON value that starts at `start` of a growing string."""

    def __init__(self, start: int):
        self.j, self.depth, self.in_str, self.esc, self.scalar = start, 0, False, False, False

    def feed(self, s: str) -> int | None:
        """Index just past the value once `s` contains all of it, else None."""
        j = self.j
        while j < len(s):
            ch = s[j]
            if self.scalar and (ch in ",}]" or ch.isspace()):
                self.j = j
                return j
            j += 1
            if self.in_str:
                if self.esc:
                    self.esc = False
                elif ch == "\\":
                    self.esc = True
                elif ch == '"':
                    self.in_str = False
                    if self.depth == 0:
                        self.j = j
                        return j
            elif ch == '"':
                self.in_str = True
            elif ch in "{[":
                self.depth += 1
            elif ch in "}]":
                self.depth -= 1
                if self.depth <= 0:
                    self.j = j
                    return j
            elif self.depth == 0 and not ch.isspace():
                self.scalar = True
        self.j = j
        return None


@dataclass
class _Call:
    obj: _Scan = field(default_factory=lambda: _Scan(0))
    index: int | None = None  # set when the call was announced
    skip: bool = False  # a second call with parallel_tool_calls=False: parsed, not reported
    args_at: int = 0  # where the arguments value may start
    args: _Scan | None = None
    string_args: bool = False
    sent: int = 0  # buf index up to which argument text was emitted
    done_args: bool = False
    v11: bool = False  # Mistral `name[ARGS]{...}`: rewritten as an object, closed by us


class ToolParser:
    """push(text) -> events; finish() -> the last events. `calls` holds the parsed calls."""

    def __init__(self, formats: tuple[str, ...] = ("hermes",), parallel: bool = True):
        self.formats, self.parallel = formats, parallel
        self.openers = [o for f, o in (("hermes", HERMES_OPEN), ("mistral", MISTRAL_OPEN))
                        if f in formats]
        self.buf, self.mode, self.closer = "", "text", None
        self.cur: _Call | None = None
        self.calls: list[dict[str, str]] = []  # {"id", "name", "arguments"}
        self.started, self.pending_ws = False, ""
        self.out: list[Event] = []

    def push(self, text: str) -> list[Event]:
        self.buf += text
        progress = True
        while progress:
            progress = self._text() if self.mode == "text" else self._calls()
        out, self.out = self.out, []
        return out

    def finish(self) -> list[Event]:
        partial_close = (self.closer or "").startswith(self.buf.strip())
        rest = self.buf.strip()
        if self.calls and (  # after a call: the start of one more, cut by max_tokens
                (self.mode == "text" and rest and any(o.startswith(rest) for o in self.openers))
                or (self.cur is not None and self.cur.index is None and not self.cur.skip)):
            self.buf, self.cur = "", None
        if self.mode == "text" or (self.cur is None and not partial_close):
            self._content(self.buf)
        elif self.cur is not None:
            self._end_call(final=True)
        self.buf = ""
        if self.pending_ws and not self.calls:
            self.out.append(Event("content", self.pending_ws))
        self.pending_ws = ""
        out, self.out = self.out, []
        return out

    # ---- text ----------------------------------------------------------------------------

    def _content(self, text: str) -> None:
        """Emit content; whitespace alone is held while nothing was said yet or after a call."""
        if not text:
            return
        text, self.pending_ws = self.pending_ws + text, ""
        if not text.strip() and (not self.started or self.calls):
            self.pending_ws = text
            return
        self.started = True
        self.out.append(Event("content", text))

    def _text(self) -> bool:
        if "llama3" in self.formats and not self.started and not self.calls:
            s = self.buf.lstrip()
            if s.startswith(PYTHON_TAG) or _LLAMA_START.match(s):
                self.buf = s.removeprefix(PYTHON_TAG)
                self.mode, self.closer = "calls", None
                return True
            if not s or PYTHON_TAG.startswith(s) or _LLAMA_PARTIAL.match(s):
                return False
        hits = [(i, o) for o in self.openers if (i := self.buf.find(o)) >= 0]
        if hits:
            i, opener = min(hits)
            self._content(self.buf[:i])
            self.buf = self.buf[i + len(opener):]
            self.mode = "calls"
            self.closer = HERMES_CLOSE if opener == HERMES_OPEN else "]"
            return True
        hold = max((n for o in self.openers for n in range(len(o) - 1, 0, -1)
                    if self.buf.endswith(o[:n])), default=0)
        self._content(self.buf[:len(self.buf) - hold])
        self.buf = self.buf[len(self.buf) - hold:]
        return False

    # ---- calls ---------------------------------------------------------------------------

    def _calls(self) -> bool:
        if self.cur is None:
            seps = " \t\r\n" + (",[" if self.closer == "]" else "") + (
                ";" if self.closer is None else "")
            self.buf = self.buf.lstrip(seps)
            if self.closer == "]":  # Mistral v11: every call has its own [TOOL_CALLS]
                self.buf = self.buf.removeprefix(MISTRAL_OPEN[1:]).lstrip(seps)
                if (m := _MISTRAL_V11.match(self.buf)):
                    head = json.dumps({"name": m.group(1)})[:-1] + ', "arguments": '
                    self.buf = head + self.buf[m.end():]
                    self.cur = _Call(v11=True)
                    return self._stream_call()
                if _MISTRAL_V11_PARTIAL.fullmatch(self.buf) or MISTRAL_OPEN[1:].startswith(
                        self.buf):
                    return False
            if not self.buf:
                return False
            if self.closer and self.buf.startswith(self.closer):
                self.buf = self.buf[len(self.closer):]
                self.mode = "text"
                return True
            if self.closer and self.closer.startswith(self.buf):
                return False
            if self.buf[0] != "{":  # not a JSON call: plain text (inside a tag: without it)
                k = self.buf.find(HERMES_CLOSE) if self.closer == HERMES_CLOSE else 0
                if k < 0:
                    return False
                self._content(self.buf[:k])
                self.buf = self.buf[k + len(HERMES_CLOSE):] if k else self.buf
                self.mode = "text"
                return True
            self.cur = _Call()
        return self._stream_call()

    def _stream_call(self) -> bool:
        c, buf = self.cur, self.buf
        assert c is not None
        if c.index is None and not c.skip and (m := _HEAD.match(buf)):
            name = json.loads(f'"{m.group(1)}"')
            self._announce(c, name)
            c.args_at = m.end()
        if c.index is not None or c.skip:
            self._stream_args(c)
            if c.v11 and c.done_args:  # the arguments ended: close the object we opened
                j = c.args.j
                self.buf = self.buf[:j] + "}" + self.buf[j:]
                c.v11 = False
        end = c.obj.feed(self.buf)
        if end is None:
            return False
        self._end_call(final=False, end=end)
        return True

    def _announce(self, c: _Call, name: str) -> None:
        if not self.parallel and self.calls:
            c.skip = True
            return
        c.index = len(self.calls)
        cid = f"call_{uuid.uuid4().hex[:24]}"
        self.calls.append({"id": cid, "name": name, "arguments": ""})
        self.out.append(Event("call", index=c.index, id=cid, name=name))

    def _args(self, c: _Call, text: str) -> None:
        if text and c.index is not None:
            self.calls[c.index]["arguments"] += text
            self.out.append(Event("args", text, index=c.index))

    def _stream_args(self, c: _Call) -> None:
        buf = self.buf
        if c.args is None:
            rest = buf[c.args_at:]
            if not rest.strip():
                return
            start = c.args_at + len(rest) - len(rest.lstrip())
            c.args, c.sent, c.string_args = _Scan(start), start, buf[start] == '"'
        if c.done_args:
            return
        end = c.args.feed(buf)
        if c.string_args:
            if end is not None:
                try:
                    self._args(c, json.loads(buf[c.sent:end]))
                except (json.JSONDecodeError, TypeError):
                    self._args(c, buf[c.sent:end])
                c.done_args = True
            return
        upto = end if end is not None else len(buf)
        self._args(c, buf[c.sent:upto])
        c.sent, c.done_args = upto, end is not None

    def _end_call(self, final: bool, end: int | None = None) -> None:
        """The object ended (`end`), or the text ended inside it (`final`)."""
        c = self.cur
        assert c is not None
        text = self.buf[:end] if end is not None else self.buf
        if c.index is None and not c.skip:  # not in the canonical order: parse it whole
            try:
                obj = json.loads(text)
                name = obj["name"]
                args = obj.get("arguments", obj.get("parameters", {}))
            except (json.JSONDecodeError, KeyError, TypeError):
                self._content(text)
            else:
                self._announce(c, str(name))
                self._args(c, args if isinstance(args, str) else json.dumps(args))
        elif not final and c.index is not None:
            self._stream_args(c)
        self.buf = self.buf[end:] if end is not None else ""
        self.cur = None
