#include "testutil.h"

#include <cstdlib>
#include <fstream>
#include <stdexcept>

namespace fedpod::testing {

TempDir::TempDir() {
  std::string tmpl = (std::filesystem::temp_directory_path() / "fedpod-test-XXXXXX").string();
  if (!mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
  path_ = tmpl;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

std::string TempDir::write(const std::string& name, const std::string& content) const {
  auto p = path_ / name;
  std::filesystem::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary) << content;
  return p.string();
}

std::string source_dir() {
  const char* d = std::getenv("FEDPOD_SOURCE_DIR");
  if (!d) throw std::runtime_error("FEDPOD_SOURCE_DIR is not set (run the tests through ctest)");
  return d;
}

}  // namespace fedpod::testing
