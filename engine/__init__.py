"""agentfast.engine: model loading, tokenizer and chat template, sessions with KV reuse, the
generation loop and the backends (reference, graph, monokernel)."""

from .engine import Chunk, Engine, Generation, GenerationResult
from .errors import AgentfastError, ContextLengthError, ModelLoadError, UnsupportedModelError
from .sampling import SamplingParams

__all__ = [
    "AgentfastError", "Chunk", "ContextLengthError", "Engine", "Generation", "GenerationResult",
    "ModelLoadError", "SamplingParams", "UnsupportedModelError",
]
