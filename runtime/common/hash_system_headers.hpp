#pragma once
// The system headers xxhash.h includes, included at global scope before hash_impl.inc is
// included inside a namespace: their include guards then make xxhash.h's own includes no-ops.
#include <assert.h>
#include <cstddef>
#include <cstdint>
#include <limits.h>
#include <span>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif
