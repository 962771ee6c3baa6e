// The built-in model zoo. Built-in models need only the General Modeller role.
//
//   logreg  multinomial logistic regression: one linear layer.
//   mlp     fully connected network; hyperparameters: hidden (list of widths,
//           default [64]), dropout (0.0), batch_norm (false: true puts a
//           BatchNorm1d after every hidden linear layer, before its ReLU).
//   cnn     small convolutional network for image-shaped inputs [C, H, W] such as
//           1x8x8; hyperparameters: channels (default [16, 32]), hidden (64),
//           batch_norm (false: true puts a BatchNorm2d after every convolution).
// Batch-norm running statistics travel and are averaged with the parameters.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "fedpod/model/model.h"

namespace fedpod::model {

// The names above, in that order.
const std::vector<std::string>& builtin_names();
bool is_builtin(const std::string& name);

// A new, not yet created, built-in model; nullptr for an unknown name.
std::unique_ptr<Model> make_builtin(const std::string& name);

}  // namespace fedpod::model
