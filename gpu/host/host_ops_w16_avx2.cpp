// The w16_emulated test path: the same 16-lane bodies as host_ops_avx512.cpp, compiled for AVX2
// (+FMA, F16C) only, each 16-float vector held as two 8-float halves. It does what the avx512
// path does, lane for lane, on a CPU without AVX-512, where the tests compare it with the scalar
// path; never chosen by default.
#define THAW_W16(name) name##_w16_avx2
#include "gpu/host/host_ops_w16.inc"
