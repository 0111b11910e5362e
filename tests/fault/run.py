"""The fault suite: a three-node walship cluster of real processes, each in a network
namespace of its own, under a seeded sequence of faults while walship-faultload writes and
reads from the clients' namespace; then every fault is healed, the cluster must converge, and
the checker (checker.py) reads the history (docs/fault-testing.md).

    python3 run.py --seconds 60 --seed 1        # the short run in the test command
    scripts/soak.sh MINUTES                       # the long one

Prints a table of the faults injected by kind and what the checker found. Exits 1 on any
finding, keeping the run's directory (history, faults, logs, the final contents) and naming
it with the seed to run again. Without namespaces (not root, no iproute2) it says so and
runs the faults that need none on 127.0.0.1.
"""
import argparse
import collections
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import checker
import net

BIN = os.environ.get("WALSHIP_BIN", os.path.join(os.path.dirname(__file__), "..", "..", "build"))
WALSHIPD = os.path.join(BIN, "tools", "walshipd")
# The same daemon on glibc's malloc (the plain build only): libfaketime cannot start one
# linked with jemalloc, so the node whose clock jumps runs this one.
WALSHIPD_SYSMALLOC = os.path.join(BIN, "tools", "walshipd-sysmalloc")
WALSHIP = os.path.join(BIN, "tools", "walship")
FAULTLOAD = os.path.join(BIN, "tests", "walship-faultload")
FAKETIME = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1"
IDS = ["n1", "n2", "n3"]
CLOCK_NODE = "n3"   # runs under libfaketime, so its clock can jump
WAL_STOP_EXIT = 75  # walshipd after a failed WAL write (kExitWalFailed, rpc/node_server.h)
# What walshipd logs when a timer fires on something that did not come in time (a silent
# leader, a connection or call without an answer, a replication wait that gave up).
TIMER_SAYS = ["no message from", "no answer within", "no answer from", "timed out",
              "acknowledgement within"]
DISK_MB = 192       # each node's data dir is a tmpfs of this size (root only)
DURABILITIES = ["cluster", "async", "semi-sync:received", "semi-sync:flushed", "sync:applied"]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Cluster:
    def __init__(self, workdir, network, rng, failover=False):
        self.dir = workdir
        self.net = network
        self.rng = rng
        self.procs = {}
        self.clock_restarts = 0
        self.mounted = []
        if network:
            self.addr = {nid: network.address(nid) for nid in IDS}
        else:
            self.addr = {nid: f"127.0.0.1:{free_port()}" for nid in IDS}
        self.config = os.path.join(workdir, "cluster.toml")
        lines = ["[cluster]", 'name = "faults"', "", "[replication]", 'mode = "semi-sync"',
                 "acks = 1", 'ack_level = "flushed"', "sync_timeout_ms = 1000",
                 "heartbeat_interval_ms = 50", "heartbeat_timeout_ms = 1000",
                 "reconnect_min_ms = 20", "reconnect_max_ms = 500",
                 "leader_recovery_wait_ms = 3000",
                 # Memtables of 1 MiB flush about every second under the load, and the WAL
                 # switches file with them, so a full disk is met within a fault's hold (a
                 # WAL writes into space allocated ahead, and a 64 MiB memtable rarely flushes);
                 # and an archive of 32 MiB keeps the 192 MiB data dir from filling by itself.
                 "write_buffer_bytes = 1048576", "wal_retention_bytes = 33554432"]
        if failover:  # a dead or cut-off leader is replaced by vote (docs/failover.md)
            lines.append("failover = true")
        for i, nid in enumerate(IDS):
            lines += ["", "[[node]]", f'id = "{nid}"', f'listen = "{self.addr[nid]}"',
                      f'data_dir = "data/{nid}"', f'role = "{"leader" if i == 0 else "follower"}"']
        with open(self.config, "w") as f:
            f.write("\n".join(lines) + "\n")
        self.clock_file = os.path.join(workdir, "clock")
        self.clock_offset = 0
        self.set_clock("+0")
        for nid in IDS:
            d = self.data_dir(nid)
            os.makedirs(d)
            if os.geteuid() == 0:
                subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_MB}m", "tmpfs", d],
                               check=True)
                self.mounted.append(d)

    def data_dir(self, nid):
        return os.path.join(self.dir, "data", nid)

    def set_clock(self, offset):
        with open(self.clock_file + ".tmp", "w") as f:
            f.write(offset + "\n")
        os.replace(self.clock_file + ".tmp", self.clock_file)

    def in_ns(self, name):
        return self.net.exec_in(name) if self.net else []

    def start(self, nid):
        env = dict(os.environ)
        if nid == CLOCK_NODE and clock_faults_possible():
            # Every other start trusts the monotonic clock to stay put (only the wall clock
            # jumps); the others have both jump.
            self.clock_restarts += 1
            env.update(LD_PRELOAD=FAKETIME, FAKETIME_TIMESTAMP_FILE=self.clock_file,
                       FAKETIME_CACHE_DURATION="1")
            if self.clock_restarts % 2:
                env["DONT_FAKE_MONOTONIC"] = "1"
            self.clock_offset = 0
            self.set_clock("+0")
        daemon = WALSHIPD_SYSMALLOC if "LD_PRELOAD" in env else WALSHIPD
        log = open(os.path.join(self.dir, f"{nid}.log"), "ab")
        self.procs[nid] = subprocess.Popen(
            self.in_ns(nid) + [daemon, "--config", self.config, "--node", nid],
            stdout=log, stderr=log, env=env, cwd=self.dir)
        log.close()

    def monotonic_faked(self):
        return self.clock_restarts % 2 == 0

    def cli(self, *args, timeout=10):
        return subprocess.run(self.in_ns("client") + [WALSHIP, "--cluster", self.config,
                                                      "--timeout-ms", "2000", *args],
                              capture_output=True, text=True, timeout=timeout)

    def status(self, nid):
        try:
            r = self.cli("--node", nid, "status", "--json", timeout=5)
        except subprocess.TimeoutExpired:
            return None
        return json.loads(r.stdout) if r.returncode == 0 else None

    def alive(self, nid):
        return nid in self.procs and self.procs[nid].poll() is None

    def close(self):
        for p in self.procs.values():
            p.send_signal(signal.SIGCONT)
            p.kill()
            p.wait()
        for d in self.mounted:
            subprocess.run(["umount", "-l", d], capture_output=True)


_clock_ok = None


def clock_faults_possible():
    """Whether walshipd runs under libfaketime here: in the plain build, as
    walshipd-sysmalloc (libfaketime 0.9.10 cannot start a program linked with jemalloc, whose
    start-up reads the clock inside libfaketime's own). Never under AddressSanitizer, whose
    runtime must come first among the libraries."""
    global _clock_ok
    if _clock_ok is None:
        _clock_ok = False
        if (os.path.exists(FAKETIME) and os.path.exists(WALSHIPD_SYSMALLOC)
                and os.environ.get("WALSHIP_SANITIZED") != "1"):
            try:
                r = subprocess.run([WALSHIPD_SYSMALLOC, "--help"], capture_output=True, text=True,
                                   env=dict(os.environ, LD_PRELOAD=FAKETIME), timeout=3)
                _clock_ok = r.returncode == 0 and "libfaketime" not in r.stderr
            except subprocess.TimeoutExpired:
                pass
    return _clock_ok


class Nemesis:
    """Injects one fault at a time, each held for 1-4 s, with 0.5-1.5 s of calm between."""

    def __init__(self, cluster, network, rng, log):
        self.c = cluster
        self.net = network
        self.rng = rng
        self.log = log
        self.count = collections.Counter()
        self.crashes = []
        self.wal_stops = collections.Counter()   # by node: exits on a failed WAL write
        self.clock_said = []   # per clock jump: (wall clock only?, time-outs logged meanwhile)
        kinds = ["kill", "pause", "handover"]
        if network:
            kinds += ["isolate", "partition", "one-way", "loss", "delay"]
        if os.geteuid() == 0:
            kinds.append("disk-full")
        if clock_faults_possible():
            kinds.append("clock")
        self.kinds = kinds

    def leader(self):
        for nid in IDS:
            st = self.c.status(nid) if self.c.alive(nid) else None
            if st and st.get("role") == "leader":
                return nid
        return None

    def check_crashes(self):
        """A node that exited without being killed is a finding; it is started again. One
        that stopped on a failed WAL write (exit status 75, as PostgreSQL panics) is not: the
        harness starts it again, as a supervisor would, and counts it."""
        for nid in IDS:
            p = self.c.procs.get(nid)
            if p is not None and p.poll() is not None:
                if p.returncode == WAL_STOP_EXIT:
                    self.wal_stops[nid] += 1
                else:
                    self.crashes.append(f"{nid} exited by itself with {p.returncode}")
                self.c.start(nid)

    def step(self):
        self.check_crashes()
        kind = self.rng.choice(self.kinds)
        target = self.rng.choice(IDS)
        other = self.rng.choice([n for n in IDS if n != target])
        if kind == "clock":
            target = CLOCK_NODE
        hold = self.rng.uniform(1.0, 4.0)
        start = time.monotonic()
        detail = getattr(self, "fault_" + kind.replace("-", "_"))(target, other, hold)
        if detail is None:
            return
        self.count[kind] += 1
        self.log.write(json.dumps({"kind": kind, "target": target, "detail": detail,
                                   "s": start, "e": time.monotonic()}) + "\n")
        self.log.flush()
        time.sleep(self.rng.uniform(0.5, 1.5))

    def fault_kill(self, target, other, hold):
        p = self.c.procs[target]
        p.kill()
        p.wait()
        time.sleep(hold)
        self.c.start(target)
        return f"kill -9, restarted after {hold:.1f}s"

    def fault_pause(self, target, other, hold):
        hold += 1.0   # past the heartbeat time-out
        self.c.procs[target].send_signal(signal.SIGSTOP)
        time.sleep(hold)
        self.c.procs[target].send_signal(signal.SIGCONT)
        return f"SIGSTOP for {hold:.1f}s"

    def fault_handover(self, target, other, hold):
        leader = self.leader()
        if leader is None or leader == target:
            return None
        try:
            r = self.c.cli("--node", leader, "handover", target, "--catch-up-ms", "3000",
                           timeout=15)
            said = r.stdout.strip() or r.stderr.strip()
        except subprocess.TimeoutExpired:
            said = "no answer within 15 s"
        return f"{leader} hands over to {target}: {said}"

    def fault_isolate(self, target, other, hold):
        self.net.isolate(target)
        time.sleep(hold)
        self.net.heal()
        return f"cut from everyone for {hold:.1f}s"

    def fault_partition(self, target, other, hold):
        self.net.cut(target, other)
        time.sleep(hold)
        self.net.heal()
        return f"{target} and {other} cut from each other for {hold:.1f}s"

    def fault_one_way(self, target, other, hold):
        self.net.cut(target, other, one_way=True)
        time.sleep(hold)
        self.net.heal()
        return f"{other} hears nothing from {target} for {hold:.1f}s"

    def fault_loss(self, target, other, hold):
        p = self.rng.choice([0.1, 0.3, 0.6])
        self.net.lose(target, p)
        time.sleep(hold)
        self.net.heal()
        return f"{target} drops {p:.0%} of its packets for {hold:.1f}s"

    def fault_delay(self, target, other, hold):
        ms = self.rng.choice([20, 100, 400])
        self.net.slow(target, other, ms)
        self.net.slow(other, target, ms)
        time.sleep(hold)
        self.net.heal()
        return f"{ms} ms each way between {target} and {other} for {hold:.1f}s"

    def fault_disk_full(self, target, other, hold):
        filler = os.path.join(self.c.data_dir(target), "filler")
        st = os.statvfs(self.c.data_dir(target))
        free = st.f_bavail * st.f_frsize
        subprocess.run(["fallocate", "-l", str(max(free - 4096, 4096)), filler],
                       capture_output=True)
        time.sleep(hold)
        os.remove(filler)
        return f"data dir full for {hold:.1f}s"

    def fault_clock(self, target, other, hold):
        if not self.c.alive(CLOCK_NODE):
            return None
        if self.c.monotonic_faked():
            # Both clocks: forward only, as a monotonic clock can only go.
            self.c.clock_offset += self.rng.choice([30, 600, 3600])
            what = f"both clocks jump to +{self.c.clock_offset}s"
        else:
            self.c.clock_offset = self.rng.choice([-3600, -600, 600, 3600])
            what = f"the wall clock jumps {self.c.clock_offset:+d}s"
        log = os.path.join(self.c.dir, f"{CLOCK_NODE}.log")
        seen = os.path.getsize(log)
        self.c.set_clock(f"{self.c.clock_offset:+d}")
        time.sleep(hold)
        if not self.c.monotonic_faked():
            self.c.set_clock("+0")
            what += ", and back"
        # What the node said meanwhile: its timers run on the monotonic clock, so a jump of
        # the wall clock alone must pass unnoticed; a jump of both looks like time passing
        # (heartbeats time out, connections are made again).
        with open(log, "rb") as f:
            f.seek(seen)
            said = [ln for ln in f.read().decode(errors="replace").splitlines()
                    if any(t in ln for t in TIMER_SAYS)]
        self.clock_said.append((not self.c.monotonic_faked(), said))
        return f"{CLOCK_NODE}: {what} ({hold:.1f}s), {len(said)} time-outs logged"

    def heal_all(self):
        if self.net:
            self.net.heal()
        for nid in IDS:
            filler = os.path.join(self.c.data_dir(nid), "filler")
            if os.path.exists(filler):
                os.remove(filler)
            if self.c.alive(nid):
                self.c.procs[nid].send_signal(signal.SIGCONT)
            else:
                self.c.start(nid)


def converge(cluster, timeout, nemesis=None):
    """Waits until every node answers, one leads, none is seeding or recovering, and all
    hold the same latest sequence number. Returns the nodes that did not get there."""
    deadline = time.monotonic() + timeout
    last = {}
    while time.monotonic() < deadline:
        if nemesis:
            nemesis.check_crashes()
        last = {nid: cluster.status(nid) for nid in IDS}
        ok = all(s is not None for s in last.values())
        if ok:
            roles = [s["role"] for s in last.values()]
            seqs = {s["latest_seq"] for s in last.values()}
            if roles.count("leader") == 1 and set(roles) <= {"leader", "follower"} \
                    and len(seqs) == 1:
                return []
        time.sleep(0.25)
    leader_seq = max((s["latest_seq"] for s in last.values() if s), default=0)
    return [f"{nid} ({'no answer' if s is None else s['role'] + ' at ' + str(s['latest_seq'])}"
            f", leader at {leader_seq})" for nid, s in last.items()
            if s is None or s["latest_seq"] != leader_seq or s["role"] not in
            ("leader", "follower")] or ["no single leader"]


def contents(cluster, nid):
    r = cluster.cli("--node", nid, "scan", "--limit", "100000", timeout=60)
    if r.returncode != 0:
        return None
    out = {}
    for line in r.stdout.splitlines():
        k, _, v = line.partition("\t")
        out[k] = v
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--seed", type=int, default=int(time.time()) % 100000)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--loopback", action="store_true", help="no namespaces, even if possible")
    ap.add_argument("--keep", action="store_true", help="keep the run's directory")
    ap.add_argument("--faults", help="only these kinds, comma-separated (e.g. clock,kill)")
    ap.add_argument("--failover", action="store_true",
                    help="automatic failover on: leaders are replaced by vote")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    workdir = tempfile.mkdtemp(prefix=f"walship-faults-{args.seed}-")
    why_not = "--loopback given" if args.loopback else net.available()
    network = None if why_not else net.Network(IDS, workdir)
    print(f"fault suite: seed {args.seed}, {args.seconds}s, dir {workdir}, "
          + ("automatic failover, " if args.failover else "")
          + ("network namespaces" if network else f"loopback only ({why_not})"), flush=True)
    cluster = None
    findings = 1
    try:
        if network:
            network.up()
        cluster = Cluster(workdir, network, rng, failover=args.failover)
        for nid in IDS:
            cluster.start(nid)
        if converge(cluster, 30):
            raise RuntimeError("the cluster did not start; see the logs in " + workdir)
        flog = open(os.path.join(workdir, "faults.jsonl"), "w")
        nemesis = Nemesis(cluster, network, rng, flog)
        if args.faults:
            wanted = args.faults.split(",")
            unknown = [k for k in wanted if k not in nemesis.kinds]
            if unknown:
                raise RuntimeError(f"--faults: {', '.join(unknown)} cannot run here "
                                   f"(here: {', '.join(nemesis.kinds)})")
            nemesis.kinds = wanted
        history = os.path.join(workdir, "history.jsonl")
        load = subprocess.Popen(
            cluster.in_ns("client") + [FAULTLOAD, "--history", history, "--seconds",
                                       str(args.seconds), "--threads", str(args.threads),
                                       "--seed", str(args.seed), "--wait-ms", "1000"]
            + [a for nid in IDS for a in ("--node", f"{nid}={cluster.addr[nid]}")]
            + [a for d in DURABILITIES for a in ("--durability", d)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        with flog:
            end = time.monotonic() + args.seconds - 3
            while time.monotonic() < end:
                nemesis.step()
            nemesis.check_crashes()
            nemesis.heal_all()
        out, _ = load.communicate(timeout=args.seconds + 60)
        if load.returncode != 0:
            nemesis.crashes.append(f"walship-faultload exited with {load.returncode}: "
                                   f"{out.strip()[-500:]}")
        unrecovered = converge(cluster, 120, nemesis)
        final = {"nodes": {}, "unrecovered": unrecovered + nemesis.crashes,
                 "faults": ["failover"] if args.failover else []}
        if not unrecovered:
            for nid in IDS:
                final["nodes"][nid] = contents(cluster, nid)
        with open(os.path.join(workdir, "final.json"), "w") as f:
            json.dump(final, f)
        report = checker.check(checker.load_history(history), final, final["faults"])
        ops = checker.load_history(history)
        writes = [o for o in ops if o["f"] == "write"]
        results = collections.Counter(o["r"] for o in writes)
        reads = [o for o in ops if o["f"] == "read"]
        if out.strip():
            print(f"faultload: {out.strip()}")
        print("faults injected: " + ", ".join(f"{k} {v}" for k, v in
                                              sorted(nemesis.count.items()))
              + f" ({sum(nemesis.count.values())} in all)")
        if "clock" in nemesis.kinds:
            wall = [said for wall_only, said in nemesis.clock_said if wall_only]
            both = [said for wall_only, said in nemesis.clock_said if not wall_only]
            print(f"clock jumps on {CLOCK_NODE} (libfaketime): wall clock only {len(wall)}, "
                  f"time-outs logged meanwhile {sum(map(len, wall))}; both clocks {len(both)}, "
                  f"time-outs logged meanwhile {sum(map(len, both))}")
        print(f"writes: {len(writes)}: acknowledged {results['ok']}, unknown {results['info']}, "
              f"refused {results['fail']}; reads: {len(reads)}, answered "
              f"{sum(1 for o in reads if o['r'] == 'ok')}")
        print("acknowledged by durability: " + ", ".join(
            f"{d} {report.acked[d]} (lost {report.lost_by[d]})" for d in DURABILITIES))
        print(f"lost where promised: {len(report.lost)}; phantom: {len(report.phantom)}; "
              f"stale reads: {len(report.stale)}; split-brain windows: "
              f"{len(report.split_brain)}; divergent replicas: "
              f"{sum(len(g) for g in report.divergent[1:])}; unrecovered: "
              f"{len(report.unrecovered)}")
        print(f"longest time without an acknowledged write: {report.longest_no_ack_s:.1f}s")
        print(f"nodes stopped by a failed WAL write and started again: "
              f"{sum(nemesis.wal_stops.values())}")
        for line in report.notes() + report.lines():
            print(line)
        findings = report.anomalies()
        for wall_only, said in nemesis.clock_said:
            if wall_only and said:
                print(f"{CLOCK_NODE} noticed a jump of its wall clock alone (a timer on the "
                      f"wall clock?): {said[0]}")
                findings += 1
        if results["ok"] == 0:
            print("no write was acknowledged: the run proves nothing")
            findings += 1
    finally:
        if cluster:
            cluster.close()
        if network:
            network.down()
    if findings:
        print(f"FOUND {findings}: run again with `python3 tests/fault/run.py --seed {args.seed} "
              f"--seconds {args.seconds}" + (f" --faults {args.faults}" if args.faults else "")
              + f"`; history {workdir}/history.jsonl, check it with "
              f"`python3 tests/fault/checker.py {workdir}/history.jsonl {workdir}/final.json`")
        return 1
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    print("no anomalies")
    return 0


if __name__ == "__main__":
    sys.exit(main())
