// Text that another process sent (a pod's error message or decision, a peer's name)
// made safe to keep: valid UTF-8 (JSON writers throw on anything else), no control
// characters that would forge a log line or move a terminal's cursor, and bounded in
// length (it is kept in history.json for the life of a job). Stateless.
#pragma once

#include <nlohmann/json.hpp>

#include <cstddef>
#include <string>
#include <string_view>

namespace fedpod {

// `text` with each byte that is not part of a valid UTF-8 sequence (overlong forms,
// surrogates and code points above U+10FFFF included) replaced by U+FFFD, each control
// character other than newline and tab (C0, DEL, C1) replaced by '?', and, past
// `max_bytes`, cut at a character boundary with " ... (N bytes cut)" appended.
std::string peer_text(std::string_view text, size_t max_bytes = 4096);

// `j` as JSON text (`indent` as json::dump's), with any string that is not UTF-8
// written with U+FFFD in place of its bad bytes instead of throwing: for documents
// that may hold text a peer sent (history.json, events, the hub's answers).
std::string json_text(const nlohmann::json& j, int indent = -1);

}  // namespace fedpod
