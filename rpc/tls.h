// TLS on walship's connections (docs/operations.md): what the config gives (files and the name
// to check), the checks made on those files before a node starts, and the TLS context the
// nodes' event loops use (Cap'n Proto's kj-tls). The blocking client's side is
// rpc/tls_channel.h.
//
// Every certificate is checked against the configured CA only (never the system's store): a
// cluster's nodes and clients trust the CA that signed them, nothing else. A node checks a
// connector's certificate only when `verify_clients` asks for one (mutual TLS); a connector
// always checks the node's, and the name in it.
#pragma once

#include <kj/async-io.h>
#include <kj/compat/tls.h>

#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "rpc/tls_options.h"

namespace walship::rpc {


// What a certificate is checked for beyond its chain: a node's must be usable by a TLS server
// (and by a client too when nodes verify clients: nodes connect to each other with it) and
// name options.server_name when set; a client's must be usable by a TLS client.
enum class TlsUse { kAny, kNode, kClient };

// Reads and checks the files `options` names: the CA file holds at least one certificate; the
// certificate and key (when `need_keypair`, or when either is given) are PEM, match each
// other, the key file may be read by its owner only, and the certificate verifies against
// the CA now for `use`. kInvalidArgument naming the file and what is wrong with it.
absl::Status CheckTlsFiles(const TlsOptions& options, bool need_keypair,
                           TlsUse use = TlsUse::kAny);

// The TLS context of a node (or of a tool that speaks to nodes on an event loop): trusts the
// CA file's certificates only, presents the certificate and key when given (as server, and as
// client when the other side asks), TLS 1.2 at least. kInvalidArgument as CheckTlsFiles.
absl::StatusOr<std::unique_ptr<kj::TlsContext>> MakeTlsContext(const TlsOptions& options);

// Whether the first bytes of a connection begin a TLS handshake (a handshake record of TLS
// 1.x): a node that requires TLS answers anything else in plain text, or closes it.
bool BeginsTlsHandshake(kj::ArrayPtr<const kj::byte> head);

}  // namespace walship::rpc
