// What envelope_fuzz.cpp and make_envelope_seeds.cpp share: how a fuzz input is cut
// into ZeroMQ frames, and the fixed model and pod table the harness checks messages
// against (the seeds must match them, or every seed stops at the first check).
//
// Input format: a sequence of frames, each a 2-byte little-endian length followed by
// that many bytes. A last frame whose length runs past the end of the input takes the
// bytes that remain; a lone trailing byte is ignored. Frame 0 is the envelope, as
// protocol::Incoming::parse receives it (the ROUTER routing id already removed).
// Two bytes bound a frame at 65535 bytes: far above any real envelope, and the
// harness's tensors are a few dozen bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>
#include <zmq.hpp>

#include "fedpod/data/schema.h"
#include "fedpod/protocol/codec.h"

namespace fedpod::fuzz {

inline std::vector<zmq::message_t> decode_frames(const uint8_t* data, size_t size) {
  std::vector<zmq::message_t> frames;
  size_t pos = 0;
  while (size - pos >= 2) {
    size_t len = static_cast<size_t>(data[pos]) | static_cast<size_t>(data[pos + 1]) << 8;
    pos += 2;
    if (len > size - pos) len = size - pos;
    // A copy, as ZeroMQ hands a receiver its own buffer (small frames land at any
    // alignment inside the zmq_msg_t, which Incoming::parse must cope with).
    frames.emplace_back(data + pos, len);
    pos += len;
  }
  return frames;
}

inline std::string encode_frames(std::vector<zmq::message_t>& frames) {
  std::string out;
  for (auto& f : frames) {
    if (f.size() > 0xffff)
      throw std::length_error("frame of " + std::to_string(f.size()) + " bytes");
    out.push_back(static_cast<char>(f.size() & 0xff));
    out.push_back(static_cast<char>(f.size() >> 8));
    out.append(static_cast<const char*>(f.data()), f.size());
  }
  return out;
}

// The job's model as train, evaluate and trainResult messages must describe it.
inline std::vector<protocol::TensorSpec> model_specs() {
  return {{"linear.weight", {3, 4}}, {"linear.bias", {3}}};
}

// The pod's table: four numeric features, a categorical column and a label in
// 0..2; startJob's datastructure is resolved and split against it as a pod does.
inline data::Schema pod_schema() {
  data::Schema s;
  for (const char* name : {"a", "b", "c", "d"})
    s.columns.push_back({name, data::ColumnType::kNumeric, {}});
  s.columns.push_back({"city", data::ColumnType::kCategorical, {"oslo", "lima"}});
  s.columns.push_back({"label", data::ColumnType::kNumeric, {}});
  s.num_rows = 12;
  return s;
}

// The coordinator's side: the job's datastructure a helloReply's schema is checked against.
inline data::Datastructure job_datastructure() {
  data::Datastructure ds;
  ds.target = "label";
  ds.ignore = {"city"};
  ds.num_classes = 3;
  ds.input_shape = {2, 2};
  ds.split = {0.25, 0.25, 7};
  return ds;
}

}  // namespace fedpod::fuzz
