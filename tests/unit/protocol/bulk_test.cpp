// The tensor channel's sealing (protocol/bulk.h), attacked as a network peer
// would: altered bytes, replayed and reordered messages, frames swapped or moved
// between messages, messages moved between pods, jobs and directions.
#include "fedpod/protocol/bulk.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace fedpod::protocol {
namespace {

using Frames = std::vector<zmq::message_t>;

Frames copy(const Frames& f) {
  Frames out;
  for (const auto& m : f) out.emplace_back(m.data(), m.size());
  return out;
}

std::string bytes_of(const zmq::message_t& m) { return std::string(static_cast<const char*>(m.data()), m.size()); }

// A message like a train request: a small envelope and tensors of several sizes
// (an empty one, one below a segment, one spanning several segments).
Frames message(uint32_t seed, std::vector<size_t> sizes = {40, 0, 1000, (3u << 20) + 17}) {
  std::mt19937 rng(seed);
  Frames out;
  for (size_t n : sizes) {
    std::string s(n, '\0');
    for (auto& c : s) c = static_cast<char>(rng());
    out.emplace_back(s.data(), s.size());
  }
  return out;
}

struct Pair {
  BulkSession coordinator;
  BulkSession pod;
};

Pair pair_for(const BulkBinding& b) {
  BulkKeyPair c, p;
  auto cs = BulkSession::derive(BulkRole::kCoordinator, c, p.public_key(), b);
  auto ps = BulkSession::derive(BulkRole::kPod, p, c.public_key(), b);
  EXPECT_TRUE(cs.ok() && ps.ok());
  return Pair{std::move(*cs), std::move(*ps)};
}

const BulkBinding kBinding{"job-1", "pod-a-key"};

TEST(Bulk, RoundTripBothDirectionsAndInPlace) {
  auto s = pair_for(kBinding);
  EXPECT_EQ(s.coordinator.id(), s.pod.id());
  for (int i = 0; i < 3; ++i) {
    Frames plain = message(i);
    Frames sealed = s.coordinator.seal(copy(plain), 7);
    ASSERT_EQ(sealed.size(), plain.size() + 1);
    // Ciphertext, not the plaintext: no frame of size > 32 is sent as it was.
    EXPECT_NE(bytes_of(sealed.back()).substr(0, 64), bytes_of(plain.back()).substr(0, 64));
    uint32_t round = 0;
    BulkRefusal why = BulkRefusal::kTampered;
    auto opened = s.pod.open(std::move(sealed), &round, &why);
    ASSERT_TRUE(opened.ok()) << opened.status().message();
    EXPECT_EQ(why, BulkRefusal::kNone);
    EXPECT_EQ(round, 7u);
    ASSERT_EQ(opened->size(), plain.size());
    for (size_t f = 0; f < plain.size(); ++f) EXPECT_EQ(bytes_of((*opened)[f]), bytes_of(plain[f])) << "frame " << f;
  }
  Frames reply = message(99, {24, 5u << 20});
  auto back = s.pod.open(s.coordinator.seal(copy(reply), 1), nullptr, nullptr);
  ASSERT_TRUE(back.ok());  // the coordinator's own direction is not the pod's
  auto opened = s.coordinator.open(s.pod.seal(copy(reply), 1), nullptr, nullptr);
  ASSERT_TRUE(opened.ok()) << opened.status().message();
  EXPECT_EQ(bytes_of((*opened)[1]), bytes_of(reply[1]));
}

TEST(Bulk, EveryAlteredByteIsRefused) {
  auto s = pair_for(kBinding);
  const Frames sealed = s.coordinator.seal(message(1, {40, 9000}), 3, 4096);
  // Flip one bit in each region: header, envelope, each segment's ciphertext, each tag.
  std::vector<std::pair<size_t, size_t>> spots = {{0, 30}, {0, 33}, {0, 40}, {1, 0}, {1, 55},
                                                  {2, 0}, {2, 5000}, {2, 8999}, {2, 9000}, {2, 9047}};
  for (auto [frame, offset] : spots) {
    Frames t = copy(sealed);
    static_cast<uint8_t*>(t[frame].data())[offset] ^= 0x01;
    BulkRefusal why = BulkRefusal::kNone;
    auto r = s.pod.open(std::move(t), nullptr, &why);
    EXPECT_FALSE(r.ok()) << "frame " << frame << " offset " << offset;
    EXPECT_NE(why, BulkRefusal::kNone);
  }
  // Untouched, it still opens: the refusals consumed nothing.
  EXPECT_TRUE(s.pod.open(copy(sealed), nullptr, nullptr).ok());
}

TEST(Bulk, ReplayAndReorderAreRefused) {
  auto s = pair_for(kBinding);
  Frames first = s.coordinator.seal(message(1), 1);
  Frames second = s.coordinator.seal(message(2), 2);
  Frames first_again = copy(first);
  // Reordered: the second arrives first; the first, older, is then refused.
  ASSERT_TRUE(s.pod.open(std::move(second), nullptr, nullptr).ok());
  BulkRefusal why = BulkRefusal::kNone;
  EXPECT_FALSE(s.pod.open(std::move(first), nullptr, &why).ok());
  EXPECT_EQ(why, BulkRefusal::kReplay);
  // Replayed later still.
  Frames third = s.coordinator.seal(message(3), 3);
  Frames third_again = copy(third);
  ASSERT_TRUE(s.pod.open(std::move(third), nullptr, nullptr).ok());
  EXPECT_FALSE(s.pod.open(std::move(third_again), nullptr, &why).ok());
  EXPECT_EQ(why, BulkRefusal::kReplay);
  EXPECT_FALSE(s.pod.open(std::move(first_again), nullptr, &why).ok());
  EXPECT_EQ(why, BulkRefusal::kReplay);
}

TEST(Bulk, FramesCannotBeSwappedDroppedCutOrSpliced) {
  auto s = pair_for(kBinding);
  const Frames a = s.coordinator.seal(message(1, {40, 5000, 5000}), 1, 4096);
  const Frames b = s.coordinator.seal(message(2, {40, 5000, 5000}), 1, 4096);
  BulkRefusal why = BulkRefusal::kNone;
  {  // two tensor frames of equal size swapped
    Frames t = copy(a);
    std::swap(t[2], t[3]);
    EXPECT_FALSE(s.pod.open(std::move(t), nullptr, &why).ok());
    EXPECT_EQ(why, BulkRefusal::kTampered);
  }
  {  // the last frame dropped, and the header's count edited to match
    Frames t = copy(a);
    t.pop_back();
    EXPECT_FALSE(s.pod.open(copy(t), nullptr, &why).ok());
    static_cast<uint8_t*>(t[0].data())[40] = 2;
    EXPECT_FALSE(s.pod.open(std::move(t), nullptr, &why).ok());
    EXPECT_EQ(why, BulkRefusal::kTampered);
  }
  {  // a frame cut to its first segment and that segment's tag
    Frames t = copy(a);
    std::string cut = bytes_of(t[2]).substr(0, 4096) + bytes_of(t[2]).substr(5000, 16);
    t[2] = zmq::message_t(cut.data(), cut.size());
    EXPECT_FALSE(s.pod.open(std::move(t), nullptr, &why).ok());
  }
  {  // a frame of message b spliced into a (same position, same length)
    Frames t = copy(b);
    t[2] = zmq::message_t(a[2].data(), a[2].size());
    EXPECT_FALSE(s.pod.open(std::move(t), nullptr, &why).ok());
    EXPECT_EQ(why, BulkRefusal::kTampered);
  }
  {  // the round in the header edited
    Frames t = copy(a);
    static_cast<uint8_t*>(t[0].data())[32] ^= 1;
    EXPECT_FALSE(s.pod.open(std::move(t), nullptr, &why).ok());
    EXPECT_EQ(why, BulkRefusal::kTampered);
  }
  EXPECT_TRUE(s.pod.open(copy(a), nullptr, nullptr).ok());
}

TEST(Bulk, MessagesCannotMoveBetweenPodsJobsOrDirections) {
  // Two pods of one job, and the same pod in another job: each has its own keys.
  auto pod_a = pair_for(kBinding);
  auto pod_b = pair_for({"job-1", "pod-b-key"});
  Frames for_a = pod_a.coordinator.seal(message(1), 1);
  BulkRefusal why = BulkRefusal::kNone;
  // Sent to pod b: its session id differs (unknown_session); with the id rewritten
  // to b's, the tag fails.
  EXPECT_FALSE(pod_b.pod.open(copy(for_a), nullptr, &why).ok());
  EXPECT_EQ(why, BulkRefusal::kUnknownSession);
  Frames moved = copy(for_a);
  std::memcpy(static_cast<uint8_t*>(moved[0].data()) + 8, pod_b.pod.id().data(), 16);
  EXPECT_FALSE(pod_b.pod.open(std::move(moved), nullptr, &why).ok());
  EXPECT_EQ(why, BulkRefusal::kTampered);
  // Reflected back to the coordinator that sealed it (the other direction's key).
  EXPECT_FALSE(pod_a.coordinator.open(copy(for_a), nullptr, &why).ok());
  EXPECT_EQ(why, BulkRefusal::kTampered);
  // Same key pairs, another binding (job or pod): other keys.
  BulkKeyPair c, p;
  auto job1 = BulkSession::derive(BulkRole::kCoordinator, c, p.public_key(), kBinding);
  for (const BulkBinding& other : {BulkBinding{"job-2", "pod-a-key"}, BulkBinding{"job-1", "pod-b-key"},
                                   BulkBinding{"job-1a", "pod-a-key"}}) {
    auto pod_other = BulkSession::derive(BulkRole::kPod, p, c.public_key(), other);
    ASSERT_TRUE(job1.ok() && pod_other.ok());
    EXPECT_FALSE(pod_other->open(job1->seal(message(5), 1), nullptr, &why).ok()) << other.job_id << other.pod_key;
    EXPECT_EQ(why, BulkRefusal::kTampered);
  }
  EXPECT_TRUE(pod_a.pod.open(std::move(for_a), nullptr, nullptr).ok());
}

TEST(Bulk, BadKeysAndHeadersAreClearErrors) {
  BulkKeyPair c;
  auto short_key = BulkSession::derive(BulkRole::kCoordinator, c, "abc", kBinding);
  ASSERT_FALSE(short_key.ok());
  EXPECT_NE(short_key.status().message().find("32"), std::string::npos);
  auto zero_key = BulkSession::derive(BulkRole::kCoordinator, c, std::string(32, '\0'), kBinding);
  EXPECT_FALSE(zero_key.ok());  // a low-order point gives no shared secret
  auto s = pair_for(kBinding);
  BulkRefusal why = BulkRefusal::kNone;
  Frames garbage;
  garbage.emplace_back("hello", 5);
  EXPECT_FALSE(s.pod.open(std::move(garbage), nullptr, &why).ok());
  EXPECT_EQ(why, BulkRefusal::kMalformed);
  EXPECT_FALSE(s.pod.open(Frames{}, nullptr, &why).ok());
  // A notice parses, names the session, and is not a message.
  Frames notice = bulk_notice(s.pod.id(), 4);
  auto h = parse_bulk_header(notice[0]);
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(h->kind, 2);
  EXPECT_EQ(h->session, s.pod.id());
  EXPECT_FALSE(s.coordinator.open(std::move(notice), nullptr, &why).ok());
  EXPECT_EQ(why, BulkRefusal::kMalformed);
}

TEST(Bulk, ManyThreadsGiveTheSameBytes) {
  // Sealing on one thread and on several gives the same ciphertext (the nonce and
  // associated data depend on the position only), and both open.
  BulkKeyPair c, p;
  auto a = BulkSession::derive(BulkRole::kCoordinator, c, p.public_key(), kBinding);
  auto b = BulkSession::derive(BulkRole::kCoordinator, c, p.public_key(), kBinding);
  auto pod = BulkSession::derive(BulkRole::kPod, p, c.public_key(), kBinding);
  ASSERT_TRUE(a.ok() && b.ok() && pod.ok());
  Frames plain = message(4, {64, 9u << 20, 3u << 20});
  BulkSession::set_max_threads(1);
  Frames one = a->seal(copy(plain), 2);
  BulkSession::set_max_threads(4);
  Frames four = b->seal(copy(plain), 2);
  BulkSession::set_max_threads(0);
  ASSERT_EQ(one.size(), four.size());
  for (size_t f = 0; f < one.size(); ++f) EXPECT_EQ(bytes_of(one[f]), bytes_of(four[f])) << "frame " << f;
  auto opened = pod->open(std::move(four), nullptr, nullptr);
  ASSERT_TRUE(opened.ok());
  EXPECT_EQ(bytes_of((*opened)[1]), bytes_of(plain[1]));
}

}  // namespace
}  // namespace fedpod::protocol
