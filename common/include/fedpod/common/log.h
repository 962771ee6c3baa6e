// Loggers are built in main and injected; nothing in fedpod logs through a global.
// Lines carry key=value fields: "round=3 pod=pod-b samples=512 train_loss=0.41".
#pragma once

#include <spdlog/spdlog.h>

#include <memory>
#include <string>

namespace fedpod {

using Logger = std::shared_ptr<spdlog::logger>;

// A logger named `component` writing to stderr at `level` ("debug", "info", "warn",
// "error", "off"); throws ConfigError for an unknown level.
Logger make_logger(const std::string& component, const std::string& level = "info");

// The formatter make_logger's loggers use: time, level, component, message, on one
// line whatever the message holds. A message's newlines, carriage returns and other
// control characters are written escaped (\n, \r, \x1b), so text a peer chose (an
// error message, a job id) can neither forge a line of its own nor drive a terminal.
std::unique_ptr<spdlog::formatter> line_formatter();

// A logger that drops everything (for tests and libraries used without one).
Logger null_logger();

}  // namespace fedpod
