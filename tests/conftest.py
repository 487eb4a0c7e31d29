"""Test session setup: 8 emulated CPU devices and no hub.

The emulated devices make sharded code run on every test run.
"""

import os

# Must happen before jax is imported anywhere: XLA reads the flag once, at backend start.
os.environ["XLA_FLAGS"] = " ".join(
    filter(None, [os.environ.get("XLA_FLAGS"), "--xla_force_host_platform_device_count=8"]))
# Nothing may be fetched from a model hub during tests: checkpoints are made by the tests or
# shipped in packages.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
