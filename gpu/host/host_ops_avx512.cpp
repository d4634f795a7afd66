// The avx512 kernel path: the 16-lane bodies of host_ops_w16.inc compiled with AVX-512F (+FMA,
// F16C), one zmm register per vector. Called only when the CPU has them (host_ops.cpp checks at
// run time).
#define THAW_W16(name) name##_avx512
#include "gpu/host/host_ops_w16.inc"
