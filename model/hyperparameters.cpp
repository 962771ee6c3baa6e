#include "fedpod/model/hyperparameters.h"

#include "fedpod/common/names.h"

#include <algorithm>

namespace fedpod::model {

const char* to_string(HyperparameterType t) {
  switch (t) {
    case HyperparameterType::kNumber: return "number";
    case HyperparameterType::kInteger: return "integer";
    case HyperparameterType::kString: return "string";
    case HyperparameterType::kBoolean: return "boolean";
    case HyperparameterType::kIntegerList: return "list of integers";
  }
  return "?";
}


Status check_hyperparameters(const Hyperparameters& hp, const HyperparameterSpec& declared,
                             const std::string& model) {
  std::vector<std::string> names;
  for (const auto& d : declared) names.push_back(d.name);
  std::sort(names.begin(), names.end());
  names.erase(std::unique(names.begin(), names.end()), names.end());
  std::string accepted;
  for (const auto& n : names) accepted += (accepted.empty() ? "" : ", ") + n;

  std::vector<std::string> problems;
  for (const auto& item : hp.json().items()) {
    const std::string key = item.key();  // a plain variable: lambdas cannot capture bindings in C++17
    auto it = std::find_if(declared.begin(), declared.end(), [&](const auto& d) { return d.name == key; });
    if (it == declared.end()) {
      std::string p = "unknown hyperparameter '" + key + "'";
      const std::string best = nearest_name(key, names, 2);  // suggest only close names: at most two edits
      if (!best.empty()) p += " (did you mean '" + best + "'?)";
      problems.push_back(p);
      continue;
    }
    try {
      switch (it->type) {
        case HyperparameterType::kNumber: hp.number(key, 0); break;
        case HyperparameterType::kInteger: hp.integer(key, 0); break;
        case HyperparameterType::kBoolean: hp.boolean(key, false); break;
        case HyperparameterType::kIntegerList: hp.integers(key, {}); break;
        case HyperparameterType::kString: {
          const std::string v = hp.string(key, "");
          if (!it->choices.empty() && std::find(it->choices.begin(), it->choices.end(), v) == it->choices.end()) {
            std::string choices;
            for (const auto& c : it->choices) choices += (choices.empty() ? "" : ", ") + c;
            problems.push_back("hyperparameter '" + key + "' must be one of " + choices + ", got \"" + v + "\"");
          }
          break;
        }
      }
    } catch (const ConfigError& e) {
      problems.push_back(e.what());
    }
  }
  if (problems.empty()) return Status();
  std::string msg = "model " + model + ": ";
  for (size_t i = 0; i < problems.size(); ++i) msg += (i ? "; " : "") + problems[i];
  msg += "; accepted: " + (accepted.empty() ? std::string("none") : accepted);
  return Status::invalid(msg);
}

}  // namespace fedpod::model
