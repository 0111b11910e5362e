"""Leadership through etcd on real processes: a three-member etcd on 127.0.0.1 (Debian's
etcd-server) chooses the leader of three walshipd. A killed leader is replaced with no
acknowledged write lost; a leader cut off from etcd stops acknowledging writes before another
node takes any; etcd's own leader killed under load loses nothing."""
import datetime
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import unittest
import urllib.error
import urllib.request

from cluster import TESTLOAD, WALSHIPD, Cluster, wait_until
from etcd import Etcd

NEW_LEADER_WITHIN_S = 20  # a generous bound; bench/failover.py measures the real figures


def http_get(c, nid, path):
    """(status, body) of a GET on node nid's HTTP port; a JSON body parsed."""
    try:
        with urllib.request.urlopen(f"http://{c.http[nid]}{path}", timeout=10) as r:
            status, body = r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        status, body = e.code, e.read().decode()
    return status, (body if path == "/metrics" else json.loads(body))


class Blackhole:
    """A TCP proxy to `target` (host, port) on 127.0.0.1 that can be cut: from cut() on, it
    passes nothing either way (connections stay open, bytes are dropped), as a partition."""

    def __init__(self, target):
        self.target = target
        self.cut_off = False
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self.accept, daemon=True).start()

    def cut(self):
        self.cut_off = True

    def accept(self):
        while True:
            try:
                a, _ = self.sock.accept()
            except OSError:
                return
            try:
                b = socket.create_connection(self.target, timeout=5)
            except OSError:
                a.close()
                continue
            for src, dst in ((a, b), (b, a)):
                threading.Thread(target=self.pump, args=(src, dst), daemon=True).start()

    def pump(self, src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if not self.cut_off:
                    dst.sendall(data)
        except OSError:
            pass
        if not self.cut_off:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        self.sock.close()


def log_time(c, nid, pattern):
    """The wall-clock time of the first line of `nid`'s log that contains `pattern`."""
    for line in c.log(nid).splitlines():
        m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}) ", line)
        if m and pattern in line:
            return datetime.datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S.%f").timestamp()
    return None


class EtcdTest(unittest.TestCase):
    def setUp(self):
        self.etcd = Etcd()
        self.addCleanup(self.etcd.close)
        self.etcd.start()

    def cluster(self, start=True, http=False, **coordinator):
        settings = {"etcd": self.etcd.endpoints}
        settings.update(coordinator)
        c = Cluster(3, replication={"mode": "semi-sync", "acks": 1, "ack_level": "flushed"},
                    coordinator=settings, http=http)
        self.addCleanup(c.close)
        if start:
            c.start_all()
            wait_until(lambda: self.leads(c, "n1"), 30, "n1 to lead")
            wait_until(lambda: all(self.following(c, n) for n in ("n2", "n3")), 30,
                       "n2 and n3 streaming")
        return c

    def following(self, c, nid, leader=None):
        try:
            st = c.status(nid)
        except AssertionError:
            return False
        return (st["role"] == "follower" and st["ready"]
                and (leader is None or st["leader"] == leader))

    def leads(self, c, nid):
        """Whether `nid` leads and holds the leader key (takes writes)."""
        try:
            st = c.status(nid)
        except AssertionError:
            return False
        return st["role"] == "leader" and "writes taken" in st.get("failover", "")

    def leaders(self, c):
        return [n for n in c.procs if self.leads(c, n)]

    def acked_keys(self, path):
        if not os.path.exists(path):
            return []
        with open(path) as f:
            return [line.strip() for line in f if line.strip()]

    def load(self, c, nid, acked, seed, follow=False):
        return subprocess.Popen([TESTLOAD, "--endpoint", c.addr[nid], "--batches", "10000000",
                                 "--unique-puts", "--acked-file", acked, "--seed", str(seed)]
                                + (["--follow"] if follow else []),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def assert_all_held(self, c, leader, keys):
        out = c.cli("--node", leader, "scan", "--prefix", "u", "--limit", "10000000").stdout
        held = {line.split("\t")[0] for line in out.splitlines()}
        missing = [k for k in keys if k not in held]
        self.assertEqual(missing, [], f"{len(missing)} acknowledged writes lost")

    def test_the_leader_key_names_the_leader_and_its_epoch(self):
        c = self.cluster()
        key = self.etcd.get("/walship/test/leader")
        self.assertEqual(json.loads(key["value"]),
                         {"node": "n1", "address": c.addr["n1"], "cluster": "test"})
        # The key's create revision is the epoch n1 leads, and every node says so.
        for nid in c.ids:
            st = c.status(nid)
            self.assertEqual(st["epoch"], key["create_revision"], nid)
            self.assertIn(f"leader key held by 'n1' (epoch {key['create_revision']})",
                          st["failover"])
            self.assertIn("lease", st["failover"])
        # A promotion takes the key only when it is free.
        r = c.cli("promote", "n2", check=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("holds the leader key", r.stdout + r.stderr)

    def test_a_killed_leader_is_replaced_and_no_acknowledged_write_is_lost(self):
        c = self.cluster()
        acked = os.path.join(c.dir, "acked")
        load = self.load(c, "n1", acked, 7)
        try:
            wait_until(lambda: len(self.acked_keys(acked)) >= 2000, 120,
                       "2000 acknowledged writes")
            old = self.etcd.get("/walship/test/leader")["create_revision"]
            c.stop("n1", signal.SIGKILL)
            killed = time.monotonic()
            load.communicate(timeout=60)
        finally:
            if load.poll() is None:
                load.kill()
                load.wait()
        leader = wait_until(lambda: (self.leaders(c) or [None])[0], NEW_LEADER_WITHIN_S,
                            "a new leader")
        wait_until(lambda: c.cli("put", "after", "failover", check=False).returncode == 0,
                   NEW_LEADER_WITHIN_S, "a write through the cluster file")
        self.assertLess(time.monotonic() - killed, NEW_LEADER_WITHIN_S)
        key = self.etcd.get("/walship/test/leader")
        self.assertEqual(json.loads(key["value"])["node"], leader)
        self.assertGreater(key["create_revision"], old)
        self.assertEqual(c.status(leader)["epoch"], key["create_revision"])
        keys = self.acked_keys(acked)
        self.assertGreaterEqual(len(keys), 2000)
        self.assert_all_held(c, leader, keys)

        # The old leader comes back as a follower of the new one; the replicas agree.
        c.start("n1")
        wait_until(lambda: self.following(c, "n1", leader), 60, "n1 to follow the new leader")
        self.assertEqual(self.leaders(c), [leader])
        c.wait_converged(60)
        self.assertEqual(c.scan_all("n1"), c.scan_all(leader))
        self.assertEqual(c.scan_all("n2"), c.scan_all("n3"))

    def test_a_leader_cut_off_from_etcd_stops_taking_writes_before_another_leads(self):
        c = self.cluster(start=False, http=True, lease_ttl_s=1, poll_ms=50)
        # n1 reaches etcd only through a proxy that the test cuts; n2 and n3 reach it directly.
        proxy = Blackhole(("127.0.0.1", int(self.etcd.endpoints[0].rsplit(":", 1)[1])))
        self.addCleanup(proxy.close)
        n1_config = os.path.join(c.dir, "n1.toml")
        with open(c.config) as f:
            text = f.read()
        with open(n1_config, "w") as f:
            f.write(text.replace(json.dumps(self.etcd.endpoints), json.dumps([proxy.url])))
        c.start("n1", config=n1_config)
        c.start("n2")
        c.start("n3")
        wait_until(lambda: self.leads(c, "n1"), 30, "n1 to lead")
        wait_until(lambda: all(self.following(c, n) for n in ("n2", "n3")), 30, "followers")

        acked = os.path.join(c.dir, "acked")
        load = self.load(c, "n1", acked, 11)  # stops at n1's first refusal
        wait_until(lambda: len(self.acked_keys(acked)) >= 500, 60, "500 acknowledged writes")
        cut = time.time()
        proxy.cut()
        load.communicate(timeout=30)
        refused = time.time()  # n1 acknowledged its last write before this
        self.assertNotEqual(load.returncode, 0)
        # Within its lease (1 s, with slack for the writer to see the refusal).
        self.assertLess(refused - cut, 1.5, "n1 took writes past its lease")

        leader = wait_until(lambda: next((n for n in ("n2", "n3") if self.leads(c, n)), None),
                            NEW_LEADER_WITHIN_S, "n2 or n3 to lead")
        taken = log_time(c, leader, "this node holds the leader key of epoch")
        self.assertIsNotNone(taken)
        # The new leader took its first write only after n1 had stopped.
        self.assertGreater(taken, refused, "two leaders took writes at once")
        self.assert_all_held(c, leader, self.acked_keys(acked))
        c.cli("--node", leader, "put", "after", "cut")
        # n1 steps down and follows the new leader over the nodes' own network.
        wait_until(lambda: self.following(c, "n1", leader), 30, "n1 to follow")
        c.wait_converged(60)
        self.assertEqual(c.scan_all("n1"), c.scan_all(leader))
        # Health says which node cannot reach etcd; n1 still serves reads.
        status, health = http_get(c, "n1", "/health")
        self.assertEqual(status, 200, health)
        self.assertFalse(health["coordinator_reachable"])
        self.assertIn("unreachable", health["coordinator"])
        self.assertIn("walship_coordinator_reachable 0", http_get(c, "n1", "/metrics")[1])
        self.assertTrue(http_get(c, leader, "/health")[1]["coordinator_reachable"])
        self.assertIn("walship_coordinator_reachable 1", http_get(c, leader, "/metrics")[1])

    def test_etcds_own_leader_killed_under_load_loses_nothing(self):
        c = self.cluster()
        acked = os.path.join(c.dir, "acked")
        loads = [self.load(c, "n1", acked, 13, follow=True)]
        errors = []

        def writing(want):
            # A writer stops at a refusal it cannot follow (writes refused while no node
            # holds the key): another is started, to the node that leads then.
            if loads[-1].poll() is not None:
                errors.append(loads[-1].communicate()[1].strip())
                now = self.leaders(c)
                if now:
                    loads.append(self.load(c, now[0], acked, 13 + len(loads), follow=True))
            return len(self.acked_keys(acked)) >= want
        try:
            wait_until(lambda: writing(1000), 120, "1000 writes")
            victim = self.etcd.leader()
            self.assertIsNotNone(victim)
            self.etcd.kill(victim)
            before = len(self.acked_keys(acked))
            try:
                wait_until(lambda: writing(before + 1000), 60,
                           "1000 more writes after etcd's leader died")
            except AssertionError as e:
                raise AssertionError(f"{e}; writers stopped with: {errors}") from None
        finally:
            for load in loads:
                if load.poll() is None:
                    load.kill()
                    load.wait()
        leader = wait_until(lambda: (self.leaders(c) or [None])[0], NEW_LEADER_WITHIN_S,
                            "a leader")
        self.assert_all_held(c, leader, self.acked_keys(acked))
        c.wait_converged(60)
        self.assertEqual(c.scan_all("n2"), c.scan_all(leader))
        self.assertEqual(c.scan_all("n3"), c.scan_all(leader))

    def test_a_planned_handover_moves_the_key_and_loses_nothing(self):
        c = self.cluster()
        acked = os.path.join(c.dir, "acked")
        load = self.load(c, "n1", acked, 17)
        try:
            wait_until(lambda: len(self.acked_keys(acked)) >= 500, 60, "500 writes")
            before = self.etcd.get("/walship/test/leader")["create_revision"]
            out = c.cli("--node", "n1", "handover", "n2").stdout
            self.assertIn("n2", out)
            load.communicate(timeout=30)  # the writer stops at n1's first refusal
            wait_until(lambda: self.leads(c, "n2"), 10, "n2 to hold the key")
        finally:
            if load.poll() is None:
                load.kill()
                load.wait()
        c.load("n2", 300, seed=18)
        key = self.etcd.get("/walship/test/leader")
        self.assertEqual(json.loads(key["value"])["node"], "n2")
        self.assertGreater(key["create_revision"], before)
        self.assertEqual(c.status("n2")["epoch"], key["create_revision"])
        wait_until(lambda: self.following(c, "n1", "n2"), 30, "n1 to follow n2")
        self.assertEqual(self.leaders(c), ["n2"])
        self.assert_all_held(c, "n2", self.acked_keys(acked))
        c.wait_converged(60)
        self.assertEqual(c.scan_all("n1"), c.scan_all("n2"))

    def test_bad_coordinator_settings_are_named(self):
        c = Cluster(2, name="etcdconf", coordinator={"etcd": self.etcd.endpoints})
        self.addCleanup(c.close)
        with open(c.config) as f:
            text = f.read()
        line = f"etcd = {json.dumps(self.etcd.endpoints)}"
        self.assertIn(line, text)
        for new, want in [
                ('etcd = ["https://127.0.0.1:2379"]', "https is not supported"),
                ('etcd = ["127.0.0.1:2379"]', "must be an etcd client URL"),
                ('etcd = []', "must be a list of etcd client URLs"),
                ('etcd = ["http://127.0.0.1:2379", "http://127.0.0.1:2379"]', "listed twice"),
                (line + "\nbogus = 1", "coordinator.bogus: unknown key"),
                (line + "\nlease_ttl_s = 0", "coordinator.lease_ttl_s: must be an integer"),
                (line + '\nprefix = "walship"', "coordinator.prefix: must be a key prefix"),
                (line + "\ngather_ms = 500\ncandidate_wait_ms = 100", "must be at least gather_ms"),
                ("", "coordinator.etcd: is missing")]:
            path = os.path.join(c.dir, "edited.toml")
            with open(path, "w") as f:
                f.write(text.replace(line, new))
            r = subprocess.run([WALSHIPD, "--config", path, "--node", "n1"], capture_output=True,
                               text=True, timeout=30)
            self.assertEqual(r.returncode, 2, r.stderr)
            self.assertIn(want, r.stderr)


if __name__ == "__main__":
    unittest.main()
