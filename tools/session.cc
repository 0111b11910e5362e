#include "tools/session.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace walship::tools {

namespace {
constexpr char kMagic[] = "walship-position 1 ";
}  // namespace

absl::StatusOr<replication::ReadToken> LoadSession(const std::string& path) {
  std::ifstream in(path);
  if (!in.is_open()) {
    if (::access(path.c_str(), F_OK) != 0) return replication::ReadToken{};
    return absl::InvalidArgumentError(absl::StrCat("session file ", path, ": cannot be read"));
  }
  std::stringstream text;
  text << in.rdbuf();
  std::string s = text.str();
  absl::string_view line = s;
  replication::ReadToken t;
  if (!absl::ConsumePrefix(&line, kMagic) || !absl::ConsumeSuffix(&line, "\n") ||
      !replication::ParseToken(std::string(line), &t)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "session file ", path, " is not a walship session file (expected one line \"", kMagic,
        "EPOCH:SEQ\"); remove it to start a new session"));
  }
  return t;
}

absl::Status SaveSession(const std::string& path, const replication::ReadToken& at) {
  if (at.empty()) return absl::OkStatus();
  // Commands of one session may end together: the read, merge and replace are one step.
  std::string lock_path = absl::StrCat(path, ".lock");
  int lock = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (lock < 0 || ::flock(lock, LOCK_EX) != 0) {
    if (lock >= 0) ::close(lock);
    return absl::UnavailableError(absl::StrCat("session file ", path, ": cannot lock ", lock_path));
  }
  absl::Cleanup unlock = [lock] { ::close(lock); };
  auto before = LoadSession(path);
  if (!before.ok()) return before.status();
  replication::ReadToken keep = replication::Later(*before, at);
  if (keep == *before) return absl::OkStatus();
  std::string tmp = absl::StrCat(path, ".tmp.", ::getpid());
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << kMagic << replication::TokenText(keep) << "\n";
    out.close();
    if (!out) {
      std::remove(tmp.c_str());
      return absl::UnavailableError(absl::StrCat("session file ", path, ": cannot write ", tmp));
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    return absl::UnavailableError(absl::StrCat("session file ", path, ": cannot replace it"));
  }
  return absl::OkStatus();
}

}  // namespace walship::tools
