#include "kernel_switches.h"

#include "kernels.h"
#include "kernels_q4.h"

#include <algorithm>
#include <stdexcept>

namespace lingalign {

void q4_multiply_rows(const float * rows, int n, int d, const uint8_t * q, float * Y, bool portable) {
    const int Kp = q4_padded_rows(d), nb = Kp / kQ4Block;
    const std::vector<uint8_t> P = pack_q4_panels(q, d, d);
    std::vector<int8_t> hq((size_t) n * Kp);
    std::vector<float> hs((size_t) n * nb);
    std::vector<int32_t> hsum((size_t) n * nb);
    std::vector<const float *> row_ptrs((size_t) n);
    for (int r = 0; r < n; ++r) {
        row_ptrs[r] = rows + (size_t) r * d;
    }
    quantize_rows(row_ptrs.data(), 0, n, d, hq.data(), hs.data(), hsum.data(), portable);
    matmul_q4(hq.data(), hs.data(), hsum.data(), n, Kp, P.data(), d, 0, d, Y, d, portable);
}

void half_to_float_array(const uint16_t * src, size_t n, float * dst, bool portable) {
    if (portable) {
        for (size_t i = 0; i < n; ++i) {
            dst[i] = half_to_float(src[i]);
        }
        return;
    }
    constexpr size_t kChunk = 1 << 16;  // halves_to_floats takes an int count
    for (size_t i = 0; i < n; i += kChunk) {
        const size_t m = std::min(kChunk, n - i);
        halves_to_floats(src + i, m, 1, (int) m, dst + i);
    }
}

void set_portable_kernels(bool portable) {
    kernel_mode().store(portable ? 1 : 0);
}

void set_wide_kernels(bool wide) {
    wide_kernels().store(wide);
}

bool wide_kernels_available() {
#ifdef LINGALIGN_X86
    return cpu_has_avx512f() || cpu_has_avxvnni() || cpu_has_avx512vnni();
#else
    return false;
#endif
}

std::vector<std::string> q4_vnni_available() {
    std::vector<std::string> out;
#ifdef LINGALIGN_X86
    if (cpu_has_avxvnni()) {
        out.emplace_back("avxvnni");
    }
    if (cpu_has_avx512vnni()) {
        out.emplace_back("avx512vnni");
    }
#endif
    return out;
}

void set_q4_vnni(const std::string & which) {
#ifdef LINGALIGN_X86
    if (which == "auto") {
        q4_vnni_choice().store(-1);
        return;
    }
    const std::vector<std::string> have = q4_vnni_available();
    if (std::find(have.begin(), have.end(), which) == have.end()) {
        throw std::invalid_argument("this CPU has no " + which + " for the 4-bit kernel");
    }
    q4_vnni_choice().store(which == "avxvnni" ? kVnniAvx : kVnniAvx512);
#else
    if (which != "auto") {
        throw std::invalid_argument("this CPU has no " + which + " for the 4-bit kernel");
    }
#endif
}

std::map<std::string, std::string> kernel_paths() {
    std::string float_prompt = "portable";
    std::string q4_prompt = "portable";
    std::string float_decode = "portable";
#ifdef LINGALIGN_X86
    if (simd_allowed() && cpu_has_avx2_fma()) {
        float_prompt = "avx2";
        const int vnni = q4_vnni_in_use();
        q4_prompt = vnni == kVnniAvx ? "avxvnni" : vnni == kVnniAvx512 ? "avx512vnni" : "avx2";
    }
    if (convert_in_registers()) {
        float_decode = "avx2";
    }
    if (use_avx512_float()) {
        float_prompt = float_decode = "avx512";
    }
#endif
    return {{"float_prompt", float_prompt}, {"q4_prompt", q4_prompt}, {"float_decode", float_decode}};
}

bool half_conversion_uses_f16c() {
#ifdef LINGALIGN_X86
    return kernel_mode().load() == 0 && cpu_has_f16c();
#else
    return false;
#endif
}

} // namespace lingalign
