#!/usr/bin/env bash
# Makes a throwaway certificate authority and certificates signed by it, for tests, benchmarks
# and trying TLS on one machine (docs/operations.md). Not for production: the CA's key sits
# beside the certificates it signed.
#   scripts/make-test-certs.sh DIR
# writes, in DIR:
#   ca.crt ca.key          the CA (P-256, valid 30 days)
#   node.crt node.key      a node certificate for DNS:localhost, DNS:walship.test and
#                          IP:127.0.0.1 (server and client use)
#   client.crt client.key  a client certificate (CN walship-client), for nodes that verify
#                          clients
# Keys are written mode 600. Needs the openssl command (Debian's openssl package).
set -euo pipefail
dir=${1:?usage: make-test-certs.sh DIR}
mkdir -p "$dir"
cd "$dir"
umask 077
days=30
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.crt \
  -subj "/CN=walship test CA" -days "$days" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
  2>/dev/null
sign() {  # name subject extensions
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$1.key" -out "$1.csr" \
    -subj "$2" 2>/dev/null
  printf '%s\n' "$3" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -out "$1.crt" \
    -days "$days" -extfile "$1.ext" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}
sign node "/CN=walship node" "$(printf '%s\n' \
  'subjectAltName=DNS:localhost,DNS:walship.test,IP:127.0.0.1' \
  'extendedKeyUsage=serverAuth,clientAuth')"
sign client "/CN=walship-client" 'extendedKeyUsage=clientAuth'
rm -f ca.srl
chmod 644 ca.crt node.crt client.crt
