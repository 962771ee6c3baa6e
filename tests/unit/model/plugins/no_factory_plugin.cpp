// A plugin that exports the ABI version but no fedpod_create_model.
extern "C" __attribute__((visibility("default"))) int fedpod_model_abi_version() { return 2; }  // FEDPOD_MODEL_ABI_VERSION
