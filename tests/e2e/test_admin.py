"""The operator's debugging verbs on real processes: `walship wal show` prints the batches a
node would ship, decoded, from any node's own WAL."""
import json
import unittest

from cluster import Cluster


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


if __name__ == "__main__":
    unittest.main()
