#include "rpc/etcd_client.h"

#include <nlohmann/json.hpp>

#include <charconv>
#include <stdexcept>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace walship::rpc {
namespace {

using json = nlohmann::json;

std::string B64(const std::string& s) { return absl::Base64Escape(s); }

// An answer of another shape than etcd's: caught by Decoded, which names it.
struct BadAnswer : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// A base64 field of `obj` ("" when absent: the gateway leaves out empty ones).
std::string UnB64(const json& obj, const char* name) {
  auto it = obj.find(name);
  if (it == obj.end()) return "";
  std::string out;
  if (!it->is_string() || !absl::Base64Unescape(it->get<std::string>(), &out)) {
    throw BadAnswer(absl::StrCat("field '", name, "' is not base64"));
  }
  return out;
}

// The gateway writes 64-bit numbers as strings, and leaves out fields that are zero.
int64_t Int(const json& obj, const char* name) {
  if (!obj.is_object()) return 0;
  auto it = obj.find(name);
  if (it == obj.end()) return 0;
  if (it->is_number_integer()) return it->get<int64_t>();
  if (!it->is_string()) return 0;
  const std::string& s = it->get_ref<const std::string&>();
  int64_t v = 0;
  std::from_chars(s.data(), s.data() + s.size(), v);
  return v;
}

EtcdKv KvOf(const json& kv) {
  if (!kv.is_object()) throw BadAnswer("a key-value that is not an object");
  EtcdKv out;
  out.key = UnB64(kv, "key");
  out.value = UnB64(kv, "value");
  out.create_revision = Int(kv, "create_revision");
  if (out.create_revision <= 0) throw BadAnswer("a key without its create_revision");
  out.mod_revision = Int(kv, "mod_revision");
  out.lease = Int(kv, "lease");
  return out;
}

// The first key after every key that begins with `prefix` (etcd's range_end for a prefix).
std::string PrefixEnd(std::string prefix) {
  while (!prefix.empty()) {
    if (static_cast<unsigned char>(prefix.back()) < 0xff) {
      prefix.back() = static_cast<char>(prefix.back() + 1);
      return prefix;
    }
    prefix.pop_back();
  }
  return std::string(1, '\0');  // every key
}

absl::StatusOr<json> Parse(const absl::StatusOr<std::string>& body) {
  if (!body.ok()) return body.status();
  json j = json::parse(*body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::UnavailableError(absl::StrCat("etcd answered with something that is not a "
                                               "JSON object: ", body->substr(0, 200)));
  }
  // An error inside a 200 answer (a streamed call's error).
  if (j.contains("error")) {
    const json& e = j["error"];
    auto m = e.is_object() ? e.find("message") : e.end();  // else the error as it is
    std::string msg = m != e.end() && m->is_string() ? m->get<std::string>() : e.dump();
    return absl::UnavailableError(absl::StrCat("etcd: ", msg));
  }
  return j;
}

// etcd's answer `body` read by `decode`: an answer of another shape than etcd's (a field of
// another type, a key without its revision, a value that is not base64) is an error that
// names it, never an exception that would end the caller's loop.
template <typename T, typename Decode>
absl::StatusOr<T> Decoded(const absl::StatusOr<std::string>& body, Decode decode) {
  absl::StatusOr<json> j = Parse(body);
  if (!j.ok()) return j.status();
  try {
    return decode(*j);
  } catch (const std::exception& e) {
    return absl::DataLossError(absl::StrCat("etcd answered with something walship cannot "
                                            "read (", e.what(), "): ", body->substr(0, 200)));
  }
}

}  // namespace

absl::Status CheckEtcdEndpoint(const std::string& endpoint) {
  if (absl::StartsWith(endpoint, "https://")) {
    return absl::InvalidArgumentError(absl::StrCat(
        "'", endpoint, "': https is not supported; give etcd's plain http client URL"));
  }
  if (!absl::StartsWith(endpoint, "http://")) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", endpoint, "' must be an etcd client URL, http://HOST:PORT"));
  }
  std::string rest = endpoint.substr(7);
  size_t colon = rest.rfind(':');
  if (rest.empty() || rest.find('/') != std::string::npos || colon == std::string::npos ||
      colon == 0 || colon + 1 == rest.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "'", endpoint, "' must be http://HOST:PORT, with no path (as http://127.0.0.1:2379)"));
  }
  int port = 0;
  auto [end, ec] = std::from_chars(rest.data() + colon + 1, rest.data() + rest.size(), port);
  if (ec != std::errc() || end != rest.data() + rest.size() || port < 1 || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", endpoint, "': the port must be a number from 1 to 65535"));
  }
  return absl::OkStatus();
}

EtcdClient::EtcdClient(kj::AsyncIoContext& io, std::vector<std::string> endpoints,
                       uint32_t timeout_ms)
    : io_(io), endpoints_(std::move(endpoints)), timeout_ms_(timeout_ms) {
  kj::HttpHeaderTable::Builder builder;
  table_ = builder.build();
  kj::HttpClientSettings settings;
  settings.idleTimeout = 30 * kj::SECONDS;  // keep connections to etcd open between calls
  http_ = kj::newHttpClient(io.provider->getTimer(), *table_, io.provider->getNetwork(),
                            nullptr, settings);
}

EtcdClient::~EtcdClient() = default;

kj::Promise<absl::StatusOr<std::string>> EtcdClient::Call(std::string path, std::string body) {
  return CallFrom(current_, endpoints_.size(), std::move(path), std::move(body), "");
}

// Tried on each endpoint once, from the one that answered last; `errors` says how the earlier
// ones failed.
kj::Promise<absl::StatusOr<std::string>> EtcdClient::CallFrom(size_t index, size_t left,
                                                              std::string path, std::string body,
                                                              std::string errors) {
  auto answer = CallAt(index, path, body);
  return answer.then([this, index, left, path = std::move(path), body = std::move(body),
                      errors = std::move(errors)](absl::StatusOr<std::string> a) mutable
                     -> kj::Promise<absl::StatusOr<std::string>> {
    if (a.ok()) {
      current_ = index;
      return kj::mv(a);
    }
    absl::StrAppend(&errors, errors.empty() ? "" : "; ", endpoints_[index], ": ",
                    a.status().message());
    if (left <= 1) {
      return absl::StatusOr<std::string>(
          absl::UnavailableError(absl::StrCat("no etcd endpoint answered: ", errors)));
    }
    return CallFrom((index + 1) % endpoints_.size(), left - 1, std::move(path), std::move(body),
                    std::move(errors));
  });
}

kj::Promise<absl::StatusOr<std::string>> EtcdClient::CallAt(size_t index, std::string path,
                                                            std::string body) {
  std::string url = absl::StrCat(endpoints_[index], path);
  kj::HttpHeaders headers(*table_);
  headers.set(kj::HttpHeaderId::CONTENT_TYPE, "application/json");
  auto call =
      kj::evalNow([&]() {
        auto req = http_->request(kj::HttpMethod::POST, kj::StringPtr(url.c_str()), headers,
                                  static_cast<uint64_t>(body.size()));
        auto text = kj::heapString(body.data(), body.size());
        auto written = req.body->write(text.begin(), text.size()).attach(kj::mv(text),
                                                                          kj::mv(req.body));
        return written.then([response = kj::mv(req.response)]() mutable {
          return kj::mv(response);
        });
      })
          .then([](kj::HttpClient::Response r) {
            uint status = r.statusCode;
            return r.body->readAllText().attach(kj::mv(r.body)).then(
                [status](kj::String text) -> absl::StatusOr<std::string> {
                  std::string s(text.cStr(), text.size());
                  if (status != 200) {
                    return absl::UnavailableError(
                        absl::StrCat("HTTP ", status, ": ", s.substr(0, 200)));
                  }
                  return s;
                });
          })
          .catch_([](kj::Exception&& e) -> absl::StatusOr<std::string> {
            return absl::UnavailableError(e.getDescription().cStr());
          });
  return call.exclusiveJoin(
      io_.provider->getTimer().afterDelay(timeout_ms_ * kj::MILLISECONDS).then([this]() {
        return absl::StatusOr<std::string>(
            absl::DeadlineExceededError(absl::StrCat("no answer within ", timeout_ms_, " ms")));
      }));
}

kj::Promise<absl::StatusOr<EtcdLease>> EtcdClient::Grant(int64_t ttl_s) {
  return Call("/v3/lease/grant", json{{"TTL", ttl_s}}.dump())
      .then([](absl::StatusOr<std::string> body) {
        return Decoded<EtcdLease>(body, [](const json& j) -> absl::StatusOr<EtcdLease> {
          EtcdLease lease{Int(j, "ID"), Int(j, "TTL")};
          if (lease.id == 0) {
            return absl::UnavailableError(absl::StrCat("etcd granted no lease: ", j.dump()));
          }
          return lease;
        });
      });
}

kj::Promise<absl::StatusOr<int64_t>> EtcdClient::KeepAlive(int64_t lease) {
  return Call("/v3/lease/keepalive", json{{"ID", std::to_string(lease)}}.dump())
      .then([](absl::StatusOr<std::string> body) {
        // A stream of answers; this client sends one request, so reads the first line.
        if (body.ok()) body = body->substr(0, body->find('\n'));
        return Decoded<int64_t>(body, [](const json& j) -> absl::StatusOr<int64_t> {
          // No result, or no TTL in it: etcd no longer holds the lease.
          auto result = j.find("result");
          return result == j.end() ? int64_t{0} : Int(*result, "TTL");
        });
      });
}

kj::Promise<absl::Status> EtcdClient::Revoke(int64_t lease) {
  return Call("/v3/lease/revoke", json{{"ID", std::to_string(lease)}}.dump())
      .then([](absl::StatusOr<std::string> body) { return Parse(body).status(); });
}

kj::Promise<absl::StatusOr<std::optional<EtcdKv>>> EtcdClient::Get(std::string key) {
  return Call("/v3/kv/range", json{{"key", B64(key)}}.dump())
      .then([](absl::StatusOr<std::string> body) {
        return Decoded<std::optional<EtcdKv>>(
            body, [](const json& j) -> absl::StatusOr<std::optional<EtcdKv>> {
              auto kvs = j.find("kvs");
              if (kvs == j.end() || !kvs->is_array() || kvs->empty()) return std::nullopt;
              return KvOf((*kvs)[0]);
            });
      });
}

kj::Promise<absl::StatusOr<std::vector<EtcdKv>>> EtcdClient::GetPrefix(std::string prefix) {
  return Call("/v3/kv/range",
              json{{"key", B64(prefix)}, {"range_end", B64(PrefixEnd(prefix))}}.dump())
      .then([](absl::StatusOr<std::string> body) {
        return Decoded<std::vector<EtcdKv>>(
            body, [](const json& j) -> absl::StatusOr<std::vector<EtcdKv>> {
              std::vector<EtcdKv> out;
              auto kvs = j.find("kvs");
              if (kvs != j.end() && kvs->is_array()) {
                for (const json& kv : *kvs) out.push_back(KvOf(kv));
              }
              return out;
            });
      });
}

kj::Promise<absl::Status> EtcdClient::Put(std::string key, std::string value, int64_t lease) {
  json req{{"key", B64(key)}, {"value", B64(value)}};
  if (lease != 0) req["lease"] = std::to_string(lease);
  return Call("/v3/kv/put", req.dump()).then([](absl::StatusOr<std::string> body) {
    return Parse(body).status();
  });
}

kj::Promise<absl::Status> EtcdClient::Delete(std::string key) {
  return Call("/v3/kv/deleterange", json{{"key", B64(key)}}.dump())
      .then([](absl::StatusOr<std::string> body) { return Parse(body).status(); });
}

namespace {

// A transaction's "succeeded" (left out when false).
bool Succeeded(const json& j) {
  auto it = j.find("succeeded");
  if (it == j.end()) return false;
  if (!it->is_boolean()) throw BadAnswer("'succeeded' is not true or false");
  return it->get<bool>();
}

}  // namespace

kj::Promise<absl::StatusOr<EtcdCreate>> EtcdClient::CreateIfAbsent(std::string key,
                                                                   std::string value,
                                                                   int64_t lease) {
  json put{{"key", B64(key)}, {"value", B64(value)}, {"lease", std::to_string(lease)}};
  json txn{{"compare", json::array({json{{"key", B64(key)},
                                         {"target", "CREATE"},
                                         {"result", "EQUAL"},
                                         {"create_revision", "0"}}})},
           {"success", json::array({json{{"request_put", put}}})},
           {"failure", json::array({json{{"request_range", json{{"key", B64(key)}}}}})}};
  return Call("/v3/kv/txn", txn.dump()).then([](absl::StatusOr<std::string> body) {
    return Decoded<EtcdCreate>(body, [](const json& j) -> absl::StatusOr<EtcdCreate> {
      EtcdCreate out;
      out.created = Succeeded(j);
      auto header = j.find("header");
      if (header != j.end()) out.revision = Int(*header, "revision");
      if (!out.created) {
        auto responses = j.find("responses");
        if (responses != j.end() && responses->is_array() && !responses->empty() &&
            (*responses)[0].is_object()) {
          auto range = (*responses)[0].find("response_range");
          if (range != (*responses)[0].end() && range->is_object()) {
            auto kvs = range->find("kvs");
            if (kvs != range->end() && kvs->is_array() && !kvs->empty()) {
              out.holder = KvOf((*kvs)[0]);
            }
          }
        }
      }
      if (out.created && out.revision == 0) {
        return absl::UnavailableError("etcd's answer to the transaction names no revision");
      }
      return out;
    });
  });
}

kj::Promise<absl::StatusOr<bool>> EtcdClient::DeleteIfCreated(std::string key,
                                                              int64_t create_revision) {
  json txn{{"compare", json::array({json{{"key", B64(key)},
                                         {"target", "CREATE"},
                                         {"result", "EQUAL"},
                                         {"create_revision", std::to_string(create_revision)}}})},
           {"success", json::array({json{{"request_delete_range", json{{"key", B64(key)}}}}})}};
  return Call("/v3/kv/txn", txn.dump()).then([](absl::StatusOr<std::string> body) {
    return Decoded<bool>(body, [](const json& j) -> absl::StatusOr<bool> {
      return Succeeded(j);
    });
  });
}

}  // namespace walship::rpc
