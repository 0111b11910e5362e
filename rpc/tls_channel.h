// TLS for the blocking client (rpc/client.cc), with OpenSSL directly on its blocking socket:
// a request is one SSL_write (one write() of one record) and its reply one SSL_read (one
// read(), read-ahead on), so the one-write-per-round-trip path keeps its two system calls.
// The nodes' side is kj-tls (rpc/tls.h); both check certificates against the configured CA
// only.
//
// Thread safety: a channel belongs to the one client that uses it.
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "rpc/tls_options.h"

namespace walship::rpc {

class TlsChannel {
 public:
  // Runs the TLS handshake on `fd`, a connected blocking socket whose send and receive
  // time-outs the caller set (each step fails at `deadline`): the node's certificate must
  // chain to options.ca_file and carry `server_name`; options.cert_file and key_file, when
  // given, are presented if the node asks. kUnauthenticated when the node's certificate is
  // not trusted or names another host, kUnavailable when the handshake fails otherwise,
  // kInvalidArgument for unusable files. The channel does not own `fd`.
  static absl::StatusOr<std::unique_ptr<TlsChannel>> Open(int fd, const TlsOptions& options,
                                                          const std::string& server_name,
                                                          absl::Time deadline);
  ~TlsChannel();

  // Like send(2) and recv(2) on the socket: bytes moved, 0 at the end (Recv), or -1 with
  // errno (EAGAIN when the socket's time-out passed first; EPROTO for a TLS failure, whose
  // reason error() gives).
  ssize_t Send(const void* data, size_t size);
  ssize_t Recv(void* data, size_t size);
  const std::string& error() const { return error_; }

 private:
  struct State;
  explicit TlsChannel(std::unique_ptr<State> state);
  ssize_t Result(int n);
  std::unique_ptr<State> state_;
  std::string error_;
};

}  // namespace walship::rpc
