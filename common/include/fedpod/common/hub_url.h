// Where a model hub is: parsed once from a URL, used by every client of the hub
// (CLI, coordinator, worker), so that all of them apply the same transport rule.
//
// The rule: a hub is spoken to over TLS (https://, the default, port 443) with its
// certificate verified against the system store or a configured CA file. Plain
// http:// is accepted only for a loopback host (127.0.0.0/8, ::1, localhost), where
// nothing crosses a network, or when the environment sets
// FEDPOD_INSECURE_PLAINTEXT_HUB=1 — a loud name on purpose: over plain HTTP anyone
// on the path reads bearer tokens and can rewrite every reply.
#pragma once

#include <string>

namespace fedpod {

struct HubUrl {
  bool tls = true;
  std::string host;  // without brackets for IPv6
  int port = 443;
  std::string ca_file;  // PEM bundle to verify the hub with; empty: the system store

  // "https://host:port" (brackets around an IPv6 host).
  std::string to_string() const;
};

// True for "localhost", any 127.x.y.z and ::1.
bool is_loopback_host(const std::string& host);

// Parses "https://HOST[:PORT]" (443), "http://HOST[:PORT]" (80) or "HOST:PORT"
// (https). A trailing '/' is allowed, a path is not. Throws ConfigError naming
// `where` for anything else, and for http:// to a host that is not loopback unless
// FEDPOD_INSECURE_PLAINTEXT_HUB=1 is set.
HubUrl parse_hub_url(const std::string& url, const std::string& where);

}  // namespace fedpod
