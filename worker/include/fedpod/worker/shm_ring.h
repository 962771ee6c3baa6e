// A one-way ring of blocks in shared memory, between a pod's worker and its receiving
// process (gate.h): large frames cross from one to the other as a memcpy into the
// ring and a small descriptor on the ipc socket, instead of through the kernel's
// socket buffers (two more copies of every byte and a fresh, page-faulted buffer on
// the receiving side).
//
// One side produces: it allocates blocks, fills them and names them (offset, size)
// in a message. The other side consumes: it reads a named block in place for as
// long as it needs and then releases it, in any order and from any thread (ZeroMQ
// frees a zero-copy message on its I/O thread); the producer reuses a block's bytes
// once it is released. Releases are the only state the two sides share: one atomic
// word in a 64-byte header before each block. Which blocks are live the producer
// keeps in its own memory, so a consumer cannot corrupt the producer's bookkeeping,
// and a producer that goes away (a receiving process that is restarted) leaves a
// ring nobody allocates from again: the worker then maps a new one and the old one
// goes once its last block is released.
//
// Blocks go to the first free bytes from the start (first fit), so a ring that
// carries one message at a time touches only as many pages as its largest message,
// and one that holds a message while the next arrives (a pod keeps a bfloat16
// round's parameters until its update is fetched) only two messages' worth: fresh
// shared pages cost a page fault in each process that touches them. When no block
// fits, allocate() says so and the caller sends the frame the old way, through the
// socket: the ring bounds the memory it uses (its size, fixed when mapped), never
// what can be sent.
//
// Threading: allocate() by one thread (the producer's); release() by any thread;
// block() and valid() are pure.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "fedpod/common/status.h"

namespace fedpod::worker {

class ShmRing {
 public:
  static constexpr size_t kHeader = 64;  // bytes before each block; blocks are 64-byte aligned

  // A view of `bytes` at `base` (both 64-byte aligned; the caller owns the mapping
  // and keeps it alive as long as the ring).
  ShmRing(uint8_t* base, size_t bytes);
  ShmRing(const ShmRing&) = delete;
  ShmRing& operator=(const ShmRing&) = delete;

  size_t capacity() const { return bytes_; }

  // Producer: a block of `n` bytes (n > 0), as the offset of its first byte in the
  // ring; nullopt when none fits now.
  std::optional<uint64_t> allocate(size_t n);
  // Producer: blocks handed out and not yet taken back (released ones are taken
  // back by the next allocate()).
  size_t live_blocks() const { return live_.size(); }

  // Either side: whether (offset, n) names bytes a block could occupy (in bounds,
  // aligned, after a header). Checked by the consumer before it touches them.
  bool valid(uint64_t offset, uint64_t n) const;
  uint8_t* block(uint64_t offset) const { return base_ + offset; }
  // Consumer: the block at `offset` may be reused. Any thread.
  void release(uint64_t offset);

 private:
  void reclaim();
  uint32_t* state(uint64_t header) const { return reinterpret_cast<uint32_t*>(base_ + header); }

  uint8_t* base_;
  size_t bytes_;
  std::map<uint64_t, uint64_t> live_;  // header offset -> one past the block's end; producer only
};

// A shared-memory file (memfd) of `bytes`, mapped here: the two rings between the
// worker and one receiving process. `fd` is passed to the child (it maps it again).
class SharedRegion {
 public:
  // A new memfd of `bytes` (rounded up to a page), mapped read-write and shared.
  static StatusOr<std::shared_ptr<SharedRegion>> create(const std::string& name, size_t bytes);
  // Maps an inherited memfd (the receiving process's side); `bytes` must be its size.
  static StatusOr<std::shared_ptr<SharedRegion>> attach(int fd, size_t bytes);
  ~SharedRegion();
  SharedRegion(const SharedRegion&) = delete;
  SharedRegion& operator=(const SharedRegion&) = delete;

  int fd() const { return fd_; }
  uint8_t* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  SharedRegion(int fd, uint8_t* data, size_t size) : fd_(fd), data_(data), size_(size) {}
  int fd_;
  uint8_t* data_;
  size_t size_;
};

}  // namespace fedpod::worker
