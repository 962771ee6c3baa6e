// fedpod audit verify FILE: checks a pod's hash-chained audit log (worker/audit.h).
// fedpod audit show FILE [--last N]: prints its entries as a table.
#include "fedpod/worker/audit.h"

#include <algorithm>
#include <deque>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "commands.h"
#include "hub_access.h"
#include "fedpod/common/signing.h"
#include "fedpod/worker/audit_anchor.h"

namespace fedpod::cli {
namespace {

// A field as table text: strings as they are, other values as JSON, "-" when absent.
std::string cell(const nlohmann::json& entry, const char* key) {
  auto it = entry.find(key);
  if (it == entry.end() || it->is_null()) return "-";
  return it->is_string() ? it->get<std::string>() : it->dump();
}

std::string model_cell(const nlohmann::json& entry) {
  std::string model = cell(entry, "model");
  if (model != "-" && entry.contains("version") && entry["version"].is_number_integer() &&
      entry["version"].get<int64_t>() > 0) {
    model += ":" + std::to_string(entry["version"].get<int64_t>());
  }
  return model;
}

std::string decision_cell(const nlohmann::json& entry) {
  std::string decision = cell(entry, "decision");
  std::string reason = cell(entry, "reason");
  if (reason == "-" || reason == decision) return decision;
  return decision == "-" ? reason : decision + "/" + reason;
}

void show(const std::string& path, int64_t last) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::cerr << "fedpod: " << path << ": cannot read\n";
    throw CommandExit{kExitFailed};
  }
  // Keep only the last N lines in memory: audit logs grow without bound.
  std::deque<std::pair<int64_t, std::string>> lines;
  std::string line;
  int64_t n = 0;
  while (std::getline(in, line)) {
    lines.emplace_back(++n, line);
    if (last > 0 && static_cast<int64_t>(lines.size()) > last) lines.pop_front();
  }
  // Columns as wide as their widest cell, two spaces apart.
  std::vector<std::vector<std::string>> rows = {
      {"SEQ", "TIME", "EVENT", "USER", "MODEL", "DECISION/REASON"}};
  for (const auto& [number, text] : lines) {
    nlohmann::json e = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (e.is_discarded() || !e.is_object()) {
      rows.push_back({"(line " + std::to_string(number) + ": not a JSON entry)"});
      continue;
    }
    rows.push_back({cell(e, "seq"), cell(e, "time"), cell(e, "event"), cell(e, "user"),
                    model_cell(e), decision_cell(e)});
  }
  std::vector<size_t> width(rows[0].size(), 0);
  for (const auto& row : rows) {
    if (row.size() != width.size()) continue;
    for (size_t i = 0; i < row.size(); ++i) width[i] = std::max(width[i], row[i].size());
  }
  for (const auto& row : rows) {
    std::string out;
    for (size_t i = 0; i < row.size(); ++i) {
      out += row[i];
      if (i + 1 < row.size()) out += std::string(width[i] - row[i].size() + 2, ' ');
    }
    std::cout << out << "\n";
  }
  std::cout << "(not verified: run `fedpod audit verify " << path << "` to check the chain)\n";
}

}  // namespace

void add_audit(CLI::App& app) {
  auto* audit = app.add_subcommand("audit", "A pod's hash-chained audit log of access decisions");
  audit->require_subcommand(1);

  struct VerifyArgs {
    std::string file, pod;
    HubAccess access;
  };
  auto va = std::make_shared<VerifyArgs>();
  auto* verify = audit->add_subcommand(
      "verify",
      "Check the log's hash chain; with --pod, also against every head the pod published to the hub, which "
      "shows a log cut at its end, replaced or restarted. Exit 1 naming what is wrong");
  verify->add_option("file", va->file, "the audit log (JSON lines)")->required();
  verify->add_option("--pod", va->pod, "the pod whose published heads the log must agree with (its owner's token)");
  add_access_options(verify, va->access, /*json=*/false);
  verify->callback([va] {
    const std::string& path = va->file;
    worker::AuditVerifyResult r = worker::verify_audit_log(path);
    if (!r.ok) {
      std::cout << path << ": " << r.error << "\n";
      throw CommandExit{kExitFailed};
    }
    std::cout << path << ": ok, " << r.entries << " entries, last hash " << r.last_hash << "\n";
    if (va->pod.empty()) {
      std::cout << "(not checked against the hub: give --pod NAME to detect a log cut at its end or replaced)\n";
      return;
    }
    auto client = connect(va->access);
    auto heads = client->get_audit_heads(va->pod);
    check(heads.status(), "audit verify");
    // Every head must carry a valid signature by the key it names, and heads between
    // resets must share one key.
    std::string key;
    int resets = 0;
    for (const auto& h : *heads) {
      const std::string k = h.value("signing_key", "");
      auto payload = verify_document(h.value("document", nlohmann::json()), k, "head");
      if (!payload.ok() || (*payload).value("entries", int64_t{-1}) != h.value("entries", int64_t{-2}) ||
          (*payload).value("head", "") != h.value("head", "") || (*payload).value("pod", "") != va->pod) {
        std::cout << va->pod << ": the hub's head at entry " << h.value("entries", int64_t{0}) << " ("
                  << h.value("published_at", "") << ") does not carry a valid signature of its own\n";
        throw CommandExit{kExitFailed};
      }
      if (h.value("reset", false) == true) {
        ++resets;
        key = k;
        std::cout << va->pod << ": the audit log was reset on " << h.value("published_at", "")
                  << " (the new log's first entry says why)\n";
      } else if (!key.empty() && k != key) {
        std::cout << va->pod << ": heads signed by two keys without a reset\n";
        throw CommandExit{kExitFailed};
      }
      if (key.empty()) key = k;
    }
    const std::string problem = worker::check_log_against_heads(path, *heads);
    if (!problem.empty()) {
      std::cout << path << ": " << problem << "\n";
      throw CommandExit{kExitFailed};
    }
    int64_t published = 0;
    if (!heads->empty()) published = heads->back().value("entries", int64_t{0});
    std::cout << path << ": agrees with the " << heads->size() << " head(s) pod " << va->pod
              << " published to the hub (latest at entry " << published << "; " << (r.entries - published)
              << " later entries not published yet)\n";
  });

  struct ShowArgs {
    std::string file;
    int64_t last = 0;
  };
  auto s = std::make_shared<ShowArgs>();
  auto* show_cmd = audit->add_subcommand("show", "Print the log's entries as a table");
  show_cmd->add_option("file", s->file, "the audit log (JSON lines)")->required();
  show_cmd->add_option("--last", s->last, "only the last N entries")
      ->check(CLI::Validator(
          [](std::string& v) -> std::string {
            try {
              size_t used = 0;
              if (std::stoll(v, &used) >= 1 && used == v.size()) return "";
            } catch (const std::exception&) {
            }
            return "--last must be a positive number of entries, got '" + v + "'";
          },
          "N", "positive"));
  show_cmd->callback([s] { show(s->file, s->last); });
}

}  // namespace fedpod::cli
