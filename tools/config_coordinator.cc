#include "tools/config_coordinator.h"

#include <optional>
#include <set>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "rpc/etcd_client.h"

namespace walship::tools {
namespace {

absl::Status ReadUint(const ConfigError& err, const toml::node& v, const std::string& key,
                      uint32_t lo, uint32_t hi, uint32_t& out) {
  std::optional<int64_t> n = v.value<int64_t>();
  if (!v.is_integer() || *n < lo || *n > hi) {
    return err.At(v.source(), key, absl::StrCat("must be an integer from ", lo, " to ", hi));
  }
  out = static_cast<uint32_t>(*n);
  return absl::OkStatus();
}

}  // namespace

absl::Status ReadCoordinatorSection(const ConfigError& err, const toml::table& t,
                                    ClusterConfig& config) {
  rpc::CoordinatorOptions& c = config.defaults.coordinator;
  bool has_etcd = false;
  for (auto&& [k, v] : t) {
    std::string key(k.str());
    std::string full = absl::StrCat("coordinator.", key);
    absl::Status s;
    if (key == "etcd") {
      has_etcd = true;
      const toml::array* a = v.as_array();
      if (a == nullptr || a->empty()) {
        return err.At(v.source(), full, "must be a list of etcd client URLs, as "
                                        "[\"http://127.0.0.1:2379\"]");
      }
      std::set<std::string> seen;
      for (const toml::node& e : *a) {
        std::optional<std::string> url = e.value<std::string>();
        if (!e.is_string()) return err.At(e.source(), full, "every entry must be a string");
        if (absl::Status ok = rpc::CheckEtcdEndpoint(*url); !ok.ok()) {
          return err.At(e.source(), full, std::string(ok.message()));
        }
        if (!seen.insert(*url).second) {
          return err.At(e.source(), full, absl::StrCat("'", *url, "' is listed twice"));
        }
        c.etcd.push_back(*url);
      }
    } else if (key == "prefix") {
      std::optional<std::string> p = v.value<std::string>();
      if (!v.is_string() || p->size() < 2 || (*p)[0] != '/' || p->back() == '/') {
        return err.At(v.source(), full, "must be a key prefix that starts with '/' and does "
                                        "not end with one, as \"/walship/orders\"");
      }
      c.prefix = *p;
    } else if (key == "lease_ttl_s") {
      s = ReadUint(err, v, full, 1, 60, c.lease_ttl_s);
    } else if (key == "poll_ms") {
      s = ReadUint(err, v, full, 10, 10000, c.poll_ms);
    } else if (key == "gather_ms") {
      s = ReadUint(err, v, full, 0, 60000, c.gather_ms);
    } else if (key == "candidate_wait_ms") {
      s = ReadUint(err, v, full, 0, 600000, c.candidate_wait_ms);
    } else {
      return err.At(k.source(), full, "unknown key (expected etcd, prefix, lease_ttl_s, "
                                      "poll_ms, gather_ms or candidate_wait_ms)");
    }
    if (!s.ok()) return s;
  }
  if (!has_etcd) {
    return err.At(t.source(), "coordinator.etcd",
                  "is missing: [coordinator] needs the etcd client URLs");
  }
  if (c.candidate_wait_ms < c.gather_ms) {
    return err.At(t.source(), "coordinator.candidate_wait_ms",
                  absl::StrCat("(", c.candidate_wait_ms, ") must be at least gather_ms (",
                               c.gather_ms, "): the fittest candidate is known only after "
                               "the gathering"));
  }
  if (uint64_t{c.poll_ms} * 3 > uint64_t{c.lease_ttl_s} * 1000) {
    return err.At(t.source(), "coordinator.poll_ms",
                  absl::StrCat("(", c.poll_ms, ") must be at most a third of lease_ttl_s (",
                               c.lease_ttl_s, " s)"));
  }
  config.defaults.failover = true;
  return absl::OkStatus();
}

}  // namespace walship::tools
