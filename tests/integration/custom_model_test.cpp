// Custom models from the model hub, end to end: an in-process hub::Server on
// loopback, a user who pushes a TorchScript archive or a native plugin, real
// `fedpod worker` processes, and an in-process Coordinator that resolves the model
// reference through the hub, builds it in a confined job runner (as `fedpod
// coordinator run` does) and ships the artifact to the pods in startJob.
// Also: a pod where the modeller lacks a grant, custom_models: refuse, a tampered
// artifact, a missing model. Permissions in depth are in access_test.cpp.
#include <gtest/gtest.h>
#include <httplib.h>
#include <sys/stat.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "fedpod/common/sha256.h"
#include "fedpod/coordinator/coordinator.h"
#include "fedpod/hub/client.h"
#include "fedpod/hub/server.h"
#include "fedpod/protocol/codec.h"
#include "fedpod/protocol/socket.h"
#include "fedpod/protocol/wire_convert.h"
#include "fedpod/worker/runner.h"
#include "fedpod/worker/worker.h"
#include "digits_job.h"
#include "identity.h"
#include "running_hub.h"
#include "testutil.h"

namespace fedpod {
namespace {

using namespace std::chrono_literals;
using W = wire::Envelope::Body::Which;

// A hub::Server on 127.0.0.1:<free port> serving on its own thread.
using testing::RunningHub;

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

class CustomModelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    hub::ServerOptions opt;
    opt.data_dir = (dir_.path() / "hub").string();
    hub_ = std::make_unique<RunningHub>(opt, RunningHub::Tls::kOn);
    hub::Client c(hub_->hub_url());
    auto token = c.register_user("alice", id_.modeller.public_key, id_.modeller.secret_key);
    ASSERT_TRUE(token.ok()) << token.status().to_string();
    token_ = *token;

    spec_.job_id = "custom-test";
    spec_.model.username = "alice";
    spec_.datastructure.target = "label";
    spec_.datastructure.num_classes = 10;
    spec_.datastructure.scale = 1.0 / 16;
    spec_.round_timeout = 60s;
    spec_.connect_timeout = 20s;
    spec_.hub_url = hub_->url();
    spec_.hub_ca = hub_->ca_file();
    spec_.output_dir = (dir_.path() / "out").string();
    spec_.key_file = id_.modeller_key_file;
    // As `fedpod coordinator run`: the custom model is built in a runner, not here.
    spec_.runner_command = {testing::fedpod_bin(), "runner"};
  }

  // Loads the TorchScript archive `pt` and the example plugin in a runner confined as
  // `ro` says, and checks each builds what the coordinator would build in-process.
  void expect_runner_builds_the_same_model(const std::string& pt, const worker::RunnerOptions& ro);

  // Scripts examples/torchscript_model/digits_net.py; returns the archive's path.
  std::string script_digits_net() {
    const std::string out = (dir_.path() / "digits_net.pt").string();
    const std::string cmd = "/usr/bin/python3 " + testing::source_dir() +
                            "/examples/torchscript_model/digits_net.py --out " + out + " > " +
                            (dir_.path() / "script.log").string() + " 2>&1";
    EXPECT_EQ(std::system(cmd.c_str()), 0)
        << testing::read_file((dir_.path() / "script.log").string());
    return out;
  }

  hub::VersionInfo push(const std::string& ref, const std::string& format,
                        const std::string& artifact, const std::string& source,
                        const std::string& visibility = "") {
    hub::Client c(hub_->hub_url(), token_);
    auto v = c.push_model("alice", ref, format, "test model", visibility, artifact, {source});
    EXPECT_TRUE(v.ok()) << v.status().to_string();
    return v.ok() ? *v : hub::VersionInfo{};
  }

  // One worker process per name, each with its digits share; alice has `role` there.
  void start_pods(const std::vector<std::string>& names, const std::string& role = "super-modeller",
                  const std::string& extra_yaml = "") {
    testing::start_digits_pods(dir_, id_, names, spec_, procs_, role, extra_yaml);
  }

  StatusOr<coordinator::RunResult> run(std::ostream& progress) {
    coordinator::validate(spec_, "test job");
    zmq::context_t ctx(1);
    coordinator::Coordinator c(ctx, spec_, null_logger(), progress);
    return c.run();
  }

  nlohmann::json history() {
    return nlohmann::json::parse(testing::read_file(spec_.output_dir + "/history.json"));
  }

  testing::TempDir dir_;
  testing::TestIdentity id_{dir_.path(), "alice"};
  std::unique_ptr<RunningHub> hub_;
  std::string token_;
  std::vector<std::unique_ptr<testing::Process>> procs_;
  coordinator::JobSpec spec_;
};

TEST_F(CustomModelTest, TorchScriptModelTrainsAcrossThreePods) {
  const std::string pt = script_digits_net();
  const auto v = push("digits-net", "torchscript", pt,
                      testing::source_dir() + "/examples/torchscript_model/digits_net.py");
  ASSERT_EQ(v.version, 1);
  start_pods({"pod-a", "pod-b", "pod-c"});
  spec_.model.ref = "digits-net";  // version 0: latest; private, so the token is needed
  spec_.hub_token = token_;
  spec_.datastructure.input_shape = {1, 8, 8};
  spec_.rounds = 5;
  spec_.eval_every = 0;
  std::ostringstream progress;
  auto result = run(progress);
  ASSERT_TRUE(result.ok()) << result.status().to_string() << "\n" << progress.str();
  EXPECT_EQ(result->rounds_completed, 5);
  EXPECT_GT(result->test_accuracy, 0.8) << progress.str();
  auto h = history();
  EXPECT_EQ(h["status"], "completed");
  const auto& r = h["model"]["resolved"];
  EXPECT_EQ(r["username"], "alice");
  EXPECT_EQ(r["ref"], "digits-net");
  EXPECT_EQ(r["version"], 1);
  EXPECT_EQ(r["format"], "torchscript");
  EXPECT_EQ(r["sha256"], v.sha256);
  EXPECT_EQ(r["sha256"], sha256_hex(slurp(pt)));
  for (const auto& pod : {"pod-a", "pod-b", "pod-c"})
    EXPECT_EQ(h["pods"][pod]["outcome"], "ok") << pod;
  EXPECT_EQ(h["model"]["confinement"], worker::probe_confinement(spec_.runner_command).level);
}

// The coordinator's runner builds exactly the model the coordinator would build
// in-process: same names, shapes, kinds, declared hyperparameters and bit-identical
// initial values, for a TorchScript archive and a plugin. The job then records how
// the model was confined.
TEST_F(CustomModelTest, TheCoordinatorsRunnerBuildsTheSameModelAsInProcess) {
  const std::string pt = script_digits_net();
  worker::RunnerOptions ro;
  ro.command = {testing::fedpod_bin(), "runner"};
  ro.confinement = worker::probe_confinement(ro.command);
  expect_runner_builds_the_same_model(pt, ro);
}

// The same under the confinement of a machine without bubblewrap: no namespaces, the
// runner's files confined by Landlock. Both formats load from their in-memory file
// under the layer and build the same model.
TEST_F(CustomModelTest, TheRunnerBuildsTheSameModelUnderLandlock) {
  if (const int abi = worker::landlock_abi(); abi < 0) {
    GTEST_SKIP() << "this kernel has no Landlock (" << std::strerror(-abi) << ")";
  }
  const std::string pt = script_digits_net();
  worker::RunnerOptions ro;
  ro.command = {testing::fedpod_bin(), "runner"};
  ro.confinement.landlock = true;
  ro.confinement.level = "landlock+seccomp+rlimits";
  expect_runner_builds_the_same_model(pt, ro);
}

void CustomModelTest::expect_runner_builds_the_same_model(const std::string& pt, const worker::RunnerOptions& ro) {
  struct Case {
    std::string format, path;
    std::vector<int64_t> shape;
    nlohmann::json hp;
  };
  for (const Case& c : {Case{"torchscript", pt, {1, 8, 8}, nlohmann::json::object()},
                        Case{"plugin", FEDPOD_EXAMPLE_PLUGIN, {64}, {{"hidden", 48}, {"dropout", 0.1}}}}) {
    SCOPED_TRACE(c.format);
    const Hyperparameters hp(c.hp);
    auto local = model::load_custom(c.path, c.format);
    ASSERT_TRUE(local.ok()) << local.status().to_string();
    const auto declared = (*local)->hyperparameters();
    torch::manual_seed(1234);
    (*local)->create_model(c.shape, 10, hp);

    auto in_runner = worker::load_in_runner("digits", c.format, slurp(c.path), ro);
    ASSERT_TRUE(in_runner.ok()) << in_runner.status().to_string();
    EXPECT_EQ((*in_runner)->confinement(), ro.confinement.level);
    ASSERT_EQ((*in_runner)->hyperparameters().has_value(), declared.has_value());
    if (declared) {
      ASSERT_EQ((*in_runner)->hyperparameters()->size(), declared->size());
      for (size_t i = 0; i < declared->size(); ++i) {
        EXPECT_EQ((*(*in_runner)->hyperparameters())[i].name, (*declared)[i].name);
        EXPECT_EQ((*(*in_runner)->hyperparameters())[i].type, (*declared)[i].type);
        EXPECT_EQ((*(*in_runner)->hyperparameters())[i].choices, (*declared)[i].choices);
      }
    }
    auto built = (*in_runner)->create(c.shape, 10, hp, 1234);
    ASSERT_TRUE(built.ok()) << built.status().to_string();
    const auto& want = (*local)->flat().layout();
    ASSERT_EQ(built->layout.size(), want.size());
    for (size_t i = 0; i < want.size(); ++i) {
      EXPECT_EQ(built->layout[i].name, want[i].name);
      EXPECT_EQ(built->layout[i].shape, want[i].shape);
      EXPECT_EQ(built->layout[i].offset, want[i].offset);
      EXPECT_EQ(built->layout[i].kind, want[i].kind);
      EXPECT_EQ(built->layout[i].dtype, want[i].dtype);
    }
    EXPECT_TRUE(torch::equal(built->state, (*local)->flat().tensor())) << "initial values differ";
    // A second create is refused: one model per runner, and this one has ended.
    EXPECT_FALSE((*in_runner)->create(c.shape, 10, hp, 1234).ok());
  }
  // An input the model rejects is the model's error, not a crash.
  auto in_runner = worker::load_in_runner("digits", "torchscript", slurp(pt), ro);
  ASSERT_TRUE(in_runner.ok()) << in_runner.status().to_string();
  auto bad = (*in_runner)->create({3}, 10, Hyperparameters(), 1);
  ASSERT_FALSE(bad.ok());
  EXPECT_CONTAINS(bad.status().message(), "confinement " + ro.confinement.level);
}

// The seed's C++ API: fit(ModelReference, pod names). Pods are registered on the
// hub with their addresses and named only by name in the call.
TEST_F(CustomModelTest, FitResolvesModelAndPodNamesThroughTheHub) {
  const std::string pt = script_digits_net();
  push("digits-net", "torchscript", pt, testing::source_dir() + "/examples/torchscript_model/digits_net.py");
  start_pods({"pod-a", "pod-b"});
  hub::Client c(hub_->hub_url(), token_);
  for (const auto& p : spec_.pods) {
    ASSERT_TRUE(c.register_pod(p.name, p.address, id_.pod_public_key(p.name), nlohmann::json::object()).ok());
  }
  spec_.hub_token = token_;
  spec_.datastructure.input_shape = {1, 8, 8};
  spec_.rounds = 2;
  zmq::context_t ctx(1);
  auto history = coordinator::fit(ctx, spec_, {"alice", "digits-net", 0, {{"lr", 0.01}}}, {"pod-a", "pod-b"});
  ASSERT_TRUE(history.ok()) << history.status().to_string();
  EXPECT_EQ((*history)["status"], "completed");
  EXPECT_EQ((*history)["rounds"].size(), 2u);
  EXPECT_EQ((*history)["model"]["resolved"]["version"], 1);
  EXPECT_EQ((*history)["rounds"][1]["pods_answered"], 2);

  // A name the hub does not know fails the job before any pod is asked.
  auto unknown = coordinator::fit(ctx, spec_, {"alice", "digits-net", 0, {}}, {"pod-a", "pod-zz"});
  ASSERT_FALSE(unknown.ok());
  EXPECT_CONTAINS(unknown.status().message(), "pod 'pod-zz' cannot be resolved on the hub");
}

TEST_F(CustomModelTest, PluginModelTrainsAcrossThreePods) {
  const auto v = push("digits-mlp", "plugin", FEDPOD_EXAMPLE_PLUGIN,
                      testing::source_dir() + "/examples/plugin_model/digits_mlp.cpp", "public");
  start_pods({"pod-a", "pod-b", "pod-c"});
  spec_.model.ref = "digits-mlp";
  spec_.model.version = 1;
  spec_.model.hyperparameters =
      Hyperparameters(nlohmann::json{{"hidden", 64}, {"optimizer", "adam"}, {"lr", 0.01}});
  spec_.local_epochs = 2;
  spec_.rounds = 5;
  spec_.eval_every = 0;
  std::ostringstream progress;
  auto result = run(progress);  // no token: a public model resolves anonymously
  ASSERT_TRUE(result.ok()) << result.status().to_string() << "\n" << progress.str();
  EXPECT_GT(result->test_accuracy, 0.8) << progress.str();
  auto h = history();
  EXPECT_EQ(h["model"]["resolved"]["format"], "plugin");
  EXPECT_EQ(h["model"]["resolved"]["sha256"], v.sha256);
}

// Pods with two cpu replicas (worker/data_parallel.h) load a custom model once per
// replica from the same artifact: a TorchScript job, then a plugin job.
TEST_F(CustomModelTest, CustomModelsTrainOnPodsWithTwoCpuReplicas) {
  const std::string pt = script_digits_net();
  push("digits-net", "torchscript", pt, testing::source_dir() + "/examples/torchscript_model/digits_net.py");
  push("digits-mlp", "plugin", FEDPOD_EXAMPLE_PLUGIN, testing::source_dir() + "/examples/plugin_model/digits_mlp.cpp");
  start_pods({"pod-a", "pod-b"}, "super-modeller", "devices: [cpu, cpu]\n");
  spec_.hub_token = token_;
  spec_.rounds = 2;
  spec_.eval_every = 0;
  for (const std::string ref : {"digits-net", "digits-mlp"}) {
    spec_.job_id = "two-replicas-" + ref;
    spec_.model.ref = ref;
    spec_.datastructure.input_shape = ref == "digits-net" ? std::vector<int64_t>{1, 8, 8} : std::vector<int64_t>{};
    spec_.model.hyperparameters = Hyperparameters(nlohmann::json{{"optimizer", "adam"}, {"lr", 0.01}});
    spec_.output_dir = (dir_.path() / ("out-" + ref)).string();
    std::ostringstream progress;
    auto result = run(progress);
    ASSERT_TRUE(result.ok()) << ref << ": " << result.status().to_string() << "\n" << progress.str();
    EXPECT_EQ(result->rounds_completed, 2) << ref;
    EXPECT_GT(result->test_accuracy, 0.6) << ref << "\n" << progress.str();  // 0.83-0.88 in a run; chance 0.1
  }
  const std::string log = testing::read_file((dir_.path() / "pod-a.log").string());
  EXPECT_CONTAINS(log, "model='alice/digits-net' version 1");
  EXPECT_CONTAINS(log, "replicas=2 allreduce=\"cpu\"");
}

// A custom model's hyperparameters are checked like a built-in's, before any pod is
// contacted: the job's only pod is an address where nothing listens, so an error
// about anything but the hyperparameters (after connect_timeout) would mean the
// coordinator went to the pods first.
TEST_F(CustomModelTest, MisspelledOrIllTypedHyperparametersStopTheJobBeforeAnyPod) {
  const std::string pt = script_digits_net();
  push("digits-net", "torchscript", pt, testing::source_dir() + "/examples/torchscript_model/digits_net.py");
  push("digits-mlp", "plugin", FEDPOD_EXAMPLE_PLUGIN, testing::source_dir() + "/examples/plugin_model/digits_mlp.cpp");
  spec_.hub_token = token_;
  spec_.pods = {{"pod-nowhere", "tcp://127.0.0.1:1", id_.pod_public_key("pod-nowhere")}};
  struct Case {
    std::string ref;
    nlohmann::json hp;
    std::string want;
  };
  const std::vector<Case> cases = {
      // TorchScript: the common keys and what its configure_optimizers returns (lr).
      {"digits-net", {{"optimiser", "adam"}},
       "model alice/digits-net (latest): unknown hyperparameter 'optimiser' (did you mean 'optimizer'?); accepted: "
       "batch_size, lr, momentum, optimizer, weight_decay"},
      {"digits-net", {{"lr", "fast"}}, "hyperparameter 'lr' must be a number, got \"fast\""},
      // The example plugin declares hidden, dropout and label_smoothing.
      {"digits-mlp", {{"label_smothing", 0.1}}, "unknown hyperparameter 'label_smothing' (did you mean 'label_smoothing'?)"},
      {"digits-mlp", {{"hidden", "wide"}}, "hyperparameter 'hidden' must be an integer, got \"wide\""},
  };
  for (const auto& c : cases) {
    spec_.model.ref = c.ref;
    spec_.model.hyperparameters = Hyperparameters(c.hp);
    std::ostringstream progress;
    coordinator::validate(spec_, "test job");
    zmq::context_t ctx(1);
    coordinator::Coordinator coord(ctx, spec_, null_logger(), progress);
    auto result = coord.run();
    ASSERT_FALSE(result.ok()) << c.hp.dump();
    EXPECT_EQ(result.status().code(), StatusCode::kInvalidArgument) << result.status().to_string();
    EXPECT_CONTAINS(result.status().message(), c.want);
    EXPECT_TRUE(coord.job_config_error()) << c.hp.dump();
    EXPECT_EQ(progress.str().find("pod-nowhere"), std::string::npos) << "went to the pods first:\n" << progress.str();
    EXPECT_EQ(history()["status"], "failed");
  }
}

TEST_F(CustomModelTest, PodsRefuseWithoutGrantOrWhenCustomModelsAreOff) {
  const std::string pt = script_digits_net();
  push("digits-net", "torchscript", pt,
       testing::source_dir() + "/examples/torchscript_model/digits_net.py", "public");
  start_pods({"pod-a"});                      // alice is a super-modeller there
  start_pods({"pod-b"}, "general-modeller");  // no grant for this model
  start_pods({"pod-c"}, "super-modeller", "custom_models: refuse\n");
  spec_.model.ref = "digits-net";
  spec_.datastructure.input_shape = {1, 8, 8};
  spec_.rounds = 1;
  std::ostringstream progress;
  auto result = run(progress);
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), StatusCode::kUnavailable);
  const std::string msg = result.status().message();
  EXPECT_CONTAINS(msg, "1 pods accepted the job, min_pods is 3: pod-b refused (permission_denied: ");
  EXPECT_CONTAINS(msg, "fedpod access request --model alice/digits-net:1 --pod pod-b");
  EXPECT_CONTAINS(msg, "pod-c refused (permission_denied: pod pod-c refuses every custom model (pod.yaml "
                       "custom_models: refuse)");
  // The decisions are shown before any training.
  EXPECT_CONTAINS(progress.str(), "pod-a: accepted (super-modeller)");
  EXPECT_CONTAINS(progress.str(), "pod-b: left out: refused (permission_denied): pod pod-b");
  auto h = history();
  EXPECT_EQ(h["status"], "failed");
  EXPECT_EQ(h["pods"]["pod-b"]["outcome"], "refused");
  EXPECT_EQ(h["pods"]["pod-a"]["outcome"], "ok");
  EXPECT_EQ(h["pods"]["pod-a"]["decision"], "super-modeller");
}

TEST_F(CustomModelTest, ArtifactOverThePodsFrameLimitIsNotSent) {
  const auto v = push("digits-mlp", "plugin", FEDPOD_EXAMPLE_PLUGIN,
                      testing::source_dir() + "/examples/plugin_model/digits_mlp.cpp", "public");
  // Parameters of the mlp fit in 64 KiB frames; the plugin (~700 KB) does not.
  spec_.pods.clear();
  const std::string csv = testing::source_dir() + "/examples/digits/pod-a.csv";
  const std::string config = dir_.write(
      "small.yaml", "name: pod-small\nlisten: tcp://127.0.0.1:*\ndataset:\n  path: " + csv +
                        "\nmax_frame_bytes: 65536\n" + id_.pod_yaml("pod-small"));
  const std::string endpoint_file = (dir_.path() / "small.endpoint").string();
  procs_.push_back(std::make_unique<testing::Process>(
      std::vector<std::string>{testing::fedpod_bin(), "worker", "--config", config,
                               "--endpoint-file", endpoint_file},
      (dir_.path() / "small.log").string()));
  const std::string endpoint = testing::wait_for_word(endpoint_file, 60s);
  ASSERT_FALSE(endpoint.empty()) << testing::read_file((dir_.path() / "small.log").string());
  spec_.pods.push_back({"pod-small", endpoint, id_.pod_public_key("pod-small")});
  spec_.model.ref = "digits-mlp";
  spec_.rounds = 1;
  std::ostringstream progress;
  auto result = run(progress);
  ASSERT_FALSE(result.ok());
  EXPECT_CONTAINS(result.status().message(), "pod-small refused (the model artifact has " +
                                                 std::to_string(v.size) +
                                                 " bytes, the pod accepts frames of at most 65536");
  EXPECT_TRUE(procs_.back()->running());
}

TEST_F(CustomModelTest, PodConfigCustomModelsSetting) {
  const std::string base = "name: pod-p\nlisten: tcp://127.0.0.1:*\ndataset: {path: x.csv}\n" + id_.pod_yaml("pod-p");
  EXPECT_EQ(worker::load_pod_config(dir_.write("a.yaml", base)).custom_models, worker::CustomModels::kPolicy);
  EXPECT_EQ(worker::load_pod_config(dir_.write("b.yaml", base + "custom_models: refuse\n")).custom_models,
            worker::CustomModels::kRefuse);
  EXPECT_CONTAINS(testing::config_error([&] {
                    worker::load_pod_config(dir_.write("c.yaml", base + "custom_models: yes\n"));
                  }),
                  "custom_models: expected policy or refuse");
  EXPECT_CONTAINS(testing::config_error([&] {
                    worker::load_pod_config(dir_.write("d.yaml", base + "custom_models: allow_unauthenticated\n"));
                  }),
                  "custom_models: allow_unauthenticated is gone");
}

TEST_F(CustomModelTest, MissingModelFailsClearly) {
  start_pods({"pod-a"});
  spec_.model.ref = "no-such-model";
  spec_.rounds = 1;
  std::ostringstream progress;
  auto result = run(progress);
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), StatusCode::kNotFound) << result.status().to_string();
  EXPECT_CONTAINS(
      result.status().message(),
      "model 'alice/no-such-model' (latest version) cannot be resolved on the hub " + hub_->url());
  EXPECT_EQ(history()["status"], "failed");
}

TEST_F(CustomModelTest, HubIsRequiredForACustomModel) {
  spec_.model.ref = "digits-net";
  spec_.hub_url = "";
  spec_.pods.push_back({"pod-a", "tcp://127.0.0.1:1", ""});
  EXPECT_CONTAINS(
      testing::config_error([&] { coordinator::validate(spec_, "job.yaml"); }),
      "model.username: the custom model 'alice/digits-net' is resolved through the model hub");
  const std::string y =
      dir_.write("job.yaml",
                 "model: {username: alice, model_ref: digits-net, model_version: 2}\n"
                 "hub: http://127.0.0.1:8080\n"
                 "datastructure: {target: label, num_classes: 10}\n"
                 "pods: [{name: pod-a, address: 'tcp://127.0.0.1:5555'}]\n");
  auto s = coordinator::load_job_spec(y);
  EXPECT_EQ(s.model.ref, "digits-net");
  EXPECT_EQ(s.model.version, 2u);
  EXPECT_EQ(s.hub_url, "http://127.0.0.1:8080");
}

// A pod in-process, spoken to with hand-built startJob messages.
class TamperTest : public ::testing::Test {
 protected:
  void SetUp() override {
    worker::PodConfig config;
    config.name = "test-pod";
    config.listen = "tcp://127.0.0.1:*";
    config.dataset_path = testing::source_dir() + "/examples/digits/pod-a.csv";
    config.devices = {"cpu"};
    id_.secure(config, "super-modeller");
    worker_ = std::make_unique<worker::Worker>(ctx_, config, null_logger());
    thread_ = std::thread([this] { worker_->serve(stop_); });
    socket_ = protocol::make_dealer(ctx_, worker_->endpoint(), id_.client_options("test-pod"));
  }
  void TearDown() override {
    socket_.close();
    stop_ = true;
    thread_.join();
  }

  // Sends a startJob for a plugin artifact whose claimed sha256 is `claimed`; returns
  // the error text ("" for an acceptance).
  std::string start_job(const std::string& claimed, const std::string& bytes) {
    protocol::Outgoing out("job-1", 1);
    auto sj = out.envelope().getBody().initStartJob();
    auto m = sj.initModel();
    m.setUsername("mallory");
    m.setModelRef("digits-mlp");
    m.setModelVersion(1);
    m.setHyperparameters("{}");
    m.setSha256(claimed);
    m.setFormat("plugin");
    auto blob = std::make_shared<const std::string>(bytes);
    m.setArtifactBytes(blob->size());
    m.setArtifactFrame(out.attach_bytes(blob));
    data::Datastructure ds;
    ds.target = "label";
    ds.num_classes = 10;
    ds.scale = 1.0 / 16;
    protocol::to_wire(ds, sj.initDatastructure());
    auto frames = out.frames();
    EXPECT_TRUE(protocol::send_frames(socket_, frames));
    zmq::pollitem_t item{socket_.handle(), 0, ZMQ_POLLIN, 0};
    if (zmq::poll(&item, 1, 20s) == 0) return "no reply";
    std::vector<zmq::message_t> reply;
    bool too_many;
    if (!protocol::recv_frames(socket_, reply, 100, too_many)) return "no reply";
    auto in = protocol::Incoming::parse(std::move(reply));
    if (!in.ok()) return in.status().to_string();
    auto body = (*in)->envelope().getBody();
    if (body.which() != W::ERROR) return "";
    return std::string(to_string(protocol::from_wire(body.getError().getCode()))) + ": " +
           body.getError().getMessage().cStr();
  }

  testing::TempDir dir_;
  testing::TestIdentity id_{dir_.path()};
  zmq::context_t ctx_{1};
  std::atomic<bool> stop_{false};
  std::unique_ptr<worker::Worker> worker_;
  std::thread thread_;
  zmq::socket_t socket_;
};

TEST_F(TamperTest, ArtifactWhoseHashDiffersIsRefusedNamingBoth) {
  std::string bytes = slurp(FEDPOD_EXAMPLE_PLUGIN);
  ASSERT_FALSE(bytes.empty());
  const std::string claimed = sha256_hex(bytes);
  bytes[bytes.size() / 2] ^= 0x5a;  // one flipped byte in transit
  const std::string got = sha256_hex(bytes);
  const std::string err = start_job(claimed, bytes);
  EXPECT_CONTAINS(err, "permission_denied: pod test-pod refuses custom model mallory/digits-mlp version 1");
  EXPECT_CONTAINS(err, "the artifact received hashes to " + got + ", but startJob says " + claimed);
  EXPECT_EQ(worker_->counters().jobs_started, 0);
  // The untampered artifact is then accepted: the refusal left the pod serving.
  EXPECT_EQ(start_job(claimed, slurp(FEDPOD_EXAMPLE_PLUGIN)), "");
  EXPECT_EQ(worker_->counters().jobs_started, 1);
}

}  // namespace
}  // namespace fedpod
