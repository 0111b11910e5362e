// How the config reader names what is wrong: the file, the line and the key (tools/config.cc
// and the sections it reads through other files).
#pragma once

#include <string>

#include <toml++/toml.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace walship::tools {

class ConfigError {
 public:
  explicit ConfigError(std::string path) : path_(std::move(path)) {}
  absl::Status At(const toml::source_region& where, const std::string& key,
                  const std::string& why) const {
    return absl::InvalidArgumentError(
        absl::StrCat(path_, ":", where.begin.line, ": ", key, ": ", why));
  }
  absl::Status File(const std::string& why) const {
    return absl::InvalidArgumentError(absl::StrCat(path_, ": ", why));
  }

 private:
  std::string path_;
};

}  // namespace walship::tools
