"""The fault suite's checker: reads a history that walship-faultload recorded and the
contents every node holds once the faults have healed, and reports every anomaly it finds
(docs/fault-testing.md).

Each key has one writer, which writes the counter values 1, 2, 3... to it in order, so a value
names the write it came from. What is checked:

- lost: an acknowledged write whose key ends below its value. Every durability the suite
  uses promises survival of the faults it injects (processes killed, paused, cut off; no
  machine loses power), so every acknowledged write counts; `promised` says so per write.
  With automatic failover (`failover` among the faults) an asynchronous write does not: a
  leader killed before it shipped one is replaced by a follower that never had it
  (docs/failover.md), and a read (by min-seq, or committed) that misses it is not stale
  either.
- phantom: a key ends at, or a read returns, the value of a write that was refused (nothing
  was written), or one that was never sent.
- stale read: a read that asked to see the thread's acknowledged writes (`min` = the sequence
  number of the last one) or asked for a committed read, and returned an older value than a
  write acknowledged before the read began; or a committed read of a value later lost.

A write of unknown outcome (`info`: its client gave up waiting) may take effect at any time
after it began, even after later writes of its thread were acknowledged: its request may
still be on its way. Its value is then not stale, and a key that ends at it has not lost the
acknowledged writes it overwrote. Such late writes are counted (`late`, `overwritten`), not
reported as anomalies; the run prints them.
- split brain: two leaders accepting writes in one window. A leadership term is a (node,
  epoch) pair; it accepts writes over one stretch of time. When a write acknowledged in term
  B starts after one write of term A ended and ends before another write of term A started,
  both terms accepted writes at once. One epoch acknowledged by two nodes counts too.
- divergent: nodes whose full contents differ.
- unrecovered: nodes that did not come back (the harness says which).

Usage: python3 checker.py HISTORY FINAL.json   (FINAL: {"nodes": {id: {key: value}},
"unrecovered": [ids]}); exit 1 when anything is found.
"""
import bisect
import collections
import json
import sys


def load_history(path):
    ops = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                ops.append(json.loads(line))
            except json.JSONDecodeError as e:
                # The client was killed mid-line: only the last line may be cut.
                raise ValueError(f"{path}:{n}: not a JSON history line ({e}): {line[:80]}")
    return ops


def promised(dur, faults=()):
    """Whether an acknowledged write with durability `dur` must survive `faults`. Killing a
    process loses nothing its kernel holds, so all of them do, at every level, unless a
    machine lost power (which the suite does not inject)."""
    if "power" in faults:
        return dur.startswith("sync") or dur.endswith(":flushed") or dur.endswith(":applied")
    if "failover" in faults:
        return dur != "async"
    return True


class Report:
    def __init__(self):
        self.lost = []          # (op, final value)
        self.phantom = []       # (what, detail)
        self.stale = []         # (read op, the write it should have seen, why)
        self.split_brain = []   # (term a, term b, the write inside a's span)
        self.divergent = []     # [node ids that differ from the first]
        self.unrecovered = []
        self.acked = collections.Counter()       # by durability
        self.lost_by = collections.Counter()     # by durability
        self.late = []          # (read op, write of unknown outcome it saw, acked write after)
        self.overwritten = []   # (acked op, the write of unknown outcome the key ends at)
        self.longest_no_ack_s = 0.0

    def anomalies(self):
        return (len(self.lost) + len(self.phantom) + len(self.stale) + len(self.split_brain)
                + len(self.divergent) + len(self.unrecovered))

    def lines(self):
        out = []
        for op, final in self.lost[:20]:
            out.append(f"LOST: {op['k']}={op['v']} acknowledged by {op['node']} "
                       f"(epoch {op.get('ep')}, seq {op.get('seq')}, {op['dur']}) but the "
                       f"key ends at {final}")
        for what, detail in self.phantom[:20]:
            out.append(f"PHANTOM: {what}: {detail}")
        for op, w, why in self.stale[:20]:
            out.append(f"STALE READ: {op['k']} read {op['v']} at {op['node']} "
                       f"(min {op.get('min')}, committed {op.get('c')}) after {w['k']}={w['v']} "
                       f"was acknowledged: {why}")
        for a, b, w in self.split_brain[:20]:
            out.append(f"SPLIT BRAIN: {b[0]} (epoch {b[1]}) acknowledged {w['k']}={w['v']} "
                       f"between two writes {a[0]} (epoch {a[1]}) acknowledged")
        for group in self.divergent:
            out.append(f"DIVERGENT: {', '.join(group)}")
        for n in self.unrecovered:
            out.append(f"UNRECOVERED: {n}")
        return out

    def notes(self):
        """What is allowed but worth seeing: writes of unknown outcome that landed late."""
        out = [f"writes of unknown outcome seen after a later acknowledged write: "
               f"{len(self.late)} reads; keys ending at one: {len(self.overwritten)}"]
        for rd, w, a in self.late[:3]:
            out.append(f"  late: {rd['k']}={w['v']} (sent at {w['s']}, its client gave up at "
                       f"{w['e']}: {w.get('err', '')}) read at {rd['node']} at {rd['s']}, after "
                       f"{a['k']}={a['v']} was acknowledged at {a['e']}")
        for a, end in self.overwritten[:3]:
            out.append(f"  overwritten: {a['k']}={a['v']} (acknowledged at {a['e']}) ends at "
                       f"{end}, a write of unknown outcome")
        return out


def check(ops, final, faults=()):
    """`ops`: history records; `final`: {"nodes": {id: {key: value}}, "unrecovered": [...]}"""
    r = Report()
    nodes = final.get("nodes", {})
    r.unrecovered = list(final.get("unrecovered", []))
    # Divergence: group nodes by identical contents.
    groups = collections.defaultdict(list)
    for nid, kv in sorted(nodes.items()):
        groups[json.dumps(kv, sort_keys=True)].append(nid)
    if len(groups) > 1:
        r.divergent = sorted(groups.values())
    state = next(iter(nodes.values()), {}) if nodes else {}

    writes = [o for o in ops if o["f"] == "write"]
    reads = [o for o in ops if o["f"] == "read" and o["r"] == "ok"]
    by_key = collections.defaultdict(dict)   # key -> value -> write
    for w in writes:
        by_key[w["k"]][w["v"]] = w

    def final_value(k):
        v = state.get(k)
        return int(v) if v is not None else 0

    def landed_late(k, v, after):
        """Whether value `v` of key `k` may have been written after the write of value `after`:
        its write's outcome is unknown, and it began before (one writer per key, so a lower
        value began earlier)."""
        w = by_key.get(k, {}).get(v)
        return w is not None and w["r"] == "info" and v < after

    for w in writes:
        if w["r"] != "ok":
            continue
        r.acked[w["dur"]] += 1
        end = final_value(w["k"])
        if end < w["v"] and promised(w["dur"], faults):
            if landed_late(w["k"], end, w["v"]):
                r.overwritten.append((w, end))
            else:
                r.lost.append((w, end))
                r.lost_by[w["dur"]] += 1
    for k, v in state.items():
        w = by_key.get(k, {}).get(int(v))
        if w is None:
            r.phantom.append(("final value never written", f"{k}={v}"))
        elif w["r"] == "fail":
            r.phantom.append(("final value from a refused write", f"{k}={v} ({w['err']})"))

    # Per key, its acknowledged writes by end time, and the highest value among the first i.
    acked_by_key = collections.defaultdict(list)
    for w in writes:
        if w["r"] == "ok":
            acked_by_key[w["k"]].append(w)
    ends, best = {}, {}
    for k, ws in acked_by_key.items():
        ws.sort(key=lambda w: w["e"])
        ends[k] = [w["e"] for w in ws]
        best[k], top = [], None
        for w in ws:
            if top is None or w["v"] > top["v"]:
                top = w
            best[k].append(top)
    for rd in reads:
        v = rd["v"]
        if v > 0:
            w = by_key.get(rd["k"], {}).get(v)
            if w is None:
                r.phantom.append(("read a value never written", f"{rd['k']}={v} at {rd['node']}"))
            elif w["r"] == "fail":
                r.phantom.append(("read a refused write", f"{rd['k']}={v} at {rd['node']}"))
        if rd.get("c"):
            if v > final_value(rd["k"]) and not landed_late(rd["k"], final_value(rd["k"]), v):
                r.stale.append((rd, by_key[rd["k"]].get(v, {"k": rd["k"], "v": v}),
                                "a committed read returned a write that was lost"))
        # The newest write acknowledged before the read began (one writer per key, so the
        # reading thread's own when the read asked for its writes by min-seq).
        n = bisect.bisect_left(ends.get(rd["k"], []), rd["s"])
        if n == 0:
            continue
        w = best[rd["k"]][n - 1]
        if w["v"] <= v:
            continue
        if landed_late(rd["k"], v, w["v"]):
            r.late.append((rd, by_key[rd["k"]][v], w))
            continue
        if not promised(w["dur"], faults):
            continue  # it may have been lost (an async write under failover): nothing to see
        if rd.get("c"):
            r.stale.append((rd, w, "committed read"))
        elif rd.get("min", 0) >= w["seq"] and w["p"] == rd["p"]:
            r.stale.append((rd, w, f"asked for min-seq {rd['min']} >= {w['seq']}"))

    # Split brain.
    terms = collections.defaultdict(list)
    for w in writes:
        if w["r"] == "ok":
            terms[(w["node"], w["ep"])].append(w)
    by_epoch = collections.defaultdict(set)
    for node, ep in terms:
        by_epoch[ep].add(node)
    for ep, owners in by_epoch.items():
        if len(owners) > 1:
            r.split_brain.append(((sorted(owners)[0], ep), (sorted(owners)[1], ep),
                                  terms[(sorted(owners)[1], ep)][0]))
    # Each term's certain stretch runs from its first write's end to its last write's start;
    # another term's write inside it is a window with two leaders (one per pair of terms).
    acked = sorted((w for w in writes if w["r"] == "ok"), key=lambda w: w["s"])
    starts = [w["s"] for w in acked]
    for a, ws in terms.items():
        first_end, last_start = min(w["e"] for w in ws), max(w["s"] for w in ws)
        seen = set()
        for i in range(bisect.bisect_right(starts, first_end), len(acked)):
            w = acked[i]
            if w["s"] >= last_start:
                break
            b = (w["node"], w["ep"])
            if b != a and b not in seen and w["e"] < last_start:
                seen.add(b)
                r.split_brain.append((a, b, w))

    acked_ends = sorted(w["e"] for w in writes if w["r"] == "ok")
    if len(acked_ends) > 1:
        r.longest_no_ack_s = max(b - a for a, b in zip(acked_ends, acked_ends[1:])) / 1e6
    return r


def main(argv):
    if len(argv) != 3:
        print(__doc__.strip().splitlines()[-2], file=sys.stderr)
        return 2
    ops = load_history(argv[1])
    with open(argv[2]) as f:
        final = json.load(f)
    r = check(ops, final, final.get("faults", ()))
    for line in r.lines() + r.notes():
        print(line)
    print(f"acknowledged {sum(r.acked.values())}, lost {len(r.lost)}, anomalies {r.anomalies()}")
    return 1 if r.anomalies() else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
