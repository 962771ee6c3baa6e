#include "fedpod/common/names.h"

namespace fedpod {
namespace {

bool lower_alnum(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }

}  // namespace

std::string check_username(const std::string& s) {
  if (s.size() < 2 || s.size() > 32) return "must be 2 to 32 characters, got " + std::to_string(s.size());
  if (!(s[0] >= 'a' && s[0] <= 'z')) return "must start with a lowercase letter";
  for (char c : s)
    if (!lower_alnum(c) && c != '_' && c != '-') return "may only contain a-z, 0-9, '_' and '-'";
  return "";
}

std::string check_model_ref(const std::string& s) {
  if (s.empty() || s.size() > 64) return "must be 1 to 64 characters, got " + std::to_string(s.size());
  if (!lower_alnum(s[0])) return "must start with a lowercase letter or digit";
  for (char c : s)
    if (!lower_alnum(c) && c != '_' && c != '.' && c != '-') return "may only contain a-z, 0-9, '_', '.' and '-'";
  return "";
}

std::string check_public_key(const std::string& s) {
  static const std::string z85 = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";
  if (s.size() != 40)
    return "must be a 40-character Z85 CURVE public key, got " + std::to_string(s.size()) + " characters";
  for (char c : s)
    if (z85.find(c) == std::string::npos) return "is not Z85: contains '" + std::string(1, c) + "'";
  return "";
}

}  // namespace fedpod
