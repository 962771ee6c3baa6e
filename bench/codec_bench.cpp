// Encoding and decoding a parameter message of P float32 values in 8 tensors.
//
//   BM_EncodeDecode     envelope + zero-copy frames, parse, take tensors (no finite
//                       check): no payload byte is touched, so its time must not grow
//                       with P (its "bytes/s" grows with P instead).
//   BM_DecodeChecked    the same plus the finite-value check, one read of the payload.
//   BM_ReceiveIntoModel the worker's receive path: checked decode, then the one copy
//                       into the model's flat parameter buffer.
//   BM_Seal/threads:T   the tensor channel's AES-256-GCM sealing of the encoded
//                       message (protocol/bulk.h) on T threads (0: all cores).
//   BM_Open/threads:T   opening it again (in place), tags checked.
//   BM_Memcpy           memcpy of the P * 4 payload bytes: the baseline.
//   BM_RoundToBf16      the coordinator's bfloat16 copy of the parameters
//                       (broadcast_precision), bytes/s of the float32 read.
//   BM_Bf16Delta        a pod's bfloat16 change to the bfloat16 parameters it received.
//   BM_AddBf16Delta     the coordinator adding a bfloat16 change back in float32.
//   BM_CheckFiniteBf16  the finite check on a bfloat16 message (take_tensors).
#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include <cstring>

#include "fedpod/protocol/bulk.h"
#include "fedpod/protocol/codec.h"

namespace {

constexpr int kTensors = 8;

struct Message {
  std::vector<fedpod::protocol::NamedTensor> tensors;
  std::vector<fedpod::protocol::TensorSpec> specs;
};

Message make_message(int64_t p) {
  Message m;
  for (int i = 0; i < kTensors; ++i) {
    const int64_t n = p / kTensors + (i < p % kTensors ? 1 : 0);
    m.tensors.push_back({"layer" + std::to_string(i) + ".weight", torch::randn({n})});
    m.specs.push_back({m.tensors.back().name, {n}});
  }
  return m;
}

std::vector<zmq::message_t> encode(const Message& m) {
  fedpod::protocol::Outgoing out("bench", 1);
  auto t = out.envelope().getBody().initTrain();
  t.setRound(1);
  out.attach(t.initTensors(kTensors), m.tensors);
  return out.frames();
}

std::vector<torch::Tensor> decode(std::vector<zmq::message_t> frames, const Message& m, bool check,
                                  benchmark::State& state) {
  auto in = fedpod::protocol::Incoming::parse(std::move(frames));
  if (!in.ok()) {
    state.SkipWithError(in.status().to_string().c_str());
    return {};
  }
  auto tensors = (*in)->take_tensors((*in)->envelope().getBody().getTrain().getTensors(), m.specs, check);
  if (!tensors.ok()) state.SkipWithError(tensors.status().to_string().c_str());
  return tensors.ok() ? std::move(*tensors) : std::vector<torch::Tensor>{};
}

void BM_EncodeDecode(benchmark::State& state) {
  Message m = make_message(state.range(0));
  for (auto _ : state) {
    auto tensors = decode(encode(m), m, /*check=*/false, state);
    benchmark::DoNotOptimize(tensors.data());
  }
  state.SetBytesProcessed(state.iterations() * state.range(0) * 4);
}

void BM_DecodeChecked(benchmark::State& state) {
  Message m = make_message(state.range(0));
  for (auto _ : state) {
    auto tensors = decode(encode(m), m, /*check=*/true, state);
    benchmark::DoNotOptimize(tensors.data());
  }
  state.SetBytesProcessed(state.iterations() * state.range(0) * 4);
}

void BM_ReceiveIntoModel(benchmark::State& state) {
  Message m = make_message(state.range(0));
  torch::Tensor flat = torch::empty({state.range(0)});
  for (auto _ : state) {
    auto tensors = decode(encode(m), m, /*check=*/true, state);
    int64_t offset = 0;
    for (const auto& t : tensors) {
      std::memcpy(static_cast<float*>(flat.data_ptr()) + offset, t.data_ptr(), t.nbytes());
      offset += t.numel();
    }
    benchmark::DoNotOptimize(flat.data_ptr());
  }
  state.SetBytesProcessed(state.iterations() * state.range(0) * 4);
}

void BM_MemcpyPayload(benchmark::State& state) {
  torch::Tensor src = torch::randn({state.range(0)}), dst = torch::empty({state.range(0)});
  for (auto _ : state) {
    std::memcpy(dst.data_ptr(), src.data_ptr(), src.nbytes());
    benchmark::DoNotOptimize(dst.data_ptr());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * state.range(0) * 4);
}

// The bfloat16 passes, each on P values, single-threaded as the round runs them
// (the coordinator's and the pods' libtorch default to one thread).
void BM_RoundToBf16(benchmark::State& state) {
  at::set_num_threads(1);
  torch::Tensor x = torch::randn({state.range(0)});
  for (auto _ : state) {
    auto r = fedpod::protocol::round_to_bf16(x);
    benchmark::DoNotOptimize(r.data_ptr());
  }
  state.SetBytesProcessed(state.iterations() * state.range(0) * 4);
}

void BM_Bf16Delta(benchmark::State& state) {
  at::set_num_threads(1);
  torch::Tensor base = torch::randn({state.range(0)}).to(torch::kBFloat16);
  torch::Tensor trained = base.to(torch::kFloat32) + 0.01;
  for (auto _ : state) {
    auto d = fedpod::protocol::bf16_delta(trained, base);
    benchmark::DoNotOptimize(d.data_ptr());
  }
  state.SetBytesProcessed(state.iterations() * state.range(0) * 4);
}

void BM_AddBf16Delta(benchmark::State& state) {
  at::set_num_threads(1);
  torch::Tensor base = torch::randn({state.range(0)});
  torch::Tensor delta = (torch::randn({state.range(0)}) * 0.01).to(torch::kBFloat16);
  torch::Tensor out = torch::empty({state.range(0)});
  for (auto _ : state) {
    fedpod::protocol::add_bf16_delta_into(base, delta, out);
    benchmark::DoNotOptimize(out.data_ptr());
  }
  state.SetBytesProcessed(state.iterations() * state.range(0) * 4);
}

void BM_CheckFiniteBf16(benchmark::State& state) {
  torch::Tensor x = torch::randn({state.range(0)}).to(torch::kBFloat16);
  for (auto _ : state) {
    bool ok = fedpod::protocol::all_finite_bf16(static_cast<const uint16_t*>(x.data_ptr()),
                                                static_cast<size_t>(state.range(0)));
    benchmark::DoNotOptimize(ok);
  }
  state.SetBytesProcessed(state.iterations() * state.range(0) * 4);
}

struct SealedPair {
  fedpod::protocol::BulkSession coordinator, pod;
};

SealedPair sealed_pair() {
  using namespace fedpod::protocol;
  BulkKeyPair c, p;
  auto cs = BulkSession::derive(BulkRole::kCoordinator, c, p.public_key(), {"bench", "pod-key"});
  auto ps = BulkSession::derive(BulkRole::kPod, p, c.public_key(), {"bench", "pod-key"});
  return {std::move(*cs), std::move(*ps)};
}

void BM_Seal(benchmark::State& state) {
  Message m = make_message(state.range(0));
  auto s = sealed_pair();
  fedpod::protocol::BulkSession::set_max_threads(static_cast<unsigned>(state.range(1)));
  for (auto _ : state) {
    auto sealed = s.coordinator.seal(encode(m), 1);
    benchmark::DoNotOptimize(sealed.data());
  }
  fedpod::protocol::BulkSession::set_max_threads(0);
  state.SetBytesProcessed(state.iterations() * state.range(0) * 4);
}

void BM_Open(benchmark::State& state) {
  Message m = make_message(state.range(0));
  auto s = sealed_pair();
  fedpod::protocol::BulkSession::set_max_threads(static_cast<unsigned>(state.range(1)));
  for (auto _ : state) {
    state.PauseTiming();
    auto sealed = s.pod.seal(encode(m), 1);
    state.ResumeTiming();
    auto opened = s.coordinator.open(std::move(sealed), nullptr, nullptr);
    if (!opened.ok()) state.SkipWithError(opened.status().message().c_str());
    benchmark::DoNotOptimize(opened->data());
  }
  fedpod::protocol::BulkSession::set_max_threads(0);
  state.SetBytesProcessed(state.iterations() * state.range(0) * 4);
}

void SealSizes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"P", "threads"});
  for (int64_t p : {1'000'000, 10'000'000}) {
    for (int64_t t : {1, 0}) b->Args({p, t});
  }
  b->Unit(benchmark::kMicrosecond)->UseRealTime();
}

void Sizes(benchmark::internal::Benchmark* b) {
  b->Arg(1'000'000)->Arg(10'000'000)->Unit(benchmark::kMicrosecond)->UseRealTime();
}

}  // namespace

BENCHMARK(BM_EncodeDecode)->Apply(Sizes);
BENCHMARK(BM_DecodeChecked)->Apply(Sizes);
BENCHMARK(BM_ReceiveIntoModel)->Apply(Sizes);
BENCHMARK(BM_Seal)->Apply(SealSizes);
BENCHMARK(BM_Open)->Apply(SealSizes);
BENCHMARK(BM_RoundToBf16)->Apply(Sizes);
BENCHMARK(BM_Bf16Delta)->Apply(Sizes);
BENCHMARK(BM_AddBf16Delta)->Apply(Sizes);
BENCHMARK(BM_CheckFiniteBf16)->Apply(Sizes);
BENCHMARK(BM_MemcpyPayload)->Name("BM_Memcpy")->Apply(Sizes);
