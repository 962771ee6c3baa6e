// Internal helpers of the hub: hashing, tokens, validation, durable file writes.
// Stateless functions; safe from any thread (sodium is initialised on first use).
#pragma once

#include <cstdint>
#include <string>

#include "fedpod/common/files.h"
#include "fedpod/common/names.h"
#include "fedpod/common/utc.h"
#include "fedpod/common/sha256.h"

namespace fedpod::hub::detail {

// sha256 lives in common (fedpod/common/sha256.h): pods and the coordinator re-check
// artifacts with the same code.
using fedpod::Sha256;
using fedpod::sha256_hex;

// 32 random bytes as 64 hex characters.
std::string random_token();

// UTC times in ISO 8601 ("2026-11-28T23:50:00Z") live in common (fedpod/common/utc.h).
using fedpod::format_utc;
using fedpod::now_utc;
// Parses a UTC time given as "YYYY-MM-DD" (00:00:00Z of that day) or
// "YYYY-MM-DDTHH:MM:SSZ". Returns "" and sets `*normalized` (the second form) and
// `*seconds` (since the epoch), or returns what is wrong with `s`.
std::string parse_iso8601(const std::string& s, std::string* normalized, int64_t* seconds);

// Validators return "" when `s` is fine, else what is wrong with it.
// Names and keys follow fedpod/common/names.h, the rules pods apply too.
using fedpod::check_model_ref;
using fedpod::check_public_key;
using fedpod::check_username;
std::string check_pod_name(const std::string& s);     // same rule as usernames
std::string check_source_name(const std::string& s);  // relative path, no "..", <= 255
// "torchscript": a zip archive; "plugin": an ELF file.
std::string check_artifact(const std::string& format, const std::string& bytes);

// Durable writes live in common (fedpod/common/files.h): the pod's policy cache and
// audit log use the same code.
using fedpod::fsync_dir;
using fedpod::remove_interrupted_writes;
using fedpod::write_file_durably;

}  // namespace fedpod::hub::detail
