"""Semi-synchronous and synchronous replication on real processes: what a successful write
promises with followers stopped, paused or the leader killed, per-write overrides, the ack
levels, conditional writes and committed reads."""
import os
import signal
import subprocess
import time
import unittest

from cluster import TESTLOAD, WALSHIP, Cluster, wait_until

EXIT_NOT_REPLICATED = 5
EXIT_CONDITION_FAILED = 4


class SyncTest(unittest.TestCase):
    c = None

    def tearDown(self):
        if self.c is not None:
            self.c.close()

    def cluster(self, **replication):
        self.c = Cluster(n=3, replication=replication)
        self.c.start_all()
        return self.c

    def put_async(self, *args):
        """A `walship put` running in the background."""
        return subprocess.Popen([WALSHIP, "--cluster", self.c.config, *args],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def test_semi_sync_fails_without_followers_under_the_fail_policy(self):
        c = self.cluster(mode="semi-sync", acks=1, ack_level="flushed", sync_timeout_ms=1000)
        self.assertEqual(c.cli("put", "a", "1").returncode, 0)
        c.stop("n2")
        c.stop("n3")
        r = c.cli("put", "b", "2", check=False)
        self.assertEqual(r.returncode, EXIT_NOT_REPLICATED, r.stdout + r.stderr)
        self.assertIn("not acknowledged as semi-sync (1 follower, flushed) within 1000 ms",
                      r.stderr)
        st = c.status("n1")
        self.assertEqual(st["writes_not_replicated"], 1)
        self.assertEqual(st["degraded_for_ms"], -1)
        self.assertEqual((st["replication_mode"], st["replication_acks"], st["ack_level"]),
                         ("semi-sync", 1, "flushed"))
        # Written on the leader all the same: the outcome was in doubt, not a failure.
        self.assertEqual(c.cli("--node", "n1", "get", "b").stdout, "2\n")

    def test_semi_sync_degrades_to_async_and_comes_back(self):
        c = self.cluster(mode="semi-sync", acks=1, sync_timeout_ms=1000,
                         on_sync_timeout="degrade")
        c.stop("n2")
        c.stop("n3")
        t = time.monotonic()
        r = c.cli("put", "b", "2")
        self.assertGreaterEqual(time.monotonic() - t, 0.9, "it waited for the timeout")
        self.assertIn("degraded", r.stdout)
        self.assertGreaterEqual(c.status("n1")["degraded_for_ms"], 0)
        t = time.monotonic()
        self.assertIn("degraded", c.cli("put", "c", "3").stdout)
        self.assertLess(time.monotonic() - t, 0.9, "degraded: no wait")
        self.assertIn("replication DEGRADED to async", c.log("n1"))
        c.start("n2")
        wait_until(lambda: c.status("n1")["degraded_for_ms"] == -1, 30,
                   "the degraded state to end once n2 is back")
        self.assertIn("replication back to semi-sync", c.log("n1"))
        r = c.cli("put", "d", "4")
        self.assertNotIn("degraded", r.stdout)
        self.assertEqual(c.cli("--node", "n2", "get", "d").stdout, "4\n")
        self.assertGreaterEqual(c.status("n1")["writes_degraded"], 2)

    def test_acknowledged_writes_survive_a_killed_leader(self):
        c = self.cluster(mode="semi-sync", acks=1, ack_level="flushed")
        acked = os.path.join(c.dir, "acked")
        load = subprocess.Popen([TESTLOAD, "--endpoint", c.addr["n1"], "--batches", "1000000",
                                 "--unique-puts", "--acked-file", acked, "--seed", "3"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            def acked_count():
                if not os.path.exists(acked):
                    return 0
                with open(acked) as f:
                    return sum(1 for _ in f)
            wait_until(lambda: acked_count() >= 2000, 120, "2000 acknowledged writes")
            c.stop("n1", signal.SIGKILL)
            load.communicate(timeout=60)
        finally:
            if load.poll() is None:
                load.kill()
                load.wait()
        with open(acked) as f:
            keys = [line.strip() for line in f if line.strip()]
        self.assertGreaterEqual(len(keys), 2000)
        held = set()
        for nid in ("n2", "n3"):
            out = c.cli("--node", nid, "scan", "--prefix", "u", "--limit", "100000").stdout
            held |= {line.split("\t")[0] for line in out.splitlines()}
        missing = [k for k in keys if k not in held]
        self.assertEqual(missing, [], f"{len(missing)} acknowledged writes on no follower")

    def test_sync_waits_for_a_paused_follower(self):
        c = self.cluster(mode="sync", ack_level="flushed", sync_timeout_ms=30000)
        c.cli("put", "x", "1")
        c.pause("n3")
        try:
            p = self.put_async("put", "y", "2")
            wait_until(lambda: c.status("n1")["writes_waiting"] == 1, 20,
                       "the write to wait for n3")
            self.assertIsNone(p.poll(), "the write returned with n3 paused")
        finally:
            c.resume("n3")
        out, err = p.communicate(timeout=60)
        self.assertEqual(p.returncode, 0, out + err)
        self.assertEqual(c.cli("--node", "n3", "get", "y").stdout, "2\n")

    def test_a_write_may_ask_for_more_or_less_than_the_cluster(self):
        c = self.cluster(mode="semi-sync", acks=1, sync_timeout_ms=1000)
        c.stop("n2")
        c.stop("n3")
        # Weaker: async returns at once.
        t = time.monotonic()
        r = c.cli("--mode", "async", "put", "a", "1")
        self.assertLess(time.monotonic() - t, 0.9)
        self.assertNotIn("degraded", r.stdout)
        c.start("n2")
        # Stronger: sync waits for n3 too, which is down.
        r = c.cli("--mode", "sync", "put", "b", "2", check=False)
        self.assertEqual(r.returncode, EXIT_NOT_REPLICATED, r.stdout + r.stderr)
        self.assertIn("sync (every voting follower, flushed)", r.stderr)
        self.assertEqual(c.cli("--acks", "1", "--level", "applied", "put", "c", "3").returncode, 0)
        r = c.cli("--acks", "3", "put", "d", "4", check=False)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("semi-sync asks for 3 follower acks, but the cluster has 2", r.stderr)
        r = c.cli("--mode", "sync", "--acks", "1", "put", "e", "5", check=False)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("applies to semi-sync writes", r.stderr)

    def test_applied_means_readable_on_the_acking_follower(self):
        c = self.cluster(mode="semi-sync", acks=1, ack_level="applied")
        c.stop("n3")  # n2 is the only follower that can ack
        for i in range(40):
            c.cli("put", f"k{i}", f"v{i}")
            self.assertEqual(c.cli("--node", "n2", "get", f"k{i}").stdout, f"v{i}\n")

    def test_conditional_writes(self):
        c = self.cluster()
        self.assertEqual(c.cli("--if-absent", "put", "ctr", "1").returncode, 0)
        r = c.cli("--if-absent", "put", "ctr", "1", check=False)
        self.assertEqual(r.returncode, EXIT_CONDITION_FAILED, r.stderr)
        self.assertIn("the key exists", r.stderr)
        r = c.cli("--if-value", "7", "put", "ctr", "8", check=False)
        self.assertEqual(r.returncode, EXIT_CONDITION_FAILED, r.stderr)
        self.assertIn("holds another value", r.stderr)
        self.assertEqual(c.cli("--if-value", "1", "put", "ctr", "2").returncode, 0)
        self.assertEqual(c.cli("--if-key", "ctr", "--if-value", "2", "write",
                               input="put ctr 3\nput other x\n").returncode, 0)
        self.assertEqual(c.cli("get", "ctr").stdout, "3\n")
        c.wait_converged()
        self.assertEqual(c.cli("--node", "n2", "get", "ctr").stdout, "3\n")

    def test_committed_reads_wait_for_the_followers(self):
        c = self.cluster(mode="semi-sync", acks=1, sync_timeout_ms=1000)
        c.cli("put", "a", "1")
        self.assertEqual(c.cli("get", "--committed", "a").stdout, "1\n")
        c.stop("n2")
        c.stop("n3")
        c.cli("--mode", "async", "put", "a", "2")
        r = c.cli("get", "--committed", "a", check=False)
        self.assertEqual(r.returncode, 3, r.stdout + r.stderr)
        self.assertIn("a committed read answers only once they have", r.stderr)
        self.assertEqual(c.cli("get", "a").stdout, "2\n", "a plain read sees it at once")
        r = c.cli("--node", "n1", "get", "--committed", "a", check=False)
        c.start("n2")
        wait_until(lambda: c.cli("get", "--committed", "a", check=False).stdout == "2\n", 30,
                   "the committed read once n2 is back")
        r = c.cli("--node", "n2", "get", "--committed", "a", check=False)
        self.assertEqual(r.returncode, 3)
        self.assertIn("committed reads are served by the leader", r.stderr)

    def test_a_leader_that_lost_its_wal_tail_hands_over_to_a_follower_holding_it(self):
        """As after a power loss with the leader's own fsync off: its WAL loses a tail its
        followers hold. It must not lead with less; it hands leadership to one of them."""
        c = self.cluster(mode="semi-sync", acks=1, ack_level="flushed")
        c.load("n1", 400, seed=21)
        c.wait_converged()
        before = c.scan_all("n2")
        latest = c.status("n2")["latest_seq"]
        c.stop("n1", signal.SIGKILL)
        db = os.path.join(c.data_dir("n1"), "db")
        logs = sorted((f for f in os.listdir(db) if f.endswith(".log")),
                      key=lambda f: os.path.getsize(os.path.join(db, f)))
        newest = os.path.join(db, logs[-1])
        size = os.path.getsize(newest)
        self.assertGreater(size, 4096)
        os.truncate(newest, size // 2)
        c.start("n1")
        try:
            wait_until(lambda: c.status("n1")["role"] == "follower", 30, "n1 to follow")
        except AssertionError:
            raise AssertionError(c.log("n1")[-3000:])
        self.assertIn("hands leadership to", c.log("n1"))
        [leader] = c.leaders()
        self.assertIn(leader, ("n2", "n3"))
        self.assertGreaterEqual(c.status(leader)["latest_seq"], latest)
        wait_until(lambda: all(c.status(n)["latest_seq"] == c.status(leader)["latest_seq"]
                               for n in c.ids), 30, "every node at the new leader's seq")
        for nid in c.ids:
            self.assertEqual(c.scan_all(nid), before, f"{nid} differs")
            if nid != leader:
                self.assertEqual(c.status(nid)["replication_state"], "streaming")
        r = c.cli("put", "after", "1")  # the CLI follows the hint from n1 to the leader
        self.assertEqual(r.returncode, 0)

    def test_a_restarted_leader_holding_everything_leads_again(self):
        c = self.cluster()
        c.load("n1", 200, seed=22)
        c.wait_converged()
        epoch = c.status("n1")["epoch"]
        c.stop("n1", signal.SIGKILL)
        c.start("n1")
        wait_until(lambda: c.status("n1")["role"] == "leader", 30, "n1 to lead again")
        self.assertIn("leads again", c.log("n1"))
        self.assertGreater(c.status("n1")["epoch"], epoch)
        c.cli("put", "x", "1")
        c.wait_converged()


if __name__ == "__main__":
    unittest.main()
