// BM_Memcpy/K/P: memcpy of K buffers of P float32 each into one buffer, K·P·4 bytes
// counted. The baseline of every micro-benchmark that counts K·P·4 bytes (FedAvg
// reads K updates of P; the CPU all-reduce reads and writes K replicas' P values,
// as K memcpys of P do). micro_main.cpp prints each benchmark's throughput as a
// ratio to the BM_Memcpy run with the same arguments.
#pragma once

#include <cstdint>

namespace fedpod::bench {

// Registers BM_Memcpy/K/P (real time, milliseconds) unless it already is: files
// that need the same baseline share one run. Call during static initialization,
// like BENCHMARK().
void require_memcpy_baseline(int64_t k, int64_t p);

}  // namespace fedpod::bench
