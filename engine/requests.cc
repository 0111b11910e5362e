#include "engine/requests.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "engine/batch_format.h"

namespace walship::engine {

std::string EncodeRequestValue(const RequestOutcome& outcome) {
  std::string v(kRequestValueBytes, '\0');
  v[0] = kRequestValueVersion;
  EncodeFixed64(v.data() + 1, outcome.first_seq);
  EncodeFixed64(v.data() + 9, outcome.last_seq);
  EncodeFixed64(v.data() + 17, static_cast<uint64_t>(outcome.write_time_us));
  EncodeFixed64(v.data() + 25, outcome.epoch);
  return v;
}

std::optional<RequestOutcome> DecodeRequestValue(std::string_view value) {
  if (value.size() != kRequestValueBytes || value[0] != kRequestValueVersion) return std::nullopt;
  RequestOutcome o;
  o.first_seq = DecodeFixed64(value.data() + 1);
  o.last_seq = DecodeFixed64(value.data() + 9);
  o.write_time_us = static_cast<int64_t>(DecodeFixed64(value.data() + 17));
  o.epoch = DecodeFixed64(value.data() + 25);
  if (o.first_seq == 0 || o.last_seq < o.first_seq) return std::nullopt;
  return o;
}

absl::Status CheckRequestRecord(std::string_view id, std::string_view value) {
  if (id.empty() || id.size() > kMaxRequestIdBytes) {
    return absl::DataLossError(absl::StrCat("a request id of ", id.size(), " bytes (1 to ",
                                            kMaxRequestIdBytes, " are written)"));
  }
  if (!DecodeRequestValue(value).has_value()) {
    return absl::DataLossError(
        absl::StrCat("a request record whose value (", value.size(), " bytes) is not one"));
  }
  return absl::OkStatus();
}

bool RequestExpired(int64_t write_time_us, uint64_t retention_seconds, int64_t now_us) {
  constexpr uint64_t kForever = uint64_t{INT64_MAX} / 1'000'000;  // µs would overflow
  if (retention_seconds == 0 || retention_seconds >= kForever) return false;
  return now_us - write_time_us > static_cast<int64_t>(retention_seconds) * 1'000'000;
}

namespace {

class RequestExpiryFilter final : public rocksdb::CompactionFilter {
 public:
  explicit RequestExpiryFilter(uint64_t retention_seconds) : retention_(retention_seconds) {}
  bool Filter(int, const rocksdb::Slice&, const rocksdb::Slice& value, std::string*,
              bool*) const override {
    std::optional<RequestOutcome> o = DecodeRequestValue(value.ToStringView());
    if (!o.has_value()) return false;  // not ours to judge: kept
    int64_t now = std::chrono::duration_cast<std::chrono::microseconds>(
                      std::chrono::system_clock::now().time_since_epoch())
                      .count();
    return RequestExpired(o->write_time_us, retention_, now);
  }
  const char* Name() const override { return "walship.RequestExpiry"; }

 private:
  const uint64_t retention_;
};

}  // namespace

std::unique_ptr<rocksdb::CompactionFilter> NewRequestExpiryFilter(uint64_t retention_seconds) {
  return std::make_unique<RequestExpiryFilter>(retention_seconds);
}

}  // namespace walship::engine
