#include "util.h"

#include <sodium.h>

#include <ctime>
#include <filesystem>
#include <stdexcept>

namespace fedpod::hub::detail {
namespace {

void ensure_sodium() {
  static const int rc = sodium_init();  // thread-safe; idempotent
  if (rc < 0) throw std::runtime_error("libsodium failed to initialise");
}

std::string to_hex(const unsigned char* p, size_t n) {
  static const char* digits = "0123456789abcdef";
  std::string out(2 * n, '0');
  for (size_t i = 0; i < n; ++i) {
    out[2 * i] = digits[p[i] >> 4];
    out[2 * i + 1] = digits[p[i] & 15];
  }
  return out;
}

}  // namespace

std::string random_token() {
  ensure_sodium();
  unsigned char buf[32];
  randombytes_buf(buf, sizeof buf);
  return to_hex(buf, sizeof buf);
}

std::string parse_iso8601(const std::string& s, std::string* normalized, int64_t* seconds) {
  const std::string expected =
      "expected \"YYYY-MM-DD\" or \"YYYY-MM-DDTHH:MM:SSZ\" (UTC), got \"" + s + "\"";
  // Digits at the positions of "YYYY-MM-DD" or "YYYY-MM-DDTHH:MM:SSZ", the rest literal.
  const std::string date_shape = "dddd-dd-dd", full_shape = "dddd-dd-ddTdd:dd:ddZ";
  const std::string& shape = s.size() == date_shape.size() ? date_shape : full_shape;
  if (s.size() != shape.size()) return expected;
  for (size_t i = 0; i < s.size(); ++i) {
    bool digit = s[i] >= '0' && s[i] <= '9';
    if (shape[i] == 'd' ? !digit : s[i] != shape[i]) return expected;
  }
  auto num = [&s](size_t at, size_t n) { return std::stoi(s.substr(at, n)); };
  int year = num(0, 4), month = num(5, 2), day = num(8, 2);
  int hour = 0, minute = 0, second = 0;
  if (s.size() == full_shape.size()) {
    hour = num(11, 2);
    minute = num(14, 2);
    second = num(17, 2);
  }
  static const int kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
  if (year < 1970 || month < 1 || month > 12) return "is not a valid date: " + expected;
  if (day < 1 || day > kDays[month - 1] + (month == 2 && leap ? 1 : 0))
    return "is not a valid date: " + expected;
  if (hour > 23 || minute > 59 || second > 59) return "is not a valid time: " + expected;
  std::tm tm{};
  tm.tm_year = year - 1900;
  tm.tm_mon = month - 1;
  tm.tm_mday = day;
  tm.tm_hour = hour;
  tm.tm_min = minute;
  tm.tm_sec = second;
  *seconds = static_cast<int64_t>(timegm(&tm));
  *normalized = format_utc(static_cast<std::time_t>(*seconds));
  return "";
}

std::string check_pod_name(const std::string& s) { return check_username(s); }


std::string check_source_name(const std::string& s) {
  if (s.empty() || s.size() > 255) return "must be 1 to 255 characters";
  if (s[0] == '/') return "must be a relative path";
  if (s.find('\0') != std::string::npos || s.find('\\') != std::string::npos)
    return "contains a forbidden character";
  for (const auto& part : std::filesystem::path(s))
    if (part == "..") return "must not contain '..'";
  return "";
}

std::string check_artifact(const std::string& format, const std::string& bytes) {
  if (format == "torchscript") {
    if (bytes.size() < 22 || bytes.compare(0, 4, std::string("PK\x03\x04", 4)) != 0)
      return "a torchscript artifact must be a zip archive (as torch.jit.save writes); it does not "
             "start with a zip local file header";
    // The end-of-central-directory record sits in the last 22 + 65535 bytes.
    size_t from = bytes.size() > 22 + 65535 ? bytes.size() - (22 + 65535) : 0;
    size_t eocd = bytes.rfind(std::string("PK\x05\x06", 4));
    if (eocd == std::string::npos || eocd < from)
      return "a torchscript artifact must be a zip archive; it has no end-of-central-directory "
             "record (truncated?)";
    return "";
  }
  if (format == "plugin") {
    if (bytes.size() < 4 || bytes.compare(0, 4,
                                          "\x7f"
                                          "ELF") != 0)
      return "a plugin artifact must be a shared library (ELF); it does not start with the ELF "
             "magic";
    return "";
  }
  return "format must be \"torchscript\" or \"plugin\", got \"" + format + "\"";
}

}  // namespace fedpod::hub::detail
