"""Which C++ argument-check failures come back as Python exceptions and which crash the process:
each probe runs in its own interpreter (python scripts/cpp_error_probe.py). A device-side
diagnosis aid for the estimate_block_mask crash noted in the README."""
import subprocess
import sys

SETUP = ("import torch, effattn; ops = torch.ops.effattn; "
         "dev = '{dev}'; q = torch.randn(1, 100, 2, 64, device=dev).to(torch.bfloat16); ")
ESTIMATE = ("z8 = torch.zeros(q.shape, device=dev, dtype=torch.int8); sc = torch.ones(1, 100, 2, device=dev); "
            "mn = torch.zeros(1, 2, 64, device=dev); lt = torch.zeros(2, device=dev); "
            "ops.estimate_block_mask(q, q, z8, sc, mn, z8, sc, mn, lt, {block_q}, 64, 1, 0, 0, True, None)")
PROBES = {
    "torch's own check (aten mm), cuda": "torch.mm(q[0, :, 0], q[0, :, 0])",
    "effattn lightning_decode C++ check, cuda":
        "ops.lightning_decode(q[:, 0], q[:, 0], q[:, 0], torch.ones(3, device=dev), "
        "torch.zeros(1, 2, 64, 64, device=dev), 1.0)",
    "effattn estimate_block_mask valid call, cuda": ESTIMATE.format(block_q=64),
    "effattn estimate_block_mask C++ check, cpu": ESTIMATE.format(block_q=32),
    "effattn estimate_block_mask C++ check, cuda": ESTIMATE.format(block_q=32),
    "effattn smooth_quantize C++ check, cuda": "ops.smooth_quantize(q, 0, 8)",
}


def main():
    for name, call in PROBES.items():
        dev = "cpu" if name.endswith("cpu") else "cuda"
        code = SETUP.format(dev=dev) + (
            f"\ntry:\n    {call}\n    print('no exception')\nexcept Exception as e:\n"
            f"    print(type(e).__name__, str(e).splitlines()[0][:100])")
        r = subprocess.run([sys.executable, "-X", "faulthandler", "-c", code], capture_output=True, text=True)
        if r.returncode < 0:
            outcome = f"CRASH (signal {-r.returncode})"
        else:
            outcome = r.stdout.strip() or f"exit {r.returncode}: {(r.stderr.strip().splitlines() or [''])[-1][:100]}"
        print(f"{name}: {outcome}", flush=True)


if __name__ == "__main__":
    main()
