// The naming rules that the hub and the pods share: usernames (and pod names), model
// refs, CURVE public keys. The hub enforces them on registration; a pod enforces the
// same ones on the policy it reads, so a policy file cannot name what the hub would
// refuse. Stateless; safe from any thread.
#pragma once

#include <string>
#include <vector>

namespace fedpod {

// Each returns "" when `s` is fine, else what is wrong with it (to follow its name).
std::string check_username(const std::string& s);    // [a-z][a-z0-9_-]{1,31}
std::string check_model_ref(const std::string& s);   // [a-z0-9][a-z0-9_.-]{0,63}
std::string check_public_key(const std::string& s);  // 40 chars of the Z85 alphabet
std::string check_job_id(const std::string& s);      // [A-Za-z0-9._-]{1,128}

// For "did you mean": the candidate nearest to `word` by edit distance when it is
// close (at most `max_edits` edits; -1: a third of the word's length, at least one),
// else the only candidate `word` is a prefix of; "" when none is close.
std::string nearest_name(const std::string& word, const std::vector<std::string>& candidates, int max_edits = -1);

// "a, b, c": names for a message listing what is allowed.
std::string join_names(const std::vector<std::string>& names);

}  // namespace fedpod
