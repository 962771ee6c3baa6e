#include "fedpod/model/custom.h"

#include "fedpod/model/plugin.h"
#include "fedpod/model/torchscript.h"

namespace fedpod::model {

bool is_custom_format(const std::string& format) {
  return format == "torchscript" || format == "plugin";
}

std::string artifact_extension(const std::string& format) {
  return format == "plugin" ? ".so" : ".pt";
}

StatusOr<std::unique_ptr<Model>> load_custom(const std::string& path, const std::string& format) {
  if (format == "torchscript") return load_torchscript(path);
  if (format == "plugin") return load_plugin(path);
  return Status::invalid("unknown model format '" + format + "' (torchscript, plugin)");
}

}  // namespace fedpod::model
