#include "fedpod/model/plugin.h"

#include <dlfcn.h>

#include <exception>
#include <filesystem>
#include <system_error>
#include <tuple>
#include <typeinfo>

#include "fedpod/model/flat_parameters.h"

namespace fedpod::model {
namespace {

// Plugins leave these (and everything defined next to them) undefined and bind
// them to the host at load time. Referencing them here means a program that links
// fedpod_model statically and calls load_plugin also links the objects that define
// them, so that its exported symbol table (ENABLE_EXPORTS) holds them even when the
// program itself never calls them.
[[gnu::used]] const auto kHostSymbolsForPlugins = std::make_tuple(
    &typeid(Model), &typeid(ModuleModel), &Model::create_model, &FlatParameters::adopt,
    &Hyperparameters::number, &Hyperparameters::integer, &Hyperparameters::string,
    &Hyperparameters::boolean, &Hyperparameters::integers);

std::string dl_error() {
  const char* e = dlerror();
  return e ? e : "unknown error";
}

// Looks up `name` in `handle`; nullptr when absent.
void* find_symbol(void* handle, const char* name) {
  dlerror();  // clear a stale error
  void* sym = dlsym(handle, name);
  return dlerror() == nullptr ? sym : nullptr;
}

}  // namespace

StatusOr<std::unique_ptr<Model>> load_plugin(const std::string& path) {
  namespace fs = std::filesystem;
  const std::string where = "model plugin '" + path + "'";
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (!fs::exists(st)) return Status::not_found(where + ": no such file");
  if (fs::is_directory(st))
    return Status::invalid(where + ": is a directory, not a shared library");
  // dlopen searches the library path for a name without a slash; we mean the file.
  const std::string file = fs::absolute(path, ec).string();

  // Never dlclose: see plugin.h, "Lifetime". dlopen of an already loaded path
  // returns the same library with its reference count raised.
  void* handle = dlopen(file.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    std::string reason = dl_error();
    std::string hint;
    if (reason.find("undefined symbol") != std::string::npos) {
      hint =
          " (a symbol the plugin uses is defined neither in it, nor in its libraries, nor in the "
          "host program: build the plugin against this fedpod, and build the host with "
          "ENABLE_EXPORTS so that it exports fedpod's symbols)";
    }
    return Status::invalid(where + ": cannot be loaded as a shared library: " + reason + hint);
  }

  auto version = reinterpret_cast<PluginAbiVersionFn>(find_symbol(handle, FEDPOD_MODEL_ABI_SYMBOL));
  if (version == nullptr) {
    return Status::invalid(where + ": has no symbol " FEDPOD_MODEL_ABI_SYMBOL
                                   "; is it a fedpod model plugin? Register the model class with "
                                   "FEDPOD_REGISTER_MODEL(YourModel) from fedpod/model/plugin.h");
  }
  const int plugin_abi = version();
  if (plugin_abi != FEDPOD_MODEL_ABI_VERSION) {
    return Status(StatusCode::kVersionMismatch,
                  where + ": built for model ABI " + std::to_string(plugin_abi) +
                      ", this fedpod speaks " + std::to_string(FEDPOD_MODEL_ABI_VERSION) +
                      "; rebuild the plugin against this fedpod");
  }
  auto factory =
      reinterpret_cast<PluginFactoryFn>(find_symbol(handle, FEDPOD_MODEL_FACTORY_SYMBOL));
  if (factory == nullptr) {
    return Status::invalid(where +
                           ": has no symbol " FEDPOD_MODEL_FACTORY_SYMBOL
                           "; register the model class with FEDPOD_REGISTER_MODEL(YourModel) from "
                           "fedpod/model/plugin.h");
  }

  Model* model = nullptr;
  try {
    model = factory();
  } catch (const std::exception& e) {
    return Status::internal(where + ": " FEDPOD_MODEL_FACTORY_SYMBOL "() threw: " + e.what());
  } catch (...) {
    return Status::internal(where + ": " FEDPOD_MODEL_FACTORY_SYMBOL
                                    "() threw a non-standard exception");
  }
  if (model == nullptr)
    return Status::internal(where + ": " FEDPOD_MODEL_FACTORY_SYMBOL "() returned null");
  return std::unique_ptr<Model>(model);
}

}  // namespace fedpod::model
