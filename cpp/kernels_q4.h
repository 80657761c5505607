// Kernels for 4-bit maps: Y = H @ Q, Q [K x ncols] holding values -8..7 (M - I in steps of a
// per-column scale, which the hook applies afterwards). Header-only, no llama.cpp dependency.
//
// Out of cache (decode, where the model's weights have just streamed through it) the hook's
// 8-bit kernel is bound by the bytes it reads; 4 bits halve them. Rather than convert every
// nibble to a float (more instructions per value than for a byte), these kernels use integer dot
// products, as llama.cpp does for its own quantized weights: each row h is quantized to int8 per block of
// 32 values (scale max|h| / 127, round to nearest even), and AVX2 maddubs multiplies 32 nibbles
// by 32 int8 values per instruction (VNNI's vpdpbusd also adds them up, in prompt processing).
// A block's integer sum is exact, so every path (AVX2 or VNNI, 1 or 4 panels or several rows at
// a time, the portable code, any thread count, decode or prompt processing)
// computes the same integers and adds them into the float32 result with the same fused
// multiply-adds in the same order: bit-identical results everywhere.
//
// Packed layout: panels.h (pack_q4_panels).
#pragma once

#include "kernels.h"
#include "panels.h"

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace lingalign {

// Blocks b0..b1 of quantize_row_blocks, portable.
inline void quantize_blocks_portable(const float * h, int K, int b0, int b1, int8_t * hq, float * hs, int32_t * hsum) {
    for (int b = b0; b < b1; ++b) {
        const int j0 = b * kQ4Block, j1 = std::min(K, j0 + kQ4Block);
        float amax = 0.0f;
        bool finite = true;
        for (int j = j0; j < j1; ++j) {
            const float a = std::fabs(h[j]);
            finite = finite && a <= FLT_MAX;
            amax = std::max(amax, a);
        }
        std::memset(hq + j0, 0, kQ4Block);
        hsum[b] = 0;
        if (!finite) {
            hs[b] = NAN;
            continue;
        }
        hs[b] = amax / 127.0f;
        const float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
        int32_t sum = 0;
        for (int j = j0; j < j1; ++j) {
            const float x = std::nearbyint(h[j] * inv);  // default rounding: to nearest even
            const int q = (int) std::max(-127.0f, std::min(127.0f, x));
            hq[j] = (int8_t) q;
            sum += q;
        }
        hsum[b] = sum;
    }
}

#ifdef LINGALIGN_X86
// Whole blocks b0..b1 of quantize_row_blocks with AVX2: the same maximum, the same division and
// products, and the same rounding (to nearest even), so the same bytes as the portable code.
__attribute__((target("avx2,fma"))) inline void quantize_blocks_avx2(const float * h, int b0, int b1, int8_t * hq,
                                                                     float * hs, int32_t * hsum) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    const __m256 big = _mm256_set1_ps(FLT_MAX);
    const __m256i lim = _mm256_set1_epi32(127);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);  // undoes packs' lane interleaving
    for (int b = b0; b < b1; ++b) {
        const float * x = h + (size_t) b * kQ4Block;
        __m256 v[4], amax = _mm256_setzero_ps();
        int finite = 1;
        for (int k = 0; k < 4; ++k) {
            v[k] = _mm256_loadu_ps(x + 8 * k);
            const __m256 a = _mm256_andnot_ps(sign, v[k]);
            finite &= _mm256_movemask_ps(_mm256_cmp_ps(a, big, _CMP_LE_OQ)) == 0xFF;
            amax = _mm256_max_ps(amax, a);
        }
        int8_t * q = hq + (size_t) b * kQ4Block;
        if (!finite) {
            std::memset(q, 0, kQ4Block);
            hs[b] = NAN;
            hsum[b] = 0;
            continue;
        }
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        const float m = _mm_cvtss_f32(m4);
        hs[b] = m / 127.0f;
        const __m256 inv = _mm256_set1_ps(m > 0.0f ? 127.0f / m : 0.0f);
        __m256i i[4];
        for (int k = 0; k < 4; ++k) {
            const __m256 r = _mm256_round_ps(_mm256_mul_ps(v[k], inv), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            i[k] = _mm256_max_epi32(_mm256_sub_epi32(_mm256_setzero_si256(), lim),
                                    _mm256_min_epi32(lim, _mm256_cvtps_epi32(r)));
        }
        __m256i total = _mm256_add_epi32(_mm256_add_epi32(i[0], i[1]), _mm256_add_epi32(i[2], i[3]));
        __m128i t4 = _mm_add_epi32(_mm256_castsi256_si128(total), _mm256_extracti128_si256(total, 1));
        t4 = _mm_hadd_epi32(t4, t4);
        t4 = _mm_hadd_epi32(t4, t4);
        hsum[b] = _mm_cvtsi128_si32(t4);
        const __m256i p8 = _mm256_packs_epi16(_mm256_packs_epi32(i[0], i[1]), _mm256_packs_epi32(i[2], i[3]));
        _mm256_storeu_si256(reinterpret_cast<__m256i *>(q), _mm256_permutevar8x32_epi32(p8, order));
    }
}
#endif

// One row h of K floats as int8 hq [Kp] (zero padded), with a scale hs and the sum of hq per
// block of 32. A block with NaN or Inf gets scale NaN and zeros, so the result is NaN, as the
// float kernels' would be, rather than an out-of-range conversion. `portable` forces the
// portable code (tests); both give the same bytes.
inline void quantize_row_blocks(const float * h, int K, int8_t * hq, float * hs, int32_t * hsum, bool portable = false) {
    const int n_blocks = q4_padded_rows(K) / kQ4Block;
    int b = 0;
#ifdef LINGALIGN_X86
    if (!portable && cpu_has_avx2_fma()) {
        b = K / kQ4Block;  // whole blocks; a partial last one below
        quantize_blocks_avx2(h, 0, b, hq, hs, hsum);
    }
#endif
    (void) portable;
    quantize_blocks_portable(h, K, b, n_blocks, hq, hs, hsum);
}

// Rows r0..r1 of rows[] (each K floats) through quantize_row_blocks into row r's slots of hq
// ([n x Kp]), hs and hsum ([n x Kp / 32]).
inline void quantize_rows(const float * const * rows, int r0, int r1, int K, int8_t * hq, float * hs, int32_t * hsum,
                          bool portable) {
    const int Kp = q4_padded_rows(K), nb = Kp / kQ4Block;
    for (int r = r0; r < r1; ++r) {
        quantize_row_blocks(rows[r], K, hq + (size_t) r * Kp, hs + (size_t) r * nb, hsum + (size_t) r * nb, portable);
    }
}

// y[i] for the columns of panel P (kPanel of them) and one quantized row: the portable code.
inline void dot_q4_panel_portable(const int8_t * hq, const float * hs, int Kp, const uint8_t * P, float * y) {
    for (int ci = 0; ci < kPanel; ++ci) {
        const int shift = ci < 8 ? 0 : 4;
        const int c = ci % 8;
        float acc = 0.0f;
        for (int b = 0; b < Kp / kQ4Block; ++b) {
            int32_t s = 0;
            for (int j = b * kQ4Block; j < (b + 1) * kQ4Block; ++j) {
                const int v = (P[(size_t) (j / 4) * 32 + c * 4 + j % 4] >> shift) & 0x0F;
                s += (int32_t) hq[j] * (v - 8);
            }
            acc = std::fma((float) s, hs[b], acc);
        }
        y[ci] = acc;
    }
}

#ifdef LINGALIGN_X86
// y[0 .. NP * kPanel) for NP panels (NP = 1 or 4; P[q] each) and one quantized row: per block,
// the 32-bit sums of nibble * hq (minus 8 * sum(hq): the nibbles are value + 8), then one fused
// multiply-add by the block's scale, as the portable code does.
template <int NP>
__attribute__((target("avx2,fma"))) inline void dot_q4_panels_avx2(const int8_t * hq, const float * hs,
                                                                   const int32_t * hsum, int Kp,
                                                                   const uint8_t * const * P, float * y) {
    const __m256i ones = _mm256_set1_epi16(1);
    const __m256i low = _mm256_set1_epi8(0x0F);
    __m256 acc[NP][2];
    for (int q = 0; q < NP; ++q) {
        acc[q][0] = _mm256_setzero_ps();
        acc[q][1] = _mm256_setzero_ps();
    }
    for (int b = 0; b < Kp / kQ4Block; ++b) {
        const __m256i start = _mm256_set1_epi32(-8 * hsum[b]);
        __m256i s[NP][2];
        for (int q = 0; q < NP; ++q) {
            s[q][0] = start;
            s[q][1] = start;
        }
        for (int g = b * (kQ4Block / 4); g < (b + 1) * (kQ4Block / 4); ++g) {
            int32_t four;
            std::memcpy(&four, hq + 4 * g, 4);
            const __m256i x = _mm256_set1_epi32(four);
            for (int q = 0; q < NP; ++q) {
                const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(P[q] + (size_t) g * 32));
                const __m256i lo = _mm256_and_si256(v, low);
                const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
                // |nibble * hq| <= 15 * 127: the pairwise sums never saturate 16 bits
                s[q][0] = _mm256_add_epi32(s[q][0], _mm256_madd_epi16(_mm256_maddubs_epi16(lo, x), ones));
                s[q][1] = _mm256_add_epi32(s[q][1], _mm256_madd_epi16(_mm256_maddubs_epi16(hi, x), ones));
            }
        }
        const __m256 scale = _mm256_set1_ps(hs[b]);
        for (int q = 0; q < NP; ++q) {
            acc[q][0] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s[q][0]), scale, acc[q][0]);
            acc[q][1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s[q][1]), scale, acc[q][1]);
        }
    }
    for (int q = 0; q < NP; ++q) {
        _mm256_storeu_ps(y + q * kPanel, acc[q][0]);
        _mm256_storeu_ps(y + q * kPanel + 8, acc[q][1]);
    }
}

// Prompt processing: R rows against one panel at a time, so each 32 bytes of nibbles are split
// into their low and high halves once for all R rows. The integer sums are the ones
// dot_q4_panels_avx2 computes, added into the float32 result with the same fused multiply-adds
// in the same order: the same bits. DOT(s, v, x) adds to s the 32-bit sums of v (unsigned) times
// x (signed), four products per lane: maddubs + madd + add with AVX2, one instruction (vpdpbusd)
// with AVX-VNNI or AVX512-VNNI. Writes out[r * kPanel + i].
#    define LINGALIGN_Q4_ROWS_BODY(DOT)                                                                        \
        const int nb = Kp / kQ4Block;                                                                         \
        const __m256i low = _mm256_set1_epi8(0x0F);                                                           \
        __m256 acc[R][2];                                                                                     \
        for (int r = 0; r < R; ++r) {                                                                         \
            acc[r][0] = _mm256_setzero_ps();                                                                  \
            acc[r][1] = _mm256_setzero_ps();                                                                  \
        }                                                                                                     \
        for (int b = 0; b < nb; ++b) {                                                                        \
            __m256i s[R][2];                                                                                  \
            for (int r = 0; r < R; ++r) {                                                                     \
                s[r][0] = s[r][1] = _mm256_set1_epi32(-8 * hsum[(size_t) r * nb + b]);                        \
            }                                                                                                 \
            for (int g = b * (kQ4Block / 4); g < (b + 1) * (kQ4Block / 4); ++g) {                             \
                const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(P + (size_t) g * 32)); \
                const __m256i lo = _mm256_and_si256(v, low);                                                  \
                const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);                            \
                for (int r = 0; r < R; ++r) {                                                                 \
                    int32_t four;                                                                             \
                    std::memcpy(&four, hq + (size_t) r * Kp + 4 * g, 4);                                      \
                    const __m256i x = _mm256_set1_epi32(four);                                                \
                    s[r][0] = DOT(s[r][0], lo, x);                                                            \
                    s[r][1] = DOT(s[r][1], hi, x);                                                            \
                }                                                                                             \
            }                                                                                                 \
            for (int r = 0; r < R; ++r) {                                                                     \
                const __m256 scale = _mm256_set1_ps(hs[(size_t) r * nb + b]);                                 \
                acc[r][0] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s[r][0]), scale, acc[r][0]);                   \
                acc[r][1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s[r][1]), scale, acc[r][1]);                   \
            }                                                                                                 \
        }                                                                                                     \
        for (int r = 0; r < R; ++r) {                                                                         \
            _mm256_storeu_ps(out + r * kPanel, acc[r][0]);                                                    \
            _mm256_storeu_ps(out + r * kPanel + 8, acc[r][1]);                                                \
        }

// |nibble * hq| <= 15 * 127: maddubs's pairwise sums never saturate 16 bits
#    define LINGALIGN_DOT_AVX2(s, v, x) _mm256_add_epi32(s, _mm256_madd_epi16(_mm256_maddubs_epi16(v, x), ones))
#    define LINGALIGN_DOT_AVXVNNI(s, v, x) _mm256_dpbusd_avx_epi32(s, v, x)
#    define LINGALIGN_DOT_AVX512VNNI(s, v, x) _mm256_dpbusd_epi32(s, v, x)

// Rows per call: what measured fastest on one core (bench/kernel_prompt.cpp); more rows than
// that spill the accumulators out of the 16 registers.
constexpr int kQ4RowsAvx2 = 2;
constexpr int kQ4RowsVnni = 4;

template <int R>
__attribute__((target("avx2,fma"))) inline void dot_q4_rows_avx2(const int8_t * hq, const float * hs,
                                                                 const int32_t * hsum, int Kp, const uint8_t * P,
                                                                 float * out) {
    const __m256i ones = _mm256_set1_epi16(1);
    LINGALIGN_Q4_ROWS_BODY(LINGALIGN_DOT_AVX2)
}

template <int R>
__attribute__((target("avx2,fma,avxvnni"))) inline void dot_q4_rows_avxvnni(const int8_t * hq, const float * hs,
                                                                           const int32_t * hsum, int Kp,
                                                                           const uint8_t * P, float * out) {
    LINGALIGN_Q4_ROWS_BODY(LINGALIGN_DOT_AVXVNNI)
}

template <int R>
__attribute__((target("avx2,fma,avx512f,avx512vl,avx512vnni"))) inline void
dot_q4_rows_avx512vnni(const int8_t * hq, const float * hs, const int32_t * hsum, int Kp, const uint8_t * P,
                       float * out) {
    LINGALIGN_Q4_ROWS_BODY(LINGALIGN_DOT_AVX512VNNI)
}

#    undef LINGALIGN_Q4_ROWS_BODY
#    undef LINGALIGN_DOT_AVX2
#    undef LINGALIGN_DOT_AVXVNNI
#    undef LINGALIGN_DOT_AVX512VNNI

constexpr int kVnniNone = 0, kVnniAvx512 = 1, kVnniAvx = 2;

inline bool cpu_has_avxvnni() {
    static const bool has = [] {
        __builtin_cpu_init();
        return __builtin_cpu_supports("avxvnni") != 0;
    }();
    return has;
}

inline bool cpu_has_avx512vnni() {
    static const bool has = [] {
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vl");
    }();
    return has;
}

// The VNNI code the 4-bit prompt kernel uses: -1 = the best the CPU has (AVX-VNNI, else
// AVX512-VNNI), or one of them forced (tests cover both on a CPU that has both).
inline std::atomic<int> & q4_vnni_choice() {
    static std::atomic<int> choice{-1};
    return choice;
}

inline int cpu_vnni() {
    const int forced = q4_vnni_choice().load(std::memory_order_relaxed);
    if (forced >= 0) {
        return forced;
    }
    return cpu_has_avxvnni() ? kVnniAvx : cpu_has_avx512vnni() ? kVnniAvx512 : kVnniNone;
}

// The VNNI code dot_q4_rows uses now (kVnniNone: AVX2); kernel_paths() reports the same decision.
inline int q4_vnni_in_use() {
    return wide_allowed() ? cpu_vnni() : kVnniNone;
}

// Rows [0, n) of one panel for prompt processing; returns the rows done (whole groups of rows).
inline int dot_q4_rows(const int8_t * hq, const float * hs, const int32_t * hsum, int n, int Kp, const uint8_t * P,
                       int w, float * Y, int ldy) {
    const int nb = Kp / kQ4Block;
    const int vnni = q4_vnni_in_use();
    const int R = vnni != kVnniNone ? kQ4RowsVnni : kQ4RowsAvx2;
    float out[kQ4RowsVnni * kPanel];
    int r0 = 0;
    for (; r0 + R <= n; r0 += R) {
        const int8_t * x = hq + (size_t) r0 * Kp;
        const float * s = hs + (size_t) r0 * nb;
        const int32_t * sum = hsum + (size_t) r0 * nb;
        if (vnni == kVnniAvx) {
            dot_q4_rows_avxvnni<kQ4RowsVnni>(x, s, sum, Kp, P, out);
        } else if (vnni == kVnniAvx512) {
            dot_q4_rows_avx512vnni<kQ4RowsVnni>(x, s, sum, Kp, P, out);
        } else {
            dot_q4_rows_avx2<kQ4RowsAvx2>(x, s, sum, Kp, P, out);
        }
        for (int r = 0; r < R; ++r) {
            std::copy(out + r * kPanel, out + r * kPanel + w, Y + (size_t) (r0 + r) * ldy);
        }
    }
    return r0;
}
#endif

// Y[:, c0:c1] for the n quantized rows (row r: hq + r * Kp, hs and hsum + r * Kp / 32), the
// packed map P of ncols columns (c0 a multiple of kPanel), Y [n x ldy]. With AVX2, prompt
// processing takes each panel with several rows at a time (dot_q4_rows), and decode's one row takes
// four panels at a time.
// `portable` forces the portable code (tests).
inline void matmul_q4(const int8_t * hq, const float * hs, const int32_t * hsum, int n, int Kp, const uint8_t * P,
                      int ncols, int c0, int c1, float * Y, int ldy, bool portable) {
    const size_t panel_bytes = (size_t) Kp * 8;
    const int nb = Kp / kQ4Block;
    float out[kDecodePanels * kPanel];
    int p0 = c0;
#ifdef LINGALIGN_X86
    if (!portable && cpu_has_avx2_fma() && n > 1) {
        // prompt processing: panel by panel, several rows at a time, the rest one by one
        for (; p0 < c1; p0 += kPanel) {
            const uint8_t * panel = P + (size_t) (p0 / kPanel) * panel_bytes;
            const int w = std::min(kPanel, ncols - p0);
            int r = dot_q4_rows(hq, hs, hsum, n, Kp, panel, w, Y + p0, ldy);
            for (; r < n; ++r) {
                dot_q4_panels_avx2<1>(hq + (size_t) r * Kp, hs + (size_t) r * nb, hsum + (size_t) r * nb, Kp, &panel,
                                      out);
                std::copy(out, out + w, Y + (size_t) r * ldy + p0);
            }
        }
        return;
    }
    if (!portable && cpu_has_avx2_fma()) {
        for (; p0 < c1; p0 += kPanel) {
            const int group = (c1 - p0 >= kDecodePanels * kPanel) ? kDecodePanels : 1;
            const uint8_t * panels[kDecodePanels];
            for (int q = 0; q < group; ++q) {
                panels[q] = P + (size_t) (p0 / kPanel + q) * panel_bytes;
            }
            const int w = std::min(group * kPanel, ncols - p0);
            for (int r = 0; r < n; ++r) {
                const int8_t * x = hq + (size_t) r * Kp;
                if (group == kDecodePanels) {
                    dot_q4_panels_avx2<kDecodePanels>(x, hs + (size_t) r * nb, hsum + (size_t) r * nb, Kp, panels,
                                                       out);
                } else {
                    dot_q4_panels_avx2<1>(x, hs + (size_t) r * nb, hsum + (size_t) r * nb, Kp, panels, out);
                }
                std::copy(out, out + w, Y + (size_t) r * ldy + p0);
            }
            p0 += (group - 1) * kPanel;
        }
        return;
    }
#endif
    (void) portable;
    (void) hsum;
    for (; p0 < c1; p0 += kPanel) {
        const uint8_t * panel = P + (size_t) (p0 / kPanel) * panel_bytes;
        const int w = std::min(kPanel, ncols - p0);
        for (int r = 0; r < n; ++r) {
            dot_q4_panel_portable(hq + (size_t) r * Kp, hs + (size_t) r * nb, Kp, panel, out);
            std::copy(out, out + w, Y + (size_t) r * ldy + p0);
        }
    }
}

} // namespace lingalign
