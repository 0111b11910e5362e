"""New followers from checkpoints, on real walshipd processes on loopback: a follower that
joins a leader under write load, a transfer cut off midway, `walship checkpoint` and
`walshipd --restore-from`, and the WAL a seeding follower needs."""
import os
import shutil
import signal
import subprocess
import time
import unittest

from cluster import WALSHIPD, Cluster, wait_until

# Small memtables make many SSTables; a bounded snapshot rate makes the transfer last long
# enough to watch and to cut. A node closes a peer connection with no session on it after
# preamble_timeout_ms: a transfer must count as one, and lasts longer than that here.
REPL = {"write_buffer_bytes": 65536}
SLOW = dict(REPL, snapshot_max_bytes_per_sec=400 * 1024, preamble_timeout_ms=1000)


def read(path):
    with open(path) as f:
        return f.read()


def status_of(c, nid):
    """The node's status, or None while it restarts (a seeded node restarts on its copy)."""
    try:
        return c.status(nid)
    except AssertionError:
        return None


class CheckpointTest(unittest.TestCase):
    def setUp(self):
        self.c = None

    def tearDown(self):
        if self.c is not None:
            self.c.close()

    def assert_identical(self, nodes):
        c = self.c
        c.wait_converged(timeout=90)
        leader = c.scan_all("n1")
        self.assertGreater(len(leader), 0)
        for nid in nodes:
            self.assertEqual(c.scan_all(nid), leader, f"{nid} differs from the leader")

    def wait_seeding(self, nid, at_least=0.0):
        """Waits until `nid` is copying a checkpoint and has `at_least` of it; its status."""
        def copying():
            st = status_of(self.c, nid)
            if st is None or st["role"] != "seeding" or st.get("seed_total_bytes", 0) == 0:
                return None
            return st if st["seed_done_bytes"] >= at_least * st["seed_total_bytes"] else None
        try:
            return wait_until(copying, 60, f"{nid} to copy {at_least:.0%} of a checkpoint")
        except AssertionError as e:
            raise AssertionError(f"{e}\n" + "\n".join(
                f"--- {n}\n{self.c.log(n)[-3000:]}" for n in self.c.logs)) from None

    def test_new_follower_joins_under_load_and_converges(self):
        # Slower still than SLOW: the transfer (about 1.5 MB) lasts long enough to be watched
        # several times by the CLI, whose calls take a second each in a sanitizer build on a
        # busy machine (at 150 KiB/s it once ended before the second look).
        self.c = c = Cluster(n=3, replication=dict(SLOW, snapshot_max_bytes_per_sec=64 * 1024))
        c.start("n1")
        c.start("n2")
        c.load("n1", 2500, seed=1, value_bytes=600)
        load = c.load_async("n1", 30000, seed=2)
        try:
            c.start("n3")  # an empty data dir: it is seeded from a checkpoint
            st = self.wait_seeding("n3")
            self.assertIn("snapshot: copying", st["phase"])
            self.assertFalse(st["ready"])
            # Reads and writes on it are refused meanwhile, saying why.
            r = c.cli("--node", "n3", "get", "key00000001", check=False)
            self.assertNotEqual(r.returncode, 0)
            self.assertIn("being seeded", r.stdout + r.stderr)
            # The leader serves the checkpoint meanwhile (n3 copying before and after the
            # leader's answer means the copy ran through it).
            serving = c.status("n1")["snapshots_serving"]
            again = status_of(c, "n3")
            if again is not None and again["role"] == "seeding" and \
                    again["seed_done_bytes"] < again["seed_total_bytes"]:
                self.assertGreaterEqual(serving, 1)
            # The leader's writes never stall while it serves the checkpoint: every half
            # second of the transfer it acknowledged more of them, a write of this test's
            # own among them (so the check holds whether or not the load still runs).
            # (A status that does not answer in time, as under a sanitizer build, is no end of
            # the transfer: the watch goes on, bounded.)
            samples = []
            deadline = time.monotonic() + 60
            while len(samples) < 6 and time.monotonic() < deadline:
                st = status_of(c, "n3")
                if st is not None and st["role"] != "seeding":
                    break
                samples.append(c.status("n1")["writes_accepted"])
                c.cli("put", f"during-transfer-{len(samples)}", "x")
                time.sleep(0.5)
            self.assertGreaterEqual(len(samples), 2, "the transfer ended before it was watched")
            for before, after in zip(samples, samples[1:]):
                self.assertGreater(after, before, f"leader writes stalled: {samples}")
        finally:
            out, err = load.communicate(timeout=300)
        self.assertEqual(load.returncode, 0, out + err)
        self.assert_identical(["n2", "n3"])
        st = c.status("n3")
        self.assertEqual(st["role"], "follower")
        self.assertTrue(st["ready"], st)
        self.assertEqual(st["phase"], "ready")
        self.assertEqual(st["database_id"], c.status("n1")["database_id"])
        self.assertIn("received and verified", c.log("n3"))
        # One transfer, never cut (it outlived the peer connections' idle time-out).
        self.assertEqual(c.log("n3").count("copying a checkpoint"), 1, c.log("n3")[-3000:])
        self.assertIn("taking a checkpoint for node 'n3'", c.log("n1"))
        # The leader dropped the checkpoint once it was read.
        wait_until(lambda: c.status("n1")["snapshots_serving"] == 0, 10, "the checkpoint freed")
        self.assertFalse(os.listdir(os.path.join(c.data_dir("n1"), "checkpoints")))

    def test_transfer_cut_midway_resumes(self):
        # Files are copied in 1 MiB chunks and the progress moves a chunk at a time: about
        # 4 MiB of SSTables, copied at 1 MiB/s, give the cut several points to fall between.
        self.c = c = Cluster(n=2, replication=dict(SLOW, snapshot_max_bytes_per_sec=1 << 20))
        c.start("n1")
        c.load("n1", 3000, seed=3, value_bytes=2400)
        # A restart leaves the leader's memtable empty (flushed at shutdown) and its
        # compactions done, so that a checkpoint taken again lists the same SSTables: with
        # writes in between, a flush and a compaction may replace every file, and nothing is
        # left to resume from.
        c.stop("n1")
        c.start("n1")
        time.sleep(1)
        c.start("n2")
        st = self.wait_seeding("n2", at_least=0.4)
        self.assertLess(st["seed_done_bytes"], st["seed_total_bytes"])
        c.stop("n2", signal.SIGKILL)
        self.assertTrue(os.path.exists(os.path.join(c.data_dir("n2"), "seed", "verified")))
        c.start("n2")
        wait_until(lambda: (status_of(c, "n2") or {}).get("role") == "follower", 60,
                   "n2 to finish seeding")
        c.load("n1", 200, seed=4)  # after: writes before its checkpoint could replace files
        self.assert_identical(["n2"])
        log = c.log("n2")
        self.assertIn("resuming:", log)
        self.assertFalse(os.path.exists(os.path.join(c.data_dir("n2"), "seed")))

    def test_checkpoint_bytes_not_in_the_page_cache_are_read_from_the_disk(self):
        # The leader copies what its page cache holds straight into each reply and leaves the
        # rest to a worker that reads the disk. Evicting half of the checkpoint's pages while
        # it is read sends parts of one read down each path. The checkpoint is over 1 MiB, the
        # most one read takes: the first read may come before any page is evicted, but the
        # rate (SLOW) holds the next back for seconds, while pages are evicted.
        PAGE = os.sysconf("SC_PAGE_SIZE")
        self.c = c = Cluster(n=2, replication=SLOW)
        c.start("n1")
        c.load("n1", 3000, seed=11, value_bytes=600, keys=5000)
        c.start("n2")
        self.wait_seeding("n2")
        checkpoints = os.path.join(c.data_dir("n1"), "checkpoints")

        def evict():
            for root, _, names in os.walk(checkpoints):
                for name in names:
                    try:
                        fd = os.open(os.path.join(root, name), os.O_RDONLY)
                    except OSError:
                        continue  # the checkpoint was dropped meanwhile
                    try:
                        # Written back first: the kernel drops clean pages only, and a file
                        # RocksDB wrote a moment ago may still be dirty. Then the whole file
                        # is dropped and every other page read back alone (no read-ahead on
                        # this descriptor): a read finds its first page cached, and not its
                        # second. Dropping single pages would not do: the kernel keeps a file
                        # written or read in large writes in folios of many pages, and drops
                        # a folio only whole.
                        os.fsync(fd)
                        size = os.fstat(fd).st_size
                        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
                        for off in range(0, size, 2 * PAGE):
                            os.pread(fd, PAGE, off)
                    finally:
                        os.close(fd)
            return (status_of(c, "n2") or {}).get("role") == "follower"

        wait_until(evict, 90, "n2 to finish seeding while the leader's cache is emptied")
        self.assertIn("not in the page cache", c.log("n1"))
        self.assertEqual(c.log("n2").count("copying a checkpoint"), 1, c.log("n2")[-3000:])
        c.load("n1", 100, seed=12)
        self.assert_identical(["n2"])

    def test_leader_killed_during_a_transfer(self):
        # The follower retries with a growing pause, and finishes from the restarted leader's
        # new checkpoint. Progress moves a 1 MiB chunk at a time, so the checkpoint is several
        # MiB, copied at 512 KiB/s: the leader is killed with seconds of the copy still to go
        # (with 1 MiB in all, the copy could end between two looks at the status).
        self.c = c = Cluster(n=2, replication=dict(SLOW, snapshot_max_bytes_per_sec=512 * 1024))
        c.start("n1")
        c.load("n1", 3000, seed=9, value_bytes=2400)
        c.start("n2")
        st = self.wait_seeding("n2", at_least=0.1)
        self.assertLess(st["seed_done_bytes"], st["seed_total_bytes"])
        c.stop("n1", signal.SIGKILL)
        wait_until(lambda: "seeding from 'n1' failed" in c.log("n2"), 20,
                   "n2 to see the transfer fail")
        st = c.status("n2")
        self.assertEqual(st["role"], "seeding")
        self.assertIn("last failure", st["message"])
        c.start("n1")
        c.load("n1", 100, seed=10)
        self.assert_identical(["n2"])
        # (The restarted leader replays its WAL into a memtable that its next checkpoint
        # flushes, so the files may all differ; resuming is test_transfer_cut_midway_resumes's.)
        self.assertGreaterEqual(c.log("n2").count("copying a checkpoint"), 2)

    def test_a_disk_too_small_for_the_checkpoint_is_refused_before_copying(self):
        if os.geteuid() != 0:
            self.skipTest("needs root to mount a small tmpfs as the follower's data dir")
        self.c = c = Cluster(n=2, replication=REPL)
        c.start("n1")
        c.load("n1", 3000, seed=11, value_bytes=600)
        d = c.data_dir("n2")
        os.makedirs(d, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", d], check=True)
        try:
            c.start("n2")
            wait_until(lambda: "not enough disk space" in c.log("n2"), 30,
                       "n2 to refuse the transfer for want of space")
            st = c.status("n2")
            self.assertEqual(st["role"], "seeding")
            self.assertIn("not enough disk space", st["message"])
            # Nothing was copied, and the leader writes on.
            self.assertFalse(os.listdir(os.path.join(d, "seed", "db")))
            c.load("n1", 100, seed=12)
            c.stop("n2", signal.SIGKILL)
        finally:
            subprocess.run(["umount", d], check=False)

    def test_at_most_four_checkpoints_are_served_at_once(self):
        self.c = c = Cluster(n=1, replication=SLOW)
        c.start("n1")
        c.load("n1", 1500, seed=13, value_bytes=600)
        from cluster import WALSHIP
        runs = [subprocess.Popen([WALSHIP, "--cluster", c.config, "--timeout-ms", "60000",
                                  "checkpoint", "--out", os.path.join(c.dir, f"cp{i}")],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for i in range(6)]
        results = [p.communicate(timeout=120) for p in runs]
        refused = [err for p, (out, err) in zip(runs, results) if p.returncode != 0]
        done = [out for p, (out, err) in zip(runs, results) if p.returncode == 0]
        self.assertGreaterEqual(len(done), 4, results)
        self.assertGreaterEqual(len(refused), 1, results)
        for err in refused:
            self.assertIn("ask again later", err)
        wait_until(lambda: c.status("n1")["snapshots_serving"] == 0, 10, "the checkpoints freed")

    def test_restore_from_a_checkpoint_dir_and_refusals(self):
        self.c = c = Cluster(n=3, replication=REPL)
        c.start("n1")
        c.start("n2")
        c.load("n1", 500, seed=5)
        out = os.path.join(c.dir, "backup")
        r = c.cli("checkpoint", "--out", out)
        self.assertIn("OK checkpoint of n1 at seq", r.stdout)
        seq = int(r.stdout.split("at seq ")[1].split(":")[0])
        self.assertIn(f"seq {seq}\n", read(os.path.join(out, "MANIFEST.walship")))
        # A second checkpoint into the same directory is refused.
        again = c.cli("checkpoint", "--out", out, check=False)
        self.assertNotEqual(again.returncode, 0)
        self.assertIn("holds a complete checkpoint", again.stderr)
        c.load("n1", 300, seed=6)

        def restore(path, nid):
            return subprocess.run([WALSHIPD, "--config", c.config, "--node", nid,
                                   "--restore-from", path],
                                  capture_output=True, text=True, timeout=60)

        def files(nid):
            d = os.path.join(c.data_dir(nid), "db")
            return {f: os.path.getsize(os.path.join(d, f)) for f in os.listdir(d) if f != "LOG"}

        # One flipped byte: refused, naming the file, and the follower's data left as it was.
        bad = os.path.join(c.dir, "flipped")
        shutil.copytree(out, bad)
        sst = sorted(f for f in os.listdir(os.path.join(bad, "db")) if f.endswith(".sst"))[0]
        with open(os.path.join(bad, "db", sst), "r+b") as f:
            f.seek(64)
            b = f.read(1)
            f.seek(64)
            f.write(bytes([b[0] ^ 0x01]))
        c.stop("n2")
        before = files("n2")
        state = read(os.path.join(c.data_dir("n2"), "node-state"))
        r = restore(bad, "n2")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn(f"{sst} is damaged", r.stderr)
        self.assertIn("is left as it was", r.stderr)
        self.assertEqual(files("n2"), before)
        self.assertEqual(read(os.path.join(c.data_dir("n2"), "node-state")), state)
        self.assertFalse(os.path.exists(os.path.join(c.data_dir("n2"), "seed")))
        # A checkpoint of another cluster: refused.
        other = os.path.join(c.dir, "other")
        shutil.copytree(out, other)
        mpath = os.path.join(other, "MANIFEST.walship")
        text = read(mpath).replace("cluster test\n", "cluster elsewhere\n")
        with open(mpath, "w") as f:
            f.write(text)
        r = restore(other, "n2")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("cluster 'elsewhere'", r.stderr)
        self.assertEqual(files("n2"), before)
        c.start("n2")  # as it was
        # The good one: installed, then n3 catches up from its sequence number.
        log = open(os.path.join(c.dir, "n3.log"), "ab")
        c.procs["n3"] = subprocess.Popen([WALSHIPD, "--config", c.config, "--node", "n3",
                                          "--restore-from", out], stdout=log, stderr=log)
        c.logs["n3"] = log.name
        log.close()
        wait_until(lambda: c.reachable("n3"), 20, "n3 to answer")
        self.assert_identical(["n2", "n3"])
        self.assertIn(f"installed the checkpoint of 'n1' at seq {seq}", c.log("n3"))
        self.assertIn(f"from seq {seq + 1}", c.log("n3"))
        self.assertNotIn("seeded from a checkpoint", c.log("n3"))  # no second transfer

    def test_restore_refused_when_the_leader_no_longer_has_the_wal(self):
        self.c = c = Cluster(n=2, replication=dict(REPL, wal_retention_bytes=65536,
                                                   wal_pinned_max_bytes=0))
        c.start("n1")
        c.load("n1", 300, seed=7)
        out = os.path.join(c.dir, "old")
        c.cli("checkpoint", "--out", out)
        for i in range(3):
            c.load("n1", 1500, seed=20 + i)
        # The leader's WAL no longer holds what follows the checkpoint (its trim runs every
        # second).
        wait_until(lambda: "archived WAL files" in c.log("n1"), 20, "the leader to trim its WAL")
        r = subprocess.run([WALSHIPD, "--config", c.config, "--node", "n2", "--restore-from",
                            out], capture_output=True, text=True, timeout=60)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("keeps its WAL only from seq", r.stderr)
        self.assertIn("take a newer checkpoint", r.stderr)
        self.assertFalse(os.path.exists(os.path.join(c.data_dir("n2"), "db")))

    def test_wal_a_seeding_follower_needs_is_kept(self):
        # The archive bound alone would drop the WAL after the checkpoint long before the
        # slow transfer ends; the checkpoint pins it, so the follower catches up from there
        # without a second transfer.
        self.c = c = Cluster(n=2, replication=dict(SLOW, wal_retention_bytes=65536, max_tail_bytes=4096))
        c.start("n1")
        c.load("n1", 2000, seed=8, value_bytes=600)
        c.start("n2")
        self.wait_seeding("n2")
        for i in range(3):
            c.load("n1", 800, seed=30 + i, value_bytes=600)
        self.assert_identical(["n2"])
        log = c.log("n2")
        self.assertEqual(log.count("is now seeding"), 1, log[-3000:])
        st = c.status("n1")
        self.assertGreater(st["wal_bytes"], 0)


if __name__ == "__main__":
    unittest.main()
