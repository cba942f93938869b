import os

import pytest
import torch
from hypothesis import settings

# Test nets are tiny: one thread avoids thread start-up and oversubscription costs.
torch.set_num_threads(int(os.environ.get("FA_EXPLORE_TEST_THREADS", "1")))

# CI runs the same examples every time (no example database, no random seed), so a
# run fails only for a change in the code; locally hypothesis keeps exploring.
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
if os.environ.get("CI") == "true":
    settings.load_profile("ci")


@pytest.fixture(autouse=True)
def _deterministic_global_rng():
    # Rules and training use their own generators; this only guards tests that use torch.rand.
    torch.manual_seed(0)
    yield
