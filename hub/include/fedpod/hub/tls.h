// A development certificate authority for the hub's TLS (`fedpod tls dev-ca`).
//
// Makes (or reuses) a CA key and self-signed CA certificate in a directory and issues
// a server certificate from it for the given host names and IP addresses:
//
//   DIR/ca.crt    the CA certificate: give it to clients (--hub-ca, hub_ca:,
//                 policy.hub_ca:, FEDPOD_HUB_CA)
//   DIR/ca.key    the CA's private key (mode 0600): keep it off every other machine
//   DIR/hub.crt   the hub's certificate (ECDSA P-256, SHA-256, serverAuth, the names
//                 as subjectAltName entries)
//   DIR/hub.key   the hub's private key (mode 0600): `hub serve --tls-key`
//
// For development and closed deployments. A hub on the Internet should use a
// certificate from a public CA (clients then need no CA file: the system store).
#pragma once

#include <string>
#include <vector>

#include "fedpod/common/status.h"

namespace fedpod::hub {

struct DevCaResult {
  bool created_ca = false;  // false: an existing ca.crt/ca.key was reused
  std::string ca_cert, ca_key, cert, key;  // the four paths
};

// `names`: DNS names and IP addresses (v4 or v6) the hub is reached by; at least one.
// `days`: validity of the server certificate (the CA's is ten years). Errors name the
// file or the name that was wrong.
StatusOr<DevCaResult> make_dev_ca(const std::string& dir, const std::vector<std::string>& names, int days);

}  // namespace fedpod::hub
