#include "fedpod/data/idx.h"

#include <zlib.h>

#include <cstring>
#include <memory>
#include <vector>

namespace fedpod::data {
namespace {

// An open IDX file (gzread reads gzipped and plain files alike).
class IdxFile {
 public:
  explicit IdxFile(const std::string& path) : path_(path), f_(gzopen(path.c_str(), "rb")) {}
  ~IdxFile() {
    if (f_) gzclose(f_);
  }
  bool open() const { return f_ != nullptr; }

  // Reads exactly `n` bytes; false at a short read.
  bool read(void* to, size_t n) {
    auto* p = static_cast<unsigned char*>(to);
    while (n > 0) {
      const unsigned chunk = static_cast<unsigned>(std::min<size_t>(n, 1u << 30));
      const int got = gzread(f_, p, chunk);
      if (got <= 0) return false;
      p += got;
      n -= static_cast<size_t>(got);
    }
    return true;
  }

  // The header: the sizes of each dimension.
  StatusOr<std::vector<uint32_t>> header(int min_dims, int max_dims) {
    unsigned char magic[4];
    if (!read(magic, 4)) return Status::invalid(path_ + ": not an IDX file (shorter than its magic number)");
    if (magic[0] != 0 || magic[1] != 0) {
      return Status::invalid(path_ + ": not an IDX file (its magic number does not start with two zero bytes)");
    }
    if (magic[2] != 0x08) {
      return Status::invalid(path_ + ": IDX element type 0x" + hex(magic[2]) +
                             " is not read here; only unsigned bytes (0x08), as MNIST uses");
    }
    const int dims = magic[3];
    if (dims < min_dims || dims > max_dims) {
      return Status::invalid(path_ + ": IDX file with " + std::to_string(dims) + " dimensions; expected " +
                             (min_dims == max_dims ? std::to_string(min_dims)
                                                   : std::to_string(min_dims) + " to " + std::to_string(max_dims)));
    }
    std::vector<uint32_t> sizes(dims);
    for (auto& s : sizes) {
      unsigned char b[4];
      if (!read(b, 4)) return Status::invalid(path_ + ": IDX header cut short");
      s = (uint32_t{b[0]} << 24) | (uint32_t{b[1]} << 16) | (uint32_t{b[2]} << 8) | uint32_t{b[3]};
    }
    return sizes;
  }

 private:
  static std::string hex(unsigned char c) {
    const char* d = "0123456789abcdef";
    return std::string{d[c >> 4], d[c & 15]};
  }
  std::string path_;
  gzFile f_;
};

}  // namespace

StatusOr<Table> read_idx(const std::string& images_path, const std::string& labels_path, const IdxOptions& options) {
  IdxFile images(images_path), labels(labels_path);
  if (!images.open()) return Status::not_found(images_path + ": cannot open: " + std::strerror(errno));
  if (!labels.open()) return Status::not_found(labels_path + ": cannot open: " + std::strerror(errno));
  auto image_dims = images.header(2, 4);
  if (!image_dims.ok()) return image_dims.status();
  auto label_dims = labels.header(1, 1);
  if (!label_dims.ok()) return label_dims.status();
  const int64_t count = (*image_dims)[0];
  if (static_cast<int64_t>((*label_dims)[0]) != count) {
    return Status(StatusCode::kSchemaMismatch, images_path + " holds " + std::to_string(count) + " images, but " +
                                                   labels_path + " " + std::to_string((*label_dims)[0]) + " labels");
  }
  if (count == 0) return Status::invalid(images_path + ": no images");
  int64_t pixels = 1;
  for (size_t d = 1; d < image_dims->size(); ++d) pixels *= (*image_dims)[d];
  if (pixels == 0) return Status::invalid(images_path + ": images of size 0");
  if (static_cast<double>(count) * static_cast<double>(pixels) > static_cast<double>(options.max_bytes)) {
    return Status::invalid(images_path + ": " + std::to_string(count) + " images of " + std::to_string(pixels) +
                           " bytes exceed the limit of " + std::to_string(options.max_bytes) + " bytes");
  }
  std::vector<unsigned char> pix(static_cast<size_t>(count * pixels));
  if (!images.read(pix.data(), pix.size())) {
    return Status::invalid(images_path + ": cut short: its header promises " + std::to_string(count) + " images of " +
                           std::to_string(pixels) + " bytes");
  }
  std::vector<unsigned char> lab(static_cast<size_t>(count));
  if (!labels.read(lab.data(), lab.size())) {
    return Status::invalid(labels_path + ": cut short: its header promises " + std::to_string(count) + " labels");
  }
  Table t;
  for (int64_t p = 0; p < pixels; ++p) t.schema.columns.push_back({"px_" + std::to_string(p), ColumnType::kNumeric, {}});
  t.schema.columns.push_back({"label", ColumnType::kNumeric, {}});
  t.schema.num_rows = count;
  torch::Tensor px = torch::from_blob(pix.data(), {count, pixels}, torch::kUInt8).to(torch::kFloat64);
  torch::Tensor lb = torch::from_blob(lab.data(), {count, 1}, torch::kUInt8).to(torch::kFloat64);
  t.values = torch::cat({px, lb}, 1);
  return t;
}

}  // namespace fedpod::data
