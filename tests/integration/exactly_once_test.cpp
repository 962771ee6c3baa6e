// Exactly-once updates: a training update is keyed by (job, round, pod), and a
// reply that is not the one the coordinator waits for is discarded and counted,
// never folded. One honest pod (a real Worker whose training adds a known delta)
// and one scripted pod that speaks the protocol correctly but misbehaves on
// purpose: duplicates, replays of earlier rounds, a reply past the round deadline
// that lands in the next round, a reply for another job. The final model must be
// exactly the FedAvg of the honest contributions.
#include <gtest/gtest.h>
#include <prometheus/text_serializer.h>
#include <spdlog/sinks/ostream_sink.h>
#include <torch/torch.h>

#include <atomic>
#include <filesystem>
#include <functional>
#include <limits>
#include <map>
#include <set>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "fedpod/coordinator/checkpoint.h"
#include "fedpod/coordinator/coordinator.h"
#include "fedpod/coordinator/history.h"
#include "fedpod/data/dataset.h"
#include "fedpod/model/zoo.h"
#include "fedpod/protocol/codec.h"
#include "fedpod/protocol/curve.h"
#include "fedpod/protocol/socket.h"
#include "fedpod/protocol/wire_convert.h"
#include "fedpod/worker/worker.h"
#include "digits_job.h"
#include "identity.h"
#include "reliability.h"
#include "testutil.h"

namespace fedpod {
namespace {

using namespace std::chrono_literals;
using W = wire::Envelope::Body::Which;

// What each pod's "training" adds to every parameter, and the samples it reports.
// FedAvg of one round with both pods: global + (480 * 1 + 160 * 8) / 640 = global + 2.75;
// with the honest pod alone: global + 1. Both are exact in float32.
constexpr float kHonestDelta = 1.0f;
constexpr float kLiarDelta = 8.0f;
constexpr uint64_t kLiarSamples = 160;


// A pod scripted by the test: a CURVE ROUTER (its ZAP domain admits the modeller's
// key) that answers hello, startJob, train, fetchResult, evaluate and endJob as a
// worker does, except that its "training" returns the received parameters plus
// kLiarDelta, and that `script` may add, delay or withhold replies.
//
// Threading: constructed on the test's thread, then serve() runs on one other
// thread until `stop`; the recorded state is read after that thread is joined.
class ScriptedPod {
 public:
  // What a handler may do besides the correct reply.
  struct Actions {
    std::function<void(const std::string& job, uint64_t request, uint32_t round)> train_done;
    std::function<void(const std::string& job, uint64_t request, uint32_t round)> train_result;
    std::function<void(uint64_t request, uint32_t round, wire::Split split)> eval_result;
    // A trainResult whose parameters are that round's global plus `delta`.
    std::function<void(const std::string& job, uint64_t request, uint32_t round, float delta)> train_result_delta;
    // An error reply carrying `message`, as a pod's own words.
    std::function<void(const std::string& job, uint64_t request, const std::string& message)> error;
    // The refusal of a pod still working on something else.
    std::function<void(const std::string& job, uint64_t request)> busy;
  };
  // Called for train, fetchResult and evaluate, with the request's id and round;
  // returns false to withhold the correct reply (it may send others through `act`).
  using Script = std::function<bool(W kind, uint64_t request, uint32_t round, const Actions& act)>;

  ScriptedPod(zmq::context_t& ctx, testing::TestIdentity& id, const std::string& name,
              std::vector<model::ParamInfo> layout, data::Schema schema, Script script)
      : name_(name),
        layout_(std::move(layout)),
        specs_(protocol::tensor_specs(layout_)),
        schema_(std::move(schema)),
        script_(std::move(script)) {
    zap_ = protocol::ZapHandler::for_context(ctx);
    domain_ = "scripted-" + name;
    const std::string modeller = id.modeller.public_key;
    zap_->add_domain(
        domain_,
        [modeller](const std::string& key, const std::string&) -> std::optional<std::string> {
          if (key == modeller) return std::string("tester");
          return std::nullopt;
        });
    protocol::SocketOptions o;
    o.curve_server_secret = id.pod_keys(name).secret_key;
    o.zap_domain = domain_;
    o.linger = 0ms;
    router_ = protocol::make_router(ctx, "tcp://127.0.0.1:*", o);
    endpoint_ = protocol::bound_endpoint(router_);
  }
  ~ScriptedPod() { zap_->remove_domain(domain_); }
  ScriptedPod(const ScriptedPod&) = delete;
  ScriptedPod& operator=(const ScriptedPod&) = delete;

  const std::string& endpoint() const { return endpoint_; }

  void serve(const std::atomic<bool>& stop) {
    std::vector<zmq::message_t> frames;
    bool too_many = false;
    while (!stop.load()) {
      zmq::pollitem_t item{router_.handle(), 0, ZMQ_POLLIN, 0};
      protocol::poll(&item, 1, 50ms);
      while (protocol::recv_frames(router_, frames, protocol::Limits().max_frames, too_many))
        handle(frames);
    }
    router_.close();
  }

  // Training rows reported in jobAccepted, and samples claimed in trainDone and
  // trainResult (a liar claims more than it has). Set before serve().
  uint64_t accepted_samples = kLiarSamples;
  uint64_t claimed_samples = kLiarSamples;
  // jobAccepted's validation and test rows, and its decision.
  uint64_t accepted_validation = 20, accepted_test = 40;
  std::string accepted_decision;
  // Applied to the flat parameters of each trainResult before they are sent.
  std::function<void(uint32_t round, torch::Tensor& flat)> tamper;
  // Rows claimed in evalResult; 0: the split's own (20 validation, 40 test rows, as
  // its jobAccepted says).
  uint64_t claimed_eval_samples = 0;
  // The loss and accuracy its evalResult reports.
  double eval_loss = 1.0;
  double eval_accuracy = 0.5;
  // Metrics its trainDone of a round carries instead of {train_loss: 0.5}.
  std::map<uint32_t, std::vector<std::pair<std::string, double>>> train_metrics;

  // The global parameters each round's train carried (flat, in layout order).
  std::map<uint32_t, torch::Tensor> received;
  int end_jobs = 0;

 private:
  void handle(std::vector<zmq::message_t>& frames) {
    ASSERT_GE(frames.size(), 2u);
    routing_ = zmq::message_t(frames[0].data(), frames[0].size());
    frames.erase(frames.begin());
    auto parsed = protocol::Incoming::parse(std::move(frames));
    ASSERT_TRUE(parsed.ok()) << parsed.status().to_string();
    protocol::Incoming& in = **parsed;
    auto env = in.envelope();
    const std::string job = env.getJobId().cStr();
    const uint64_t rid = env.getRequestId();
    auto body = env.getBody();
    Actions act;
    act.train_done = [&](const std::string& j, uint64_t r, uint32_t round) {
      send_train_done(j, r, round);
    };
    act.train_result = [&](const std::string& j, uint64_t r, uint32_t round) {
      send_train_result(j, r, round);
    };
    act.train_result_delta = [&](const std::string& j, uint64_t r, uint32_t round, float delta) {
      send_train_result(j, r, round, delta);
    };
    act.eval_result = [&](uint64_t r, uint32_t round, wire::Split split) {
      send_eval_result(job, r, round, split);
    };
    act.error = [&](const std::string& j, uint64_t r, const std::string& message) {
      reply(j, r, [&](wire::Envelope::Builder e) {
        auto err = e.getBody().initError();
        err.setCode(wire::ErrorCode::INTERNAL);
        err.setMessage(capnp::Text::Reader(message.data(), message.size()));
      });
    };
    act.busy = [&](const std::string& j, uint64_t r) {
      reply(j, r, [&](wire::Envelope::Builder e) {
        auto err = e.getBody().initError();
        err.setCode(wire::ErrorCode::BUSY);
        err.setMessage("pod liar is still working on round 1");
      });
    };
    switch (body.which()) {
      case W::HELLO:
        reply(job, rid, [&](wire::Envelope::Builder e) {
          auto h = e.getBody().initHelloReply();
          h.setPodName(name_);
          protocol::to_wire(schema_, h.initSchema());
          h.initDevices(1).set(0, "cpu");
        });
        return;
      case W::START_JOB: {
        int64_t numel = 0;
        for (const auto& p : layout_) numel += p.numel;
        reply(job, rid, [&](wire::Envelope::Builder e) {
          auto a = e.getBody().initJobAccepted();
          a.setTrainSamples(accepted_samples);
          a.setValidationSamples(accepted_validation);
          a.setTestSamples(accepted_test);
          a.setDecision(capnp::Text::Reader(accepted_decision.data(), accepted_decision.size()));
          a.setNumParameters(static_cast<uint64_t>(numel));
        });
        return;
      }
      case W::TRAIN: {
        auto t = body.getTrain();
        auto tensors = in.take_tensors(t.getTensors(), specs_);
        ASSERT_TRUE(tensors.ok()) << tensors.status().to_string();
        std::vector<torch::Tensor> flat;
        for (const auto& x : *tensors) flat.push_back(x.reshape({-1}));
        received[t.getRound()] = torch::cat(flat);  // a copy: the frames go away
        if (script_(W::TRAIN, rid, t.getRound(), act)) send_train_done(job, rid, t.getRound());
        return;
      }
      case W::FETCH_RESULT: {
        const uint32_t round = body.getFetchResult().getRound();
        if (script_(W::FETCH_RESULT, rid, round, act)) send_train_result(job, rid, round);
        return;
      }
      case W::EVALUATE: {
        auto e = body.getEvaluate();
        if (script_(W::EVALUATE, rid, e.getRound(), act))
          send_eval_result(job, rid, e.getRound(), e.getSplit());
        return;
      }
      case W::HEARTBEAT:  // alive, as a real pod answers while it trains
        reply(job, rid, [](wire::Envelope::Builder e) { e.getBody().initHeartbeat(); });
        return;
      case W::END_JOB:
        ++end_jobs;
        reply(job, rid, [](wire::Envelope::Builder e) { e.getBody().initJobEnded(); });
        return;
      default:
        ADD_FAILURE() << "scripted pod got '" << protocol::body_name(body.which()) << "'";
    }
  }

  void reply(const std::string& job, uint64_t rid,
             const std::function<void(wire::Envelope::Builder)>& fill,
             const std::function<void(protocol::Outgoing&)>& attach = nullptr) {
    protocol::Outgoing out(job, rid);
    fill(out.envelope());
    if (attach) attach(out);
    auto frames = out.frames();
    // A full queue on the coordinator's side (a flood) is waited out, as a flooding
    // pod would.
    bool sent = false;
    for (int tries = 0; tries < 12000 && !(sent = protocol::send_frames(router_, frames, &routing_)); ++tries) {
      std::this_thread::sleep_for(5ms);
    }
    ASSERT_TRUE(sent);
  }

  void send_train_done(const std::string& job, uint64_t rid, uint32_t round) {
    reply(job, rid, [&](wire::Envelope::Builder e) {
      auto d = e.getBody().initTrainDone();
      d.setRound(round);
      d.setNumSamples(claimed_samples);
      d.setSeconds(0.01);
      std::vector<std::pair<std::string, double>> metrics = {{"train_loss", 0.5}};
      if (train_metrics.count(round)) metrics = train_metrics.at(round);
      auto m = d.initMetrics(static_cast<unsigned>(metrics.size()));
      for (size_t k = 0; k < metrics.size(); ++k) {
        m[k].setName(metrics[k].first);
        m[k].setValue(metrics[k].second);
      }
    });
  }

  // The parameters "trained" in `round`: what that round's train carried, plus kLiarDelta.
  void send_train_result(const std::string& job, uint64_t rid, uint32_t round, float delta = kLiarDelta) {
    ASSERT_TRUE(received.count(round)) << "no train for round " << round;
    torch::Tensor trained = received[round] + delta;
    if (tamper) tamper(round, trained);
    wire::TrainResult::Builder r(nullptr);
    reply(
        job, rid,
        [&](wire::Envelope::Builder e) {
          r = e.getBody().initTrainResult();
          r.setRound(round);
          r.setNumSamples(claimed_samples);
          r.setSeconds(0.01);
        },
        [&](protocol::Outgoing& out) {
          out.attach(r.initTensors(layout_.size()), protocol::parameter_views(trained, layout_));
        });
  }

  void send_eval_result(const std::string& job, uint64_t rid, uint32_t round, wire::Split split) {
    reply(job, rid, [&](wire::Envelope::Builder e) {
      auto r = e.getBody().initEvalResult();
      r.setRound(round);
      r.setSplit(split);
      r.setNumSamples(claimed_eval_samples ? claimed_eval_samples : split == wire::Split::TEST ? 40 : 20);
      r.setLoss(eval_loss);
      r.setAccuracy(eval_accuracy);
    });
  }

  std::string name_;
  std::vector<model::ParamInfo> layout_;
  std::vector<protocol::TensorSpec> specs_;
  data::Schema schema_;
  Script script_;
  std::shared_ptr<protocol::ZapHandler> zap_;
  std::string domain_;
  zmq::socket_t router_;
  std::string endpoint_;
  zmq::message_t routing_;  // of the message being handled (one coordinator)
};

class ExactlyOnceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    spec_ = testing::digits_job_spec("exactly-once", (dir_.path() / "out").string(), id_.modeller_key_file);
    spec_.model.ref = "logreg";
    spec_.model.hyperparameters = Hyperparameters();
    spec_.rounds = 5;
    spec_.min_pods = 1;
    spec_.local_steps = 1;
    spec_.local_epochs = 0;
    // Short: round 2 waits it out for the scripted pod. The honest pod answers in
    // milliseconds (its "training" is one add).
    spec_.round_timeout = 2s;

    auto m = model::make_builtin("logreg");
    m->create_model({64}, 10, Hyperparameters());
    layout_ = m->flat().layout();
  }

  void TearDown() override {
    stop_ = true;
    for (auto& t : threads_) t.join();
  }

  // A real Worker on pod-a's digits whose training adds kHonestDelta to every parameter
  // (with `real_training`, fedpod's own training of the job's model).
  void start_honest_pod(const std::string& name, bool real_training = false) {
    worker::PodConfig config;
    config.name = name;
    config.listen = "tcp://127.0.0.1:*";
    config.dataset_path = testing::source_dir() + "/examples/digits/pod-a.csv";
    config.devices = {"cpu"};
    config.threads = 1;
    id_.secure(config);
    worker::Runtime runtime;
    if (!real_training) runtime.train = [](model::Model& m, const data::Dataset& d, const worker::TrainOptions&,
                       const Hyperparameters&,
                       const std::atomic<bool>*) -> StatusOr<worker::TrainStats> {
      torch::NoGradGuard no_grad;
      m.flat().writable().add_(kHonestDelta);
      worker::TrainStats s;
      s.steps = 1;
      s.samples_seen = static_cast<int64_t>(d.size());
      s.loss = 0.25;
      return s;
    };
    honest_ = std::make_unique<worker::Worker>(ctx_, config, null_logger(), std::move(runtime));
    threads_.emplace_back([this] { honest_->serve(stop_); });
    spec_.pods.push_back({name, honest_->endpoint(), id_.pod_public_key(name)});
  }

  void start_scripted_pod(const std::string& name, ScriptedPod::Script script, uint64_t claimed = kLiarSamples) {
    auto table = data::read_csv(testing::source_dir() + "/examples/digits/pod-a.csv",
                                data::CsvOptions(), std::nullopt);
    ASSERT_TRUE(table.ok()) << table.status().to_string();
    scripted_ =
        std::make_unique<ScriptedPod>(ctx_, id_, name, layout_, table->schema, std::move(script));
    scripted_->claimed_samples = claimed;
    threads_.emplace_back([this] { scripted_->serve(stop_); });
    spec_.pods.push_back({name, scripted_->endpoint(), id_.pod_public_key(name)});
  }

  // A three-round job of an honest pod and "liar", whose answer to round 2's fetch is
  // that round's global parameters plus `delta` (finite, and large).
  void start_honest_and_overflowing_liar(float delta) {
    start_honest_pod("honest");
    start_scripted_pod("liar", [this, delta](W kind, uint64_t rid, uint32_t round, const ScriptedPod::Actions& act) {
      if (kind == W::FETCH_RESULT && round == 2) {
        act.train_result_delta(spec_.job_id, rid, 2, delta);
        return false;
      }
      return true;
    });
    spec_.rounds = 3;
    spec_.round_timeout = 60s;
  }

  // Validates and runs spec_ with a coordinator (kept in coordinator_, for its
  // metrics) that logs at info into logs_, then stops the pods so that what they
  // recorded can be read.
  StatusOr<coordinator::RunResult> run_job() {
    coordinator::validate(spec_, "test job");
    auto logger = std::make_shared<spdlog::logger>("coordinator", std::make_shared<spdlog::sinks::ostream_sink_mt>(logs_));
    logger->set_level(spdlog::level::info);
    logger->set_formatter(line_formatter());  // as `fedpod coordinator run` logs
    coordinator_ = std::make_unique<coordinator::Coordinator>(ctx_, spec_, logger, progress_);
    coordinator_->set_event_stream(&events_);
    auto result = coordinator_->run();
    stop_ = true;
    for (auto& t : threads_) t.join();
    threads_.clear();
    return result;
  }

  // A two-round job of an honest pod and "liar" (set up by `set_up` before it starts),
  // evaluated every round; the job's three evaluations from history.json (rounds 1
  // and 2, then the test split), or none when the job failed.
  std::vector<nlohmann::json> run_evaluated_job(const std::function<void(ScriptedPod&)>& set_up) {
    start_honest_pod("honest");
    start_scripted_pod("liar", [](W, uint64_t, uint32_t, const ScriptedPod::Actions&) { return true; });
    set_up(*scripted_);
    spec_.rounds = 2;
    spec_.eval_every = 1;
    spec_.round_timeout = 60s;
    auto result = run_job();
    if (!result.ok()) {
      ADD_FAILURE() << result.status().to_string() << "\n" << logs_.str();
      return {};
    }
    auto h = history();
    std::vector<nlohmann::json> evals;
    for (const auto& rec : h["rounds"]) evals.push_back(rec["eval"]);
    evals.push_back(h["test"]);
    return evals;
  }

  nlohmann::json history() {
    return nlohmann::json::parse(testing::read_file(spec_.output_dir + "/history.json"));
  }

  // The largest absolute difference between two flat parameter tensors.
  static double max_diff(const torch::Tensor& a, const torch::Tensor& b) {
    return (a - b).abs().max().item<double>();
  }

  // The saved model as one flat tensor in layout order.
  torch::Tensor saved_model(const std::string& path) {
    auto params = coordinator::load_parameters(path);
    std::vector<torch::Tensor> flat;
    for (const auto& p : layout_) {
      EXPECT_TRUE(params.count(p.name)) << p.name;
      flat.push_back(params[p.name].reshape({-1}));
    }
    return torch::cat(flat);
  }

  testing::TempDir dir_;
  testing::TestIdentity id_{dir_.path()};
  zmq::context_t ctx_{1};  // declared before the pods: it outlives their sockets
  std::atomic<bool> stop_{false};
  std::unique_ptr<worker::Worker> honest_;
  std::unique_ptr<ScriptedPod> scripted_;
  std::vector<std::thread> threads_;
  std::vector<model::ParamInfo> layout_;
  coordinator::JobSpec spec_;
  std::ostringstream logs_, progress_, events_;  // run_job()'s coordinator's
  std::unique_ptr<coordinator::Coordinator> coordinator_;
};

// Five rounds; the scripted pod "liar" misbehaves in each:
//   round 1  sends its trainResult twice for one fetch            duplicate
//            answers the round's validation evaluate twice          stale_request (read in round 2)
//   round 2  withholds its answer to train past the deadline ...    (timeout; honest pod alone)
//   round 3  ... its late trainDone and trainResult for round 2
//            arrive before its round-3 trainDone                    closed_round x2
//   round 4  on fetch, first a trainResult for round 2 and one for
//            round 1, with the current request id                   closed_round, duplicate
//   round 5  a trainDone for another job, then trainDone twice      wrong_job, duplicate
// Each round's global model must be exactly the FedAvg of the honest updates.
TEST_F(ExactlyOnceTest, DuplicateLateAndForeignUpdatesAreDiscardedCountedAndNeverFolded) {
  std::map<uint32_t, uint64_t> train_request;  // round -> its train's request id (liar's thread)
  start_honest_pod("honest");
  auto script = [&](W kind, uint64_t rid, uint32_t round, const ScriptedPod::Actions& act) {
    if (kind == W::TRAIN) {
      train_request[round] = rid;
      if (round == 2) return false;  // the straggler: its answer comes in round 3
      if (round == 3) {
        act.train_done(spec_.job_id, train_request[2], 2);
        act.train_result(spec_.job_id, train_request[2], 2);
      }
      if (round == 5) {
        act.train_done("someone-elses-job", rid, 5);
        act.train_done(spec_.job_id, rid, 5);  // the correct reply ...
        act.train_done(spec_.job_id, rid, 5);  // ... and a duplicate of it
        return false;
      }
      return true;
    }
    if (kind == W::FETCH_RESULT) {
      if (round == 1) act.train_result(spec_.job_id, rid, 1);  // and the correct one again
      if (round == 4) {
        act.train_result(spec_.job_id, rid, 2);
        act.train_result(spec_.job_id, rid, 1);
      }
      return true;
    }
    if (kind == W::EVALUATE && round == 1) {
      act.eval_result(rid, 1, wire::Split::VALIDATION);  // and the correct one again
    }
    return true;
  };
  start_scripted_pod("liar", script);

  coordinator::validate(spec_, "test job");
  std::ostringstream logs, progress;
  auto logger = std::make_shared<spdlog::logger>(
      "coordinator", std::make_shared<spdlog::sinks::ostream_sink_mt>(logs));
  logger->set_level(spdlog::level::info);
  coordinator::Coordinator c(ctx_, spec_, logger, progress);
  auto result = c.run();
  ASSERT_TRUE(result.ok()) << result.status().to_string() << "\n" << logs.str();
  EXPECT_EQ(result->rounds_completed, 5);
  stop_ = true;
  for (auto& t : threads_) t.join();
  threads_.clear();

  // The global model, round by round: the liar recorded each round's train.
  const auto& got = scripted_->received;
  ASSERT_EQ(got.size(), 5u);
  auto h = history();
  const int64_t n_honest = h["pods"]["honest"]["train_samples"];
  ASSERT_EQ(n_honest, 480);
  const double both =
      (n_honest * kHonestDelta + double(kLiarSamples) * kLiarDelta) / (n_honest + kLiarSamples);
  ASSERT_EQ(both, 2.75);
  const double step[] = {both, kHonestDelta, both, both, both};  // round 2: the honest pod alone
  torch::Tensor expected = got.at(1).clone();
  for (uint32_t round = 1; round <= 5; ++round) {
    EXPECT_LT(max_diff(got.at(round), expected), 1e-5) << "global model sent in round " << round;
    expected = expected + step[round - 1];
  }
  EXPECT_LT(max_diff(saved_model(result->model_path), expected), 1e-5);
  EXPECT_LT(max_diff(saved_model(result->model_path), got.at(1) + 12.0), 1e-5);

  // history.json: who answered each round, and what was discarded while it ran.
  ASSERT_EQ(h["rounds"].size(), 5u);
  const int answered[] = {2, 1, 2, 2, 2};
  const int discarded[] = {1, 1, 2, 2, 2};
  for (int r = 0; r < 5; ++r) {
    const auto& rec = h["rounds"][r];
    SCOPED_TRACE("round " + std::to_string(r + 1));
    EXPECT_EQ(rec["pods_answered"], answered[r]);
    EXPECT_EQ(rec["pods"]["honest"]["outcome"], "ok");
    EXPECT_EQ(rec["pods"]["liar"]["outcome"], r == 1 ? "timeout" : "ok") << rec["pods"]["liar"];
    if (r != 1) {
      EXPECT_EQ(rec["pods"]["liar"]["num_samples"], kLiarSamples);
    }
    EXPECT_EQ(rec["discarded_replies"], discarded[r]);
  }
  EXPECT_EQ(h["discarded_replies_by_reason"],
            (nlohmann::json{{"stale_request", 1},
                            {"closed_round", 3},
                            {"duplicate", 3},
                            {"wrong_job", 1},
                            {"unfetched", 0}}));

  // The counter, by reason; and no answer was turned into a pod error.
  const std::string text = prometheus::TextSerializer().Serialize(c.registry()->Collect());
  const std::string series = "fedpod_coordinator_discarded_replies_total";
  EXPECT_EQ(testing::metric_value(text, series + "{reason=\"stale_request\"}"), 1) << text;
  EXPECT_EQ(testing::metric_value(text, series + "{reason=\"closed_round\"}"), 3) << text;
  EXPECT_EQ(testing::metric_value(text, series + "{reason=\"duplicate\"}"), 3) << text;
  EXPECT_EQ(testing::metric_value(text, series + "{reason=\"wrong_job\"}"), 1) << text;
  EXPECT_EQ(testing::metric_value(text, "fedpod_coordinator_pod_responses_total{outcome=\"timeout\",pod=\"liar\"}"),
            1)
      << text;
  EXPECT_EQ(text.find("outcome=\"error\""), std::string::npos) << text;
  EXPECT_PROMTOOL_CLEAN(text);

  // Logged once each, at info, with the reason, the pod and the reply's round.
  const std::string log = logs.str();
  EXPECT_CONTAINS(
      log,
      "event=reply_discarded job=exactly-once round=3 pod=liar reason=closed_round kind=trainDone");
  EXPECT_CONTAINS(log, "reason=wrong_job kind=trainDone reply_job=someone-elses-job");
  EXPECT_CONTAINS(log, "round=1 pod=liar reason=duplicate kind=trainResult");
  size_t lines = 0;
  for (size_t at = log.find("event=reply_discarded"); at != std::string::npos;
       at = log.find("event=reply_discarded", at + 1)) {
    ++lines;
  }
  EXPECT_EQ(lines, 8u) << log;
  EXPECT_EQ(scripted_->end_jobs, 1);
}

// A pod that lies about its numbers (coordinator.h, "Trusting pods' numbers"):
//   - it accepts the job with 160 training rows, then claims 100000 samples in every
//     trainDone and trainResult: its weight is capped at 160, so each round is exactly
//     (480 * 1 + 160 * 8) / 640 = 2.75, not (480 + 100000 * 8) / 100480 = 7.97;
//   - in round 2 it pushes a trainResult (global + 1000) with its trainDone, before
//     the coordinator asked for it: discarded as "unfetched", never folded; the one
//     it sends when fetched is folded;
//   - in round 3 it floods the coordinator with 300 unsolicited trainResults of
//     another round while the coordinator waits for it: each is read and discarded
//     (ZMQ_RCVHWM bounds what queues unread), and the round completes.
TEST_F(ExactlyOnceTest, ALyingPodsWeightIsCappedAndItsUnaskedUpdatesAreDiscarded) {
  constexpr uint64_t kClaimed = 100000;
  constexpr int kFlood = 300;
  start_honest_pod("honest");
  auto script = [&](W kind, uint64_t rid, uint32_t round, const ScriptedPod::Actions& act) {
    if (kind == W::TRAIN && round == 2) {
      act.train_result_delta(spec_.job_id, rid, 2, 1000.0f);  // then its trainDone, as usual
    }
    if (kind == W::TRAIN && round == 3) {
      for (int k = 0; k < kFlood; ++k) act.train_result_delta(spec_.job_id, rid, 3, 1000.0f);
    }
    return true;
  };
  start_scripted_pod("liar", script, kClaimed);
  spec_.rounds = 3;
  spec_.round_timeout = 60s;
  coordinator::validate(spec_, "test job");
  std::ostringstream logs, progress;
  auto logger = std::make_shared<spdlog::logger>("coordinator", std::make_shared<spdlog::sinks::ostream_sink_mt>(logs));
  logger->set_level(spdlog::level::info);
  coordinator::Coordinator c(ctx_, spec_, logger, progress);
  auto result = c.run();
  ASSERT_TRUE(result.ok()) << result.status().to_string() << "\n" << logs.str();
  stop_ = true;
  for (auto& t : threads_) t.join();
  threads_.clear();

  const auto& got = scripted_->received;
  ASSERT_EQ(got.size(), 3u);
  EXPECT_LT(max_diff(got.at(2), got.at(1) + 2.75), 1e-5) << "round 1: the weight was not capped";
  EXPECT_LT(max_diff(got.at(3), got.at(2) + 2.75), 1e-5) << "round 2: the unfetched update was folded";
  EXPECT_LT(max_diff(saved_model(result->model_path), got.at(3) + 2.75), 1e-5) << "round 3";

  auto h = history();
  EXPECT_EQ(h["update_weight_capped"], (nlohmann::json{{"liar", 3}}));
  EXPECT_EQ(h["discarded_replies_by_reason"]["unfetched"], 1 + kFlood);
  for (const auto& rec : h["rounds"]) EXPECT_EQ(rec["pods"]["liar"]["num_samples"], 160) << rec;
  const std::string text = prometheus::TextSerializer().Serialize(c.registry()->Collect());
  EXPECT_EQ(testing::metric_value(text, "fedpod_coordinator_update_weight_capped_total{pod=\"liar\"}"), 3) << text;
  EXPECT_EQ(testing::metric_value(text, "fedpod_coordinator_discarded_replies_total{reason=\"unfetched\"}"),
            1 + kFlood);
  EXPECT_EQ(text.find("update_weight_capped_total{pod=\"honest\"}"), std::string::npos) << text;
  EXPECT_CONTAINS(logs.str(),
                  "event=update_weight_capped job=exactly-once round=1 pod=liar claimed_samples=100000 "
                  "train_samples=160");
}

// A pod that answers `busy` is finishing earlier work (a round it was late for, an
// evaluation no one waits for any more): it is asked again, after a pause that
// doubles, until the deadline. "liar" refuses round 2's first two trains and round
// 1's first evaluation as busy, then answers: both count, and round 2 folds its
// update. In round 3 it stays busy: asked again five times (the whole model each
// time, so no more), it is left out as "refused" (busy), and the job goes on without
// it.
TEST_F(ExactlyOnceTest, APodBusyWithEarlierWorkIsAskedAgainBeforeItIsLeftOut) {
  std::map<std::pair<W, uint32_t>, int> asked;  // (kind, round) -> requests (liar's thread)
  std::map<std::pair<W, uint32_t>, std::set<uint64_t>> request_ids;
  start_honest_pod("honest");
  start_scripted_pod("liar", [&](W kind, uint64_t rid, uint32_t round, const ScriptedPod::Actions& act) {
    const int n = ++asked[{kind, round}];
    request_ids[{kind, round}].insert(rid);
    const bool busy = (kind == W::TRAIN && round == 2 && n <= 2) || (kind == W::EVALUATE && round == 1 && n == 1) ||
                      (kind == W::TRAIN && round == 3);
    if (busy) act.busy(spec_.job_id, rid);
    return !busy;
  });
  spec_.rounds = 3;
  spec_.eval_every = 1;
  spec_.round_timeout = 3s;
  auto result = run_job();
  ASSERT_TRUE(result.ok()) << result.status().to_string() << "\n" << logs_.str();
  EXPECT_EQ(result->rounds_completed, 3);

  auto h = history();
  const auto& r1 = h["rounds"][0];
  const auto& r2 = h["rounds"][1];
  const auto& r3 = h["rounds"][2];
  EXPECT_EQ(r1["eval"]["pods"]["liar"]["outcome"], "ok") << r1.dump(2);
  EXPECT_EQ(r2["pods"]["liar"]["outcome"], "ok") << r2.dump(2);
  EXPECT_EQ(r2["pods_answered"], 2);
  EXPECT_EQ(r3["pods"]["liar"]["outcome"], "refused") << r3.dump(2);
  EXPECT_CONTAINS(r3["pods"]["liar"].value("error", ""), "busy: pod liar is still working on round 1");
  EXPECT_EQ(r3["pods_answered"], 1);
  // Asked again with the same request: 3 trains in round 2; in round 3 at 0, 25, 75,
  // 175, 375 and 775 ms, and no more.
  EXPECT_EQ((asked[{W::TRAIN, 2}]), 3);
  EXPECT_EQ((asked[{W::EVALUATE, 1}]), 2);
  EXPECT_EQ((asked[{W::TRAIN, 3}]), 6);
  for (const auto& [key, ids] : request_ids) {
    if (key == std::make_pair(W::EVALUATE, uint32_t{3})) continue;  // the last round's validation, then the test split
    EXPECT_EQ(ids.size(), 1u) << protocol::body_name(key.first) << " of round " << key.second;
  }
  std::cout << "[ result   ] round 3: liar asked " << asked[{W::TRAIN, 3}] << " times; " << r3.dump() << std::endl;
  // Round 2 folded both pods (global + 2.75); round 3 the honest pod alone (+ 1).
  const auto& got = scripted_->received;
  ASSERT_EQ(got.size(), 3u);
  EXPECT_LT(max_diff(got.at(3), got.at(2) + 2.75), 1e-5) << "round 2 left the busy pod out";
  EXPECT_LT(max_diff(saved_model(result->model_path), got.at(3) + 1.0f), 1e-5) << "round 3";
  EXPECT_CONTAINS(logs_.str(), "event=pod_busy_retry job=exactly-once round=2 pod=liar kind=train");
  testing::record_fault("pods", "pod answers busy (still finishing earlier work) to a train or evaluate", 3,
                        "asked again after 25 ms, doubling, 5 times at most: its update and evaluation counted; one "
                        "busy the whole round left out as refused (busy) after 775 ms, the job went on",
                        "only a pod still busy after 775 ms: that round's update");
}

// Metrics travel from a pod's trainDone into history.json and report.html beside the
// coordinator's own fields. A pod that names one of those fields ("outcome", which
// the report reads as text), a name that is no metric name, or too many metrics, has
// its answer refused for the round with the reason; a value that is not finite
// (JSON has no NaN) is left out and logged; the job goes on and its report is written.
TEST_F(ExactlyOnceTest, MetricsThatWouldCorruptTheHistoryAreRefusedOrLeftOut) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  start_honest_pod("honest");
  start_scripted_pod("liar", [](W, uint64_t, uint32_t, const ScriptedPod::Actions&) { return true; });
  std::vector<std::pair<std::string, double>> many;
  for (int k = 0; k < 65; ++k) many.emplace_back("m" + std::to_string(k), 1.0);
  scripted_->train_metrics = {{1, {{"train_loss", 0.5}, {"outcome", 1.0}}},
                              {2, {{"train_loss", 0.5}, {std::string("bad\nname"), 1.0}}},
                              {3, many},
                              {4, {{"train_loss", 1e308}, {"train_accuracy", std::numeric_limits<double>::infinity()},
                                   {"samples_seen", nan}, {"custom.metric_1", 7.0}}}};
  scripted_->eval_loss = 1e308;  // finite, but weighted sums of it are not
  spec_.rounds = 4;
  spec_.round_timeout = 60s;
  auto result = run_job();
  ASSERT_TRUE(result.ok()) << result.status().to_string() << "\n" << logs_.str();
  EXPECT_EQ(result->rounds_completed, 4);

  auto h = history();
  ASSERT_EQ(h["rounds"].size(), 4u);
  const auto& r = h["rounds"];
  EXPECT_EQ(r[0]["pods"]["liar"]["outcome"], "error");
  EXPECT_CONTAINS(r[0]["pods"]["liar"].value("error", ""), "trainDone metric 'outcome' is a name history.json keeps");
  EXPECT_EQ(r[1]["pods"]["liar"]["outcome"], "error");
  EXPECT_CONTAINS(r[1]["pods"]["liar"].value("error", ""), "trainDone metric 'bad?name' is not a metric name");
  EXPECT_EQ(r[2]["pods"]["liar"]["outcome"], "error");
  EXPECT_CONTAINS(r[2]["pods"]["liar"].value("error", ""), "trainDone carries 65 metrics, at most 64");
  for (int k = 0; k < 3; ++k) EXPECT_EQ(r[k]["pods_answered"], 1) << r[k];
  // Round 4: folded, its non-finite values left out, the rest kept; the round's
  // weighted loss of 1e308 and 0.25 is finite: (0.25 * 480 + 1e308 * 160) / 640.
  const auto& liar = r[3]["pods"]["liar"];
  EXPECT_EQ(liar["outcome"], "ok") << liar;
  EXPECT_EQ(liar["train_loss"], 1e308);
  EXPECT_FALSE(liar.contains("train_accuracy")) << liar;
  EXPECT_FALSE(liar.contains("samples_seen")) << liar;
  EXPECT_EQ(liar["custom.metric_1"], 7.0);
  ASSERT_TRUE(r[3]["train_loss"].is_number()) << r[3];
  EXPECT_NEAR(r[3]["train_loss"].get<double>() / 2.5e307, 1.0, 1e-9);
  for (const auto& e : {r[3]["eval"], h["test"]}) {
    ASSERT_TRUE(e.is_object()) << h;
    EXPECT_TRUE(e["loss"].is_number()) << e;  // a weighted mean of finite losses
    EXPECT_GT(e["loss"].get<double>(), 1e306) << e;
  }
  for (const char* metric : {"train_accuracy", "samples_seen"}) {
    EXPECT_CONTAINS(logs_.str(), std::string("event=metric_dropped job=exactly-once round=4 pod=liar metric=") + metric +
                                    " reason=\"not a finite number\"");
  }
  EXPECT_TRUE(std::filesystem::exists(spec_.output_dir + "/report.html"));
  testing::record_fault("hostile input",
                        "trainDone metrics naming the coordinator's own history fields, malformed names, 65 "
                        "metrics, NaN and infinite values; losses of 1e308",
                        5, "the first three answers refused with the reason; non-finite values left out and "
                        "logged; weighted losses finite; history.json and report.html written",
                        "the hostile pod's updates of three rounds");
}

// A pod that claims a million evaluation rows (its jobAccepted said 20 validation and
// 40 test rows) at accuracy 0.5: its evaluation counts for the rows it has, so the
// global accuracy stays the honest pod's own weighted with 20 or 40, not ~0.5.
TEST_F(ExactlyOnceTest, ALyingPodsEvaluationWeightIsCappedAtItsSplit) {
  const auto evals = run_evaluated_job([](ScriptedPod& liar) { liar.claimed_eval_samples = 1'000'000; });
  ASSERT_EQ(evals.size(), 3u);
  for (const auto& e : evals) {
    SCOPED_TRACE(e.dump());
    ASSERT_TRUE(e.is_object());
    const bool test = e["split"] == "test";
    const int64_t rows = test ? 40 : 20;
    EXPECT_EQ(e["pods"]["liar"]["num_samples"], rows);
    const int64_t n = e["pods"]["honest"]["num_samples"];
    ASSERT_GT(n, 0);
    const double honest = e["pods"]["honest"]["accuracy"];
    EXPECT_EQ(e["num_samples"], n + rows);
    EXPECT_NEAR(e["accuracy"].get<double>(), (honest * n + 0.5 * rows) / (n + rows), 1e-9);
  }
  EXPECT_CONTAINS(logs_.str(), "event=eval_weight_capped job=exactly-once round=1 pod=liar split=validation "
                              "claimed_samples=1000000 split_samples=20");
  testing::record_fault("hostile input", "evaluation results claiming 1,000,000 rows from a pod with 20 (40 test)",
                        3, "each weighted by the rows of the split the pod reported; global accuracy the capped "
                        "weighted mean; logged as eval_weight_capped");
}

// A pod whose evaluation reports an accuracy that is not a number: NaN fails every
// comparison, so a range check written as `accuracy < 0 || accuracy > 1` lets it
// through, and the job's weighted accuracy becomes NaN (null in history.json). Its
// evaluation is refused with the reason; the others' make the job's accuracy.
TEST_F(ExactlyOnceTest, AnEvaluationWithANaNAccuracyIsRefusedAndTheOthersCount) {
  const auto evals =
      run_evaluated_job([](ScriptedPod& liar) { liar.eval_accuracy = std::numeric_limits<double>::quiet_NaN(); });
  ASSERT_EQ(evals.size(), 3u);
  for (const auto& e : evals) {
    SCOPED_TRACE(e.dump());
    ASSERT_TRUE(e.is_object());
    EXPECT_EQ(e["pods"]["liar"]["outcome"], "error");
    EXPECT_CONTAINS(e["pods"]["liar"].value("error", ""), "evaluation result out of range: loss 1 (must be finite), "
                                                          "accuracy nan (must be in [0, 1])");
    ASSERT_TRUE(e["accuracy"].is_number());
    EXPECT_EQ(e["accuracy"], e["pods"]["honest"]["accuracy"]);
    EXPECT_EQ(e["num_samples"], e["pods"]["honest"]["num_samples"]);
  }
  EXPECT_TRUE(std::filesystem::exists(spec_.output_dir + "/report.html"));
  testing::record_fault("hostile input", "evaluation results with a NaN accuracy", 3,
                        "each refused with the reason; the job's accuracy the honest pod's; history.json and "
                        "report.html written");
}

// A pod's own words (its decision in jobAccepted, an error's message) go into
// history.json, the events stream and the log. JSON writers throw on text that is not
// UTF-8 (the coordinator died in std::terminate writing history.json), control
// characters would forge log lines, and a megabyte of error each round would be kept
// for the whole job. Kept made valid, printable and bounded; the job runs on.
TEST_F(ExactlyOnceTest, APodsTextThatIsNotUtf8OrIsHugeIsKeptSafely) {
  start_honest_pod("honest");
  const std::string bad = "bad \xff\xfe\xc3\x28 \xed\xa0\x80 \x1b[2J\r\nevent=forged";
  start_scripted_pod("liar", [&](W kind, uint64_t rid, uint32_t round, const ScriptedPod::Actions& act) {
    if (kind == W::TRAIN && round == 1) {
      act.error(spec_.job_id, rid, bad + std::string(100000, 'x'));
      return false;
    }
    return true;
  });
  scripted_->accepted_decision = "granted by " + bad;
  spec_.rounds = 2;
  spec_.round_timeout = 60s;
  auto result = run_job();
  ASSERT_TRUE(result.ok()) << result.status().to_string() << "\n" << logs_.str();
  EXPECT_EQ(result->rounds_completed, 2);

  auto h = history();  // parses: valid UTF-8
  const std::string cleaned = "bad \xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD( \xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD ?[2J?\nevent=forged";
  EXPECT_EQ(h["pods"]["liar"]["decision"], "granted by " + cleaned);
  const auto& r1 = h["rounds"][0]["pods"]["liar"];
  EXPECT_EQ(r1["outcome"], "error");
  const std::string error = r1.value("error", "");
  EXPECT_CONTAINS(error, "internal: " + cleaned + "xxx");
  EXPECT_LE(error.size(), 4200u);
  EXPECT_CONTAINS(error, " bytes cut)");
  EXPECT_EQ(h["rounds"][1]["pods"]["liar"]["outcome"], "ok");
  std::istringstream events(events_.str());
  for (std::string line; std::getline(events, line);) EXPECT_NO_THROW((void)nlohmann::json::parse(line)) << line;
  EXPECT_CONTAINS(events_.str(), "\"decision\":\"granted by bad \xEF\xBF\xBD");
  // No log line starts with text the pod chose, nor holds its raw bytes.
  EXPECT_EQ(logs_.str().find("\nevent=forged"), std::string::npos) << logs_.str();
  EXPECT_CONTAINS(logs_.str(), "?[2J?\\nevent=forged");
  EXPECT_EQ(logs_.str().find('\xff'), std::string::npos);
  EXPECT_TRUE(std::filesystem::exists(spec_.output_dir + "/report.html"));
  testing::record_fault("hostile input",
                        "a pod's decision and error text that is not UTF-8, holds control characters and is 100 KB",
                        2, "kept as valid UTF-8 with the control characters replaced and cut at 4 KB; history.json, "
                        "the events stream and report.html written; the pod's next round folded");
}

// Row counts in jobAccepted weigh a pod's updates and evaluations (each is capped at
// them). 2^63 validation rows read as a negative count, which turned the cap into a
// negative weight; any count above 2^48 leaves the pod out of the job with the reason.
TEST_F(ExactlyOnceTest, ImpossibleRowCountsInJobAcceptedLeaveThePodOut) {
  start_honest_pod("honest");
  start_scripted_pod("liar", [](W, uint64_t, uint32_t, const ScriptedPod::Actions&) { return true; });
  scripted_->accepted_validation = uint64_t{1} << 63;
  spec_.rounds = 1;
  spec_.round_timeout = 60s;
  auto result = run_job();
  ASSERT_TRUE(result.ok()) << result.status().to_string() << "\n" << logs_.str();
  auto h = history();
  EXPECT_NE(h["pods"]["liar"]["outcome"], "ok") << h["pods"];
  EXPECT_CONTAINS(h["pods"]["liar"].value("error", ""),
                  "jobAccepted reports 9223372036854775808 validationSamples, more rows than one pod may have "
                  "(281474976710656)");
  EXPECT_EQ(h["rounds"][0]["pods_answered"], 1);
  EXPECT_TRUE(scripted_->received.empty());  // never asked to train
  testing::record_fault("hostile input", "jobAccepted reporting 2^63 validation rows", 1,
                        "the pod left out of the job at startJob with the reason; the job ran with the others");
}

// A mirrored buffer (num_batches_tracked of a batch-norm layer) takes the pods'
// largest value. A pod that raised it to 2^25 made every honest pod fail in every
// later round (its float32 slot no longer holds the count exactly) and the checkpoint
// kept it; one that raised it to just below 2^24 left a few rounds before the same.
// Each such update is refused with the reason; the count stays the honest pod's.
TEST_F(ExactlyOnceTest, AMirroredBufferRaisedOutOfReachIsRefused) {
  spec_.model.ref = "mlp";
  spec_.model.hyperparameters = Hyperparameters(nlohmann::json{{"hidden", {8}}, {"batch_norm", true}});
  auto m = model::make_builtin("mlp");
  m->create_model({64}, 10, spec_.model.hyperparameters);
  layout_ = m->flat().layout();
  int64_t slot = -1;
  for (const auto& p : layout_) {
    if (p.kind == model::EntryKind::kMirroredBuffer) slot = p.offset;
  }
  ASSERT_GE(slot, 0) << "the mlp with batch_norm has no num_batches_tracked";
  start_honest_pod("honest", /*real_training=*/true);
  start_scripted_pod("liar", [](W, uint64_t, uint32_t, const ScriptedPod::Actions&) { return true; });
  const float raised[] = {0, 1000.0f, 33554432.0f, 2.5f};  // by round: too far, beyond 2^24, not whole
  scripted_->tamper = [&](uint32_t round, torch::Tensor& flat) {
    if (round >= 2 && round <= 4) flat[slot] = flat[slot].item<float>() - kLiarDelta + raised[round - 1];
  };
  spec_.rounds = 5;
  spec_.round_timeout = 60s;
  auto result = run_job();
  ASSERT_TRUE(result.ok()) << result.status().to_string() << "\n" << logs_.str();
  EXPECT_EQ(result->rounds_completed, 5);

  auto h = history();
  const auto& r = h["rounds"];
  ASSERT_EQ(r.size(), 5u);
  EXPECT_CONTAINS(r[1]["pods"]["liar"].value("error", ""), "raised by 1000 in one round, more than the 32 samples");
  EXPECT_CONTAINS(r[2]["pods"]["liar"].value("error", ""), "beyond the 16777216 its float32 slot holds exactly");
  EXPECT_CONTAINS(r[3]["pods"]["liar"].value("error", ""), "holds a value that is not a whole number");
  for (int k = 0; k < 5; ++k) {
    EXPECT_EQ(r[k]["pods"]["honest"]["outcome"], "ok") << r[k];
    EXPECT_EQ(r[k]["pods"]["liar"]["outcome"], k >= 1 && k <= 3 ? "error" : "ok") << r[k];
  }
  // The liar's honest-looking rounds carry the round's count + kLiarDelta (8): the
  // count after round 5 is 1 (round 1: max of 0 + 1 and 0 + 8 = 8) ... as the max.
  // Whatever it is, it is the one honest training and the liar's +8 could give.
  torch::Tensor final_model = saved_model(result->model_path);
  const double count = final_model[slot].item<double>();
  EXPECT_EQ(count, std::round(count));
  EXPECT_LE(count, 5 * kLiarDelta);
  testing::record_fault("hostile input",
                        "num_batches_tracked raised by 1000 in a round (32 samples a round), to 2^25, and to 2.5", 3,
                        "each update refused with the reason; the honest pod trained every round; the count "
                        "stays whole and within the job's steps");
}

// A pod whose update holds finite values so large that its weighted share overflows
// float32 (global + 2^127 = 1.7e38, weighted by 160 samples: 2.7e40). In round 2 its
// update is refused before it is folded: its outcome is an error naming the overflow,
// round 2 is the honest pod's update alone, and the job goes on with finite parameters
// (without the check the round's parameters were infinite, the honest pod refused
// every later round, and the checkpoint kept them).
TEST_F(ExactlyOnceTest, AnUpdateWhoseWeightedSumWouldOverflowIsRefusedAndTheRoundKeepsTheOthers) {
  start_honest_and_overflowing_liar(0x1p127f);
  auto result = run_job();
  ASSERT_TRUE(result.ok()) << result.status().to_string() << "\n" << logs_.str();
  EXPECT_EQ(result->rounds_completed, 3);

  const auto& got = scripted_->received;
  ASSERT_EQ(got.size(), 3u);
  EXPECT_LT(max_diff(got.at(2), got.at(1) + 2.75), 1e-5) << "round 1: both pods";
  EXPECT_LT(max_diff(got.at(3), got.at(2) + kHonestDelta), 1e-5) << "round 2: the honest pod alone";
  const torch::Tensor final_model = saved_model(result->model_path);
  EXPECT_TRUE(torch::isfinite(final_model).all().item<bool>());
  EXPECT_LT(max_diff(final_model, got.at(3) + 2.75), 1e-5) << "round 3: both pods again";

  auto h = history();
  ASSERT_EQ(h["rounds"].size(), 3u);
  const auto& r2 = h["rounds"][1];
  EXPECT_EQ(r2["pods_answered"], 1);
  EXPECT_EQ(r2["pods"]["honest"]["outcome"], "ok");
  EXPECT_EQ(r2["pods"]["liar"]["outcome"], "error") << r2;
  const std::string why = r2["pods"]["liar"].value("error", "");
  EXPECT_CONTAINS(why, "its largest value in magnitude is 1.7e+38; weighted by 160");
  EXPECT_CONTAINS(why, "could overflow float32");
  EXPECT_EQ(h["rounds"][2]["pods"]["liar"]["outcome"], "ok");
  const std::string text = prometheus::TextSerializer().Serialize(coordinator_->registry()->Collect());
  EXPECT_EQ(testing::metric_value(text, "fedpod_coordinator_pod_responses_total{outcome=\"error\",pod=\"liar\"}"), 1)
      << text;
  testing::record_fault("hostile input",
                        "an update of finite values whose weighted sum overflows float32 (2^127 from a pod of 160 "
                        "samples) under FedAvg",
                        1, "that update refused with the reason before it was folded; the round completed with the "
                        "other pod; parameters finite",
                        "the hostile pod's update for that round");
}

// Under a server optimizer the same kind of pod overflows the optimizer's own
// arithmetic instead (FedAdam squares the mean step: 2^66 = 7.4e19 weighted 160 of
// 640 is a step of 2^64, squared 2^128, past float32's largest value). The round's
// result is never applied nor checkpointed: the job ends naming the overflow and each
// pod's largest value, and the checkpoint of round 1 is what a resume would start from.
TEST_F(ExactlyOnceTest, AServerOptimizerThatWouldOverflowEndsTheJobWithItsCheckpointIntact) {
  start_honest_and_overflowing_liar(0x1p66f);
  spec_.strategy = "fedadam";
  auto result = run_job();
  ASSERT_FALSE(result.ok()) << "the job ran on with a state that is not finite";
  const std::string why = result.status().message();
  EXPECT_CONTAINS(why, "round 2/3: the state that fedadam carries to the next round is not finite (float32 overflow)");
  EXPECT_CONTAINS(why, "liar 7.38e+19");
  EXPECT_CONTAINS(why, "nothing of the round was applied; the checkpoint after round 1 is intact");
  EXPECT_CONTAINS(logs_.str(), "event=aggregate_not_finite job=exactly-once round=2 strategy=fedadam");

  auto h = history();
  EXPECT_EQ(h["checkpoint"]["round"], 1) << h;
  ASSERT_GE(h["rounds"].size(), 1u);
  auto saved = coordinator::read_checkpoint(spec_.output_dir + "/checkpoint.bin");
  ASSERT_TRUE(saved.ok()) << saved.status().to_string();
  EXPECT_EQ(saved->round, 1);
  EXPECT_TRUE(torch::isfinite(saved->parameters).all().item<bool>());
  for (const auto& t : saved->strategy_state) EXPECT_TRUE(torch::isfinite(t).all().item<bool>());
  testing::record_fault("hostile input",
                        "an update whose mean step overflows FedAdam's squared-step state (2^66 from a pod of 160 "
                        "samples)",
                        1, "job ended naming the overflow and each pod's largest value; nothing of the round applied; "
                        "checkpoint of the previous round intact and finite",
                        "the round in progress (resume redoes it)");
}

// A DEALER made with receive_hwm queues at most about that many unread messages: a
// peer sending into it without pause meets backpressure (EAGAIN) long before
// ZeroMQ's default of 1000 messages, so the receiver's memory stays bounded.
TEST(ReceiveHwmTest, AFloodIntoAnUnreadSocketIsHeldBack) {
  zmq::context_t ctx(1);
  auto flood_until_blocked = [&](int receive_hwm) {
    // The flooding peer queues nothing and the kernel little (loopback buffers may
    // otherwise grow to tens of megabytes): what piles up is the receiver's queue.
    // Set before bind: a listener hands its connections the options of bind time.
    zmq::socket_t router(ctx, zmq::socket_type::router);
    router.set(zmq::sockopt::linger, 0);
    router.set(zmq::sockopt::router_mandatory, 1);
    router.set(zmq::sockopt::sndhwm, 1);
    router.set(zmq::sockopt::sndbuf, 128 * 1024);
    router.bind("tcp://127.0.0.1:*");
    protocol::SocketOptions client;
    client.linger = 0ms;
    client.receive_hwm = receive_hwm;
    zmq::socket_t dealer = protocol::make_dealer(ctx, "", client);
    dealer.set(zmq::sockopt::rcvbuf, 128 * 1024);
    dealer.connect(protocol::bound_endpoint(router));
    dealer.send(zmq::str_buffer("hi"), zmq::send_flags::none);  // so the router knows its routing id
    std::vector<zmq::message_t> frames;
    bool too_many = false;
    for (int i = 0; i < 3000 && !protocol::recv_frames(router, frames, 4, too_many); ++i) {
      std::this_thread::sleep_for(10ms);
    }
    if (frames.size() != 2) {  // not even the greeting arrived (30 s): nothing to measure
      ADD_FAILURE() << "the dealer's first message did not reach the router";
      return -1;
    }
    const std::string payload(64 * 1024, 'x');
    int sent = 0;
    // Never read by the dealer; stop when ZeroMQ pushes back for 3 s in a row (under
    // ThreadSanitizer on a busy machine the receiver's I/O thread can stall for over a
    // second while its queue still has room).
    for (auto last = std::chrono::steady_clock::now(); std::chrono::steady_clock::now() - last < 3s && sent < 5000;) {
      zmq::message_t id(frames[0].data(), frames[0].size());
      if (!router.send(id, zmq::send_flags::sndmore | zmq::send_flags::dontwait)) {
        std::this_thread::sleep_for(5ms);
        continue;
      }
      router.send(zmq::buffer(payload), zmq::send_flags::none);
      ++sent;
      last = std::chrono::steady_clock::now();
    }
    return sent;
  };
  const int bounded = flood_until_blocked(16);
  const int unbounded = flood_until_blocked(0);
  std::cout << "[ flood    ] 64 KiB messages accepted before backpressure: receive_hwm 16: " << bounded
            << ", ZeroMQ default: " << unbounded << std::endl;
  // Beyond the receiver's queue, the two kernel buffers hold some 256 KiB each.
  EXPECT_LT(bounded, 16 + 64);
  EXPECT_GE(unbounded, 1000);
}

// Without misbehaviour nothing is discarded, and every reason is exported at 0.
TEST_F(ExactlyOnceTest, HonestPodsDiscardNothing) {
  spec_.rounds = 2;
  start_honest_pod("honest");
  start_scripted_pod("scripted",
                     [](W, uint64_t, uint32_t, const ScriptedPod::Actions&) { return true; });
  coordinator::validate(spec_, "test job");
  std::ostringstream progress;
  coordinator::Coordinator c(ctx_, spec_, null_logger(), progress);
  auto result = c.run();
  ASSERT_TRUE(result.ok()) << result.status().to_string();
  const std::string text = prometheus::TextSerializer().Serialize(c.registry()->Collect());
  for (const char* reason : {"stale_request", "closed_round", "duplicate", "wrong_job", "unfetched"}) {
    EXPECT_EQ(testing::metric_value(text, std::string("fedpod_coordinator_discarded_replies_total{reason=\"") +
                              reason + "\"}"),
              0)
        << text;
  }
  auto h = history();
  for (const auto& rec : h["rounds"]) {
    EXPECT_EQ(rec["pods_answered"], 2);
    EXPECT_EQ(rec["discarded_replies"], 0);
  }
  stop_ = true;
  for (auto& t : threads_) t.join();
  threads_.clear();
  // Two rounds, both pods each time: global + 2 * 2.75.
  EXPECT_LT(max_diff(saved_model(result->model_path), scripted_->received.at(1) + 5.5), 1e-5);
}

}  // namespace
}  // namespace fedpod
