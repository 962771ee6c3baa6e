// A plugin built against a future fedpod whose model ABI is 7.
#include <cstdlib>

namespace fedpod::model {
class Model;
}

extern "C" __attribute__((visibility("default"))) int fedpod_model_abi_version() { return 7; }
extern "C" __attribute__((visibility("default"))) fedpod::model::Model* fedpod_create_model() {
  std::abort();  // never called: the ABI check comes first
}
