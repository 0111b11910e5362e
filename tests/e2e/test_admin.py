"""The operator's debugging verbs on real processes: `walship wal show` prints the batches a
node would ship, decoded, from any node's own WAL; `walship verify` compares the replicas at
one sequence number while writes go on, and names the first range that differs."""
import json
import re
import subprocess
import unittest

from cluster import TESTLOAD, Cluster


class WalShowTest(unittest.TestCase):

    def setUp(self):
        self.c = Cluster(3, name="admin")
        self.c.start_all()

    def tearDown(self):
        self.c.close()

    def test_the_batches_are_printed_as_written_on_every_node(self):
        c = self.c
        first = int(c.cli("put", "alpha", "one").stdout.split()[2])
        c.cli("write", input="put b\\x00eta two\ndel alpha\ndelrange c d\n")
        c.cli("put", "tab", "a\\tb")
        c.wait_converged()
        text = c.cli("wal", "show", "--from", str(first)).stdout
        lines = text.splitlines()
        self.assertRegex(lines[0], rf"^batch seq {first}-{first}, epoch 1, 1 op, \d+ bytes, "
                                   r"written \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6} UTC$")
        self.assertEqual(lines[1], "  put alpha one")
        self.assertRegex(lines[2], rf"^batch seq {first + 1}-{first + 3}, epoch 1, 3 ops, ")
        self.assertEqual(lines[3:6], ["  put b\\x00eta two", "  del alpha", "  delrange c d"])
        self.assertEqual(lines[7], "  put tab a\\x09b")
        self.assertEqual(lines[-1], f"3 batches, up to the node's latest seq {first + 4}")
        # A follower's WAL holds the same batches (its write times are the leader's).
        for nid in ("n2", "n3"):
            self.assertEqual(c.cli("--node", nid, "wal", "show", "--from", str(first)).stdout,
                             text)

        page = json.loads(c.cli("wal", "show", "--from", str(first + 1), "--limit", "1",
                                "--json").stdout)
        self.assertEqual((page["from"], page["next_seq"], page["latest_seq"]),
                         (first + 1, first + 4, first + 4))
        [batch] = page["batches"]
        self.assertEqual((batch["first_seq"], batch["last_seq"], batch["epoch"]),
                         (first + 1, first + 3, 1))
        self.assertEqual(batch["ops"], [{"op": "put", "key": "b\\x00eta", "value": "two"},
                                        {"op": "del", "key": "alpha"},
                                        {"op": "delrange", "key": "c", "end": "d"}])
        self.assertGreater(batch["write_time_us"], 0)
        r = c.cli("wal", "show", "--from", str(first), "--limit", "1")
        self.assertIn(f"more from seq {first + 1}", r.stdout)
        # Just past the end: nothing yet, said so.
        r = c.cli("wal", "show", "--from", str(first + 5))
        self.assertEqual(r.stdout, f"no batches from seq {first + 5}: the node's latest seq is "
                                   f"{first + 4}\n")

    def test_a_position_the_wal_cannot_start_at_is_named(self):
        c = self.c
        c.cli("write", input="put a 1\nput b 2\n")
        r = c.cli("wal", "show", "--from", "2", check=False)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("is inside the batch [1, 3)", r.stderr)
        r = c.cli("wal", "show", "--from", "99", check=False)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("beyond the end of the log (latest 2)", r.stderr)
        r = c.cli("wal", "show", "--from", "0", check=False)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("sequence numbers start at 1", r.stderr)
        r = c.cli("wal", "show", "--from", "1", "--limit", "0", check=False)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("--limit: Value 0 not in range 1 to 1000", r.stderr)



class VerifyTest(unittest.TestCase):
    """`walship verify`: the replicas compared at one sequence number, online."""

    def setUp(self):
        self.c = Cluster(3, name="verify")
        self.c.start_all()

    def tearDown(self):
        self.c.close()

    def verify(self, *args, check=True):
        return self.c.cli("verify", *args, check=check, timeout=120)

    def test_identical_replicas_while_writes_go_on(self):
        c = self.c
        c.load("n1", 300, seed=7)
        c.wait_converged()
        r = self.verify("--range-keys", "100")
        self.assertRegex(r.stdout, r"^OK at seq \d+ \(epoch 1\): n1 \(leader\), n2, n3 "
                                   r"identical: \d+ keys in \d+ ranges\n$")
        report = json.loads(self.verify("--range-keys", "100", "--json").stdout)
        self.assertTrue(report["identical"])
        self.assertEqual(report["compared"], ["n1", "n2", "n3"])
        self.assertGreater(report["ranges"], 3)
        # With a writer running all along, each verify still compares one sequence number on
        # every node: the writes wait for the hold, none is refused.
        writer = subprocess.Popen([TESTLOAD, "--endpoint", c.addr["n1"], "--batches", "100000",
                                   "--seed", "8"], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True)
        try:
            seqs = []
            for _ in range(5):
                report = json.loads(self.verify("--range-keys", "200", "--json").stdout)
                self.assertTrue(report["identical"], report)
                self.assertEqual(report["not_compared"], {})
                seqs.append(report["seq"])
            self.assertEqual(sorted(set(seqs)), seqs, "the writes went on between verifies")
            self.assertIsNone(writer.poll(), "the writer failed: " + str(writer.stderr.read()
                                                                          if writer.poll() else ""))
        finally:
            writer.kill()
            writer.wait(timeout=20)

    def test_the_first_range_that_differs_is_named(self):
        c = self.c
        for i in range(60):
            c.cli("put", f"k{i:03d}", f"v{i}")
        c.wait_converged()
        # n3 gets another value for k042 at the same sequence number the leader gives its
        # next write, written into its database behind walship's back.
        c.stop("n3")
        c.cli("put", "k042", "leader")
        subprocess.run(["ldb", f"--db={c.data_dir('n3')}/db", "put", "k042", "tampered"],
                       check=True, capture_output=True, timeout=60)
        c.start("n3")
        c.wait_converged()
        r = self.verify("--range-keys", "10", check=False)
        self.assertEqual(r.returncode, 8, r.stdout + r.stderr)
        lines = r.stdout.splitlines()
        self.assertRegex(lines[0], r'^DIFFERENT at seq \d+ \(epoch 1\): the first range that '
                                   r'differs holds keys after "k039" through "k049"$')
        self.assertRegex(r.stdout, r"n2: 10 keys, sum ([0-9a-f]{16})")
        sums = dict(re.findall(r"  (n\d)(?: \(leader\))?: 10 keys, sum ([0-9a-f]{16})", r.stdout))
        self.assertEqual(sums["n1"], sums["n2"])
        self.assertNotEqual(sums["n1"], sums["n3"])
        report = json.loads(self.verify("--range-keys", "10", "--json", check=False).stdout)
        self.assertFalse(report["identical"])
        self.assertEqual((report["first_difference"]["after"],
                          report["first_difference"]["through"]), ("k039", "k049"))

    def test_a_node_that_cannot_be_compared_is_named(self):
        c = self.c
        c.cli("put", "a", "1")
        c.wait_converged()
        c.pause("n2")
        try:
            r = c.cli("--timeout-ms", "1000", "verify", "--hold-ms", "300", check=False,
                      timeout=120)
            self.assertEqual(r.returncode, 3, r.stdout + r.stderr)
            self.assertIn("n2: not compared:", r.stdout)
            self.assertIn("n1 (leader), n3 identical", r.stdout)
        finally:
            c.resume("n2")
        # The hold ended: writes go on.
        c.cli("put", "b", "2")


if __name__ == "__main__":
    unittest.main()
