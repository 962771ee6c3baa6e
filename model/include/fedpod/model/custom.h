// Custom models by format: one entry point over load_torchscript and load_plugin,
// used by the coordinator (for the artifact it downloaded from the hub) and by
// pods (for the artifact they received in startJob).
#pragma once

#include <memory>
#include <string>

#include "fedpod/common/status.h"
#include "fedpod/model/model.h"

namespace fedpod::model {

// "torchscript" (a .pt archive) or "plugin" (a .so): the hub's format names.
bool is_custom_format(const std::string& format);

// The file extension an artifact of `format` is stored under (".pt", ".so").
std::string artifact_extension(const std::string& format);

// Loads the artifact at `path` with the loader for `format`. Returns
// kInvalidArgument for an unknown format, else what the loader returns. Loading
// runs the artifact's code: callers decide first whether they may.
StatusOr<std::unique_ptr<Model>> load_custom(const std::string& path, const std::string& format);

}  // namespace fedpod::model
