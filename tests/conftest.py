import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))


@pytest.fixture(autouse=True)
def _fresh_seed(request):
    # A different, reproducible seed per test: fresh random inputs for every case.
    torch.manual_seed(abs(hash(request.node.nodeid)) % (2**31))
    yield
