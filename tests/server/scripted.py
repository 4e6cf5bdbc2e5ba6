"""A scripted engine for server tests: the tiny engine, except that every generation writes a
fixed text (so the model's output is known) and the prompts it was given are recorded."""

from __future__ import annotations

import dataclasses

from agentfast.engine import Chunk, Generation, GenerationResult

# a ChatML template whose text names every tool-call format (the server picks its parsers from
# the template's text): Hermes always, Mistral ([TOOL_CALLS]) and Llama 3 (<|python_tag|>)
TEMPLATE = (
    "{# [TOOL_CALLS] <|python_tag|> #}{% for m in messages %}<|im_start|>{{ m.role }}\n"
    "{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>"
    "assistant\n{% endif %}")


class Scripted:
    """Wraps `engine`; `text` is what each generation writes, in 3-character chunks (one
    token id each); `prompts` are the prompt token ids received, oldest first."""

    def __init__(self, engine, text: str = "", formats: bool = False):
        self._engine, self.text = engine, text
        self.prompts: list[list[int]] = []
        self.tokenizer = (dataclasses.replace(engine.tokenizer, chat_template=TEMPLATE)
                          if formats else engine.tokenizer)

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def stream(self, ids, params, session=None, logprobs=None) -> Generation:
        text, eos = self.text, min(self._engine.eos_ids)
        self.prompts.append(list(ids))
        pieces = [text[i:i + 3] for i in range(0, len(text), 3)]
        g = Generation(iter(()))

        def run():
            for p in pieces:
                yield Chunk(p, [0])
            g.result = GenerationResult(
                text=text, token_ids=[0] * len(pieces), finish_reason="stop",
                prompt_tokens=len(ids), reused_tokens=0, prefilled_tokens=len(ids), stop=eos)

        g._it = run()
        return g
