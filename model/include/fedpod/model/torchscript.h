// Custom models written in Python and scripted to TorchScript.
//
// The contract (a complete example is examples/torchscript_model/digits_net.py):
//
//   class DigitsNet(torch.nn.Module):
//       def __init__(self):                      # layers fixed at scripting time
//           super().__init__()
//           self.body = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(),
//                                           torch.nn.Linear(64, 10))
//       def forward(self, x):                    # x: [batch, *input_shape] float32
//           return self.body(x)                  # logits: [batch, num_classes]
//       @torch.jit.export
//       def training_step(self, x, y):           # y: [batch] int64 class labels
//           logits = self.forward(x)
//           return F.cross_entropy(logits, y), logits   # or just the loss
//       @torch.jit.export
//       def validation_step(self, x, y): ...     # same signature and return
//       @torch.jit.export
//       def test_step(self, x, y): ...
//       @torch.jit.export                        # optional
//       def configure_optimizers(self) -> Tuple[str, Dict[str, float]]:
//           return "adam", {"lr": 0.001}
//
//   torch.jit.save(torch.jit.script(DigitsNet()), "digits_net.pt")
//
// Rules:
// - forward, training_step, validation_step and test_step are required; a missing
//   one is named when the archive is loaded.
// - A step returns the loss (a scalar tensor) or a tuple (loss, logits). With only
//   the loss, accuracy is computed from an extra forward pass under no_grad.
// - configure_optimizers returns an optimizer name (sgd, adam, adamw) and its
//   settings (lr, momentum, weight_decay); the job's hyperparameters override them.
//   Without it the job's hyperparameters choose, as for built-in models.
// - Every parameter must be float32; parameters are what pods train and the
//   coordinator averages. Buffers (e.g. batch-norm statistics) stay local to a pod.
// - create_model checks the architecture against the job: forward on a zero batch of
//   the job's input shape must return [batch, num_classes].
#pragma once

#include <memory>
#include <string>

#include "fedpod/common/status.h"
#include "fedpod/model/model.h"

namespace fedpod::model {

// Loads a TorchScript archive saved with torch.jit.save. Returns kInvalidArgument
// naming the path for an unreadable or non-TorchScript file, or the missing methods.
// The hub never calls this: loading runs the archive's code.
StatusOr<std::unique_ptr<Model>> load_torchscript(const std::string& path);

}  // namespace fedpod::model
