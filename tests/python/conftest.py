import pytest
import torch

import jitfuse

torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _jitfuse_on():
    """Every test starts with jitfuse and all its patterns enabled, and leaves it so."""
    jitfuse.set_enabled(True)
    yield
    jitfuse.set_enabled(True)
    for name in jitfuse.patterns():
        jitfuse.set_pattern_enabled(name, True)
