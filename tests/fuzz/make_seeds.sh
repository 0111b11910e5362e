#!/usr/bin/env bash
# Writes the seed corpus of the fuzz targets (corpus/<target>/seed-*). Run from anywhere;
# needs the capnp tool (Debian's capnproto). The fuzzers add their own finds beside these.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
rpc="$here/../../rpc"
c="$here/corpus"
mkdir -p "$c"/{client_request,peer_message,batch,config,node_state}
enc() { capnp encode --no-standard-import -I/usr/include "$rpc/$1" "$2"; }

echo '(write = (ops = [(type = put, key = "k", value = "v"), (type = delete, key = "d"),
  (type = deleteRange, key = "a", value = "c")], mode = async))' |
  enc client.capnp Request >"$c/client_request/seed-write"
echo '(writeMany = (writes = [(ops = [(type = put, key = "a", value = "1")]),
  (ops = [(type = put, key = "b", value = "2")], mode = sync)]))' |
  enc client.capnp Request >"$c/client_request/seed-write-many"
echo '(get = (key = "k", minSeq = 7))' | enc client.capnp Request >"$c/client_request/seed-get"
echo '(scan = (start = "a", prefix = "", limit = 5000, minSeq = 1))' |
  enc client.capnp Request >"$c/client_request/seed-scan"
echo '(status = void)' | enc client.capnp Request >"$c/client_request/seed-status"

# Peer messages: one byte for the kind (0 Hello, 1 HelloReply, 2 Ship, 3 Ack), then it.
peer() { { printf "\\x$1"; enc peer.capnp "$2"; } >"$c/peer_message/$3"; }
echo '(cluster = "demo", databaseId = "ab12", followerId = "n2", epoch = 3, lastApplied = 10,
  lastAppliedEpoch = 2)' | peer 00 Hello seed-hello
echo '(outcome = accepted, epoch = 3, databaseId = "ab12",
  history = [(epoch = 1, startSeq = 1), (epoch = 3, startSeq = 11)], leaderLatest = 20)' |
  peer 01 HelloReply seed-hello-reply
echo '(epoch = 3, batches = [(firstSeq = 11, count = 1,
  data = 0x"0b 00 00 00 00 00 00 00 01 00 00 00 01 01 6b 01 76", leaderTimeUs = 5)],
  leaderLatest = 11, leaderTimeUs = 6, maxAckDelayUs = 100)' | peer 02 Ship seed-ship
echo '(epoch = 3, outcome = gap, received = 11, durable = 10, applied = 11, message = "x")' |
  peer 03 Ack seed-ack

# Batches: the op count (fixed32), then WriteBatch bytes: a 12-byte header (sequence, count),
# then records (0x01 put, 0x00 delete, 0x0F range delete, 0x03 log data; varint lengths).
printf '\x01\x00\x00\x00''\x01\x00\x00\x00\x00\x00\x00\x00''\x01\x00\x00\x00''\x01\x01k\x01v' \
  >"$c/batch/seed-put"
printf '\x03\x00\x00\x00''\x01\x00\x00\x00\x00\x00\x00\x00''\x03\x00\x00\x00' >"$c/batch/seed-three"
printf '\x01\x01a\x011''\x00\x01b''\x0f\x01c\x01d' >>"$c/batch/seed-three"
printf '\x01\x00\x00\x00''\x01\x00\x00\x00\x00\x00\x00\x00''\x01\x00\x00\x00' >"$c/batch/seed-logdata"
printf '\x03\x0cwsT1\x01\x02\x03\x04\x05\x06\x07\x08''\x01\x01k\x01v' >>"$c/batch/seed-logdata"

cp "$here/../../examples/cluster.toml" "$c/config/seed-example.toml"
cat >"$c/config/seed-one-node.toml" <<'TOML'
[cluster]
name = "solo"

[[node]]
id = "n1"
listen = "127.0.0.1:7101"
data_dir = "/tmp/solo"
TOML
cat >"$c/config/seed-tunables.toml" <<'TOML'
[cluster]
name = "t"

[replication]
max_ship_bytes = 4096
fsync_writes = true
max_client_connections = 16
client_idle_timeout_ms = 1000

[[node]]
id = "a"
listen = "127.0.0.1:1"
data_dir = "a"
role = "leader"

[[node]]
id = "b"
listen = "127.0.0.1:2"
data_dir = "b"
role = "follower"
TOML

printf 'walship-node-state 1\ndatabase_id ab12cd\nepoch 3\nhistory 1 1\nhistory 3 11\n' \
  >"$c/node_state/seed-state"
printf 'walship-node-state 1\n' >"$c/node_state/seed-empty"
# The same state as the node writes it: two copies, the second the newer (replication/slot_file.h).
python3 - "$c/node_state/seed-slots" <<'PY'
import sys, zlib
def slot(gen, body):
    crc = zlib.crc32(b"%d %d\n" % (gen, len(body)) + body)
    return (b"walship-slots 1 %d %d %08x\n" % (gen, len(body), crc) + body).ljust(4096, b"\0")
body = b"walship-node-state 4\ndatabase_id ab12cd\nepoch %d\nhistory 1 1 n1\nhistory 3 11 n2\n"
open(sys.argv[1], "wb").write(slot(1, body % 3) + slot(2, body % 4))
PY
