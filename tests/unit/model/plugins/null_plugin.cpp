// A plugin whose factory returns null.
#include "fedpod/model/abi_version.h"

namespace fedpod::model {
class Model;
}

extern "C" __attribute__((visibility("default"))) int fedpod_model_abi_version() { return FEDPOD_MODEL_ABI_VERSION; }
extern "C" __attribute__((visibility("default"))) fedpod::model::Model* fedpod_create_model() {
  return nullptr;
}
