"""POST /v1/responses: the Responses API over the same engine path as chat completions.

`input` items (messages, function_call, function_call_output) become chat messages; the output
is a list of items (an assistant `message` with `output_text`, `function_call`s), streamed as
typed events: response.created, response.output_item.added, response.output_text.delta,
response.function_call_arguments.delta, ..., response.completed.

State: finished responses are kept (unless `store` is false) in a bounded in-memory store, most
recent first (`ResponseStore`, 256 by default). `previous_response_id` continues one: its
conversation items (inputs and outputs, not its `instructions`) come before the new `input`,
and the request runs in the same engine session, so that conversation's KV is reused. GET and
DELETE /v1/responses/{id} and GET /v1/responses/{id}/input_items read and drop stored ones.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass
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
    store: bool | None = None  # default true, as in OpenAI's API


STORE_SIZE = 256  # responses kept for previous_response_id / retrieval


@dataclass
class Stored:
    response: dict[str, Any]  # as answered
    items: list[dict]  # the conversation up to and including its output (no instructions)
    input_items: list[dict]  # this request's own input items, with ids
    session: str  # the engine session that holds its KV


class ResponseStore:
    """The last `capacity` stored responses by id (least recently used dropped first)."""

    def __init__(self, capacity: int = STORE_SIZE):
        self.capacity = capacity
        self._d: OrderedDict[str, Stored] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, rid: str, stored: Stored) -> None:
        with self._lock:
            self._d[rid] = stored
            self._d.move_to_end(rid)
            while len(self._d) > self.capacity:
                self._d.popitem(last=False)

    def get(self, rid: str) -> Stored | None:
        with self._lock:
            hit = self._d.get(rid)
            if hit is not None:
                self._d.move_to_end(rid)
            return hit

    def delete(self, rid: str) -> bool:
        with self._lock:
            return self._d.pop(rid, None) is not None

    def __len__(self) -> int:
        return len(self._d)


def _not_found(rid: str, param: str | None = None) -> APIError:
    what = "Previous response" if param else "Response"
    return APIError(f"{param + ': ' if param else ''}{what} with id {rid!r} not found (never "
                    "stored, stored with store=false, deleted, or evicted from the server's "
                    "store of recent responses)", status=404, param=param,
                    code="previous_response_not_found" if param else "response_not_found")


def previous(store: ResponseStore, rid: str | None) -> Stored | None:
    if rid is None:
        return None
    if not rid.startswith("resp_"):
        raise APIError(f"previous_response_id: {rid!r} is not a response id (they begin with "
                       "'resp_')", param="previous_response_id", code="invalid_value")
    hit = store.get(rid)
    if hit is None:
        raise _not_found(rid, "previous_response_id")
    return hit


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


def input_items(req: ResponsesRequest) -> list[dict]:
    if isinstance(req.input, str):
        return [{"type": "message", "role": "user", "content": req.input}]
    return list(req.input)


def to_messages(instructions: str | None, items: list[dict], offset: int = 0) -> list[Message]:
    """Items -> chat messages. The first `offset` items come from a stored conversation (already
    checked); errors name the request's own items as input[i]."""
    msgs = [Message(role="system", content=instructions)] if instructions else []
    calls: set[str] = set()
    for i, it in enumerate(items):
        kind, where = it.get("type", "message"), f"input[{i - offset}]"
        try:
            if kind == "message":
                msgs.append(Message(role=it.get("role"),
                                    content=_text(it.get("content"), f"{where}.content")))
            elif kind == "function_call":
                calls.add(it["call_id"])
                call = ToolCall(id=it["call_id"], function=FunctionCall(
                    name=it["name"], arguments=it.get("arguments") or "{}"))
                if msgs and msgs[-1].role == "assistant":
                    msgs[-1].tool_calls = [*(msgs[-1].tool_calls or ()), call]
                else:
                    msgs.append(Message(role="assistant", tool_calls=[call]))
            elif kind == "function_call_output":
                if it["call_id"] not in calls:
                    raise APIError(f"{where}.call_id: {it['call_id']!r} matches no function_call "
                                   "before it (in input or in the previous response)",
                                   param=f"{where}.call_id")
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
        self.final: dict | None = None  # the finished response body

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
            self.final = self.response(status, e.result)
            out.append(self.ev(f"response.{status}", response=self.final))
        return out


async def _stream(b: Builder, events: AsyncIterator[TurnEvent], on_final
                  ) -> AsyncIterator[bytes]:
    try:
        yield b.ev("response.created", response=b.response("in_progress"))
        yield b.ev("response.in_progress", response=b.response("in_progress"))
        async for e in events:
            for chunk in b.push(e):
                yield chunk
        if b.final is not None:
            on_final(b.final)
    except Exception as e:  # after the headers: report it as an event
        yield error_event(e)


def _with_ids(items: list[dict]) -> list[dict]:
    """Input items as listed by /input_items: each with an id (and messages with a status)."""
    out = []
    for it in items:
        kind = it.get("type", "message")
        prefix = {"message": "msg_", "function_call": "fc_"}.get(kind, "item_")
        out.append({"type": kind, **it, "id": it.get("id") or new_id(prefix),
                    **({"status": "completed"} if kind == "message" else {})})
    return out


def add_routes(app: FastAPI, st, store_size: int = STORE_SIZE) -> None:
    from .app import check_model, guard, parse, start

    store = ResponseStore(store_size)
    app.state.responses = store

    @app.get("/v1/responses/{rid}")
    async def retrieve(rid: str) -> Response:
        hit = store.get(rid)
        if hit is None:
            raise _not_found(rid)
        return JSONResponse(hit.response)

    @app.delete("/v1/responses/{rid}")
    async def delete(rid: str) -> Response:
        if not store.delete(rid):
            raise _not_found(rid)
        return JSONResponse({"id": rid, "object": "response.deleted", "deleted": True})

    @app.get("/v1/responses/{rid}/input_items")
    async def items(rid: str) -> Response:
        hit = store.get(rid)
        if hit is None:
            raise _not_found(rid)
        data = hit.input_items
        return JSONResponse({"object": "list", "data": data, "has_more": False,
                             "first_id": data[0]["id"] if data else None,
                             "last_id": data[-1]["id"] if data else None})

    @app.post("/v1/responses")
    async def responses(request: Request) -> Response:
        req = await parse(request, ResponsesRequest)
        check_model(st, req.model)
        reject_unsupported(req)
        prev = previous(store, req.previous_response_id)
        tok = st.engine.tokenizer
        tools = to_tools(req.tools)
        mode, name = tool_choice_of(req.tool_choice if not isinstance(req.tool_choice, dict)
                                    else {"name": req.tool_choice.get("name")},
                                    "tool_choice.name")
        parallel = req.parallel_tool_calls is not False
        constraint, cparam = constraint_for(tools, mode, name, to_format(req.text), True,
                                            parallel)
        await anyio.to_thread.run_sync(precompile, st.engine, constraint, cparam)
        new_items = input_items(req)
        history = (prev.items if prev else []) + new_items
        msgs = to_messages(req.instructions, history, len(history) - len(new_items))
        prompt = await anyio.to_thread.run_sync(build_prompt, tok, st.cache, msgs,
                                                tools or None, req.user,
                                                request.headers.get("x-session-id"),
                                                prev.session if prev else None)
        max_new = max_new_tokens(req.max_output_tokens, "max_output_tokens", len(prompt.ids),
                                 st.engine.max_context, prompt_field="input")
        parse_tools = bool(tools) and mode != "none"
        params = sampling(req, max_new, (HERMES_CLOSE,) if parse_tools and not parallel else (),
                          constraint)
        formats = template_formats(tok.chat_template)[1]
        parser = ToolParser(formats, parallel) if parse_tools else None

        job, steps = await start(st, request, Work(prompt.ids, params, prompt.session),
                                 lambda r: st.cache.after(tok, prompt, r.token_ids, r.stop))
        keep = req.store is not False
        b = Builder({"id": new_id("resp_"), "object": "response", "created_at": now(),
                     "model": st.model, "error": None, "incomplete_details": None,
                     "instructions": req.instructions, "metadata": {}, "tools": req.tools or [],
                     "tool_choice": req.tool_choice or "auto", "parallel_tool_calls": parallel,
                     "temperature": req.temperature, "top_p": req.top_p,
                     "max_output_tokens": req.max_output_tokens,
                     "previous_response_id": req.previous_response_id, "store": keep,
                     "user": req.user, "text": req.text or {"format": {"type": "text"}},
                     "usage": None})

        def on_final(body: dict) -> None:
            if keep:
                store.put(body["id"], Stored(body, history + body["output"],
                                             _with_ids(new_items), prompt.session))

        if req.stream:
            return EventStream(_stream(b, turn(steps, parser), on_final), job)

        async def run() -> dict:
            async for e in turn(steps, parser):
                b.push(e)
            assert b.final is not None
            on_final(b.final)
            return b.final

        return JSONResponse(await guard(request, job, run()))
