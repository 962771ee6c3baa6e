// Regression tests for hostile input a pod reads, each a crash libFuzzer found
// (tests/fuzz, docs/fuzzing.md). Each test feeds the saved input from
// tests/fuzz/regressions/ to the same code the pod runs and checks the clear error
// that replaced the crash.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <string>
#include <vector>

#include "../../fuzz/envelope_fuzz.h"
#include "fedpod/data/csv.h"
#include "fedpod/data/dataset.h"
#include "fedpod/protocol/codec.h"
#include "fedpod/worker/config.h"
#include "fedpod/protocol/wire_convert.h"
#include "testutil.h"

namespace fedpod::worker {
namespace {

std::string regression(const std::string& name) {
  return testing::source_dir() + "/tests/fuzz/regressions/" + name;
}

// envelope/start-job-input-shape-overflow.bin: a startJob whose datastructure has
// inputShape [3819052484026957824, 105587565199361]. make_splits multiplied the
// dimensions in int64 (signed overflow, undefined behaviour) before comparing the
// product with the number of features.
TEST(HostileInputTest, StartJobInputShapeThatOverflowsInt64IsRefused) {
  const std::string bytes =
      testing::read_file(regression("envelope/start-job-input-shape-overflow.bin"));
  auto parsed = protocol::Incoming::parse(
      fuzz::decode_frames(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()));
  ASSERT_TRUE(parsed.ok()) << parsed.status().to_string();
  auto body = (*parsed)->envelope().getBody();
  ASSERT_EQ(body.which(), wire::Envelope::Body::START_JOB);
  data::Datastructure ds = protocol::from_wire(body.getStartJob().getDatastructure());
  EXPECT_EQ(ds.input_shape, (std::vector<int64_t>{3819052484026957824, 105587565199361}));

  // The pod's table as the fuzz target has it: four features, a city, a label.
  auto table = data::parse_csv("a,b,c,d,city,label\n1,2,3,4,oslo,0\n5,6,7,8,lima,1\n", {},
                               std::nullopt, "pod.csv");
  ASSERT_TRUE(table.ok()) << table.status().to_string();
  auto splits = data::make_splits(*table, ds);
  ASSERT_FALSE(splits.ok());
  EXPECT_EQ(splits.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(splits.status().message(),
            "input_shape [3819052484026957824, 105587565199361] has more elements than an int64 "
            "can count, but "
            "there are 4 features");
}

// pod_config/complex-key.yaml: a pod.yaml whose last key is "? metrics_listen: ..."
// (a mapping used as a key). yaml-cpp's TypedBadConversion escaped load_pod_config,
// which promises ConfigError.
TEST(HostileInputTest, PodConfigKeyThatIsAMappingIsAConfigError) {
  const std::string path = regression("pod_config/complex-key.yaml");
  EXPECT_EQ(testing::config_error([&] { load_pod_config(path); }),
            path + ": a key must be a name, not a mapping (line 25)");
}

}  // namespace
}  // namespace fedpod::worker
