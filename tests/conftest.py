import os

import pytest
import torch

# Two cores on CI: keep torch from oversubscribing when pytest runs things in parallel.
torch.set_num_threads(int(os.environ.get("FA_EXPLORE_TEST_THREADS", "2")))


@pytest.fixture(autouse=True)
def _deterministic_global_rng():
    # Rules and training use their own generators; this only guards tests that use torch.rand.
    torch.manual_seed(0)
    yield
