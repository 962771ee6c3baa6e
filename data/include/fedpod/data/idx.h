// Reading MNIST-format (IDX) files into a numeric table: an images file and a labels
// file, plain or gzipped (as MNIST and Fashion-MNIST ship them).
//
// IDX (LeCun et al.): a big-endian magic number 0x0000 TT DD, where TT is the element
// type (0x08: unsigned byte, the only one MNIST uses and the only one read here) and
// DD the number of dimensions, then DD big-endian uint32 sizes, then the elements in
// row-major order. The images file has DD >= 2 (count, then each image's shape); the
// labels file DD = 1 with the same count.
//
// The table has one numeric column per pixel, `px_0` ... `px_{N-1}` (raw values
// 0..255: scale them with datastructure.scale, e.g. 1/255), then `label`. Anything
// malformed (a wrong magic number or type, counts that differ, a file shorter than
// its header says, sizes beyond `max_bytes`) is an error naming the file.
#pragma once

#include <cstdint>
#include <string>

#include "fedpod/common/status.h"
#include "fedpod/data/csv.h"

namespace fedpod::data {

struct IdxOptions {
  int64_t max_bytes = int64_t{2} << 30;  // the images' element bytes, uncompressed
};

StatusOr<Table> read_idx(const std::string& images_path, const std::string& labels_path,
                         const IdxOptions& options = {});

}  // namespace fedpod::data
