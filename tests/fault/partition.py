"""A leader cut off from its followers by a network partition (network namespaces; the
clients still reach it) under automatic failover: it stops acknowledging writes within its
lease, the others elect a leader, and once the partition heals the old leader follows the new
one. The writes it acknowledged that no follower received are in its rollback file and in no
node's database.

    python3 partition.py          # root, with iproute2 and iptables (as the fault suite)

Exits 0 when every check holds, 1 naming the first that does not (keeping the run's
directory), and 77 (a skip, to ctest) where network namespaces cannot be made.
"""
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

import net
import run

LEASE_S = 0.55  # lease_ms's default (docs/config.md); the cluster file sets none
NEW_LEADER_WITHIN_S = 20
WRITE_FOR_S = 3  # writes to the cut-off leader go on this long after the cut


class Failed(Exception):
    pass


def wait_until(what, timeout, predicate):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise Failed(f"no {what} within {timeout} s")


def scenario(cluster, network):
    for nid in run.IDS:
        cluster.start(nid)
    if run.converge(cluster, 60):
        raise Failed("the cluster did not start")
    if cluster.status("n1")["role"] != "leader":
        raise Failed("n1 does not lead at the start")
    if cluster.cli("put", "before", "1").returncode != 0:
        raise Failed("a write before the partition failed")
    if run.converge(cluster, 30):
        raise Failed("the followers did not take the first write")

    network.cut("n1", "n2")
    network.cut("n1", "n3")
    cut_at = time.monotonic()  # taken once the rules are in: the cut came before
    acked = {}  # key -> when its CLI began (the write was sent after)
    i = 0
    while time.monotonic() - cut_at < WRITE_FOR_S:
        key = f"cut-{i:04d}"
        i += 1
        began = time.monotonic()
        # --endpoint without the cluster file: n1 alone answers (a refusal naming another
        # leader is not followed to it).
        r = subprocess.run(cluster.in_ns("client") + [
            run.WALSHIP, "--endpoint", cluster.addr["n1"], "--timeout-ms", "2000", "--mode",
            "async", "put", key, "x"], capture_output=True, text=True, timeout=10)
        if r.returncode == 0:
            acked[key] = began
    print(f"partition: n1 acknowledged {len(acked)} of {i} writes after the cut", flush=True)
    if not acked:
        raise Failed("n1 acknowledged no write after the cut, so the rollback file shows "
                     "nothing (is the machine too slow to write within the lease?)")
    # An acknowledgement within the lease: the lease ends lease_ms after the last heartbeat
    # a majority answered was sent, and that was before the cut.
    late = max(acked.values()) - cut_at
    if late > LEASE_S + 0.05:
        raise Failed(f"n1 acknowledged a write sent {late:.3f} s after the cut, past its "
                     f"lease ({LEASE_S} s)")

    def new_leader():
        for nid in ("n2", "n3"):
            st = cluster.status(nid)
            if st and st["role"] == "leader":
                return nid
        return None
    leader = wait_until("new leader among n2 and n3", NEW_LEADER_WITHIN_S, new_leader)
    wait_until("write acknowledged by the new leader", 10,
               lambda: cluster.cli("--node", leader, "put", "after", "2").returncode == 0)
    st = cluster.status("n1")
    if st and st["role"] == "leader":
        raise Failed("n1 still leads while cut off, after another was elected")

    network.heal()

    def follows():
        st = cluster.status("n1")
        return st and st["role"] == "follower" and st["ready"] and st["leader"] == leader
    wait_until(f"n1 following {leader} after the heal", 60, follows)
    rollback_dir = os.path.join(cluster.data_dir("n1"), "rollback")
    files = os.listdir(rollback_dir) if os.path.isdir(rollback_dir) else []
    if len(files) != 1:
        raise Failed(f"n1's rollback dir holds {files}, not one file")
    shown = cluster.cli("rollback", "show", os.path.join(rollback_dir, files[0]))
    if shown.returncode != 0:
        raise Failed(f"walship rollback show failed: {shown.stderr}")
    missing = [k for k in acked if f"put {k} " not in shown.stdout]
    if missing:
        raise Failed(f"{len(missing)} writes n1 acknowledged after the cut are not in its "
                     f"rollback file, e.g. {missing[:3]}")
    if run.converge(cluster, 60):
        raise Failed("the cluster did not converge after the heal")
    for nid in run.IDS:
        held = run.contents(cluster, nid)
        if held is None:
            raise Failed(f"cannot scan {nid}")
        found = [k for k in acked if k in held]
        if found:
            raise Failed(f"{nid} holds {len(found)} rolled-back writes, e.g. {found[:3]}")
        if held.get("before") != "1" or held.get("after") != "2":
            raise Failed(f"{nid} lacks the writes made before the cut or after the election")
    print(f"partition: ok: {len(acked)} writes acknowledged within the lease (the last sent "
          f"{late:.3f} s after the cut), {leader} elected, all of them in n1's rollback file "
          f"and in no database", flush=True)


def main():
    why_not = net.available()
    if why_not:
        print(f"partition: skipped: network namespaces cannot be made here ({why_not})")
        return 77
    workdir = tempfile.mkdtemp(prefix="walship-partition-")
    network = net.Network(run.IDS, workdir)
    cluster = None
    ok = False
    try:
        network.up()
        cluster = run.Cluster(workdir, network, random.Random(1), failover=True)
        scenario(cluster, network)
        ok = True
    except Failed as e:
        print(f"partition: FAILED: {e}; the run's directory is kept: {workdir}", flush=True)
    finally:
        if cluster:
            cluster.close()
        network.down()
        if ok:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
