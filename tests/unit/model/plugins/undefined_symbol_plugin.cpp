// A plugin that calls a fedpod function the host does not have (as one built against
// a different fedpod might): RTLD_NOW must refuse it at load time, not crash later.
#include "fedpod/model/abi_version.h"

namespace fedpod::model {
class Model;
Model* function_this_fedpod_does_not_have();
}  // namespace fedpod::model

extern "C" __attribute__((visibility("default"))) int fedpod_model_abi_version() { return FEDPOD_MODEL_ABI_VERSION; }
extern "C" __attribute__((visibility("default"))) fedpod::model::Model* fedpod_create_model() {
  return fedpod::model::function_this_fedpod_does_not_have();
}
