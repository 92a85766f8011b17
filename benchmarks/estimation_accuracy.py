"""Accuracy of the quantized block-map estimator on LLM-like synthetic attention (sinks,
local decay, vertical columns, slash lines, planted needles), beside a mean-pooled block
estimator at equal density.

    python benchmarks/estimation_accuracy.py [--n 4096] [--heads 8] [--device cpu|cuda]
"""
import argparse

import torch

from effattn.bench.estimation import accuracy_table, format_accuracy
from effattn.bench.synthetic import llm_like_qkv


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=4096)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--kv-heads", type=int, default=4)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--needles", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--thresholds", default="0.1,0.03,0.01,0.003,0.001")
    args = parser.parse_args()
    q, k, v, needles = llm_like_qkv(1, args.n, args.heads, args.kv_heads, args.dim, args.needles,
                                    device=args.device)
    thresholds = [float(t) for t in args.thresholds.split(",")]
    rows = accuracy_table(q, k, v, needles, thresholds)
    print(f"N {args.n}, H {args.heads} (H_kv {args.kv_heads}), D {args.dim}, causal, 64x64 blocks, "
          f"sink 64, local 256, {args.needles} needles, device {args.device}")
    print(format_accuracy(rows))


if __name__ == "__main__":
    main()
