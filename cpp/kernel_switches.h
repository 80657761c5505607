// Process-wide switches and probes of the CPU kernels, for tests and benchmarks (bound in
// lingalign._core.testing): which code paths run, and the kernels' conversions on their own.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace lingalign {

// IEEE binary16 -> float32 for n values, with the conversion the kernels use (F16C where the
// CPU has it), or the portable one.
void half_to_float_array(const uint16_t * src, size_t n, float * dst, bool portable);
// false = with the AVX2, AVX-512 and F16C code where the CPU has it (default), true = with the
// portable code only.
void set_portable_kernels(bool portable);
// Whether the SIMD code may use AVX-512 and VNNI (default) or stops at AVX2.
void set_wide_kernels(bool wide);
// Whether this CPU has AVX-512 or VNNI code for the kernels to use.
bool wide_kernels_available();
// The code the kernels run now, on this CPU: "float_prompt" and "float_decode" (avx512, avx2 or
// portable; float32, float16 and int8 maps) and "q4_prompt" (avxvnni, avx512vnni, avx2 or
// portable).
std::map<std::string, std::string> kernel_paths();
// The VNNI variants of the 4-bit prompt kernel this CPU can run ("avxvnni", "avx512vnni").
std::vector<std::string> q4_vnni_available();
// Force one of them ("auto" = the best; the default).
void set_q4_vnni(const std::string & which);
// Whether the kernels convert halves with F16C now.
bool half_conversion_uses_f16c();
// Y [n x d] = rows [n x d] @ Q for a 4-bit map q [d x d/2] in the file layout, with the hook's
// kernel (rows quantized per block of 32, integer dots; no scales), on one thread.
void q4_multiply_rows(const float * rows, int n, int d, const uint8_t * q, float * Y, bool portable);

} // namespace lingalign
