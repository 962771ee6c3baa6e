#include "fedpod/coordinator/checkpoint.h"

#include <torch/torch.h>

#include <cstring>
#include <fstream>
#include <iterator>
#include <sys/stat.h>

#include "fedpod/common/peer_text.h"
#include "fedpod/common/sha256.h"
#include "fedpod/coordinator/history.h"

namespace fedpod::coordinator {
namespace {

constexpr char kMagic[] = "FEDPOD-CHECKPOINT-1\n";
constexpr size_t kMagicBytes = sizeof(kMagic) - 1;
// A header is a few KB plus history.json; anything near this is not ours.
constexpr uint64_t kMaxHeaderBytes = uint64_t{1} << 30;

void append_u64(std::string& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

uint64_t read_u64(const char* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(static_cast<unsigned char>(p[i])) << (8 * i);
  return v;
}

std::string dtype_name(const torch::Tensor& t) {
  if (t.scalar_type() == torch::kFloat32) return "float32";
  if (t.scalar_type() == torch::kUInt8) return "uint8";
  throw std::invalid_argument(std::string("checkpoint: unsupported tensor dtype ") + std::string(c10::toString(t.scalar_type())));
}

}  // namespace

void write_checkpoint(const std::string& path, const Checkpoint& c) {
  struct Named {
    std::string name;
    torch::Tensor t;
  };
  std::vector<Named> tensors = {{"parameters", c.parameters.contiguous()}, {"rng_state", c.rng_state.contiguous()}};
  for (size_t i = 0; i < c.strategy_state.size(); ++i) {
    tensors.push_back({"strategy_state/" + std::to_string(i), c.strategy_state[i].contiguous()});
  }
  // The header holds the payload's sha256, so hash the tensors where they are.
  size_t payload_bytes = 0;
  Sha256 payload_sha;
  nlohmann::json list = nlohmann::json::array();
  for (const auto& n : tensors) {
    list.push_back({{"name", n.name}, {"dtype", dtype_name(n.t)}, {"numel", n.t.numel()}});
    payload_sha.update(static_cast<const char*>(n.t.data_ptr()), n.t.nbytes());
    payload_bytes += n.t.nbytes();
  }
  nlohmann::json header = {{"job_id", c.job_id},
                           {"round", c.round},
                           {"next_request", c.next_request},
                           {"strategy", c.strategy},
                           {"fingerprint", c.fingerprint},
                           {"tensors", list},
                           {"payload_bytes", payload_bytes},
                           {"payload_sha256", payload_sha.hex()},
                           {"history", c.history}};
  const std::string h = json_text(header);
  std::string head;
  head.reserve(kMagicBytes + 8 + h.size());
  head.append(kMagic, kMagicBytes);
  append_u64(head, h.size());
  head += h;
  // The tensors go to the file from where they lie: no second copy of the model.
  std::vector<std::string_view> pieces = {head};
  for (const auto& n : tensors) pieces.emplace_back(static_cast<const char*>(n.t.data_ptr()), n.t.nbytes());
  write_file_atomic(path, pieces);
}

StatusOr<Checkpoint> read_checkpoint(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return Status::not_found("no checkpoint at " + path);
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::bad_message("checkpoint " + path + ": cannot be opened");
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto bad = [&](const std::string& what) { return Status::bad_message("checkpoint " + path + ": " + what); };
  if (bytes.size() < kMagicBytes + 8 || bytes.compare(0, kMagicBytes, kMagic) != 0) {
    return bad("not a fedpod checkpoint (it does not start with the checkpoint magic)");
  }
  const uint64_t header_bytes = read_u64(bytes.data() + kMagicBytes);
  const uint64_t header_at = kMagicBytes + 8;
  if (header_bytes > kMaxHeaderBytes || header_bytes > bytes.size() - header_at) {
    return bad("truncated: its header says " + std::to_string(header_bytes) + " bytes, the file has " +
               std::to_string(bytes.size() - header_at) + " after the magic");
  }
  nlohmann::json header =
      nlohmann::json::parse(bytes.begin() + header_at, bytes.begin() + header_at + header_bytes, nullptr, false);
  if (header.is_discarded() || !header.is_object()) return bad("its header is not valid JSON");
  Checkpoint c;
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  try {
    c.job_id = header.at("job_id").get<std::string>();
    c.round = header.at("round").get<int>();
    c.next_request = header.at("next_request").get<uint64_t>();
    c.strategy = header.at("strategy").get<std::string>();
    c.fingerprint = header.at("fingerprint");
    c.history = header.at("history");
    const uint64_t payload_bytes = header.at("payload_bytes").get<uint64_t>();
    const std::string payload_sha = header.at("payload_sha256").get<std::string>();
    const uint64_t payload_at = header_at + header_bytes;
    if (bytes.size() - payload_at != payload_bytes) {
      return bad("truncated or extended: the header says " + std::to_string(payload_bytes) +
                 " bytes of tensors, the file has " + std::to_string(bytes.size() - payload_at));
    }
    std::string_view payload(bytes.data() + payload_at, payload_bytes);
    if (sha256_hex(payload) != payload_sha) return bad("its tensors do not match their sha256: the file is damaged");
    uint64_t at = 0;
    for (const auto& t : header.at("tensors")) {
      const std::string name = t.at("name").get<std::string>();
      const std::string dtype = t.at("dtype").get<std::string>();
      const int64_t numel = t.at("numel").get<int64_t>();
      const auto type = dtype == "float32" ? torch::kFloat32 : dtype == "uint8" ? torch::kUInt8 : torch::kFloat64;
      if (type == torch::kFloat64 || numel < 0) return bad("tensor '" + name + "' has dtype " + dtype + " or numel " + std::to_string(numel));
      const uint64_t n = static_cast<uint64_t>(numel) * (type == torch::kFloat32 ? 4 : 1);
      if (n > payload_bytes - at) return bad("tensor '" + name + "' runs past the end of the payload");
      torch::Tensor x = torch::empty({numel}, torch::TensorOptions().dtype(type));
      std::memcpy(x.data_ptr(), payload.data() + at, n);
      at += n;
      tensors.emplace_back(name, std::move(x));
    }
    if (at != payload_bytes) return bad("the payload has " + std::to_string(payload_bytes - at) + " bytes no tensor claims");
  } catch (const nlohmann::json::exception& e) {
    return bad(std::string("its header is incomplete: ") + e.what());
  }
  for (auto& [name, t] : tensors) {
    if (name == "parameters") c.parameters = std::move(t);
    else if (name == "rng_state") c.rng_state = std::move(t);
    else if (name.rfind("strategy_state/", 0) == 0) c.strategy_state.push_back(std::move(t));
    else return bad("unknown tensor '" + name + "'");
  }
  if (!c.parameters.defined() || c.parameters.scalar_type() != torch::kFloat32) return bad("it has no float32 parameters");
  if (!c.rng_state.defined() || c.rng_state.scalar_type() != torch::kUInt8) return bad("it has no generator state");
  if (c.round < 0) return bad("round " + std::to_string(c.round) + " is negative");
  return c;
}

std::string fingerprint_difference(const nlohmann::json& saved, const nlohmann::json& now) {
  // The first difference, by the JSON patch from `saved` to `now`, named by its path.
  const nlohmann::json patch = nlohmann::json::diff(saved, now);
  if (patch.empty()) return "";
  const auto& op = patch.front();
  const std::string where = op.value("path", std::string("/"));
  std::string key = where.substr(1);
  for (auto& ch : key) {
    if (ch == '/') ch = '.';
  }
  const nlohmann::json::json_pointer ptr(where);
  const std::string before = saved.contains(ptr) ? saved.at(ptr).dump() : std::string("absent");
  const std::string after = now.contains(ptr) ? now.at(ptr).dump() : std::string("absent");
  return (key.empty() ? std::string("the job") : key) + " is " + before + " in the checkpoint, " + after + " now";
}

}  // namespace fedpod::coordinator
