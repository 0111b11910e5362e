#!/usr/bin/env python3
"""Failover benchmark: how long a cluster takes to take writes again after its leader is
killed, and how long a planned handover pauses writes.

Three walshipd on 127.0.0.1 with automatic failover (failover = true), semi-sync 1 of 2; the
etcd profiles start a three-member etcd on 127.0.0.1 (Debian's etcd-server) and let it choose
the leader. Each round: five writers (four of 100-byte values, one of 1 MiB values) load the
leader for --load-s seconds (the epoch must not change under it: a change there is a false
failover); then the leader is killed with SIGKILL and the clock runs until a write through
`walship --cluster` is acknowledged (one process, which asks the file's nodes, follows their
hints and asks again until a leader takes the write); the killed node is started again and
must come back as a follower.
Run for each timing profile; then --handovers planned handovers are timed from the command's
start to its answer (writes are refused from the moment the leader stops taking them until the
target leads, so this bounds the pause a writer sees, less its redirect).

  python3 bench/failover.py --rounds 20             # every profile, 20 kills each
  WALSHIP_BIN=build python3 bench/failover.py --profile default,etcd --rounds 5
  python3 bench/failover.py --profile etcd --rounds 0 --handovers 20 --handover-profile etcd

Prints one table (p50, p99, max per profile) with the settings used, and for each kill where
the time went (from the nodes' logs: when each survivor stood, when one won, when the other
streamed from it), and for a kill over 250 ms the client's last refusals (each with the time
waited so far). A false failover under the load is counted, and the kill then waits until the
deposed leader has re-seeded, so that every kill is timed from a whole cluster.
"""
import argparse
import datetime
import os
import re
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "e2e"))
from cluster import TESTLOAD, Cluster, wait_until  # noqa: E402
from etcd import Etcd  # noqa: E402

PROFILES = {
    # The defaults of docs/config.md.
    "default": {"heartbeat_interval_ms": 100, "heartbeat_timeout_ms": 2000,
                "election_timeout_ms": 800, "election_jitter_ms": 200, "lease_ms": 550},
    # For a quiet network of low latency: the leader heard every 20 ms.
    "tuned": {"heartbeat_interval_ms": 20, "heartbeat_timeout_ms": 400,
              "election_timeout_ms": 150, "election_jitter_ms": 50, "lease_ms": 120},
    # The defaults, and followers also wait for phi 8 of their leader's heartbeats.
    "phi": {"heartbeat_interval_ms": 100, "heartbeat_timeout_ms": 2000,
            "election_timeout_ms": 800, "election_jitter_ms": 200, "lease_ms": 550,
            "phi_threshold": 8},
    # Tuned, with phi 8 over heartbeats every 20 ms (deviation floor 10 ms).
    "tuned-phi": {"heartbeat_interval_ms": 20, "heartbeat_timeout_ms": 400,
                  "election_timeout_ms": 150, "election_jitter_ms": 50, "lease_ms": 120,
                  "phi_threshold": 8, "phi_min_std_ms": 10},
    # etcd chooses the leader ([coordinator], docs/failover.md), its defaults: a dead
    # leader's key goes with its 2 s lease. A three-member etcd on 127.0.0.1 with raft
    # heartbeats every 50 ms and elections after 500 ms.
    "etcd": {"coordinator": {"lease_ttl_s": 2, "poll_ms": 100}},
    # The shortest lease etcd grants with those raft timings (1 s), the key read every 50 ms.
    "etcd-tuned": {"coordinator": {"lease_ttl_s": 1, "poll_ms": 50, "gather_ms": 150}},
}


# A kill slower than this prints the client's last refusals before its line.
SLOW_ROUND_MS = 250


def percentile(values, p):
    v = sorted(values)
    if not v:
        return float("nan")
    k = min(len(v) - 1, max(0, int(round(p / 100.0 * len(v) + 0.5)) - 1))
    return v[k]


def leader_of(c):
    for nid in list(c.procs):
        r = c.cli("--node", nid, "status", "--json", check=False)
        if r.returncode == 0 and '"role":"leader"' in r.stdout:
            return nid
    return None


def epoch_of(c, nid):
    return c.status(nid)["epoch"]


def known_epoch(c, nid):
    """The highest epoch `nid` knows of, or 0 while it cannot answer."""
    try:
        return c.status(nid)["epoch"]
    except AssertionError:
        return 0


def ready_follower(c, nid):
    """Whether `nid` follows and is ready; False while it cannot answer (a node re-seeded from
    a checkpoint restarts its database)."""
    try:
        st = c.status(nid)
    except AssertionError:
        return False
    return st["role"] == "follower" and st["ready"]


def log_times(c, nids, since, pattern):
    """Seconds after `since` (wall clock) of the first line of each node's log at or after it
    that contains `pattern` (the logs' times are the nodes' wall clock, in milliseconds)."""
    out = {}
    for nid in nids:
        for line in c.log(nid).splitlines():
            m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}) ", line)
            if not m or pattern not in line:
                continue
            t = datetime.datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S.%f").timestamp()
            if t >= since - 0.0005:
                out[nid] = t - since
                break
    return out


def explain(c, survivors, killed_at):
    """Where a round's time went: when each survivor first stood, and when one won."""
    stood = log_times(c, survivors, killed_at, "election: standing for epoch")
    won = log_times(c, survivors, killed_at, "election: won epoch")
    gone = log_times(c, survivors, killed_at, "etcd: the leader key is gone")
    took = log_times(c, survivors, killed_at, "etcd: took the leader key")
    parts = [f"{n} stood +{t * 1000:.0f}" for n, t in sorted(stood.items())]
    parts += [f"{n} won +{t * 1000:.0f}" for n, t in sorted(won.items())]
    parts += [f"{n} saw the key gone +{t * 1000:.0f}" for n, t in sorted(gone.items())]
    parts += [f"{n} took the key +{t * 1000:.0f}" for n, t in sorted(took.items())]
    leads = log_times(c, survivors, killed_at, "elected leader of epoch")
    parts += [f"{n} leads +{t * 1000:.0f}" for n, t in sorted(leads.items())]
    lease = log_times(c, survivors, killed_at, "ms after this node began leading")
    parts += [f"{n} holds its lease +{t * 1000:.0f}" for n, t in sorted(lease.items())]
    refused = log_times(c, survivors, killed_at, "refused follower")
    parts += [f"{n} refused a hello +{t * 1000:.0f}" for n, t in sorted(refused.items())]
    slow = log_times(c, survivors, killed_at, "slow WAL fsync")
    parts += [f"{n} slow fsync +{t * 1000:.0f}" for n, t in sorted(slow.items())]
    streams = log_times(c, survivors, killed_at, "streaming from leader")
    parts += [f"{n} streams +{t * 1000:.0f}" for n, t in sorted(streams.items())]
    return ", ".join(parts)


def run_profile(name, rounds, load_s):
    settings = {"failover": True, "mode": "semi-sync", "acks": 1, "reconnect_min_ms": 20,
                "reconnect_max_ms": 200}
    profile = dict(PROFILES[name])
    coordinator = profile.pop("coordinator", None)
    settings.update(profile)
    etcd = None
    if coordinator is not None:
        etcd = Etcd()
        etcd.start()
        coordinator = {"etcd": etcd.endpoints, **coordinator}
    c = Cluster(3, name=f"failover-{name}", replication=settings, coordinator=coordinator)
    times, false_failovers, stuck = [], 0, 0
    try:
        c.start_all()
        wait_until(lambda: leader_of(c) == "n1", 30, "n1 to lead")
        for i in range(rounds):
            leader = wait_until(lambda: leader_of(c), 30, "a leader")
            wait_until(lambda: all(ready_follower(c, n) for n in c.procs if n != leader), 60,
                       "followers ready")
            epoch = epoch_of(c, leader)
            # Four writers of small values and one of 1 MiB values (messages that take a
            # while to cross): heartbeats must get through all the same.
            loads = [subprocess.Popen([TESTLOAD, "--endpoint", c.addr[leader], "--batches",
                                       "100000000", "--seed", str(i * 8 + k), "--value-bytes",
                                       str(1 << 20 if k == 4 else 100)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                      text=True) for k in range(5)]
            time.sleep(load_s)  # the load's length, not a wait for a condition
            for p in loads:
                p.terminate()
                p.wait(timeout=30)
            now_leader = wait_until(lambda: leader_of(c), 30, "a leader")
            if epoch_of(c, now_leader) != epoch or now_leader != leader:
                false_failovers += 1
                print(f"{name} round {i + 1}: FALSE FAILOVER under load: {leader} epoch "
                      f"{epoch} -> {now_leader} epoch {epoch_of(c, now_leader)}",
                      file=sys.stderr)
                leader = now_leader
                # The kill is timed from a whole cluster: the deposed leader re-seeds first
                # (a kill meanwhile is a second fault, of a cluster with one voter busy).
                wait_until(lambda: all(ready_follower(c, n) for n in c.procs if n != leader),
                           120, "followers ready again")
                leader = wait_until(lambda: leader_of(c), 30, "a leader")
            # The highest epoch before the kill: the write that ends the round must be taken
            # in a later one. (An election under the load that ended between the look above
            # and the kill would leave the killed node a deposed leader, and the write would
            # time nothing.)
            before = max(known_epoch(c, n) for n in c.procs)
            c.stop(leader, signal.SIGKILL)
            t0 = time.monotonic()
            killed_at = time.time()
            # One CLI write, which waits for the new leader by itself (--leader-wait-ms),
            # asking again after a tenth of the time waited so far (10-100 ms): one client,
            # as an application holds one, not a process start per try.
            r = c.cli("--leader-wait-ms", "60000", "put", f"after-{i}", "1", check=False,
                      timeout=90)
            took = (time.monotonic() - t0) * 1000
            m = re.match(r"OK seq \d+ epoch (\d+)", r.stdout)
            timed = r.returncode == 0 and m is not None and int(m.group(1)) > before
            if r.returncode == 0 and not timed:
                false_failovers += 1
                print(f"{name} round {i + 1}: not timed: the write was taken in epoch "
                      f"{m.group(1) if m else '?'}, begun before {leader} was killed (a false "
                      f"failover just before the kill)", file=sys.stderr)
            elif r.returncode == 0:
                times.append(took)
            else:
                # A survivor that cannot vote (one being re-seeded after a false failover
                # under the load) leaves the other without a majority until the killed node
                # is back: counted, and the round goes on.
                stuck += 1
                print(f"{name} round {i + 1}: NO WRITE after the kill ({took:.0f} ms): "
                      f"{r.stderr[-1000:]}", file=sys.stderr)
            c.start(leader)
            # It may hold a tail no survivor received (written, not acknowledged): then it is
            # re-seeded from the new leader first.
            try:
                wait_until(lambda: ready_follower(c, leader), 300, f"{leader} back as follower")
            except AssertionError:
                print(c.log(leader)[-3000:], file=sys.stderr)
                raise
            if timed and took > SLOW_ROUND_MS:
                # Where a slow kill's time went on the client's side: its last refusals.
                for line in r.stderr.strip().splitlines()[-6:]:
                    print(f"  {line[:200]}", file=sys.stderr)
            if timed:
                print(f"{name} round {i + 1}/{rounds}: {took:.0f} ms "
                      f"({explain(c, [n for n in c.ids if n != leader], killed_at)})",
                      file=sys.stderr)
    finally:
        c.close()
        if etcd is not None:
            etcd.close()
    return times, false_failovers, stuck


def run_handovers(n, name):
    profile = dict(PROFILES[name])
    coordinator = profile.pop("coordinator", None)
    etcd = None
    if coordinator is not None:
        etcd = Etcd()
        etcd.start()
        coordinator = {"etcd": etcd.endpoints, **coordinator}
    c = Cluster(3, name="handover", replication={"failover": True, "mode": "semi-sync",
                                                 "acks": 1, **profile},
                coordinator=coordinator)
    pauses = []
    try:
        c.start_all()
        for i in range(n):
            leader = wait_until(lambda: leader_of(c), 30, "a leader")
            wait_until(lambda: all(c.status(x)["ready"] for x in c.procs if x != leader), 60,
                       "followers ready")
            target = [x for x in c.ids if x != leader][i % 2]
            t0 = time.monotonic()
            c.cli("--node", leader, "handover", target)
            pauses.append((time.monotonic() - t0) * 1000)
            wait_until(lambda: c.cli("--node", target, "put", "h", str(i),
                                     check=False).returncode == 0, 10, "the target to write")
    finally:
        c.close()
        if etcd is not None:
            etcd.close()
    return pauses


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--profile", default="all",
                    help="all, or a comma-separated list of " + ", ".join(sorted(PROFILES)))
    ap.add_argument("--load-s", type=int, default=3, help="write load before each kill")
    ap.add_argument("--handovers", type=int, default=20)
    ap.add_argument("--handover-profile", choices=sorted(PROFILES), default="default")
    args = ap.parse_args()
    names = sorted(PROFILES) if args.profile == "all" else args.profile.split(",")
    for name in names:
        if name not in PROFILES:
            ap.error(f"no profile '{name}' (there are {', '.join(sorted(PROFILES))})")
    rows = []
    for name in names if args.rounds > 0 else []:
        times, false, stuck = run_profile(name, args.rounds, args.load_s)
        rows.append((name, times, false, stuck))
    pauses = run_handovers(args.handovers, args.handover_profile) if args.handovers > 0 else []
    print("| what | settings | n | p50 ms | p99 ms | max ms | false failovers under load | "
          "no leader within 60 s |")
    print("|---|---|---|---|---|---|---|---|")
    for name, times, false, stuck in rows:
        p = PROFILES[name]
        if "coordinator" in p:
            k = p["coordinator"]
            s = (f"etcd, lease_ttl_s {k['lease_ttl_s']}, poll_ms {k['poll_ms']}, gather_ms "
                 f"{k.get('gather_ms', 300)}")
        else:
            s = (f"election {p['election_timeout_ms']}+{p['election_jitter_ms']} ms, lease "
                 f"{p['lease_ms']} ms, heartbeat {p['heartbeat_interval_ms']} ms")
        if "phi_threshold" in p:
            s += (f", phi {p['phi_threshold']} (deviation floor "
                  f"{p.get('phi_min_std_ms', 20)} ms)")
        print(f"| kill -9 to first acknowledged write ({name}) | {s} | {len(times)} | "
              f"{percentile(times, 50):.0f} | {percentile(times, 99):.0f} | {max(times):.0f} | "
              f"{false} | {stuck} |")
    if pauses:
        print(f"| planned handover (write pause bound) | {args.handover_profile} | {len(pauses)} | "
              f"{percentile(pauses, 50):.0f} | {percentile(pauses, 99):.0f} | "
              f"{max(pauses):.0f} | - | - |")


if __name__ == "__main__":
    main()
