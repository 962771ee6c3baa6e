// UTC times as ISO 8601 text, the form history.json, the hub's records and the CLI
// print: "2026-11-29T03:10:52Z". Stateless; safe from any thread.
#pragma once

#include <ctime>
#include <string>

namespace fedpod {

// `t` (seconds since the epoch) as "YYYY-MM-DDTHH:MM:SSZ".
std::string format_utc(std::time_t t);

// The current time in the same form.
std::string now_utc();

}  // namespace fedpod
