"""Bad input -> an OpenAI error object with the right 4xx, naming the field; the server keeps
serving after each one."""

from __future__ import annotations

import httpx
import openai
import pytest

Q = [{"role": "user", "content": "hi"}]
TOOL = {"type": "function", "function": {"name": "f", "parameters": {
    "type": "object", "properties": {"x": {"type": "boolean"}}, "required": ["x"],
    "additionalProperties": False}, "strict": True}}


def post(base_url: str, body: bytes | dict, path: str = "/chat/completions") -> httpx.Response:
    if isinstance(body, dict):
        return httpx.post(base_url + path, json=body, timeout=30)
    return httpx.post(base_url + path, content=body, timeout=30,
                      headers={"content-type": "application/json"})


def check(r: httpx.Response, status: int, param: str | None, code: str | None = None,
          words: str = "") -> None:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["param"] == param and err["message"]
    if param:
        assert err["message"].startswith(param.split("[")[0])
    if code:
        assert err["code"] == code
    assert words in err["message"]


@pytest.mark.parametrize("body,status,param,code", [
    (b'{"model": "tiny", "messages": [', 400, None, "invalid_json"),
    (b"[1, 2]", 400, None, "invalid_json"),
    ({"model": "gpt-17", "messages": Q}, 404, "model", "model_not_found"),
    ({"messages": Q}, 400, "model", "missing_field"),
    ({"model": "tiny", "messages": Q, "n": 2}, 400, "n", "unsupported_value"),
    ({"model": "tiny", "messages": Q, "frequency_penalty": 0.5}, 400, "frequency_penalty", None),
    ({"model": "tiny", "messages": Q, "logit_bias": {"1": 5}}, 400, "logit_bias", None),
    ({"model": "tiny", "messages": Q, "temperature": -1}, 400, "temperature", None),
    ({"model": "tiny", "messages": Q, "temperature": 2.5}, 400, "temperature", None),
    ({"model": "tiny", "messages": Q, "top_p": 0}, 400, "top_p", None),
    ({"model": "tiny", "messages": Q, "max_tokens": 0}, 400, "max_tokens", None),
    ({"model": "tiny", "messages": Q, "top_logprobs": 3}, 400, "top_logprobs", None),
    ({"model": "tiny", "messages": Q, "stop": [""]}, 400, "stop", None),
    ({"model": "tiny", "messages": Q, "tool_choice": "bogus"}, 400, "tool_choice",
     "invalid_value"),
    ({"model": "tiny", "messages": Q, "stream_options": {"include_usage": "x"}}, 400,
     "stream_options.include_usage", "invalid_value"),
    ({"model": "tiny", "messages": Q, "tools": [{"type": "retrieval"}]}, 400, "tools[0].type",
     None),
    ({"model": "tiny", "messages": [{"role": "robot", "content": "x"}]}, 400,
     "messages[0].role", None),
    ({"model": "tiny", "messages": []}, 400, "messages", None),
    ({"model": "tiny", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "x"}}]}]}, 400,
     "messages[0].content[0].type", None),
    ({"model": "tiny", "messages": Q + [{"role": "tool", "tool_call_id": "call_x",
                                         "content": "42"}]}, 400, "messages[1].tool_call_id",
     None),
    ({"model": "tiny", "messages": Q, "tool_choice": "required"}, 400, "tool_choice", None),
    ({"model": "tiny", "messages": Q, "tools": [TOOL],
      "tool_choice": {"type": "function", "function": {"name": "g"}}}, 400, "tool_choice",
     None),
    ({"model": "tiny", "messages": Q, "tools": [{"type": "function", "function": {
        "name": "bad name!"}}]}, 400, "tools[0].function.name", None),
])
def test_bad_chat_requests(base_url, body, status, param, code):
    check(post(base_url, body), status, param, code)


def test_context_overflow(base_url, tiny_engine):
    long = [{"role": "user", "content": "The quick brown fox. " * 1500}]
    check(post(base_url, {"model": "tiny", "messages": long}), 400, "messages",
          "context_length_exceeded", "context")
    check(post(base_url, {"model": "tiny", "messages": Q, "max_tokens": 100_000}), 400,
          "max_tokens", "context_length_exceeded")
    check(post(base_url, {"model": "tiny", "prompt": "hi", "max_tokens": 100_000},
               "/completions"), 400, "max_tokens", "context_length_exceeded")


def test_invalid_or_unsupported_schema(base_url, constraints):
    bad = {"type": "json_schema", "json_schema": {"name": "x", "strict": True, "schema": {
        "type": "object", "properties": {"a": {"type": "string", "pattern": "(?=x)"}},
        "required": ["a"], "additionalProperties": False}}}
    r = post(base_url, {"model": "tiny", "messages": Q, "response_format": bad})
    check(r, 400, "response_format.json_schema.schema", "invalid_schema")
    tool = {"type": "function", "function": {"name": "f", "strict": True, "parameters": {
        "type": "object", "properties": {"a": {"type": "frobnicate"}}}}}
    r = post(base_url, {"model": "tiny", "messages": Q, "tools": [tool],
                        "tool_choice": "required"})
    check(r, 400, "tools", "invalid_schema")


def test_bad_completions_and_responses(base_url):
    check(post(base_url, {"model": "tiny", "prompt": "a", "echo": True}, "/completions"), 400,
          "echo")
    check(post(base_url, {"model": "tiny", "prompt": ["a", "b"]}, "/completions"), 400,
          "prompt")
    check(post(base_url, {"model": "tiny", "prompt": [999999]}, "/completions"), 400, "prompt")
    check(post(base_url, {"model": "tiny", "input": "x", "previous_response_id": "resp_1"},
               "/responses"), 404, "previous_response_id", "previous_response_not_found")
    check(post(base_url, {"model": "tiny", "input": "x", "previous_response_id": "chat_1"},
               "/responses"), 400, "previous_response_id", "invalid_value")
    check(post(base_url, {"model": "tiny", "input": "x", "tool_choice": {"type": "function"}},
               "/responses"), 400, "tool_choice.name")
    check(post(base_url, {"model": "tiny", "input": [{"type": "function_call_output",
                                                      "call_id": "call_9", "output": "x"}]},
               "/responses"), 400, "input[0].call_id", None, "call_9")
    check(post(base_url, {"model": "tiny", "input": [{"type": "message", "role": "user",
                                                      "content": [{"type": "input_image"}]}]},
               "/responses"), 400, "input[0].content[0].type")
    check(post(base_url, {"model": "tiny", "input": [{"type": "function_call_output",
                                                      "output": "x"}]}, "/responses"), 400,
          "input[0].call_id")


def test_unknown_route_and_method(base_url):
    root = base_url.removesuffix("/v1")
    r = httpx.get(root + "/v1/nope")
    assert r.status_code == 404 and "error" in r.json()
    assert httpx.get(base_url + "/chat/completions").status_code == 405


def test_official_client_raises_typed_errors_and_server_keeps_serving(client):
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="gpt-17", messages=Q)
    assert e.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="tiny", messages=Q, n=3)
    assert e.value.param == "n"
    r = client.chat.completions.create(model="tiny", messages=Q, max_tokens=3, temperature=0)
    assert r.choices[0].message.content is not None
