"""agentfast: sequential agent loops at the speed of the GPU's memory.

The SDK namespace. `agentfast.engine` runs models, `agentfast.kernels` holds the Triton
kernels, `agentfast.spec_decode` the drafters.
"""

__version__ = "0.1.0"
