// The README's demo, as a user runs it: `fedpod demo` with three worker processes,
// then the saved model loaded from Python with torch.load.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <nlohmann/json.hpp>

#include "testutil.h"

namespace fedpod {
namespace {

using namespace std::chrono_literals;

TEST(DemoTest, FederatedAccuracyReachesTargetAndModelLoadsInPython) {
  testing::TempDir dir;
  const std::string out = (dir.path() / "demo").string();
  const std::string log = (dir.path() / "demo.log").string();
  testing::Process demo({testing::fedpod_bin(), "demo", "--out", out}, log);
  const int status = demo.wait(300s);
  const std::string output = testing::read_file(log);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << output;
  EXPECT_NE(output.find("round 10/10  pods 3/3"), std::string::npos) << output;
  EXPECT_NE(output.find("federated   test accuracy"), std::string::npos) << output;
  EXPECT_NE(output.find("centralized test accuracy"), std::string::npos) << output;

  auto summary = nlohmann::json::parse(testing::read_file(out + "/demo.json"));
  EXPECT_GE(summary["federated_test_accuracy"].get<double>(), 0.90) << summary.dump();
  EXPECT_GE(summary["centralized_test_accuracy"].get<double>(), 0.90) << summary.dump();
  EXPECT_EQ(summary["test_samples"], 136 + 112 + 110);
  EXPECT_EQ(summary["rounds"], 10);

  auto history = nlohmann::json::parse(testing::read_file(out + "/history.json"));
  EXPECT_EQ(history["status"], "completed");
  EXPECT_EQ(history["rounds"].size(), 10u);

  // model.pt is a state_dict-style pickle: Python's torch.load reads it as is.
  const std::string py_log = (dir.path() / "python.log").string();
  testing::Process py({"/usr/bin/python3", "-c",
                       "import sys, torch\n"
                       "d = torch.load(sys.argv[1])\n"
                       "assert sorted(d) == ['0.bias', '0.weight', '2.bias', '2.weight'], sorted(d)\n"
                       "assert tuple(d['0.weight'].shape) == (64, 64)\n"
                       "assert tuple(d['2.weight'].shape) == (10, 64)\n"
                       "m = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))\n"
                       "m.load_state_dict(d)\n"
                       "print('loaded', sum(p.numel() for p in m.parameters()))\n",
                       out + "/model.pt"},
                      py_log);
  const int py_status = py.wait(120s);
  const std::string py_out = testing::read_file(py_log);
  ASSERT_TRUE(WIFEXITED(py_status) && WEXITSTATUS(py_status) == 0) << py_out;
  EXPECT_NE(py_out.find("loaded 4810"), std::string::npos) << py_out;
}

}  // namespace
}  // namespace fedpod
