// A plugin that exports the ABI version but no fedpod_create_model.
#include "fedpod/model/abi_version.h"

extern "C" __attribute__((visibility("default"))) int fedpod_model_abi_version() { return FEDPOD_MODEL_ABI_VERSION; }
