#include "fedpod/common/peer_text.h"

#include <algorithm>
#include <cstdint>

namespace fedpod {
namespace {

// The length of the valid UTF-8 sequence at `s[i]`, or 0 when it is not one
// (Unicode 15, table 3-7: well-formed byte sequences).
size_t utf8_length(std::string_view s, size_t i) {
  const auto b = [&](size_t k) { return static_cast<uint8_t>(s[i + k]); };
  const size_t left = s.size() - i;
  const uint8_t c = b(0);
  if (c < 0x80) return 1;
  auto cont = [&](size_t k, uint8_t lo = 0x80, uint8_t hi = 0xBF) { return k < left && b(k) >= lo && b(k) <= hi; };
  if (c >= 0xC2 && c <= 0xDF) return cont(1) ? 2 : 0;
  if (c == 0xE0) return cont(1, 0xA0) && cont(2) ? 3 : 0;
  if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) return cont(1) && cont(2) ? 3 : 0;
  if (c == 0xED) return cont(1, 0x80, 0x9F) && cont(2) ? 3 : 0;  // no surrogates
  if (c == 0xF0) return cont(1, 0x90) && cont(2) && cont(3) ? 4 : 0;
  if (c >= 0xF1 && c <= 0xF3) return cont(1) && cont(2) && cont(3) ? 4 : 0;
  if (c == 0xF4) return cont(1, 0x80, 0x8F) && cont(2) && cont(3) ? 4 : 0;
  return 0;
}

}  // namespace

std::string json_text(const nlohmann::json& j, int indent) {
  return j.dump(indent, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string peer_text(std::string_view text, size_t max_bytes) {
  std::string out;
  out.reserve(std::min(text.size(), max_bytes) + 32);
  size_t i = 0;
  while (i < text.size()) {
    const size_t n = utf8_length(text, i);
    std::string_view piece;
    if (n == 0) {
      piece = "\xEF\xBF\xBD";  // U+FFFD for the one byte
    } else if (n == 1) {
      const auto c = static_cast<uint8_t>(text[i]);
      piece = (c < 0x20 && c != '\n' && c != '\t') || c == 0x7F ? std::string_view("?") : text.substr(i, 1);
    } else if (n == 2 && static_cast<uint8_t>(text[i]) == 0xC2 && static_cast<uint8_t>(text[i + 1]) < 0xA0) {
      piece = "?";  // C1 controls, U+0080..U+009F
    } else {
      piece = text.substr(i, n);
    }
    if (out.size() + piece.size() > max_bytes) break;
    out += piece;
    i += n == 0 ? 1 : n;
  }
  if (i < text.size()) {
    const size_t cut = text.size() - i;
    out += " ... (" + std::to_string(cut) + (cut == 1 ? " byte cut)" : " bytes cut)");
  }
  return out;
}

}  // namespace fedpod
