"""Train effattn's `nat_mini` neighborhood-attention backbone on scikit-learn's bundled
handwritten digits (1797 images of 8×8 pixels, shipped inside the scikit-learn package:
nothing is downloaded), upsampled to 32×32.

    PYTHONPATH=python python examples/train_nat_digits.py --steps 300
    python examples/train_nat_digits.py --compile          # torch.compile the model
    python examples/train_nat_digits.py --bf16             # bf16 autocast (on a GPU)

Prints loss and accuracy, saves a checkpoint, reloads it into a fresh model and checks that
the reloaded model scores the same. On CUDA, effattn's NA kernels take fp16/bf16 inputs, so
bf16 autocast is turned on there; on the CPU the kernels are fp32/fp64 and --bf16 is ignored.
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
from effattn.functional import _KERNEL_DEVICES


def load_digits_32(seed):
    """(x_train, y_train, x_test, y_test): [N, 3, 32, 32] float images, normalized, 80/20 split."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16.0   # [N, 1, 8, 8]
    images = F.interpolate(images, size=(32, 32), mode="bilinear", align_corners=False)
    images = ((images - 0.5) / 0.5).expand(-1, 3, -1, -1).contiguous()
    labels = torch.tensor(digits.target, dtype=torch.long)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    split = int(0.8 * len(labels))
    train, test = order[:split], order[split:]
    return images[train], labels[train], images[test], labels[test]


def evaluate(model, x, y, device, autocast, batch_size=256):
    model.eval()
    correct, loss = 0, 0.0
    with torch.no_grad(), autocast():
        for i in range(0, len(y), batch_size):
            xb, yb = x[i:i + batch_size].to(device), y[i:i + batch_size].to(device)
            logits = model(xb).float()
            loss += F.cross_entropy(logits, yb, reduction="sum").item()
            correct += (logits.argmax(-1) == yb).sum().item()
    model.train()
    return loss / len(y), correct / len(y)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300, help="training steps (default 300)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--compile", action="store_true", help="train through torch.compile(model)")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (GPU)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when effattn has CUDA kernels)")
    parser.add_argument("--checkpoint", default=os.path.join(tempfile.gettempdir(), "effattn_nat_digits.pt"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-every", type=int, default=50)
    args = parser.parse_args(argv)

    try:
        import sklearn  # noqa: F401
    except ImportError:
        print("This example needs scikit-learn (for its bundled digits data set): "
              "pip install scikit-learn")
        return 0

    torch.manual_seed(args.seed)
    device = args.device or ("cuda" if torch.cuda.is_available() and "cuda" in _KERNEL_DEVICES else "cpu")
    bf16 = args.bf16
    if device == "cuda" and not bf16:
        print("note: effattn's CUDA NA kernels take fp16/bf16 inputs; turning on --bf16")
        bf16 = True
    if device == "cpu" and bf16:
        print("note: --bf16 is for the GPU (effattn's CPU kernels are fp32/fp64); ignored on the CPU")
        bf16 = False

    def autocast():
        return torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16)

    x_train, y_train, x_test, y_test = load_digits_32(args.seed)
    print(f"digits: {len(y_train)} train / {len(y_test)} test images, 32x32, device {device}, "
          f"bf16 {bf16}, compile {args.compile}")

    model = effattn.models.create_model("nat_mini", num_classes=10).to(device)
    print(f"nat_mini: {sum(p.numel() for p in model.parameters()):,} parameters")
    step_model = torch.compile(model) if args.compile else model
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 20) * 0.5 * (1 + math.cos(math.pi * min(s, args.steps) / args.steps)))

    gen = torch.Generator().manual_seed(args.seed)
    start, seen, running_loss, running_correct = time.time(), 0, 0.0, 0
    for step in range(1, args.steps + 1):
        idx = torch.randint(0, len(y_train), (args.batch_size,), generator=gen)
        xb, yb = x_train[idx].to(device), y_train[idx].to(device)
        with autocast():
            logits = step_model(xb)
            loss = F.cross_entropy(logits.float(), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        schedule.step()
        running_loss += loss.item() * len(yb)
        running_correct += (logits.argmax(-1) == yb).sum().item()
        seen += len(yb)
        if step % args.log_every == 0 or step == args.steps:
            print(f"step {step:5d}  loss {running_loss / seen:.4f}  train acc {running_correct / seen:.3f}  "
                  f"({seen / (time.time() - start):.0f} img/s)")
            running_loss, running_correct, seen, start = 0.0, 0, 0, time.time()

    test_loss, test_acc = evaluate(model, x_test, y_test, device, autocast)
    print(f"test: loss {test_loss:.4f}  accuracy {test_acc:.3f}")

    torch.save({"model": model.state_dict(), "name": "nat_mini", "num_classes": 10, "steps": args.steps},
               args.checkpoint)
    checkpoint = torch.load(args.checkpoint, map_location=device, weights_only=True)
    reloaded = effattn.models.create_model(checkpoint["name"], num_classes=checkpoint["num_classes"]).to(device)
    reloaded.load_state_dict(checkpoint["model"])
    _, reloaded_acc = evaluate(reloaded, x_test, y_test, device, autocast)
    print(f"checkpoint saved to {args.checkpoint}; reloaded model test accuracy {reloaded_acc:.3f}")
    if abs(reloaded_acc - test_acc) > 1e-9:
        print("error: the reloaded model does not reproduce the trained model's accuracy")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
