#include "tools/escape.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace walship::tools {

absl::StatusOr<std::string> Unescape(const std::string& text) {
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '\\') {
      out += text[i];
      continue;
    }
    if (i + 1 >= text.size()) {
      return absl::InvalidArgumentError(absl::StrCat("'", text, "': lone \\ at the end"));
    }
    char c = text[++i];
    switch (c) {
      case '\\': out += '\\'; break;
      case 'n': out += '\n'; break;
      case 't': out += '\t'; break;
      case 'r': out += '\r'; break;
      case '0': out += '\0'; break;
      case 's': out += ' '; break;
      case 'x': {
        auto hex = [](char h) -> int {
          if (h >= '0' && h <= '9') return h - '0';
          if (h >= 'a' && h <= 'f') return h - 'a' + 10;
          if (h >= 'A' && h <= 'F') return h - 'A' + 10;
          return -1;
        };
        int hi = i + 1 < text.size() ? hex(text[i + 1]) : -1;
        int lo = i + 2 < text.size() ? hex(text[i + 2]) : -1;
        if (hi < 0 || lo < 0) {
          return absl::InvalidArgumentError(
              absl::StrCat("'", text, "': \\x needs two hex digits at offset ", i - 1));
        }
        out += static_cast<char>(hi * 16 + lo);
        i += 2;
        break;
      }
      default:
        return absl::InvalidArgumentError(
            absl::StrCat("'", text, "': unknown escape \\", std::string(1, c), " at offset ",
                         i - 1, " (use \\\\ \\n \\t \\r \\0 \\s \\xHH)"));
    }
  }
  return out;
}

std::string Escape(const std::string& bytes) {
  std::string out;
  for (unsigned char c : bytes) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c >= 0x21 && c < 0x7f) {
      out += static_cast<char>(c);
    } else if (c == ' ') {
      out += ' ';
    } else {
      out += absl::StrFormat("\\x%02x", c);
    }
  }
  return out;
}

}  // namespace walship::tools
