"""CPU simulation of the synchronisation protocol of the Hopper pass-3 kernel v2
(csrc/kernels/estimate_int8_sm90.cu, v2::estimate_sm90_v2_kernel), under random interleavings.

Modelled, per CTA (one producer warpgroup, two consumer warpgroups, 4 warps each):
  * setmaxnreg: the CTA's register pool is 384 x kLaunchRegs; the producer's
    setmaxnreg.dec returns registers, a consumer's setmaxnreg.inc blocks until the pool holds
    what it asks for (the hang of the first wgmma kernel was a request the pool never met);
  * mbarriers full[kRing] / empty[kRing] with their expected counts and phase parities
    (try_wait.parity semantics: parity p is complete once the barrier's phase moved past it;
    before the first completion, parity 1 counts as complete), cp.async.mbarrier.arrive.noinc
    arriving only once the thread's earlier copies have landed;
  * the stage contents: copies land asynchronously; the producer may only write a stage that no
    consumer still reads (open record reads, wgmma in flight);
  * wgmma: warpgroup-collective (a unit starts once its 4 warps issued it; the 4 warps must issue
    the same sequence of units, accumulator sets and stages), one tensor pipe per SM executing
    units in start order, commit groups and wait_group<N> per warp, and the accumulator hazard:
    a check reads a set only after the wait that retires the unit writing it;
  * the early-exit flags (read racily, per chunk and before the exact check) and the bit map:
    with a random oracle for "this warp's rows keep this (tile, chunk)", the map must equal the
    OR of the oracle over each key block whatever the interleaving.
The kernel's loop is transcribed by hand below (consumer(), producer()); the constants are read
from the source file, and so is the kernel's protocol (PROTOCOL: the order of its wgmma issues,
waits, checks, barrier arrivals and head() calls, the parities of its barrier waits, its stage
index), which must equal the transcription's: an edit of the kernel's protocol fails here until
the transcription follows it. Exits non-zero on a deadlock, a violated assertion or a drift.
    python scripts/sim_estimate_sm90.py [--runs 3000] [--seed 0]"""
import argparse
import os
import random
import re
import sys

SRC = os.path.join(os.path.dirname(__file__), "..", "csrc", "kernels", "estimate_int8_sm90.cu")


# The protocol statements of v2's source, in order, that consumer() and producer() transcribe:
# the consumer loop and its tail, then the barrier waits (parities), the cp.async arrival and the
# stage indices. Keep in step with the transcription below.
PROTOCOL = [
    "cur = head(0)", "for (int it = 0; it < n; ++it)",
    "wgmma_wait<0>", "issue(accA, qf[0], cur.s)",
    "if (it > 0) {", "if (prev.act & 8u) check_in(3, accB, prev)", "mbar_arrive(bar_empty + 8 * prev.s)",
    "issue(accB, qf[1], cur.s)", "wgmma_wait<1>", "fence_regs(accA)", "if (cur.act & 1u) check_in(0, accA, cur)",
    "issue(accA, qf[2], cur.s)", "wgmma_wait<1>", "fence_regs(accB)", "if (cur.act & 2u) check_in(1, accB, cur)",
    "issue(accB, qf[3], cur.s)", "wgmma_wait<1>", "fence_regs(accA)", "if (cur.act & 4u) check_in(2, accA, cur)",
    "if (it + 1 < n) cur = head(it + 1)", "wgmma_wait<0>", "fence_regs(accB)",
    "if (prev.act & 8u) check_in(3, accB, prev)", "mbar_arrive(bar_empty + 8 * prev.s)",
    "if (it >= kRing) sm90::mbar_wait(bar_empty + 8 * s, ((it / kRing) + 1) & 1);",
    "mbar_wait(bar_full + 8 * h.s, (it / kRing) & 1);",
    "mbar_arrive_cp_async(bar_full + 8 * s);",
    "const int s = it % kRing;", "h.s = it & (kRing - 1);",
]


def protocol_of(text):
    """PROTOCOL's statements as they appear in the v2 kernel of `text` (estimate_int8_sm90.cu)."""
    v2 = text[text.index("namespace v2 {"):text.index("}  // namespace v2")]
    loop = v2[v2.index("Chunk cur = head(0), prev;"):v2.index("#else")]
    pat = (r"for \(int it = 0; it < n; \+\+it\)|wgmma_wait<\d+>|(?:if \([^;{]*\) )?issue\(acc\w+, qf\[\d+\], [\w.]+\)|"
           r"if \(it > 0\) \{|if \((?:cur|prev)\.act & \w+\) check_in\([^;]*\)|check_in\([^;]*\)|"
           r"fence_regs\(acc\w+\)|mbar_arrive\(bar_empty[^;]*\)|(?:if \(it \+ 1 < n\) )?cur = head\([^;]*\)")
    out = re.findall(pat, loop)
    out += re.findall(r"(?:if \(it >= kRing\) sm90::)?mbar_wait\(bar_empty[^;]*;", v2)
    out += re.findall(r"mbar_wait\(bar_full[^;]*;", v2)
    out += re.findall(r"mbar_arrive_cp_async\([^;]*;", v2)
    out += re.findall(r"(?:const int s|h\.s) = it[^;]*;", v2)
    return out


def check_protocol(text):
    got = protocol_of(text)
    if got != PROTOCOL:
        diff = next((i for i, (a, b) in enumerate(zip(got, PROTOCOL)) if a != b), min(len(got), len(PROTOCOL)))
        raise Fail(f"the v2 kernel's protocol differs from the simulation's transcription at statement {diff}: "
                   f"source {got[diff:diff + 2]}, transcription {PROTOCOL[diff:diff + 2]} (update consumer() / "
                   f"producer() and PROTOCOL together)")


def constants():
    text = open(SRC).read()
    check_protocol(text)
    get = lambda name: int(re.search(rf"constexpr int {name} = (\d+);", text).group(1))  # noqa: E731
    v2 = text[text.index("namespace v2 {"):]
    full = int(re.search(r"mbar_init\(bar_full \+ 8 \* s, (\d+)\)", v2).group(1))
    empty = int(re.search(r"mbar_init\(bar_empty \+ 8 \* s, (\d+)\)", v2).group(1))
    return dict(ring=get("kRing"), launch=get("kLaunchRegs"), prod=get("kProducerRegs"),
                cons=get("kConsumerRegs"), wgs=get("kWgs"), full=full, empty=empty)


class Fail(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Fail(msg)


class MBar:
    def __init__(self, count):
        self.count, self.pending, self.phase = count, count, 0  # phase: completed phases

    def arrive(self, n=1):
        check(self.pending >= n, "mbarrier: more arrivals than expected in a phase")
        self.pending -= n
        if self.pending == 0:
            self.phase += 1
            self.pending = self.count

    def done(self, parity):  # try_wait.parity
        # The phase with parity `parity` counts as complete when the current (incomplete) phase
        # has the other parity.
        return (self.phase & 1) != parity


class Sim:
    def __init__(self, cfg, rng, n_iter, cpb, acts, oracle, mutate=None):
        self.c, self.rng, self.n, self.cpb, self.mutate = cfg, rng, n_iter, cpb, mutate
        R = cfg["ring"]
        self.full = [MBar(cfg["full"]) for _ in range(R)]
        self.empty = [MBar(cfg["empty"]) for _ in range(R)]
        self.pool = 0  # registers free in the CTA pool (all allocated at launch)
        self.stage = [None] * R  # chunk position whose copies were issued into the stage
        self.landed = [set() for _ in range(R)]  # producer warps whose copies of it landed
        self.readers = [set() for _ in range(R)]  # consumer warps with open record reads
        self.flags = {}  # (wg, t) -> last kept key block
        self.bits = set()  # (wg, t, kb)
        self.acts, self.oracle = acts, oracle
        # wgmma: per warpgroup the units issued by each warp, unit -> state
        self.issued = {wg: [[] for _ in range(4)] for wg in range(cfg["wgs"])}
        self.started, self.completed = set(), set()  # (wg, index)
        self.tensor_queue = []
        self.events = []  # async agents
        self.agents = []

    # ---- async pieces -------------------------------------------------------------------
    def copy_agent(self, w, s, it):
        for _ in range(self.rng.randrange(1, 6)):
            yield None
        check(self.stage[s] == it, "a stage was rewritten while its copies were in flight")
        self.landed[s].add(w)
        self.full[s].arrive(32)  # the noinc arrivals of the warp's 32 threads, after landing

    def tensor_agent(self):
        while True:
            yield lambda: bool(self.tensor_queue) or self.finished_issuing()
            if not self.tensor_queue:
                return
            key, (s, it) = self.tensor_queue.pop(0)
            for _ in range(self.rng.randrange(1, 5)):
                check(self.stage[s] == it and len(self.landed[s]) == 4,
                      "wgmma read a stage that does not hold its chunk")
                yield None
            self.completed.add(key)

    def finished_issuing(self):
        return all(a["done"] for a in self.warps if a["role"] == "consumer")

    # ---- programs -----------------------------------------------------------------------
    def producer(self, w):
        c, R = self.c, self.c["ring"]
        self.pool += 32 * (c["launch"] - c["prod"])  # setmaxnreg.dec
        yield None
        for it in range(self.n):
            s = it % R
            if it >= R:
                yield (lambda s=s, p=((it // R) + 1) & 1: self.empty[s].done(p))
            if self.stage[s] != it:  # first producer warp to write chunk it into the stage
                check(not self.readers[s], "producer overwrote a stage with open record reads")
                check(all(self.tensor_key_stage(k) != s for k in self.in_flight()),
                      "producer overwrote a stage a wgmma still reads")
                self.stage[s] = it
                self.landed[s] = set()
            self.agents.append(self.copy_agent(w, s, it))
            yield None

    def tensor_key_stage(self, key):
        wg, i = key
        return next(x[i][2] for x in self.issued[wg] if len(x) > i)

    def in_flight(self):
        out = []
        for wg, per_warp in self.issued.items():
            for i in range(max(len(x) for x in per_warp)):
                if (wg, i) not in self.completed:
                    out.append((wg, i))
        return out

    def consumer(self, wg, wv, me):
        c, R, n = self.c, self.c["ring"], self.n
        need = 32 * (c["cons"] - c["launch"])
        yield lambda: self.pool >= need  # setmaxnreg.inc blocks until the pool has them
        self.pool -= need
        mine = self.issued[wg][wv]
        acc_writer = {}  # set -> index of the unit that last wrote it
        retired = [0]  # units of this warp known complete (by wait_group)

        def issue(acc, t, s, it):
            idx = len(mine)
            unit = (it, t, s, acc)
            mine.append((it, t, s, acc))
            check(self.stage[s] == it, "issue: the stage does not hold the chunk")
            acc_writer[acc] = idx
            # collective: starts once the 4 warps issued it, identically
            if all(len(self.issued[wg][v]) > idx for v in range(4)):
                units = {tuple(self.issued[wg][v][idx]) for v in range(4)}
                check(len(units) == 1, f"warps of warpgroup {wg} issued different units: {units}")
                self.tensor_queue.append(((wg, idx), (s, it)))
                self.started.add((wg, idx))

        def wait(nmax):
            def ok():
                pend = [i for i in range(len(mine)) if (wg, i) not in self.completed]
                return len(pend) <= nmax
            return ok

        def after_wait(nmax):
            pend = [i for i in range(len(mine)) if (wg, i) not in self.completed]
            check(len(pend) <= nmax, "wait_group returned early")
            # everything but the last nmax committed groups is retired
            retired[0] = max(retired[0], len(mine) - nmax)

        def head(it):
            s = it % R
            yield (lambda: self.full[s].done((it // R) & 1))
            check(self.stage[s] == it and len(self.landed[s]) == 4, "full wait passed before the chunk landed")
            self.readers[s].add(me)
            chunk = it  # chunk list positions (the kernel's chunk_at is monotone)
            kb = chunk // self.cpb
            act = 0
            for t in range(4):
                if self.acts[(wg, t)](chunk) and self.flags.get((wg, t), -1) != kb:
                    act |= 1 << t
            yield None
            return dict(s=s, it=it, kb=kb, act=act)

        def chk(t, acc, h):
            idx = acc_writer[acc]
            check(idx < retired[0], f"check read accumulator set {acc} of an unretired unit")
            check(mine[idx][0] == h["it"] and mine[idx][1] == t, "check read the wrong unit's accumulators")
            check(me in self.readers[h["s"]] and self.stage[h["s"]] == h["it"], "check read a released stage")
            if not self.oracle[(wg, t, h["it"], wv)]:
                return
            if self.flags.get((wg, t), -1) == h["kb"]:  # cold path re-read
                return
            self.bits.add((wg, t, h["kb"]))
            self.flags[(wg, t)] = h["kb"]

        def release(s):
            self.readers[s].discard(me)
            self.empty[s].arrive(32)

        cur = yield from head(0)
        prev = None
        drop_waits = self.mutate == "nowait"
        for it in range(n):
            if not drop_waits:
                yield wait(0)
                after_wait(0)
            issue("A", 0, cur["s"], it)
            yield None
            if it > 0:
                if self.mutate == "early_release":
                    release(prev["s"])
                if prev["act"] & 8:
                    chk(3, "B", prev)
                if self.mutate != "early_release":
                    release(prev["s"])
                yield None
            for t, acc, other in ((1, "B", "A"), (2, "A", "B"), (3, "B", "A")):
                issue(acc, t, cur["s"], it)
                yield wait(1)
                after_wait(1)
                if cur["act"] & (1 << (t - 1)):
                    chk(t - 1, other, cur)
                yield None
            prev = cur
            if it + 1 < n:
                cur = yield from head(it + 1)
            if not drop_waits:
                yield wait(0)
                after_wait(0)
        if drop_waits:
            yield wait(0)
            after_wait(0)
        if prev["act"] & 8:
            chk(3, "B", prev)
        release(prev["s"])

    def run(self):
        self.warps = []
        for w in range(4):
            self.warps.append(dict(role="producer", gen=self.producer(w), wait=None, done=False))
        for wg in range(self.c["wgs"]):
            for wv in range(4):
                self.warps.append(dict(role="consumer", gen=self.consumer(wg, wv, (wg, wv)), wait=None, done=False))
        check(4 * 32 * self.c["launch"] + 8 * 32 * self.c["launch"] == 384 * self.c["launch"], "threads")
        tensor = dict(role="tensor", gen=self.tensor_agent(), wait=None, done=False)
        steps = 0
        while True:
            steps += 1
            check(steps < 2_000_000, "runaway simulation")
            runnable = [a for a in self.warps + [tensor] if not a["done"] and (a["wait"] is None or a["wait"]())]
            async_idx = list(range(len(self.agents)))
            if not runnable and not async_idx:
                if all(a["done"] for a in self.warps):
                    break
                states = {i: a["role"] for i, a in enumerate(self.warps) if not a["done"]}
                raise Fail(f"deadlock: blocked {states}, pool {self.pool}, "
                           f"full phases {[b.phase for b in self.full]}, empty phases {[b.phase for b in self.empty]}")
            pick = self.rng.randrange(len(runnable) + len(async_idx))
            if pick >= len(runnable):
                i = async_idx[pick - len(runnable)]
                try:
                    next(self.agents[i])
                except StopIteration:
                    self.agents.pop(i)
                continue
            a = runnable[pick]
            try:
                a["wait"] = next(a["gen"])
            except StopIteration:
                a["done"] = True
                a["wait"] = None
            if all(w["done"] for w in self.warps) and tensor["done"] and not self.agents:
                break
        # every unit ran, every warp issued the same number, barriers balanced
        for wg in range(self.c["wgs"]):
            lens = {len(x) for x in self.issued[wg]}
            check(len(lens) == 1, "warps issued different numbers of units")
            check(all((wg, i) in self.completed for i in range(lens.pop())), "a unit never completed")
        check(self.pool >= 0, "register pool overdrawn")
        # the map: OR of the oracle over each (tile, key block), estimated chunks only
        want = set()
        for (wg, t, it, wv), hit in self.oracle.items():
            if hit and self.acts[(wg, t)](it):
                want.add((wg, t, it // self.cpb))
        check(self.bits == want, f"map differs: missing {sorted(want - self.bits)[:5]}, extra {sorted(self.bits - want)[:5]}")


def one(cfg, rng, mutate=None):
    n = rng.choice([1, 2, 3, cfg["ring"] - 1, cfg["ring"], cfg["ring"] + 1, rng.randrange(1, 40)])
    cpb = rng.choice([1, 2])
    acts = {}
    for wg in range(cfg["wgs"]):
        for t in range(4):
            lo = rng.randrange(0, n + 1)
            hi = rng.randrange(lo, n + 2)
            tail = rng.choice([None, rng.randrange(0, n + 2)])
            acts[(wg, t)] = (lambda c, lo=lo, hi=hi, tail=tail: lo <= c < hi or (tail is not None and c >= tail))
    dens = rng.choice([0.0, 0.05, 0.3, 0.9])
    oracle = {(wg, t, it, wv): rng.random() < dens
              for wg in range(cfg["wgs"]) for t in range(4) for it in range(n) for wv in range(4)}
    Sim(cfg, rng, n, cpb, acts, oracle, mutate).run()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mutate", choices=["regs", "nowait", "early_release"],
                    help="break the protocol on purpose (the simulation must fail): regs = the 48 / 232 "
                         "split of the first hang, nowait = no wait<0> around the back edge, early_release "
                         "= release a stage before its last check")
    args = ap.parse_args()
    try:
        cfg = constants()
    except Fail as e:
        print(f"FAIL: {e}")
        return 1
    if args.mutate == "regs":
        cfg.update(prod=48, cons=232)
    print("constants:", cfg)
    need = 2 * 128 * (cfg["cons"] - cfg["launch"])
    freed = 128 * (cfg["launch"] - cfg["prod"])
    print(f"setmaxnreg: producer frees {freed}, consumers ask {need} of the CTA's {384 * cfg['launch']}")
    rng = random.Random(args.seed)
    for r in range(args.runs):
        try:
            one(cfg, rng, args.mutate)
        except Fail as e:
            print(f"run {r}: FAIL: {e}")
            return 1
    print(f"{args.runs} random runs: no deadlock, no hazard, maps equal the oracle")
    return 0


if __name__ == "__main__":
    sys.exit(main())
