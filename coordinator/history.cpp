#include "fedpod/coordinator/history.h"

#include <fcntl.h>
#include <torch/serialize.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>
#include <stdexcept>

namespace fedpod::coordinator {

namespace {
nlohmann::json pods_json(const std::map<std::string, PodRound>& pods) {
  nlohmann::json out = nlohmann::json::object();
  for (const auto& [name, p] : pods) {
    nlohmann::json j = {{"outcome", p.outcome}, {"num_samples", p.num_samples}, {"seconds", p.seconds}};
    if (!p.error.empty()) j["error"] = p.error;
    for (const auto& [k, v] : p.metrics) j[k] = v;
    out[name] = j;
  }
  return out;
}
}  // namespace

nlohmann::json to_json(const EvalSummary& e) {
  return {{"split", e.split}, {"num_samples", e.num_samples}, {"loss", e.loss},
          {"accuracy", e.accuracy}, {"pods", pods_json(e.pods)}};
}

nlohmann::json to_json(const RoundRecord& r) {
  nlohmann::json j = {{"round", r.round},           {"seconds", r.seconds}, {"train_seconds", r.train_seconds},
                      {"pods_answered", r.pods_answered}, {"pods_asked", r.pods_asked},
                      {"pods", pods_json(r.pods)}};
  if (r.train_loss) j["train_loss"] = *r.train_loss;
  j["eval"] = r.eval ? to_json(*r.eval) : nlohmann::json(nullptr);
  return j;
}

void write_file_atomic(const std::string& path, const std::string& content) {
  write_file_atomic(path, std::vector<std::string_view>{content});
}

void write_file_atomic(const std::string& path, const std::vector<std::string_view>& pieces) {
  const std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw std::runtime_error("cannot write " + tmp + ": " + std::strerror(errno));
  for (std::string_view rest : pieces) {
    while (!rest.empty()) {
      // One piece at a time: a write may stop short of what it was given.
      ssize_t n = ::write(fd, rest.data(), rest.size());
      if (n < 0) {
        if (errno == EINTR) continue;
        int err = errno;
        ::close(fd);
        throw std::runtime_error("cannot write " + tmp + ": " + std::strerror(err));
      }
      rest.remove_prefix(static_cast<size_t>(n));
    }
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    throw std::runtime_error("cannot flush " + tmp + ": " + std::strerror(errno));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    throw std::runtime_error("cannot rename " + tmp + " to " + path + ": " + std::strerror(errno));
  }
  // The rename itself is durable only once the directory is flushed.
  std::string dir = path.substr(0, path.find_last_of('/') == std::string::npos ? 0 : path.find_last_of('/'));
  int dfd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

void save_parameters(const std::string& path, const torch::Tensor& flat,
                     const std::vector<model::ParamInfo>& layout) {
  c10::Dict<std::string, torch::Tensor> dict;
  for (const auto& p : layout) {
    // Integer and bool buffers go back to the dtype the model keeps them in, so the
    // dict loads into the module with load_state_dict(strict=True).
    torch::Tensor t = model::slot_to_dtype(flat.narrow(0, p.offset, p.numel).view(p.shape), p.dtype).clone();
    dict.insert(p.name, t);
  }
  std::vector<char> bytes = torch::pickle_save(c10::IValue(dict));
  write_file_atomic(path, std::string(bytes.begin(), bytes.end()));
}

std::map<std::string, torch::Tensor> load_parameters(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path);
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  c10::IValue value = torch::pickle_load(bytes);
  if (!value.isGenericDict()) throw std::runtime_error(path + ": not a parameter dict");
  std::map<std::string, torch::Tensor> out;
  for (const auto& item : value.toGenericDict()) {
    out[item.key().toStringRef()] = item.value().toTensor();
  }
  return out;
}

}  // namespace fedpod::coordinator
