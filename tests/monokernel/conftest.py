"""Loaded by pytest before this folder's test modules: mk_utils sets TRITON_INTERPRET before any
of them imports triton (a module that imports triton.language first would otherwise get the
compiled language in the interpreter when run on its own)."""

import mk_utils  # noqa: F401
