#include "engine/info_log.h"

#include <sys/time.h>
#include <unistd.h>

#include <cstdarg>
#include <ctime>
#include <filesystem>
#include <system_error>

namespace walship::engine {

InfoLog::InfoLog(std::string path, uint64_t max_bytes)
    : path_(std::move(path)), max_bytes_(max_bytes) {
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(path_).parent_path(), ec);
  file_ = std::fopen(path_.c_str(), "a");
  if (file_ != nullptr) {
    long at = std::ftell(file_);
    size_ = at > 0 ? static_cast<uint64_t>(at) : 0;
  }
}

InfoLog::~InfoLog() {
  std::lock_guard lock(mu_);
  if (file_ != nullptr) std::fclose(file_);
  file_ = nullptr;
}

rocksdb::Status InfoLog::CloseImpl() {
  std::lock_guard lock(mu_);
  if (file_ != nullptr) std::fclose(file_);
  file_ = nullptr;
  return rocksdb::Status::OK();
}

void InfoLog::Logv(const char* format, va_list ap) {
  char line[1024];
  struct timeval now;
  gettimeofday(&now, nullptr);
  struct tm t;
  localtime_r(&now.tv_sec, &t);
  int head = std::snprintf(line, sizeof line, "%04d/%02d/%02d-%02d:%02d:%02d.%06ld %d ",
                           t.tm_year + 1900, t.tm_mon + 1, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec,
                           static_cast<long>(now.tv_usec), static_cast<int>(gettid()));
  std::string text(line, head > 0 ? static_cast<size_t>(head) : 0);
  va_list copy;
  va_copy(copy, ap);
  int n = std::vsnprintf(line, sizeof line, format, copy);
  va_end(copy);
  if (n >= static_cast<int>(sizeof line)) {
    std::string big(static_cast<size_t>(n) + 1, '\0');
    std::vsnprintf(big.data(), big.size(), format, ap);
    big.resize(static_cast<size_t>(n));
    text += big;
  } else if (n > 0) {
    text.append(line, static_cast<size_t>(n));
  }
  if (text.empty() || text.back() != '\n') text += '\n';
  std::lock_guard lock(mu_);
  if (file_ != nullptr && size_ + text.size() > max_bytes_) Roll();
  if (file_ == nullptr || std::fwrite(text.data(), 1, text.size(), file_) != text.size() ||
      std::fflush(file_) != 0) {
    ++dropped_;
    if (file_ != nullptr) std::clearerr(file_);
    return;
  }
  size_ += text.size();
}

void InfoLog::Roll() {
  std::fclose(file_);
  std::rename(path_.c_str(), (path_ + ".old").c_str());
  file_ = std::fopen(path_.c_str(), "a");
  size_ = 0;
}

size_t InfoLog::GetLogFileSize() const {
  std::lock_guard lock(mu_);
  return size_;
}

uint64_t InfoLog::dropped() const {
  std::lock_guard lock(mu_);
  return dropped_;
}

}  // namespace walship::engine
