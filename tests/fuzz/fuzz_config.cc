// Fuzz target: the cluster config loader. Every input is an error naming what is wrong, or a
// config whose every node has an id, an address and a data dir, and exactly one leader.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>

#include "tools/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // Never destroyed, so that the exit handler that removes the file can still name it.
  static const std::string& path = *[] {
    std::random_device rd;
    auto p = std::filesystem::temp_directory_path() /
             ("walship-fuzz-config-" + std::to_string(rd()) + ".toml");
    auto* name = new std::string(p.string());
    std::atexit([] { std::filesystem::remove(path); });
    return name;
  }();
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  }
  auto config = walship::tools::LoadConfig(path);
  if (!config.ok()) {
    if (config.status().message().empty()) std::abort();  // every error says what is wrong
    return 0;
  }
  if (config->nodes.empty() || config->Leader() == nullptr) std::abort();
  for (const auto& node : config->nodes) {
    if (node.id.empty() || node.listen.empty() || node.data_dir.empty()) std::abort();
    (void)walship::tools::ServerOptionsFor(*config, node);
  }
  return 0;
}
