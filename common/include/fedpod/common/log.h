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

// A logger that drops everything (for tests and libraries used without one).
Logger null_logger();

}  // namespace fedpod
