#include "fedpod/coordinator/report.h"

#include <algorithm>
#include <cmath>
#include <iomanip>
#include <map>
#include <sstream>
#include <vector>

namespace fedpod::coordinator {
namespace {

constexpr int kWidth = 560, kHeight = 260, kLeft = 56, kRight = 16, kTop = 28, kBottom = 36;
const char* kColors[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"};

std::string escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '&': out += "&amp;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string num(double v, int digits = 4) {
  std::ostringstream s;
  s << std::setprecision(digits) << v;
  return s.str();
}

struct Series {
  std::string name;
  std::vector<std::pair<double, double>> points;  // (round, value)
};

// A line chart of `series` over rounds 1..rounds, with axes, ticks and a legend.
std::string line_chart(const std::string& title, const std::vector<Series>& series, int rounds) {
  double lo = INFINITY, hi = -INFINITY;
  for (const auto& s : series) {
    for (const auto& [x, y] : s.points) {
      lo = std::min(lo, y);
      hi = std::max(hi, y);
    }
  }
  // The legend goes under the chart, one swatch and name after another, wrapping.
  std::ostringstream legend;
  int lx = kLeft, ly = kHeight + 2;
  for (size_t i = 0; i < series.size(); ++i) {
    const int w = 24 + static_cast<int>(6.2 * static_cast<double>(series[i].name.size())) + 14;
    if (lx + w > kWidth && lx > kLeft) {
      lx = kLeft;
      ly += 16;
    }
    legend << "<line x1='" << lx << "' x2='" << lx + 18 << "' y1='" << ly + 5 << "' y2='" << ly + 5 << "' stroke='"
           << kColors[i % 8] << "' class='line'/><text x='" << lx + 22 << "' y='" << ly + 9 << "' class='legend'>"
           << escape(series[i].name) << "</text>";
    lx += w;
  }
  const int height = series.empty() ? kHeight : ly + 16;
  std::ostringstream svg;
  svg << "<svg viewBox='0 0 " << kWidth << " " << height << "' width='" << kWidth << "' height='" << height
      << "' role='img' aria-label='" << escape(title) << "'>"
      << "<text x='" << kLeft << "' y='16' class='title'>" << escape(title) << "</text>";
  if (!std::isfinite(lo)) return svg.str() + "<text x='60' y='120'>no data</text></svg>";
  if (hi - lo < 1e-12) {
    hi += 0.5;
    lo -= 0.5;
  }
  const double pw = kWidth - kLeft - kRight, ph = kHeight - kTop - kBottom;
  auto X = [&](double r) { return kLeft + (rounds > 1 ? (r - 1) / (rounds - 1) : 0.5) * pw; };
  auto Y = [&](double v) { return kTop + (1 - (v - lo) / (hi - lo)) * ph; };
  svg << "<rect x='" << kLeft << "' y='" << kTop << "' width='" << pw << "' height='" << ph << "' class='frame'/>";
  for (int i = 0; i <= 4; ++i) {
    const double v = lo + (hi - lo) * i / 4;
    svg << "<line x1='" << kLeft << "' x2='" << kLeft + pw << "' y1='" << Y(v) << "' y2='" << Y(v)
        << "' class='grid'/><text x='" << kLeft - 4 << "' y='" << Y(v) + 4 << "' class='ytick'>" << num(v, 3)
        << "</text>";
  }
  const int step = std::max(1, rounds / 10);
  for (int r = 1; r <= rounds; r += step) {
    svg << "<text x='" << X(r) << "' y='" << kTop + ph + 14 << "' class='xtick'>" << r << "</text>";
  }
  svg << "<text x='" << kLeft + pw / 2 << "' y='" << kHeight - 4 << "' class='xtick'>round</text>";
  for (size_t i = 0; i < series.size(); ++i) {
    const char* color = kColors[i % 8];
    std::ostringstream path;
    for (const auto& [x, y] : series[i].points) path << (path.tellp() == 0 ? "M" : " L") << X(x) << "," << Y(y);
    svg << "<path d='" << path.str() << "' stroke='" << color << "' class='line'/>";
    for (const auto& [x, y] : series[i].points) {
      svg << "<circle cx='" << X(x) << "' cy='" << Y(y) << "' r='2.5' fill='" << color << "'><title>"
          << escape(series[i].name) << " round " << x << ": " << num(y) << "</title></circle>";
    }
  }
  return svg.str() + legend.str() + "</svg>";
}

std::string bar_chart(const std::string& title, const std::vector<std::pair<int, double>>& bars, int rounds) {
  std::ostringstream svg;
  svg << "<svg viewBox='0 0 " << kWidth << " " << kHeight << "' width='" << kWidth << "' height='" << kHeight
      << "' role='img' aria-label='" << escape(title) << "'><text x='" << kLeft << "' y='16' class='title'>"
      << escape(title) << "</text>";
  double hi = 0;
  for (const auto& b : bars) hi = std::max(hi, b.second);
  if (bars.empty() || hi <= 0) return svg.str() + "<text x='60' y='120'>no data</text></svg>";
  const double pw = kWidth - kLeft - kRight, ph = kHeight - kTop - kBottom;
  const double bw = pw / std::max(rounds, 1);
  svg << "<rect x='" << kLeft << "' y='" << kTop << "' width='" << pw << "' height='" << ph << "' class='frame'/>";
  for (int i = 0; i <= 4; ++i) {
    const double v = hi * i / 4, y = kTop + (1 - v / hi) * ph;
    svg << "<text x='" << kLeft - 4 << "' y='" << y + 4 << "' class='ytick'>" << num(v, 3) << "</text>";
  }
  for (const auto& [r, v] : bars) {
    const double h = v / hi * ph;
    svg << "<rect x='" << kLeft + (r - 1) * bw + bw * 0.1 << "' y='" << kTop + ph - h << "' width='" << bw * 0.8
        << "' height='" << h << "' class='bar'><title>round " << r << ": " << num(v) << " s</title></rect>";
  }
  const int step = std::max(1, rounds / 10);
  for (int r = 1; r <= rounds; r += step) {
    svg << "<text x='" << kLeft + (r - 0.5) * bw << "' y='" << kTop + ph + 14 << "' class='xtick'>" << r << "</text>";
  }
  svg << "<text x='" << kLeft + pw / 2 << "' y='" << kHeight - 4 << "' class='xtick'>round</text>";
  return svg.str() + "</svg>";
}

// Rows: pods; columns: rounds; each cell colored by the pod's outcome that round.
std::string participation(const nlohmann::json& rounds, const std::vector<std::string>& pods) {
  const std::map<std::string, std::string> colors = {{"ok", "#2ca02c"},          {"timeout", "#ff7f0e"},
                                                     {"error", "#d62728"},       {"refused", "#9467bd"},
                                                     {"unreachable", "#7f7f7f"}, {"disconnected", "#8c564b"},
                                                     {"silent", "#e377c2"},      {"stopped", "#17becf"}};
  const int n = static_cast<int>(rounds.size());
  const int cell = std::max(6, std::min(24, (kWidth - 120) / std::max(n, 1)));
  const int legend_rows = 2;
  const int height = 40 + 20 * static_cast<int>(pods.size()) + 18 * legend_rows + 8;
  std::ostringstream svg;
  svg << "<svg viewBox='0 0 " << kWidth << " " << height << "' width='" << kWidth << "' height='" << height
      << "' role='img' aria-label='pod participation'><text x='8' y='16' class='title'>pod participation</text>";
  const int step = std::max(1, n / 10);
  for (int i = 0; i < n; i += step) {
    const int round = rounds[i].value("round", i + 1);
    svg << "<text x='" << 110 + i * cell + (cell - 2) / 2 << "' y='27' class='xtick'>" << round << "</text>";
  }
  for (size_t p = 0; p < pods.size(); ++p) {
    const int y = 30 + 20 * static_cast<int>(p);
    svg << "<text x='8' y='" << y + 13 << "'>" << escape(pods[p]) << "</text>";
    for (int i = 0; i < n; ++i) {
      std::string outcome = "absent";
      const auto& pr = rounds[i]["pods"];
      if (pr.contains(pods[p])) outcome = pr[pods[p]].value("outcome", "absent");
      auto c = colors.find(outcome);
      svg << "<rect x='" << 110 + i * cell << "' y='" << y << "' width='" << cell - 2 << "' height='16' fill='"
          << (c == colors.end() ? "#eeeeee" : c->second) << "'><title>" << escape(pods[p]) << " round "
          << rounds[i].value("round", i + 1)
          << ": " << escape(outcome) << "</title></rect>";
    }
  }
  int x = 8, k = 0;
  for (const auto& [name, color] : colors) {
    const int ly = 40 + 20 * static_cast<int>(pods.size()) + 18 * (k / 5);
    x = 8 + 108 * (k % 5);
    svg << "<rect x='" << x << "' y='" << ly << "' width='10' height='10' fill='" << color << "'/><text x='" << x + 14
        << "' y='" << ly + 9 << "' class='legend'>" << name << "</text>";
    ++k;
  }
  return svg.str() + "</svg>";
}

// "hidden = [64], lr = 0.1": the job's hyperparameters, as given.
std::string hyperparameters(const nlohmann::json& model) {
  const nlohmann::json hp = model.value("hyperparameters", nlohmann::json::object());
  if (!hp.is_object() || hp.empty()) return "(the model's defaults)";
  std::string out;
  for (const auto& [k, v] : hp.items()) out += (out.empty() ? "" : ", ") + k + " = " + (v.is_string() ? v.get<std::string>() : v.dump());
  return out;
}

// ", 1 left out before round 1 (see Pods)" for the job's pods that never trained.
std::string pods_left_out(const nlohmann::json& h, const std::vector<std::string>& trained) {
  const nlohmann::json start = h.value("pods", nlohmann::json::object());
  if (!start.is_object()) return "";
  int out = 0;
  for (const auto& [name, p] : start.items()) {
    if (p.value("outcome", "") != "ok" && std::find(trained.begin(), trained.end(), name) == trained.end()) ++out;
  }
  return out ? ", " + std::to_string(out) + " left out before round 1 (see Pods)" : "";
}

// One row per pod: how it took the job (or why it was left out), and its share of
// the final test evaluation.
std::string pods_table(const nlohmann::json& h) {
  const nlohmann::json start = h.value("pods", nlohmann::json::object());
  nlohmann::json test = nlohmann::json::object();
  if (h.contains("test") && h["test"].is_object()) test = h["test"].value("pods", nlohmann::json::object());
  if (!start.is_object() || (start.empty() && test.empty())) return "";
  std::vector<std::string> names;
  for (const auto& [name, p] : start.items()) names.push_back(name);
  for (const auto& [name, p] : test.items()) {
    if (!start.contains(name)) names.push_back(name);
  }
  std::ostringstream t;
  t << "<h2>Pods</h2><table class='pods'><tr><th>pod</th><th>job</th><th>training rows</th><th>test samples</th>"
       "<th>test loss</th><th>test accuracy</th><th>reason</th></tr>";
  for (const auto& name : names) {
    const nlohmann::json p = start.value(name, nlohmann::json::object());
    const std::string outcome = p.value("outcome", "");
    std::string took = outcome == "ok" ? "accepted" : outcome.empty() ? "-" : "left out: " + outcome;
    if (outcome != "ok" && p.contains("phase")) took += " at " + p["phase"].get<std::string>();
    if (outcome == "ok" && p.contains("decision")) took += " (" + p["decision"].get<std::string>() + ")";
    t << "<tr" << (outcome != "ok" ? " class='out'" : "") << "><td>" << escape(name) << "</td><td>" << escape(took)
      << "</td><td>" << (outcome == "ok" ? std::to_string(p.value("train_samples", 0)) : "-") << "</td>";
    const nlohmann::json e = test.value(name, nlohmann::json::object());
    if (e.value("outcome", "") == "ok") {
      t << "<td>" << e.value("num_samples", 0) << "</td><td>" << num(e.value("loss", 0.0)) << "</td><td>"
        << num(e.value("accuracy", 0.0)) << "</td>";
    } else {
      t << "<td>-</td><td>-</td><td>-</td>";
    }
    std::string reason = p.value("error", "");
    if (reason.empty() && e.contains("error")) reason = "test: " + e["error"].get<std::string>();
    t << "<td>" << escape(reason) << "</td></tr>";
  }
  return t.str() + "</table>";
}

}  // namespace

std::string render_report(const nlohmann::json& h) {
  const nlohmann::json rounds = h.value("rounds", nlohmann::json::array());
  const int n = static_cast<int>(rounds.size());
  Series val_loss{"validation loss", {}}, val_acc{"validation accuracy", {}}, train_loss{"train loss (all pods)", {}};
  std::map<std::string, Series> pod_loss;
  std::vector<std::string> pods;
  std::vector<std::pair<int, double>> seconds;
  for (const auto& r : rounds) {
    const int round = r.value("round", 0);
    seconds.emplace_back(round, r.value("seconds", 0.0));
    if (r.contains("train_loss") && r.value("pods_answered", 0) > 0) train_loss.points.emplace_back(round, r["train_loss"]);
    if (r.contains("eval") && r["eval"].is_object()) {
      val_loss.points.emplace_back(round, r["eval"].value("loss", 0.0));
      val_acc.points.emplace_back(round, r["eval"].value("accuracy", 0.0));
    }
    const nlohmann::json round_pods = r.value("pods", nlohmann::json::object());
    for (const auto& [name, p] : round_pods.items()) {
      if (std::find(pods.begin(), pods.end(), name) == pods.end()) pods.push_back(name);
      if (p.value("outcome", "") == "ok" && p.contains("train_loss")) {
        pod_loss[name].name = name;
        pod_loss[name].points.emplace_back(round, p["train_loss"]);
      }
    }
  }
  std::vector<Series> per_pod;
  for (const auto& name : pods) {
    if (pod_loss.count(name)) per_pod.push_back(pod_loss[name]);
  }

  const auto& model = h.value("model", nlohmann::json::object());
  std::string model_name = model.value("ref", "");
  if (!model.value("username", std::string()).empty()) model_name = model["username"].get<std::string>() + "/" + model_name;
  std::ostringstream html;
  html << "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>fedpod report: "
       << escape(h.value("job_id", "")) << "</title><style>"
       << "body{font-family:sans-serif;margin:24px;color:#222;max-width:1180px}"
       << "svg{margin:8px 12px 8px 0;background:#fff;font-size:11px}"
       << ".title{font-size:13px;font-weight:bold}.frame{fill:none;stroke:#999}.grid{stroke:#eee}"
       << ".ytick{text-anchor:end;fill:#555}.xtick{text-anchor:middle;fill:#555}.legend{font-size:11px}"
       << ".line{fill:none;stroke-width:2}.bar{fill:#1f77b4}table{border-collapse:collapse}"
       << "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}"
       << "tr.out td{background:#fff4f4}table.pods td:first-child{white-space:nowrap}table.pods td:last-child{max-width:520px;font-size:13px}"
       << "</style></head><body>"
       << "<h1>Job " << escape(h.value("job_id", "")) << "</h1><table>"
       << "<tr><th>status</th><td>" << escape(h.value("status", "")) << "</td></tr>"
       << "<tr><th>model</th><td>" << escape(model_name) << "</td></tr>"
       << "<tr><th>hyperparameters</th><td>" << escape(hyperparameters(model)) << "</td></tr>"
       << "<tr><th>strategy</th><td>" << escape(h.value("strategy", "")) << "</td></tr>"
       << "<tr><th>rounds</th><td>" << n << "</td></tr>"
       << "<tr><th>pods</th><td>" << pods.size() << " trained" << pods_left_out(h, pods) << "</td></tr>";
  if (h.contains("test") && h["test"].is_object()) {
    html << "<tr><th>test accuracy</th><td>" << num(h["test"].value("accuracy", 0.0)) << " (" << h["test"].value("num_samples", 0)
         << " samples)</td></tr><tr><th>test loss</th><td>" << num(h["test"].value("loss", 0.0)) << "</td></tr>";
  }
  if (h.contains("differential_privacy") && h["differential_privacy"].is_object()) {
    const auto& dp = h["differential_privacy"];
    html << "<tr><th>differential privacy</th><td>DP-SGD, noise multiplier " << num(dp.value("noise_multiplier", 0.0))
         << ", clipping norm " << num(dp.value("max_grad_norm", 0.0)) << "</td></tr>";
    if (dp.contains("epsilon") && dp["epsilon"].is_object()) {
      for (const auto& [pod, e] : dp["epsilon"].items()) {
        if (!e.is_object()) continue;
        html << "<tr><th>ε at " << escape(pod) << "</th><td>" << num(e.value("epsilon", 0.0)) << " (δ "
             << e.value("delta", 0.0) << ", after round " << e.value("round", 0) << ")</td></tr>";
      }
    }
  }
  if (h.contains("error")) html << "<tr><th>error</th><td>" << escape(h["error"].get<std::string>()) << "</td></tr>";
  if (h.contains("stopped") && h["stopped"].is_object()) {
    const auto& st = h["stopped"];
    html << "<tr><th>stopped</th><td>by " << escape(st.value("signal", "")) << " at " << escape(st.value("at", ""));
    if (st.contains("after_round")) html << ", after round " << st.value("after_round", 0);
    html << "</td></tr>";
  }
  html << "</table>" << pods_table(h) << "<div>"
       << line_chart("global validation loss", {val_loss}, n) << line_chart("global validation accuracy", {val_acc}, n)
       << line_chart("training loss per pod", per_pod.empty() ? std::vector<Series>{train_loss} : per_pod, n)
       << bar_chart("round duration (seconds)", seconds, n) << participation(rounds, pods) << "</div></body></html>\n";
  return html.str();
}

}  // namespace fedpod::coordinator
