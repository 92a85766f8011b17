"""The synchronisation protocol of the Hopper pass-3 kernel v2 (scripts/sim_estimate_sm90.py):
random interleavings finish without deadlock or hazard and give the oracle's map, and the
simulation does catch the protocol errors it is meant to (the first hang's register split, no
wait<0> around the loop's back edge, a stage released before its last check), and that the
kernel source's protocol is the one the simulation transcribes (an edit of the kernel's waits,
parities or unit order fails until the transcription follows). CPU only."""
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


@pytest.mark.parametrize("old, new", [
    ("((it / kRing) + 1) & 1);", "(it / kRing) & 1);"),                       # empty wait parity off by one
    ("sm90::wgmma_wait<1>();\n    sm90::fence_regs(accA);\n    if (cur.act & 1u)",
     "sm90::wgmma_wait<2>();\n    sm90::fence_regs(accA);\n    if (cur.act & 1u)"),  # check of an in-flight unit
    ("    issue(accB, qf[3], cur.s);\n", "    if (cur.act & 8u) issue(accB, qf[3], cur.s);\n"),  # per-warp wgmma
])
def test_kernel_protocol_drift_is_caught(old, new):
    text = open(sim.SRC).read()
    sim.check_protocol(text)  # the kernel as it is
    v2 = text.index("namespace v2 {")
    assert old in text[v2:]
    with pytest.raises(sim.Fail):
        sim.check_protocol(text[:v2] + text[v2:].replace(old, new, 1))
