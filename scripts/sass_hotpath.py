"""Counts the SASS instructions of one consumer-loop iteration (one 64-key chunk) of an
estimate_sm90 kernel along its hot path: every tile active, every pre-filter vote negative,
barriers already complete (conditional branches fall through, except right after a VOTE.ANY,
where the "no lane passed" branch is taken).
    nvcc ... -c csrc/kernels/estimate_int8_sm90.cu -o est.o && cuobjdump -sass est.o > est.sass
    python scripts/sass_hotpath.py est.sass ILi1E [-v]       # v2 (<1>; ILi2E: <2>): finds the loop
    python scripts/sass_hotpath.py est.sass estimate_sm90_kernelENS head=0x... back=0x... fall=0x...
head / back: the loop's first address and its backward branch; fall: branches after a VOTE.ANY
to fall through (v1's chunk-level vote). -v prints the path."""
import re, sys, collections

def load(path, fn):
    text = open(path).read()
    funcs = re.split(r"\n\s*Function : ", text)
    body = next(f for f in funcs if fn in f.split("\n")[0])
    ins = []
    for line in body.split("\n"):
        m = re.match(r"\s*/\*([0-9a-f]{4,})\*/\s+(.*?);", line)
        if m:
            ins.append((int(m.group(1), 16), m.group(2).strip()))
    return ins

def main():
    path = sys.argv[1]
    fn = sys.argv[2] if len(sys.argv) > 2 else "v2"
    opts = dict(x.split("=", 1) for x in sys.argv[3:] if "=" in x)
    fall = {int(x, 16) for x in opts.get("fall", "").split(",") if x}
    ins = load(path, fn)
    at = {a: i for i, (a, _) in enumerate(ins)}
    # loop head: target of the backward branch right after the last 'DEPBAR.LE gsb0, 0x0' in the loop
    head = None
    for i, (a, t) in enumerate(ins):
        m = re.search(r"BRA (0x[0-9a-f]+)", t)
        if m and int(m.group(1), 16) < a and any("DEPBAR.LE gsb0, 0x0" in ins[j][1] for j in range(max(0, i - 12), i)):
            head = int(m.group(1), 16)
            back = a
    if "head" in opts:
        head, back = int(opts["head"], 16), int(opts["back"], 16)
    assert head is not None
    i = at[head]
    n = 0
    cats = collections.Counter()
    trace = []
    while True:
        a, t = ins[i]
        n += 1
        op = re.sub(r"^@!?U?P\w+\s+", "", t).split()[0]
        cats[op.split(".")[0]] += 1
        trace.append((a, t))
        if a == back:
            break
        m = re.search(r"BRA (?:!?U?P\w+, )?(0x[0-9a-f]+)", t)
        if m:
            tgt = int(m.group(1), 16)
            cond = t.startswith("@")
            if not cond:
                i = at[tgt]
                continue
            prev = ins[i - 1][1]
            if "VOTE.ANY" in prev and a not in fall:
                i = at[tgt]  # every lane's pre-filter rejected
                continue
        i += 1
    print(f"loop head {head:#x}, back edge {back:#x}: {n} instructions on the hot path")
    for k, v in cats.most_common():
        print(f"  {k:12s} {v}")
    if "-v" in sys.argv:
        for a, t in trace:
            print(f"{a:#8x}  {t}")

main()
