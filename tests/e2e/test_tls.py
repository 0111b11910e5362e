"""TLS on real processes: nodes replicate through it, clients speak it, and whoever does not
(a plain-text client, one that trusts another CA or checks another name, one without a client
certificate where nodes ask for one) is refused, told why, and served nothing."""
import os
import shutil
import socket
import ssl
import subprocess
import unittest

from cluster import WALSHIP, WALSHIPD, Cluster, make_certs

SECRET = "s3cret-of-the-tls-cluster-0123456789"


def run(*args, timeout=30):
    return subprocess.run([WALSHIP, *args], capture_output=True, text=True, timeout=timeout)


class TlsTest(unittest.TestCase):
    """Three nodes with TLS (and the cluster secret inside it)."""

    def setUp(self):
        self.c = Cluster(3, name="tls", tls={}, secret=SECRET)
        self.c.start_all()
        self.certs = os.path.join(self.c.dir, "certs")

    def tearDown(self):
        self.c.close()

    def test_replication_runs_through_tls_and_a_plain_text_client_is_refused(self):
        c = self.c
        for i in range(40):
            c.cli("put", f"k{i}", f"v{i}")
        c.wait_converged()
        self.assertEqual(c.scan_all("n1"), c.scan_all("n2"))
        self.assertEqual(c.scan_all("n1"), c.scan_all("n3"))
        self.assertEqual(c.cli("--node", "n3", "get", "k39").stdout, "v39\n")
        before = c.status("n1")["auth_failures"]

        # A client that speaks plain text is told the node requires TLS, and served nothing.
        secret = c.config + ".secret"
        r = run("--endpoint", c.addr["n1"], "--secret-file", secret, "get", "k7")
        self.assertEqual(r.returncode, 3, r.stderr)
        self.assertIn("requires TLS", r.stderr)
        self.assertNotIn("v7", r.stdout)
        r = run("--endpoint", c.addr["n1"], "put", "intruder", "1")
        self.assertEqual(r.returncode, 3, r.stderr)
        self.assertIn("requires TLS", r.stderr)
        # Bytes that are neither TLS nor a client (a made-up node) get the connection closed.
        host, port = c.addr["n1"].split(":")
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(b"\x00" * 64)
            s.settimeout(10)
            self.assertEqual(s.recv(64), b"")
        self.assertGreaterEqual(c.status("n1")["auth_failures"], before + 3)

        # The same client with the CA (and the secret) is served, by flags alone.
        ca = os.path.join(self.certs, "ca.crt")
        r = run("--endpoint", c.addr["n2"], "--secret-file", secret, "--tls-ca", ca,
                "--tls-server-name", "localhost", "get", "k7")
        self.assertEqual((r.returncode, r.stdout), (0, "v7\n"), r.stderr)
        # Without a server name the host dialed is checked: the node certificate names
        # IP:127.0.0.1 too, which the client checks as an address.
        r = run("--endpoint", c.addr["n2"], "--secret-file", secret, "--tls-ca", ca, "get", "k7")
        self.assertEqual((r.returncode, r.stdout), (0, "v7\n"), r.stderr)
        self.assertEqual(c.cli("get", "intruder", check=False).returncode, 1)

    def test_verify_compares_the_replicas_through_tls(self):
        c = self.c
        for i in range(30):
            c.cli("put", f"k{i}", f"v{i}")
        c.wait_converged()
        r = c.cli("verify", "--range-keys", "10", timeout=120)
        self.assertRegex(r.stdout, r"^OK at seq \d+ \(epoch 1\): n1 \(leader\), n2, n3 "
                                   r"identical: 30 keys in 3 ranges\n$")

    def test_a_client_that_trusts_another_ca_or_checks_another_name_is_refused(self):
        c = self.c
        c.cli("put", "k", "v")
        secret = c.config + ".secret"
        other = make_certs(os.path.join(c.dir, "other-ca"))
        r = run("--endpoint", c.addr["n1"], "--secret-file", secret, "--tls-ca",
                os.path.join(other, "ca.crt"), "--tls-server-name", "localhost", "get", "k")
        self.assertEqual(r.returncode, 3, r.stderr)
        self.assertIn("not trusted", r.stderr)
        self.assertNotIn("v", r.stdout)
        r = run("--endpoint", c.addr["n1"], "--secret-file", secret, "--tls-ca",
                os.path.join(self.certs, "ca.crt"), "--tls-server-name", "walship.example",
                "get", "k")
        self.assertEqual(r.returncode, 3, r.stderr)
        self.assertIn("not trusted for 'walship.example'", r.stderr)
        # A CA file that holds no certificate is bad input, refused before connecting.
        bad = os.path.join(c.dir, "empty.crt")
        open(bad, "w").close()
        r = run("--endpoint", c.addr["n1"], "--tls-ca", bad, "get", "k")
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("holds no PEM certificate", r.stderr)

    def test_a_node_with_a_certificate_of_another_ca_does_not_start(self):
        c = self.c
        other = make_certs(os.path.join(c.dir, "other-ca"))
        c.stop("n3")
        with open(c.config) as f:
            text = f.read()
        text = text.replace('id = "n3"', 'id = "n3"\ntls_cert_file = "other-ca/node.crt"\n'
                            'tls_key_file = "other-ca/node.key"')
        bad = os.path.join(c.dir, "bad.toml")
        with open(bad, "w") as f:
            f.write(text)
        shutil.copy(c.config + ".secret", bad + ".secret")
        r = subprocess.run([WALSHIPD, "--config", bad, "--node", "n3"], capture_output=True,
                           text=True, timeout=30)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("does not verify against the CA file", r.stderr)


class VerifyClientsTest(unittest.TestCase):
    """Nodes that ask every connector for a certificate the CA signed (mutual TLS)."""

    def test_only_connectors_with_a_certificate_of_the_ca_are_served(self):
        c = Cluster(3, name="mtls", tls={"verify_clients": True,
                                         "client_cert_file": "certs/client.crt",
                                         "client_key_file": "certs/client.key"})
        try:
            c.start_all()  # the nodes follow each other with their node certificates
            for i in range(20):
                c.cli("put", f"k{i}", f"v{i}")  # the CLI presents the client certificate
            c.wait_converged()
            self.assertEqual(c.scan_all("n1"), c.scan_all("n3"))
            certs = os.path.join(c.dir, "certs")
            ca = os.path.join(certs, "ca.crt")
            # Without a certificate the client learns it in the handshake: not served, and a
            # write is refused before it is sent (not left in doubt).
            r = run("--endpoint", c.addr["n1"], "--tls-ca", ca, "--tls-server-name",
                    "localhost", "get", "k1")
            self.assertEqual(r.returncode, 3, r.stderr)
            self.assertIn("asks for a client certificate", r.stderr)
            self.assertNotIn("v1", r.stdout)
            r = run("--endpoint", c.addr["n1"], "--tls-ca", ca, "--tls-server-name",
                    "localhost", "put", "k1", "intruder")
            self.assertEqual(r.returncode, 3, r.stderr)
            self.assertIn("asks for a client certificate", r.stderr)
            # One from another CA: the CLI refuses it before connecting...
            other = make_certs(os.path.join(c.dir, "other-ca"))
            r = run("--endpoint", c.addr["n1"], "--tls-ca", ca, "--tls-server-name",
                    "localhost", "--tls-cert", os.path.join(other, "client.crt"), "--tls-key",
                    os.path.join(other, "client.key"), "get", "k1")
            self.assertEqual(r.returncode, 2, r.stderr)
            self.assertIn("does not verify against the CA file", r.stderr)
            # ...and the node, when a client presents it anyway, ends the connection.
            context = ssl.create_default_context(cafile=ca)
            context.load_cert_chain(os.path.join(other, "client.crt"),
                                    os.path.join(other, "client.key"))
            host, port = c.addr["n1"].split(":")
            with socket.create_connection((host, int(port)), timeout=10) as raw:
                try:
                    with context.wrap_socket(raw, server_hostname="localhost") as s:
                        s.sendall(b"WALSHIPC")
                        answered = s.recv(64)
                except (ssl.SSLError, ConnectionResetError):
                    answered = b""
            self.assertEqual(answered, b"")
            r = run("--endpoint", c.addr["n2"], "--tls-ca", ca, "--tls-server-name",
                    "localhost", "--tls-cert", os.path.join(certs, "client.crt"), "--tls-key",
                    os.path.join(certs, "client.key"), "get", "k1")
            self.assertEqual((r.returncode, r.stdout), (0, "v1\n"), r.stderr)
            self.assertGreaterEqual(c.status("n1")["auth_failures"], 2)
        finally:
            c.close()


class TlsConfigTest(unittest.TestCase):
    """What walshipd and `walship config check` refuse in a [tls] section."""

    def setUp(self):
        self.c = Cluster(2, name="tlsconf", tls={})

    def tearDown(self):
        self.c.close()

    def refused(self, replace, want, new=None):
        with open(self.c.config) as f:
            text = f.read()
        if new is not None:
            text = text.replace(replace, new)
        path = os.path.join(self.c.dir, "edited.toml")
        with open(path, "w") as f:
            f.write(text)
        r = subprocess.run([WALSHIPD, "--config", path, "--node", "n1"], capture_output=True,
                           text=True, timeout=30)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn(want, r.stderr)
        return r

    def test_bad_tls_settings_are_named(self):
        self.refused("server_name = 'localhost'\n",
                     "tls.server_name is missing and node n1 is reached at the IP address", "")
        self.refused("server_name = 'localhost'", "is an IP address",
                     "server_name = '127.0.0.1'")
        self.refused("ca_file = 'certs/ca.crt'\n", "tls.ca_file: missing", "")
        self.refused("key_file = 'certs/node.key'\n", "tls.key_file: missing", "")
        self.refused("server_name = 'localhost'", "tls.bogus: unknown key",
                     "server_name = 'localhost'\nbogus = 1")
        self.refused("certs/node.key", "is not the key of the certificate", "certs/client.key")
        # A certificate the CA signed for clients only, or one without the server name.
        self.refused("cert_file = 'certs/node.crt'\nkey_file = 'certs/node.key'",
                     "as a TLS server: unsuitable certificate purpose",
                     "cert_file = 'certs/client.crt'\nkey_file = 'certs/client.key'")
        self.refused("server_name = 'localhost'", "does not name 'walship.example'",
                     "server_name = 'walship.example'")
        r = subprocess.run([WALSHIP, "config", "check", self.c.config], capture_output=True,
                           text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("tls: CA ", r.stdout)
        self.assertIn("server name localhost", r.stdout)
        self.assertNotIn("WARNING", r.stdout)
        os.chmod(os.path.join(self.c.dir, "certs", "node.key"), 0o644)
        self.refused("", "may be read by others (mode 0644)")
        # config check names it too, as a warning (a node's files may be on its machine only).
        r = subprocess.run([WALSHIP, "config", "check", self.c.config], capture_output=True,
                           text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("WARNING: node n1: TLS key file", r.stdout)


if __name__ == "__main__":
    unittest.main()
