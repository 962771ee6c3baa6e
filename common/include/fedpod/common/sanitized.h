// Whether this build runs under AddressSanitizer or ThreadSanitizer (scripts/sanitize).
// They reserve terabytes of shadow address space at start, which a memory rlimit
// (RLIMIT_AS, RLIMIT_DATA) forbids: the processes fedpod limits that way (job
// runners, the pod's receiving process) run without the limit in such builds.
#pragma once

namespace fedpod {

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
inline constexpr bool kSanitized = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
inline constexpr bool kSanitized = true;
#else
inline constexpr bool kSanitized = false;
#endif
#else
inline constexpr bool kSanitized = false;
#endif

}  // namespace fedpod
