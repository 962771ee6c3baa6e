// IDX (MNIST-format) files: plain and gzipped, and every way one can be wrong.
#include "fedpod/data/idx.h"

#include <gtest/gtest.h>
#include <zlib.h>

#include <string>
#include <vector>

#include "testutil.h"

namespace fedpod::data {
namespace {

std::string be32(uint32_t v) {
  return {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8), static_cast<char>(v)};
}

// An IDX file of unsigned bytes with `dims` and `bytes`.
std::string idx(const std::vector<uint32_t>& dims, const std::vector<unsigned char>& bytes, unsigned char type = 0x08) {
  std::string out{0, 0, static_cast<char>(type), static_cast<char>(dims.size())};
  for (uint32_t d : dims) out += be32(d);
  out.append(bytes.begin(), bytes.end());
  return out;
}

class IdxTest : public ::testing::Test {
 protected:
  std::string write(const std::string& name, const std::string& content) { return dir_.write(name, content); }
  std::string write_gz(const std::string& name, const std::string& content) {
    const std::string path = (dir_.path() / name).string();
    gzFile f = gzopen(path.c_str(), "wb");
    gzwrite(f, content.data(), static_cast<unsigned>(content.size()));
    gzclose(f);
    return path;
  }
  // Three 2x2 images (pixels 0..11) labelled 7, 0, 9.
  const std::string images_ = idx({3, 2, 2}, {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11});
  const std::string labels_ = idx({3}, {7, 0, 9});
  fedpod::testing::TempDir dir_;
};

TEST_F(IdxTest, ReadsImagesAndLabelsIntoPixelColumnsAndALabel) {
  auto t = read_idx(write("img", images_), write("lab", labels_));
  ASSERT_TRUE(t.ok()) << t.status().to_string();
  ASSERT_EQ(t->schema.columns.size(), 5u);
  EXPECT_EQ(t->schema.columns[0].name, "px_0");
  EXPECT_EQ(t->schema.columns[3].name, "px_3");
  EXPECT_EQ(t->schema.columns[4].name, "label");
  EXPECT_EQ(t->schema.num_rows, 3);
  EXPECT_EQ(t->values.scalar_type(), torch::kFloat64);
  EXPECT_TRUE(torch::equal(t->values, torch::tensor({{0., 1., 2., 3., 7.}, {4., 5., 6., 7., 0.}, {8., 9., 10., 11., 9.}},
                                                    torch::kFloat64)));
}

TEST_F(IdxTest, GzippedFilesReadTheSame) {
  auto plain = read_idx(write("img", images_), write("lab", labels_));
  auto gz = read_idx(write_gz("img.gz", images_), write_gz("lab.gz", labels_));
  ASSERT_TRUE(gz.ok()) << gz.status().to_string();
  EXPECT_TRUE(torch::equal(plain->values, gz->values));
}

TEST_F(IdxTest, MalformedFilesAreNamed) {
  const std::string img = write("img", images_), lab = write("lab", labels_);
  auto missing = read_idx(img, (dir_.path() / "nope").string());
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("nope: cannot open"), std::string::npos);

  auto count = read_idx(img, write("lab2", idx({2}, {1, 2})));
  ASSERT_FALSE(count.ok());
  EXPECT_NE(count.status().message().find("holds 3 images, but"), std::string::npos) << count.status().message();
  EXPECT_NE(count.status().message().find("2 labels"), std::string::npos);

  auto type = read_idx(write("float", idx({3, 2, 2}, std::vector<unsigned char>(48), 0x0D)), lab);
  ASSERT_FALSE(type.ok());
  EXPECT_NE(type.status().message().find("element type 0x0d is not read here"), std::string::npos)
      << type.status().message();

  auto cut = read_idx(write("cut", images_.substr(0, images_.size() - 3)), lab);
  ASSERT_FALSE(cut.ok());
  EXPECT_NE(cut.status().message().find("cut short: its header promises 3 images of 4 bytes"), std::string::npos)
      << cut.status().message();

  auto swapped = read_idx(lab, img);  // labels given as images: one dimension only
  ASSERT_FALSE(swapped.ok());
  EXPECT_NE(swapped.status().message().find("IDX file with 1 dimensions; expected 2 to 4"), std::string::npos)
      << swapped.status().message();

  auto text = read_idx(write("csv", "a,b\n1,2\n"), lab);
  ASSERT_FALSE(text.ok());
  EXPECT_NE(text.status().message().find("not an IDX file"), std::string::npos) << text.status().message();

  IdxOptions small;
  small.max_bytes = 11;
  auto big = read_idx(img, lab, small);
  ASSERT_FALSE(big.ok());
  EXPECT_NE(big.status().message().find("exceed the limit of 11 bytes"), std::string::npos) << big.status().message();
}

}  // namespace
}  // namespace fedpod::data
