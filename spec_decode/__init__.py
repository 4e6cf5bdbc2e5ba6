"""Speculative decoding: drafters and the accept rule (not yet built)."""
