// Secure aggregation (protocol/secagg.h) run end to end in memory: real keys, real
// Shamir shares, real masks; the tests stand where the coordinator stands and look
// at what it receives.
#include "fedpod/protocol/secagg.h"

#include <gtest/gtest.h>

#include <cstring>
#include <sodium.h>

#include <cmath>
#include <functional>
#include <memory>
#include <random>

namespace fedpod::protocol::secagg {
namespace {

Settings settings_for(size_t pods, uint32_t threshold, uint32_t neighbours, double clip = 1.0, uint32_t bits = 32) {
  Settings s;
  s.threshold = threshold;
  s.neighbours = neighbours;
  s.clip = clip;
  s.modulus_bits = bits;
  s.fraction_bits = fraction_bits(bits, clip, pods);
  s.weight_scale = 1000;
  return s;
}

struct Pod {
  std::unique_ptr<Client> client;
  std::vector<float> update;
  uint64_t samples = 0;
};

// What happens to each pod in a round.
enum class Drop { kNone, kBeforeShare, kBeforeMask, kAfterMask };

struct Transcript {
  std::map<uint32_t, RingVector> masked;  // what the coordinator received in step C
  std::map<uint32_t, Reveal> reveals;     // and in step D
  std::vector<double> sum;
  std::vector<float> average;  // with `average`: add_average_to() of zeros
  Status status;
};

// Runs one round over `pods` (ids 1..n) with the given dropouts. `tamper` may change a
// pod's masked vector before the coordinator gets it; with `average` the round ends
// in add_average_to() (as the coordinator ends it) instead of finish().
Transcript run_round(const Settings& s, std::vector<Pod>& pods, const std::map<uint32_t, Drop>& drops,
                     uint64_t seed = 7, const std::function<void(uint32_t, RingVector&)>& tamper = nullptr,
                     bool average = false) {
  Transcript t;
  const Context ctx{"job-1", 3};
  std::vector<uint32_t> ids;
  for (size_t i = 0; i < pods.size(); ++i) ids.push_back(static_cast<uint32_t>(i + 1));
  Server server(s, ctx, ids, seed);
  auto drop = [&](uint32_t id) {
    auto it = drops.find(id);
    return it == drops.end() ? Drop::kNone : it->second;
  };
  for (uint32_t id : ids) {
    pods[id - 1].client = std::make_unique<Client>(s, ctx, id);
    EXPECT_TRUE(server.add_keys(id, pods[id - 1].client->keys()).ok());
  }
  if (t.status = server.close_advertise(); !t.status.ok()) return t;
  for (uint32_t id : ids) {
    if (drop(id) == Drop::kBeforeShare) continue;
    auto shares = pods[id - 1].client->share(server.neighbours_of(id));
    EXPECT_TRUE(shares.ok()) << shares.status().message();
    EXPECT_TRUE(server.add_shares(id, *shares).ok());
  }
  if (t.status = server.close_share(); !t.status.ok()) return t;
  for (uint32_t id : ids) {
    if (drop(id) == Drop::kBeforeShare || drop(id) == Drop::kBeforeMask) continue;
    Status st = pods[id - 1].client->receive(server.shares_for(id));
    EXPECT_TRUE(st.ok()) << st.message();
    auto v = pods[id - 1].client->mask(pods[id - 1].update.data(), pods[id - 1].update.size(), pods[id - 1].samples);
    EXPECT_TRUE(v.ok()) << v.status().message();
    if (tamper) tamper(id, *v);
    EXPECT_TRUE(server.add_masked(id, v->bytes.data(), v->bytes.size()).ok());
    t.masked[id] = std::move(*v);
  }
  if (t.status = server.close_mask(); !t.status.ok()) return t;
  for (uint32_t id : server.survivors()) {
    if (drop(id) == Drop::kAfterMask) continue;
    auto r = pods[id - 1].client->unmask(server.survivors(), server.dropped());
    EXPECT_TRUE(r.ok()) << r.status().message();
    EXPECT_TRUE(server.add_reveal(id, *r).ok());
    t.reveals[id] = *r;
  }
  if (average) {
    t.average.assign(pods[0].update.size(), 0.0f);
    t.status = server.add_average_to(t.average.data(), t.average.size()).status();
    return t;
  }
  auto sum = server.finish();
  t.status = sum.status();
  if (sum.ok()) t.sum = std::move(*sum);
  return t;
}

std::vector<Pod> make_pods(size_t n, size_t params, uint32_t seed = 1) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 0.05f);
  std::vector<Pod> pods(n);
  for (size_t i = 0; i < n; ++i) {
    pods[i].update.resize(params);
    for (auto& x : pods[i].update) x = dist(rng);
    pods[i].samples = 100 + 37 * i;
  }
  return pods;
}

// The exact weighted average of the given pods' (clipped) updates.
std::vector<double> weighted_average(const std::vector<Pod>& pods, const std::vector<uint32_t>& ids, const Settings& s,
                                     double* total_weight) {
  std::vector<double> acc(pods[0].update.size(), 0.0);
  double w_total = 0;
  for (uint32_t id : ids) {
    const Pod& p = pods[id - 1];
    const double w = std::min<double>(p.samples, s.weight_scale) / s.weight_scale;
    w_total += w;
    for (size_t i = 0; i < acc.size(); ++i) acc[i] += w * std::clamp<double>(p.update[i], -s.clip, s.clip);
  }
  for (auto& a : acc) a /= w_total;
  *total_weight = w_total;
  return acc;
}

void expect_average(const Transcript& t, const std::vector<Pod>& pods, const std::vector<uint32_t>& included,
                    const Settings& s) {
  ASSERT_TRUE(t.status.ok()) << t.status.message();
  double w_total = 0;
  const auto want = weighted_average(pods, included, s, &w_total);
  ASSERT_EQ(t.sum.size(), want.size() + 1);
  EXPECT_NEAR(t.sum.back(), w_total, pods.size() * std::ldexp(1.0, -static_cast<int>(s.fraction_bits)));
  const double bound = average_error_bound(s, included.size(), w_total);
  double worst = 0;
  for (size_t i = 0; i < want.size(); ++i) worst = std::max(worst, std::abs(t.sum[i] / t.sum.back() - want[i]));
  EXPECT_LE(worst, bound);
  EXPECT_GT(bound, 0);
  EXPECT_LT(bound, 1e-5);  // 32-bit ring, 5 pods, clip 1: far below float32 noise of training
}

TEST(SecAgg, EveryPodStaysGivesTheWeightedAverage) {
  const Settings s = settings_for(5, 3, 4);
  auto pods = make_pods(5, 1000);
  auto t = run_round(s, pods, {});
  expect_average(t, pods, {1, 2, 3, 4, 5}, s);
  EXPECT_TRUE(t.reveals.at(1).pair_key.empty());  // nobody dropped: no mask key share revealed
}

TEST(SecAgg, OneDropBeforeMaskingAndOneAfterStillGiveTheSurvivorsSum) {
  const Settings s = settings_for(5, 3, 4);
  auto pods = make_pods(5, 1000, 2);
  // Pod 2 shared its keys but never sent its masked update; pod 4 sent it and then
  // vanished before step D. The sum covers 1, 3, 4, 5.
  auto t = run_round(s, pods, {{2, Drop::kBeforeMask}, {4, Drop::kAfterMask}});
  expect_average(t, pods, {1, 3, 4, 5}, s);
  EXPECT_FALSE(t.reveals.at(1).pair_key.empty());  // pod 2's mask key was rebuilt
}

TEST(SecAgg, APodThatNeverSharedIsLeftOutCleanly) {
  const Settings s = settings_for(6, 3, 4);
  auto pods = make_pods(6, 500, 3);
  auto t = run_round(s, pods, {{6, Drop::kBeforeShare}});
  expect_average(t, pods, {1, 2, 3, 4, 5}, s);
}

TEST(SecAgg, TwoSurvivorsOfFiveFailTheRoundAndRevealNothing) {
  const Settings s = settings_for(5, 3, 4);
  auto pods = make_pods(5, 100, 4);
  auto t = run_round(s, pods, {{1, Drop::kBeforeMask}, {2, Drop::kBeforeMask}, {3, Drop::kBeforeMask}});
  EXPECT_EQ(t.status.code(), StatusCode::kUnavailable);
  EXPECT_NE(t.status.message().find("nothing is unmasked"), std::string::npos) << t.status.message();
  EXPECT_TRUE(t.reveals.empty());
  // A coordinator that asks anyway is refused by the pods themselves.
  auto r = pods[3].client->unmask({4, 5}, {1, 2, 3});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("fewer than the threshold"), std::string::npos) << r.status().message();
}

// Pearson's chi-square over the 256 byte values.
double chi_square(const std::vector<uint8_t>& bytes) {
  std::array<double, 256> counts{};
  for (uint8_t b : bytes) counts[b] += 1;
  const double expect = static_cast<double>(bytes.size()) / 256;
  double x2 = 0;
  for (double c : counts) x2 += (c - expect) * (c - expect) / expect;
  return x2;
}

TEST(SecAgg, WhatTheCoordinatorHoldsOfOnePodLooksUniformAndNeverReachesItsMaskKey) {
  const Settings s = settings_for(5, 3, 4);
  auto pods = make_pods(5, 1 << 18, 5);
  // The worst case for hiding: a pod whose update is all zeros (its encoding is a
  // constant vector, every byte but the weight the same).
  std::fill(pods[0].update.begin(), pods[0].update.end(), 0.0f);
  auto t = run_round(s, pods, {{2, Drop::kBeforeMask}, {4, Drop::kAfterMask}});
  ASSERT_TRUE(t.status.ok()) << t.status.message();
  // 255 degrees of freedom: the 0.001 critical value is 330.5. The plain encoding is
  // nowhere near uniform.
  const double masked = chi_square(t.masked.at(1).bytes);
  EXPECT_LT(masked, 330.5);
  RingVector plain;
  plain.bytes.assign(t.masked.at(1).bytes.size(), 0);
  EXPECT_GT(chi_square(plain.bytes), 1e6);
  for (uint32_t id : {3u, 5u}) EXPECT_LT(chi_square(t.masked.at(id).bytes), 330.5) << "pod " << id;
  // Of a survivor's mask key the coordinator receives no share at all, let alone t:
  // only the pod that dropped before masking (2) has its mask key's shares revealed.
  std::map<uint32_t, int> key_shares;
  for (const auto& [from, r] : t.reveals) {
    for (const auto& sh : r.pair_key) ++key_shares[sh.owner];
  }
  for (uint32_t survivor : {1u, 3u, 4u, 5u}) EXPECT_LT(key_shares[survivor], static_cast<int>(s.threshold));
  EXPECT_GE(key_shares[2], static_cast<int>(s.threshold));
  // And of the dropped pod's self-mask seed, nothing (it never sent an input to hide).
  for (const auto& [from, r] : t.reveals) {
    for (const auto& sh : r.self_mask) EXPECT_NE(sh.owner, 2u);
  }
}

// Five pods (ids 1..5) through steps A and B with `server`: keys advertised, shares
// made and routed. Returns their clients, ready to receive their shares.
std::vector<std::unique_ptr<Client>> through_share(const Settings& s, const Context& ctx, Server& server,
                                                   std::map<uint32_t, std::vector<EncryptedShare>>* made = nullptr) {
  std::vector<std::unique_ptr<Client>> c;
  for (uint32_t id = 1; id <= 5; ++id) {
    c.push_back(std::make_unique<Client>(s, ctx, id));
    EXPECT_TRUE(server.add_keys(id, c.back()->keys()).ok());
  }
  EXPECT_TRUE(server.close_advertise().ok());
  for (uint32_t id = 1; id <= 5; ++id) {
    auto shares = c[id - 1]->share(server.neighbours_of(id));
    EXPECT_TRUE(shares.ok());
    EXPECT_TRUE(server.add_shares(id, *shares).ok());
    if (made) (*made)[id] = *shares;
  }
  EXPECT_TRUE(server.close_share().ok());
  return c;
}

TEST(SecAgg, APodRevealsOnceAndNeverBothSecretsOfOnePod) {
  const Settings s = settings_for(5, 3, 4);
  auto pods = make_pods(5, 64, 6);
  auto t = run_round(s, pods, {});
  ASSERT_TRUE(t.status.ok());
  // Asked again, now told pod 2 dropped: refused (it would give 2's mask key too).
  auto again = pods[0].client->unmask({1, 3, 4, 5}, {2});
  ASSERT_FALSE(again.ok());
  EXPECT_NE(again.status().message().find("second time"), std::string::npos);

  // A fresh round: a pod named both survivor and dropped is refused.
  const Context ctx{"job-1", 9};
  Server server(s, ctx, {1, 2, 3, 4, 5}, 1);
  auto c = through_share(s, ctx, server);
  std::vector<float> u(8, 0.1f);
  ASSERT_TRUE(c[0]->receive(server.shares_for(1)).ok());
  ASSERT_TRUE(c[0]->mask(u.data(), u.size(), 10).ok());
  auto both = c[0]->unmask({1, 2, 3, 4}, {2, 5});
  ASSERT_FALSE(both.ok());
  EXPECT_NE(both.status().message().find("both"), std::string::npos) << both.status().message();
}

TEST(SecAgg, SharesAreAuthenticatedAndBoundToTheirRecipient) {
  const Settings s = settings_for(5, 3, 4);
  const Context ctx{"job-1", 1};
  Server server(s, ctx, {1, 2, 3, 4, 5}, 1);
  std::map<uint32_t, std::vector<EncryptedShare>> made;
  auto c = through_share(s, ctx, server, &made);
  // One flipped bit.
  auto to1 = server.shares_for(1);
  to1[0].ciphertext[20] ^= 1;
  Status st = c[0]->receive(to1);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("failed authentication"), std::string::npos) << st.message();
  // Pod 2's share for pod 3, relabelled as meant for pod 1: it does not open.
  auto to3 = server.shares_for(3);
  EncryptedShare moved = to3[0];
  moved.recipient = 1;
  ASSERT_FALSE(c[1]->receive({moved}).ok());
  // The same share twice.
  auto to4 = server.shares_for(4);
  to4.push_back(to4[0]);
  EXPECT_FALSE(c[3]->receive(to4).ok());
  // A share made in another job for pod 3 does not open there.
  const Context other{"job-2", 1};
  Client o1(s, other, 1);
  std::map<uint32_t, PublicKeys> nb1;
  for (uint32_t id : {2u, 3u, 4u}) nb1[id] = c[id - 1]->keys();
  auto foreign = o1.share(nb1);
  ASSERT_TRUE(foreign.ok());
  std::vector<EncryptedShare> to3_foreign;
  for (const auto& e : *foreign) {
    if (e.recipient == 3) to3_foreign.push_back(e);
  }
  ASSERT_EQ(to3_foreign.size(), 1u);
  EXPECT_FALSE(c[2]->receive(to3_foreign).ok());
  // Coordinator-side checks: a pod cannot send shares in another pod's name.
  Server s2(s, ctx, {1, 2, 3, 4, 5}, 1);
  for (uint32_t id = 1; id <= 5; ++id) ASSERT_TRUE(s2.add_keys(id, c[id - 1]->keys()).ok());
  ASSERT_TRUE(s2.close_advertise().ok());
  EXPECT_FALSE(s2.add_shares(2, made[1]).ok());
  EXPECT_FALSE(s2.add_shares(1, {}).ok());
}

// A pod that advertises a point of small order (the zero key, or one of the other
// X25519 points of order 1, 2, 4 or 8) would make each neighbour's crypto_box to it
// fail: the neighbours, not it, would drop out of the round. The coordinator refuses
// such keys when they arrive, so the pod that sent them is the one left out; a
// client refuses them among its neighbours' keys too.
TEST(SecAgg, KeysOfSmallOrderAreRefusedSoThePodThatSentThemIsLeftOut) {
  const Settings s = settings_for(5, 3, 4);
  const Context ctx{"job-1", 1};
  Server server(s, ctx, {1, 2, 3, 4, 5}, 1);
  std::vector<std::unique_ptr<Client>> c;
  for (uint32_t id = 1; id <= 5; ++id) c.push_back(std::make_unique<Client>(s, ctx, id));
  // The zero key, and a point of order 8 (from libsodium's list of small-order points).
  const std::string zero(32, '\0');
  std::string order8(32, '\0');
  const unsigned char order8_bytes[32] = {0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3,
                                          0xfa, 0xf1, 0x9f, 0xc4, 0x6a, 0xda, 0x09, 0x8d, 0xeb, 0x9c, 0x32,
                                          0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16, 0x5f, 0x49, 0xb8, 0x00};
  std::memcpy(order8.data(), order8_bytes, 32);
  for (const std::string& bad : {zero, order8}) {
    for (bool as_c : {true, false}) {
      PublicKeys k = c[4]->keys();
      (as_c ? k.c_pk : k.s_pk) = bad;
      const Status st = server.add_keys(5, k);
      ASSERT_FALSE(st.ok());
      EXPECT_NE(st.message().find("pod 5's public keys include a point of small order"), std::string::npos)
          << st.message();
    }
  }
  for (uint32_t id = 1; id <= 4; ++id) ASSERT_TRUE(server.add_keys(id, c[id - 1]->keys()).ok());
  ASSERT_TRUE(server.close_advertise().ok());  // four pods, threshold 3: the round goes on
  // A client given such a key among its neighbours' refuses it, naming the pod.
  std::map<uint32_t, PublicKeys> nb;
  for (uint32_t id : {2u, 3u, 4u}) nb[id] = c[id - 1]->keys();
  nb[3].s_pk = order8;
  const auto shared = c[0]->share(nb);
  ASSERT_FALSE(shared.ok());
  EXPECT_NE(shared.status().message().find("pod 3's public keys include a point of small order"), std::string::npos);
}

// The coordinator cannot see one pod's masked vector, but honest ones sum to weights of
// at most one each and values within ±clip. A pod that adds arbitrary ring values (to
// a coordinate, or to its weight) makes a sum that is not such a sum: the round fails
// with the reason and nothing is added to the parameters. Without the check a
// coordinate moved by 2^20 ring units shifted the average by ~0.1 (clip 1), and a
// weight of zero or less ended the job as an internal error.
TEST(SecAgg, ASumThatNoClippedWeightedUpdatesMakeFailsTheRoundAndIsNotApplied) {
  const Settings s = settings_for(5, 3, 4);
  auto pods = make_pods(5, 64);
  const auto honest = run_round(s, pods, {}, 7, nullptr, true);
  ASSERT_TRUE(honest.status.ok()) << honest.status.message();
  auto add = [](RingVector& v, size_t element, int64_t units) {
    auto* e = reinterpret_cast<uint32_t*>(v.bytes.data()) + element;
    *e = static_cast<uint32_t>(static_cast<int64_t>(*e) + units);
  };
  struct Case {
    const char* name;
    size_t element;  // 64: the weight
    int64_t units;
    const char* says;
  };
  const int64_t one = int64_t{1} << s.fraction_bits;
  for (const Case& c : {Case{"a coordinate beyond the clip", 3, 3 * one, "the decoded average holds"},
                        Case{"a negative weight", 64, -6 * one, "the summed weight is"},
                        Case{"a weight of many pods", 64, 40 * one, "the summed weight is"}}) {
    SCOPED_TRACE(c.name);
    const auto t = run_round(s, pods, {}, 7, [&](uint32_t id, RingVector& v) { if (id == 2) add(v, c.element, c.units); },
                             true);
    ASSERT_FALSE(t.status.ok());
    EXPECT_EQ(t.status.code(), StatusCode::kBadMessage);
    EXPECT_NE(t.status.message().find(c.says), std::string::npos) << t.status.message();
    EXPECT_NE(t.status.message().find("nothing of it is applied"), std::string::npos);
    for (float x : t.average) EXPECT_EQ(x, 0.0f);
  }
}

TEST(SecAgg, AWrongRevealedShareIsCaughtByTheCommitment) {
  const Settings s = settings_for(5, 3, 4);
  const Context ctx{"job-1", 2};
  Server server(s, ctx, {1, 2, 3, 4, 5}, 3);
  auto c = through_share(s, ctx, server);
  std::vector<float> u(16, 0.25f);
  for (uint32_t id = 1; id <= 5; ++id) {
    ASSERT_TRUE(c[id - 1]->receive(server.shares_for(id)).ok());
    auto v = c[id - 1]->mask(u.data(), u.size(), 50);
    ASSERT_TRUE(server.add_masked(id, v->bytes.data(), v->bytes.size()).ok());
  }
  ASSERT_TRUE(server.close_mask().ok());
  for (uint32_t id = 1; id <= 5; ++id) {
    auto r = c[id - 1]->unmask(server.survivors(), server.dropped());
    ASSERT_TRUE(r.ok());
    if (id == 1) r->self_mask[0].share[0] ^= 0x5a;  // a lying pod
    ASSERT_TRUE(server.add_reveal(id, *r).ok());
  }
  // With five pods everyone neighbours everyone, and pod 1, the lowest id, holds
  // share x = 1 of every other pod's secrets: the first of the t used.
  auto sum = server.finish();
  ASSERT_FALSE(sum.ok());
  EXPECT_EQ(sum.status().code(), StatusCode::kBadMessage);
  EXPECT_NE(sum.status().message().find("commitment"), std::string::npos) << sum.status().message();
}

TEST(SecAgg, SparseGraphWithManyPodsAndDropouts) {
  // 20 pods, 6 neighbours each, threshold 4: masks only among neighbours.
  const Settings s = settings_for(20, 4, 6);
  auto pods = make_pods(20, 300, 8);
  auto t = run_round(s, pods, {{3, Drop::kBeforeMask}, {11, Drop::kAfterMask}, {17, Drop::kBeforeShare}});
  std::vector<uint32_t> in;
  for (uint32_t id = 1; id <= 20; ++id) {
    if (id != 3 && id != 17) in.push_back(id);
  }
  expect_average(t, pods, in, s);
}

TEST(SecAgg, SixtyFourBitRingForLargeClipsAndManyPods) {
  const Settings s = settings_for(8, 5, 7, 1000.0, 64);
  EXPECT_GT(s.fraction_bits, 40u);
  auto pods = make_pods(8, 200, 9);
  pods[2].update[5] = 5000.0f;  // clipped to 1000
  auto t = run_round(s, pods, {{5, Drop::kAfterMask}});
  expect_average(t, pods, {1, 2, 3, 4, 5, 6, 7, 8}, s);
  EXPECT_EQ(pods[2].client->clipped(), 1u);
}

TEST(SecAgg, NeighbourGraphIsSymmetricAndSizedAsAsked) {
  std::vector<uint32_t> ids;
  for (uint32_t i = 1; i <= 30; ++i) ids.push_back(i * 3);
  auto g = neighbour_graph(ids, 6, 42);
  ASSERT_EQ(g.size(), 30u);
  for (const auto& [id, nb] : g) {
    EXPECT_EQ(nb.size(), 6u);
    for (uint32_t j : nb) {
      EXPECT_NE(j, id);
      EXPECT_TRUE(std::binary_search(g.at(j).begin(), g.at(j).end(), id));
    }
  }
  EXPECT_EQ(neighbour_graph(ids, 6, 42), g);  // the seed fixes it
  EXPECT_NE(neighbour_graph(ids, 6, 43), g);
  auto full = neighbour_graph({1, 2, 3, 4}, 6, 1);
  for (const auto& [id, nb] : full) EXPECT_EQ(nb.size(), 3u);
}

TEST(SecAgg, SettingsThatCannotBeRunSafelyAreRefused) {
  Settings s = settings_for(5, 3, 4);
  EXPECT_TRUE(validate(s).ok());
  Settings t = s;
  t.threshold = 2;  // not a strict majority of 5 holders (4 neighbours and the pod)
  EXPECT_NE(validate(t).message().find("more than half"), std::string::npos);
  t = s;
  t.threshold = 5;
  EXPECT_NE(validate(t).message().find("exceeds neighbours"), std::string::npos);
  t = s;
  t.modulus_bits = 16;
  EXPECT_FALSE(validate(t).ok());
  t = s;
  t.fraction_bits = 0;
  EXPECT_FALSE(validate(t).ok());
  EXPECT_EQ(modulus_bits_for(10, 8), 32u);
  EXPECT_EQ(modulus_bits_for(1e6, 1000), 64u);
  EXPECT_EQ(default_neighbours(5), 4u);
  EXPECT_EQ(default_threshold(4), 3u);
  EXPECT_EQ(default_neighbours(32), 10u);
}

TEST(SecAgg, MasksCancelOverManyThreadsAndLongVectors) {
  // Above the parallel threshold (8 MiB) the keystream is made on several threads:
  // it must equal the one made on one thread, across the threads' boundaries.
  RingVector v;
  v.bytes.assign((size_t{12} << 20) + 12, 0);
  RingVector serial;
  serial.bytes.assign((size_t{8} << 20) - 4, 0);
  std::array<uint8_t, 32> key{};
  key[0] = 1;
  add_prg(v, key.data(), +1);
  add_prg(serial, key.data(), +1);
  ASSERT_TRUE(std::equal(serial.bytes.begin(), serial.bytes.end(), v.bytes.begin()));
  size_t zeros = 0;
  for (uint8_t b : v.bytes) zeros += b == 0;
  EXPECT_LT(zeros, v.bytes.size() / 128);
  add_prg(v, key.data(), -1);
  for (size_t i = 0; i < v.bytes.size(); ++i) ASSERT_EQ(v.bytes[i], 0) << i;
}

// The masks are ChaCha20 as RFC 8439 and libsodium define it: the same key gives
// libsodium's crypto_stream_chacha20_ietf keystream (zero nonce, block counter 0),
// here read back from a vector of zeros as little-endian ring elements.
TEST(SecAgg, MaskKeystreamIsLibsodiumsChaCha20) {
  ASSERT_GE(sodium_init(), 0);
  std::array<uint8_t, 32> key;
  randombytes_buf(key.data(), key.size());
  for (size_t bytes : {size_t{64}, size_t{100000}, (size_t{9} << 20) + 64}) {
    RingVector v;
    v.bytes.assign(bytes, 0);
    add_prg(v, key.data(), +1);
    std::vector<uint8_t> want(bytes);
    const uint8_t nonce[crypto_stream_chacha20_ietf_NONCEBYTES] = {};
    crypto_stream_chacha20_ietf(want.data(), want.size(), nonce, key.data());
    ASSERT_TRUE(std::equal(want.begin(), want.end(), v.bytes.begin())) << bytes << " bytes";
  }
}

}  // namespace
}  // namespace fedpod::protocol::secagg
