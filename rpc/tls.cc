#include "rpc/tls.h"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace walship::rpc {
namespace {

absl::StatusOr<std::string> ReadPem(const std::string& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " ", path, ": cannot read it: ", std::strerror(errno)));
  }
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// OpenSSL's reason for the last failure, or `otherwise` when it gave none.
std::string OpensslReason(const char* otherwise) {
  unsigned long e = ERR_get_error();
  ERR_clear_error();
  if (e == 0) return otherwise;
  char text[256];
  ERR_error_string_n(e, text, sizeof text);
  return text;
}

struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
struct PkeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
using X509Ptr = std::unique_ptr<X509, X509Free>;

// Every certificate in the PEM text, in order.
std::vector<X509Ptr> Certificates(const std::string& pem) {
  std::vector<X509Ptr> out;
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  while (X509* x = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr)) out.emplace_back(x);
  BIO_free(bio);
  ERR_clear_error();  // the loop ends on "no start line"
  return out;
}

// Each PEM certificate block of `pem` on its own (kj::TlsCertificate reads the first of a text
// as the certificate and the rest as its chain; a CA file's certificates are each trusted).
std::vector<std::string> CertificateBlocks(const std::string& pem) {
  static constexpr std::string_view kBegin = "-----BEGIN CERTIFICATE-----";
  static constexpr std::string_view kEnd = "-----END CERTIFICATE-----";
  std::vector<std::string> out;
  size_t at = 0;
  while ((at = pem.find(kBegin, at)) != std::string::npos) {
    size_t end = pem.find(kEnd, at);
    if (end == std::string::npos) break;
    out.push_back(pem.substr(at, end + kEnd.size() - at) + "\n");
    at = end + kEnd.size();
  }
  return out;
}

absl::Status CheckKeyFileMode(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("TLS key file ", path, ": cannot read it: ", std::strerror(errno)));
  }
  if ((st.st_mode & 077) != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "TLS key file %s may be read by others (mode %04o); it holds a private key: chmod 600 it",
        path, st.st_mode & 07777));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CheckTlsFiles(const TlsOptions& options, bool need_keypair, TlsUse use) {
  if (options.ca_file.empty()) return absl::InvalidArgumentError("TLS needs a CA file (ca_file)");
  auto ca_pem = ReadPem(options.ca_file, "TLS CA file");
  if (!ca_pem.ok()) return ca_pem.status();
  std::vector<X509Ptr> cas = Certificates(*ca_pem);
  if (cas.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("TLS CA file ", options.ca_file, " holds no PEM certificate"));
  }
  bool keypair = need_keypair || !options.cert_file.empty() || !options.key_file.empty();
  if (!keypair) return absl::OkStatus();
  if (options.cert_file.empty() || options.key_file.empty()) {
    return absl::InvalidArgumentError(
        "TLS needs both a certificate file and its key file (cert_file and key_file)");
  }
  auto cert_pem = ReadPem(options.cert_file, "TLS certificate file");
  if (!cert_pem.ok()) return cert_pem.status();
  std::vector<X509Ptr> chain = Certificates(*cert_pem);
  if (chain.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("TLS certificate file ", options.cert_file, " holds no PEM certificate"));
  }
  if (absl::Status s = CheckKeyFileMode(options.key_file); !s.ok()) return s;
  auto key_pem = ReadPem(options.key_file, "TLS key file");
  if (!key_pem.ok()) return key_pem.status();
  BIO* bio = BIO_new_mem_buf(key_pem->data(), static_cast<int>(key_pem->size()));
  std::unique_ptr<EVP_PKEY, PkeyFree> key(
      PEM_read_bio_PrivateKey(bio, nullptr, nullptr, nullptr));
  BIO_free(bio);
  if (key == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("TLS key file ", options.key_file, " holds no PEM private key (",
                     OpensslReason("unreadable"), "; an encrypted key is not supported)"));
  }
  if (X509_check_private_key(chain[0].get(), key.get()) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError(absl::StrCat("TLS key file ", options.key_file,
                                                   " is not the key of the certificate in ",
                                                   options.cert_file));
  }
  // The certificate must chain to the CA now, for the use it is put to: a node that starts
  // with a certificate nobody in the cluster trusts (one that expired, or one not meant for
  // a server) would only fail every connection later.
  std::vector<std::pair<int, const char*>> purposes;
  if (use == TlsUse::kNode) purposes.push_back({X509_PURPOSE_SSL_SERVER, " as a TLS server"});
  if (use == TlsUse::kClient || (use == TlsUse::kNode && options.verify_clients)) {
    purposes.push_back({X509_PURPOSE_SSL_CLIENT, " as a TLS client"});
  }
  if (purposes.empty()) purposes.push_back({0, ""});
  for (const auto& [purpose, as] : purposes) {
    X509_STORE* store = X509_STORE_new();
    for (const X509Ptr& ca : cas) X509_STORE_add_cert(store, ca.get());
    STACK_OF(X509)* untrusted = sk_X509_new_null();
    for (size_t i = 1; i < chain.size(); ++i) sk_X509_push(untrusted, chain[i].get());
    X509_STORE_CTX* ctx = X509_STORE_CTX_new();
    X509_STORE_CTX_init(ctx, store, chain[0].get(), untrusted);
    if (purpose != 0) X509_STORE_CTX_set_purpose(ctx, purpose);
    bool trusted = X509_verify_cert(ctx) == 1;
    std::string why = X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx));
    X509_STORE_CTX_free(ctx);
    sk_X509_free(untrusted);
    X509_STORE_free(store);
    ERR_clear_error();
    if (!trusted) {
      return absl::InvalidArgumentError(absl::StrCat("TLS certificate ", options.cert_file,
                                                     " does not verify against the CA file ",
                                                     options.ca_file, as, ": ", why));
    }
  }
  if (use == TlsUse::kNode && !options.server_name.empty() &&
      X509_check_host(chain[0].get(), options.server_name.data(), options.server_name.size(), 0,
                      nullptr) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError(absl::StrCat("TLS certificate ", options.cert_file,
                                                   " does not name '", options.server_name,
                                                   "' (tls.server_name), which the others "
                                                   "check"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<kj::TlsContext>> MakeTlsContext(const TlsOptions& options) {
  if (absl::Status s = CheckTlsFiles(options, false); !s.ok()) return s;
  std::unique_ptr<kj::TlsContext> context;
  KJ_IF_MAYBE(e, kj::runCatchingExceptions([&]() {
                std::string ca_pem = *ReadPem(options.ca_file, "TLS CA file");
                std::vector<kj::TlsCertificate> trusted;
                for (const std::string& block : CertificateBlocks(ca_pem)) {
                  trusted.emplace_back(kj::StringPtr(block.c_str()));
                }
                kj::TlsContext::Options o;
                o.useSystemTrustStore = false;
                o.trustedCertificates = kj::arrayPtr(trusted.data(), trusted.size());
                o.verifyClients = options.verify_clients;
                o.minVersion = kj::TlsVersion::TLS_1_2;
                kj::Maybe<kj::TlsKeypair> keypair;
                if (!options.cert_file.empty()) {
                  std::string cert = *ReadPem(options.cert_file, "TLS certificate file");
                  std::string key = *ReadPem(options.key_file, "TLS key file");
                  keypair = kj::TlsKeypair{kj::TlsPrivateKey(kj::StringPtr(key.c_str())),
                                           kj::TlsCertificate(kj::StringPtr(cert.c_str()))};
                  KJ_IF_MAYBE(kp, keypair) { o.defaultKeypair = *kp; }
                }
                context = std::make_unique<kj::TlsContext>(kj::mv(o));
              })) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot set up TLS: ", e->getDescription().cStr()));
  }
  return context;
}

std::string TlsServerName(const TlsOptions& options, const std::string& address) {
  if (!options.server_name.empty()) return options.server_name;
  std::string host = address.substr(0, address.rfind(':'));
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  return host;
}

bool BeginsTlsHandshake(kj::ArrayPtr<const kj::byte> head) {
  // A TLS record: content type 22 (handshake), then the protocol version's major byte 3.
  return head.size() >= 2 && head[0] == 0x16 && head[1] == 0x03;
}

}  // namespace walship::rpc
