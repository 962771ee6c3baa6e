// Writes the seed corpus of envelope_fuzz: one real message of every kind the wire
// protocol has, built with protocol::Outgoing as the coordinator and the pods build
// them, plus a few near-misses that stop at a later check (a NaN parameter, a wrong
// shape, a custom model whose artifact frame is short, another protocol version).
// Tensors and the startJob datastructure match the harness's fixed model and table
// (envelope_fuzz.h), so the fuzzer starts past the checks a real message passes.
//
//   make_envelope_seeds DIR           writes DIR/seed-<name>.bin
//   make_envelope_seeds --check DIR   exits 1 when a committed seed differs from what
//                                     this build writes (fedpod.capnp changed: rerun
//                                     without --check and commit the result)
#include <torch/torch.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <memory>
#include <string>

#include "envelope_fuzz.h"
#include "fedpod/common/sha256.h"
#include "fedpod/protocol/codec.h"
#include "fedpod/protocol/secagg.h"
#include "fedpod/protocol/wire_convert.h"

namespace fedpod::fuzz {
namespace {

using Fill = std::function<void(protocol::Outgoing&)>;

std::string message(const Fill& fill, const std::string& job_id = "digits",
                    uint64_t request_id = 7) {
  protocol::Outgoing out(job_id, request_id);
  fill(out);
  auto frames = out.frames();
  return encode_frames(frames);
}

// The model's parameters, with fixed values; `poison` puts a NaN in the first one.
std::vector<protocol::NamedTensor> parameters(bool poison = false) {
  std::vector<protocol::NamedTensor> out;
  float v = 0.25f;
  for (const auto& spec : model_specs()) {
    torch::Tensor t = torch::empty(spec.shape, torch::kFloat32);
    float* p = t.data_ptr<float>();
    for (int64_t i = 0; i < t.numel(); ++i, v += 0.5f) p[i] = std::fmod(v, 3.0f) - 1.5f;
    out.push_back({spec.name, t});
  }
  if (poison) out[0].tensor.data_ptr<float>()[0] = std::nanf("");
  return out;
}

void metrics(capnp::List<wire::Metric>::Builder list, double loss) {
  list[0].setName("train_loss");
  list[0].setValue(loss);
  list[1].setName("train_accuracy");
  list[1].setValue(0.5);
}

data::Datastructure pod_datastructure() {
  data::Datastructure ds;
  ds.target = "label";
  ds.ignore = {"city"};
  ds.input_shape = {2, 2};
  ds.num_classes = 3;
  ds.split = {0.25, 0.25, 7};
  return ds;
}

std::map<std::string, std::string> seeds() {
  std::map<std::string, std::string> s;
  auto model_ref = [](wire::ModelReference::Builder m) {
    m.setModelRef("mlp");
    m.setHyperparameters(R"({"hidden":[8],"optimizer":"sgd","lr":0.05})");
  };
  s["hello"] = message([](protocol::Outgoing& o) { o.envelope().getBody().initHello(); });
  s["hello-reply"] = message([](protocol::Outgoing& o) {
    auto r = o.envelope().getBody().initHelloReply();
    r.setPodName("pod-a");
    protocol::to_wire(pod_schema(), r.initSchema());
    auto devices = r.initDevices(2);
    devices.set(0, "cpu");
    devices.set(1, "cpu");
    r.setActiveJob("");
    r.setMaxFrameBytes(uint64_t{2} << 30);
  });
  s["start-job"] = message([&](protocol::Outgoing& o) {
    auto sj = o.envelope().getBody().initStartJob();
    model_ref(sj.initModel());
    protocol::to_wire(pod_datastructure(), sj.initDatastructure());
    sj.setSeed(1);
  });
  // A differentially private job: its plan and DP-SGD settings.
  s["start-job-differential-privacy"] = message([&](protocol::Outgoing& o) {
    auto sj = o.envelope().getBody().initStartJob();
    model_ref(sj.initModel());
    protocol::to_wire(pod_datastructure(), sj.initDatastructure());
    sj.setSeed(1);
    auto plan = sj.initPlan();
    plan.setRounds(10);
    plan.setLocalEpochs(1);
    plan.setBatchSize(32);
    auto dp = sj.initDifferentialPrivacy();
    dp.setNoiseMultiplier(1.1);
    dp.setMaxGradNorm(1.0);
  });
  // A custom model: its artifact travels as the last frame, hashed by the pod.
  auto artifact = std::make_shared<const std::string>(
      "PK\x03\x04 fedpod fuzz seed: not a real TorchScript archive");
  auto custom = [&](uint64_t declared_bytes) {
    return message([&](protocol::Outgoing& o) {
      auto sj = o.envelope().getBody().initStartJob();
      auto m = sj.initModel();
      m.setUsername("alice");
      m.setModelRef("digits-net");
      m.setModelVersion(3);
      m.setHyperparameters(R"({"lr":0.01})");
      m.setSha256(sha256_hex(*artifact));
      m.setFormat("torchscript");
      m.setArtifactFrame(o.attach_bytes(artifact));
      m.setArtifactBytes(declared_bytes);
      protocol::to_wire(pod_datastructure(), sj.initDatastructure());
    });
  };
  s["start-job-custom"] = custom(artifact->size());
  s["start-job-custom-short-artifact"] = custom(artifact->size() + 1);
  s["start-job-hyperparameters-not-object"] = message([&](protocol::Outgoing& o) {
    auto sj = o.envelope().getBody().initStartJob();
    sj.initModel().setModelRef("mlp");
    sj.getModel().setHyperparameters("[1, 2]");
    protocol::to_wire(pod_datastructure(), sj.initDatastructure());
  });
  s["job-accepted"] = message([](protocol::Outgoing& o) {
    auto a = o.envelope().getBody().initJobAccepted();
    a.setTrainSamples(6);
    a.setValidationSamples(3);
    a.setTestSamples(3);
    a.setNumParameters(15);
    a.setDecision("general-modeller");
  });
  auto train = [&](bool poison) {
    return message([&](protocol::Outgoing& o) {
      auto t = o.envelope().getBody().initTrain();
      t.setRound(2);
      t.setLocalEpochs(1);
      t.setBatchSize(4);
      auto tensors = parameters(poison);
      auto infos = t.initTensors(
          static_cast<unsigned>(tensors.size()));  // first: argument order is unspecified
      o.attach(infos, std::move(tensors));
    });
  };
  s["train"] = train(false);
  s["train-nan"] = train(true);
  s["train-wrong-shape"] = message([](protocol::Outgoing& o) {
    auto t = o.envelope().getBody().initTrain();
    t.setRound(2);
    t.setLocalSteps(5);
    std::vector<protocol::NamedTensor> tensors = {{"linear.weight", torch::ones({4, 3})},
                                                  {"linear.bias", torch::ones({3})}};
    o.attach(t.initTensors(2), std::move(tensors));
  });
  s["train-done"] = message([](protocol::Outgoing& o) {
    auto d = o.envelope().getBody().initTrainDone();
    d.setRound(2);
    d.setNumSamples(6);
    metrics(d.initMetrics(2), 0.75);
    d.setSeconds(0.125);
  });
  // Secure aggregation's messages (protocol/secagg.h), with well-formed sizes.
  auto key = [](char c) { return std::string(32, c); };
  auto data = [](const std::string& b) {
    return capnp::Data::Reader(reinterpret_cast<const capnp::byte*>(b.data()), b.size());
  };
  auto keys = [&](wire::SecAggKeys::Builder k, char c) {
    k.setCPk(data(key(c)));
    k.setSPk(data(key(c + 1)));
    k.setBCommit(data(key(c + 2)));
  };
  s["train-done-secagg"] = message([&](protocol::Outgoing& o) {
    auto d = o.envelope().getBody().initTrainDone();
    d.setRound(2);
    d.setNumSamples(6);
    keys(d.initSecAggKeys(), 'a');
  });
  s["secagg-share"] = message([&](protocol::Outgoing& o) {
    auto m = o.envelope().getBody().initSecAggShare();
    m.setRound(2);
    auto list = m.initNeighbours(3);
    for (unsigned i = 0; i < 3; ++i) {
      list[i].setId(i + 2);
      keys(list[i].initKeys(), static_cast<char>('d' + 3 * i));
    }
  });
  auto boxes = [&](capnp::List<wire::SecAggShareBox>::Builder list) {
    for (unsigned i = 0; i < list.size(); ++i) {
      list[i].setOwner(i + 2);
      list[i].setRecipient(1);
      list[i].setCiphertext(data(std::string(protocol::secagg::kShareCipherBytes, static_cast<char>('p' + i))));
    }
  };
  s["secagg-shares"] = message([&](protocol::Outgoing& o) {
    auto m = o.envelope().getBody().initSecAggShares();
    m.setRound(2);
    boxes(m.initShares(3));
  });
  s["secagg-mask"] = message([&](protocol::Outgoing& o) {
    auto m = o.envelope().getBody().initSecAggMask();
    m.setRound(2);
    boxes(m.initShares(3));
  });
  s["secagg-masked"] = message([](protocol::Outgoing& o) { o.envelope().getBody().initSecAggMasked().setRound(2); });
  s["secagg-unmask"] = message([](protocol::Outgoing& o) {
    auto m = o.envelope().getBody().initSecAggUnmask();
    m.setRound(2);
    auto sv = m.initSurvivors(3);
    for (unsigned i = 0; i < 3; ++i) sv.set(i, i + 1);
    m.initDropped(1).set(0, 4);
  });
  s["secagg-reveal"] = message([&](protocol::Outgoing& o) {
    auto m = o.envelope().getBody().initSecAggReveal();
    m.setRound(2);
    auto self = m.initSelfMask(2);
    for (unsigned i = 0; i < 2; ++i) {
      self[i].setOwner(i + 1);
      self[i].setX(static_cast<uint8_t>(i + 1));
      self[i].setShare(data(key('s')));
    }
    auto pair = m.initPairKey(1);
    pair[0].setOwner(4);
    pair[0].setX(2);
    pair[0].setShare(data(key('k')));
  });
  s["train-result-masked"] = message([](protocol::Outgoing& o) {
    auto r = o.envelope().getBody().initTrainResult();
    r.setRound(2);
    r.setNumSamples(6);
    r.setMasked(true);
    int64_t numel = 0;
    for (const auto& t : parameters()) numel += t.tensor.numel();
    auto infos = r.initTensors(1);
    o.attach(infos, {{"secagg", torch::arange(numel + 1, torch::kInt32)}});
  });
  s["fetch-result"] =
      message([](protocol::Outgoing& o) { o.envelope().getBody().initFetchResult().setRound(2); });
  s["train-result"] = message([](protocol::Outgoing& o) {
    auto r = o.envelope().getBody().initTrainResult();
    r.setRound(2);
    r.setNumSamples(6);
    metrics(r.initMetrics(2), 0.75);
    r.setSeconds(0.125);
    auto tensors = parameters();
    auto infos = r.initTensors(
        static_cast<unsigned>(tensors.size()));  // first: argument order is unspecified
    o.attach(infos, std::move(tensors));
  });
  s["train-result-bfloat16"] = message([](protocol::Outgoing& o) {
    auto r = o.envelope().getBody().initTrainResult();
    r.setRound(2);
    r.setNumSamples(6);
    r.setDelta(true);
    auto tensors = parameters();
    for (auto& t : tensors) t.tensor = t.tensor.to(torch::kBFloat16);
    auto infos = r.initTensors(static_cast<unsigned>(tensors.size()));
    o.attach(infos, std::move(tensors));
  });
  s["evaluate"] = message([](protocol::Outgoing& o) {
    auto e = o.envelope().getBody().initEvaluate();
    e.setRound(2);
    e.setSplit(wire::Split::VALIDATION);
    e.setBatchSize(8);
    auto tensors = parameters();
    auto infos = e.initTensors(
        static_cast<unsigned>(tensors.size()));  // first: argument order is unspecified
    o.attach(infos, std::move(tensors));
  });
  s["eval-result"] = message([](protocol::Outgoing& o) {
    auto r = o.envelope().getBody().initEvalResult();
    r.setRound(2);
    r.setSplit(wire::Split::TEST);
    r.setNumSamples(3);
    r.setLoss(0.5);
    r.setAccuracy(0.75);
    metrics(r.initMetrics(2), 0.5);
  });
  s["end-job"] =
      message([](protocol::Outgoing& o) { o.envelope().getBody().initEndJob().setReason("done"); });
  s["job-ended"] = message([](protocol::Outgoing& o) { o.envelope().getBody().initJobEnded(); });
  s["error"] = message([](protocol::Outgoing& o) {
    protocol::set_error(o.envelope(), Status::busy("pod pod-a is running job 'other'"));
  });
  s["heartbeat"] = message([](protocol::Outgoing& o) {
    auto h = o.envelope().getBody().initHeartbeat();
    h.setBusy(true);
    h.setRound(2);
  });
  s["other-version"] = message([](protocol::Outgoing& o) {
    o.envelope().setProtocolVersion(wire::PROTOCOL_VERSION + 1);
    o.envelope().getBody().initHello();
  });
  return s;
}

}  // namespace
}  // namespace fedpod::fuzz

int main(int argc, char** argv) {
  const bool check = argc == 3 && std::string(argv[1]) == "--check";
  if (argc != 2 && !check) {
    std::fprintf(stderr, "usage: %s [--check] DIR\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[argc - 1];
  if (!check) std::filesystem::create_directories(dir);
  int stale = 0;
  for (const auto& [name, bytes] : fedpod::fuzz::seeds()) {
    const std::string path = dir + "/seed-" + name + ".bin";
    if (check) {
      std::ifstream in(path, std::ios::binary);
      const std::string committed((std::istreambuf_iterator<char>(in)),
                                  std::istreambuf_iterator<char>());
      if (!in.is_open() || committed != bytes) {
        std::fprintf(stderr, "%s: %s\n", path.c_str(),
                     in.is_open() ? "differs from what this build writes" : "missing");
        ++stale;
      }
      continue;
    }
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    if (!out) {
      std::fprintf(stderr, "%s: cannot write\n", path.c_str());
      return 1;
    }
  }
  if (stale) {
    std::fprintf(
        stderr,
        "%d stale envelope seed(s): regenerate with make_envelope_seeds %s and commit them\n",
        stale, dir.c_str());
    return 1;
  }
  return 0;
}
