// libFuzzer target: a job.yaml (coordinator/job_spec.h parse_job_spec, the body of
// load_job_spec), then what the coordinator does with the spec before it dials a pod:
// resolve the datastructure against a pod's schema (the digits pods': px_0_0 ..
// px_7_7 and label) and the model's input shape from it.
//
// The input is the YAML text. ConfigError is the expected outcome for a bad file;
// any other exception escaping (a yaml-cpp or std exception the parser let through),
// a crash or a sanitizer report is a finding.
#include <cstdint>
#include <string>

#include "config_fuzz.h"
#include "fedpod/common/config_util.h"
#include "fedpod/coordinator/job_spec.h"
#include "fedpod/data/schema.h"

namespace {

fedpod::data::Schema digits_schema() {
  fedpod::data::Schema s;
  for (int r = 0; r < 8; ++r) {
    for (int c = 0; c < 8; ++c) {
      s.columns.push_back({"px_" + std::to_string(r) + "_" + std::to_string(c),
                           fedpod::data::ColumnType::kNumeric,
                           {}});
    }
  }
  s.columns.push_back({"label", fedpod::data::ColumnType::kNumeric, {}});
  return s;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  (void)fedpod::fuzz::config_base_dir();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace fedpod;
  static const data::Schema schema = digits_schema();
  const std::string yaml(reinterpret_cast<const char*>(data), size);
  coordinator::JobSpec spec;
  try {
    spec = coordinator::parse_job_spec(yaml, "job.yaml", fuzz::config_base_dir());
  } catch (const ConfigError&) {
    return 0;
  }
  // coordinator.cpp hello_and_check() and create_model().
  auto features = data::resolve_features(schema, spec.datastructure);
  if (features.ok()) {
    (void)data::resolve_input_shape(spec.datastructure, static_cast<int64_t>(features->size()));
  }
  (void)spec.model.hyperparameters.dump();
  return 0;
}
