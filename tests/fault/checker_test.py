"""The checker's own honesty: fed a clean history it reports nothing; fed one with a planted
anomaly it reports exactly that anomaly. The histories are built the way walship-faultload
records them (times in microseconds)."""
import json
import os
import subprocess
import sys
import tempfile
import unittest

import checker


def write(p, k, v, node, s, e, r="ok", ep=1, seq=None, dur="sync:applied", err=""):
    op = {"p": p, "f": "write", "k": k, "v": v, "node": node, "s": s, "e": e, "r": r,
          "dur": dur}
    if r == "ok":
        op.update(ep=ep, seq=seq if seq is not None else v)
    else:
        op["err"] = err or "unavailable: timed out"
    return op


def read(p, k, v, node, s, e, min_seq=0, committed=False):
    return {"p": p, "f": "read", "k": k, "v": v, "node": node, "s": s, "e": e, "r": "ok",
            "min": min_seq, "c": committed}


def clean():
    """Two threads; a handover from n1 (epoch 1) to n2 (epoch 2) at t=500; reads that see
    what they must; one write whose fate is unknown and one refused."""
    ops = [
        write(0, "p0-k0", 1, "n1", 0, 100, seq=1),
        write(1, "p1-k0", 1, "n1", 50, 150, seq=2),
        write(0, "p0-k0", 2, "n1", 200, 300, seq=3),
        read(0, "p0-k0", 2, "n3", 310, 320, min_seq=3),
        write(1, "p1-k0", 2, "n1", 350, 600, r="info"),    # cut by the handover
        write(0, "p0-k0", 3, "n1", 400, 450, r="fail", err="notLeader: n2 leads"),
        write(0, "p0-k0", 4, "n2", 520, 600, ep=2, seq=5),
        write(1, "p1-k0", 3, "n2", 610, 700, ep=2, seq=6),
        read(1, "p1-k0", 3, "n2", 710, 720, committed=True),
        read(0, "p0-k0", 1, "n3", 150, 160, min_seq=1),    # an older value, as min-seq allows
    ]
    state = {"p0-k0": "4", "p1-k0": "3"}
    return ops, {"nodes": {"n1": dict(state), "n2": dict(state), "n3": dict(state)}}


class CheckerTest(unittest.TestCase):
    def test_a_clean_history_reports_nothing(self):
        ops, final = clean()
        r = checker.check(ops, final)
        self.assertEqual(r.lines(), [])
        self.assertEqual(r.anomalies(), 0)
        self.assertEqual(sum(r.acked.values()), 5)

    def test_an_acknowledged_write_missing_afterwards_is_lost(self):
        ops, final = clean()
        for n in final["nodes"].values():
            n["p1-k0"] = "1"   # the acknowledged 3 is gone (2 was unknown, 1 was acked)
        r = checker.check(ops, final)
        self.assertEqual(len(r.lost), 1, r.lines())
        self.assertEqual(r.lost[0][0]["v"], 3)
        self.assertEqual(r.lost_by["sync:applied"], 1)
        self.assertTrue(any(line.startswith("LOST: p1-k0=3") for line in r.lines()))
        # ...and the committed read of 3 read a write that was then lost.
        self.assertEqual(len(r.stale), 1, r.lines())

    def test_a_stale_read_under_min_seq_is_reported(self):
        ops, final = clean()
        ops.append(read(0, "p0-k0", 1, "n3", 460, 470, min_seq=3))  # 2 (seq 3) was acked
        r = checker.check(ops, final)
        self.assertEqual(len(r.stale), 1, r.lines())
        self.assertIn("min-seq 3", r.lines()[0])

    def test_a_stale_committed_read_is_reported(self):
        ops, final = clean()
        ops.append(read(1, "p1-k0", 1, "n2", 800, 810, committed=True))
        r = checker.check(ops, final)
        self.assertEqual(len(r.stale), 1, r.lines())

    def test_a_write_of_unknown_outcome_may_land_after_later_writes(self):
        ops, final = clean()
        # p1's unknown write of 2 (350-600) arrives after its acknowledged 3 (610-700): a read
        # that asked for 3 sees 2, and the key ends at 2. Neither is an anomaly; both count.
        ops.append(read(1, "p1-k0", 2, "n2", 800, 810, min_seq=6))
        for n in final["nodes"].values():
            n["p1-k0"] = "2"
        r = checker.check(ops, final)
        self.assertEqual(r.anomalies(), 0, r.lines())
        self.assertEqual([(rd["v"], w["v"], a["v"]) for rd, w, a in r.late], [(2, 2, 3)])
        self.assertEqual([(w["v"], end) for w, end in r.overwritten], [(3, 2)])
        # An acknowledged value is never excused so: a read of 1 after 3 is still stale.
        ops.append(read(1, "p1-k0", 1, "n2", 820, 830, min_seq=6))
        self.assertEqual(len(checker.check(ops, final).stale), 1)

    def test_with_failover_an_async_write_may_be_lost_but_no_other(self):
        ops, final = clean()
        # p0 writes 5 asynchronously on n2 (epoch 2), n2 dies before shipping it, n3 is
        # elected (epoch 3) and p0's next write, 6, lands there; a read by min-seq misses 5.
        ops += [write(0, "p0-k0", 5, "n2", 800, 810, ep=2, seq=7, dur="async"),
                read(0, "p0-k0", 4, "n3", 900, 910, min_seq=7),
                read(1, "p0-k0", 4, "n3", 912, 915, committed=True),
                write(0, "p0-k0", 6, "n3", 920, 930, ep=3, seq=7)]
        for n in final["nodes"].values():
            n["p0-k0"] = "4"  # before 6 lands everywhere: 5 is lost, and 6 too (below)
        failover = checker.check(ops, final, ["failover"])
        self.assertEqual([w["v"] for w, _ in failover.lost], [6], failover.lines())
        self.assertEqual(failover.stale, [], failover.lines())
        # Without failover the same history is a lost write and a stale read.
        plain = checker.check(ops, final)
        self.assertEqual([w["v"] for w, _ in plain.lost], [5, 6], plain.lines())
        self.assertEqual(len(plain.stale), 2, plain.lines())  # by min-seq, and committed

    def test_a_read_without_a_guarantee_may_be_old(self):
        ops, final = clean()
        ops.append(read(0, "p0-k0", 1, "n3", 800, 810, min_seq=0))
        self.assertEqual(checker.check(ops, final).anomalies(), 0)

    def test_two_leaders_accepting_writes_in_one_window(self):
        ops, final = clean()
        # n1, still in epoch 1, acknowledges a write after n2 began epoch 2 and before n2's
        # next write: n2's write at 610-700 lies between two of n1's.
        ops.append(write(1, "p1-k1", 1, "n1", 710, 750, seq=7))
        final = {"nodes": {n: dict(kv, **{"p1-k1": "1"}) for n, kv in final["nodes"].items()}}
        r = checker.check(ops, final)
        self.assertGreaterEqual(len(r.split_brain), 1, r.lines())
        self.assertTrue(all(line.startswith("SPLIT BRAIN") for line in r.lines()), r.lines())

    def test_one_epoch_on_two_nodes_is_split_brain(self):
        ops, final = clean()
        for op in ops:
            if op.get("ep") == 2:
                op["ep"] = 1
        r = checker.check(ops, final)
        self.assertGreaterEqual(len(r.split_brain), 1, r.lines())

    def test_divergent_replicas(self):
        ops, final = clean()
        final["nodes"]["n3"]["p0-k0"] = "2"
        r = checker.check(ops, final)
        self.assertEqual(r.divergent, [["n1", "n2"], ["n3"]])

    def test_a_refused_write_that_shows_up_is_a_phantom(self):
        ops, final = clean()
        ops.append(write(0, "p0-k0", 5, "n3", 800, 810, r="fail", err="notLeader: n2 leads"))
        for n in final["nodes"].values():
            n["p0-k0"] = "5"
        r = checker.check(ops, final)
        self.assertEqual(len(r.phantom), 1, r.lines())

    def test_unrecovered_nodes_are_reported(self):
        ops, final = clean()
        final["unrecovered"] = ["n3"]
        self.assertEqual(checker.check(ops, final).lines(), ["UNRECOVERED: n3"])

    def test_the_command_line_exits_one_on_a_finding(self):
        ops, final = clean()
        with tempfile.TemporaryDirectory() as d:
            h, f = os.path.join(d, "h.jsonl"), os.path.join(d, "final.json")
            with open(h, "w") as out:
                out.write("\n".join(json.dumps(o) for o in ops) + "\n")
            with open(f, "w") as out:
                json.dump(final, out)
            run = [sys.executable, os.path.join(os.path.dirname(__file__), "checker.py"), h, f]
            self.assertEqual(subprocess.run(run, capture_output=True).returncode, 0)
            final["nodes"]["n2"]["p0-k0"] = "1"
            with open(f, "w") as out:
                json.dump(final, out)
            self.assertEqual(subprocess.run(run, capture_output=True).returncode, 1)


if __name__ == "__main__":
    unittest.main()
