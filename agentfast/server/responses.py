"""POST /v1/responses: the Responses API over the same engine path as chat completions.

`input` items (messages, function_call, function_call_output) become chat messages; the output
is a list of items (an assistant `message` with `output_text`, `function_call`s), streamed as
typed events: response.created, response.output_item.added, response.output_text.delta,
response.function_call_arguments.delta, ..., response.completed. Stateless: no stored responses,
so `previous_response_id` is rejected (send the whole conversation in `input`).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import Field, ValidationError

from .chat import build_prompt, template_formats
from .params import (
    constraint_for,
    max_new_tokens,
    precompile,
    reject_unsupported,
    sampling,
    tool_choice_of,
)
from .protocol import (
    APIError,
    FunctionCall,
    JSONSchemaFormat,
    Message,
    ResponseFormat,
    SamplingFields,
    ToolCall,
    new_id,
    now,
    validation_error,
)
from .scheduler import Work
from .streaming import EventStream, TurnEvent, error_event, sse, turn, usage_of
from .tool_parser import HERMES_CLOSE, ToolParser


class ResponsesRequest(SamplingFields):
    input: str | list[dict[str, Any]] = Field(min_length=1)
    instructions: str | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    max_output_tokens: int | None = None
    text: dict[str, Any] | None = None
    previous_response_id: str | None = None


def _text(content: Any, where: str) -> str:
    if isinstance(content, str) or content is None:
        return content or ""
    parts = []
    for j, p in enumerate(content):
        if p.get("type") not in ("input_text", "output_text", "text"):
            raise APIError(f"{where}[{j}].type: {p.get('type')!r} is not supported (text only)",
                           param=f"{where}[{j}].type")
        parts.append(p.get("text", ""))
    return "".join(parts)


def to_messages(req: ResponsesRequest) -> list[Message]:
    msgs = [Message(role="system", content=req.instructions)] if req.instructions else []
    items = [{"role": "user", "content": req.input}] if isinstance(req.input, str) else req.input
    for i, it in enumerate(items):
        kind, where = it.get("type", "message"), f"input[{i}]"
        try:
            if kind == "message":
                msgs.append(Message(role=it.get("role"),
                                    content=_text(it.get("content"), f"{where}.content")))
            elif kind == "function_call":
                call = ToolCall(id=it["call_id"], function=FunctionCall(
                    name=it["name"], arguments=it.get("arguments") or "{}"))
                if msgs and msgs[-1].role == "assistant":
                    msgs[-1].tool_calls = [*(msgs[-1].tool_calls or ()), call]
                else:
                    msgs.append(Message(role="assistant", tool_calls=[call]))
            elif kind == "function_call_output":
                out = it.get("output", "")
                msgs.append(Message(role="tool", tool_call_id=it["call_id"],
                                    content=out if isinstance(out, str) else json.dumps(out)))
            elif kind != "reasoning":
                raise APIError(f"{where}.type: {kind!r} items are not supported",
                               param=f"{where}.type")
        except KeyError as e:
            raise APIError(f"{where}.{e.args[0]}: required", param=f"{where}.{e.args[0]}") from None
        except ValidationError as e:
            err = validation_error(e)
            raise APIError(f"{where}.{err.message}", param=f"{where}.{err.param}") from None
    return msgs


def to_tools(tools: list[dict] | None) -> list[dict]:
    out = []
    for i, t in enumerate(tools or ()):
        if t.get("type") != "function" or not t.get("name"):
            raise APIError(f"tools[{i}]: only function tools with a name are supported",
                           param=f"tools[{i}]")
        fn = {k: t[k] for k in ("name", "description", "parameters") if t.get(k) is not None}
        out.append({"type": "function", "function": {**fn, "strict": t.get("strict", True)}})
    return out


def to_format(text: dict | None) -> ResponseFormat | None:
    f = (text or {}).get("format")
    if not f or f.get("type") == "text":
        return None
    if f.get("type") == "json_object":
        return ResponseFormat(type="json_object")
    if f.get("type") != "json_schema" or "schema" not in f:
        raise APIError("text.format: expected type text, json_object or json_schema (with a "
                       "schema)", param="text.format")
    return ResponseFormat(type="json_schema", json_schema=JSONSchemaFormat(
        name=f.get("name", "response"), schema=f["schema"], strict=f.get("strict")))


class Builder:
    """TurnEvents -> Responses stream events, and the output items they add up to."""

    def __init__(self, head: dict[str, Any]):
        self.head, self.output, self.seq = head, [], 0
        self.open: dict | None = None  # the item being written

    def ev(self, kind: str, **kw: Any) -> bytes:
        self.seq += 1
        return sse({"type": kind, "sequence_number": self.seq - 1, **kw}, event=kind)

    def response(self, status: str, r=None) -> dict:
        body = {**self.head, "status": status, "output": self.output}
        if r is not None:
            u = usage_of(r)
            body["usage"] = {"input_tokens": u.prompt_tokens, "output_tokens":
                             u.completion_tokens, "total_tokens": u.total_tokens,
                             "input_tokens_details": {"cached_tokens": r.reused_tokens},
                             "output_tokens_details": {"reasoning_tokens": 0}}
            if r.finish_reason == "length":
                body["incomplete_details"] = {"reason": "max_output_tokens"}
        return body

    def _close(self) -> list[bytes]:
        it, self.open = self.open, None
        if it is None:
            return []
        idx, out = self.output.index(it), []
        it["status"] = "completed"
        if it["type"] == "message":
            part = it["content"][0]
            kw = {"item_id": it["id"], "output_index": idx, "content_index": 0}
            out += [self.ev("response.output_text.done", text=part["text"], logprobs=[], **kw),
                    self.ev("response.content_part.done", part=part, **kw)]
        else:
            out.append(self.ev("response.function_call_arguments.done", item_id=it["id"],
                               output_index=idx, arguments=it["arguments"], name=it["name"]))
        return out + [self.ev("response.output_item.done", output_index=idx, item=it)]

    def _add(self, item: dict) -> list[bytes]:
        out = self._close()
        self.open = item
        self.output.append(item)
        idx = len(self.output) - 1
        out.append(self.ev("response.output_item.added", output_index=idx, item=item))
        if item["type"] == "message":  # added empty, then its one output_text part
            item["content"].append({"type": "output_text", "text": "", "annotations": []})
            out.append(self.ev("response.content_part.added", item_id=item["id"],
                               output_index=idx, content_index=0, part=item["content"][0]))
        return out

    def push(self, e: TurnEvent) -> list[bytes]:
        out: list[bytes] = []
        if e.kind == "content":
            if self.open is None or self.open["type"] != "message":
                out += self._add({"type": "message", "id": new_id("msg_"), "role": "assistant",
                                  "status": "in_progress", "content": []})
            self.open["content"][0]["text"] += e.text
            out.append(self.ev("response.output_text.delta", item_id=self.open["id"],
                               output_index=len(self.output) - 1, content_index=0,
                               delta=e.text, logprobs=[]))
        elif e.kind == "call":
            out += self._add({"type": "function_call", "id": new_id("fc_"), "call_id": e.id,
                              "name": e.name, "arguments": "", "status": "in_progress"})
        elif e.kind == "args" and self.open is not None:
            self.open["arguments"] += e.text
            out.append(self.ev("response.function_call_arguments.delta", item_id=self.open["id"],
                               output_index=len(self.output) - 1, delta=e.text))
        elif e.kind == "done":
            out += self._close()
            status = "incomplete" if e.result.finish_reason == "length" else "completed"
            out.append(self.ev(f"response.{status}", response=self.response(status, e.result)))
        return out


async def _stream(b: Builder, events: AsyncIterator[TurnEvent]) -> AsyncIterator[bytes]:
    try:
        yield b.ev("response.created", response=b.response("in_progress"))
        yield b.ev("response.in_progress", response=b.response("in_progress"))
        async for e in events:
            for chunk in b.push(e):
                yield chunk
    except Exception as e:  # after the headers: report it as an event
        yield error_event(e)


def add_routes(app: FastAPI, st) -> None:
    from .app import check_model, guard, parse, start

    @app.post("/v1/responses")
    async def responses(request: Request) -> Response:
        req = await parse(request, ResponsesRequest)
        check_model(st, req.model)
        reject_unsupported(req, previous_response_id=req.previous_response_id is None)
        tok = st.engine.tokenizer
        tools = to_tools(req.tools)
        mode, name = tool_choice_of(req.tool_choice if not isinstance(req.tool_choice, dict)
                                    else {"name": req.tool_choice.get("name")})
        constraint, cparam = constraint_for(tools, mode, name, to_format(req.text), True)
        await anyio.to_thread.run_sync(precompile, st.engine, constraint, cparam)
        prompt = await anyio.to_thread.run_sync(build_prompt, tok, st.cache, to_messages(req),
                                                tools or None, req.user,
                                                request.headers.get("x-session-id"))
        max_new = max_new_tokens(req.max_output_tokens, "max_output_tokens", len(prompt.ids),
                                 st.engine.max_context, prompt_field="input")
        parse_tools, parallel = bool(tools) and mode != "none", req.parallel_tool_calls is not False
        params = sampling(req, max_new, (HERMES_CLOSE,) if parse_tools and not parallel else (),
                          constraint)
        formats = template_formats(tok.chat_template)[1]
        parser = ToolParser(formats, parallel) if parse_tools else None

        job, steps = await start(st, request, Work(prompt.ids, params, prompt.session),
                                 lambda r: st.cache.after(tok, prompt, r.token_ids, r.stop))
        b = Builder({"id": new_id("resp_"), "object": "response", "created_at": now(),
                     "model": st.model, "error": None, "incomplete_details": None,
                     "instructions": req.instructions, "metadata": {}, "tools": req.tools or [],
                     "tool_choice": req.tool_choice or "auto", "parallel_tool_calls": parallel,
                     "temperature": req.temperature, "top_p": req.top_p,
                     "max_output_tokens": req.max_output_tokens,
                     "text": req.text or {"format": {"type": "text"}}, "usage": None})
        if req.stream:
            return EventStream(_stream(b, turn(steps, parser)), job)

        async def run() -> dict:
            last: dict = {}
            async for e in turn(steps, parser):
                b.push(e)
                if e.kind == "done":
                    status = "incomplete" if e.result.finish_reason == "length" else "completed"
                    last = b.response(status, e.result)
            return last

        return JSONResponse(await guard(request, job, run()))
