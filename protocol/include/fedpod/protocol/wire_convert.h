// Conversions between wire types (fedpod::wire) and domain types (fedpod::data,
// fedpod::model), shared by the worker and the coordinator.
#pragma once

#include <vector>

#include "fedpod/data/schema.h"
#include "fedpod/model/flat_parameters.h"
#include "fedpod/protocol/codec.h"
#include "fedpod/protocol/fedpod.capnp.h"

namespace fedpod::protocol {

void to_wire(const data::Schema& schema, wire::Schema::Builder out);
data::Schema from_wire(wire::Schema::Reader in);

void to_wire(const data::Datastructure& ds, wire::Datastructure::Builder out);
data::Datastructure from_wire(wire::Datastructure::Reader in);

// The tensors a message carrying a model with this layout must hold.
std::vector<TensorSpec> tensor_specs(const std::vector<model::ParamInfo>& layout);

// Views of `flat` (the whole parameter buffer) shaped as `layout`, for sending.
std::vector<NamedTensor> parameter_views(const torch::Tensor& flat,
                                                   const std::vector<model::ParamInfo>& layout);

}  // namespace fedpod::protocol
