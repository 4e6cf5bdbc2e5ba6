"""The benchmark harness (`agentfast bench`, `python -m agentfast.engine.bench`)."""
