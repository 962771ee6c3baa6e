// A plugin whose factory throws (a constructor that fails).
#include <stdexcept>

namespace fedpod::model {
class Model;
}

extern "C" __attribute__((visibility("default"))) int fedpod_model_abi_version() { return 2; }  // FEDPOD_MODEL_ABI_VERSION
extern "C" __attribute__((visibility("default"))) fedpod::model::Model* fedpod_create_model() {
  throw std::runtime_error("license file /opt/model.lic not found");
}
