// A plugin whose factory throws (a constructor that fails).
#include "fedpod/model/abi_version.h"

#include <stdexcept>

namespace fedpod::model {
class Model;
}

extern "C" __attribute__((visibility("default"))) int fedpod_model_abi_version() { return FEDPOD_MODEL_ABI_VERSION; }
extern "C" __attribute__((visibility("default"))) fedpod::model::Model* fedpod_create_model() {
  throw std::runtime_error("license file /opt/model.lic not found");
}
