// What a job leaves behind: history.json (per round, per pod) and model.pt.
//
// Both files are written atomically (temp file, fsync, rename): a crash leaves the
// previous complete version, never a torn one. history.json is rewritten after
// every round, so a running job's progress can be followed.
//
// model.pt is a pickled dict {name: tensor} holding every parameter and buffer (batch-
// norm statistics included, each in the dtype the model keeps it in): a PyTorch
// state_dict. Load it in Python with `module.load_state_dict(torch.load("model.pt"))`
// (strict), or in C++ with `load_parameters` below.
#pragma once

#include <torch/types.h>

#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "fedpod/model/flat_parameters.h"

namespace fedpod::coordinator {

struct PodRound {
  std::string outcome;  // ok | timeout | silent | error | refused | unreachable | disconnected | stopped
  std::string error;
  int64_t num_samples = 0;
  double seconds = 0;
  std::map<std::string, double> metrics;
  std::string code = {};  // for a pod's error reply, its code (to_string(StatusCode)); not saved
};

struct EvalSummary {
  std::string split;
  int64_t num_samples = 0;
  double loss = 0;
  double accuracy = 0;
  std::map<std::string, PodRound> pods;  // per-pod loss/accuracy in metrics
};

struct RoundRecord {
  int round = 0;
  double seconds = 0;        // the whole round, evaluation included
  double train_seconds = 0;  // broadcast, local training, uploads and aggregation
  int pods_answered = 0;
  int pods_asked = 0;
  // Sample-weighted mean of the pods' train_loss; none when no pod reported one (a
  // differentially private job's pods report none).
  std::optional<double> train_loss;
  std::map<std::string, PodRound> pods;
  std::optional<EvalSummary> eval;
};

nlohmann::json to_json(const RoundRecord& r);
nlohmann::json to_json(const EvalSummary& e);

// Writes `content` to `path` atomically. Throws std::runtime_error on I/O failure.
void write_file_atomic(const std::string& path, const std::string& content);
// The same for a file made of `pieces` in order, written from where they lie (a
// checkpoint's tensors are not first copied into one buffer).
void write_file_atomic(const std::string& path, const std::vector<std::string_view>& pieces);

// Saves `flat` under the names, shapes and dtypes of `layout` as a pickled dict (atomic).
void save_parameters(const std::string& path, const torch::Tensor& flat,
                     const std::vector<model::ParamInfo>& layout);

// Loads a file written by save_parameters: name -> tensor.
std::map<std::string, torch::Tensor> load_parameters(const std::string& path);

}  // namespace fedpod::coordinator
