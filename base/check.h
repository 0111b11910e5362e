// Invariant checks that stay on in release builds.
//
// WALSHIP_CHECK guards cheap properties whose violation means a bug that could corrupt
// replicated data (sequence continuity, batch counts, state transitions). It prints the
// failed condition with its location and aborts. Bad input from users or peers is never
// checked with it: that is an absl::Status with a message.
#pragma once

#include <cstdio>
#include <cstdlib>

#define WALSHIP_CHECK(cond)                                                           \
  do {                                                                                \
    if (!(cond)) {                                                                    \
      std::fprintf(stderr, "%s:%d: WALSHIP_CHECK failed: %s\n", __FILE__, __LINE__,  \
                   #cond);                                                            \
      std::abort();                                                                   \
    }                                                                                 \
  } while (0)

// Like WALSHIP_CHECK, with a printf-style explanation.
#define WALSHIP_CHECKF(cond, ...)                                                       \
  do {                                                                                  \
    if (!(cond)) {                                                                      \
      std::fprintf(stderr, "%s:%d: WALSHIP_CHECK failed: %s: ", __FILE__, __LINE__,    \
                   #cond);                                                              \
      std::fprintf(stderr, __VA_ARGS__);                                                \
      std::fprintf(stderr, "\n");                                                       \
      std::abort();                                                                     \
    }                                                                                   \
  } while (0)

// Propagates a non-OK absl::Status (Abseil 20220623 has no ABSL_RETURN_IF_ERROR).
#define WALSHIP_RETURN_IF_ERROR(expr)        \
  do {                                       \
    ::absl::Status walship_status_ = (expr); \
    if (!walship_status_.ok()) return walship_status_; \
  } while (0)
