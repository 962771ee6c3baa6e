// libFuzzer target: a pod.yaml (worker/config.h parse_pod_config, the body of
// load_pod_config), then its dataset settings applied as the pod applies them: a
// small CSV read with the parsed CsvOptions and declared schema (data/csv.h).
//
// The input is the YAML text. ConfigError is the expected outcome for a bad file;
// any other exception escaping (a yaml-cpp or std exception the parser let through),
// a crash or a sanitizer report is a finding.
#include <torch/torch.h>

#include <cstdint>
#include <string>

#include "config_fuzz.h"
#include "fedpod/common/config_util.h"
#include "fedpod/data/csv.h"
#include "fedpod/worker/config.h"

extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  at::set_num_threads(1);
  (void)fedpod::fuzz::config_base_dir();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace fedpod;
  const std::string yaml(reinterpret_cast<const char*>(data), size);
  worker::PodConfig config;
  try {
    config = worker::parse_pod_config(yaml, "pod.yaml", fuzz::config_base_dir());
  } catch (const ConfigError&) {
    return 0;
  }
  // The pod reads its dataset with these settings (worker.cpp), here a fixed text
  // in whatever delimiter the file chose.
  std::string csv = "a,b,label\n1,x,0\n2,y,1\n3,x,2\n";
  for (char& c : csv) {
    if (c == ',') c = config.csv.delimiter;
  }
  auto table = data::parse_csv(csv, config.csv, config.schema, config.dataset_path);
  (void)table.ok();
  return 0;
}
