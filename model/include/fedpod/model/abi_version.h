// Version of the binary interface between fedpod and native model plugins (the
// layout of Model and FlatParameters, and the factory in plugin.h). A plugin built
// against a different version is refused at load time. Its own header, free of
// libtorch, so that anything can name the version it was built for.
#pragma once

#define FEDPOD_MODEL_ABI_VERSION 3  // 2: Model::named_buffers; 3: Model::hyperparameters
