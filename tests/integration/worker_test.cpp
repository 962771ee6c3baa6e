// The worker as a coordinator sees it: a real Worker serving on loopback in a thread,
// spoken to over a DEALER socket with hand-built (and hand-broken) messages.
#include "fedpod/worker/worker.h"

#include <gtest/gtest.h>

#include <regex>
#include <torch/torch.h>

#include <cmath>
#include <functional>
#include <optional>
#include <thread>

#include "fedpod/data/dataset.h"
#include "fedpod/model/zoo.h"

#include "fedpod/protocol/codec.h"
#include "fedpod/protocol/secagg.h"
#include "fedpod/protocol/secagg_wire.h"
#include "fedpod/protocol/socket.h"
#include "fedpod/protocol/wire_convert.h"
#include "fedpod/worker/task_pool.h"
#include "identity.h"
#include "testutil.h"

namespace fedpod {
namespace {

using namespace std::chrono_literals;
using W = wire::Envelope::Body::Which;

class Client {
 public:
  Client(zmq::context_t& ctx, const std::string& endpoint, const protocol::SocketOptions& opts)
      : socket_(protocol::make_dealer(ctx, endpoint, opts)) {}

  void send(std::vector<zmq::message_t> frames) { ASSERT_TRUE(protocol::send_frames(socket_, frames)); }
  void send(protocol::Outgoing& out) { send(out.frames()); }

  // The next reply, or nullptr after `timeout`.
  std::unique_ptr<protocol::Incoming> recv(std::chrono::milliseconds timeout = 10s) {
    zmq::pollitem_t item{socket_.handle(), 0, ZMQ_POLLIN, 0};
    if (zmq::poll(&item, 1, timeout) == 0) return nullptr;
    std::vector<zmq::message_t> frames;
    bool too_many;
    if (!protocol::recv_frames(socket_, frames, 100000, too_many)) return nullptr;
    auto in = protocol::Incoming::parse(std::move(frames));
    EXPECT_TRUE(in.ok()) << in.status().to_string();
    return in.ok() ? std::move(*in) : nullptr;
  }

  std::unique_ptr<protocol::Incoming> request(protocol::Outgoing& out) {
    send(out);
    return recv();
  }

 private:
  zmq::socket_t socket_;
};

// An Error reply's text, or "" if the reply is not an error.
std::string error_of(const protocol::Incoming& in) {
  auto body = in.envelope().getBody();
  if (body.which() != W::ERROR) return "";
  return std::string(to_string(protocol::from_wire(body.getError().getCode()))) + ": " +
         body.getError().getMessage().cStr();
}

class WorkerTest : public ::testing::Test {
 protected:
  void SetUp() override { start(int64_t{0}); }

  void start(int64_t max_frame_bytes, std::vector<std::string> devices = {"cpu"},
             worker::Runtime runtime = worker::Runtime()) {
    worker::PodConfig config;
    config.name = "test-pod";
    config.listen = "tcp://127.0.0.1:*";
    config.dataset_path = testing::source_dir() + "/examples/digits/pod-a.csv";
    config.devices = std::move(devices);
    config.threads = 2;
    if (max_frame_bytes > 0) config.max_frame_bytes = max_frame_bytes;
    id_.secure(config);
    worker_ = std::make_unique<worker::Worker>(ctx_, config, null_logger(), std::move(runtime));
    thread_ = std::thread([this] { worker_->serve(stop_); });
    client_ = std::make_unique<Client>(ctx_, worker_->endpoint(), id_.client_options("test-pod"));
  }

  void TearDown() override {
    client_.reset();
    stop_ = true;
    thread_.join();
  }

  // Starts job `job_id` with `model_ref`; returns the reply.
  // With `secagg`, the job aggregates securely and this pod is id 1.
  std::unique_ptr<protocol::Incoming> start_job(const std::string& job_id, const std::string& model_ref = "logreg",
                                                const std::string& hp = "{}",
                                                const std::optional<protocol::secagg::Settings>& secagg = std::nullopt) {
    protocol::Outgoing out(job_id, next_id_++);
    auto sj = out.envelope().getBody().initStartJob();
    sj.initModel().setModelRef(model_ref);
    sj.getModel().setHyperparameters(hp);
    data::Datastructure ds;
    ds.target = "label";
    ds.num_classes = 10;
    ds.scale = 1.0 / 16;
    ds.split = {0.1, 0.2, 3};
    protocol::to_wire(ds, sj.initDatastructure());
    if (secagg) protocol::secagg::to_wire(*secagg, 1, sj.initSecureAggregation());
    return client_->request(out);
  }

  // The layout of the job's model, built the way the coordinator builds it.
  std::vector<model::ParamInfo> layout(const std::string& model_ref = "logreg", const std::string& hp = "{}") {
    auto m = model::make_builtin(model_ref);
    m->create_model({64}, 10, Hyperparameters(nlohmann::json::parse(hp)));
    return m->flat().layout();
  }

  // A train message carrying `tensors` for `layout`.
  std::unique_ptr<protocol::Outgoing> train_msg(const std::string& job_id, std::vector<protocol::NamedTensor> tensors,
                                                uint32_t steps = 5) {
    auto out = std::make_unique<protocol::Outgoing>(job_id, next_id_++);
    auto t = out->envelope().getBody().initTrain();
    t.setRound(1);
    t.setLocalSteps(steps);
    t.setBatchSize(16);
    auto infos = t.initTensors(tensors.size());
    out->attach(infos, std::move(tensors));
    return out;
  }

  std::unique_ptr<protocol::Incoming> fetch(uint32_t round, const std::string& job_id = "job-1") {
    protocol::Outgoing out(job_id, next_id_++);
    out.envelope().getBody().initFetchResult().setRound(round);
    return client_->request(out);
  }

  std::vector<protocol::NamedTensor> zeros_for(const std::vector<model::ParamInfo>& l) {
    std::vector<protocol::NamedTensor> out;
    for (const auto& p : l) out.push_back({p.name, torch::zeros(p.shape)});
    return out;
  }

  testing::TempDir dir_;
  testing::TestIdentity id_{dir_.path()};
  zmq::context_t ctx_{1};
  std::atomic<bool> stop_{false};
  std::unique_ptr<worker::Worker> worker_;
  std::thread thread_;
  std::unique_ptr<Client> client_;
  uint64_t next_id_ = 1;
};

// The reply must prove the worker is still serving after a rejection.
void expect_still_serving(Client& client) {
  protocol::Outgoing hello("", 999);
  hello.envelope().getBody().initHello();
  auto r = client.request(hello);
  ASSERT_NE(r, nullptr) << "worker stopped answering";
  EXPECT_EQ(r->envelope().getBody().which(), W::HELLO_REPLY);
}

// A coordinator that runs secure aggregation's steps out of order, or with bad keys,
// gets an error naming what is wrong, and the pod keeps serving the job: a refused
// train does not leave it busy.
TEST_F(WorkerTest, SecureAggregationStepsOutOfOrderAreRefusedAndThePodKeepsServing) {
  namespace sa = protocol::secagg;
  sa::Settings settings;
  settings.threshold = 3;
  settings.neighbours = 4;
  settings.clip = 10;
  settings.modulus_bits = 32;
  settings.fraction_bits = sa::fraction_bits(32, 10, 5);
  settings.weight_scale = 1000;
  auto start = [&](const std::string& job_id, const sa::Settings& s) { return start_job(job_id, "logreg", "{}", s); };
  sa::Settings bad = settings;
  bad.threshold = 2;  // not a majority of 5 share holders
  auto refused = start("job-bad", bad);
  ASSERT_TRUE(refused);
  EXPECT_NE(error_of(*refused).find("more than half"), std::string::npos) << error_of(*refused);

  auto accepted = start("job-1", settings);
  ASSERT_TRUE(accepted);
  ASSERT_EQ(accepted->envelope().getBody().which(), W::JOB_ACCEPTED) << error_of(*accepted);
  auto share = [&](std::vector<std::pair<uint32_t, sa::PublicKeys>> neighbours) {
    protocol::Outgoing out("job-1", next_id_++);
    auto m = out.envelope().getBody().initSecAggShare();
    m.setRound(1);
    auto list = m.initNeighbours(static_cast<unsigned>(neighbours.size()));
    for (unsigned i = 0; i < neighbours.size(); ++i) {
      list[i].setId(neighbours[i].first);
      sa::to_wire(neighbours[i].second, list[i].initKeys());
    }
    return client_->request(out);
  };
  const sa::PublicKeys good{std::string(32, 'c'), std::string(32, 's'), std::string(32, 'b')};
  auto early = share({{2, good}, {3, good}});
  ASSERT_TRUE(early);
  EXPECT_NE(error_of(*early).find("holds no secure aggregation state for round 1"), std::string::npos)
      << error_of(*early);

  const auto l = layout();
  auto bf16 = train_msg("job-1", zeros_for(l));
  bf16->envelope().getBody().getTrain().setUpdateDtype(wire::DType::BFLOAT16);
  auto no_bf16 = client_->request(*bf16);
  ASSERT_TRUE(no_bf16);
  EXPECT_NE(error_of(*no_bf16).find("bfloat16 updates in a job with secure aggregation"), std::string::npos)
      << error_of(*no_bf16);
  auto bf16_params = zeros_for(l);
  for (auto& t : bf16_params) t.tensor = t.tensor.to(torch::kBFloat16);
  auto rounded = train_msg("job-1", std::move(bf16_params));
  rounded->envelope().getBody().getTrain().setParamsDtype(wire::DType::BFLOAT16);
  auto no_rounded = client_->request(*rounded);
  ASSERT_TRUE(no_rounded);
  EXPECT_NE(error_of(*no_rounded).find("bfloat16 parameters in a job with secure aggregation"), std::string::npos)
      << error_of(*no_rounded);
  auto odd = train_msg("job-1", zeros_for(l));
  odd->envelope().getBody().getTrain().setUpdateDtype(wire::DType::INT32);
  auto no_odd = client_->request(*odd);
  ASSERT_TRUE(no_odd);
  EXPECT_NE(error_of(*no_odd).find("not float32 or bfloat16"), std::string::npos) << error_of(*no_odd);
  auto done = client_->request(*train_msg("job-1", zeros_for(l)));  // not left busy by the refusals
  ASSERT_TRUE(done);
  ASSERT_EQ(done->envelope().getBody().which(), W::TRAIN_DONE) << error_of(*done);
  ASSERT_TRUE(done->envelope().getBody().getTrainDone().hasSecAggKeys());
  EXPECT_EQ(sa::from_wire(done->envelope().getBody().getTrainDone().getSecAggKeys()).c_pk.size(), 32u);

  auto too_few = share({{2, good}});
  ASSERT_TRUE(too_few);
  EXPECT_NE(error_of(*too_few).find("fewer than the threshold 3"), std::string::npos) << error_of(*too_few);
  const sa::PublicKeys short_key{std::string(16, 'c'), std::string(32, 's'), std::string(32, 'b')};
  auto malformed = share({{2, good}, {3, short_key}});
  ASSERT_TRUE(malformed);
  EXPECT_NE(error_of(*malformed).find("malformed"), std::string::npos) << error_of(*malformed);
  auto unfetchable = fetch(1);
  ASSERT_TRUE(unfetchable);
  EXPECT_NE(error_of(*unfetchable).find("has not masked its update for round 1"), std::string::npos)
      << error_of(*unfetchable);
  protocol::Outgoing unmask("job-1", next_id_++);
  unmask.envelope().getBody().initSecAggUnmask().setRound(1);
  auto no_unmask = client_->request(unmask);
  ASSERT_TRUE(no_unmask);
  EXPECT_NE(error_of(*no_unmask).find("before this pod sent its masked update"), std::string::npos)
      << error_of(*no_unmask);
  // Still serving.
  protocol::Outgoing hello("", next_id_++);
  hello.envelope().getBody().initHello();
  auto hr = client_->request(hello);
  ASSERT_TRUE(hr);
  EXPECT_EQ(hr->envelope().getBody().which(), W::HELLO_REPLY);
}

TEST_F(WorkerTest, HelloAdvertisesSchemaAndDevices) {
  protocol::Outgoing out("", 1);
  out.envelope().getBody().initHello();
  auto r = client_->request(out);
  ASSERT_NE(r, nullptr);
  ASSERT_EQ(r->envelope().getBody().which(), W::HELLO_REPLY);
  auto hr = r->envelope().getBody().getHelloReply();
  EXPECT_EQ(std::string(hr.getPodName()), "test-pod");
  data::Schema schema = protocol::from_wire(hr.getSchema());
  EXPECT_EQ(schema.columns.size(), 65u);
  EXPECT_EQ(schema.columns.back().name, "label");
  EXPECT_EQ(schema.num_rows, 684);
  ASSERT_EQ(hr.getDevices().size(), 1u);
  EXPECT_EQ(std::string(hr.getDevices()[0]), "cpu");
  EXPECT_EQ(r->envelope().getRequestId(), 1u);
}

TEST_F(WorkerTest, GarbageEnvelopeGetsErrorAndWorkerKeepsServing) {
  std::vector<zmq::message_t> frames;
  std::string junk(40, '\xAB');
  frames.emplace_back(junk.data(), junk.size());
  client_->send(std::move(frames));
  auto r = client_->recv();
  ASSERT_NE(r, nullptr);
  EXPECT_NE(error_of(*r).find("bad_message: malformed envelope"), std::string::npos) << error_of(*r);
  EXPECT_EQ(worker_->counters().bad_messages.load(), 1);
  expect_still_serving(*client_);
}

TEST_F(WorkerTest, EnvelopeOfOddSizeIsRejected) {
  std::vector<zmq::message_t> frames;
  frames.emplace_back(std::string(13, 'x').data(), 13);
  client_->send(std::move(frames));
  auto r = client_->recv();
  ASSERT_NE(r, nullptr);
  EXPECT_NE(error_of(*r).find("not a whole number of 8-byte words"), std::string::npos) << error_of(*r);
  expect_still_serving(*client_);
}

TEST_F(WorkerTest, TrainBeforeStartJobIsRefused) {
  auto msg = train_msg("job-1", zeros_for(layout()));
  auto r = client_->request(*msg);
  ASSERT_NE(r, nullptr);
  EXPECT_NE(error_of(*r).find("failed_precondition: no job is running on pod test-pod"), std::string::npos)
      << error_of(*r);
}

TEST_F(WorkerTest, UnknownModelIsRefusedByName) {
  auto r = start_job("job-1", "resnet9000");
  ASSERT_NE(r, nullptr);
  EXPECT_NE(error_of(*r).find("not_found: model 'resnet9000'"), std::string::npos) << error_of(*r);
}

// A coordinator that skipped the check (an old or a hostile one) gets the same answer
// from the pod: unknown and ill-typed hyperparameters refuse the job; the pod is free.
TEST_F(WorkerTest, UndeclaredOrIllTypedHyperparametersAreRefused) {
  auto r = start_job("job-1", "mlp", R"({"optimiser": "adam", "hidden": "wide"})");
  ASSERT_NE(r, nullptr);
  EXPECT_NE(error_of(*r).find("invalid_argument: pod test-pod: model mlp: hyperparameter 'hidden' must be a list of "
                              "integers, got \"wide\"; unknown hyperparameter 'optimiser' (did you mean "
                              "'optimizer'?); accepted: batch_norm, batch_size, dropout, hidden, lr, momentum, "
                              "optimizer, weight_decay"),
            std::string::npos)
      << error_of(*r);
  r = start_job("job-2", "logreg", R"({"optimizer": "adagrad"})");
  EXPECT_NE(error_of(*r).find("hyperparameter 'optimizer' must be one of sgd, adam, adamw, got \"adagrad\""),
            std::string::npos)
      << error_of(*r);
  EXPECT_EQ(start_job("job-3", "mlp", R"({"hidden": [16], "lr": 0.1})")->envelope().getBody().which(),
            W::JOB_ACCEPTED);
}

TEST_F(WorkerTest, StartJobReportsSplitSizes) {
  auto r = start_job("job-1");
  ASSERT_NE(r, nullptr);
  ASSERT_EQ(r->envelope().getBody().which(), W::JOB_ACCEPTED) << error_of(*r);
  auto a = r->envelope().getBody().getJobAccepted();
  // 684 rows: floor(0.2*684)=136 test, floor(0.1*684)=68 validation, the rest train.
  EXPECT_EQ(a.getTestSamples(), 136u);
  EXPECT_EQ(a.getValidationSamples(), 68u);
  EXPECT_EQ(a.getTrainSamples(), 480u);
  EXPECT_EQ(a.getNumParameters(), 64u * 10 + 10);
}

// Every malformed train leaves the job intact: a valid train afterwards succeeds.
TEST_F(WorkerTest, MalformedTrainMessagesAreRejectedAndStateKept) {
  ASSERT_EQ(start_job("job-1")->envelope().getBody().which(), W::JOB_ACCEPTED);
  const auto l = layout();
  struct Case {
    std::string what;
    std::function<std::vector<zmq::message_t>()> frames;
    std::string expect;
  };
  auto good = [&] { return train_msg("job-1", zeros_for(l))->frames(); };
  std::vector<Case> cases = {
      {"wrong shape",
       [&] {
         auto t = zeros_for(l);
         t[0].tensor = torch::zeros({10, 63});
         return train_msg("job-1", t)->frames();
       },
       "has shape [10, 63], expected [10, 64]"},
      {"wrong dtype",
       [&] {
         auto t = zeros_for(l);
         t[1].tensor = torch::zeros({10}, torch::kFloat64);
         return train_msg("job-1", t)->frames();
       },
       "has dtype float64, expected float32"},
      {"NaN",
       [&] {
         auto t = zeros_for(l);
         t[0].tensor[3][7] = std::nanf("");
         return train_msg("job-1", t)->frames();
       },
       "contains NaN or infinity"},
      {"infinity in last element",
       [&] {
         auto t = zeros_for(l);
         t[1].tensor[9] = INFINITY;
         return train_msg("job-1", t)->frames();
       },
       "contains NaN or infinity"},
      {"truncated frame",
       [&] {
         auto f = good();
         f[1] = zmq::message_t(f[1].data(), f[1].size() - 4);
         return f;
       },
       "frame has 2556 bytes, expected 2560"},
      {"missing frame",
       [&] {
         auto f = good();
         f.pop_back();
         return f;
       },
       "1 tensor frames for 2 tensors"},
      {"extra frame",
       [&] {
         auto f = good();
         f.emplace_back(8);
         return f;
       },
       "3 tensor frames for 2 tensors"},
      {"wrong tensor names",
       [&] {
         auto t = zeros_for(l);
         std::swap(t[0].name, t[1].name);
         return train_msg("job-1", t)->frames();
       },
       "tensor 0 is '0.bias', expected '0.weight'"},
      {"wrong job",
       [&] { return train_msg("job-2", zeros_for(l))->frames(); },
       "message for job 'job-2', pod test-pod runs 'job-1'"},
      {"float32 tensors said to be bfloat16",
       [&] {
         auto m = train_msg("job-1", zeros_for(l));
         m->envelope().getBody().getTrain().setParamsDtype(wire::DType::BFLOAT16);
         return m->frames();
       },
       "has dtype float32, expected bfloat16"},
      {"bfloat16 tensors said to be float32",
       [&] {
         auto t = zeros_for(l);
         for (auto& n : t) n.tensor = n.tensor.to(torch::kBFloat16);
         return train_msg("job-1", t)->frames();
       },
       "has dtype bfloat16, expected float32"},
      {"bfloat16 NaN",
       [&] {
         auto t = zeros_for(l);
         t[0].tensor[2][5] = std::nanf("");
         for (auto& n : t) n.tensor = n.tensor.to(torch::kBFloat16);
         auto m = train_msg("job-1", t);
         m->envelope().getBody().getTrain().setParamsDtype(wire::DType::BFLOAT16);
         return m->frames();
       },
       "contains NaN or infinity"},
      {"parameters of another dtype",
       [&] {
         auto m = train_msg("job-1", zeros_for(l));
         m->envelope().getBody().getTrain().setParamsDtype(wire::DType::FLOAT64);
         return m->frames();
       },
       "train sends parameters of a dtype that is not float32 or bfloat16"},
  };
  for (auto& c : cases) {
    client_->send(c.frames());
    auto r = client_->recv();
    ASSERT_NE(r, nullptr) << c.what;
    EXPECT_NE(error_of(*r).find(c.expect), std::string::npos) << c.what << ": " << error_of(*r);
  }
  EXPECT_EQ(worker_->counters().rounds_trained.load(), 0);
  // The job survived all of that.
  auto msg = train_msg("job-1", zeros_for(l));
  auto done = client_->request(*msg);
  ASSERT_NE(done, nullptr);
  ASSERT_EQ(done->envelope().getBody().which(), W::TRAIN_DONE) << error_of(*done);
  EXPECT_EQ(done->envelope().getBody().getTrainDone().getNumSamples(), 480u);
  auto r = fetch(1);
  ASSERT_NE(r, nullptr);
  ASSERT_EQ(r->envelope().getBody().which(), W::TRAIN_RESULT) << error_of(*r);
  auto tr = r->envelope().getBody().getTrainResult();
  EXPECT_EQ(tr.getNumSamples(), 480u);
  auto tensors = r->take_tensors(tr.getTensors(), protocol::tensor_specs(l));
  ASSERT_TRUE(tensors.ok()) << tensors.status().to_string();
  // Five SGD steps from zero moved the weights.
  EXPECT_GT((*tensors)[0].abs().sum().item<double>(), 0.0);
}

// Train.paramsDtype bfloat16: the pod widens the parameters to float32, trains, and
// a bfloat16 update is its change to the values it received. Checked against the
// same round trained from the same values sent as float32 (same seed, same batches).
TEST_F(WorkerTest, BFloat16ParametersTrainInFloat32AndTheDeltaIsAgainstThem) {
  ASSERT_EQ(start_job("job-1")->envelope().getBody().which(), W::JOB_ACCEPTED);
  const auto l = layout();
  torch::manual_seed(7);
  std::vector<protocol::NamedTensor> rounded, widened;
  for (const auto& p : l) {
    const auto r = (torch::randn(p.shape) * 0.1).to(torch::kBFloat16);
    rounded.push_back({p.name, r});
    widened.push_back({p.name, r.to(torch::kFloat32)});
  }
  std::vector<torch::Tensor> base;
  for (const auto& n : widened) base.push_back(n.tensor.clone());

  // float32 parameters, float32 update: the trained parameters themselves.
  auto plain = train_msg("job-1", widened, 1);
  auto plain_done = client_->request(*plain);
  ASSERT_NE(plain_done, nullptr);
  ASSERT_EQ(plain_done->envelope().getBody().which(), W::TRAIN_DONE) << error_of(*plain_done);
  auto pr = fetch(1);
  ASSERT_NE(pr, nullptr);
  ASSERT_EQ(pr->envelope().getBody().which(), W::TRAIN_RESULT) << error_of(*pr);
  auto trained = pr->take_tensors(pr->envelope().getBody().getTrainResult().getTensors(), protocol::tensor_specs(l));
  ASSERT_TRUE(trained.ok()) << trained.status().to_string();
  std::vector<torch::Tensor> expected;
  for (size_t k = 0; k < l.size(); ++k) expected.push_back((*trained)[k].clone() - base[k]);

  // The same values as bfloat16, a bfloat16 update.
  auto msg = train_msg("job-1", rounded, 1);
  msg->envelope().getBody().getTrain().setParamsDtype(wire::DType::BFLOAT16);
  msg->envelope().getBody().getTrain().setUpdateDtype(wire::DType::BFLOAT16);
  auto done = client_->request(*msg);
  ASSERT_NE(done, nullptr);
  ASSERT_EQ(done->envelope().getBody().which(), W::TRAIN_DONE) << error_of(*done);
  auto r = fetch(1);
  ASSERT_NE(r, nullptr);
  ASSERT_EQ(r->envelope().getBody().which(), W::TRAIN_RESULT) << error_of(*r);
  auto tr = r->envelope().getBody().getTrainResult();
  EXPECT_TRUE(tr.getDelta());
  auto delta = r->take_tensors(tr.getTensors(), protocol::tensor_specs(l), true, wire::DType::BFLOAT16);
  ASSERT_TRUE(delta.ok()) << delta.status().to_string();
  double moved = 0;
  for (size_t k = 0; k < l.size(); ++k) {
    const auto d = (*delta)[k].to(torch::kFloat32);
    moved += d.abs().sum().item<double>();
    // The change, rounded to bfloat16: within bfloat16's relative step of it.
    EXPECT_TRUE(torch::allclose(d, expected[k], 1.0 / 128, 1e-6)) << l[k].name << ": the delta is not the change "
                                                                   << "to the bfloat16 parameters the pod received";
  }
  EXPECT_GT(moved, 0.0);
}

TEST_F(WorkerTest, FetchResultNeedsATrainedRound) {
  ASSERT_EQ(start_job("job-1")->envelope().getBody().which(), W::JOB_ACCEPTED);
  auto r = fetch(1);
  ASSERT_NE(r, nullptr);
  EXPECT_NE(error_of(*r).find("holds no trained parameters for round 1"), std::string::npos) << error_of(*r);
  auto msg = train_msg("job-1", zeros_for(layout()));
  ASSERT_EQ(client_->request(*msg)->envelope().getBody().which(), W::TRAIN_DONE);
  auto wrong = fetch(2);
  EXPECT_NE(error_of(*wrong).find("holds no trained parameters for round 2"), std::string::npos);
  // Fetching twice sends the same parameters twice (a coordinator may retry).
  auto first = fetch(1), second = fetch(1);
  ASSERT_EQ(first->envelope().getBody().which(), W::TRAIN_RESULT);
  ASSERT_EQ(second->envelope().getBody().which(), W::TRAIN_RESULT);
  auto specs = protocol::tensor_specs(layout());
  auto a = first->take_tensors(first->envelope().getBody().getTrainResult().getTensors(), specs);
  auto b = second->take_tensors(second->envelope().getBody().getTrainResult().getTensors(), specs);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_TRUE(torch::equal((*a)[0], (*b)[0]));
}

// A differentially private job trains only as its startJob declared: a train with
// other steps is refused, the declared round trains (its trainDone carries the job's
// ε), and a round beyond the declared ones is refused: the budget covered only those.
TEST_F(WorkerTest, DpJobTrainsOnlyAsDeclared) {
  {
    protocol::Outgoing out("dp-job", next_id_++);
    auto sj = out.envelope().getBody().initStartJob();
    sj.initModel().setModelRef("logreg");
    sj.getModel().setHyperparameters("{}");
    data::Datastructure ds;
    ds.target = "label";
    ds.num_classes = 10;
    ds.scale = 1.0 / 16;
    protocol::to_wire(ds, sj.initDatastructure());
    auto plan = sj.initPlan();
    plan.setRounds(1);
    plan.setLocalSteps(5);
    plan.setBatchSize(16);
    auto dp = sj.initDifferentialPrivacy();
    dp.setNoiseMultiplier(1.0);
    dp.setMaxGradNorm(1.0);
    auto r = client_->request(out);
    ASSERT_EQ(r->envelope().getBody().which(), W::JOB_ACCEPTED) << error_of(*r);
  }
  auto other = train_msg("dp-job", zeros_for(layout()), 6);
  auto refused = client_->request(*other);
  EXPECT_NE(error_of(*refused).find("only as its startJob declared"), std::string::npos) << error_of(*refused);
  auto ok = train_msg("dp-job", zeros_for(layout()), 5);
  auto done = client_->request(*ok);
  ASSERT_EQ(done->envelope().getBody().which(), W::TRAIN_DONE) << error_of(*done);
  double epsilon = -1;
  for (auto m : done->envelope().getBody().getTrainDone().getMetrics()) {
    if (std::string(m.getName().cStr()) == "epsilon") epsilon = m.getValue();
  }
  EXPECT_GT(epsilon, 0.0);
  auto again = train_msg("dp-job", zeros_for(layout()), 5);
  auto beyond = client_->request(*again);
  EXPECT_NE(error_of(*beyond).find("rounds its startJob declared"), std::string::npos) << error_of(*beyond);
  expect_still_serving(*client_);
}

// The pod's Prometheus metrics after a known exchange: one job, one round of 5
// steps of 16 samples, one result fetched, one garbage message, one refused job.
TEST_F(WorkerTest, MetricsCountWhatHappened) {
  ASSERT_EQ(start_job("job-1")->envelope().getBody().which(), W::JOB_ACCEPTED);
  auto msg = train_msg("job-1", zeros_for(layout()), 5);
  ASSERT_EQ(client_->request(*msg)->envelope().getBody().which(), W::TRAIN_DONE);
  ASSERT_EQ(fetch(1)->envelope().getBody().which(), W::TRAIN_RESULT);
  std::vector<zmq::message_t> garbage;
  garbage.emplace_back("not an envelope", 15);
  client_->send(std::move(garbage));
  ASSERT_NE(client_->recv(), nullptr);
  ASSERT_NE(error_of(*start_job("job-2")), "");  // busy
  const std::string m = worker_->metrics_text();
  EXPECT_CONTAINS(m, "fedpod_worker_jobs_total{outcome=\"accepted\"} 1\n");
  EXPECT_CONTAINS(m, "fedpod_worker_jobs_total{outcome=\"refused\"} 1\n");
  EXPECT_CONTAINS(m, "fedpod_worker_train_steps_total 5\n");
  EXPECT_CONTAINS(m, "fedpod_worker_train_samples_total 80\n");
  EXPECT_CONTAINS(m, "fedpod_worker_train_seconds_count 1\n");
  EXPECT_CONTAINS(m, "fedpod_worker_bad_messages_total{reason=\"envelope\"} 1\n");
  // The parameters went down in train and back up in trainResult: at least their bytes.
  const auto value = [&](const std::string& series) {
    const auto at = m.find(series + " ");
    return at == std::string::npos ? -1.0 : std::stod(m.substr(at + series.size() + 1));
  };
  double param_bytes = 0;
  for (const auto& p : layout()) param_bytes += 4.0 * torch::zeros(p.shape).numel();
  EXPECT_GE(value("fedpod_worker_bytes_total{direction=\"received\"}"), param_bytes);
  EXPECT_GE(value("fedpod_worker_bytes_total{direction=\"sent\"}"), param_bytes);
  EXPECT_PROMTOOL_CLEAN(m);
}

// A train sent with uploadWhenDone (the coordinator reserved an upload slot) is
// answered by trainDone and, right after it and with the same request id, the
// trainResult, with no fetchResult asked; without the flag the parameters wait.
TEST_F(WorkerTest, TrainWithUploadWhenDoneSendsTheResultRightAfterTrainDone) {
  auto accepted = start_job("job-1");
  ASSERT_EQ(accepted->envelope().getBody().which(), W::JOB_ACCEPTED);
  EXPECT_TRUE(accepted->envelope().getBody().getJobAccepted().getUploadsWhenDone());
  auto msg = train_msg("job-1", zeros_for(layout()), 3);
  msg->envelope().getBody().getTrain().setUploadWhenDone(true);
  const uint64_t rid = msg->envelope().getRequestId();
  auto done = client_->request(*msg);
  ASSERT_EQ(done->envelope().getBody().which(), W::TRAIN_DONE) << error_of(*done);
  auto result = client_->recv(10s);
  ASSERT_TRUE(result) << "no trainResult followed trainDone";
  ASSERT_EQ(result->envelope().getBody().which(), W::TRAIN_RESULT) << error_of(*result);
  EXPECT_EQ(result->envelope().getRequestId(), rid);
  auto r = result->envelope().getBody().getTrainResult();
  EXPECT_EQ(r.getRound(), 1u);
  EXPECT_EQ(r.getNumSamples(), done->envelope().getBody().getTrainDone().getNumSamples());
  auto tensors = result->take_tensors(r.getTensors(), protocol::tensor_specs(layout()));
  ASSERT_TRUE(tensors.ok()) << tensors.status().message();
  // Trained: not the zeros it was sent.
  double moved = 0;
  for (const auto& t : *tensors) moved += t.abs().sum().item<double>();
  EXPECT_GT(moved, 0);

  // Without the flag: trainDone alone; the parameters wait for fetchResult.
  auto plain = train_msg("job-1", zeros_for(layout()), 3);
  auto done2 = client_->request(*plain);
  ASSERT_EQ(done2->envelope().getBody().which(), W::TRAIN_DONE) << error_of(*done2);
  EXPECT_EQ(client_->recv(500ms), nullptr) << "parameters sent without being asked";
  ASSERT_EQ(fetch(1)->envelope().getBody().which(), W::TRAIN_RESULT);
}

TEST_F(WorkerTest, SecondConcurrentJobIsRefusedUntilFirstEnds) {
  ASSERT_EQ(start_job("job-1")->envelope().getBody().which(), W::JOB_ACCEPTED);
  auto r = start_job("job-2");
  ASSERT_NE(r, nullptr);
  // The refusal says whose job holds the pod, since when, and how it can be ended.
  const std::string why = error_of(*r);
  EXPECT_NE(why.find("busy: pod test-pod is running job 'job-1' of user '"), std::string::npos) << why;
  EXPECT_TRUE(std::regex_search(why, std::regex(R"(' since \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \(round 0\))")))
      << why;
  EXPECT_NE(why.find("a second job is refused until that one ends"), std::string::npos) << why;
  EXPECT_NE(why.find("fedpod job stop"), std::string::npos) << why;
  EXPECT_EQ(worker_->counters().jobs_refused.load(), 1);

  protocol::Outgoing end("job-1", next_id_++);
  end.envelope().getBody().initEndJob().setReason("test");
  auto ended = client_->request(end);
  ASSERT_NE(ended, nullptr);
  EXPECT_EQ(ended->envelope().getBody().which(), W::JOB_ENDED);
  EXPECT_EQ(start_job("job-2")->envelope().getBody().which(), W::JOB_ACCEPTED);
}

TEST_F(WorkerTest, HeartbeatAnsweredWhileTrainingAndEndJobCancels) {
  const std::string hp = R"({"hidden": [256, 256]})";
  ASSERT_EQ(start_job("job-1", "mlp", hp)->envelope().getBody().which(), W::JOB_ACCEPTED);
  auto msg = train_msg("job-1", zeros_for(layout("mlp", hp)), /*steps=*/1000000);
  client_->send(*msg);

  protocol::Outgoing hb("job-1", 77);
  hb.envelope().getBody().initHeartbeat();
  auto r = client_->request(hb);
  ASSERT_NE(r, nullptr);
  ASSERT_EQ(r->envelope().getBody().which(), W::HEARTBEAT) << error_of(*r);
  EXPECT_TRUE(r->envelope().getBody().getHeartbeat().getBusy());

  // A second train while busy is refused, not queued.
  auto again = train_msg("job-1", zeros_for(layout("mlp", hp)));
  auto busy = client_->request(*again);
  ASSERT_NE(busy, nullptr);
  EXPECT_NE(error_of(*busy).find("busy: pod test-pod is still working on round 1"), std::string::npos)
      << error_of(*busy);

  protocol::Outgoing end("job-1", 78);
  end.envelope().getBody().initEndJob().setReason("test");
  client_->send(end);
  // The cancelled round answers with an error, then the end is confirmed.
  bool ended = false;
  for (int i = 0; i < 3 && !ended; ++i) {
    auto reply = client_->recv();
    ASSERT_NE(reply, nullptr);
    ended = reply->envelope().getBody().which() == W::JOB_ENDED;
  }
  EXPECT_TRUE(ended);
  EXPECT_EQ(worker_->counters().rounds_trained.load(), 0);
}

TEST_F(WorkerTest, MessageKindsForCoordinatorsAreRejected) {
  protocol::Outgoing out("job-1", 5);
  out.envelope().getBody().initJobEnded();
  auto r = client_->request(out);
  ASSERT_NE(r, nullptr);
  EXPECT_NE(error_of(*r).find("a pod does not accept 'jobEnded' messages"), std::string::npos) << error_of(*r);
}

TEST_F(WorkerTest, WrongProtocolVersionIsNamed) {
  protocol::Outgoing out("", 5);
  out.envelope().setProtocolVersion(42);
  out.envelope().getBody().initHello();
  auto r = client_->request(out);
  ASSERT_NE(r, nullptr);
  EXPECT_NE(error_of(*r).find("version_mismatch: protocol version 42"), std::string::npos) << error_of(*r);
}

// Categories of an inferred text column are data values; hello must not reveal them.
TEST(WorkerPrivacyTest, HelloHidesInferredCategories) {
  testing::TempDir dir;
  worker::PodConfig config;
  config.name = "private-pod";
  config.listen = "tcp://127.0.0.1:*";
  config.dataset_path = dir.write("people.csv", "city,age,label\nOslo,31,0\nLima,45,1\n");
  testing::TestIdentity id(dir.path());
  id.secure(config);
  zmq::context_t ctx(1);
  worker::Worker w(ctx, config, null_logger());
  std::atomic<bool> stop{false};
  std::thread t([&] { w.serve(stop); });
  {
    Client client(ctx, w.endpoint(), id.client_options("private-pod"));
    protocol::Outgoing out("", 1);
    out.envelope().getBody().initHello();
    auto r = client.request(out);
    ASSERT_NE(r, nullptr);
    data::Schema schema = protocol::from_wire(r->envelope().getBody().getHelloReply().getSchema());
    ASSERT_EQ(schema.columns.size(), 3u);
    EXPECT_EQ(schema.columns[0].type, data::ColumnType::kCategorical);
    EXPECT_TRUE(schema.columns[0].categories.empty());
  }
  stop = true;
  t.join();
}

class SmallFrameWorkerTest : public WorkerTest {
 protected:
  void SetUp() override { start(int64_t{4096}); }
};

// ZMQ_MAXMSGSIZE: an oversized frame drops that peer's connection before the bytes
// are buffered; other peers are served as before.
TEST_F(SmallFrameWorkerTest, OversizedFrameDropsOnlyThatPeer) {
  std::vector<zmq::message_t> frames;
  frames.emplace_back(std::string(64 * 1024, 'x').data(), 64 * 1024);
  client_->send(std::move(frames));
  EXPECT_EQ(client_->recv(500ms), nullptr);
  Client other(ctx_, worker_->endpoint(), id_.client_options("test-pod"));
  expect_still_serving(other);
}

// ---- a pod with two devices (worker/data_parallel.h) --------------------------

// logreg's layout ("0.weight" [10, 64], "0.bias" [10]) with a training_step that
// throws while `*fail` is set.
class FlakyLogreg : public model::ModuleModel {
 public:
  explicit FlakyLogreg(const std::atomic<bool>* fail) : fail_(fail) {}
  model::StepOutput training_step(const torch::Tensor& x, const torch::Tensor& y) override {
    if (fail_->load()) throw std::runtime_error("flaky replica refuses to train");
    return Model::training_step(x, y);
  }

 protected:
  void build(const std::vector<int64_t>& in, int64_t classes, const Hyperparameters&) override {
    torch::nn::Sequential seq(torch::nn::Linear(in.at(0), classes));
    module_ = seq.ptr();
    forward_ = [seq](const torch::Tensor& x) mutable { return seq->forward(x.flatten(1)); };
  }

 private:
  const std::atomic<bool>* fail_;
};

// devices: [cpu, cpu]; the second replica built for a job is a FlakyLogreg.
class TwoDeviceWorkerTest : public WorkerTest {
 protected:
  void SetUp() override {
    worker::Runtime runtime;
    runtime.make_model = [this](const std::string& ref) -> std::unique_ptr<model::Model> {
      if (ref == "logreg" && builds_++ % 2 == 1) return std::make_unique<FlakyLogreg>(&fail_);
      return model::make_builtin(ref);
    };
    start(0, {"cpu", "cpu"}, std::move(runtime));
  }

  std::atomic<bool> fail_{false};
  int builds_ = 0;  // make_model runs on the socket thread only
};

TEST_F(TwoDeviceWorkerTest, HelloAdvertisesBothDevices) {
  protocol::Outgoing out("", 1);
  out.envelope().getBody().initHello();
  auto r = client_->request(out);
  ASSERT_NE(r, nullptr);
  auto devices = r->envelope().getBody().getHelloReply().getDevices();
  ASSERT_EQ(devices.size(), 2u);
  EXPECT_EQ(std::string(devices[0]), "cpu");
  EXPECT_EQ(std::string(devices[1]), "cpu");
}

// A replica that throws fails the round with an error naming it; the pod keeps
// serving, and the next round returns what one model trained on the same batches
// returns.
TEST_F(TwoDeviceWorkerTest, FailingReplicaFailsTheRoundByNameThenTheNextRoundTrains) {
  ASSERT_EQ(start_job("job-1")->envelope().getBody().which(), W::JOB_ACCEPTED);
  fail_ = true;
  auto msg = train_msg("job-1", zeros_for(layout()), /*steps=*/7);
  auto failed = client_->request(*msg);
  ASSERT_NE(failed, nullptr);
  EXPECT_EQ(error_of(*failed), "internal: replica 1 (cpu): model failed while training: flaky replica refuses to train");
  expect_still_serving(*client_);

  fail_ = false;
  auto again = train_msg("job-1", zeros_for(layout()), /*steps=*/7);
  auto done = client_->request(*again);
  ASSERT_NE(done, nullptr);
  ASSERT_EQ(done->envelope().getBody().which(), W::TRAIN_DONE) << error_of(*done);
  auto result = fetch(1);
  ASSERT_EQ(result->envelope().getBody().which(), W::TRAIN_RESULT) << error_of(*result);
  auto specs = protocol::tensor_specs(layout());
  auto got = result->take_tensors(result->envelope().getBody().getTrainResult().getTensors(), specs);
  ASSERT_TRUE(got.ok()) << got.status().to_string();

  // The same round on one logreg: pod-a's train split as start_job made it, the
  // batch order of round 1 of a job with seed 0.
  auto table = data::read_csv(testing::source_dir() + "/examples/digits/pod-a.csv", data::CsvOptions(), std::nullopt);
  ASSERT_TRUE(table.ok());
  data::Datastructure ds;
  ds.target = "label";
  ds.num_classes = 10;
  ds.scale = 1.0 / 16;
  ds.split = {0.1, 0.2, 3};
  auto splits = data::make_splits(*table, ds);
  ASSERT_TRUE(splits.ok());
  auto single = model::make_builtin("logreg");
  single->create_model({64}, 10, Hyperparameters());
  single->flat().writable().zero_();
  worker::TrainOptions opts;
  opts.steps = 7;
  opts.batch_size = 16;
  opts.seed = 1;  // job seed 0 * 1000003 + round 1
  ASSERT_TRUE(worker::train_local(*single, splits->train, opts, Hyperparameters()).ok());
  const auto& l = single->flat().layout();
  for (size_t i = 0; i < l.size(); ++i) {
    const torch::Tensor expected = single->flat().tensor().narrow(0, l[i].offset, l[i].numel).view(l[i].shape);
    EXPECT_LT(((*got)[i] - expected).norm().item<double>(), 1e-5 * expected.norm().item<double>()) << l[i].name;
  }
}

TEST_F(TwoDeviceWorkerTest, EndJobCancelsEveryReplicaAndTheNextJobRuns) {
  const std::string hp = R"({"hidden": [256, 256]})";
  ASSERT_EQ(start_job("job-1", "mlp", hp)->envelope().getBody().which(), W::JOB_ACCEPTED);
  auto msg = train_msg("job-1", zeros_for(layout("mlp", hp)), /*steps=*/1000000);
  client_->send(*msg);
  std::this_thread::sleep_for(200ms);
  protocol::Outgoing end("job-1", 78);
  end.envelope().getBody().initEndJob().setReason("test");
  client_->send(end);
  bool ended = false;
  for (int i = 0; i < 3 && !ended; ++i) {
    auto reply = client_->recv();
    ASSERT_NE(reply, nullptr);
    ended = reply->envelope().getBody().which() == W::JOB_ENDED;
  }
  EXPECT_TRUE(ended);
  EXPECT_EQ(worker_->counters().rounds_trained.load(), 0);
  // The cancelled round's own error reply may come after jobEnded.
  while (auto late = client_->recv(500ms)) EXPECT_EQ(error_of(*late), "failed_precondition: cancelled");
  auto second = start_job("job-2");
  ASSERT_NE(second, nullptr);
  ASSERT_EQ(second->envelope().getBody().which(), W::JOB_ACCEPTED) << error_of(*second);
  auto train = train_msg("job-2", zeros_for(layout()));
  auto done = client_->request(*train);
  ASSERT_NE(done, nullptr);
  EXPECT_EQ(done->envelope().getBody().which(), W::TRAIN_DONE) << error_of(*done);
}

// A pod on an inproc:// endpoint (`fedpod simulate`) has no CURVE handshake: it takes
// the user Runtime::inproc_user names, and its policy still decides what that user
// may run. Without the name nobody is authenticated; a user without a role is refused.
// The pods share one TaskPool, as simulated pods do.
TEST(InprocWorkerTest, ThePolicyDecidesForTheNamedUserAndNoNameMeansNoOne) {
  testing::TempDir dir;
  testing::TestIdentity id(dir.path());
  zmq::context_t ctx(1);
  auto pool = std::make_shared<worker::TaskPool>(1);
  struct Case {
    std::string pod, role, inproc_user;
    bool accepted;
  };
  int n = 0;
  for (const Case& c : {Case{"in-a", "general-modeller", "tester", true}, Case{"in-b", "", "tester", false},
                        Case{"in-c", "general-modeller", "", false}, Case{"in-d", "general-modeller", "mallory", false}}) {
    SCOPED_TRACE(c.pod);
    worker::PodConfig config;
    config.name = c.pod;
    config.listen = "inproc://worker-test-" + std::to_string(n++);
    config.dataset_path = testing::source_dir() + "/examples/digits/pod-a.csv";
    config.devices = {"cpu"};
    config.threads = 1;
    id.secure(config, c.role);
    worker::Runtime rt;
    rt.pool = pool;
    rt.inproc_user = c.inproc_user;
    worker::Worker w(ctx, config, null_logger(), rt);
    std::atomic<bool> stop{false};
    std::thread serving([&] { w.serve(stop); });
    {
      Client client(ctx, config.listen, protocol::SocketOptions{});
      protocol::Outgoing out("job-1", 1);
      auto sj = out.envelope().getBody().initStartJob();
      sj.initModel().setModelRef("logreg");
      sj.getModel().setHyperparameters("{}");
      data::Datastructure ds;
      ds.target = "label";
      ds.num_classes = 10;
      protocol::to_wire(ds, sj.initDatastructure());
      auto reply = client.request(out);
      ASSERT_NE(reply, nullptr);
      if (c.accepted) {
        EXPECT_EQ(reply->envelope().getBody().which(), W::JOB_ACCEPTED) << error_of(*reply);
        EXPECT_EQ(w.counters().jobs_started.load(), 1);
      } else {
        EXPECT_NE(error_of(*reply), "") << "startJob was accepted";
        EXPECT_EQ(w.counters().jobs_started.load(), 0);
      }
    }
    stop = true;
    serving.join();
  }
}

}  // namespace
}  // namespace fedpod
