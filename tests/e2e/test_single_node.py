"""One real walshipd driven by the real walship CLI."""
import glob
import json
import os
import signal
import subprocess
import time
import unittest

from cluster import Cluster, WALSHIPD, WALSHIP


class SingleNodeTest(unittest.TestCase):
    def setUp(self):
        self.c = Cluster(n=1)
        self.c.start("n1")

    def tearDown(self):
        self.c.close()

    def test_put_get_del_scan_write_status(self):
        c = self.c
        self.assertIn("OK seq 1", c.cli("put", "hello", "world").stdout)
        self.assertEqual(c.cli("get", "hello").stdout, "world\n")
        # Binary keys and values through the escapes.
        c.cli("put", "bin\\x00key", "a\\x00\\xff\\\\b")
        self.assertEqual(c.cli("get", "bin\\x00key").stdout, "a\\x00\\xff\\\\b\n")
        r = c.cli("get", "absent", check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("not found", r.stderr)
        c.cli("del", "hello")
        self.assertEqual(c.cli("get", "hello", check=False).returncode, 1)
        r = c.cli("write", input="put p1 v1\nput p2 v2\n# comment\n\nput q1 v3\ndel p1\n")
        self.assertIn("OK seq", r.stdout)
        self.assertEqual(c.cli("scan", "--prefix", "p").stdout, "p2\tv2\n")
        self.assertEqual(c.cli("scan", "--start", "p", "--limit", "1").stdout, "p2\tv2\n")
        self.assertEqual(c.cli("scan").stdout, "bin\\x00key\ta\\x00\\xff\\\\b\np2\tv2\nq1\tv3\n")
        # --json: the same bytes in the same escapes, with the position read.
        got = json.loads(c.cli("get", "--json", "bin\\x00key").stdout)
        self.assertEqual((got["key"], got["value"], got["epoch"]),
                         ("bin\\x00key", "a\\x00\\xff\\\\b", 1))
        self.assertGreater(got["seq"], 0)
        got = json.loads(c.cli("scan", "--json", "--prefix", "p").stdout)
        self.assertEqual(got["items"], [{"key": "p2", "value": "v2"}])
        st = c.status("n1")
        self.assertEqual(st["node"], "n1")
        self.assertEqual(st["role"], "leader")
        self.assertEqual(st["cluster"], "test")
        self.assertEqual(st["latest_seq"], 7)
        text = c.cli("status").stdout
        self.assertIn("node n1 (leader) of cluster test", text)
        self.assertIn("latest seq 7", text)

    def test_write_batch_is_atomic_and_bad_input_writes_nothing(self):
        c = self.c
        r = c.cli("write", input="put a 1\npt b 2\n", check=False)
        self.assertEqual(r.returncode, 2)
        self.assertIn("stdin:2", r.stderr)
        r = c.cli("put", "k", "bad\\q", check=False)
        self.assertEqual(r.returncode, 2)
        self.assertIn("unknown escape", r.stderr)
        self.assertEqual(c.status("n1")["latest_seq"], 0)
        r = c.cli("write", input="put a 1\nput b 2\ndelrange a b\n")
        self.assertIn("OK seq 3", r.stdout)
        self.assertEqual(c.cli("scan").stdout, "b\t2\n")

    def test_restart_keeps_every_acknowledged_write(self):
        c = self.c
        c.load("n1", 500, seed=11)
        before = c.scan_all("n1")
        seq = c.status("n1")["latest_seq"]

        def ssts():
            return glob.glob(os.path.join(c.data_dir("n1"), "db", "*.sst"))
        self.assertEqual(ssts(), [], "500 small writes fill no 64 MiB memtable")
        self.assertEqual(c.stop("n1"), 0)  # SIGTERM: clean stop
        # A clean stop flushes the memtable, so the next start replays no WAL.
        self.assertNotEqual(ssts(), [], "the clean stop flushed nothing")
        c.start("n1")
        self.assertEqual(c.scan_all("n1"), before)
        self.assertEqual(c.status("n1")["latest_seq"], seq)
        c.load("n1", 300, seed=12)
        before = c.scan_all("n1")
        c.stop("n1", signal.SIGKILL)  # a crash: acknowledged writes are in the WAL
        c.start("n1")
        self.assertEqual(c.scan_all("n1"), before)

    def test_locked_data_dir_is_refused(self):
        r = subprocess.run([WALSHIPD, "--config", self.c.config, "--node", "n1"],
                           capture_output=True, text=True, timeout=30)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("locked by another walshipd", r.stderr)

    def test_unreachable_node_fails_fast(self):
        t = time.monotonic()
        r = subprocess.run([WALSHIP, "--endpoint", "127.0.0.1:9", "--timeout-ms", "1000",
                            "get", "x"], capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 3)
        self.assertIn("127.0.0.1:9", r.stderr)
        self.assertLess(time.monotonic() - t, 10)


class FileLimitTest(unittest.TestCase):
    """At start the node raises its soft descriptor limit to the hard one, and fits its client
    connections within what it can hold."""

    def test_soft_limit_is_raised_and_clients_fit_a_low_limit(self):
        import resource
        c = Cluster(n=1, replication={"max_client_connections": 100000})
        try:
            def low_soft_limit():
                resource.setrlimit(resource.RLIMIT_NOFILE, (64, 600))
            log = open(os.path.join(c.dir, "n1.log"), "ab")
            c.logs["n1"] = log.name
            c.procs["n1"] = subprocess.Popen(
                [WALSHIPD, "--config", c.config, "--node", "n1"], stdout=log, stderr=log,
                preexec_fn=low_soft_limit)
            log.close()
            from cluster import wait_until
            wait_until(lambda: c.reachable("n1"), 20, "n1 to answer")
            with open(f"/proc/{c.procs['n1'].pid}/limits") as f:
                line = next(l for l in f if l.startswith("Max open files"))
            self.assertEqual(line.split()[3:5], ["600", "600"], line)
            self.assertIn("max_client_connections lowered from 100000", c.log("n1"))
            c.cli("put", "k", "v")
        finally:
            c.close()


class BadConfigTest(unittest.TestCase):
    """Each bad config: non-zero exit, one line naming file, line and key; data untouched."""

    GOOD = ('[cluster]\nname = "x"\n\n[[node]]\nid = "n1"\nlisten = "127.0.0.1:{p1}"\n'
            'data_dir = "d1"\nrole = "leader"\n\n[[node]]\nid = "n2"\n'
            'listen = "127.0.0.1:{p2}"\ndata_dir = "d2"\nrole = "follower"\n')

    def setUp(self):
        import tempfile
        self.dir = tempfile.mkdtemp(prefix="walship-badcfg-")

    def tearDown(self):
        import shutil
        shutil.rmtree(self.dir, ignore_errors=True)

    def check(self, text, line, key, node="n1", contains=None):
        path = os.path.join(self.dir, "bad.toml")
        with open(path, "w") as f:
            f.write(text)
        r = subprocess.run([WALSHIPD, "--config", path, "--node", node], capture_output=True,
                           text=True, timeout=30)
        self.assertNotEqual(r.returncode, 0, r.stderr)
        lines = [l for l in r.stderr.splitlines() if l.strip()]
        self.assertEqual(len(lines), 1, r.stderr)
        msg = lines[0]
        self.assertIn(path + (f":{line}:" if line else ":"), msg)
        self.assertIn(key, msg)
        if contains:
            self.assertIn(contains, msg)
        self.assertEqual(sorted(os.listdir(self.dir)), ["bad.toml"], "data dir was touched")

    def good(self):
        return self.GOOD.format(p1=17101, p2=17102)

    @staticmethod
    def config_check(*args):
        return subprocess.run([WALSHIP, "config", "check", *args], capture_output=True,
                              text=True, timeout=30)

    def test_unknown_key(self):
        self.check(self.good().replace('role = "leader"', 'role = "leader"\ncolour = "red"'),
                   9, "node[1].colour", contains="unknown key")

    def test_wrong_type(self):
        self.check(self.good().replace('listen = "127.0.0.1:17101"', "listen = 7101"),
                   6, "node[1].listen", contains="must be a string")

    def test_wrong_type_tunable(self):
        self.check(self.good().replace('[[node]]', '[replication]\nheartbeat_interval_ms = "x"\n'
                                       '\n[[node]]', 1), 5, "replication.heartbeat_interval_ms")

    def test_tunable_out_of_range(self):
        for key in ("max_ship_hold_us", "min_ship_interval_us"):
            self.check(self.good().replace('[[node]]', f'[replication]\n{key} = 2000000\n'
                                           '\n[[node]]', 1), 5, f"replication.{key}",
                       contains="out of range [0, 1000000]")

    def test_id_with_a_space(self):
        # A node id is written into epoch histories, one word per field.
        self.check(self.good().replace('id = "n2"', 'id = "n 2"'), 11, "node[2].id",
                   contains="letters, digits")

    def test_duplicate_id(self):
        self.check(self.good().replace('id = "n2"', 'id = "n1"'), 11, "node[2].id",
                   contains="duplicate")

    def test_bad_http_listen(self):
        with_http = self.good().replace('role = "leader"', 'role = "leader"\nhttp_listen = "{}"')
        self.check(with_http.format("127.0.0.1"), 9, "node[1].http_listen",
                   contains="is not host:port")
        self.check(with_http.format("127.0.0.1:17101"), 9, "node[1].http_listen",
                   contains="listen address too")
        self.check(with_http.format("127.0.0.1:17102"), 13, "node[2].listen",
                   contains="duplicate listen address 127.0.0.1:17102 (also node n1)")
        both = with_http.format("127.0.0.1:18101").replace(
            'role = "follower"', 'role = "follower"\nhttp_listen = "127.0.0.1:18101"')
        self.check(both, 16, "node[2].http_listen", contains="duplicate address")

    def test_config_check_says_what_walshipd_would_run_or_what_is_wrong(self):
        path = os.path.join(self.dir, "cluster.toml")
        open_to_all = self.good().replace(
            'listen = "127.0.0.1:17102"',
            'listen = "0.0.0.0:17102"\nadvertise = "127.0.0.1:17102"')
        with open(path, "w") as f:
            f.write(open_to_all.replace('role = "leader"',
                                        'role = "leader"\nhttp_listen = "127.0.0.1:18101"'))
        r = self.config_check(path)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("cluster x, 2 node(s), replication async", r.stdout)
        self.assertIn("secret: none", r.stdout)
        self.assertIn("tls: none", r.stdout)
        self.assertIn("n1 (leader) 127.0.0.1:17101, http 127.0.0.1:18101", r.stdout)
        self.assertIn("WARNING: node n2 listens on 0.0.0.0:17102 without a cluster secret",
                      r.stdout)
        with open(path, "w") as f:  # a host name is not loopback, whatever it begins with
            f.write(open_to_all.replace("127.0.0.1:17101", "127.example.com:17101"))
        r = self.config_check(path)
        self.assertIn("WARNING: node n1 listens on 127.example.com:17101", r.stdout)
        with open(path, "w") as f:
            f.write(open_to_all)
        r = self.config_check("--json", path)
        checked = json.loads(r.stdout)
        self.assertEqual([n["id"] for n in checked["nodes"]], ["n1", "n2"])
        # Open beyond loopback: without TLS, and without a secret.
        self.assertEqual(len(checked["warnings"]), 2, checked["warnings"])
        self.assertIn("node n2 listens on 0.0.0.0:17102 without TLS", checked["warnings"][0])
        self.assertIsNone(checked["tls"])
        # The same one-line error walshipd gives, exit 2, and nothing created.
        with open(path, "w") as f:
            f.write(self.good().replace("17102", "17101"))
        r = self.config_check(path)
        self.assertEqual(r.returncode, 2, r.stdout)
        self.assertIn(f"{path}:12: node[2].listen: duplicate listen address", r.stderr)
        self.assertEqual(sorted(os.listdir(self.dir)), ["cluster.toml"])

    def test_a_wildcard_listen_needs_an_advertise_address(self):
        wild = self.good().replace("127.0.0.1:17101", "0.0.0.0:17101")
        self.check(wild, 6, "node[1].listen", contains="wildcard nobody can dial")
        self.check(wild.replace('role = "leader"', 'role = "leader"\nadvertise = "0.0.0.0:1"'),
                   9, "node[1].advertise", contains="is a wildcard")
        self.check(self.good().replace('role = "follower"',
                                       'role = "follower"\nadvertise = "127.0.0.1:17101"'),
                   15, "node[2].advertise", contains="duplicate advertise address")
        path = os.path.join(self.dir, "cluster.toml")
        with open(path, "w") as f:
            f.write(wild.replace('role = "leader"',
                                 'role = "leader"\nadvertise = "127.0.0.1:17101"'))
        r = self.config_check(path)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("n1 (leader) 0.0.0.0:17101 (dialled at 127.0.0.1:17101)", r.stdout)
        self.assertIn("WARNING: node n1 listens on 0.0.0.0:17101 without a cluster secret",
                      r.stdout)

    def test_bad_secret(self):
        def with_cluster(line):
            return self.good().replace('name = "x"', f'name = "x"\n{line}')
        self.check(with_cluster('secret = "short"'), 3, "cluster.secret",
                   contains="holds 5 bytes; a cluster secret needs at least 16")
        self.check(with_cluster('secret = "long-enough-secret-0123"'), 3, "cluster.secret",
                   contains="may be read by others (mode 0644)")
        self.check(with_cluster('secret = "long-enough-secret-0123"\nsecret_file = "/x"'), 4,
                   "cluster.secret_file", contains="not both")
        import tempfile
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "secret")
            self.check(with_cluster(f'secret_file = "{path}"'), 3, "cluster.secret_file",
                       contains="cannot read")
            with open(path, "w") as f:
                f.write("long-enough-secret-0123\n")
            os.chmod(path, 0o640)
            self.check(with_cluster(f'secret_file = "{path}"'), 3, "cluster.secret_file",
                       contains="chmod 600")
            os.chmod(path, 0o600)
            with open(path, "w") as f:
                f.write("line one of enough bytes\nline two\n")
            self.check(with_cluster(f'secret_file = "{path}"'), 3, "cluster.secret_file",
                       contains="more than one line")

    def test_duplicate_listen(self):
        self.check(self.good().replace("17102", "17101"), 12, "node[2].listen",
                   contains="duplicate listen address")

    def test_missing_required_key(self):
        self.check(self.good().replace('data_dir = "d2"\n', ""), 10, "node[2].data_dir",
                   contains="missing")

    def test_missing_cluster_name(self):
        self.check(self.good().replace('name = "x"\n', ""), 1, "cluster.name",
                   contains="missing")

    def test_node_not_in_file(self):
        self.check(self.good(), None, "node.id", node="n9", contains="n9")

    def test_two_leaders(self):
        self.check(self.good().replace('role = "follower"', 'role = "leader"'), 14,
                   "node[2].role", contains="second leader")

    def test_no_leader(self):
        self.check(self.good().replace('role = "leader"', 'role = "follower"'), None,
                   "leader")

    def test_ack_delay_too_long_for_the_heartbeat_timeout(self):
        self.check(self.good().replace('[[node]]', '[replication]\nack_delay_us = 600000\n'
                                       'heartbeat_timeout_ms = 2000\n\n[[node]]', 1),
                   None, "ack_delay_us", contains="heartbeat_timeout_ms")

    def test_syntax_error(self):
        self.check(self.good().replace('name = "x"', 'name = "x'), 2, "syntax")


if __name__ == "__main__":
    unittest.main()
