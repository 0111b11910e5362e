"""Hosts for the fault suite: one network namespace per node and one for the clients, joined
by a bridge in a namespace of its own, so that nothing outside the namespaces this creates is
touched. Faults on the network are iptables rules inside a node's namespace (a chain of
their own, flushed to heal) and the delay proxy (proxy.py). Addresses are 10.213.0.0/24,
which exists only inside these namespaces."""
import json
import os
import subprocess

SUBNET = "10.213.0"
CLIENT_IP = f"{SUBNET}.100"
PORT = 7000
PROXY_PORT = 7100


def sh(*args, check=True):
    r = subprocess.run(list(args), capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {r.stderr.strip() or r.returncode}")
    return r


def available():
    """Why namespaces cannot be used here, or ''."""
    if os.geteuid() != 0:
        return "not root"
    for tool in ("ip", "iptables"):
        if subprocess.run(["which", tool], capture_output=True).returncode != 0:
            return f"{tool} is not installed"
    name = f"wsf-probe-{os.getpid()}"
    r = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if r.returncode != 0:
        return f"ip netns add failed: {r.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return ""


class Network:
    def __init__(self, ids, workdir):
        self.tag = f"wsf{os.getpid() % 100000}"
        self.ids = ids
        self.dir = workdir
        self.ip = {nid: f"{SUBNET}.{11 + i}" for i, nid in enumerate(ids)}
        self.ns = {nid: f"{self.tag}-{nid}" for nid in ids}
        self.ns["client"] = f"{self.tag}-c"
        self.switch = f"{self.tag}-sw"
        self.proxies = {}
        self.delay = {nid: {} for nid in ids}

    def address(self, nid):
        return f"{self.ip[nid]}:{PORT}"

    def up(self):
        sh("ip", "netns", "add", self.switch)
        sh("ip", "-n", self.switch, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", self.switch, "link", "set", "br0", "up")
        hosts = dict(self.ip, client=CLIENT_IP)
        for i, (name, ip) in enumerate(hosts.items()):
            ns = self.ns[name]
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", self.switch, "link", "add", f"p{i}", "type", "veth", "peer", "name",
               "eth0", "netns", ns)
            sh("ip", "-n", self.switch, "link", "set", f"p{i}", "master", "br0", "up")
            sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
        for nid in self.ids:
            self.iptables(nid, "-N", "FAULTS")
            self.iptables(nid, "-I", "INPUT", "-j", "FAULTS")
            self.iptables(nid, "-I", "OUTPUT", "-j", "FAULTS")
            # Peers reach the node through the delay proxy; clients directly.
            self.iptables(nid, "-t", "nat", "-A", "PREROUTING", "-p", "tcp", "-d",
                          self.ip[nid], "--dport", str(PORT), "!", "-s", CLIENT_IP, "-j",
                          "REDIRECT", "--to-ports", str(PROXY_PORT))
            self.write_delay(nid)
            log = open(os.path.join(self.dir, f"proxy-{nid}.log"), "ab")
            self.proxies[nid] = subprocess.Popen(
                self.exec_in(nid) + ["python3", os.path.join(os.path.dirname(__file__),
                                                             "proxy.py"),
                                     f"{self.ip[nid]}:{PROXY_PORT}", self.address(nid),
                                     self.delay_file(nid)], stdout=log, stderr=log)
            log.close()

    def down(self):
        for p in self.proxies.values():
            p.kill()
            p.wait()
        for ns in list(self.ns.values()) + [self.switch]:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)

    def exec_in(self, name):
        return ["ip", "netns", "exec", self.ns[name]]

    def iptables(self, nid, *args):
        sh(*self.exec_in(nid), "iptables", "-w", *args)

    def delay_file(self, nid):
        return os.path.join(self.dir, f"delay-{nid}.json")

    def write_delay(self, nid):
        tmp = self.delay_file(nid) + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.delay[nid], f)
        os.replace(tmp, self.delay_file(nid))

    # Faults. Each is undone by heal().
    def isolate(self, nid):
        """Nothing in or out of `nid`'s interface: cut from its peers and the clients."""
        self.iptables(nid, "-A", "FAULTS", "-i", "eth0", "-j", "DROP")
        self.iptables(nid, "-A", "FAULTS", "-o", "eth0", "-j", "DROP")

    def cut(self, a, b, one_way=False):
        """`b` hears nothing from `a`; unless one_way, `a` hears nothing from `b` either."""
        self.iptables(b, "-A", "FAULTS", "-s", self.ip[a], "-j", "DROP")
        if not one_way:
            self.iptables(a, "-A", "FAULTS", "-s", self.ip[b], "-j", "DROP")

    def lose(self, nid, probability):
        """`nid` drops this share of the packets that reach it, at random."""
        self.iptables(nid, "-A", "FAULTS", "-i", "eth0", "-m", "statistic", "--mode",
                      "random", "--probability", f"{probability:.2f}", "-j", "DROP")

    def slow(self, nid, from_nid, ms):
        """Connections from `from_nid` into `nid` carry `ms` of delay each way."""
        self.delay[nid][self.ip[from_nid]] = ms
        self.write_delay(nid)

    def heal(self):
        for nid in self.ids:
            self.iptables(nid, "-F", "FAULTS")
            if self.delay[nid]:
                self.delay[nid] = {}
                self.write_delay(nid)
