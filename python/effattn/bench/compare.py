"""`--compare FILE`: what got faster or slower than an earlier run's JSON."""
import json


def load_rows(path):
    with open(path) as fh:
        data = json.load(fh)
    return data["rows"] if isinstance(data, dict) else data


def compare(rows, old_rows, threshold_pct=None):
    """Returns (markdown lines, regressions): a regression is a time that grew by more than
    threshold_pct percent (every change is listed; None flags nothing)."""
    old = {(r["suite"], r["problem"], r["impl"]): r for r in old_rows}
    lines = ["| problem | implementation | pass | before ms | now ms | change |", "|---|---|---|---|---|---|"]
    regressions = []
    for r in rows:
        before = old.get((r["suite"], r["problem"], r["impl"]))
        if before is None:
            continue
        for key in ("fwd_ms", "bwd_ms"):
            a, b = before.get(key), r.get(key)
            if not a or not b:
                continue
            change = (b - a) / a * 100
            flag = ""
            if threshold_pct is not None and change > threshold_pct:
                flag = " REGRESSION"
                regressions.append((r["problem"], r["impl"], key, change))
            lines.append(f"| {r['problem']} | {r['impl']} | {key[:3]} | {a:.3f} | {b:.3f} | {change:+.1f}%{flag} |")
    return lines, regressions
