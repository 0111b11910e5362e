"""Three real walshipd processes on loopback: replication, crashes, restarts, purged WAL,
refusals and a stopped follower."""
import os
import signal
import time
import unittest

from cluster import Cluster, wait_until


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class ReplicationTest(unittest.TestCase):
    def setUp(self):
        self.c = Cluster(n=3)
        self.c.start_all()

    def tearDown(self):
        self.c.close()

    def assert_identical(self):
        c = self.c
        c.wait_converged()
        leader = c.scan_all("n1")
        self.assertGreater(len(leader), 0)
        for nid in c.procs:
            self.assertEqual(c.scan_all(nid), leader, f"{nid} differs from the leader")

    def test_followers_hold_identical_contents_after_mixed_writes(self):
        c = self.c
        r = c.load("n1", 3000, seed=1)
        self.assertIn("acked 3000", r.stdout)
        c.cli("write", input="delrange key00000100 key00000900\nput z 1\n")
        self.assert_identical()
        st = c.status("n1")
        self.assertEqual({f["id"] for f in st["followers"]}, {"n2", "n3"})
        for f in st["followers"]:
            self.assertEqual(f["state"], "connected")
            self.assertEqual(f["applied_seq"], st["latest_seq"])
            self.assertEqual(f["lag_seq"], 0)
            self.assertGreater(f["bytes_shipped"], 0)
        fst = c.status("n2")
        self.assertEqual(fst["replication_state"], "streaming")
        self.assertEqual(fst["database_id"], st["database_id"])
        # Writes to a follower are refused with the leader's address, and the CLI follows it.
        r = c.cli("--node", "n2", "put", "k", "v")
        self.assertIn("retrying at " + c.addr["n1"], r.stderr)

    def test_follower_killed_during_load_catches_up(self):
        c = self.c
        load = c.load_async("n1", 4000, seed=2)
        time.sleep(0.3)
        c.stop("n2", signal.SIGKILL)
        time.sleep(0.5)
        c.start("n2")
        out, err = load.communicate(timeout=300)
        self.assertEqual(load.returncode, 0, err)
        self.assert_identical()

    def test_leader_restart_followers_reconnect(self):
        c = self.c
        c.load("n1", 1000, seed=3)
        epoch = c.status("n1")["epoch"]
        c.stop("n1", signal.SIGKILL)
        time.sleep(0.3)
        c.start("n1")
        self.assertGreater(c.status("n1")["epoch"], epoch)
        c.load("n1", 1000, seed=4)
        self.assert_identical()
        wait_until(lambda: c.status("n2")["epoch"] == c.status("n1")["epoch"], 20,
                   "follower to adopt the new epoch")
        self.assertIn("lost the connection to leader", c.log("n2"))

    def test_handover_both_ways_under_write_load(self):
        c = self.c
        epoch = c.status("n1")["epoch"]
        load = c.load_async("n1", 8000, seed=11, follow=True)
        wait_until(lambda: c.status("n1")["latest_seq"] > 3000, 60, "writes under way on n1")
        r = c.cli("--node", "n1", "handover", "n2", timeout=60)
        self.assertIn("OK n2 leads", r.stdout)
        st2 = c.status("n2")
        self.assertEqual(st2["role"], "leader")
        self.assertGreater(st2["epoch"], epoch)
        st1 = c.status("n1")
        self.assertEqual(st1["role"], "follower")
        self.assertEqual(st1["leader"], "n2")
        # n3 learns the new leader from the old one's refusal, and follows it from where it
        # is: no snapshot.
        wait_until(lambda: c.status("n3")["leader"] == "n2"
                   and c.status("n3")["replication_state"] == "streaming", 20, "n3 to follow n2")
        self.assertEqual(c.leaders(), ["n2"])
        # And back, while the writes go on (they follow the leader).
        wait_until(lambda: c.status("n2")["latest_seq"] > st2["latest_seq"] + 500, 60,
                   "writes under way on n2")
        r = c.cli("--node", "n2", "handover", "n1", timeout=60)
        self.assertIn("OK n1 leads", r.stdout)
        out, err = load.communicate(timeout=300)
        self.assertEqual(load.returncode, 0, out + err)
        self.assertIn("acked 8000", out)
        self.assertNotIn("followed 0", out)
        self.assertEqual(c.leaders(), ["n1"])
        self.assert_identical()
        for nid in ("n2", "n3"):
            self.assertEqual(c.status(nid)["replication_state"], "streaming")
        # Each handover began an epoch above every one before it, on every node.
        self.assertGreater(c.status("n1")["epoch"], st2["epoch"])
        self.assertEqual(c.status("n3")["epoch"], c.status("n1")["epoch"])

    def test_a_restarted_old_leader_follows_the_new_one(self):
        c = self.c
        c.load("n1", 500, seed=12)
        c.cli("--node", "n1", "handover", "n3", timeout=60)
        # The config still says n1 leads; its saved role says it follows n3, and wins.
        c.stop("n1", signal.SIGKILL)
        c.start("n1")
        st1 = c.status("n1")
        self.assertEqual(st1["role"], "follower")
        self.assertEqual(st1["leader"], "n3")
        self.assertIn("the config's role (leader) only seeds a new data dir", c.log("n1"))
        self.assertEqual(c.leaders(), ["n3"])
        r = c.cli("--node", "n2", "put", "after", "handover")  # follows n2's hint to n3
        self.assertIn("retrying at " + c.addr["n3"], r.stderr)
        c.wait_converged()
        leader = c.scan_all("n3")
        for nid in ("n1", "n2"):
            self.assertEqual(c.scan_all(nid), leader, f"{nid} differs from n3")
        # A handover to a node that is not in the cluster, or from a follower, is refused.
        r = c.cli("--node", "n3", "handover", "n9", check=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("'n9' is not a node of cluster", r.stderr)

    def test_no_committed_read_at_a_leader_whose_successor_may_lead(self):
        # n2 caught up, then stopped: n1 asks it to take over and hears nothing. From then on
        # n2 may lead (its answer may only be late), so n1 refuses committed reads, which
        # could miss writes n2 acknowledged; plain reads still answer.
        c = self.c
        c.load("n1", 300, seed=14)
        c.cli("--node", "n1", "put", "k", "before")
        c.wait_converged()
        c.pause("n2")
        try:
            r = c.cli("--node", "n1", "handover", "n2", "--catch-up-ms", "1000", check=False)
            self.assertNotEqual(r.returncode, 0)
            self.assertIn("no answer yet", r.stderr)
            r = c.cli("--node", "n1", "--timeout-ms", "2000", "get", "--committed", "k",
                      check=False)
            self.assertNotEqual(r.returncode, 0, r.stdout)
            self.assertIn("leadership is being handed over to 'n2'", r.stderr)
            self.assertIn("before", c.cli("--node", "n1", "get", "k").stdout)
        finally:
            c.resume("n2")
        wait_until(lambda: c.leaders() == ["n2"], 30, "n2 to take over")
        c.cli("--node", "n2", "put", "k", "after")
        self.assertIn("after", c.cli("--node", "n2", "get", "--committed", "k").stdout)

    def test_stopped_follower_does_not_block_the_leader_or_grow_its_memory(self):
        c = self.c
        c.load("n1", 200, seed=5)
        c.wait_converged()
        # The same load with every follower up, as the baseline of the time bound.
        t = time.monotonic()
        c.load("n1", 6000, seed=60, timeout=120)
        baseline = time.monotonic() - t
        c.wait_converged()
        c.pause("n3")
        try:
            rss_before = rss_kib(c.procs["n1"].pid)
            t = time.monotonic()
            r = c.load("n1", 6000, seed=6, timeout=120)
            took = time.monotonic() - t
            self.assertIn("acked 6000", r.stdout)
            # Bound (README): a stopped follower does not slow the leader's writes; 2x the
            # baseline plus 0.5 s absorbs this machine's noise, while a leader that waited
            # on the stopped follower (heartbeat timeouts, a full window) would be far slower.
            self.assertLess(took, 2 * baseline + 0.5,
                            f"writes took {took:.2f}s with a stopped follower, "
                            f"{baseline:.2f}s with none")
            rss_after = rss_kib(c.procs["n1"].pid)
            # Bound: the memory tail (max_tail_bytes, 64 MiB by default) plus the in-flight
            # window; the load writes ~2 MB, so growth must stay far below that.
            # Under AddressSanitizer freed memory sits in its quarantine (256 MB), so RSS says
            # nothing there; the plain build checks the bound.
            if not os.environ.get("WALSHIP_SANITIZED"):
                self.assertLess(rss_after - rss_before, 96 * 1024, "leader memory grew")
            print(f"\n6000 writes with a stopped follower: {took:.2f}s ({baseline:.2f}s with "
                  f"none), leader RSS "
                  f"{rss_before} -> {rss_after} KiB")
            st = c.status("n1")
            n3 = next(f for f in st["followers"] if f["id"] == "n3")
            self.assertGreater(n3["lag_seq"], 0)
        finally:
            c.resume("n3")
        self.assert_identical()

    def test_crashes_during_a_catch_up_of_large_messages(self):
        # A follower about 19 MB behind catches up in 1 MiB messages, which it applies on a worker
        # thread (more than 256 KiB). Meanwhile the leader is killed and restarted twice and
        # the follower once: connections drop while an apply runs on the worker, and its
        # completion arrives for a connection that is gone. Nothing may be skipped or applied
        # twice: the end state is identical on every node.
        c = self.c
        c.load("n1", 100, seed=20, value_bytes=3000)
        c.wait_converged()
        c.stop("n2")
        c.load("n1", 1800, seed=21, value_bytes=3000)
        c.start("n2")
        for victim, pause in (("n1", 0.05), ("n2", 0.1), ("n1", 0.15)):
            time.sleep(pause)
            c.stop(victim, signal.SIGKILL)
            c.start(victim)
        c.load("n1", 50, seed=22, value_bytes=3000)
        c.wait_converged(timeout=120)
        self.assert_identical()
        for nid in ("n2", "n3"):
            self.assertEqual(c.status(nid)["replication_state"], "streaming", c.log(nid))


class PurgedWalTest(unittest.TestCase):
    # With reseed = "operator" a follower told its position is gone waits, refusing reads,
    # until `walship reseed`; with the default it re-seeds itself.

    def test_follower_behind_a_purged_wal_needs_snapshot(self):
        # Age bound: RocksDB deletes archived WAL older than 1 s.
        self.check_needs_snapshot({"wal_retention_bytes": 0, "wal_retention_seconds": 1})

    def test_follower_past_the_wal_size_bound_needs_snapshot(self):
        # Size bound: walship trims the archive to 64 KiB within about a second (and keeps
        # nothing beyond it for followers away).
        self.check_needs_snapshot({"wal_retention_bytes": 65536, "wal_retention_seconds": 0,
                                   "wal_pinned_max_bytes": 0},
                                  leader_log="archived WAL files")

    def test_follower_behind_a_purged_wal_reseeds_itself(self):
        c = self.purged_cluster({"wal_retention_bytes": 65536, "wal_pinned_max_bytes": 0},
                                reseed="automatic")
        try:
            c.start("n3")
            c.wait_converged(timeout=60)
            leader = c.scan_all("n1")
            for nid in ("n2", "n3"):
                self.assertEqual(c.scan_all(nid), leader, nid)
            self.assertIn("is now seeding", c.log("n3"))
            st = c.status("n3")
            self.assertEqual(st["role"], "follower")
            self.assertEqual(st["replication_state"], "streaming")
        finally:
            c.close()

    def purged_cluster(self, retention, reseed):
        """Three nodes; n3 is stopped while the leader writes past the WAL retention, so its
        position is gone when it comes back (not started again here)."""
        c = Cluster(n=3, replication=dict(retention, write_buffer_bytes=65536,
                                          max_tail_bytes=4096, reseed=reseed))
        c.start_all()
        c.load("n1", 200, seed=7)
        c.wait_converged()
        c.stop("n3")
        # Enough writes to fill and flush many 64 KiB memtables, over more than the 1 s
        # retention, so the WAL holding n3's position is deleted.
        for i in range(4):
            c.load("n1", 1500, seed=100 + i)
            time.sleep(0.6)
        return c

    def check_needs_snapshot(self, retention, leader_log=None):
        c = Cluster(n=3, replication=dict(retention, write_buffer_bytes=65536,
                                          max_tail_bytes=4096, reseed="operator"))
        try:
            c.start_all()
            c.load("n1", 200, seed=7)
            c.wait_converged()
            c.stop("n3")
            seq = c.status("n2")["latest_seq"]
            # Enough writes to fill and flush many 64 KiB memtables, over more than the 1 s
            # retention, so the WAL holding n3's position is deleted.
            for i in range(4):
                c.load("n1", 1500, seed=100 + i)
                time.sleep(0.6)
            c.start("n3")
            st = wait_until(lambda: (lambda s: s if s["replication_state"] == "needs_snapshot"
                                     else None)(c.status("n3")), 30, "n3 to need a snapshot")
            self.assertIn("WAL", st["message"])
            # It applied nothing past its position.
            self.assertEqual(st["latest_seq"], seq)
            lst = c.status("n1")
            # Its lag is told truthfully: the leader's position, and an age it cannot know
            # after a restart (-1), never "0 ms behind".
            self.assertEqual(st["leader_latest_seq"], lst["latest_seq"])
            self.assertEqual(st["lag_seq"], lst["latest_seq"] - seq)
            self.assertEqual(st["lag_ms"], -1)
            # Its data is stale with no way to catch up: reads are refused, saying why.
            for read in (["get", "k"], ["scan"]):
                r = c.cli("--node", "n3", *read, check=False)
                self.assertNotEqual(r.returncode, 0, read)
                self.assertIn("needs a snapshot", r.stdout + r.stderr)
            n3 = next(f for f in lst["followers"] if f["id"] == "n3")
            self.assertEqual(n3["state"], "needs_snapshot")
            self.assertIn("NEEDS SNAPSHOT", c.log("n3"))
            if leader_log is not None:
                self.assertIn(leader_log, c.log("n1"))
            # It stays so across a restart, with no leader to ask: its data is still stale.
            c.stop("n1")
            c.stop("n3")
            c.start("n3")
            st = c.status("n3")
            self.assertEqual(st["replication_state"], "needs_snapshot")
            r = c.cli("--node", "n3", "get", "k", check=False)
            self.assertNotEqual(r.returncode, 0)
            self.assertIn("needs a snapshot", r.stdout + r.stderr)
            # The operator re-seeds it; it converges on the leader's contents.
            c.start("n1")
            r = c.cli("--node", "n3", "reseed")
            self.assertIn("OK seeding", r.stdout)
            c.wait_converged(timeout=60)
            self.assertEqual(c.scan_all("n3"), c.scan_all("n1"))
            # A node that streams has nothing to re-seed.
            r = c.cli("--node", "n3", "reseed", check=False)
            self.assertNotEqual(r.returncode, 0)
            self.assertIn("only one that needs a snapshot", r.stderr)
        finally:
            c.close()


class RefusalTest(unittest.TestCase):
    def test_follower_of_another_cluster_is_refused(self):
        c = Cluster(n=2, name="alpha")
        try:
            c.start("n1")
            c.load("n1", 10, seed=8)
            other = os.path.join(c.dir, "other.toml")
            c.write_config(other, "beta", {"reconnect_min_ms": 20, "reconnect_max_ms": 200})
            c.start("n2", config=other)
            wait_until(lambda: "cluster" in c.status("n2")["message"], 20,
                       "n2 to report the refusal")
            self.assertEqual(c.status("n2")["latest_seq"], 0)
            lst = c.status("n1")
            self.assertEqual(lst["followers"][0]["state"], "refused")
            self.assertIn("'beta'", lst["followers"][0]["message"])
        finally:
            c.close()


if __name__ == "__main__":
    unittest.main()
