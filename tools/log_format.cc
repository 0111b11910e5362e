#include "tools/log_format.h"

#include <spdlog/pattern_formatter.h>

#include <memory>

#include "absl/strings/str_format.h"
#include "rpc/log_context.h"

namespace walship::tools {
namespace {

void Append(spdlog::memory_buf_t& dest, std::string_view s) {
  dest.append(s.data(), s.data() + s.size());
}

// %R: the node's role now.
class RoleFlag final : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg&, const std::tm&,
              spdlog::memory_buf_t& dest) override {
    Append(dest, rpc::LogRole());
  }
  std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<RoleFlag>();
  }
};

// %*: the message as the inside of a JSON string: quotes, backslashes, control bytes and
// every byte past ASCII escaped (a message may quote bytes a peer sent, which need not be
// UTF-8), so that each line is valid JSON in ASCII.
class JsonMessageFlag final : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&,
              spdlog::memory_buf_t& dest) override {
    for (char ch : std::string_view(msg.payload.data(), msg.payload.size())) {
      auto c = static_cast<unsigned char>(ch);
      if (c == '"') {
        Append(dest, "\\\"");
      } else if (c == '\\') {
        Append(dest, "\\\\");
      } else if (c == '\n') {
        Append(dest, "\\n");
      } else if (c == '\t') {
        Append(dest, "\\t");
      } else if (c < 0x20 || c >= 0x7f) {
        Append(dest, absl::StrFormat("\\u%04x", c));
      } else {
        dest.push_back(ch);
      }
    }
  }
  std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<JsonMessageFlag>();
  }
};

}  // namespace

void UseLogFormat(spdlog::logger& logger, const std::string& node, const std::string& format) {
  auto formatter = std::make_unique<spdlog::pattern_formatter>();
  formatter->add_flag<RoleFlag>('R').add_flag<JsonMessageFlag>('*');
  // Node ids are letters, digits, '.', '_' and '-' (tools/config.cc): nothing to escape.
  if (format == "json") {
    formatter->set_pattern(R"({"ts":"%Y-%m-%dT%H:%M:%S.%e","level":"%l","node":")" + node +
                           R"(","role":"%R","msg":"%*"})");
  } else {
    formatter->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%-5l%$ [" + node + " %R] %v");
  }
  logger.set_formatter(std::move(formatter));
}

}  // namespace walship::tools
