// Status: the outcome of an operation that can fail for expected reasons.
//
// Expected outcomes (a malformed message, a bad CSV row, a pod that refuses a job)
// are return values; broken logistics (out of memory, a socket that cannot be
// created) are exceptions. A Status carries a code that tells the caller what to do
// and a message that says what happened, naming the peer and the values involved.
// The codes mirror `fedpod::wire::ErrorCode` so a worker's refusal keeps its kind
// when it reaches the coordinator.
//
// Thread safety: a Status is a value; copies are independent.
#pragma once

#include <string>
#include <utility>

namespace fedpod {

enum class StatusCode {
  kOk = 0,
  kInvalidArgument,     // the caller sent something malformed: fix the input
  kBadMessage,          // a wire message failed validation
  kNotFound,            // a named thing does not exist
  kBusy,                // the peer is occupied (another job): retry later
  kFailedPrecondition,  // the request does not fit the current state (no job started)
  kPermissionDenied,    // the identity lacks a role or permission
  kVersionMismatch,     // protocol versions differ
  kSchemaMismatch,      // a dataset does not have what the job needs
  kDeadlineExceeded,    // no answer in time
  kUnavailable,         // the peer is gone
  kInternal,            // a bug or an unexpected failure on the other side
};

const char* to_string(StatusCode code);

class Status {
 public:
  Status() = default;  // OK
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status ok_status() { return Status(); }
  static Status invalid(std::string msg) { return {StatusCode::kInvalidArgument, std::move(msg)}; }
  static Status bad_message(std::string msg) { return {StatusCode::kBadMessage, std::move(msg)}; }
  static Status not_found(std::string msg) { return {StatusCode::kNotFound, std::move(msg)}; }
  static Status busy(std::string msg) { return {StatusCode::kBusy, std::move(msg)}; }
  static Status failed_precondition(std::string msg) {
    return {StatusCode::kFailedPrecondition, std::move(msg)};
  }
  static Status internal(std::string msg) { return {StatusCode::kInternal, std::move(msg)}; }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // "schema_mismatch: pod-b has no column 'label'"; "ok" for success.
  std::string to_string() const;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

// A value or the Status that explains its absence.
template <typename T>
class StatusOr {
 public:
  StatusOr(T value) : value_(std::move(value)) {}  // NOLINT: implicit by design
  StatusOr(Status status) : status_(std::move(status)) {}  // NOLINT: must not be ok
  bool ok() const { return status_.ok(); }
  const Status& status() const { return status_; }
  T& value() & { return value_; }
  const T& value() const& { return value_; }
  T&& value() && { return std::move(value_); }
  T* operator->() { return &value_; }
  const T* operator->() const { return &value_; }
  T& operator*() { return value_; }

 private:
  Status status_;
  T value_{};
};

}  // namespace fedpod

// Returns the Status of `expr` from the enclosing function when it is not ok.
#define FEDPOD_RETURN_IF_ERROR(expr)          \
  do {                                        \
    ::fedpod::Status fedpod_status_ = (expr); \
    if (!fedpod_status_.ok()) return fedpod_status_; \
  } while (0)
