"""A real three-member etcd cluster on 127.0.0.1 (Debian's etcd-server), started by a test in
a temp dir with short raft timings (heartbeat 50 ms, election 500 ms: leases of 1 s allowed).
Every wait is bounded."""
import json
import os
import shutil
import signal
import subprocess
import tempfile
import urllib.request

from cluster import free_ports, wait_until

ETCD = shutil.which("etcd") or "/usr/bin/etcd"


class Etcd:
    def __init__(self, members=3):
        self.dir = tempfile.mkdtemp(prefix="walship-etcd-")
        self.names = [f"e{i + 1}" for i in range(members)]
        ports = free_ports(2 * members)
        self.client = {n: f"http://127.0.0.1:{p}" for n, p in zip(self.names, ports)}
        self.peer = {n: f"http://127.0.0.1:{p}" for n, p in zip(self.names, ports[members:])}
        self.procs = {}

    @property
    def endpoints(self):
        return [self.client[n] for n in self.names]

    def start(self, name=None):
        initial = ",".join(f"{n}={self.peer[n]}" for n in self.names)
        for n in [name] if name else self.names:
            log = open(os.path.join(self.dir, f"{n}.log"), "ab")
            self.procs[n] = subprocess.Popen(
                [ETCD, "--name", n, "--data-dir", os.path.join(self.dir, n),
                 "--listen-client-urls", self.client[n], "--advertise-client-urls", self.client[n],
                 "--listen-peer-urls", self.peer[n], "--initial-advertise-peer-urls", self.peer[n],
                 "--initial-cluster", initial,
                 "--initial-cluster-token", os.path.basename(self.dir),
                 "--initial-cluster-state", "new", "--heartbeat-interval", "50",
                 "--election-timeout", "500", "--logger", "zap", "--log-outputs", "stderr"],
                stdout=log, stderr=log)
            log.close()
        wait_until(lambda: self.healthy(), 60, "etcd to elect a leader")

    def call(self, name, path, body, timeout=2):
        req = urllib.request.Request(self.client[name] + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read())

    def status(self, name):
        return self.call(name, "/v3/maintenance/status", {})

    def healthy(self):
        """Whether every running member answers and they agree on a leader."""
        leaders = set()
        for n in self.procs:
            try:
                leaders.add(self.status(n).get("leader"))
            except OSError:
                return False
        return len(leaders) == 1 and None not in leaders

    def leader(self):
        """The name of the member that leads etcd's own raft."""
        for n in self.procs:
            try:
                st = self.status(n)
            except OSError:
                continue
            if st.get("leader") == st["header"]["member_id"]:
                return n
        return None

    def get(self, key):
        import base64
        r = self.call(self.names[0] if self.names[0] in self.procs else next(iter(self.procs)),
                      "/v3/kv/range", {"key": base64.b64encode(key.encode()).decode()})
        kvs = r.get("kvs", [])
        if not kvs:
            return None
        kv = kvs[0]
        return {"value": base64.b64decode(kv["value"]).decode(),
                "create_revision": int(kv["create_revision"])}

    def kill(self, name, sig=signal.SIGKILL):
        p = self.procs.pop(name)
        p.send_signal(sig)
        p.wait(timeout=20)

    def pause_all(self):
        for p in self.procs.values():
            p.send_signal(signal.SIGSTOP)

    def resume_all(self):
        for p in self.procs.values():
            p.send_signal(signal.SIGCONT)

    def close(self):
        for p in self.procs.values():
            p.send_signal(signal.SIGCONT)
            p.kill()
            p.wait(timeout=20)
        self.procs.clear()
        if not os.environ.get("WALSHIP_KEEP_DIR"):
            shutil.rmtree(self.dir, ignore_errors=True)
