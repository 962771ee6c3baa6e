// The shared-memory ring between a pod's worker and its receiving process
// (worker/shm_ring.h): blocks never overlap a live block, a full ring says so instead
// of overwriting, released blocks come back in order, the consumer's bounds check
// refuses offsets outside the ring, and a block filled and released by another
// process (a real fork on a real memfd) is seen and reused by this one.
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <set>
#include <thread>
#include <vector>

#include "fedpod/worker/shm_ring.h"

namespace fedpod::worker {
namespace {

constexpr size_t H = ShmRing::kHeader;

struct Block {
  uint64_t offset, size;
};

bool overlaps(const Block& a, const Block& b) {
  return a.offset - H < b.offset + b.size && b.offset - H < a.offset + a.size;
}

TEST(ShmRingTest, BlocksAreAlignedInBoundsAndNeverOverlapALiveBlock) {
  std::vector<uint8_t> storage(64 * 1024 + 64);
  auto* base = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(storage.data()) + 63) / 64 * 64);
  ShmRing ring(base, 64 * 1024);
  std::mt19937 rng(7);
  std::vector<Block> live;
  int refused = 0;
  for (int step = 0; step < 5000; ++step) {
    if (!live.empty() && (rng() % 3 == 0)) {
      // Release a random live block (out of order, as frames are freed).
      const size_t k = rng() % live.size();
      ring.release(live[k].offset);
      live.erase(live.begin() + static_cast<long>(k));
      continue;
    }
    const size_t n = 1 + rng() % 9000;
    const auto off = ring.allocate(n);
    if (!off) {
      ++refused;
      continue;
    }
    const Block b{*off, n};
    ASSERT_EQ(b.offset % 64, 0u);
    ASSERT_GE(b.offset, H);
    ASSERT_LE(b.offset + b.size, ring.capacity());
    ASSERT_TRUE(ring.valid(b.offset, b.size));
    for (const auto& other : live) ASSERT_FALSE(overlaps(b, other)) << "step " << step;
    live.push_back(b);
  }
  EXPECT_GT(refused, 0) << "the test never filled the ring";
}

TEST(ShmRingTest, AFullRingRefusesAndReleasedBytesAreReusedLowestFirst) {
  std::vector<uint8_t> storage(4096 + 64);
  auto* base = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(storage.data()) + 63) / 64 * 64);
  ShmRing ring(base, 4096);
  // Each block takes 64 + 960 = 1024 bytes: four fill the ring, in address order.
  std::vector<uint64_t> blocks;
  for (int i = 0; i < 4; ++i) {
    auto off = ring.allocate(960);
    ASSERT_TRUE(off.has_value()) << i;
    if (i > 0) {
      EXPECT_EQ(*off, blocks.back() + 1024);
    }
    blocks.push_back(*off);
  }
  EXPECT_FALSE(ring.allocate(1).has_value()) << "a full ring handed out a block";
  EXPECT_FALSE(ring.allocate(5000).has_value()) << "a block larger than the ring";
  // A block released between live ones is reused at once (releases come in any order).
  ring.release(blocks[2]);
  EXPECT_EQ(ring.allocate(960), std::optional<uint64_t>(blocks[2]));
  EXPECT_FALSE(ring.allocate(1).has_value()) << "full again";
  // Two neighbours released: one block spanning both, at the lowest address.
  ring.release(blocks[1]);
  ring.release(blocks[0]);
  auto spanning = ring.allocate(1900);
  ASSERT_TRUE(spanning.has_value());
  EXPECT_EQ(*spanning, H);
  EXPECT_EQ(ring.live_blocks(), 3u);
  // One message held while the next arrives, over and over (a bfloat16 round's
  // parameters kept until its update is fetched): two places, used in turn.
  ring.release(*spanning);
  ring.release(blocks[2]);
  ring.release(blocks[3]);
  uint64_t held = *ring.allocate(1500);
  std::set<uint64_t> places = {held};
  for (int round = 0; round < 20; ++round) {
    const uint64_t next = *ring.allocate(1500);
    ring.release(held);
    held = next;
    places.insert(held);
  }
  EXPECT_EQ(places.size(), 2u) << "held-and-next should alternate between two places";
}

TEST(ShmRingTest, TheBoundsCheckRefusesWhatNoBlockCouldBe) {
  std::vector<uint8_t> storage(4096 + 64);
  auto* base = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(storage.data()) + 63) / 64 * 64);
  ShmRing ring(base, 4096);
  EXPECT_TRUE(ring.valid(64, 4032));
  EXPECT_FALSE(ring.valid(0, 10)) << "no room for the header";
  EXPECT_FALSE(ring.valid(65, 10)) << "not aligned";
  EXPECT_FALSE(ring.valid(64, 4033)) << "past the end";
  EXPECT_FALSE(ring.valid(4096 + 64, 1)) << "starts past the end";
  EXPECT_FALSE(ring.valid(64, ~uint64_t{0})) << "size that wraps around";
  EXPECT_FALSE(ring.valid(~uint64_t{0} / 64 * 64, 64)) << "offset that wraps around";
}

TEST(ShmRingTest, AnotherProcessFillsAndReleasesABlockThisOneReuses) {
  auto region = SharedRegion::create("shm-ring-test", 1 << 20);
  ASSERT_TRUE(region.ok()) << region.status().to_string();
  ShmRing ring((*region)->data(), (*region)->size());
  auto off = ring.allocate(100000);
  ASSERT_TRUE(off.has_value());
  const int fd = (*region)->fd();
  const size_t size = (*region)->size();
  const uint64_t at = *off;
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // The other side: its own mapping of the same memfd.
    auto mine = SharedRegion::attach(::dup(fd), size);
    if (!mine.ok()) ::_exit(3);
    ShmRing theirs((*mine)->data(), (*mine)->size());
    if (!theirs.valid(at, 100000)) ::_exit(4);
    std::memset(theirs.block(at), 0x5a, 100000);
    theirs.release(at);
    ::_exit(0);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  ASSERT_EQ(WEXITSTATUS(status), 0);
  const uint8_t* p = ring.block(at);
  for (size_t i = 0; i < 100000; i += 4999) ASSERT_EQ(p[i], 0x5a) << i;
  // Released over there: the ring is empty here, and starts over.
  auto next = ring.allocate(500000);
  ASSERT_TRUE(next.has_value());
  EXPECT_EQ(*next, at);
  EXPECT_EQ(ring.live_blocks(), 1u);
  // The size an attaching side expects must be the region's.
  EXPECT_FALSE(SharedRegion::attach(::dup(fd), size + 4096).ok());
}

TEST(ShmRingTest, BlocksReleasedOnOtherThreadsComeBack) {
  auto region = SharedRegion::create("shm-ring-threads", 1 << 16);
  ASSERT_TRUE(region.ok());
  ShmRing ring((*region)->data(), (*region)->size());
  for (int round = 0; round < 200; ++round) {
    std::vector<uint64_t> blocks;
    while (auto off = ring.allocate(4000)) blocks.push_back(*off);
    ASSERT_GE(blocks.size(), 10u) << "round " << round << ": released blocks did not come back";
    std::thread t([&] {
      for (uint64_t b : blocks) ring.release(b);
    });
    t.join();
  }
}

}  // namespace
}  // namespace fedpod::worker
