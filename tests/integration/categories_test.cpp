// String labels under FedAvg: one code for every class on every pod.
//
// Three `fedpod worker` pods serve the digits shares with the label written as a
// word ("d0".."d9"); pod-a has no "d3" rows at all. Each pod used to code its labels
// by its own sorted categories, so on pod-a "d4" was class 3, "d5" class 4, ...: its
// updates taught the global model the wrong classes, and the job still exited 0. Now
// the categories are agreed before round 1 and every pod codes "d4" as 4, so the job
// must reach exactly the accuracy (and parameters) of the same data with numeric
// labels: training is deterministic with aggregation_order "pod".
//
// Both ways of agreeing are run: the job lists the categories (the pods infer their
// schema and publish none), and the pods declare them in pod.yaml (pod-a declaring
// only the nine it has) with the coordinator taking the sorted union.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "fedpod/coordinator/coordinator.h"
#include "fedpod/coordinator/history.h"
#include "digits_job.h"
#include "identity.h"
#include "testutil.h"

namespace fedpod {
namespace {

const std::vector<std::string> kPods = {"pod-a", "pod-b", "pod-c"};

std::vector<std::string> word_labels() {
  std::vector<std::string> out;
  for (int k = 0; k < 10; ++k) out.push_back("d" + std::to_string(k));
  return out;
}

class CategoriesTest : public ::testing::Test {
 protected:
  // Writes `pod`'s digits share to DIR/<variant>-<pod>.csv: without class 3 on pod-a,
  // and with words for labels when `words`. Returns its path.
  std::string write_share(const std::string& pod, const std::string& variant, bool words) {
    std::ifstream in(testing::source_dir() + "/examples/digits/" + pod + ".csv");
    std::ostringstream out;
    std::string line;
    std::getline(in, line);
    out << line << "\n";
    while (std::getline(in, line)) {
      const size_t comma = line.find_last_of(',');
      const std::string label = line.substr(comma + 1);
      if (pod == "pod-a" && label == "3") continue;
      out << line.substr(0, comma + 1) << (words ? "d" : "") << label << "\n";
    }
    return dir_.write(variant + "-" + pod + ".csv", out.str());
  }

  // pod.yaml's schema lines for a share: 64 numeric pixels and the label with
  // `categories`.
  static std::string declared_schema(const std::vector<std::string>& categories) {
    std::string y = "  schema:\n";
    for (int r = 0; r < 8; ++r) {
      for (int c = 0; c < 8; ++c) y += "    - {name: px_" + std::to_string(r) + "_" + std::to_string(c) + "}\n";
    }
    y += "    - {name: label, type: categorical, categories: [";
    for (size_t i = 0; i < categories.size(); ++i) y += (i ? ", " : "") + categories[i];
    return y + "]}\n";
  }

  // Runs the job on pods serving `variant`'s shares; `schema_for` gives each pod's
  // declared schema lines ("" = inferred).
  StatusOr<coordinator::RunResult> run(const std::string& variant, bool words, coordinator::JobSpec spec,
                                       std::ostringstream& progress,
                                       const std::function<std::string(const std::string&)>& schema_for = nullptr) {
    std::vector<std::unique_ptr<testing::Process>> procs;
    for (const auto& pod : kPods) {
      const std::string csv = write_share(pod, variant, words);
      testing::PodProcess p = testing::start_csv_pod(dir_, id_, pod, csv, "general-modeller", "",
                                                     variant + "-" + pod + ".log", {},
                                                     schema_for ? schema_for(pod) : "");
      if (p.endpoint.empty()) return Status::internal("worker " + pod + " did not start: " + testing::read_file(p.log));
      testing::add_pod(spec, p);
      procs.push_back(std::move(p.process));
    }
    spec.output_dir = (dir_.path() / variant).string();
    coordinator::validate(spec, "test job");
    zmq::context_t ctx(1);
    coordinator::Coordinator c(ctx, spec, null_logger(), progress);
    return c.run();
  }

  coordinator::JobSpec base_spec() {
    auto spec = testing::digits_job_spec("categories-test", "", id_.modeller_key_file);
    spec.aggregation_order = "pod";  // same float sums, hence the same parameters, every run
    spec.rounds = 4;
    spec.eval_every = 0;
    return spec;
  }

  static nlohmann::json history(const coordinator::RunResult& r) {
    return nlohmann::json::parse(
        testing::read_file((std::filesystem::path(r.model_path).parent_path() / "history.json").string()));
  }

  testing::TempDir dir_;
  testing::TestIdentity id_{dir_.path(), "alice"};
};

TEST_F(CategoriesTest, PodMissingAClassCodesWordsLikeNumbers) {
  std::ostringstream p_numbers, p_listed, p_declared, p_unlisted;
  auto numbers = run("numbers", false, base_spec(), p_numbers);
  ASSERT_TRUE(numbers.ok()) << numbers.status().to_string() << "\n" << p_numbers.str();

  // The job lists the categories; the pods infer theirs and publish none.
  coordinator::JobSpec listed_spec = base_spec();
  listed_spec.datastructure.categories["label"] = word_labels();
  auto listed = run("listed", true, listed_spec, p_listed);
  ASSERT_TRUE(listed.ok()) << listed.status().to_string() << "\n" << p_listed.str();

  // The pods declare theirs (pod-a without d3); the coordinator takes the sorted union.
  auto declared = run("declared", true, base_spec(), p_declared, [](const std::string& pod) {
    std::vector<std::string> cats = word_labels();
    if (pod == "pod-a") cats.erase(cats.begin() + 3);
    return declared_schema(cats);
  });
  ASSERT_TRUE(declared.ok()) << declared.status().to_string() << "\n" << p_declared.str();

  std::cout << "[ compare  ] test accuracy: numeric labels " << numbers->test_accuracy << ", words listed by the job "
            << listed->test_accuracy << ", words declared by the pods " << declared->test_accuracy << std::endl;
  EXPECT_GT(numbers->test_accuracy, 0.5);  // 0.62 after 4 rounds without any "3" on pod-a; chance is 0.1
  EXPECT_EQ(listed->test_samples, numbers->test_samples);
  EXPECT_DOUBLE_EQ(listed->test_accuracy, numbers->test_accuracy);
  EXPECT_DOUBLE_EQ(declared->test_accuracy, numbers->test_accuracy);
  // Not only the same accuracy: the same model, bit for bit.
  auto want = coordinator::load_parameters(numbers->model_path);
  for (const auto* r : {&*listed, &*declared}) {
    auto got = coordinator::load_parameters(r->model_path);
    ASSERT_EQ(got.size(), want.size());
    for (const auto& [name, t] : want) EXPECT_TRUE(torch::equal(got.at(name), t)) << name << " in " << r->model_path;
  }

  // history.json records the codes and where they came from.
  const auto h_listed = history(*listed), h_declared = history(*declared);
  EXPECT_EQ(h_listed["datastructure"]["categories"]["label"]["values"], nlohmann::json(word_labels()));
  EXPECT_EQ(h_listed["datastructure"]["categories"]["label"]["from"], "job");
  EXPECT_EQ(h_declared["datastructure"]["categories"]["label"]["values"], nlohmann::json(word_labels()));
  EXPECT_EQ(h_declared["datastructure"]["categories"]["label"]["from"], "pods");
  EXPECT_FALSE(history(*numbers)["datastructure"]["categories"].contains("label"));
  EXPECT_NE(p_declared.str().find("categories of 'label': 10 (the union the pods declare), coded 0..9 on every pod"),
            std::string::npos)
      << p_declared.str();

  // Words on pods that publish no categories, and a job that lists none: refused
  // before round 1, naming the column, the pod and both fixes.
  auto unlisted = run("unlisted", true, base_spec(), p_unlisted);
  ASSERT_FALSE(unlisted.ok());
  EXPECT_EQ(unlisted.status().code(), StatusCode::kSchemaMismatch);
  EXPECT_NE(unlisted.status().message().find("column 'label' is categorical on pod pod-a, which infers its "
                                             "categories from its data and does not publish them"),
            std::string::npos)
      << unlisted.status().to_string();
  EXPECT_EQ(history(*numbers)["rounds"].size(), 4u);
}

// A pod whose data holds a class the job's list lacks refuses the job with a reason
// that names the column but not the value (the pod's categories are its data).
TEST_F(CategoriesTest, ValueOutsideTheJobsListIsRefusedByThePod) {
  coordinator::JobSpec spec = base_spec();
  std::vector<std::string> nine = word_labels();
  nine.pop_back();  // no d9
  spec.datastructure.categories["label"] = nine;
  spec.datastructure.num_classes = 9;
  spec.min_pods = 1;
  std::ostringstream progress;
  auto r = run("nine", true, spec, progress);
  ASSERT_FALSE(r.ok()) << progress.str();
  EXPECT_NE(r.status().message().find("hold a category that the job's list (datastructure.categories.label, 9 "
                                      "categories) does not have"),
            std::string::npos)
      << r.status().to_string() << "\n" << progress.str();
  EXPECT_EQ(r.status().message().find("d9"), std::string::npos) << r.status().message();
}

// Pods whose columns differ: the job stops before round 1 naming the pod and the
// columns (missing, extra, or the first one out of order).
TEST_F(CategoriesTest, PodsWithDifferentColumnsAreNamedWithTheColumns) {
  auto csv = [&](const std::string& name, const std::string& header) {
    std::string text = header + "\n";
    for (int i = 0; i < 40; ++i) text += std::to_string(i % 7) + "," + std::to_string(i % 5) + "," + std::to_string(i % 3) + "," + std::to_string(i % 2) + "\n";
    return dir_.write(name + ".csv", text);
  };
  auto run_pair = [&](const std::string& a_header, const std::string& b_header, const std::string& tag) {
    std::vector<std::unique_ptr<testing::Process>> procs;
    auto spec = base_spec();
    spec.pods.clear();
    spec.datastructure.num_classes = 2;
    for (const auto& [pod, header] : {std::pair{"pod-a", a_header}, std::pair{"pod-b", b_header}}) {
      testing::PodProcess p = testing::start_csv_pod(dir_, id_, pod, csv(tag + "-" + pod, header), "general-modeller",
                                                     "", tag + "-" + pod + ".log");
      EXPECT_FALSE(p.endpoint.empty()) << testing::read_file(p.log);
      testing::add_pod(spec, p);
      procs.push_back(std::move(p.process));
    }
    spec.output_dir = (dir_.path() / tag).string();
    coordinator::validate(spec, "test job");
    zmq::context_t ctx(1);
    std::ostringstream progress;
    coordinator::Coordinator c(ctx, spec, null_logger(), progress);
    auto r = c.run();
    EXPECT_FALSE(r.ok());
    return r.ok() ? std::string() : r.status().to_string();
  };
  const std::string missing = run_pair("x1,x2,x3,label", "x1,x3,x4,label", "missing");
  EXPECT_CONTAINS(missing, "pod pod-b has features that differ from pod pod-a's: pod-b lacks 'x2'; only pod-b has 'x4'");
  const std::string order = run_pair("x1,x2,x3,label", "x2,x1,x3,label", "order");
  EXPECT_CONTAINS(order, "the same columns in another order (column 1 is 'x1' on pod-a, 'x2' on pod-b)");
}

}  // namespace
}  // namespace fedpod
