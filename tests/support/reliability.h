// Fault-injection tests record what they injected and what came of it, so that
// docs/reliability.md is generated from the tests rather than written by hand.
//
//   record_fault("pods", "pod SIGKILLed mid-round", kills, "round completed with min_pods; pod rejoined",
//                "nothing");
//
// With FEDPOD_RELIABILITY_LOG set (scripts/reliability-table sets it), each call
// appends one JSON line to that file: {area, fault, injected, outcome, lost, test,
// passed}. `passed` is false when the current test had already failed when it
// recorded, so a failing test can never be reported as survived. Without the
// variable nothing is written.
#pragma once

#include <string>

namespace fedpod::testing {

// area: "coordinator", "pods", "network", "hostile input", "hub", ...; fault: what
// was injected; injected: how many times; outcome: what the test asserted
// happened; lost: what was lost ("nothing" when the test asserted that nothing was).
void record_fault(const std::string& area, const std::string& fault, int injected, const std::string& outcome,
                  const std::string& lost = "nothing");

}  // namespace fedpod::testing
