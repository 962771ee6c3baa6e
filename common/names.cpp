#include <algorithm>
#include <cctype>
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

std::string check_job_id(const std::string& s) {
  if (s.empty() || s.size() > 128) return "must be 1 to 128 characters, got " + std::to_string(s.size());
  for (char c : s) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.')) {
      return "may only contain letters, digits, '-', '_' and '.'";
    }
  }
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

namespace {

// Levenshtein distance.
size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

}  // namespace

std::string nearest_name(const std::string& word, const std::vector<std::string>& candidates, int max_edits) {
  const size_t limit = max_edits >= 0 ? static_cast<size_t>(max_edits) : std::max<size_t>(1, word.size() / 3);
  std::string best, prefixed;
  size_t best_d = limit + 1;
  int prefixes = 0;
  for (const auto& c : candidates) {
    if (!word.empty() && c.rfind(word, 0) == 0) {
      ++prefixes;
      prefixed = c;
    }
    const size_t d = edit_distance(word, c);
    if (d < best_d) {
      best_d = d;
      best = c;
    }
  }
  if (best.empty() && prefixes == 1) return prefixed;
  return best;
}

std::string join_names(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}

}  // namespace fedpod
