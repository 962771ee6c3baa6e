#include "fedpod/protocol/secagg_wire.h"

namespace fedpod::protocol::secagg {
namespace {

capnp::Data::Reader data(const std::string& s) {
  return capnp::Data::Reader(reinterpret_cast<const capnp::byte*>(s.data()), s.size());
}
std::string str(capnp::Data::Reader d) { return std::string(reinterpret_cast<const char*>(d.begin()), d.size()); }

}  // namespace

void to_wire(const Settings& s, uint32_t pod_id, wire::SecureAggregation::Builder out) {
  out.setThreshold(s.threshold);
  out.setNeighbours(s.neighbours);
  out.setClip(s.clip);
  out.setModulusBits(s.modulus_bits);
  out.setFractionBits(s.fraction_bits);
  out.setWeightScale(s.weight_scale);
  out.setPodId(pod_id);
}

Settings settings_from_wire(wire::SecureAggregation::Reader in) {
  Settings s;
  s.threshold = in.getThreshold();
  s.neighbours = in.getNeighbours();
  s.clip = in.getClip();
  s.modulus_bits = in.getModulusBits();
  s.fraction_bits = in.getFractionBits();
  s.weight_scale = in.getWeightScale();
  return s;
}

void to_wire(const PublicKeys& k, wire::SecAggKeys::Builder out) {
  out.setCPk(data(k.c_pk));
  out.setSPk(data(k.s_pk));
  out.setBCommit(data(k.b_commit));
}

PublicKeys from_wire(wire::SecAggKeys::Reader in) { return {str(in.getCPk()), str(in.getSPk()), str(in.getBCommit())}; }

void to_wire(const std::vector<EncryptedShare>& shares, capnp::List<wire::SecAggShareBox>::Builder out) {
  for (size_t i = 0; i < shares.size(); ++i) {
    out[i].setOwner(shares[i].owner);
    out[i].setRecipient(shares[i].recipient);
    out[i].setCiphertext(data(shares[i].ciphertext));
  }
}

std::vector<EncryptedShare> from_wire(capnp::List<wire::SecAggShareBox>::Reader in) {
  std::vector<EncryptedShare> out;
  out.reserve(in.size());
  for (auto e : in) out.push_back({e.getOwner(), e.getRecipient(), str(e.getCiphertext())});
  return out;
}

void to_wire(const std::vector<RevealedShare>& shares, capnp::List<wire::SecAggRevealed>::Builder out) {
  for (size_t i = 0; i < shares.size(); ++i) {
    out[i].setOwner(shares[i].owner);
    out[i].setX(shares[i].x);
    out[i].setShare(data(shares[i].share));
  }
}

std::vector<RevealedShare> from_wire(capnp::List<wire::SecAggRevealed>::Reader in) {
  std::vector<RevealedShare> out;
  out.reserve(in.size());
  for (auto r : in) out.push_back({r.getOwner(), r.getX(), str(r.getShare())});
  return out;
}

}  // namespace fedpod::protocol::secagg
