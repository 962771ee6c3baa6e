// A pod serving MNIST-format (IDX) files: the digits shares converted to IDX (one
// pod's gzipped), two real `fedpod worker` processes with `dataset: {format: idx}`,
// and a job over them. The same job over the same rows as CSV gives the same test
// accuracy: the reader hands the trainer the same numbers.
#include <gtest/gtest.h>
#include <zlib.h>

#include <fstream>
#include <sstream>

#include "digits_job.h"
#include "fedpod/coordinator/coordinator.h"
#include "identity.h"
#include "testutil.h"

namespace fedpod {
namespace {

using namespace std::chrono_literals;

std::string be32(uint32_t v) {
  return {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8), static_cast<char>(v)};
}

// Writes `csv` (64 pixel columns, then label) as IDX images (8x8) and labels.
void csv_to_idx(const std::string& csv, const std::string& images, const std::string& labels, bool gzip) {
  std::ifstream in(csv);
  std::string line;
  std::getline(in, line);  // header
  std::string px, lab;
  uint32_t n = 0;
  while (std::getline(in, line)) {
    std::stringstream cells(line);
    std::string cell;
    for (int c = 0; c < 65 && std::getline(cells, cell, ','); ++c) (c < 64 ? px : lab) += static_cast<char>(std::stoi(cell));
    ++n;
  }
  const std::string img = std::string{0, 0, 8, 3} + be32(n) + be32(8) + be32(8) + px;
  const std::string lbl = std::string{0, 0, 8, 1} + be32(n) + lab;
  for (const auto& [path, bytes] : {std::pair{images, img}, std::pair{labels, lbl}}) {
    if (gzip) {
      gzFile f = gzopen(path.c_str(), "wb");
      gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size()));
      gzclose(f);
    } else {
      std::ofstream(path, std::ios::binary) << bytes;
    }
  }
}

TEST(IdxPodTest, PodsServingIdxFilesTrainLikeTheSameRowsAsCsv) {
  testing::TempDir dir;
  testing::TestIdentity id(dir.path(), "alice");
  auto run = [&](bool idx, const std::string& tag) {
    coordinator::JobSpec spec = testing::digits_job_spec("idx-" + tag, (dir.path() / tag).string(), id.modeller_key_file);
    spec.rounds = 3;
    spec.aggregation_order = "pod";
    std::vector<std::unique_ptr<testing::Process>> procs;
    for (const std::string pod : {"pod-a", "pod-b"}) {
      const std::string csv = testing::source_dir() + "/examples/digits/" + pod + ".csv";
      std::string path = csv, extra;
      if (idx) {
        const bool gz = pod == "pod-b";
        path = (dir.path() / (tag + "-" + pod + "-images" + (gz ? ".gz" : ""))).string();
        const std::string labels = (dir.path() / (tag + "-" + pod + "-labels" + (gz ? ".gz" : ""))).string();
        csv_to_idx(csv, path, labels, gz);
        extra = "  format: idx\n  labels: " + labels + "\n";
      }
      auto p = testing::start_csv_pod(dir, id, pod, path, "general-modeller", "", tag + "-" + pod + ".log", {}, extra);
      EXPECT_FALSE(p.endpoint.empty()) << testing::read_file(p.log);
      testing::add_pod(spec, p);
      procs.push_back(std::move(p.process));
    }
    coordinator::validate(spec, "test job");
    zmq::context_t ctx(1);
    std::ostringstream progress;
    coordinator::Coordinator c(ctx, spec, null_logger(), progress);
    auto r = c.run();
    EXPECT_TRUE(r.ok()) << r.status().to_string() << "\n" << progress.str();
    return r.ok() ? r->test_accuracy : -1.0;
  };
  const double from_idx = run(true, "idx");
  const double from_csv = run(false, "csv");
  EXPECT_GT(from_idx, 0.5);
  EXPECT_EQ(from_idx, from_csv);
}

}  // namespace
}  // namespace fedpod
