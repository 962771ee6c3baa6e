// Secure aggregation's values (protocol/secagg.h) to and from their Cap'n Proto
// messages (protocol/fedpod.capnp). Readers copy out of the message; sizes are
// checked by secagg.h's Client and Server, which refuse what is malformed.
#pragma once

#include <vector>

#include "fedpod/protocol/fedpod.capnp.h"
#include "fedpod/protocol/secagg.h"

namespace fedpod::protocol::secagg {

void to_wire(const Settings& s, uint32_t pod_id, wire::SecureAggregation::Builder out);
Settings settings_from_wire(wire::SecureAggregation::Reader in);

void to_wire(const PublicKeys& k, wire::SecAggKeys::Builder out);
PublicKeys from_wire(wire::SecAggKeys::Reader in);

void to_wire(const std::vector<EncryptedShare>& shares, capnp::List<wire::SecAggShareBox>::Builder out);
std::vector<EncryptedShare> from_wire(capnp::List<wire::SecAggShareBox>::Reader in);

void to_wire(const std::vector<RevealedShare>& shares, capnp::List<wire::SecAggRevealed>::Builder out);
std::vector<RevealedShare> from_wire(capnp::List<wire::SecAggRevealed>::Reader in);

}  // namespace fedpod::protocol::secagg
