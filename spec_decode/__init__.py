"""Speculative decoding: drafters that guess the next tokens, and the rule that accepts them.

Knows token ids (no text; tensors only in the accept rule, in mtp.py's MTP modules, which also
read the main model's hidden states, and in draft_model.py's draft models). The backend scores
the current token plus k drafts in one forward and keeps the longest accepted prefix; under
greedy the output equals plain decode token for token, under sampling it has the same
distribution. policy.py picks k per step and switches drafting off where it does not pay.
"""

from __future__ import annotations

from .accept import accept_greedy, accept_sampled, verify
from .draft_model import DraftModelDrafter
from .drafters import Drafter, NgramDrafter
from .mtp import MtpDrafter
from .policy import DraftPolicy, StepCost

__all__ = ["DraftModelDrafter", "DraftPolicy", "Drafter", "MtpDrafter", "NgramDrafter",
           "StepCost", "accept_greedy", "accept_sampled", "verify"]
