// libFuzzer target: a hostile multipart message, decoded as a pod and a coordinator
// decode theirs (worker/worker.cpp handle()/dispatch(), coordinator.cpp receive()
// and its reply handlers).
//
// The input is cut into frames as envelope_fuzz.h describes, then goes through
// protocol::Incoming::parse with the limits the pod uses, and, when it parses, its
// body is read the way the receiving side reads that kind of message: startJob's
// model reference, artifact frame, hyperparameters and datastructure (resolved and
// split against a fixed 12-row table, as make_splits does on a pod); train and
// evaluate tensors through take_tensors and into a flat parameter buffer; a
// trainResult's tensors folded into FedAvg; a helloReply's schema resolved against
// the job's datastructure; and every field of the other kinds.
//
// Expected outcomes are a Status (returned, ignored here) and, as in the real
// handlers, kj::Exception (a message the schema cannot read) and ConfigError (bad
// hyperparameters). Anything else escaping - another exception type, a crash, a
// sanitizer report - is a finding.
#include "envelope_fuzz.h"

#include <kj/exception.h>
#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "fedpod/aggregation/fedavg.h"
#include "fedpod/common/config_util.h"
#include "fedpod/common/sha256.h"
#include "fedpod/data/dataset.h"
#include "fedpod/model/custom.h"
#include "fedpod/protocol/codec.h"
#include "fedpod/protocol/secagg.h"
#include "fedpod/protocol/secagg_wire.h"
#include "fedpod/protocol/wire_convert.h"

namespace fedpod::fuzz {
namespace {

using W = wire::Envelope::Body::Which;

// Fixed state of the receiving side, built once.
struct Receiver {
  std::vector<protocol::TensorSpec> specs = model_specs();
  int64_t numel = 0;
  data::Table table;  // the pod's
  data::Datastructure job_ds = job_datastructure();

  Receiver() {
    for (const auto& s : specs) {
      int64_t n = 1;
      for (int64_t d : s.shape) n *= d;
      numel += n;
    }
    table.schema = pod_schema();
    const int64_t rows = table.schema.num_rows;
    const int64_t cols = static_cast<int64_t>(table.schema.columns.size());
    table.values = torch::zeros({rows, cols}, torch::kFloat64);
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = 0; c < 4; ++c)
        table.values[r][c] = static_cast<double>((r * 7 + c * 3) % 17);
      table.values[r][4] = static_cast<double>(r % 2);  // city code
      table.values[r][5] = static_cast<double>(r % 3);  // label
    }
  }
};

const Receiver& receiver() {
  static const Receiver* r = new Receiver();  // never destroyed: no exit-time order issues
  return *r;
}

// The pod's load_parameters: received tensors copied into the model's flat buffer.
void load_parameters(const Receiver& rx, std::vector<torch::Tensor>& tensors) {
  torch::Tensor flat = torch::zeros({rx.numel}, torch::kFloat32);
  int64_t offset = 0;
  for (auto& t : tensors) {
    flat.narrow(0, offset, t.numel()).copy_(t.view({-1}));
    offset += t.numel();
  }
}

void metrics(capnp::List<wire::Metric>::Reader list) {
  double sum = 0;
  for (auto m : list) {
    std::string name = m.getName();
    sum += m.getValue() + static_cast<double>(name.size());
  }
  (void)sum;
}

// worker.cpp start_job, up to where the model is built.
void start_job(const Receiver& rx, protocol::Incoming& in, wire::StartJob::Reader sj) {
  auto mref = sj.getModel();
  const std::string username = mref.getUsername();
  const std::string ref = mref.getModelRef();
  if (!username.empty()) {
    (void)mref.getModelVersion();
    const std::string sha = mref.getSha256();
    const std::string format = mref.getFormat();
    if (!model::is_custom_format(format)) return;
    if (sha.size() != 64 || sha.find_first_not_of("0123456789abcdef") != std::string::npos) return;
    auto bytes = in.raw_frame(mref.getArtifactFrame(), mref.getArtifactBytes(),
                              "custom model " + ref + ": artifact");
    if (!bytes.ok()) return;
    (void)sha256_hex(*bytes);
  }
  const std::string hp_text = mref.getHyperparameters();
  nlohmann::json hp_json = nlohmann::json::object();
  if (!hp_text.empty()) {
    hp_json = nlohmann::json::parse(hp_text, nullptr, /*allow_exceptions=*/false);
    if (hp_json.is_discarded()) return;
  }
  Hyperparameters hp(hp_json);  // ConfigError unless an object: the pod replies invalid
  (void)hp.integer("batch_size", 32);
  (void)sj.getSeed();
  data::Datastructure ds = protocol::from_wire(sj.getDatastructure());
  auto splits = data::make_splits(rx.table, ds);
  if (splits.ok()) (void)splits->train.size();
}

// The tensors of train / evaluate (pod) and trainResult (coordinator).
void take(const Receiver& rx, protocol::Incoming& in, capnp::List<wire::TensorInfo>::Reader infos,
          double fold_weight, bool bf16_delta = false) {
  auto tensors = in.take_tensors(infos, rx.specs, true, bf16_delta ? wire::DType::BFLOAT16 : wire::DType::FLOAT32);
  if (!tensors.ok()) return;
  if (bf16_delta) {
    // coordinator.cpp: a bfloat16 change, added back to the round's parameters.
    for (auto& t : *tensors) t = protocol::add_bf16_delta(torch::ones(t.sizes(), torch::kFloat32), t);
  }
  if (fold_weight <= 0) {
    load_parameters(rx, *tensors);
    return;
  }
  // coordinator.cpp: each update folded into the running FedAvg sum.
  aggregation::FedAvg fedavg;
  fedavg.begin_round(torch::zeros({rx.numel}, torch::kFloat32));
  std::vector<aggregation::Segment> segments;
  int64_t offset = 0;
  for (auto& t : *tensors) {
    segments.push_back({offset, t.view({-1})});
    offset += t.numel();
  }
  if (fedavg.fold(segments, fold_weight).ok()) (void)fedavg.finish();
}

protocol::secagg::Settings secagg_settings() {
  protocol::secagg::Settings s;
  s.threshold = 3;
  s.neighbours = 4;
  s.clip = 10;
  s.modulus_bits = 32;
  s.fraction_bits = protocol::secagg::fraction_bits(32, 10, 5);
  return s;
}

// A fresh pod-side protocol state for each input (its keys are random; only its
// checks of the neighbours' keys are under test).
protocol::secagg::Client& secagg_client() {
  static std::unique_ptr<protocol::secagg::Client> c;
  c = std::make_unique<protocol::secagg::Client>(secagg_settings(), protocol::secagg::Context{"fuzz", 1}, 1);
  return *c;
}

void walk(const Receiver& rx, protocol::Incoming& in) {
  auto env = in.envelope();
  const std::string job_id = env.getJobId();
  (void)env.getRequestId();
  auto body = env.getBody();
  (void)protocol::body_name(body.which());
  switch (body.which()) {
    // What a pod accepts (worker.cpp dispatch()).
    case W::HELLO:
      break;
    case W::HEARTBEAT: {
      auto h = body.getHeartbeat();
      (void)h.getBusy();
      (void)h.getRound();
      break;
    }
    case W::FETCH_RESULT:
      (void)body.getFetchResult().getRound();
      break;
    case W::START_JOB:
      start_job(rx, in, body.getStartJob());
      break;
    case W::TRAIN: {
      auto t = body.getTrain();
      (void)t.getRound();
      (void)t.getLocalEpochs();
      (void)t.getLocalSteps();
      (void)t.getBatchSize();
      take(rx, in, t.getTensors(), 0);
      break;
    }
    case W::EVALUATE: {
      auto e = body.getEvaluate();
      (void)e.getRound();
      (void)e.getSplit();
      (void)e.getBatchSize();
      take(rx, in, e.getTensors(), 0);
      break;
    }
    case W::END_JOB: {
      std::string reason = std::string("requested: ") + body.getEndJob().getReason().cStr();
      (void)reason;
      break;
    }
    // What a coordinator accepts (coordinator.cpp receive() and the reply handlers).
    case W::HELLO_REPLY: {
      auto hr = body.getHelloReply();
      std::string pod = hr.getPodName();
      for (auto d : hr.getDevices()) pod += d.cStr();
      pod += hr.getActiveJob().cStr();
      (void)hr.getMaxFrameBytes();
      data::Schema schema = protocol::from_wire(hr.getSchema());
      (void)static_cast<int64_t>(hr.getSchema().getNumRows());
      auto features = data::resolve_features(schema, rx.job_ds);
      if (features.ok())
        (void)data::resolve_input_shape(rx.job_ds, static_cast<int64_t>(features->size()));
      break;
    }
    case W::JOB_ACCEPTED: {
      auto a = body.getJobAccepted();
      (void)(a.getTrainSamples() + a.getValidationSamples() + a.getTestSamples() +
             a.getSkippedRows() + a.getNumParameters());
      std::string decision = a.getDecision();
      break;
    }
    case W::TRAIN_DONE: {
      auto d = body.getTrainDone();
      (void)d.getRound();
      (void)d.getNumSamples();
      metrics(d.getMetrics());
      (void)d.getSeconds();
      if (d.hasSecAggKeys()) (void)protocol::secagg::from_wire(d.getSecAggKeys()).c_pk.size();
      break;
    }
    case W::TRAIN_RESULT: {
      auto r = body.getTrainResult();
      (void)r.getRound();
      metrics(r.getMetrics());
      (void)r.getSeconds();
      // The coordinator refuses num_samples 0 (trainDone) before fetching; FedAvg
      // weights by it.
      const uint64_t n = r.getNumSamples();
      if (r.getMasked()) {  // secure aggregation: one ring vector of numel + 1 int32s
        auto ring = in.take_tensors(r.getTensors(), {{"secagg", {rx.numel + 1}}}, false, wire::DType::INT32);
        if (ring.ok()) (void)(*ring)[0].nbytes();
        break;
      }
      take(rx, in, r.getTensors(), n == 0 ? 1.0 : static_cast<double>(n), r.getDelta());
      break;
    }
    case W::EVAL_RESULT: {
      auto r = body.getEvalResult();
      (void)r.getRound();
      (void)r.getSplit();
      (void)r.getNumSamples();
      (void)(r.getLoss() + r.getAccuracy());
      metrics(r.getMetrics());
      break;
    }
    case W::ERROR: {
      auto err = body.getError();
      StatusCode code = protocol::from_wire(err.getCode());
      std::string text = std::string(to_string(code)) + ": " + err.getMessage().cStr();
      (void)text;
      break;
    }
    case W::JOB_ENDED:
      break;
    // Secure aggregation (protocol/secagg.h): what a pod reads (share, mask, unmask)
    // and what a coordinator reads (shares, masked, reveal), checked by the protocol.
    case W::SEC_AGG_SHARE: {
      auto m = body.getSecAggShare();
      std::map<uint32_t, protocol::secagg::PublicKeys> nb;
      for (auto p : m.getNeighbours()) nb[p.getId()] = protocol::secagg::from_wire(p.getKeys());
      if (nb.size() <= 64) (void)secagg_client().share(nb);
      break;
    }
    case W::SEC_AGG_SHARES:
      (void)protocol::secagg::from_wire(body.getSecAggShares().getShares()).size();
      break;
    case W::SEC_AGG_MASK: {
      auto shares = protocol::secagg::from_wire(body.getSecAggMask().getShares());
      protocol::secagg::Client c(secagg_settings(), {"fuzz", body.getSecAggMask().getRound()}, 1);
      (void)c.receive(shares);  // refused: not shared yet
      break;
    }
    case W::SEC_AGG_MASKED:
      (void)body.getSecAggMasked().getRound();
      break;
    case W::SEC_AGG_UNMASK: {
      auto m = body.getSecAggUnmask();
      std::vector<uint32_t> survivors, dropped;
      for (uint32_t id : m.getSurvivors()) survivors.push_back(id);
      for (uint32_t id : m.getDropped()) dropped.push_back(id);
      protocol::secagg::Client c(secagg_settings(), {"fuzz", m.getRound()}, 1);
      (void)c.unmask(survivors, dropped);  // refused: nothing masked yet
      break;
    }
    case W::SEC_AGG_REVEAL: {
      auto m = body.getSecAggReveal();
      protocol::secagg::Reveal r{protocol::secagg::from_wire(m.getSelfMask()),
                                 protocol::secagg::from_wire(m.getPairKey())};
      (void)(r.self_mask.size() + r.pair_key.size());
      break;
    }
  }
}

}  // namespace
}  // namespace fedpod::fuzz

extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  // One intra-op thread: deterministic runs, and no pool threads for ASan to track.
  at::set_num_threads(1);
  (void)fedpod::fuzz::receiver();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace fedpod;
  auto parsed = protocol::Incoming::parse(fuzz::decode_frames(data, size), protocol::Limits());
  if (!parsed.ok()) return 0;
  try {
    fuzz::walk(fuzz::receiver(), **parsed);
  } catch (const kj::Exception&) {
    // Both handlers catch it: "malformed message" / "malformed reply".
  } catch (const ConfigError&) {
    // The pod replies invalid (bad hyperparameters).
  }
  return 0;
}
