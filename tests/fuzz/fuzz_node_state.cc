// Fuzz target: the node-state file. Every input is an error naming the file, or a state that
// saves and loads back unchanged.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>

#include "replication/node_state.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // Never destroyed, so that the exit handler that removes the folder can still name it.
  static const std::filesystem::path& dir = *[] {
    std::random_device rd;
    auto* d = new std::filesystem::path(std::filesystem::temp_directory_path() /
                                        ("walship-fuzz-state-" + std::to_string(rd())));
    std::filesystem::create_directories(*d);
    std::atexit([] { std::filesystem::remove_all(dir); });
    return d;
  }();
  const std::string path = (dir / "node-state").string();
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  }
  auto state = walship::replication::LoadNodeState(path);
  if (!state.ok()) {
    if (state.status().message().find(path) == std::string::npos) std::abort();
    return 0;
  }
  const std::string copy = (dir / "copy").string();
  if (!walship::replication::SaveNodeState(copy, *state).ok()) return 0;  // e.g. bad history
  auto again = walship::replication::LoadNodeState(copy);
  if (!again.ok() || again->database_id != state->database_id ||
      again->epoch != state->epoch || again->history != state->history) {
    std::abort();
  }
  return 0;
}
