"""Membership at run time on real walshipd processes on loopback: a node that is not in the
config file joins a live cluster as a learner, is seeded, catches up and votes; a member
is removed; learners are not waited for; changes go one at a time."""
import signal
import unittest

from cluster import Cluster, free_ports, wait_until

REPL = {"write_buffer_bytes": 65536}


def members(st):
    return {m["id"]: m["voter"] for m in st["members"]}


class MembershipTest(unittest.TestCase):
    def setUp(self):
        self.c = None

    def tearDown(self):
        if self.c is not None:
            self.c.close()

    def test_added_follower_joins_under_load_votes_and_survives_restarts(self):
        self.c = c = Cluster(n=3, replication=REPL)
        c.start_all()
        c.load("n1", 2000, seed=1, value_bytes=300)
        load = c.load_async("n1", 20000, seed=2)
        try:
            c.addr["n4"] = f"127.0.0.1:{free_ports(1)[0]}"
            r = c.cli("add-follower", "n4", c.addr["n4"])
            self.assertIn("n4 learner", r.stdout)
            st = c.status("n1")
            self.assertEqual(members(st), {"n1": True, "n2": True, "n3": True, "n4": False})
            # The followers hold the new membership too.
            wait_until(lambda: members(c.status("n2")).get("n4") is False, 20,
                       "n2 to hold the membership with n4")
            c.start_added("n4")
            # Run again with a wait: n4 is a member already, so the command only waits until
            # the leader makes it a voter (it was seeded, caught up, then promoted).
            r = c.cli("add-follower", "n4", c.addr["n4"], "--wait-s", "120", timeout=150)
            self.assertIn("n4 is ready and votes", r.stdout)
            st = c.status("n1")
            self.assertTrue(members(st)["n4"])
            n4 = [f for f in st["followers"] if f["id"] == "n4"]
            self.assertEqual(len(n4), 1)
            self.assertTrue(n4[0]["voter"])
            out, err = load.communicate(timeout=300)
            self.assertEqual(load.returncode, 0, out + err)
        finally:
            if load.poll() is None:
                load.kill()
                load.wait()
        c.wait_converged(timeout=90)
        leader = c.scan_all("n1")
        for nid in ("n2", "n3", "n4"):
            self.assertEqual(c.scan_all(nid), leader, f"{nid} differs from the leader")
        # Every node holds the leader's membership.
        held = c.status("n1")
        for nid in ("n2", "n3", "n4"):
            st = c.status(nid)
            self.assertEqual((st["membership_version"], st["members"]),
                             (held["membership_version"], held["members"]), nid)
        # The membership outlives restarts: the leader and a follower, restarted from a
        # config file that does not name n4, still know it, and n4 restarts as a voter.
        c.stop("n1")
        c.start("n1")
        c.stop("n2")
        c.start("n2")
        self.assertEqual(members(c.status("n2")).get("n4"), True)
        c.stop("n4")
        c.start_added("n4")
        c.cli("put", "after-restarts", "yes")
        c.wait_converged(timeout=60)
        self.assertEqual(c.cli("--node", "n4", "get", "after-restarts").stdout.strip(), "yes")
        self.assertTrue(members(c.status("n1"))["n4"])

    def test_removed_follower_is_no_longer_waited_for_nor_served(self):
        self.c = c = Cluster(n=3, replication={"mode": "sync", "sync_timeout_ms": 1000,
                                                "on_sync_timeout": "fail"})
        c.start_all()
        c.cli("put", "a", "1")
        c.stop("n3", sig=signal.SIGKILL)
        r = c.cli("put", "b", "2", check=False)
        self.assertEqual(r.returncode, 5, r.stdout + r.stderr)  # not replicated: n3 is away
        # The leader refuses to remove itself, and names what to do.
        r = c.cli("remove-follower", "n1", check=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("leads", r.stderr)
        r = c.cli("remove-follower", "n3")
        self.assertIn("n3 removed", r.stdout)
        c.cli("put", "c", "3")  # sync now waits for n2 alone
        st = c.status("n1")
        self.assertNotIn("n3", members(st))
        self.assertNotIn("n3", [f["id"] for f in st["followers"]])
        # n3 comes back from the config file that still names it: it is refused, says why,
        # and receives nothing more.
        c.start("n3")
        wait_until(lambda: "not a member" in c.status("n3").get("message", ""), 20,
                   "n3 to be refused as a non-member")
        c.cli("put", "d", "4")
        r = c.cli("--node", "n3", "get", "d", check=False)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)

    def test_learners_are_not_waited_for_and_changes_go_one_at_a_time(self):
        self.c = c = Cluster(n=3, replication={"mode": "sync", "sync_timeout_ms": 1000,
                                                "on_sync_timeout": "fail"})
        c.start_all()
        ports = free_ports(2)
        c.cli("add-follower", "n4", f"127.0.0.1:{ports[0]}")
        # n4 never started: a sync write does not wait for a learner.
        c.cli("put", "k", "v")
        # Semi-sync for more followers than vote is refused: the learner does not count.
        r = c.cli("--mode", "semi-sync", "--acks", "3", "put", "k", "v", check=False)
        self.assertNotEqual(r.returncode, 0)
        # With both voting followers paused, a change is held by the leader alone (1 of 3
        # voters): the next one must wait until a majority holds it.
        c.pause("n2")
        c.pause("n3")
        try:
            c.cli("remove-follower", "n4")
            r = c.cli("add-follower", "n5", f"127.0.0.1:{ports[1]}", check=False)
            self.assertNotEqual(r.returncode, 0)
            self.assertIn("not yet held by a majority", r.stderr)
        finally:
            c.resume("n2")
            c.resume("n3")
        wait_until(lambda: c.cli("add-follower", "n5", f"127.0.0.1:{ports[1]}",
                                 check=False).returncode == 0, 30,
                   "the next change once the followers hold the last")
        self.assertEqual(members(c.status("n1")),
                         {"n1": True, "n2": True, "n3": True, "n5": False})

    def test_membership_changes_are_refused_with_a_clear_error(self):
        self.c = c = Cluster(n=3, replication={"mode": "semi-sync", "acks": 2})
        c.start_all()
        # Removing a voter would leave semi-sync (2 followers) unable to acknowledge writes.
        r = c.cli("remove-follower", "n3", check=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("would leave 1 voting followers", r.stderr)
        r = c.cli("add-follower", "n2", "127.0.0.1:1", check=False)
        self.assertIn("'n2' is a member already", r.stderr)
        r = c.cli("add-follower", "bad id", "127.0.0.1:1", check=False)
        self.assertIn("node id 'bad id'", r.stderr)
        r = c.cli("add-follower", "n4", c.addr["n2"], check=False)
        self.assertIn(f"member 'n2' listens on {c.addr['n2']}", r.stderr)
        # Asked of a follower, the change goes to the leader (the CLI follows the hint).
        r = c.cli("--node", "n2", "add-follower", "n4", "127.0.0.1:1")
        self.assertIn("n4 learner", r.stdout)
        self.assertFalse(members(c.status("n1"))["n4"])


if __name__ == "__main__":
    unittest.main()
