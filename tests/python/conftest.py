import pytest
import torch
from hypothesis import settings


import jitfuse

torch.set_num_threads(2)

# Property-based tests: a few hundred examples in all by default (CI), over a thousand with
# --hypothesis-profile=thorough. Derandomized in CI so a red run can be replayed.
settings.register_profile("ci", max_examples=150, derandomize=True, print_blob=True)
settings.register_profile("thorough", max_examples=700, print_blob=True)
settings.load_profile("ci")


@pytest.fixture(autouse=True)
def _jitfuse_on():
    """Every test starts with jitfuse and all its patterns enabled, and leaves it so."""
    jitfuse.set_enabled(True)
    yield
    jitfuse.set_enabled(True)
    for name in jitfuse.patterns():
        jitfuse.set_pattern_enabled(name, True)
