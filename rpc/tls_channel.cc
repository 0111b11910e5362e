#include "rpc/tls_channel.h"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"

namespace walship::rpc {
namespace {

// OpenSSL's reasons queued for this thread, joined, or `otherwise` when none is.
std::string Reasons(const char* otherwise) {
  std::string out;
  while (unsigned long e = ERR_get_error()) {
    char text[256];
    ERR_error_string_n(e, text, sizeof text);
    absl::StrAppend(&out, out.empty() ? "" : "; ", text);
  }
  return out.empty() ? otherwise : out;
}

// The socket under the TLS session: send() with MSG_NOSIGNAL (a node that closed the
// connection must not kill the client's process with SIGPIPE, which OpenSSL's own socket BIO
// would let write() raise), recv() as it is; a time-out (EAGAIN) asks OpenSSL to retry.
int SocketWrite(BIO* bio, const char* data, int size) {
  BIO_clear_retry_flags(bio);
  ssize_t n = ::send(static_cast<int>(BIO_get_fd(bio, nullptr)), data, static_cast<size_t>(size),
                     MSG_NOSIGNAL);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
    BIO_set_retry_write(bio);
  }
  return static_cast<int>(n);
}

int SocketRead(BIO* bio, char* data, int size) {
  BIO_clear_retry_flags(bio);
  ssize_t n = ::recv(static_cast<int>(BIO_get_fd(bio, nullptr)), data, static_cast<size_t>(size), 0);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
    BIO_set_retry_read(bio);
  }
  return static_cast<int>(n);
}

const BIO_METHOD* SocketMethod() {
  static const BIO_METHOD* const method = [] {
    // Starts from the socket BIO (its fd and control calls) and replaces the reads and writes.
    BIO_METHOD* m = BIO_meth_new(BIO_TYPE_SOCKET, "walship socket");
    const BIO_METHOD* socket = BIO_s_socket();
    BIO_meth_set_write(m, SocketWrite);
    BIO_meth_set_read(m, SocketRead);
    BIO_meth_set_ctrl(m, BIO_meth_get_ctrl(socket));
    BIO_meth_set_create(m, BIO_meth_get_create(socket));
    BIO_meth_set_destroy(m, BIO_meth_get_destroy(socket));
    return m;
  }();
  return method;
}

bool IsIpAddress(const std::string& host) {
  unsigned char buf[16];
  return ::inet_pton(AF_INET, host.c_str(), buf) == 1 ||
         ::inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

// The client's TLS settings as loaded from its files (OpenSSL 3 takes about a millisecond to
// build one): kept for the process and shared by its connections while the files are
// unchanged. An SSL_CTX may be used by several threads once set up.
absl::StatusOr<SSL_CTX*> ContextFor(const TlsOptions& options) {
  auto stamp = [](const std::string& path) -> std::string {
    struct stat st {};
    if (path.empty() || ::stat(path.c_str(), &st) != 0) return "-";
    return absl::StrCat(st.st_ino, ".", st.st_size, ".", st.st_mtim.tv_sec, ".",
                        st.st_mtim.tv_nsec);
  };
  std::string key = absl::StrCat(options.ca_file, "|", stamp(options.ca_file), "|",
                                 options.cert_file, "|", stamp(options.cert_file), "|",
                                 options.key_file, "|", stamp(options.key_file));
  static absl::Mutex mu;
  static auto* contexts = new std::map<std::string, SSL_CTX*>();
  absl::MutexLock lock(&mu);
  if (auto it = contexts->find(key); it != contexts->end()) return it->second;
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  if (ctx == nullptr) return absl::InternalError(Reasons("SSL_CTX_new failed"));
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_read_ahead(ctx, 1);  // a whole record (or more) in one read()
  if (SSL_CTX_load_verify_locations(ctx, options.ca_file.c_str(), nullptr) != 1) {
    SSL_CTX_free(ctx);
    return absl::InvalidArgumentError(absl::StrCat("TLS CA file ", options.ca_file, ": ",
                                                   Reasons("cannot load it")));
  }
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  // Called when the node asks for a client certificate and the client has none: noted, so
  // that Open can say so (a client with a certificate is not asked this).
  SSL_CTX_set_client_cert_cb(ctx, [](SSL* ssl, X509**, EVP_PKEY**) {
    if (void* asked = SSL_get_app_data(ssl)) *static_cast<bool*>(asked) = true;
    return 0;
  });
  if (!options.cert_file.empty()) {
    if (SSL_CTX_use_certificate_chain_file(ctx, options.cert_file.c_str()) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, options.key_file.c_str(), SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
      SSL_CTX_free(ctx);
      return absl::InvalidArgumentError(absl::StrCat("TLS certificate ", options.cert_file,
                                                     " or key ", options.key_file, ": ",
                                                     Reasons("cannot load them")));
    }
  }
  (*contexts)[key] = ctx;
  return ctx;
}

}  // namespace

struct TlsChannel::State {
  ~State() {
    if (ssl != nullptr) SSL_free(ssl);
  }
  SSL* ssl = nullptr;
};

TlsChannel::TlsChannel(std::unique_ptr<State> state) : state_(std::move(state)) {}
TlsChannel::~TlsChannel() = default;

absl::StatusOr<std::unique_ptr<TlsChannel>> TlsChannel::Open(int fd, const TlsOptions& options,
                                                             const std::string& server_name,
                                                             absl::Time deadline) {
  ERR_clear_error();
  absl::StatusOr<SSL_CTX*> ctx = ContextFor(options);
  if (!ctx.ok()) return ctx.status();
  auto state = std::make_unique<State>();
  state->ssl = SSL_new(*ctx);
  if (state->ssl == nullptr) return absl::InternalError(Reasons("SSL_new failed"));
  SSL* ssl = state->ssl;
  BIO* bio = BIO_new(SocketMethod());
  BIO_set_fd(bio, fd, BIO_NOCLOSE);
  SSL_set_bio(ssl, bio, bio);
  // OpenSSL 3 checks an IP address literal against the certificate's IP addresses too.
  SSL_set1_host(ssl, server_name.c_str());
  if (!IsIpAddress(server_name)) SSL_set_tlsext_host_name(ssl, server_name.c_str());
  bool asked_for_certificate = false;
  SSL_set_app_data(ssl, &asked_for_certificate);
  while (true) {
    // Each try is bounded by the time left, so a node that trickles its handshake cannot
    // hold the client past `deadline`.
    absl::Duration left = std::max(deadline - absl::Now(), absl::Milliseconds(1));
    timeval tv = absl::ToTimeval(left);
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    int r = SSL_connect(ssl);
    if (r == 1) break;
    int error = SSL_get_error(ssl, r);
    if ((error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE) &&
        absl::Now() < deadline) {
      continue;  // the socket's time-out passed; the deadline decides
    }
    long verified = SSL_get_verify_result(ssl);
    if (verified != X509_V_OK) {
      ERR_clear_error();
      return absl::UnauthenticatedError(
          absl::StrCat("the node's TLS certificate is not trusted for '", server_name,
                       "': ", X509_verify_cert_error_string(verified)));
    }
    if (error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE) {
      return absl::UnavailableError("the node did not finish the TLS handshake in time");
    }
    if (error == SSL_ERROR_SYSCALL || error == SSL_ERROR_ZERO_RETURN) {
      ERR_clear_error();
      return absl::UnavailableError(
          "the node closed the connection during the TLS handshake (does it use TLS, and "
          "does it ask for a client certificate this client did not give?)");
    }
    return absl::UnavailableError(
        absl::StrCat("the TLS handshake failed: ", Reasons("no reason given")));
  }
  SSL_set_app_data(ssl, nullptr);  // the flag is Open's own
  if (asked_for_certificate) {
    // With TLS 1.3 the node would only refuse after the handshake, on the first request
    // (which would then look in doubt): say so now.
    return absl::UnauthenticatedError(
        "the node asks for a client certificate (its [tls] verify_clients) and this client "
        "has none: give --tls-cert and --tls-key, or client_cert_file and client_key_file in "
        "the config's [tls]");
  }
  return std::unique_ptr<TlsChannel>(new TlsChannel(std::move(state)));
}

ssize_t TlsChannel::Result(int n) {
  if (n > 0) return n;
  int error = SSL_get_error(state_->ssl, n);
  switch (error) {
    case SSL_ERROR_ZERO_RETURN:
      return 0;
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:
      errno = EAGAIN;
      return -1;
    case SSL_ERROR_SYSCALL:
      ERR_clear_error();
      if (errno == 0) return 0;  // the socket ended without a TLS close
      return -1;
    default:
      error_ = Reasons("TLS error");
      errno = EPROTO;
      return -1;
  }
}

ssize_t TlsChannel::Send(const void* data, size_t size) {
  ERR_clear_error();
  errno = 0;
  ssize_t n =
      Result(SSL_write(state_->ssl, data, static_cast<int>(std::min<size_t>(size, INT32_MAX))));
  if (n == 0) {  // the node ended the connection: no byte can go out
    errno = EPIPE;
    return -1;
  }
  return n;
}

ssize_t TlsChannel::Recv(void* data, size_t size) {
  ERR_clear_error();
  errno = 0;
  return Result(SSL_read(state_->ssl, data, static_cast<int>(std::min<size_t>(size, INT32_MAX))));
}

}  // namespace walship::rpc
