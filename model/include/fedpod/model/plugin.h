// Native model plugins: a Model written in C++, compiled into a shared library
// apart from fedpod, and loaded at run time with `load_plugin`.
//
// Writing a plugin. Derive from Model (or ModuleModel), then register the class
// once, at namespace scope, in one source file of the plugin:
//
//   #include "fedpod/model/plugin.h"
//
//   class TinyNet : public fedpod::model::ModuleModel {
//    protected:
//     void build(const std::vector<int64_t>& in, int64_t classes,
//                const fedpod::Hyperparameters& hp) override {
//       auto fc = torch::nn::Linear(in[0], classes);
//       module_ = fc.ptr();
//       forward_ = [fc](const torch::Tensor& x) mutable { return fc->forward(x); };
//     }
//   };
//
//   FEDPOD_REGISTER_MODEL(TinyNet)
//
// Declare the hyperparameters build() reads by overriding Model::hyperparameters()
// (common_hyperparameters() plus your own, hyperparameters.h): a job with a key
// outside them, or a value of the wrong type, is then refused before it starts.
//
// and build it with cmake/FedpodModel.cmake:
//
//   find_package(Torch REQUIRED)
//   include(/path/to/fedpod/cmake/FedpodModel.cmake)
//   fedpod_add_model(tiny_net tiny_net.cpp)        # -> tiny_net.so
//
// The contract, exactly. A plugin is a shared library that
//   - exports `extern "C" int fedpod_model_abi_version()`, returning the
//     FEDPOD_MODEL_ABI_VERSION it was compiled against (model.h); a plugin whose
//     version differs from the host's is refused, since the layout of Model and
//     FlatParameters may differ;
//   - exports `extern "C" fedpod::model::Model* fedpod_create_model()`, returning a
//     new, not yet created model (create_model has not run) that the caller owns
//     and deletes. It may throw; the loader reports the exception's message.
// FEDPOD_REGISTER_MODEL defines both; write them by hand only for a good reason.
// The class needs a public default constructor and must not define its own
// operator delete (the host deletes the model through Model's virtual destructor).
//
// Symbols. A plugin does not link fedpod's libraries. Calls into fedpod (the
// non-virtual Model::create_model, the default training_step, Model's vtable and
// type info, FlatParameters, Hyperparameters' accessors) stay undefined in the
// plugin and are bound, when it is loaded, to the copies in the host program.
// The host executable must therefore export its symbols: CMake's ENABLE_EXPORTS
// (the linker's --export-dynamic), which the `fedpod` executable sets. A host
// that does not gets an "undefined symbol" load error. libtorch, libstdc++ and
// the other shared libraries are linked by both and loaded once. Both sides must
// be built with the same compiler ABI (_GLIBCXX_USE_CXX11_ABI, as libtorch sets
// it) and the same libtorch version; the ABI version above cannot check that.
//
// Lifetime. Plugins are never unloaded: the handle stays open until the process
// exits. A model's vtable and code live in the plugin's library, and so may
// tensors' deleters, autograd nodes and optimizer state that outlive the model;
// unloading would leave them pointing at unmapped memory. Loading the same path
// again is cheap (the dynamic loader shares the mapping) and returns a new,
// independent model from the same factory. A plugin that fails to load is not
// unloaded either, since its static constructors have run.
//
// Threading: load_plugin may be called from several threads at once.
#pragma once

#include <memory>
#include <string>

#include "fedpod/common/status.h"
#include "fedpod/model/model.h"

// Names of the two symbols the loader looks up.
#define FEDPOD_MODEL_ABI_SYMBOL "fedpod_model_abi_version"
#define FEDPOD_MODEL_FACTORY_SYMBOL "fedpod_create_model"

// Defines the plugin's entry points for the Model subclass `cls`. Use it once per
// plugin, at global or namespace scope (the functions are extern "C", so the
// namespace does not change their names). The visibility attribute keeps them
// exported when the plugin is compiled with -fvisibility=hidden.
#define FEDPOD_REGISTER_MODEL(cls)                                                   \
  extern "C" __attribute__((visibility("default"))) int fedpod_model_abi_version() { \
    return FEDPOD_MODEL_ABI_VERSION;                                                 \
  }                                                                                  \
  extern "C" __attribute__((visibility("default"))) ::fedpod::model::Model*          \
  fedpod_create_model() {                                                            \
    return new cls();                                                                \
  }

namespace fedpod::model {

// The signatures of the two entry points.
using PluginAbiVersionFn = int (*)();
using PluginFactoryFn = Model* (*)();

// Loads the plugin library at `path` (dlopen with RTLD_NOW | RTLD_LOCAL, so every
// undefined symbol is resolved now and the plugin's own symbols stay private to
// it) and returns a new model from its factory; call create_model on it next.
// A path without a directory is taken relative to the working directory, never
// searched for on the library path.
//
// Returns: the model, or
//   kNotFound            no file at `path`;
//   kInvalidArgument     not a loadable shared library (the loader's reason is
//                        included: not ELF, wrong architecture, an undefined
//                        symbol), or an entry point is missing;
//   kVersionMismatch     built for another FEDPOD_MODEL_ABI_VERSION;
//   kInternal            the factory threw or returned null.
// Every message names the path.
StatusOr<std::unique_ptr<Model>> load_plugin(const std::string& path);

}  // namespace fedpod::model
