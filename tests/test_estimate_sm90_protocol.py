"""The synchronisation protocol of the Hopper pass-3 kernel v2 (scripts/sim_estimate_sm90.py):
random interleavings finish without deadlock or hazard and give the oracle's map, and the
simulation does catch the protocol errors it is meant to (the first hang's register split, no
wait<0> around the loop's back edge, a stage released before its last check). CPU only."""
import importlib.util
import os
import random

import pytest

_PATH = os.path.join(os.path.dirname(__file__), "..", "scripts", "sim_estimate_sm90.py")
_spec = importlib.util.spec_from_file_location("sim_estimate_sm90", _PATH)
sim = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sim)


def test_protocol_random_runs():
    cfg = sim.constants()
    assert 128 * cfg["prod"] + 256 * cfg["cons"] <= 384 * cfg["launch"]
    rng = random.Random(0)
    for _ in range(150):
        sim.one(cfg, rng)


@pytest.mark.parametrize("mutate", ["regs", "nowait", "early_release"])
def test_protocol_errors_are_caught(mutate):
    cfg = sim.constants()
    if mutate == "regs":
        cfg.update(prod=48, cons=232)
    rng = random.Random(1)
    with pytest.raises(sim.Fail):
        for _ in range(50):
            sim.one(cfg, rng, mutate)
