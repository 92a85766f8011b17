"""PNG plots of a benchmark run (matplotlib, Agg backend). Returns the files written."""
import os


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _ms(rows, impl):
    return {r["problem"]: r for r in rows if r["impl"] == impl and r.get("fwd_ms")}


def plot_na_speedup(rows, out_dir, title_suffix):
    """effattn's forward speed-up over dense attention against the window size, per rank."""
    rows = [r for r in rows if r["suite"] == "na"]
    ours = _ms(rows, "effattn")
    dense_name = next((name for name in ("sdpa-cudnn dense", "sdpa dense")
                       if any(r["impl"] == name and r.get("fwd_ms") for r in rows)), None)
    if not ours or dense_name is None:
        return None
    dense = _ms(rows, dense_name)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    # One point per problem (problems differ in grid, batch and head dim, so no lines).
    for rank in sorted({r["rank"] for r in ours.values()}):
        points = [(r["window"], dense[p]["fwd_ms"] / r["fwd_ms"], p)
                  for p, r in ours.items() if r["rank"] == rank and p in dense]
        if points:
            ax.scatter([x for x, _, _ in points], [y for _, y, _ in points], label=f"{rank}D", zorder=3)
            for x, y, name in points:
                ax.annotate(name.split(" B")[0], (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.axhline(1.0, color="gray", lw=0.8, ls="--")
    ax.set_xscale("log")
    ax.set_xlabel("window size (keys per query)")
    ax.set_ylabel(f"forward speed-up over {dense_name}")
    ax.set_title(f"effattn neighborhood attention {title_suffix}")
    ax.legend()
    path = os.path.join(out_dir, "na_speedup.png")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_lightning_time(rows, out_dir, title_suffix):
    """Forward time against sequence length for every implementation."""
    rows = [r for r in rows if r["suite"] == "lightning" and r.get("fwd_ms") and "tokens" in r]
    if not rows:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for impl in dict.fromkeys(r["impl"] for r in rows):
        points = sorted((r["tokens"], r["fwd_ms"]) for r in rows if r["impl"] == impl)
        ax.plot(*zip(*points), marker="o", label=impl)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("sequence length N")
    ax.set_ylabel("forward time (ms)")
    ax.set_title(f"lightning attention {title_suffix}")
    ax.legend()
    path = os.path.join(out_dir, "lightning_time.png")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_estimator_accuracy(accuracy, out_dir):
    """Attention-mass recall and output error against density, per estimator."""
    if not accuracy:
        return None
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
    for name in dict.fromkeys(r["estimator"] for r in accuracy):
        points = sorted((r["density"], r["mass_recall"], r["rel_l1_error"]) for r in accuracy if r["estimator"] == name)
        left.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=name)
        right.plot([p[0] for p in points], [p[2] for p in points], marker="o", label=name)
    left.set_xlabel("block density")
    left.set_ylabel("attention-mass recall")
    right.set_xlabel("block density")
    right.set_ylabel("output relative L1 error")
    right.set_yscale("log")
    left.legend()
    fig.suptitle("block-map estimators on LLM-like synthetic attention")
    path = os.path.join(out_dir, "estimator_accuracy.png")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_plots(rows, out_dir, meta, accuracy=None):
    try:
        _pyplot()
    except ImportError:
        print("matplotlib is not installed: no plots (pip install matplotlib)")
        return []
    suffix = f"({meta['device']}, {meta['dtype']})"
    paths = [plot_na_speedup(rows, out_dir, suffix), plot_lightning_time(rows, out_dir, suffix),
             plot_estimator_accuracy(accuracy, out_dir)]
    return [p for p in paths if p]
