import os
import sys
import zlib

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))


@pytest.fixture(autouse=True)
def _fresh_seed(request):
    # A different, reproducible seed per test (crc32, not hash(): str hashes vary per process).
    torch.manual_seed(zlib.crc32(request.node.nodeid.encode()))
    yield
