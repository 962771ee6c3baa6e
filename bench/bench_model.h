// Benchmark-only model and trainer. They exist in the fedpod_round_bench binary
// alone: the fedpod binary's workers cannot create them, whatever a job says.
#pragma once

#include <memory>
#include <string>

#include "fedpod/model/model.h"
#include "fedpod/worker/worker.h"

namespace fedpod::bench {

// "bench-params": hyperparameters `params` (total float32 values) and `tensors`
// (how many tensors they are split into). Its forward ignores the input.
std::unique_ptr<model::Model> make_bench_model(const std::string& ref);

// A Runtime whose training returns the received parameters unchanged, so a round
// costs only the protocol: transfers, validation, copies and aggregation.
worker::Runtime echo_runtime();

}  // namespace fedpod::bench
