#include "fedpod/common/log.h"

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/null_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>

#include "fedpod/common/config_util.h"

namespace fedpod {
namespace {

// %* in a pattern: the message with control characters escaped.
class EscapedMessage final : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&, spdlog::memory_buf_t& dest) override {
    static constexpr char kHex[] = "0123456789abcdef";
    for (char ch : std::string_view(msg.payload.data(), msg.payload.size())) {
      const auto c = static_cast<unsigned char>(ch);
      if (c == '\n') {
        dest.push_back('\\');
        dest.push_back('n');
      } else if (c == '\r') {
        dest.push_back('\\');
        dest.push_back('r');
      } else if ((c < 0x20 && c != '\t') || c == 0x7f) {
        const char esc[4] = {'\\', 'x', kHex[c >> 4], kHex[c & 15]};
        dest.append(esc, esc + 4);
      } else {
        dest.push_back(ch);
      }
    }
  }
  std::unique_ptr<custom_flag_formatter> clone() const override { return std::make_unique<EscapedMessage>(); }
};

}  // namespace

std::unique_ptr<spdlog::formatter> line_formatter() {
  auto f = std::make_unique<spdlog::pattern_formatter>();
  f->add_flag<EscapedMessage>('*').set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %n %*");
  return f;
}

Logger make_logger(const std::string& component, const std::string& level) {
  auto lvl = spdlog::level::from_str(level);
  if (lvl == spdlog::level::off && level != "off") {
    throw ConfigError("log level: expected debug, info, warn, error or off, got \"" + level + "\"");
  }
  auto logger = std::make_shared<spdlog::logger>(
      component, std::make_shared<spdlog::sinks::stderr_color_sink_mt>());
  logger->set_formatter(line_formatter());
  logger->set_level(lvl);
  return logger;
}

Logger null_logger() {
  return std::make_shared<spdlog::logger>("null", std::make_shared<spdlog::sinks::null_sink_mt>());
}

}  // namespace fedpod
