#include "replication/slot_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <cerrno>
#include <algorithm>
#include <set>
#include <cstring>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/numbers.h"
#include "absl/synchronization/mutex.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "replication/durable_file.h"

namespace walship::replication {
namespace {

constexpr int kContainerVersion = 1;
constexpr size_t kMaxHeader = 128;
// A slot file bigger than this is not ours (the node state is a few KB).
constexpr size_t kMaxFile = size_t{64} << 20;

absl::Status Errno(const std::string& what, const std::string& path) {
  return absl::UnavailableError(absl::StrCat(what, " ", path, ": ", std::strerror(errno)));
}

uint32_t Crc(uint64_t generation, std::string_view body) {
  std::string covered = absl::StrCat(generation, " ", body.size(), "\n");
  uLong c = ::crc32(0L, Z_NULL, 0);
  c = ::crc32(c, reinterpret_cast<const Bytef*>(covered.data()),
              static_cast<uInt>(covered.size()));
  // The node state is far below 4 GiB; kMaxFile bounds it.
  c = ::crc32(c, reinterpret_cast<const Bytef*>(body.data()), static_cast<uInt>(body.size()));
  return static_cast<uint32_t>(c);
}

std::string Header(uint64_t generation, std::string_view body) {
  return absl::StrFormat("%s %d %d %d %08x\n", kSlotFileMagic, kContainerVersion, generation,
                         body.size(), Crc(generation, body));
}

// One slot: its body and generation, or why it is not whole.
struct Slot {
  bool whole = false;
  int newer_version = 0;  // a slot of a format version this build cannot read
  uint64_t generation = 0;
  std::string_view body;
  std::string why;
};

Slot ParseSlot(std::string_view slot) {
  Slot s;
  size_t eol = slot.substr(0, kMaxHeader).find('\n');
  if (eol == std::string_view::npos) {
    s.why = slot.find_first_not_of('\0') == std::string_view::npos ? "never written"
                                                                   : "no header line";
    return s;
  }
  std::vector<std::string> f =
      absl::StrSplit(absl::string_view(slot.data(), eol), ' ');  // absl's own string_view
  int version = 0;
  uint64_t length = 0;
  uint32_t crc = 0;
  if (f.size() != 5 || f[0] != kSlotFileMagic || !absl::SimpleAtoi(f[1], &version) ||
      !absl::SimpleAtoi(f[2], &s.generation) || !absl::SimpleAtoi(f[3], &length) ||
      f[4].size() != 8 || !absl::SimpleHexAtoi(f[4], &crc)) {
    s.why = "a header that does not parse";
    return s;
  }
  if (version != kContainerVersion) {
    s.newer_version = version;
    s.why = absl::StrCat("slot format version ", version, "; this walship reads version ",
                         kContainerVersion);
    return s;
  }
  if (length > slot.size() - eol - 1) {
    s.why = absl::StrCat("a body of ", length, " bytes, past the slot's end");
    return s;
  }
  s.body = slot.substr(eol + 1, length);
  if (Crc(s.generation, s.body) != crc) {
    s.why = "a checksum that does not match (a write cut short)";
    return s;
  }
  s.whole = true;
  return s;
}

size_t SlotSizeFor(size_t body_bytes) {
  size_t need = kMaxHeader + body_bytes;
  return (need + kSlotAlign - 1) / kSlotAlign * kSlotAlign;
}

// A new file of two slots, the first holding `body` as `generation`, replaced atomically.
absl::Status Create(const std::string& path, std::string_view body, uint64_t generation,
                    size_t slot_size) {
  std::string file(2 * slot_size, '\0');
  std::string header = Header(generation, body);
  file.replace(0, header.size(), header);
  file.replace(header.size(), body.size(), body);
  return WriteFileDurably(path, file);
}

// Files whose last save failed here: what the page cache shows of them may not be on disk,
// so the next save must not pick the copy to overwrite from it. It creates the file anew.
absl::Mutex suspect_mu(absl::kConstInit);
std::set<std::string>& Suspect() ABSL_EXCLUSIVE_LOCKS_REQUIRED(suspect_mu) {
  static auto* paths = new std::set<std::string>();
  return *paths;
}

absl::Status Noted(const std::string& path, absl::Status s) {
  absl::MutexLock lock(&suspect_mu);
  if (s.ok()) {
    Suspect().erase(path);
  } else {
    Suspect().insert(path);
  }
  return s;
}

absl::Status WriteSlots(const std::string& path, std::string_view body);

}  // namespace

bool LooksLikeSlotFile(std::string_view contents) {
  // Either copy's start will do: a save torn at the first one's header leaves the second.
  const std::string magic = absl::StrCat(kSlotFileMagic, " ");
  size_t n = contents.size();
  return contents.substr(0, magic.size()) == magic ||
         (n >= 2 * kSlotAlign && n % (2 * kSlotAlign) == 0 &&
          contents.substr(n / 2, magic.size()) == magic);
}

absl::StatusOr<SlotRead> ReadSlots(const std::string& path, std::string_view contents) {
  size_t n = contents.size();
  if (n < 2 * kSlotAlign || n % (2 * kSlotAlign) != 0 || n > kMaxFile) {
    return absl::DataLossError(absl::StrCat(path, " is ", n, " bytes, not two slots of a "
                                            "multiple of ", kSlotAlign, " bytes each"));
  }
  size_t size = n / 2;
  Slot slots[2] = {ParseSlot(contents.substr(0, size)), ParseSlot(contents.substr(size))};
  for (const Slot& slot : slots) {
    if (slot.newer_version != 0) {
      // Reading the other copy would lose the newer build's last save.
      return absl::FailedPreconditionError(absl::StrCat(
          path, " holds a copy in slot format version ", slot.newer_version,
          "; this walship reads version ", kContainerVersion,
          " (written by a newer walship? run that version)"));
    }
  }
  if (!slots[0].whole && !slots[1].whole) {
    return absl::DataLossError(absl::StrCat("neither copy in ", path, " is whole (the first has ",
                                            slots[0].why, ", the second ", slots[1].why, ")"));
  }
  int newest = !slots[1].whole                                       ? 0
               : !slots[0].whole                                     ? 1
               : slots[1].generation > slots[0].generation ? 1
                                                                     : 0;
  SlotRead r;
  r.body = std::string(slots[newest].body);
  r.generation = slots[newest].generation;
  r.slot = newest;
  r.other = slots[1 - newest].why;
  return r;
}

absl::Status WriteSlotFile(const std::string& path, std::string_view body) {
  return Noted(path, WriteSlots(path, body));
}

namespace {

absl::Status WriteSlots(const std::string& path, std::string_view body) {
  bool suspect = false;
  {
    absl::MutexLock lock(&suspect_mu);
    suspect = Suspect().count(path) > 0;
  }
  int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    if (errno != ENOENT) return Errno("cannot open", path);
    return Create(path, body, 1, SlotSizeFor(body.size()));
  }
  struct stat st {};
  std::string contents;
  if (::fstat(fd, &st) != 0) {
    absl::Status s = Errno("cannot stat", path);
    ::close(fd);
    return s;
  }
  if (st.st_size > 0 && static_cast<size_t>(st.st_size) <= kMaxFile) {
    contents.resize(static_cast<size_t>(st.st_size));
    ssize_t got = ::pread(fd, contents.data(), contents.size(), 0);
    if (got != st.st_size) {
      absl::Status s = Errno("cannot read", path);
      ::close(fd);
      return s;
    }
  }
  absl::StatusOr<SlotRead> now = LooksLikeSlotFile(contents)
                                     ? ReadSlots(path, contents)
                                     : absl::StatusOr<SlotRead>(absl::NotFoundError(""));
  size_t slot_size = contents.size() / 2;
  if (suspect && now.ok()) {
    ::close(fd);
    return Create(path, body, now->generation + 1,
                  std::max(SlotSizeFor(body.size()), slot_size));
  }
  if (!now.ok() || SlotSizeFor(body.size()) > slot_size) {
    ::close(fd);
    // Another format (an older node-state file), nothing whole, or no room: a new file.
    if (!now.ok()) return Create(path, body, 1, SlotSizeFor(body.size()));
    return Create(path, body, now->generation + 1,
                  std::max(SlotSizeFor(body.size()), 2 * slot_size));
  }
  std::string slot(slot_size, '\0');
  std::string header = Header(now->generation + 1, body);
  slot.replace(0, header.size(), header);
  slot.replace(header.size(), body.size(), body);
  off_t at = static_cast<off_t>((1 - now->slot) * slot_size);
  ssize_t wrote = ::pwrite(fd, slot.data(), slot.size(), at);
  bool ok = wrote == static_cast<ssize_t>(slot.size()) && ::fdatasync(fd) == 0;
  absl::Status s = ok ? absl::OkStatus() : Errno("cannot write", path);
  ::close(fd);
  return s;
}

}  // namespace

}  // namespace walship::replication
