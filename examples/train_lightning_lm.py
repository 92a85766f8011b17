"""Train effattn's `lightning_lm_mini` (a TransNormerLLM / MiniMax-style causal language
model on lightning attention) character by character on a few public-domain poems shipped
in examples/data/poems.txt (bytes as tokens, vocabulary 256), then generate text with the
recurrent decode path.

    PYTHONPATH=python python examples/train_lightning_lm.py --steps 300
    python examples/train_lightning_lm.py --compile        # torch.compile the model
    python examples/train_lightning_lm.py --bf16           # bf16 autocast (on a GPU)

Prints training loss, validation loss and perplexity, saves a checkpoint, reloads it into a
fresh model (checking that it reproduces the validation loss) and prints a greedy and a
sampled continuation of `--prompt`. The model runs on CUDA only where this build of effattn
has CUDA lightning kernels (bf16 autocast is then always on: the CUDA kernels take
fp16/bf16); otherwise on the CPU, whose kernels are fp32/fp64 (--bf16 is then ignored).
"""
import argparse
import math
import os
import sys
import tempfile
import time

import torch
import torch.nn.functional as F

import effattn
from effattn.lightning import _KERNEL_DEVICES

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "poems.txt")


def batches(data, batch_size, seq_len, generator):
    """Random windows of seq_len + 1 bytes: (inputs [B, T], targets [B, T])."""
    starts = torch.randint(0, len(data) - seq_len - 1, (batch_size,), generator=generator)
    chunk = torch.stack([data[s:s + seq_len + 1] for s in starts.tolist()])
    return chunk[:, :-1], chunk[:, 1:]


def evaluate(model, data, seq_len, device, autocast):
    """Mean next-byte loss over consecutive windows of `data`."""
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad(), autocast():
        for s in range(0, len(data) - 1, seq_len):
            chunk = data[s:s + seq_len + 1].to(device)
            logits = model(chunk[None, :-1]).float()
            total += F.cross_entropy(logits[0], chunk[1:], reduction="sum").item()
            count += len(chunk) - 1
    model.train()
    return total / count


def decode(tokens):
    return bytes(tokens.tolist()).decode("utf-8", errors="replace")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300,
                        help="training steps (default 300; the 3 KB text is memorized by then, so the "
                             "validation perplexity, on an unseen poem, is high)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--compile", action="store_true", help="train through torch.compile(model)")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (GPU)")
    parser.add_argument("--device", default=None,
                        help="cpu or cuda (default: cuda when effattn has CUDA lightning kernels)")
    parser.add_argument("--checkpoint", default=os.path.join(tempfile.gettempdir(), "effattn_lightning_lm.pt"))
    parser.add_argument("--prompt", default="Shall I compare thee")
    parser.add_argument("--max-new-tokens", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-every", type=int, default=50)
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    if args.device is None:
        if torch.cuda.is_available() and "cuda" not in _KERNEL_DEVICES:
            print("note: this build of effattn has no CUDA lightning kernels; training on the CPU")
        args.device = "cuda" if torch.cuda.is_available() and "cuda" in _KERNEL_DEVICES else "cpu"
    device = args.device
    bf16 = args.bf16
    if device == "cuda" and not bf16:
        print("note: effattn's CUDA kernels take fp16/bf16 inputs; turning on --bf16")
        bf16 = True
    if device == "cpu" and bf16:
        print("note: --bf16 is for the GPU (effattn's CPU kernels are fp32/fp64); ignored on the CPU")
        bf16 = False

    def autocast():
        return torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16)

    with open(DATA, "rb") as f:
        data = torch.tensor(list(f.read()), dtype=torch.long)
    split = int(0.9 * len(data))
    train, val = data[:split], data[split:]
    print(f"text: {len(data)} bytes ({len(train)} train / {len(val)} validation), device {device}, "
          f"bf16 {bf16}, compile {args.compile}")

    # The CUDA lightning kernels take head dims 64 and 128: on a GPU, 2 heads of 64 instead of the
    # default 4 heads of 32 (same embedding width and parameter count).
    config = dict(num_heads=2) if device == "cuda" else {}
    model = effattn.models.create_model("lightning_lm_mini", **config).to(device)
    print(f"lightning_lm_mini: {sum(p.numel() for p in model.parameters()):,} parameters "
          f"(embedding tied to the LM head)")
    step_model = torch.compile(model) if args.compile else model
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01, betas=(0.9, 0.95))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 20) * 0.5 * (1 + math.cos(math.pi * min(s, args.steps) / args.steps)))

    gen = torch.Generator().manual_seed(args.seed)
    start, running, count = time.time(), 0.0, 0
    for step in range(1, args.steps + 1):
        x, y = batches(train, args.batch_size, args.seq_len, gen)
        x, y = x.to(device), y.to(device)
        with autocast():
            logits = step_model(x)
            loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        schedule.step()
        running += loss.item()
        count += 1
        if step % args.log_every == 0 or step == args.steps:
            elapsed = time.time() - start
            print(f"step {step:5d}  loss {running / count:.4f}  ppl {math.exp(running / count):8.2f}  "
                  f"({count * x.numel() / elapsed:.0f} tok/s)")
            running, count, start = 0.0, 0, time.time()

    val_loss = evaluate(model, val, args.seq_len, device, autocast)
    print(f"validation: loss {val_loss:.4f}  perplexity {math.exp(val_loss):.2f}")

    torch.save({"model": model.state_dict(), "name": "lightning_lm_mini", "config": config, "steps": args.steps},
               args.checkpoint)
    checkpoint = torch.load(args.checkpoint, map_location=device, weights_only=True)
    reloaded = effattn.models.create_model(checkpoint["name"], **checkpoint["config"]).to(device)
    reloaded.load_state_dict(checkpoint["model"])
    reloaded_loss = evaluate(reloaded, val, args.seq_len, device, autocast)
    print(f"checkpoint saved to {args.checkpoint}; reloaded model validation loss {reloaded_loss:.4f}")
    if abs(reloaded_loss - val_loss) > 1e-4:
        print("error: the reloaded model does not reproduce the trained model's validation loss")
        return 1

    prompt = torch.tensor([list(args.prompt.encode("utf-8"))], dtype=torch.long, device=device)
    with autocast():
        greedy = reloaded.generate(prompt, args.max_new_tokens, greedy=True)
        sampled = reloaded.generate(prompt, args.max_new_tokens, greedy=False, temperature=0.8, top_k=20,
                                    generator=torch.Generator(device=device).manual_seed(args.seed))
    print("--- greedy sample ---")
    print(decode(greedy[0]))
    print("--- sampled (temperature 0.8, top-k 20) ---")
    print(decode(sampled[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
