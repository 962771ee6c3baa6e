// A shared library with a factory but no fedpod_model_abi_version: not (recognisably)
// a fedpod plugin. The loader must refuse it before calling the factory.
#include <cstdlib>

namespace fedpod::model {
class Model;
}

extern "C" __attribute__((visibility("default"))) fedpod::model::Model* fedpod_create_model() {
  std::abort();  // never called
}
