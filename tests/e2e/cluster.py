"""Starts real walshipd processes on 127.0.0.1 and drives them with the real walship CLI.

Every wait is bounded: helpers take a timeout and fail the test when it passes.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import zlib

BIN = os.environ.get("WALSHIP_BIN", os.path.join(os.path.dirname(__file__), "..", "..", "build"))
WALSHIPD = os.path.join(BIN, "tools", "walshipd")
WALSHIP = os.path.join(BIN, "tools", "walship")
# The CLI that the harness's own looks (status(), reachable()) run: WALSHIP_POLL_BIN's, when
# set, else the one under test. scripts/test.sh points it at the plain build for the
# sanitizer run, where a sanitized CLI takes 0.2 s a call (0.04 s plain) and the harness's
# polling took over a quarter of a suite's time; every command a test issues itself still
# runs the CLI under test.
POLL_CLI = os.path.join(os.environ.get("WALSHIP_POLL_BIN", BIN), "tools", "walship")
TESTLOAD = os.path.join(BIN, "tests", "walship-testload")
MAKE_CERTS = os.path.join(os.path.dirname(__file__), "..", "..", "scripts", "make-test-certs.sh")


def make_certs(directory):
    """A throwaway CA and its node and client certificates in `directory`
    (scripts/make-test-certs.sh): ca.crt, node.crt/key, client.crt/key."""
    subprocess.run(["bash", MAKE_CERTS, directory], check=True, timeout=60)
    return directory


def free_ports(n):
    """n distinct free TCP ports on 127.0.0.1 (below the ephemeral range is not needed:
    walshipd listens, it does not connect from these)."""
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def node_state_text(path):
    """The text of a node-state file: its newest whole copy (docs/protocol.md)."""
    with open(path, "rb") as f:
        data = f.read()
    if not data.startswith(b"walship-slots "):
        return data.decode()  # a file of the older, plain text format
    best = None
    half = len(data) // 2
    for slot in (data[:half], data[half:]):
        header, _, rest = slot.partition(b"\n")
        f = header.split(b" ")
        if len(f) != 5 or f[0] != b"walship-slots":
            continue
        generation, length = int(f[2]), int(f[3])
        body = rest[:length]
        crc = zlib.crc32(b"%d %d\n" % (generation, length) + body)
        if crc == int(f[4], 16) and (best is None or generation > best[0]):
            best = (generation, body.decode())
    assert best is not None, f"no whole copy in {path}"
    return best[1]


def append_node_state(path, line):
    """Adds a line to a stopped node's node-state file (written back in the plain text
    format, which a node reads and rewrites as copies at its next save)."""
    text = node_state_text(path) + line
    with open(path, "w") as f:
        f.write(text)


def wait_until(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


class Cluster:
    """A cluster of `n` nodes (n1 leader, the rest followers) in a temp dir."""

    def __init__(self, n=3, name="test", replication=None, nodes=None, http=False,
                 secret=None, log_format=None, advertise=None, tls=None, coordinator=None):
        self.log_format = log_format
        # With coordinator (a dict of [coordinator] keys, etcd among them): etcd chooses the
        # leader.
        self.coordinator = coordinator
        # With tls (a dict of [tls] keys beyond the CA, certificate and server name, maybe
        # empty): every connection uses TLS with a CA made in DIR/certs.
        self.tls = tls
        # node id -> the address the others dial, when it is not the one it listens on
        self.advertise = advertise or {}
        self.dir = tempfile.mkdtemp(prefix="walship-e2e-")
        # With a secret: kept in DIR/secret (owner-only), named by the config.
        self.secret = secret
        self.name = name
        self.ids = [f"n{i + 1}" for i in range(n)]
        ports = free_ports(2 * n if http else n)
        self.addr = {nid: f"127.0.0.1:{p}" for nid, p in zip(self.ids, ports)}
        # With http: each node serves /metrics and the health endpoints here.
        self.http = {nid: f"127.0.0.1:{p}" for nid, p in zip(self.ids, ports[n:])}
        self.procs = {}
        self.logs = {}
        repl = {"heartbeat_interval_ms": 50, "heartbeat_timeout_ms": 1000,
                "reconnect_min_ms": 20, "reconnect_max_ms": 500}
        repl.update(replication or {})
        self.repl = repl
        self.config = os.path.join(self.dir, "cluster.toml")
        if tls is not None:
            make_certs(os.path.join(self.dir, "certs"))
        self.write_config(self.config, name, repl, nodes)

    def write_config(self, path, name, repl, nodes=None, secret=None):
        secret = secret or self.secret
        lines = ["[cluster]", f'name = "{name}"']
        if secret:
            secret_path = path + ".secret"
            fd = os.open(secret_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secret + "\n")
            lines.append(f'secret_file = "{os.path.basename(secret_path)}"')
        if self.log_format:
            lines += ["", "[log]", f'format = "{self.log_format}"']
        if self.tls is not None:
            tls = {"ca_file": "certs/ca.crt", "cert_file": "certs/node.crt",
                   "key_file": "certs/node.key", "server_name": "localhost"}
            tls.update(self.tls)
            lines += ["", "[tls]"] + [
                f"{k} = {str(v).lower() if isinstance(v, bool) else repr(v)}"
                for k, v in tls.items()]
        if self.coordinator is not None:
            lines += ["", "[coordinator]"] + [
                f"{k} = {json.dumps(v)}" for k, v in self.coordinator.items()]
        lines += ["", "[replication]"]
        for k, v in repl.items():
            if isinstance(v, bool):
                v = str(v).lower()
            elif isinstance(v, str):
                v = f'"{v}"'
            lines.append(f"{k} = {v}")
        for i, nid in enumerate(nodes or self.ids):
            lines += ["", "[[node]]", f'id = "{nid}"', f'listen = "{self.addr[nid]}"',
                      f'data_dir = "data/{nid}"',
                      f'role = "{"leader" if i == 0 else "follower"}"']
            if nid in self.http:
                lines.append(f'http_listen = "{self.http[nid]}"')
            if nid in self.advertise:
                lines.append(f'advertise = "{self.advertise[nid]}"')
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")

    def data_dir(self, nid):
        return os.path.join(self.dir, "data", nid)

    def start(self, nid, config=None):
        log = open(os.path.join(self.dir, f"{nid}.log"), "ab")
        self.logs[nid] = log.name
        self.procs[nid] = subprocess.Popen(
            [WALSHIPD, "--config", config or self.config, "--node", nid],
            stdout=log, stderr=log)
        log.close()  # the child has its own descriptor
        wait_until(lambda: self.reachable(nid), 20, f"{nid} to answer")

    def start_added(self, nid):
        """Starts node `nid`, which is not in the config file (walship add-follower adds it),
        on a port of its own; returns its address."""
        if nid not in self.addr:
            self.addr[nid] = f"127.0.0.1:{free_ports(1)[0]}"
        log = open(os.path.join(self.dir, f"{nid}.log"), "ab")
        self.logs[nid] = log.name
        self.procs[nid] = subprocess.Popen(
            [WALSHIPD, "--config", self.config, "--node", nid, "--listen", self.addr[nid],
             "--data-dir", self.data_dir(nid)], stdout=log, stderr=log)
        log.close()
        wait_until(lambda: self.reachable(nid), 20, f"{nid} to answer")
        return self.addr[nid]

    def start_all(self):
        for nid in self.ids:
            self.start(nid)

    def reachable(self, nid):
        if self.procs[nid].poll() is not None:
            raise AssertionError(f"{nid} exited with {self.procs[nid].returncode}:\n"
                                 + self.log(nid))
        return self.cli("--node", nid, "status", check=False, binary=POLL_CLI).returncode == 0

    def log(self, nid):
        with open(self.logs[nid], errors="replace") as f:
            return f.read()

    def stop(self, nid, sig=signal.SIGTERM, timeout=20):
        p = self.procs.pop(nid)
        p.send_signal(sig)
        p.wait(timeout=timeout)
        return p.returncode

    def pause(self, nid):
        self.procs[nid].send_signal(signal.SIGSTOP)

    def resume(self, nid):
        self.procs[nid].send_signal(signal.SIGCONT)

    def close(self):
        for nid, p in list(self.procs.items()):
            p.send_signal(signal.SIGCONT)
            p.kill()
            p.wait(timeout=20)
        self.procs.clear()
        if not os.environ.get("WALSHIP_KEEP_DIR"):
            shutil.rmtree(self.dir, ignore_errors=True)

    def cli(self, *args, input=None, check=True, timeout=30, binary=WALSHIP):
        r = subprocess.run([binary, "--cluster", self.config, *args], input=input,
                           capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"walship {' '.join(args)} failed ({r.returncode}): "
                                 f"{r.stdout}{r.stderr}")
        return r

    def status(self, nid):
        import json
        return json.loads(self.cli("--node", nid, "status", "--json", binary=POLL_CLI).stdout)

    def scan_all(self, nid):
        return self.cli("--node", nid, "scan", "--limit", "100000").stdout

    def load(self, nid, batches, seed, check=True, timeout=300, value_bytes=0, keys=0):
        r = subprocess.run([TESTLOAD, "--endpoint", self.addr[nid], "--batches", str(batches),
                            "--seed", str(seed), "--value-bytes", str(value_bytes)]
                           + (["--keys", str(keys)] if keys else []),
                           capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"testload failed: {r.stdout}{r.stderr}")
        return r

    def load_async(self, nid, batches, seed, follow=False):
        return subprocess.Popen([TESTLOAD, "--endpoint", self.addr[nid], "--batches",
                                 str(batches), "--seed", str(seed)]
                                + (["--follow"] if follow else []),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def leaders(self):
        """The running nodes that say they lead."""
        return [nid for nid in self.procs if self.status(nid)["role"] == "leader"]

    def wait_converged(self, timeout=60):
        """Waits until every running node has the leader's latest sequence number."""
        leader = self.ids[0]

        seqs = {}

        def same():
            seqs.clear()
            try:
                seqs.update({nid: self.status(nid)["latest_seq"] for nid in self.procs})
            except AssertionError:  # a node restarting (seeded from a checkpoint)
                return False
            return len(set(seqs.values())) == 1
        try:
            return wait_until(same, timeout, "all nodes at the leader's sequence")
        except AssertionError as e:
            raise AssertionError(f"{e}: {seqs}\n{self.log_tails()}") from None

    def log_tails(self, chars=2000):
        """The end of each running node's log, for a failure's message."""
        return "\n".join(f"--- {nid}\n{self.log(nid)[-chars:]}" for nid in self.procs)
