"""Reads despite replication lag, on real processes (docs/reads.md): a follower made to lag by
stopping its process now and then, reads at it with and without each guarantee. With the
guarantee, not one violation in 10,000 served reads; without it, the anomaly shows, so the lag
is real and the check can fail."""
import json
import os
import subprocess
import threading
import time
import unittest

from cluster import BIN, WALSHIP, Cluster, wait_until

READCHECK = os.path.join(BIN, "tests", "walship-readcheck")
EXIT_WRITE_LOST = 7


class Lag:
    """Stops node `nid` for stop_ms, lets it run for run_ms, over and over, until closed."""

    def __init__(self, cluster, nid, stop_ms, run_ms):
        self.c, self.nid = cluster, nid
        self.stop_s, self.run_s = stop_ms / 1000, run_ms / 1000
        self.done = threading.Event()
        self.stops = 0
        self.thread = threading.Thread(target=self.loop)

    def loop(self):
        while not self.done.is_set():
            self.c.pause(self.nid)
            self.stops += 1
            self.done.wait(self.stop_s)
            self.c.resume(self.nid)
            self.done.wait(self.run_s)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        self.thread.join(timeout=10)
        self.c.resume(self.nid)


class ReadsTest(unittest.TestCase):
    c = None

    @classmethod
    def setUpClass(cls):
        cls.c = Cluster(n=3)
        cls.c.start_all()
        cls.c.cli("put", "warm", "1")
        cls.c.wait_converged(timeout=60)

    @classmethod
    def tearDownClass(cls):
        if cls.c is not None:
            cls.c.close()

    def check(self, check, guard, reads=10000, until_violation=False, max_lag_ms=None,
              seconds=600):
        c = self.c
        args = [READCHECK, "--leader", c.addr["n1"], "--lagging", c.addr["n3"],
                "--fresh", c.addr["n2"], "--check", check, "--reads", str(reads),
                "--seconds", str(seconds)]
        if guard:
            args.append("--guard")
        if until_violation:
            args.append("--until-violation")
        if max_lag_ms is not None:
            args += ["--max-lag-ms", str(max_lag_ms)]
        r = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 60)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        return json.loads(r.stdout)

    def guarded_and_not(self, check, stop_ms, run_ms, **kw):
        with Lag(self.c, "n3", stop_ms, run_ms):
            without = self.check(check, guard=False, until_violation=True, **kw)
            self.assertGreater(without["violations"], 0,
                               f"no {check} anomaly without the guarantee: {without}")
            got = self.check(check, guard=True, **kw)
        self.assertEqual(got["violations"], 0, got)
        self.assertGreaterEqual(got["served"], 10000, got)
        return without, got

    def test_read_your_writes_with_the_write_token(self):
        self.guarded_and_not("ryw", stop_ms=20, run_ms=80)

    def test_monotonic_reads_with_a_session(self):
        self.guarded_and_not("monotonic", stop_ms=20, run_ms=80)

    def test_consistent_prefix(self):
        without, got = self.guarded_and_not("prefix", stop_ms=20, run_ms=80)
        # One snapshot never shows an answer without its question, guarded or not.
        self.assertEqual(without["scan_violations"] + got["scan_violations"], 0, (without, got))

    def test_bounded_staleness(self):
        # Stops longer than the bound: unguarded reads then show older states than it allows.
        self.guarded_and_not("staleness", stop_ms=150, run_ms=100, max_lag_ms=50)

    def test_a_position_the_node_does_not_reach_is_unavailable_with_the_leader_named(self):
        c = self.c
        epoch = c.status("n3")["epoch"]
        r = c.cli("--node", "n3", "get", "warm", "--after", f"{epoch}:1000000", "--wait-ms",
                  "200", check=False)
        self.assertEqual(r.returncode, 3, r.stdout + r.stderr)
        self.assertIn(f"the read needs {epoch}:1000000", r.stderr)
        self.assertIn(f"its leader is at {c.addr['n1']}", r.stderr)
        # Seq 1 under an epoch this node's history does not give it: not served here.
        r = c.cli("--node", "n3", "get", "warm", "--after", f"{epoch + 1}:1", check=False)
        self.assertEqual(r.returncode, 3, r.stdout + r.stderr)
        self.assertIn("in a history that parts from the read's", r.stderr)
        r = c.cli("--node", "n3", "get", "warm", "--after", "bad", check=False)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("is not EPOCH:SEQ", r.stderr)

    def test_a_session_file_that_is_not_one_is_refused(self):
        bad = os.path.join(self.c.dir, "not-a-session")
        with open(bad, "w") as f:
            f.write("hello\n")
        r = self.c.cli("--session", bad, "get", "warm", check=False)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("is not a walship session file", r.stderr)
        with open(bad) as f:
            self.assertEqual(f.read(), "hello\n")  # left as it was

    def test_a_lag_bound_waits_for_a_stopped_follower_to_hear_from_its_leader(self):
        c = self.c
        c.pause("n3")
        time.sleep(0.5)
        get = subprocess.Popen([WALSHIP, "--cluster", c.config, "--node", "n3", "get", "warm",
                                "--max-lag-ms", "300", "--wait-ms", "5000"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(0.2)
        c.resume("n3")
        out, err = get.communicate(timeout=30)
        self.assertEqual(get.returncode, 0, err)
        # A bound no follower can meet: answered unavailable with its lag.
        r = c.cli("--node", "n3", "get", "warm", "--max-lag-ms", "0", "--wait-ms", "100",
                  check=False)
        self.assertEqual(r.returncode, 3, r.stdout + r.stderr)
        self.assertIn("last knew itself caught up with its leader", r.stderr)


class CliSessionTest(unittest.TestCase):
    """The CLI's session across commands, on a cluster whose leader holds each write back from
    its follower for up to a second (the shipping pace at its maximum, heartbeats rare), so
    that a read at the follower right after a write usually lacks it."""

    def test_a_session_reads_its_writes_at_the_follower_where_plain_reads_miss_them(self):
        # Heartbeats (which carry pending writes) far apart, so that only the pace ships.
        c = Cluster(n=2, replication={"min_ship_interval_us": 1000000,
                                      "max_ship_hold_us": 1000000,
                                      "heartbeat_interval_ms": 5000,
                                      "heartbeat_timeout_ms": 20000})
        self.addCleanup(c.close)
        c.start_all()
        stale = 0
        for i in range(20):
            c.cli("put", "plain", str(i))
            r = c.cli("--node", "n2", "get", "plain", check=False)
            stale += r.returncode != 0 or r.stdout != f"{i}\n"
        self.assertGreater(stale, 0, "every plain read at n2 saw the write just made")
        session = os.path.join(c.dir, "session")
        for i in range(20):
            out = c.cli("--session", session, "put", "rw", str(i)).stdout
            self.assertRegex(out, r"OK seq \d+ epoch \d+")
            r = c.cli("--node", "n2", "--session", session, "get", "rw", check=False)
            self.assertEqual((r.returncode, r.stdout), (0, f"{i}\n"), r.stderr)
        with open(session) as f:
            self.assertRegex(f.read(), r"^walship-position 1 \d+:\d+\n$")
        # A read at n2 is then no older than what the session read there (monotonic reads).
        r = c.cli("--node", "n2", "--session", session, "scan", "--prefix", "rw")
        self.assertEqual(r.stdout, "rw\t19\n")


if __name__ == "__main__":
    unittest.main()
