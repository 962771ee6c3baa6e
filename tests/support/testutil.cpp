#include "testutil.h"

#include <nlohmann/json.hpp>

#include "reliability.h"

#include "fedpod/common/config_util.h"

#include <sys/wait.h>

#include <cstdlib>
#include <limits>
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


#include <sstream>
#include <thread>

namespace fedpod::testing {

std::string fedpod_bin() {
  const char* b = std::getenv("FEDPOD_BIN");
  if (!b) throw std::runtime_error("FEDPOD_BIN is not set (run the tests through ctest)");
  return b;
}

HubTls make_hub_tls(const std::string& dir) {
  const std::string log = dir + ".dev-ca.log";
  Process p({fedpod_bin(), "tls", "dev-ca", "--out", dir}, log);
  const int status = p.wait(std::chrono::seconds(60));
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << read_file(log);
  return {dir + "/ca.crt", dir + "/hub.crt", dir + "/hub.key"};
}

std::string config_error(const std::function<void()>& f) {
  try {
    f();
  } catch (const ConfigError& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected a ConfigError";
  return "";
}

::testing::AssertionResult Contains(const char* h_expr, const char* n_expr, const std::string& haystack,
                                    const std::string& needle) {
  if (haystack.find(needle) != std::string::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << h_expr << " (\"" << haystack << "\") does not contain " << n_expr
                                       << " (\"" << needle << "\")";
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

PromtoolResult promtool_check(const std::string& exposition) {
  PromtoolResult r;
  if (std::system("command -v promtool > /dev/null 2>&1") != 0) {
    r.output = "promtool is not on PATH; run scripts/bootstrap (Debian's 'prometheus' package ships it)";
    return r;
  }
  TempDir dir;
  const std::string in = dir.write("metrics.txt", exposition);
  const std::string out = (dir.path() / "promtool.out").string();
  const std::string cmd = "timeout 60 promtool check metrics < '" + in + "' > '" + out + "' 2>&1";
  const int rc = std::system(cmd.c_str());
  r.exit_code = WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
  r.output = read_file(out);
  return r;
}

}  // namespace fedpod::testing

namespace fedpod::testing {

double metric_value(const std::string& exposition, const std::string& series) {
  std::istringstream in(exposition);
  std::string line;
  while (std::getline(in, line)) {
    if (line.compare(0, series.size() + 1, series + " ") == 0) return std::stod(line.substr(series.size() + 1));
  }
  return std::numeric_limits<double>::quiet_NaN();
}

void record_fault(const std::string& area, const std::string& fault, int injected, const std::string& outcome,
                  const std::string& lost) {
  const char* path = std::getenv("FEDPOD_RELIABILITY_LOG");
  if (!path || !*path) return;
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  nlohmann::json line = {{"area", area},
                         {"fault", fault},
                         {"injected", injected},
                         {"outcome", outcome},
                         {"lost", lost},
                         {"test", info ? std::string(info->test_suite_name()) + "." + info->name() : std::string()},
                         {"passed", !::testing::Test::HasFailure()}};
  std::ofstream out(path, std::ios::app);
  out << line.dump() << "\n";  // one short line per append: concurrent tests do not interleave
}

}  // namespace fedpod::testing
