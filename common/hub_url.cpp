#include "fedpod/common/hub_url.h"

#include <arpa/inet.h>

#include <cstdlib>
#include <cstring>

#include "fedpod/common/config_util.h"

namespace fedpod {

std::string HubUrl::to_string() const {
  const std::string h = host.find(':') != std::string::npos ? "[" + host + "]" : host;
  return std::string(tls ? "https://" : "http://") + h + ":" + std::to_string(port);
}

bool is_loopback_host(const std::string& host) {
  if (host == "localhost") return true;
  in_addr v4{};
  if (inet_pton(AF_INET, host.c_str(), &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
  in6_addr v6{};
  if (inet_pton(AF_INET6, host.c_str(), &v6) == 1) return memcmp(&v6, &in6addr_loopback, sizeof v6) == 0;
  return false;
}

HubUrl parse_hub_url(const std::string& url, const std::string& where) {
  const std::string shape = " is not a hub address (https://HOST:PORT)";
  HubUrl a;
  std::string rest = url;
  if (rest.rfind("https://", 0) == 0) {
    rest = rest.substr(8);
  } else if (rest.rfind("http://", 0) == 0) {
    rest = rest.substr(7);
    a.tls = false;
    a.port = 80;
  } else if (rest.find("://") != std::string::npos) {
    throw ConfigError(where + ": '" + url + "': the scheme must be https:// (or http:// on loopback)");
  }
  while (!rest.empty() && rest.back() == '/') rest.pop_back();
  if (rest.empty() || rest.find('/') != std::string::npos || rest.find_first_of(" \t\r\n@?#") != std::string::npos) {
    throw ConfigError(where + ": '" + url + "'" + shape);
  }
  std::string port;
  if (rest.front() == '[') {  // [v6]:port
    const auto close = rest.find(']');
    if (close == std::string::npos) throw ConfigError(where + ": '" + url + "'" + shape);
    a.host = rest.substr(1, close - 1);
    const std::string after = rest.substr(close + 1);
    if (!after.empty()) {
      if (after[0] != ':') throw ConfigError(where + ": '" + url + "'" + shape);
      port = after.substr(1);
      if (port.empty()) throw ConfigError(where + ": '" + url + "'" + shape);
    }
  } else {
    const auto colon = rest.rfind(':');
    a.host = rest.substr(0, colon);
    if (colon != std::string::npos) {
      port = rest.substr(colon + 1);
      if (port.empty()) throw ConfigError(where + ": '" + url + "'" + shape);
    }
  }
  if (a.host.empty() || (a.host.find(':') != std::string::npos && rest.front() != '[')) {
    throw ConfigError(where + ": '" + url + "'" + shape);
  }
  if (!port.empty()) {
    if (port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos || std::stoi(port) < 1 ||
        std::stoi(port) > 65535) {
      throw ConfigError(where + ": '" + url + "': bad port '" + port + "' (1-65535)");
    }
    a.port = std::stoi(port);
  }
  if (!a.tls && !is_loopback_host(a.host)) {
    const char* ok = std::getenv("FEDPOD_INSECURE_PLAINTEXT_HUB");
    if (!(ok && std::strcmp(ok, "1") == 0)) {
      throw ConfigError(where + ": '" + url + "': plain http:// is refused for a hub that is not on loopback: "
                        "bearer tokens and policies would cross the network readable and rewritable. Serve the hub "
                        "with TLS (`fedpod hub serve --tls-cert/--tls-key`; `fedpod tls dev-ca` makes a development "
                        "CA) and use https://, or set FEDPOD_INSECURE_PLAINTEXT_HUB=1 to accept the risk");
    }
  }
  return a;
}

}  // namespace fedpod
