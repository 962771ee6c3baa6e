// Helpers shared by fedpod's tests: temporary directories and files.
#pragma once

#include <filesystem>
#include <string>

namespace fedpod::testing {

// A fresh directory under the system temp dir, removed with everything in it on
// destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  // Writes `content` to `name` inside the directory and returns its full path.
  std::string write(const std::string& name, const std::string& content) const;

 private:
  std::filesystem::path path_;
};

// The source tree root (FEDPOD_SOURCE_DIR, set by ctest), for committed data files.
std::string source_dir();

}  // namespace fedpod::testing

#include "fedpod/common/process.h"

#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <streambuf>
#include <string>
#include <vector>

namespace fedpod::testing {

// The fedpod binary under test (FEDPOD_BIN, set by ctest).
std::string fedpod_bin();

// A streambuf that hands each complete line to `on_line`, on the writing thread:
//   LineHook hook([&](const std::string& line) { ... });  std::ostream progress(&hook);
class LineHook : public std::streambuf {
 public:
  explicit LineHook(std::function<void(const std::string&)> on_line) : on_line_(std::move(on_line)) {}

 protected:
  int overflow(int c) override {
    if (c == traits_type::eof()) return 0;
    if (c == '\n') {
      on_line_(line_);
      line_.clear();
    } else {
      line_ += static_cast<char>(c);
    }
    return c;
  }

 private:
  std::function<void(const std::string&)> on_line_;
  std::string line_;
};

// `fedpod tls dev-ca --out DIR` for localhost, 127.0.0.1 and ::1: DIR/ca.crt (what
// clients verify with), DIR/hub.crt and DIR/hub.key (what `hub serve` presents).
// Fails the current test when the command fails.
struct HubTls {
  std::string ca, cert, key;
};
HubTls make_hub_tls(const std::string& dir);

// Child processes: fedpod::Process (common/process.h).
using fedpod::Process;

// Waits for a file's first word (common/process.h).
using fedpod::wait_for_word;

// The value of one series (`name{labels}` as serialized, labels sorted) in a
// Prometheus text exposition; NaN when absent.
double metric_value(const std::string& exposition, const std::string& series);

// Reads a whole file ("" if missing).
std::string read_file(const std::string& path);

// The message of the ConfigError `f` throws; fails the current test when it throws none.
std::string config_error(const std::function<void()>& f);

// `promtool check metrics` over a Prometheus text exposition: its exit code and its
// output (lint warnings print lines; a clean exposition prints nothing). When
// promtool is not installed, exit_code is -1 and output says to run scripts/bootstrap.
struct PromtoolResult {
  int exit_code = -1;
  std::string output;
};
PromtoolResult promtool_check(const std::string& exposition);
// EXPECT_PROMTOOL_CLEAN(text): promtool exits 0 and prints nothing.
#define EXPECT_PROMTOOL_CLEAN(exposition)                                              \
  do {                                                                                 \
    const auto promtool_result_ = ::fedpod::testing::promtool_check(exposition);       \
    EXPECT_EQ(promtool_result_.exit_code, 0) << promtool_result_.output;               \
    EXPECT_EQ(promtool_result_.output, "") << "promtool: " << promtool_result_.output; \
  } while (0)

// EXPECT_CONTAINS(text, part): text contains part; prints both otherwise.
::testing::AssertionResult Contains(const char* h_expr, const char* n_expr, const std::string& haystack,
                                    const std::string& needle);
#define EXPECT_CONTAINS(haystack, needle) EXPECT_PRED_FORMAT2(::fedpod::testing::Contains, haystack, needle)

}  // namespace fedpod::testing
