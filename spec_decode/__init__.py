"""Speculative decoding: drafters that guess the next tokens, and the rule that accepts them.

Knows token ids (no text; tensors only in the accept rule and in mtp.py's MTP modules, which
also read the main model's hidden states). The backend scores the current token plus k drafts
in one forward and keeps the longest accepted prefix; under greedy the output equals plain
decode token for token, under sampling it has the same distribution.
"""

from __future__ import annotations

from .accept import accept_greedy, accept_sampled, verify
from .drafters import Drafter, DraftLength, NgramDrafter
from .mtp import MtpDrafter

__all__ = ["Drafter", "DraftLength", "MtpDrafter", "NgramDrafter", "accept_greedy",
           "accept_sampled", "verify"]
