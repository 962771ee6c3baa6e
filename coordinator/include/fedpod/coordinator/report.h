// The training report: one self-contained HTML page drawn from history.json.
//
// Plots (inline SVG, no scripts, fonts or other files, so it opens offline): global
// validation loss and accuracy per round, each pod's training loss per round, round
// durations, and pod participation (each round's outcome per pod), plus a summary
// of the job and the final test evaluation.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace fedpod::coordinator {

// The page for `history` (the content of history.json). Tolerates partial
// histories (a failed job, rounds without evaluation).
std::string render_report(const nlohmann::json& history);

}  // namespace fedpod::coordinator
