"""Automatic failover on real processes: a leader killed or paused is replaced by election,
no write the mode promised to keep is lost, the most up-to-date follower wins, and the old
leader comes back as a follower without taking a write meanwhile."""
import json
import os
import re
import signal
import subprocess
import threading
import time
import unittest

from cluster import TESTLOAD, Cluster, append_node_state, wait_until

# A generous bound on a new leader with the default time-outs (election_timeout_ms 800, jitter
# 200, lease_ms 550; bench/failover.py measures the real figures); doubled where it is waited
# for, never a skip on a slow machine.
NEW_LEADER_WITHIN_S = 10
EXIT_WRITE_LOST = 7


class FailoverTest(unittest.TestCase):
    def cluster(self, **repl):
        settings = {"failover": True}
        settings.update(repl)
        c = Cluster(3, replication=settings)
        self.addCleanup(c.close)
        c.start_all()
        try:
            wait_until(lambda: all(c.status(n)["role"] == "follower" and c.status(n)["ready"]
                                   for n in ("n2", "n3")), 30, "n2 and n3 streaming")
        except AssertionError as e:
            raise AssertionError(f"{e}\n{c.log_tails()}") from None
        return c

    def following(self, c, nid, leader=None):
        """Whether `nid` follows (`leader`, when given) and is ready; False while it cannot
        answer (a node re-seeded from a checkpoint restarts its database)."""
        try:
            st = c.status(nid)
        except AssertionError:
            return False
        return (st["role"] == "follower" and st["ready"]
                and (leader is None or st["leader"] == leader))

    def running_leaders(self, c):
        out = []
        for nid in c.procs:
            r = c.cli("--node", nid, "status", "--json", check=False)
            if r.returncode == 0 and '"role":"leader"' in r.stdout:
                out.append(nid)
        return out

    def wait_new_leader(self, c, among):
        def one():
            leaders = [n for n in self.running_leaders(c) if n in among]
            return leaders[0] if len(leaders) == 1 else None
        return wait_until(one, NEW_LEADER_WITHIN_S * 2, f"one leader among {among}")

    def put_until_acked(self, c, nid, key, value, timeout=10):
        """A write through the CLI, again until acknowledged (a new leader takes writes once a
        majority acknowledged it)."""
        return wait_until(lambda: c.cli("--node", nid, "put", key, value,
                                        check=False).returncode == 0,
                          timeout, f"{nid} to acknowledge a write")

    def acked_keys(self, path):
        if not os.path.exists(path):
            return []
        with open(path) as f:
            return [line.strip() for line in f if line.strip()]

    def test_a_killed_leader_is_replaced_and_no_acknowledged_write_is_lost(self):
        c = self.cluster(mode="semi-sync", acks=1, ack_level="flushed")
        acked = os.path.join(c.dir, "acked")
        load = subprocess.Popen([TESTLOAD, "--endpoint", c.addr["n1"], "--batches", "1000000",
                                 "--unique-puts", "--acked-file", acked, "--seed", "7"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_until(lambda: len(self.acked_keys(acked)) >= 2000, 120,
                       "2000 acknowledged writes")
            c.stop("n1", signal.SIGKILL)
            killed = time.monotonic()
            load.communicate(timeout=60)
        finally:
            if load.poll() is None:
                load.kill()
                load.wait()
        leader = self.wait_new_leader(c, ("n2", "n3"))
        self.put_until_acked(c, leader, "after", "failover")
        took = time.monotonic() - killed
        self.assertLess(took, NEW_LEADER_WITHIN_S * 2)
        self.assertIn("elected leader of epoch", c.log(leader))
        # The CLI given the file finds the new leader although the file names n1.
        r = c.cli("put", "via-file", "1")
        self.assertIn("asking", r.stderr)
        self.assertEqual(c.cli("--node", leader, "get", "via-file").stdout, "1\n")

        keys = self.acked_keys(acked)
        self.assertGreaterEqual(len(keys), 2000)
        out = c.cli("--node", leader, "scan", "--prefix", "u", "--limit", "1000000").stdout
        held = {line.split("\t")[0] for line in out.splitlines()}
        missing = [k for k in keys if k not in held]
        self.assertEqual(missing, [], f"{len(missing)} acknowledged writes lost in the failover")

        # The old leader comes back as a follower of the new one, and the replicas agree.
        c.start("n1")
        wait_until(lambda: self.following(c, "n1", leader), 60, "n1 to follow the new leader")
        self.assertEqual(self.running_leaders(c), [leader])
        c.wait_converged(60)
        self.assertEqual(c.scan_all("n1"), c.scan_all(leader))
        self.assertEqual(c.scan_all("n2"), c.scan_all("n3"))
        self.assertEqual(c.cli("--node", "n1", "get", "after").stdout, "failover\n")

    def test_a_write_with_a_request_id_is_applied_once_across_a_failover(self):
        c = self.cluster(mode="semi-sync", acks=1)
        first = c.cli("--request-id", "order-1", "put", "order", "first").stdout
        self.assertNotIn("already written", first)
        seq = first.split()[2]
        again = c.cli("--request-id", "order-1", "put", "order", "second").stdout
        self.assertIn("already written with this request id", again)
        self.assertEqual(again.split()[2], seq)
        latest = c.status("n1")["latest_seq"]
        wait_until(lambda: all(c.status(n)["latest_seq"] == latest for n in ("n2", "n3")),
                   30, "both followers to hold the write")
        c.stop("n1", signal.SIGKILL)
        # Given the file, which names n1, the CLI asks the others, and asks again while they
        # elect a leader; the new leader knows the id from the replicated write.
        r = c.cli("--request-id", "order-1", "put", "order", "third", timeout=60)
        self.assertIn("already written with this request id", r.stdout)
        self.assertEqual(r.stdout.split()[2], seq)
        leader = self.wait_new_leader(c, ("n2", "n3"))
        self.assertEqual(c.cli("--node", leader, "get", "order").stdout, "first\n")
        self.assertEqual(c.status(leader)["latest_seq"], latest, "the retries wrote nothing")
        fresh = c.cli("--request-id", "order-2", "put", "order", "fourth").stdout
        self.assertNotIn("already written", fresh)

    def test_a_write_without_a_request_id_waits_for_the_new_leader(self):
        # Asked again only while certainly not applied: the file's leader cannot be reached,
        # the followers name it still, then a new leader holds no lease yet.
        c = self.cluster(mode="semi-sync", acks=1)
        c.cli("put", "before", "failover")
        before = c.status("n1")["latest_seq"]
        wait_until(lambda: all(c.status(n)["latest_seq"] == before for n in ("n2", "n3")), 30,
                   "both followers to hold the write")
        c.stop("n1", signal.SIGKILL)
        r = c.cli("--leader-wait-ms", "30000", "put", "during", "failover", timeout=60)
        self.assertIn("asking again in", r.stderr)
        self.assertNotIn("request id", r.stderr)
        seq = int(r.stdout.split()[2])
        self.assertEqual(seq, before + 1, "written once")
        leader = self.wait_new_leader(c, ("n2", "n3"))
        self.assertEqual(c.cli("--node", leader, "get", "during").stdout, "failover\n")
        self.assertEqual(c.status(leader)["latest_seq"], seq, "and nothing after it")

    def test_a_new_clusters_leader_waits_for_followers_that_start_later(self):
        """Started seconds before its followers, the first leader keeps its epoch and takes no
        write until a majority answers, instead of stepping down for want of one (after which
        any node might have been elected)."""
        c = Cluster(3, replication={"failover": True})
        self.addCleanup(c.close)
        c.start("n1")
        deadline = time.monotonic() + 3  # more than three election time-outs
        while time.monotonic() < deadline:
            st = c.status("n1")
            self.assertEqual((st["role"], st["epoch"]), ("leader", 1))
            self.assertIn("no lease", st["failover"])
            time.sleep(0.2)
        r = c.cli("--node", "n1", "--leader-wait-ms", "300", "put", "early", "1", check=False)
        self.assertNotEqual(r.returncode, 0, "a leader without a majority took a write")
        self.assertIn("has not heard from a majority", r.stderr)
        # Refused before anything was written (notWritten on the wire): asked again meanwhile.
        self.assertIn("asking again in", r.stderr)
        c.start("n2")
        c.start("n3")
        self.put_until_acked(c, "n1", "k", "v")
        wait_until(lambda: all(self.following(c, n, "n1") for n in ("n2", "n3")), 30,
                   "n2 and n3 to follow n1")
        self.assertEqual(c.status("n1")["epoch"], 1)
        self.assertNotIn("STEPPING DOWN", c.log("n1"))

    def test_the_most_up_to_date_follower_wins(self):
        c = self.cluster(mode="semi-sync", acks=1)
        c.pause("n3")  # held back: only n2 acknowledges from here on
        try:
            c.load("n1", 300, seed=11)
            behind = c.status("n1")["latest_seq"]
            c.stop("n1", signal.SIGKILL)
        finally:
            # Woken after the leader's death and long past its election time-out, n3 stands
            # at once, first; it must lose to n2, which holds more.
            c.resume("n3")
        leader = self.wait_new_leader(c, ("n2", "n3"))
        self.assertEqual(leader, "n2", "a follower behind another was elected")
        self.assertEqual(c.status("n2")["latest_seq"], behind, "the new leader lacks writes")
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            self.assertEqual(self.running_leaders(c), ["n2"])
            time.sleep(0.2)
        self.put_until_acked(c, "n2", "k", "v")
        wait_until(lambda: c.status("n3")["latest_seq"] == c.status("n2")["latest_seq"], 30,
                   "n3 to catch up from n2")
        self.assertEqual(c.scan_all("n3"), c.scan_all("n2"))

    def test_a_paused_leader_takes_no_write_once_replaced_and_rejoins_as_follower(self):
        c = self.cluster()  # asynchronous: only the lease keeps the old leader from writing
        c.cli("--node", "n1", "put", "before", "1")
        c.wait_converged(30)  # else an asynchronous write may be n1's alone (rolled back)
        c.pause("n1")
        try:
            leader = self.wait_new_leader(c, ("n2", "n3"))
            self.put_until_acked(c, leader, "during", "2")
        finally:
            c.resume("n1")
        # Woken, its lease is long gone: it does not take the write itself (which would fork
        # the history); the CLI is sent on to the new leader, or refused.
        r = c.cli("--node", "n1", "put", "stale", "3", check=False)
        if r.returncode == 0:
            self.assertIn(f"retrying at {c.addr[leader]}", r.stderr,
                          "the old leader acknowledged a write itself")
        wait_until(lambda: self.following(c, "n1", leader), 30, "n1 to follow the new leader")
        self.assertIn("STEPPING DOWN", c.log("n1"))
        # It held nothing the new leader does not: it catches up without a snapshot.
        c.wait_converged(30)
        self.assertEqual(c.status("n1")["phase"], "ready")
        self.assertNotIn("NEEDS SNAPSHOT", c.log("n1"))
        for nid in ("n1", "n2", "n3"):
            self.assertEqual(c.cli("--node", nid, "get", "during").stdout, "2\n")
            self.assertEqual(c.cli("--node", nid, "get", "before").stdout, "1\n")
        self.assertEqual(c.scan_all("n1"), c.scan_all(leader))
        self.assertEqual(c.scan_all("n2"), c.scan_all("n3"))

    def test_an_id_allocator_hands_out_no_id_twice_across_leader_kills(self):
        """Three clients allocate IDs from one counter (read it, then write counter + 1 if it
        still holds what was read: a conditional semi-sync write) while the leader is killed
        three times; an ID counts as handed out only when its write was acknowledged."""
        c = self.cluster(mode="semi-sync", acks=1, ack_level="flushed")
        c.cli("--if-absent", "put", "next-id", "0")
        handed_out, lock, stop = [], threading.Lock(), threading.Event()

        def allocate(name):
            while not stop.is_set():
                r = c.cli("get", "next-id", check=False, timeout=15)
                if r.returncode != 0:
                    continue  # no leader yet, or the read's node was killed: ask again
                n = int(r.stdout)
                w = c.cli("--if-value", str(n), "put", "next-id", str(n + 1), check=False,
                          timeout=15)
                if w.returncode == 0:
                    with lock:
                        handed_out.append((n + 1, name))

        clients = [threading.Thread(target=allocate, args=(f"client{i}",)) for i in range(3)]
        for t in clients:
            t.start()
        try:
            for kill in range(3):
                before = len(handed_out)
                wait_until(lambda: len(handed_out) >= before + 20, 60,
                           "20 more IDs handed out")
                leader = self.wait_new_leader(c, tuple(c.procs))
                c.stop(leader, signal.SIGKILL)
                self.wait_new_leader(c, tuple(c.procs))
                c.start(leader)  # it comes back as a follower
            before = len(handed_out)
            wait_until(lambda: len(handed_out) >= before + 20, 60, "IDs after the last kill")
        finally:
            stop.set()
            for t in clients:
                t.join(timeout=60)
        ids = [i for i, _ in handed_out]
        twice = sorted({i for i in ids if ids.count(i) > 1})
        self.assertEqual(twice, [], f"IDs handed out twice: {twice[:10]}")
        self.assertGreaterEqual(len(ids), 80)
        final = int(c.cli("get", "next-id").stdout)
        self.assertGreaterEqual(final, max(ids), "the counter went back below an ID handed out")
        self.assertGreater(len({name for _, name in handed_out}), 1)

    def test_an_old_leaders_unreplicated_writes_go_to_a_rollback_file_and_nowhere_else(self):
        c = self.cluster()  # asynchronous: a write is acknowledged by the leader alone
        c.cli("put", "before", "1")
        c.wait_converged(30)
        c.stop("n2", signal.SIGKILL)
        c.stop("n3", signal.SIGKILL)
        # Within its lease n1 still acknowledges writes that no follower receives.
        acked = os.path.join(c.dir, "acked")
        subprocess.run([TESTLOAD, "--endpoint", c.addr["n1"], "--batches", "30",
                        "--unique-puts", "--acked-file", acked, "--seed", "5"],
                       capture_output=True, text=True, timeout=60)
        c.stop("n1", signal.SIGKILL)
        lost = self.acked_keys(acked)
        self.assertGreater(len(lost), 0, "no write was acknowledged within the lease")
        c.start("n2")
        c.start("n3")
        leader = self.wait_new_leader(c, ("n2", "n3"))
        self.put_until_acked(c, leader, "after", "2")
        c.start("n1")  # its history parted from the new leader's: rolled back and re-seeded
        wait_until(lambda: self.following(c, "n1", leader), 60, "n1 re-seeded and following")
        files = os.listdir(os.path.join(c.data_dir("n1"), "rollback"))
        self.assertEqual(len(files), 1, files)
        shown = c.cli("rollback", "show",
                      os.path.join(c.data_dir("n1"), "rollback", files[0])).stdout
        for key in lost:
            self.assertIn(f"put {key} ", shown)
        self.assertIn(f"not in the history of leader {leader}", shown)
        as_json = json.loads(c.cli("rollback", "show", "--json",
                                   os.path.join(c.data_dir("n1"), "rollback", files[0])).stdout)
        self.assertEqual(as_json["leader"], leader)
        self.assertLessEqual(set(lost), {op["key"] for op in as_json["ops"] if op["op"] == "put"})
        c.wait_converged(30)
        for nid in ("n1", "n2", "n3"):
            held = c.scan_all(nid)
            self.assertEqual([k for k in lost if f"{k}\t" in held], [], f"{nid} holds them")
            self.assertEqual(c.cli("--node", nid, "get", "after").stdout, "2\n")
            self.assertEqual(c.cli("--node", nid, "get", "before").stdout, "1\n")

    def test_a_read_token_of_a_write_lost_in_a_failover_is_refused_never_answered(self):
        c = self.cluster()  # asynchronous: a write is acknowledged by the leader alone
        c.cli("put", "before", "1")
        c.wait_converged(30)
        c.stop("n2", signal.SIGKILL)
        c.stop("n3", signal.SIGKILL)
        # Within its lease n1 still acknowledges a write that no follower receives.
        session = os.path.join(c.dir, "session")
        out = c.cli("--node", "n1", "--session", session, "put", "lost", "x").stdout
        c.stop("n1", signal.SIGKILL)
        m = re.search(r"OK seq (\d+) epoch (\d+)", out)
        seq, epoch = int(m.group(1)), int(m.group(2))
        c.start("n2")
        c.start("n3")
        leader = self.wait_new_leader(c, ("n2", "n3"))
        self.put_until_acked(c, leader, "after", "2")  # the new epoch writes seq again
        c.wait_converged(30)
        for nid in ("n2", "n3"):
            r = c.cli("--node", nid, "--session", session, "get", "before", check=False)
            self.assertEqual(r.returncode, EXIT_WRITE_LOST, r.stdout + r.stderr)
            self.assertIn("lost in a failover", r.stderr)
            r = c.cli("--node", nid, "get", "lost", "--after", f"{epoch}:{seq}", check=False)
            self.assertEqual(r.returncode, EXIT_WRITE_LOST, r.stdout + r.stderr)
            # A bare sequence number cannot tell: the other write at that seq satisfies it.
            r = c.cli("--node", nid, "get", "lost", "--min-seq", str(seq), check=False)
            self.assertEqual(r.returncode, 1, r.stdout + r.stderr)  # served: not found

    def test_a_node_being_re_seeded_still_votes_and_seeds_from_the_leader_elected(self):
        # n3 was told to re-seed and stopped before its copy came (its saved verdict says so);
        # it starts again, seeding, while its leader n1 is dead. n2 can lead only with n3's
        # vote; once elected, n2 is the node n3 copies from.
        c = self.cluster()
        for i in range(20):
            c.cli("put", f"k{i}", str(i))
        c.wait_converged(30)
        c.stop("n3")
        append_node_state(os.path.join(c.data_dir("n3"), "node-state"),
                          "needs_snapshot its leader could not serve its position "
                          "(set by the test)\n")
        c.stop("n1", signal.SIGKILL)
        c.start("n3")
        self.assertEqual(c.status("n3")["replication_state"], "seeding")
        leader = self.wait_new_leader(c, ("n2", "n3"))
        self.assertEqual(leader, "n2")  # a node being seeded never stands
        self.assertRegex(c.log("n3"), r"voted for 'n2' in epoch \d+ \(while being seeded\)")
        wait_until(lambda: self.following(c, "n3", "n2"), 60, "n3 seeded from n2, following it")
        self.put_until_acked(c, "n2", "after", "1")
        c.wait_converged(30)
        self.assertEqual(c.scan_all("n3"), c.scan_all("n2"))
        self.assertIn("k19\t19", c.scan_all("n3"))

    def test_heartbeats_show_each_peer_and_a_stopped_follower_is_flagged(self):
        c = self.cluster(phi_threshold=8)

        def beats(st):
            return {f["id"]: f for f in st["followers"]}

        def all_heard():
            fs = beats(c.status("n1"))
            # phi is above 0 once the detector has seen enough heartbeats to say anything.
            return len(fs) == 2 and all(0 <= f["heartbeat_ago_ms"] < 1000 and not f["silent"]
                                        and f["heartbeat_phi"] > 0 for f in fs.values())
        wait_until(all_heard, 10, "both followers answering the leader's heartbeats")
        for nid in ("n2", "n3"):
            st = c.status(nid)
            self.assertGreaterEqual(st["leader_heartbeat_ago_ms"], 0, st)
            self.assertLess(st["leader_heartbeat_ago_ms"], 1000, st)
        # A stopped follower's TCP connection stays open, and its stream stays "connected";
        # its heartbeats and acks stop, and the leader says so.
        c.pause("n3")
        try:
            wait_until(lambda: beats(c.status("n1"))["n3"]["silent"], 10,
                       "the leader to flag n3 silent")
            fs = beats(c.status("n1"))
            self.assertGreater(fs["n3"]["heartbeat_phi"], 8, fs)
            self.assertGreaterEqual(fs["n3"]["heartbeat_ago_ms"], 1000, fs)  # the time-out
            self.assertFalse(fs["n2"]["silent"], fs)
            self.assertIn("SILENT", c.cli("--node", "n1", "status").stdout)
            # n2 alone keeps the majority: the leader holds its lease and takes writes.
            self.put_until_acked(c, "n1", "while-n3-stopped", "1")
        finally:
            c.resume("n3")
        wait_until(lambda: not beats(c.status("n1"))["n3"]["silent"], 10,
                   "n3 answering again")
        self.assertEqual(self.running_leaders(c), ["n1"])

    def test_failover_off_leaves_the_cluster_without_a_leader(self):
        c = Cluster(3, replication={"failover": False})
        self.addCleanup(c.close)
        c.start_all()
        wait_until(lambda: c.status("n2")["ready"], 30, "n2 streaming")
        c.stop("n1", signal.SIGKILL)
        deadline = time.monotonic() + 3  # three election time-outs: no node may stand
        while time.monotonic() < deadline:
            self.assertEqual(self.running_leaders(c), [])
            time.sleep(0.2)
        self.assertEqual(c.status("n2")["failover"], "")
        # No node takes writes: the CLI asks again for --leader-wait-ms, then names the refusal.
        began = time.monotonic()
        r = c.cli("--leader-wait-ms", "600", "put", "k", "v", check=False)
        self.assertGreaterEqual(time.monotonic() - began, 0.5)
        self.assertEqual(r.returncode, 3, r.stderr)
        lines = r.stderr.strip().splitlines()
        waits = [int(m.group(1)) for m in map(re.compile(r"\((\d+) ms so far\)").search, lines)
                 if m]
        self.assertGreater(len(waits), 1, r.stderr)
        self.assertEqual(waits, sorted(waits))
        self.assertIn("not the leader", lines[-1])
        r = c.cli("--leader-wait-ms", "0", "put", "k", "v", check=False)
        self.assertEqual(r.returncode, 3, r.stderr)
        self.assertNotIn("asking again", r.stderr)


if __name__ == "__main__":
    unittest.main()
