import os

import pytest
import torch

# Test nets are tiny: one thread avoids thread start-up and oversubscription costs.
torch.set_num_threads(int(os.environ.get("FA_EXPLORE_TEST_THREADS", "1")))


@pytest.fixture(autouse=True)
def _deterministic_global_rng():
    # Rules and training use their own generators; this only guards tests that use torch.rand.
    torch.manual_seed(0)
    yield
