"""Training throughput of effattn's models on effattn's kernels beside the same models (same
config, same initial weights) on the peers' kernels (issue 8):

- nat_tiny, images/s: NA by effattn vs by PyTorch FlexAttention (torch.compile'd
  flex_attention, NA as a mask_mod, one cached block mask per feature-map shape; switched with
  `effattn.models.na_backend("flex")`). Everything else in the model runs eagerly in both.
- lightning_lm_mini with 2 heads of dim 64 (effattn's CUDA lightning kernels take head dims
  64/128; the mini default is 4 heads of 32), tokens/s: effattn's lightning_attn vs fla's
  `chunk_lightning_attn` (`effattn.models.lightning_backend("fla")`). The layers' decays are
  set to fla's convention (`effattn.fla_lightning_slopes`) so that fla runs
  `chunk_lightning_attn` itself and both backends compute the same function.

One training step = zero_grad, forward under bf16 autocast (CUDA; fp32 on the CPU, whose NA
and lightning kernels take fp32/fp64), cross-entropy on random labels (next-token targets for
the LM), backward and an AdamW step (fused on CUDA). Time per step: CUDA events around each
step (`effattn.timing.median_ms`), median of --iters steps after --warmup steps; the warm-up
(which includes FlexAttention's compilation and fla's Triton autotuning) is reported apart.
Before timing, each peer's logits are compared with effattn's (eval mode, same batch).

    PYTHONPATH=python python benchmarks/bench_models.py [--only nat|lm] [--out DIR]
    PYTHONPATH=python python benchmarks/bench_models.py --quick --device cpu   # smoke test

Prints a markdown table ("effattn speed-up" = peer ms / effattn ms, the repo's convention)
and writes DIR/bench_models.json and DIR/bench_models.md (default build/bench_models).
"""
import argparse
import contextlib
import copy
import json
import math
import os
import sys
import time

import torch
import torch.nn.functional as F

from effattn.bench.runner import metadata
from effattn.lightning import fla_lightning_slopes
from effattn.models import create_model, lightning_backend, na_backend
from effattn.models.fla_backend import fla_available
from effattn.timing import median_ms

LM_CONFIG = dict(num_heads=2)  # lightning_lm_mini with head dim 64 (see the module docstring)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, few steps (smoke test)")
    parser.add_argument("--only", choices=("all", "nat", "lm"), default="all")
    parser.add_argument("--out", default="build/bench_models")
    parser.add_argument("--iters", type=int, help="timed steps (default 10, quick 2)")
    parser.add_argument("--warmup", type=int, help="untimed steps first (default 3, quick 1)")
    parser.add_argument("--nat-batch", type=int, help="default 64 (quick 2)")
    parser.add_argument("--image-size", type=int, help="default 224 (quick 64)")
    parser.add_argument("--lm-batch", type=int, help="default 8 (quick 2)")
    parser.add_argument("--lm-seq", type=int, help="default 4096 (quick 256)")
    args = parser.parse_args()
    quick = args.quick
    defaults = dict(iters=2 if quick else 10, warmup=1 if quick else 3, nat_batch=2 if quick else 64,
                    image_size=64 if quick else 224, lm_batch=2 if quick else 8,
                    lm_seq=256 if quick else 4096)
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def _sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def _autocast(device):
    # The CPU kernels take fp32/fp64 only, so CPU runs (smoke tests) stay in fp32.
    if device == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _check_logits(model, inputs, device, backend_ctx):
    """Logits in eval mode with grad enabled: the compiled FlexAttention graphs are then the
    training ones (no extra inference compile)."""
    model.eval()
    with backend_ctx(), _autocast(device):
        logits = model(inputs).float().detach()
    model.train()
    return logits


def run_backend(model, init_state, loss_fn, inputs, device, backend_ctx, args):
    """Warm-up and timed training steps of `model` under `backend_ctx`; returns a result dict."""
    model.load_state_dict(init_state)  # every backend starts from the same weights
    fused = {"fused": True} if device == "cuda" else {}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, **fused)

    def step():
        opt.zero_grad(set_to_none=True)
        with backend_ctx(), _autocast(device):
            loss = loss_fn(model)
        loss.backward()
        opt.step()
        return loss

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    _sync(device)
    t0 = time.perf_counter()
    logits = _check_logits(model, inputs, device, backend_ctx)
    for _ in range(args.warmup):
        loss = step()
    _sync(device)
    warmup_s = time.perf_counter() - t0
    ms = median_ms(step, device, warmup=0, repeats=args.iters)
    result = {"ms": ms, "warmup_s": warmup_s, "loss": float(loss.detach()) if args.warmup else None}
    if device == "cuda":
        result["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    del opt
    model.zero_grad(set_to_none=True)
    if device == "cuda":
        torch.cuda.empty_cache()
    return result, logits


def bench_model(name, model, inputs, loss_fn, items, unit, backends, device, args, config):
    """Runs every (backend, context or skip reason) on one model; returns table rows."""
    init_state = copy.deepcopy(model.state_dict())
    rows, reference = [], None
    for backend, ctx in backends:
        row = {"model": name, "backend": backend, "batch": config["batch"], "unit": unit,
               "config": config}
        if isinstance(ctx, str):
            row["skipped"] = ctx
            print(f"{name} / {backend}: skipped ({ctx})", flush=True)
            rows.append(row)
            continue
        print(f"{name} / {backend}: running ...", flush=True)
        try:
            result, logits = run_backend(model, init_state, loss_fn, inputs, device, ctx, args)
        except Exception as e:  # a peer that fails is reported, the others still run
            row["error"] = f"{type(e).__name__}: {e}"[:300]
            print(f"{name} / {backend}: error {row['error']}", flush=True)
            rows.append(row)
            if device == "cuda":
                torch.cuda.empty_cache()
            continue
        row.update(result)
        row["throughput"] = items / (result["ms"] * 1e-3)
        if reference is None:
            reference = logits
        else:  # max |difference| of the logits, relative to effattn's largest logit
            row["logits_rel_diff"] = ((logits - reference).abs().max() / reference.abs().max()).item()
        print(f"{name} / {backend}: {result['ms']:.2f} ms/step, {row['throughput']:.0f} {unit}, "
              f"warm-up {result['warmup_s']:.1f} s", flush=True)
        rows.append(row)
    return rows


def bench_nat(device, args):
    batch, size = args.nat_batch, args.image_size
    model = create_model("nat_tiny").to(device)
    images = torch.randn(batch, 3, size, size, device=device)
    labels = torch.randint(0, model.num_classes, (batch,), device=device)
    flex = lambda: na_backend("flex")  # noqa: E731
    if device != "cuda":
        flex = "FlexAttention has no backward on the CPU"
    backends = [("effattn", contextlib.nullcontext), ("flex (compiled)", flex)]
    config = {"batch": batch, "image_size": size,
              "grids": [math.ceil(size / 4 / 2 ** i) for i in range(len(model.levels))]}
    return bench_model("nat_tiny", model, images, lambda m: F.cross_entropy(m(images), labels),
                       batch, "images/s", backends, device, args, config)


def bench_lm(device, args):
    batch, seq = args.lm_batch, args.lm_seq
    model = create_model("lightning_lm_mini", **LM_CONFIG).to(device)
    with torch.no_grad():  # fla's decay convention on every layer, for both backends
        for block in model.blocks:
            attn = block.attn
            attn.slope.copy_(fla_lightning_slopes(attn.num_heads, attn.layer_idx, attn.num_layers))
    ids = torch.randint(0, model.vocab_size, (batch, seq + 1), device=device)
    inputs, targets = ids[:, :-1], ids[:, 1:]

    def loss_fn(m):
        return F.cross_entropy(m(inputs).flatten(0, 1).float(), targets.flatten())

    fla = lambda: lightning_backend("fla")  # noqa: E731
    if device != "cuda":
        fla = "fla's kernels are Triton (CUDA only)"
    else:
        ok, info = fla_available()
        if not ok:
            fla = f"fla is not installed or does not import ({info[:120]})"
            print(f"lightning_lm_mini / fla: {fla}", flush=True)
    blocks = model.blocks
    config = {"batch": batch, "seq": seq, "embed_dim": model.embed_dim, "depth": model.depth,
              "heads": blocks[0].attn.num_heads, "head_dim": blocks[0].attn.head_dim,
              "decays": "fla_lightning_slopes", "scale": blocks[0].attn.scale}
    return bench_model("lightning_lm_mini", model, inputs, loss_fn, batch * seq, "tokens/s",
                       [("effattn", contextlib.nullcontext), ("fla chunk_lightning_attn", fla)],
                       device, args, config)


def format_table(rows):
    lines = ["| model | backend | batch | throughput | ms/iter | effattn speed-up | warm-up s | "
             "logits rel. diff | peak GiB | note |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    ours = {r["model"]: r for r in rows if r["backend"] == "effattn" and "ms" in r}
    for r in rows:
        batch = r["batch"] if r["unit"] == "images/s" else f"{r['batch']}x{r['config']['seq']}"
        if "ms" not in r:
            note = f"skipped: {r['skipped']}" if "skipped" in r else f"error: {r['error'][:120]}"
            lines.append(f"| {r['model']} | {r['backend']} | {batch} |" + " – |" * 6 + f" {note} |")
            continue
        mine = ours.get(r["model"])
        speedup = f"{r['ms'] / mine['ms']:.2f}x" if mine is not None and mine is not r else "–"
        diff = f"{r['logits_rel_diff']:.1e}" if "logits_rel_diff" in r else "–"
        peak = f"{r['peak_gib']:.1f}" if "peak_gib" in r else "–"
        lines.append(f"| {r['model']} | {r['backend']} | {batch} | {r['throughput']:,.0f} {r['unit']} | "
                     f"{r['ms']:.2f} | {speedup} | {r['warmup_s']:.1f} | {diff} | {peak} | |")
    return "\n".join(lines)


def main():
    args = parse_args()
    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device here (use --device cpu)")
    # FlexAttention compiles once per feature-map shape; past dynamo's recompile limit it would
    # silently run eagerly (materialising N×N scores), so raise the limit and fail past it.
    dynamo = torch._dynamo.config
    if hasattr(dynamo, "recompile_limit"):
        dynamo.recompile_limit = max(dynamo.recompile_limit, 64)
    if hasattr(dynamo, "fail_on_recompile_limit_hit"):
        dynamo.fail_on_recompile_limit_hit = True
    torch.manual_seed(0)
    start = time.perf_counter()
    rows = []
    if args.only in ("all", "nat"):
        rows += bench_nat(device, args)
    if args.only in ("all", "lm"):
        rows += bench_lm(device, args)
    total_s = time.perf_counter() - start
    meta = metadata(device, torch.bfloat16 if device == "cuda" else torch.float32)
    meta.update(fla=fla_available()[1] if device == "cuda" else None, total_s=total_s,
                iters=args.iters, warmup=args.warmup, quick=args.quick,
                step="zero_grad + forward (bf16 autocast on CUDA) + cross-entropy + backward + AdamW step")
    table = format_table(rows)
    header = (f"{meta['device']}, torch {meta['torch']}, {meta['dtype']}, median of {args.iters} "
              f"steps after {args.warmup} warm-up steps, total {total_s:.0f} s")
    print()
    print(header)
    print(table)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "bench_models.json"), "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=1)
    with open(os.path.join(args.out, "bench_models.md"), "w") as f:
        f.write(header + "\n\n" + table + "\n")
    print(f"wrote {os.path.join(args.out, 'bench_models.json')}")
    failed = [r for r in rows if "error" in r]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
