// Declared hyperparameters: what a model accepts, so that a typo or a wrong type in
// a job's model.hyperparameters stops the job before any pod is contacted instead of
// being ignored (`optimiser: adam` silently training with SGD).
//
//   HyperparameterSpec spec = common_hyperparameters();   // optimizer, lr, ...
//   spec.push_back({"hidden", HyperparameterType::kIntegerList, "hidden layer widths"});
//   Status st = check_hyperparameters(hp, spec, "mlp");
//   // "model mlp: unknown hyperparameter 'optimiser' (did you mean 'optimizer'?);
//   //  accepted: batch_size, hidden, lr, momentum, optimizer, weight_decay"
//
// Models declare theirs through Model::hyperparameters() (model.h): the built-in
// models and TorchScript models always do; a C++ plugin does by overriding it.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "fedpod/common/config_util.h"
#include "fedpod/common/status.h"

namespace fedpod::model {

enum class HyperparameterType {
  kNumber,       // a JSON number (integers too): lr: 0.1
  kInteger,      // an integer: hidden: 64
  kString,       // a string, optionally one of `choices`: optimizer: adam
  kBoolean,      // true / false: batch_norm: true
  kIntegerList,  // a list of integers: hidden: [64, 32]
};
const char* to_string(HyperparameterType t);

struct HyperparameterInfo {
  std::string name;
  HyperparameterType type = HyperparameterType::kNumber;
  std::string help;                  // one line, for errors and docs
  std::vector<std::string> choices;  // kString: the accepted values (empty: any)
};
using HyperparameterSpec = std::vector<HyperparameterInfo>;

// What every model that keeps Model::configure_optimizers accepts, and what the pod's
// trainer reads: optimizer (sgd | adam | adamw), lr, momentum, weight_decay,
// batch_size. Inline, so that a plugin calling it needs no symbol from the host.
inline const HyperparameterSpec& common_hyperparameters() {
  static const HyperparameterSpec spec = {
      {"optimizer", HyperparameterType::kString, "local optimizer (default sgd)", {"sgd", "adam", "adamw"}},
      {"lr", HyperparameterType::kNumber, "learning rate (default 0.01 for sgd, 0.001 for adam and adamw)", {}},
      {"momentum", HyperparameterType::kNumber, "sgd momentum (default 0)", {}},
      {"weight_decay", HyperparameterType::kNumber, "L2 weight decay (default 0)", {}},
      {"batch_size", HyperparameterType::kInteger, "local batch size when the job sets none (default 32)", {}},
  };
  return spec;
}

// Checks every key of `hp` against `declared`: an unknown key (with the nearest
// declared name as a suggestion), a value of the wrong type, or a string outside its
// choices. All problems are reported at once, as kInvalidArgument, the message
// starting "model <model>: ".
Status check_hyperparameters(const Hyperparameters& hp, const HyperparameterSpec& declared,
                             const std::string& model);

}  // namespace fedpod::model
