// What TLS on walship's connections uses, as the config gives it (docs/operations.md): plain
// settings, without the TLS library's types, so that the blocking client's header stays light.
// rpc/tls.h checks the files and builds the nodes' TLS context; rpc/tls_channel.h is the
// blocking client's side.
#pragma once

#include <string>

namespace walship::rpc {

struct TlsOptions {
  std::string ca_file;    // PEM: the CA certificates a peer's certificate must chain to
  std::string cert_file;  // PEM: this side's certificate (its chain may follow it)
  std::string key_file;   // PEM: that certificate's private key, which only its owner may read
  // The DNS name a node's certificate must carry; "": the host of the address dialed, which
  // must then be a DNS name (kj-tls checks DNS names only: give IP-addressed nodes one name).
  std::string server_name;
  // Nodes: every connector (client or node) must present a certificate the CA signed.
  bool verify_clients = false;

  bool on() const { return !ca_file.empty(); }
};

// The name checked in the certificate of the node at "host:port" `address`.
std::string TlsServerName(const TlsOptions& options, const std::string& address);

}  // namespace walship::rpc
