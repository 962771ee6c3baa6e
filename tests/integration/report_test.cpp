// report.html from history.json: self-contained, with every plot, for complete and
// failed jobs alike.
#include "fedpod/coordinator/report.h"

#include <gtest/gtest.h>

#include "testutil.h"

namespace fedpod::coordinator {
namespace {

nlohmann::json history(int rounds, bool failed) {
  nlohmann::json h = {{"job_id", "report-test"}, {"status", failed ? "failed" : "completed"},
                      {"model", {{"username", "alice"}, {"ref", "net<1>"}}}, {"strategy", "fedavg"},
                      {"rounds", nlohmann::json::array()}};
  for (int r = 1; r <= rounds; ++r) {
    nlohmann::json pods = {{"pod-a", {{"outcome", "ok"}, {"train_loss", 2.0 / r}}},
                           {"pod-b", {{"outcome", r == 2 ? "disconnected" : "ok"}, {"train_loss", 1.5 / r}}}};
    h["rounds"].push_back({{"round", r}, {"seconds", 0.1 * r}, {"pods_answered", r == 2 ? 1 : 2}, {"pods_asked", 2},
                           {"train_loss", 1.0 / r}, {"pods", pods},
                           {"eval", {{"loss", 1.0 / r}, {"accuracy", 0.5 + 0.1 * r}, {"num_samples", 100}}}});
  }
  if (failed) {
    h["error"] = "unavailable: round 3/10: 1 of 2 pods answered";
  } else {
    h["test"] = {{"loss", 0.25}, {"accuracy", 0.9412}, {"num_samples", 358}};
  }
  return h;
}

TEST(ReportTest, CompleteJobHasEveryPlotAndNothingExternal) {
  const std::string html = render_report(history(5, false));
  EXPECT_CONTAINS(html, "<h1>Job report-test</h1>");
  EXPECT_CONTAINS(html, "alice/net&lt;1&gt;");  // escaped
  EXPECT_CONTAINS(html, "0.9412 (358 samples)");
  for (const char* plot : {"global validation loss", "global validation accuracy", "training loss per pod",
                           "round duration (seconds)", "pod participation"}) {
    EXPECT_CONTAINS(html, std::string("aria-label='") + plot + "'");
  }
  // One point per round on each validation line, a bar per round, a cell per pod-round.
  size_t circles = 0, pos = 0;
  while ((pos = html.find("<circle", pos)) != std::string::npos) ++circles, ++pos;
  EXPECT_EQ(circles, 5u * 2 + 5 + 4);  // loss + accuracy, pod-a 5 points, pod-b 4 (one round disconnected)
  EXPECT_CONTAINS(html, "pod-b round 2: disconnected");
  // Self-contained: no scripts, no external resources.
  EXPECT_EQ(html.find("<script"), std::string::npos);
  EXPECT_EQ(html.find("http"), std::string::npos);
  EXPECT_EQ(html.find("src="), std::string::npos);
}

TEST(ReportTest, FailedAndEmptyHistoriesStillRender) {
  const std::string failed = render_report(history(2, true));
  EXPECT_CONTAINS(failed, "unavailable: round 3/10: 1 of 2 pods answered");
  const std::string empty = render_report(nlohmann::json{{"job_id", "nothing"}, {"status", "failed"}});
  EXPECT_CONTAINS(empty, "no data");
  EXPECT_CONTAINS(empty, "</html>");
}

}  // namespace
}  // namespace fedpod::coordinator
