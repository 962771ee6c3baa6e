// The coordinator's checkpoint: everything a job needs to continue after its
// coordinator dies, written after every completed round to
// <output_dir>/checkpoint.bin and read by `fedpod coordinator run --resume`.
//
// What it holds: the job id, the last completed round, the global parameters after
// it, the aggregation strategy's state (aggregation::Strategy::state), torch's CPU
// generator state, the next request id, history.json as of that round, and a
// fingerprint of what must not change between the run and its resume (model and
// resolved version, hyperparameters, datastructure, strategy, seed, local work, batch
// size, pods). `rounds` may grow: a finished job can be resumed for more rounds.
//
// File layout (little-endian):
//
//   "FEDPOD-CHECKPOINT-1\n"       20 bytes of magic
//   u64 header_bytes               then that many bytes of JSON (the header)
//   payload                        the tensors, raw, in the header's "tensors" order
//
// The header records each tensor's name, dtype and numel, and the payload's length
// and sha256: a truncated or altered file is refused with the reason, never half
// read. The file is replaced atomically (temp file, fsync, rename, fsync of the
// directory), so a crash at any point leaves the previous checkpoint or the new one.
//
// When. Round r's checkpoint (then history.json and report.html) is written on its
// own thread while the next rounds run, so disk waits are never on a round's path;
// one write at a time, each complete before the next starts (atomic rename). After
// each write the writer rests for four times the CPU time that write took (a long
// job's history makes its files costly to serialise; the rest keeps them to a fifth
// of one core). When a write is still going, or the writer rests, as round r ends,
// round r's files wait; if round r+1 ends before they were started, round r+1's
// replace them (latest wins; counted in fedpod_coordinator_checkpoints_skipped_total).
// The job returns only once the last round's files are written, at once. The resume
// guarantee, precisely: after the coordinator dies while round r+1 runs (its console
// already showing round r), the checkpoint on disk is that of round r, or of the last
// round whose write had finished: the rounds completed while one write went on and
// the writer rested after it are the most that is redone (with a 40 MB checkpoint
// that takes 0.1-0.4 s to write and fsync, mostly disk waits, a few fast rounds; one
// when the disk keeps up). The resumed job redoes the rounds after its checkpoint and
// ends with the parameters an uninterrupted run has. A failed write fails the job at
// the next round's end.
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "fedpod/common/status.h"

namespace fedpod::coordinator {

struct Checkpoint {
  std::string job_id;
  int round = 0;                  // the last completed round
  uint64_t next_request = 1;      // request ids continue from here
  std::string strategy;           // its name, e.g. "fedavg"
  nlohmann::json fingerprint;     // see above; compared by fingerprint_difference
  nlohmann::json history;         // history.json as of `round`
  torch::Tensor parameters;       // the global parameters, flat float32
  torch::Tensor rng_state;        // torch's default CPU generator state (uint8)
  std::vector<torch::Tensor> strategy_state;  // float32 tensors, possibly none
};

// Writes `c` to `path` atomically. Throws std::runtime_error on I/O failure.
void write_checkpoint(const std::string& path, const Checkpoint& c);

// Reads a checkpoint. not_found when `path` does not exist; bad_message naming the
// file and what is wrong for anything else that is not a complete checkpoint.
StatusOr<Checkpoint> read_checkpoint(const std::string& path);

// "" when `now` matches `saved`; otherwise what differs, e.g.
// "model.hyperparameters.lr is 0.1 in the checkpoint, 0.05 now".
std::string fingerprint_difference(const nlohmann::json& saved, const nlohmann::json& now);

}  // namespace fedpod::coordinator
