"""Watching a cluster: /metrics in Prometheus' text format and the health endpoints for load
balancers, scraped from real walshipd processes on 127.0.0.1 in each role."""
import json
import os
import re
import socket
import subprocess
import threading
import unittest
import urllib.error
import urllib.request

from cluster import WALSHIP, WALSHIPD, Cluster, wait_until

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
SAMPLE = re.compile(rf"({NAME})(\{{{LABEL}(?:,{LABEL})*\}})? (-?[0-9.e+-]+|NaN|\+Inf)")


def parse_exposition(text):
    """The samples of a Prometheus text exposition as {series: value}, checked strictly:
    every line a HELP, a TYPE or a sample of a family whose TYPE came first; no series twice;
    every histogram's buckets cumulative and ending in +Inf at its count."""
    types, samples = {}, {}
    assert text.endswith("\n"), "the exposition ends with a newline"
    for line in text.splitlines():
        if line.startswith("# HELP "):
            assert re.fullmatch(rf"# HELP {NAME} .+", line), line
            continue
        if line.startswith("# TYPE "):
            m = re.fullmatch(rf"# TYPE ({NAME}) (counter|gauge|histogram)", line)
            assert m, line
            assert m[1] not in types, f"{m[1]} declared twice"
            types[m[1]] = m[2]
            continue
        m = SAMPLE.fullmatch(line)
        assert m, f"not the exposition format: {line!r}"
        name = m[1]
        family = name
        for suffix in ("_bucket", "_sum", "_count"):
            base = name[:-len(suffix)]
            if name.endswith(suffix) and types.get(base) == "histogram":
                family = base
        assert family in types, f"sample before its TYPE: {line}"
        series = name + (m[2] or "")
        assert series not in samples, f"{series} twice"
        samples[series] = float(m[3])
    for family, kind in types.items():
        if kind != "histogram":
            continue
        by_labels = {}
        for series, v in samples.items():
            if series.startswith(family + "_bucket"):
                labels = re.sub(r',?le="[^"]*"', "", series[len(family + "_bucket"):])
                le = re.search(r'le="([^"]*)"', series)[1]
                by_labels.setdefault(labels.replace("{}", ""), []).append(
                    (float("inf") if le == "+Inf" else float(le), v))
        for labels, buckets in by_labels.items():
            buckets.sort()
            counts = [v for _, v in buckets]
            assert counts == sorted(counts), f"{family}{labels} buckets not cumulative"
            assert buckets[-1][0] == float("inf"), f"{family}{labels} has no +Inf bucket"
            assert counts[-1] == samples[f"{family}_count{labels}"], f"{family}{labels}"
    return types, samples


class OperationsTest(unittest.TestCase):
    def setUp(self):
        self.c = Cluster(3, name="ops", http=True)
        self.c.start_all()

    def tearDown(self):
        self.c.close()

    def get(self, nid, path, method="GET"):
        """(status, body) of an HTTP request to node nid's HTTP port."""
        req = urllib.request.Request(f"http://{self.c.http[nid]}{path}", method=method)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, r.read().decode(), r.headers
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(), e.headers

    def scrape(self, nid):
        status, body, headers = self.get(nid, "/metrics")
        self.assertEqual(status, 200, body)
        self.assertTrue(headers["Content-Type"].startswith("text/plain; version=0.0.4"))
        return parse_exposition(body)

    def test_metrics_parse_on_every_node_and_count_what_happened(self):
        c = self.c
        for i in range(20):
            c.cli("put", f"k{i}", "v")
        c.cli("--node", "n2", "get", "k1")
        c.cli("--node", "n2", "get", "absent", check=False)
        c.wait_converged()
        latest = c.status("n1")["latest_seq"]

        types, leader = self.scrape("n1")
        self.assertEqual(leader['walship_role{role="leader"}'], 1)
        self.assertEqual(leader['walship_role{role="follower"}'], 0)
        self.assertEqual(leader["walship_latest_sequence"], latest)
        self.assertEqual(leader['walship_writes_total{result="ok"}'], 20)
        self.assertEqual(leader["walship_write_latency_seconds_count"], 20)
        self.assertEqual(types["walship_replication_lag_seconds"], "gauge")
        for f in ("n2", "n3"):
            self.assertEqual(leader[f'walship_follower_up{{follower="{f}"}}'], 1)
            self.assertEqual(leader[f'walship_follower_applied_sequence{{follower="{f}"}}'],
                             latest)
            self.assertEqual(leader[f'walship_replication_lag_sequences{{follower="{f}"}}'], 0)
            self.assertGreaterEqual(leader[f'walship_shipped_batches_total{{follower="{f}"}}'],
                                    20)
            self.assertGreater(
                leader[f'walship_replication_latency_seconds_count{{follower="{f}"}}'], 0)
        self.assertIn("walship_rocksdb_pending_compaction_bytes", leader)

        _, follower = self.scrape("n2")
        self.assertEqual(follower['walship_role{role="follower"}'], 1)
        self.assertEqual(follower["walship_applied_sequence"], latest)
        self.assertEqual(follower['walship_reads_total{result="ok"}'], 1)
        self.assertEqual(follower['walship_reads_total{result="notFound"}'], 1)
        self.assertEqual(follower['walship_writes_total{result="ok"}'], 0)
        self.assertEqual(follower["walship_read_latency_seconds_count"], 2)
        self.assertNotIn('walship_replication_lag_seconds{follower="n3"}', follower)

    def test_top_shows_every_node_with_its_role_lag_and_the_write_rate(self):
        c = self.c
        load = c.load_async("n1", 3000, seed=7)
        try:
            r = c.cli("top", "--iterations", "3", "--interval-ms", "300", timeout=60)
        finally:
            load.communicate(timeout=120)
        views = [v for v in r.stdout.split("\n\n") if v.strip()]
        self.assertEqual(len(views), 3, r.stdout)
        self.assertNotIn("\x1b", r.stdout)  # not a terminal: no screen control
        last = views[-1].splitlines()
        self.assertIn("cluster ops, every 300 ms", last[0])
        rows = {line.split()[0]: line.split() for line in last[2:]}
        self.assertEqual(rows["n1"][1], "leader")
        self.assertEqual((rows["n2"][1], rows["n3"][1]), ("follower", "follower"))
        for f in ("n2", "n3"):
            self.assertRegex(rows[f][6], r"^\[#*\.*\]$")  # the lag bar
        # The leader's write rate from the second view on (the load was writing).
        rates = [v.splitlines()[2].split() for v in views[1:]]
        self.assertTrue(any(len(row) > 5 and float(row[-2]) > 0 for row in rates), r.stdout)

    def test_health_endpoints_answer_by_role_and_lag(self):
        c = self.c

        def code(nid, path, method="GET"):
            return self.get(nid, path, method)[0]

        wait_until(lambda: code("n2", "/replica?lag=1") == 200, 20, "n2 within 1 s")
        wait_until(lambda: code("n3", "/replica?lag=1") == 200, 20, "n3 within 1 s")
        self.assertEqual([code(n, "/leader") for n in c.ids], [200, 503, 503])
        self.assertEqual([code(n, "/replica") for n in c.ids], [503, 200, 200])
        self.assertEqual([code(n, "/health") for n in c.ids], [200, 200, 200])
        self.assertEqual([code(n, "/leader", "HEAD") for n in c.ids], [200, 503, 503])
        status, body, _ = self.get("n2", "/leader")
        answer = json.loads(body)
        self.assertEqual((answer["role"], answer["node"]), ("follower", "n2"))
        self.assertEqual(answer["leader_address"], c.addr["n1"])
        self.assertIn("follower", answer["reason"])
        self.assertEqual(code("n2", "/replica?lag=soon"), 400)
        self.assertEqual(code("n2", "/nothing"), 404)
        self.assertEqual(code("n2", "/health", "POST"), 405)

        # The roles change at run time and the endpoints follow them.
        c.cli("--node", "n1", "handover", "n2", timeout=60)
        wait_until(lambda: code("n2", "/leader") == 200, 20, "n2 to answer /leader")
        self.assertEqual(code("n1", "/leader"), 503)
        wait_until(lambda: code("n1", "/replica?lag=1") == 200, 20, "n1 to follow n2")
        self.assertEqual(json.loads(self.get("n1", "/replica")[1])["epoch"],
                         json.loads(self.get("n2", "/leader")[1])["epoch"])

        # A follower whose leader falls silent stays a replica, but not one within 0.3 s.
        c.pause("n2")
        try:
            wait_until(lambda: code("n1", "/replica?lag=0.3") == 503, 20,
                       "n1 to be past 0.3 s of lag")
            status, body, _ = self.get("n1", "/replica?lag=0.3")
            self.assertIn("caught up", json.loads(body)["reason"])
            self.assertEqual(code("n1", "/replica"), 200)
            self.assertEqual(code("n1", "/health"), 200)
        finally:
            c.resume("n2")
        wait_until(lambda: code("n1", "/replica?lag=0.3") == 200, 20, "n1 caught up again")



SECRET = "s3cret-of-the-test-cluster-0123456789"


class SecretTest(unittest.TestCase):
    """A cluster with a secret: every connection proves it before anything is served."""

    def setUp(self):
        self.c = Cluster(3, name="locked", secret=SECRET)
        self.c.start_all()

    def tearDown(self):
        self.c.close()

    def raw(self, nid, payload, want):
        """Sends payload on a fresh connection to nid; returns up to `want` bytes answered
        before the node closed it (bounded by a 10 s time-out)."""
        host, port = self.c.addr[nid].split(":")
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(payload)
            got = b""
            while len(got) < want:
                chunk = s.recv(want - len(got))
                if not chunk:
                    break
                got += chunk
            return got

    def test_nodes_and_clients_that_share_the_secret_work_and_no_one_else_is_served(self):
        c = self.c
        for i in range(30):
            c.cli("put", f"k{i}", f"v{i}")
        c.wait_converged()
        self.assertEqual(c.scan_all("n1"), c.scan_all("n3"))
        self.assertEqual(c.cli("--node", "n2", "get", "k7").stdout, "v7\n")

        # A client without the secret is answered `unauthenticated`, and served nothing.
        r = subprocess.run([WALSHIP, "--endpoint", c.addr["n1"], "get", "k7"],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 3, r.stderr)
        self.assertIn("requires the cluster secret", r.stderr)
        self.assertNotIn("v7", r.stdout)
        r = subprocess.run([WALSHIP, "--endpoint", c.addr["n1"], "put", "intruder", "1"],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 3, r.stderr)

        # One with another secret learns the node does not share it, before sending anything.
        wrong = os.path.join(c.dir, "wrong.secret")
        fd = os.open(wrong, os.O_WRONLY | os.O_CREAT, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("not-the-secret-of-this-cluster\n")
        r = subprocess.run([WALSHIP, "--endpoint", c.addr["n2"], "--secret-file", wrong, "get",
                            "k7"], capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 3, r.stderr)
        self.assertIn("does not know the cluster secret", r.stderr)
        # The right one, given by file to --endpoint, works.
        right = c.config + ".secret"
        r = subprocess.run([WALSHIP, "--endpoint", c.addr["n2"], "--secret-file", right, "get",
                            "k7"], capture_output=True, text=True, timeout=30)
        self.assertEqual((r.returncode, r.stdout), (0, "v7\n"), r.stderr)
        # A readable secret file is refused before anything is sent.
        os.chmod(wrong, 0o644)
        r = subprocess.run([WALSHIP, "--endpoint", c.addr["n2"], "--secret-file", wrong, "get",
                            "k7"], capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("chmod 600", r.stderr)

        # A made-up peer speaking Cap'n Proto RPC at once is closed without an answer; a
        # forged proof is refused (verdict 2) and closed.
        self.assertEqual(self.raw("n1", b"\x00" * 64, 1), b"")
        hello = b"WALSHIPA\x01" + os.urandom(32)
        answer = self.raw("n1", hello + os.urandom(32), 66)
        self.assertEqual(len(answer), 66, answer)
        self.assertEqual(answer[0], 0)   # the node's challenge ...
        self.assertEqual(answer[65], 2)  # ... and its verdict on the forged proof
        wait_until(lambda: c.status("n1")["auth_failures"] >= 4, 10,
                   "the refusals to be counted")
        self.assertEqual(c.scan_all("n1"), c.scan_all("n2"))  # nothing was written by them

    def test_a_node_with_another_secret_cannot_follow_until_it_has_the_right_one(self):
        c = self.c
        c.stop("n3")
        other = os.path.join(c.dir, "other.toml")
        c.write_config(other, c.name, c.repl, secret="a-different-secret-0123456789")
        log_path = os.path.join(c.dir, "n3-other.log")
        with open(log_path, "wb") as log:
            c.procs["n3"] = subprocess.Popen([WALSHIPD, "--config", other, "--node", "n3"],
                                             stdout=log, stderr=subprocess.STDOUT)

        def n3_log():
            with open(log_path, errors="replace") as f:
                return f.read()

        for i in range(20):
            c.cli("put", f"while-locked-out-{i}", "x")
        # The leader refuses it and counts it; n3 says why in its log.
        wait_until(lambda: c.status("n1")["auth_failures"] > 0, 20, "n1 to refuse n3")
        followers = {f["id"]: f for f in c.status("n1")["followers"]}
        self.assertNotEqual(followers["n3"]["state"], "connected")
        wait_until(lambda: "does not know the cluster secret" in n3_log(), 20, "n3 to say why")
        locked_out = c.procs.pop("n3")
        locked_out.kill()
        locked_out.wait(timeout=20)
        # With the cluster's secret it follows and catches up.
        c.start("n3")
        c.wait_converged()
        self.assertEqual(c.scan_all("n1"), c.scan_all("n3"))


class LogFormatTest(unittest.TestCase):
    def test_json_logs_are_one_object_per_line_with_node_and_role(self):
        c = Cluster(2, name="logs", log_format="json")
        try:
            c.start_all()
            c.cli("put", "k", "v")
            # A client speaking another version of the protocol is logged with the bytes it
            # sent (at most one such line a second): a quote, a backslash, a control byte and
            # a byte that is not UTF-8, which the JSON must escape.
            def refused_and_logged(odd, before):
                host, port = c.addr["n1"].split(":")
                with socket.create_connection((host, int(port)), timeout=10) as s:
                    s.sendall(odd)
                    self.assertEqual(s.recv(1), b"")  # refused and closed
                with open(c.logs["n1"], "rb") as f:
                    return f.read().count(b"speaking protocol") > before
            for i, odd in enumerate((b'WALSHIP"', b"WALSHIP\\", b"WALSHIP\x01", b"WALSHIP\xff")):
                # Sent again until the once-a-second bound lets its line through.
                wait_until(lambda: refused_and_logged(odd, i), 10,
                           f"the refusal of {odd!r} to be logged")
            c.cli("--node", "n1", "handover", "n2", timeout=60)
            wait_until(lambda: c.status("n1")["role"] == "follower", 20, "n1 to follow")
            c.stop("n1")
            with open(c.logs["n1"], errors="strict") as f:
                lines = [line for line in f.read().splitlines() if line.strip()]
            records = [json.loads(line) for line in lines]  # every line is one JSON object
            self.assertGreater(len(records), 3)
            for r in records:
                self.assertEqual(set(r), {"ts", "level", "node", "role", "msg"}, r)
                self.assertEqual(r["node"], "n1")
                self.assertIn(r["level"], ("debug", "info", "warning", "error", "critical"))
            roles = [r["role"] for r in records]
            # The role a line names is the one held when it was written: n1 led, then followed.
            self.assertIn("leader", roles)
            self.assertEqual(roles[-1], "follower")
            self.assertEqual(roles[0], "starting")
            self.assertTrue(any("stopped at seq" in r["msg"] for r in records))
            odd = [r["msg"] for r in records if "speaking protocol" in r["msg"]]
            self.assertEqual(odd, [f"refused a client speaking protocol '{p}'; this node speaks "
                                   "'WALSHIP1'" for p in ('WALSHIP"', "WALSHIP\\", "WALSHIP\x01",
                                                          "WALSHIP\xff")])
        finally:
            c.close()

    def test_text_logs_name_the_node_and_its_role(self):
        c = Cluster(1, name="logs")
        try:
            c.start_all()
            c.stop("n1")
            with open(c.logs["n1"], errors="replace") as f:
                text = f.read()
            self.assertRegex(text, r"\[n1 leader\] node 'n1' stopped at seq")
        finally:
            c.close()


class Proxy:
    """A TCP relay on 127.0.0.2 to a node's 127.0.0.1 address: the address a node advertises
    when others reach it through a proxy or NAT. Counts the connections it relayed."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.2", 0))
        self.sock.listen(64)
        self.address = f"127.0.0.2:{self.sock.getsockname()[1]}"
        self.target = None
        self.relayed = 0
        self.closing = False
        self.open = []  # the relayed connections' sockets
        self.lock = threading.Lock()  # closing and open change together

    def start(self, target):
        self.target = target
        threading.Thread(target=self.accept_loop, daemon=True).start()

    def accept_loop(self):
        while not self.closing:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            host, port = self.target.split(":")
            try:
                upstream = socket.create_connection((host, int(port)), timeout=5)
            except OSError:
                conn.close()
                continue
            upstream.settimeout(None)
            with self.lock:
                if self.closing:  # an accept that was under way when the proxy closed
                    conn.close()
                    upstream.close()
                    return
                self.relayed += 1
                self.open += [conn, upstream]
            for a, b in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=self.pump, args=(a, b), daemon=True).start()

    @staticmethod
    def pump(src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        """Stops relaying: new connections are refused and open ones are cut."""
        with self.lock:
            self.closing = True
        self.sock.close()
        for s in self.open:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


class AdvertiseTest(unittest.TestCase):
    def test_nodes_and_clients_dial_the_advertised_addresses(self):
        proxies = {nid: Proxy() for nid in ("n1", "n2", "n3")}
        c = Cluster(3, name="behind-proxies",
                    advertise={nid: p.address for nid, p in proxies.items()})
        try:
            for nid, p in proxies.items():
                p.start(c.addr[nid])
            c.start_all()
            for i in range(20):
                c.cli("put", f"k{i}", "v")
            c.wait_converged()
            self.assertEqual(c.scan_all("n1"), c.scan_all("n3"))
            # Followers subscribed to the leader through its proxy, and the leader's
            # heartbeats reached each follower through theirs.
            for nid, p in proxies.items():
                self.assertGreater(p.relayed, 0, nid)
            members = {m["id"]: m["address"] for m in c.status("n2")["members"]}
            self.assertEqual(members, {nid: p.address for nid, p in proxies.items()})
            followers = {f["id"]: f["state"] for f in c.status("n1")["followers"]}
            self.assertEqual(followers, {"n2": "connected", "n3": "connected"})
            # Cut the leader's advertised address: its followers reached it only there, so
            # they lose it, though its listen address still answers (the CLI's status below
            # goes to the listen address directly).
            proxies["n1"].close()

            def followers_of_n1():
                r = subprocess.run([WALSHIP, "--endpoint", c.addr["n1"], "status", "--json"],
                                   capture_output=True, text=True, timeout=30)
                return {f["id"]: f["state"] for f in json.loads(r.stdout)["followers"]}
            wait_until(lambda: "connected" not in followers_of_n1().values(), 20,
                       "n2 and n3 to lose the leader they reached through its proxy")
        finally:
            c.close()
            for p in proxies.values():
                p.close()


if __name__ == "__main__":
    unittest.main()
