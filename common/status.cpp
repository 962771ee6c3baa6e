#include "fedpod/common/status.h"

namespace fedpod {

const char* to_string(StatusCode code) {
  switch (code) {
    case StatusCode::kOk: return "ok";
    case StatusCode::kInvalidArgument: return "invalid_argument";
    case StatusCode::kBadMessage: return "bad_message";
    case StatusCode::kNotFound: return "not_found";
    case StatusCode::kBusy: return "busy";
    case StatusCode::kFailedPrecondition: return "failed_precondition";
    case StatusCode::kPermissionDenied: return "permission_denied";
    case StatusCode::kVersionMismatch: return "version_mismatch";
    case StatusCode::kSchemaMismatch: return "schema_mismatch";
    case StatusCode::kDeadlineExceeded: return "deadline_exceeded";
    case StatusCode::kUnavailable: return "unavailable";
    case StatusCode::kInternal: return "internal";
  }
  return "unknown";
}

std::string Status::to_string() const {
  if (ok()) return "ok";
  return std::string(fedpod::to_string(code_)) + ": " + message_;
}

}  // namespace fedpod
