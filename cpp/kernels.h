// Row kernels for the residual-stream transforms. Header-only, no llama.cpp dependency.
//
// Convention (numpy-natural, the one the fitting code uses): a map M is [n_embd x n_embd]
// row-major and sends a row vector h to y = h @ M, i.e. y[i] = sum_j h[j] * M[j*d + i].
//
// Y = H @ M is computed panel by panel: a panel is kPanel columns of M ([d x kPanel], 40 KB
// for d = 640, stays in L2 while every block of rows streams past it), and the micro-kernel
// keeps a tile of Y in registers: 12 rows x 2 panels with AVX-512, 6 rows x 1 panel with AVX2,
// kRows x 1 panel in the portable code. Panels are independent, which is how the work is split
// between threads.
//
// The hook stores each map packed by panels (pack_panels): panel p is its own contiguous
// row-major [K x w] block. Decode reads every byte of every map once per token, out of cache
// (the model's own weights have just streamed through it): contiguous panels are streams the
// prefetcher follows to the end, where row-major columns split between threads were short
// strided runs. Every kernel adds the products of a column in the same order (j = 0..K-1), so
// decode, prompt processing and any thread count give bit-identical results.
//
// Maps may be stored as IEEE float16 (half the bytes to stream per token) or int8 (a quarter;
// the hook scales the columns afterwards). Prompt processing converts each panel exactly into a
// small float32 buffer and runs the float32 code on it; decode converts in registers as the
// panels stream (F16C, AVX2) or, without them, through the buffer. Either way every product and
// sum is the one the float32 kernel computes for the same values: identical results.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "panels.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#  include <immintrin.h>
#  define LINGALIGN_X86 1
#endif

#if defined(__x86_64__) && defined(__GNUC__) && defined(__has_attribute)
#  if __has_attribute(target_clones)
// One binary, portable: the loader picks the AVX2/FMA clone where the CPU has it.
#    define LINGALIGN_MULTIVERSION __attribute__((target_clones("arch=x86-64-v3", "default")))
#  endif
#endif
#ifndef LINGALIGN_MULTIVERSION
#  define LINGALIGN_MULTIVERSION
#endif

namespace lingalign {

constexpr int kRows = 4;  // rows of H per micro-kernel call

// Y[:, c0:c1] = H @ M[:, c0:c1] for the n rows rows[0..n) of length K; M is [K x ldm] and Y is
// [n x ldy], both row-major. With M = I the result is exactly H (each sum adds exact zeros to
// one exact product).
LINGALIGN_MULTIVERSION
static void matmul_columns(const float * const * rows, int n, int K, const float * M, int ldm, int c0, int c1,
                           float * Y, int ldy) {
    for (int p0 = c0; p0 < c1; p0 += kPanel) {
        const int pw = std::min(kPanel, c1 - p0);
        for (int r0 = 0; r0 < n; r0 += kRows) {
            const int nr = std::min(kRows, n - r0);
            float acc[kRows][kPanel] = {};
            if (nr == kRows && pw == kPanel) {
                const float * h0 = rows[r0];
                const float * h1 = rows[r0 + 1];
                const float * h2 = rows[r0 + 2];
                const float * h3 = rows[r0 + 3];
                for (int j = 0; j < K; ++j) {
                    const float * m = M + (size_t) j * ldm + p0;
                    const float a0 = h0[j], a1 = h1[j], a2 = h2[j], a3 = h3[j];
                    for (int i = 0; i < kPanel; ++i) {
                        acc[0][i] += a0 * m[i];
                        acc[1][i] += a1 * m[i];
                        acc[2][i] += a2 * m[i];
                        acc[3][i] += a3 * m[i];
                    }
                }
            } else {
                for (int j = 0; j < K; ++j) {
                    const float * m = M + (size_t) j * ldm + p0;
                    for (int k = 0; k < nr; ++k) {
                        const float a = rows[r0 + k][j];
                        for (int i = 0; i < pw; ++i) {
                            acc[k][i] += a * m[i];
                        }
                    }
                }
            }
            for (int k = 0; k < nr; ++k) {
                std::copy(acc[k], acc[k] + pw, Y + (size_t) (r0 + k) * ldy + p0);
            }
        }
    }
}

// How the kernels run: 0 = with the hand-written SIMD code (AVX2, AVX-512, F16C) where the CPU
// has it, 1 = only with the portable code (tests use it to cover the path other CPUs take, and
// to check that both give the same bits).
inline std::atomic<int> & kernel_mode() {
    static std::atomic<int> mode{0};
    return mode;
}

inline bool simd_allowed() {
    return kernel_mode().load(std::memory_order_relaxed) == 0;
}

// Whether the SIMD code may use AVX-512 and VNNI where the CPU has them; off, it stops at AVX2
// (tests use it to cover what CPUs without them run, and to check that both give the same bits).
inline std::atomic<bool> & wide_kernels() {
    static std::atomic<bool> on{true};
    return on;
}

inline bool wide_allowed() {
    return simd_allowed() && wide_kernels().load(std::memory_order_relaxed);
}

#ifdef LINGALIGN_X86
inline bool cpu_has_f16c() {
    static const bool has = [] {
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx") && __builtin_cpu_supports("f16c");
    }();
    return has;
}

inline bool cpu_has_avx2_fma() {
    static const bool has = [] {
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    }();
    return has;
}

inline bool cpu_has_avx2_fma_f16c() {
    return cpu_has_f16c() && cpu_has_avx2_fma();
}

inline bool cpu_has_avx512f() {
    static const bool has = [] {
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx512f");
    }();
    return has;
}

// Whether the float kernels take their AVX-512 code now (prompt: matmul_panels; decode:
// matvec_packed); kernel_paths() reports the same decision.
inline bool use_avx512_float() {
    return wide_allowed() && cpu_has_avx512f();
}

// Prompt-processing micro-kernels. Each keeps a tile of Y in registers and adds the products of
// a column in the same order (j = 0..K-1) with the same fused multiply-adds as matmul_columns, so
// every path gives the same bits. The tiles are sized so that enough independent multiply-add
// chains (one per register of the tile) are in flight to keep both FMA units of a core busy:
// bench/kernel_prompt.cpp measured, on one core, 1.8x matmul_columns for AVX-512 with 12 rows x
// 2 panels (24 of the 32 registers) and 1.2x for AVX2 with 6 rows x 1 panel (12 of 16).
constexpr int kWideRows = 12;
constexpr int kAvx2Rows = 6;

// Y[r, 0 : NP * kPanel] = rows[r] @ M for NP full panels stored one after another at M (each
// [K x kPanel]), for whole groups of kWideRows rows; returns the rows done.
template <int NP>
__attribute__((target("avx512f"))) inline int matmul_panels_avx512(const float * const * rows, int n, int K,
                                                                    const float * M, float * Y, int ldy) {
    int r0 = 0;
    for (; r0 + kWideRows <= n; r0 += kWideRows) {
        __m512 acc[kWideRows][NP];
        const float * h[kWideRows];
        for (int k = 0; k < kWideRows; ++k) {
            h[k] = rows[r0 + k];
            for (int q = 0; q < NP; ++q) {
                acc[k][q] = _mm512_setzero_ps();
            }
        }
        for (int j = 0; j < K; ++j) {
            __m512 m[NP];
            for (int q = 0; q < NP; ++q) {
                m[q] = _mm512_loadu_ps(M + (size_t) q * K * kPanel + (size_t) j * kPanel);
            }
#    pragma GCC unroll 12
            for (int k = 0; k < kWideRows; ++k) {
                const __m512 x = _mm512_set1_ps(h[k][j]);
                for (int q = 0; q < NP; ++q) {
                    acc[k][q] = _mm512_fmadd_ps(x, m[q], acc[k][q]);
                }
            }
        }
        for (int k = 0; k < kWideRows; ++k) {
            for (int q = 0; q < NP; ++q) {
                _mm512_storeu_ps(Y + (size_t) (r0 + k) * ldy + q * kPanel, acc[k][q]);
            }
        }
    }
    return r0;
}

// The same for one full panel with AVX2, in whole groups of kAvx2Rows rows.
__attribute__((target("avx2,fma"))) inline int matmul_panel_avx2(const float * const * rows, int n, int K,
                                                                  const float * M, float * Y, int ldy) {
    int r0 = 0;
    for (; r0 + kAvx2Rows <= n; r0 += kAvx2Rows) {
        __m256 lo[kAvx2Rows], hi[kAvx2Rows];
        const float * h[kAvx2Rows];
        for (int k = 0; k < kAvx2Rows; ++k) {
            h[k] = rows[r0 + k];
            lo[k] = _mm256_setzero_ps();
            hi[k] = _mm256_setzero_ps();
        }
        for (int j = 0; j < K; ++j) {
            const __m256 m0 = _mm256_loadu_ps(M + (size_t) j * kPanel);
            const __m256 m1 = _mm256_loadu_ps(M + (size_t) j * kPanel + 8);
#    pragma GCC unroll 6
            for (int k = 0; k < kAvx2Rows; ++k) {
                const __m256 x = _mm256_broadcast_ss(h[k] + j);
                lo[k] = _mm256_fmadd_ps(x, m0, lo[k]);
                hi[k] = _mm256_fmadd_ps(x, m1, hi[k]);
            }
        }
        for (int k = 0; k < kAvx2Rows; ++k) {
            _mm256_storeu_ps(Y + (size_t) (r0 + k) * ldy, lo[k]);
            _mm256_storeu_ps(Y + (size_t) (r0 + k) * ldy + 8, hi[k]);
        }
    }
    return r0;
}
#endif

// Panels the prompt kernels take at once (stored one after another, so a group is contiguous).
constexpr int kPromptPanels = 2;

// Y[:, 0:w] = H @ M for the panels stored one after another at M, w columns in all (w <=
// kPromptPanels * kPanel; only the last panel may be narrower than kPanel); Y is [n x ldy].
inline void matmul_panels(const float * const * rows, int n, int K, const float * M, int w, float * Y, int ldy) {
    int wide_done = 0;  // rows done for every panel of the group
#ifdef LINGALIGN_X86
    if (use_avx512_float()) {
        if (w == 2 * kPanel) {
            wide_done = matmul_panels_avx512<2>(rows, n, K, M, Y, ldy);
        } else if (w == kPanel) {
            wide_done = matmul_panels_avx512<1>(rows, n, K, M, Y, ldy);
        }
    }
#endif
    for (int p = 0; p < w; p += kPanel) {
        const int pw = std::min(kPanel, w - p);
        const float * panel = M + (size_t) p * K;
        int done = wide_done;
#ifdef LINGALIGN_X86
        if (pw == kPanel && simd_allowed() && cpu_has_avx2_fma()) {
            done += matmul_panel_avx2(rows + done, n - done, K, panel, Y + (size_t) done * ldy + p, ldy);
        }
#endif
        if (done < n) {
            matmul_columns(rows + done, n - done, K, panel, pw, 0, pw, Y + (size_t) done * ldy + p, ldy);
        }
    }
}

// Y[:, c0:c1] = H @ M[:, c0:c1] for M packed by panels (c0 a multiple of kPanel); Y is [n x ldy].
static void matmul_packed(const float * const * rows, int n, int K, const float * P, int ncols, int c0, int c1,
                          float * Y, int ldy) {
    for (int p0 = c0; p0 < c1; p0 += kPromptPanels * kPanel) {
        const int w = std::min({kPromptPanels * kPanel, c1 - p0, ncols - p0});
        matmul_panels(rows, n, K, P + (size_t) p0 * K, w, Y + p0, ldy);
    }
}

// Panels a decode step multiplies at once: 4 x 16 accumulators (8 AVX registers) hide the
// latency of the multiply-add chains, one chain per column.
constexpr int kDecodePanels = 4;

// acc[q][i] += sum over j < nj of h[j] * P[q][j * kPanel + i], for kDecodePanels full panels
// whose rows 0..nj the pointers P[q] point at; T is float32 or int8 (converted exactly). Inlined
// into each matvec_panels below, so every target clone compiles it for its own instructions.
template <typename T>
__attribute__((always_inline)) inline void matvec_panels_body(const float * h, int nj, const T * const * P,
                                                              float (*acc)[kPanel]) {
    float a0[kPanel], a1[kPanel], a2[kPanel], a3[kPanel];
    std::copy(acc[0], acc[0] + kPanel, a0);
    std::copy(acc[1], acc[1] + kPanel, a1);
    std::copy(acc[2], acc[2] + kPanel, a2);
    std::copy(acc[3], acc[3] + kPanel, a3);
    const T * m0 = P[0];
    const T * m1 = P[1];
    const T * m2 = P[2];
    const T * m3 = P[3];
    for (int j = 0; j < nj; ++j) {
        const float x = h[j];
        for (int i = 0; i < kPanel; ++i) {
            a0[i] += x * (float) m0[i];
            a1[i] += x * (float) m1[i];
            a2[i] += x * (float) m2[i];
            a3[i] += x * (float) m3[i];
        }
        m0 += kPanel;
        m1 += kPanel;
        m2 += kPanel;
        m3 += kPanel;
    }
    std::copy(a0, a0 + kPanel, acc[0]);
    std::copy(a1, a1 + kPanel, acc[1]);
    std::copy(a2, a2 + kPanel, acc[2]);
    std::copy(a3, a3 + kPanel, acc[3]);
}

LINGALIGN_MULTIVERSION
static void matvec_panels(const float * h, int nj, const float * const * P, float (*acc)[kPanel]) {
    matvec_panels_body(h, nj, P, acc);
}

LINGALIGN_MULTIVERSION
static void matvec_panels(const float * h, int nj, const int8_t * const * P, float (*acc)[kPanel]) {
    matvec_panels_body(h, nj, P, acc);
}

// IEEE 754 binary16 -> binary32. Exact for every bit pattern: normals, subnormals, zeros and
// infinities; a NaN keeps its sign and payload (as numpy's float16 -> float32 does).
inline float half_to_float(uint16_t h) {
    const uint32_t sign = (uint32_t) (h & 0x8000u) << 16;
    const uint32_t exponent = (uint32_t) (h >> 10) & 0x1Fu;
    uint32_t mantissa = (uint32_t) h & 0x3FFu;
    uint32_t bits = sign;
    if (exponent == 0x1Fu) {
        bits |= 0x7F800000u | (mantissa << 13);
    } else if (exponent != 0) {
        bits |= ((exponent + 112u) << 23) | (mantissa << 13);  // rebias: 127 - 15
    } else if (mantissa != 0) {
        // subnormal m * 2^-24: shift the leading one into the implicit bit
        uint32_t e = 113u;  // biased float32 exponent of 2^-14, the smallest normal half
        while ((mantissa & 0x400u) == 0) {
            mantissa <<= 1;
            --e;
        }
        bits |= (e << 23) | ((mantissa & 0x3FFu) << 13);
    }
    float f;
    std::memcpy(&f, &bits, sizeof f);
    return f;
}

#ifdef LINGALIGN_X86
// dst[r * cols + i] = src[r * ld + i] for rows x cols halves, 8 at a time with F16C.
__attribute__((target("avx,f16c"))) inline void halves_to_floats_f16c(const uint16_t * src, size_t ld, int n_rows,
                                                                      int cols, float * dst) {
    for (int r = 0; r < n_rows; ++r) {
        const uint16_t * s = src + (size_t) r * ld;
        float * o = dst + (size_t) r * cols;
        int i = 0;
        for (; i + 8 <= cols; i += 8) {
            _mm256_storeu_ps(o + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i *>(s + i))));
        }
        for (; i < cols; ++i) {
            o[i] = half_to_float(s[i]);
        }
    }
}
#endif

// dst [n_rows x cols] (row-major, dense) = the halves src[r * ld + i], converted exactly.
inline void halves_to_floats(const uint16_t * src, size_t ld, int n_rows, int cols, float * dst) {
#ifdef LINGALIGN_X86
    if (simd_allowed() && cpu_has_f16c()) {
        halves_to_floats_f16c(src, ld, n_rows, cols, dst);
        return;
    }
#endif
    for (int r = 0; r < n_rows; ++r) {
        const uint16_t * s = src + (size_t) r * ld;
        float * o = dst + (size_t) r * cols;
        for (int i = 0; i < cols; ++i) {
            o[i] = half_to_float(s[i]);
        }
    }
}

// Rows of a float16 panel converted per step of a decode without F16C: 4 x 64 x 16 floats,
// 16 KB, stay in L1.
constexpr int kDecodeRowBlock = 64;

// Floats of scratch the float16 and int8 kernels need per task for maps of K rows.
inline size_t panel_scratch_floats(int K) {
    return (size_t) std::max(kPromptPanels * K, kDecodePanels * kDecodeRowBlock) * kPanel;
}

LINGALIGN_MULTIVERSION
static void int8_to_floats(const int8_t * src, int n, float * dst) {
    for (int i = 0; i < n; ++i) {
        dst[i] = (float) src[i];
    }
}

inline void to_floats(const uint16_t * src, int n, float * dst) {
    halves_to_floats(src, 0, 1, n, dst);
}

inline void to_floats(const int8_t * src, int n, float * dst) {
    int8_to_floats(src, n, dst);
}

// matmul_packed for a float16 or int8 M: each panel is converted into `scratch`
// (panel_scratch_floats) and multiplied by the float32 code itself.
template <typename T>
static void matmul_packed(const float * const * rows, int n, int K, const T * P, int ncols, int c0, int c1, float * Y,
                          int ldy, float * scratch) {
    for (int p0 = c0; p0 < c1; p0 += kPromptPanels * kPanel) {
        const int w = std::min({kPromptPanels * kPanel, c1 - p0, ncols - p0});
        to_floats(P + (size_t) p0 * K, K * w, scratch);  // the panels are contiguous
        matmul_panels(rows, n, K, scratch, w, Y + p0, ldy);
    }
}

inline void matmul_packed(const float * const * rows, int n, int K, const float * P, int ncols, int c0, int c1,
                          float * Y, int ldy, float * /* scratch: not needed */) {
    matmul_packed(rows, n, K, P, ncols, c0, c1, Y, ldy);
}

#ifdef LINGALIGN_X86
// One panel row (kPanel values) as two vectors of 8 floats, converted exactly.
__attribute__((target("avx2,fma,f16c"), always_inline)) inline void load_panel_row(const uint16_t * p, __m256 & lo,
                                                                                  __m256 & hi) {
    const __m128i * m = reinterpret_cast<const __m128i *>(p);
    lo = _mm256_cvtph_ps(_mm_loadu_si128(m));
    hi = _mm256_cvtph_ps(_mm_loadu_si128(m + 1));
}

__attribute__((target("avx2,fma,f16c"), always_inline)) inline void load_panel_row(const int8_t * p, __m256 & lo,
                                                                                  __m256 & hi) {
    const __m128i m = _mm_loadu_si128(reinterpret_cast<const __m128i *>(p));
    lo = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(m));
    hi = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_unpackhi_epi64(m, m)));
}

// matvec_panels for float16 or int8 panels, converted in registers as they stream: the same
// fused multiply-adds in the same order as the float32 kernel's x86-64-v3 clone (which
// contracts a += x * m into one), so the same results.
template <typename T>
__attribute__((target("avx2,fma,f16c"))) inline void matvec_panels_x86(const float * h, int nj, const T * const * P,
                                                                       float (*acc)[kPanel]) {
    __m256 a[kDecodePanels][2];
    for (int q = 0; q < kDecodePanels; ++q) {
        a[q][0] = _mm256_loadu_ps(acc[q]);
        a[q][1] = _mm256_loadu_ps(acc[q] + 8);
    }
    for (int j = 0; j < nj; ++j) {
        const __m256 x = _mm256_broadcast_ss(h + j);
        for (int q = 0; q < kDecodePanels; ++q) {
            __m256 lo, hi;
            load_panel_row(P[q] + (size_t) j * kPanel, lo, hi);
            a[q][0] = _mm256_fmadd_ps(x, lo, a[q][0]);
            a[q][1] = _mm256_fmadd_ps(x, hi, a[q][1]);
        }
    }
    for (int q = 0; q < kDecodePanels; ++q) {
        _mm256_storeu_ps(acc[q], a[q][0]);
        _mm256_storeu_ps(acc[q] + 8, a[q][1]);
    }
}

// Panels decode streams at once with AVX-512: one 512-bit accumulator each, so 8 chains of
// multiply-adds keep both FMA units busy (4 would leave them waiting), and int8 values are
// converted 16 per instruction pair. bench/kernel_decode.cpp (one thread, 18 maps 640x640 out of
// cache): int8 0.61-0.63 ms with AVX2 -> 0.46-0.48 ms; float32 and float16, bound by the bytes
// they read, unchanged.
constexpr int kWideDecodePanels = 8;

// matvec_panels for kWideDecodePanels panels with AVX-512, float16 and int8 converted in
// registers: the same fused multiply-adds in the same order as the other decode kernels.
__attribute__((target("avx512f"), always_inline)) inline __m512 load_panel_row16(const float * p) {
    return _mm512_loadu_ps(p);
}

__attribute__((target("avx512f"), always_inline)) inline __m512 load_panel_row16(const uint16_t * p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(p)));
}

__attribute__((target("avx512f"), always_inline)) inline __m512 load_panel_row16(const int8_t * p) {
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i *>(p))));
}

template <typename T>
__attribute__((target("avx512f"))) inline void matvec_panels_avx512(const float * h, int nj, const T * const * P,
                                                                     float (*acc)[kPanel]) {
    __m512 a[kWideDecodePanels];
    for (int q = 0; q < kWideDecodePanels; ++q) {
        a[q] = _mm512_loadu_ps(acc[q]);
    }
    for (int j = 0; j < nj; ++j) {
        const __m512 x = _mm512_set1_ps(h[j]);
        for (int q = 0; q < kWideDecodePanels; ++q) {
            a[q] = _mm512_fmadd_ps(x, load_panel_row16(P[q] + (size_t) j * kPanel), a[q]);
        }
    }
    for (int q = 0; q < kWideDecodePanels; ++q) {
        _mm512_storeu_ps(acc[q], a[q]);
    }
}
#endif

// Whether decode converts float16 and int8 panels in registers (matvec_panels_x86) rather than
// with the portable code.
inline bool convert_in_registers() {
#ifdef LINGALIGN_X86
    return simd_allowed() && cpu_has_avx2_fma_f16c();
#else
    return false;
#endif
}

// One group of kDecodePanels panels of K rows for decode's one row h, into acc.
inline void matvec_group(const float * h, int K, const float * const * panels, float (*acc)[kPanel], float *) {
    matvec_panels(h, K, panels, acc);
}

inline void matvec_group(const float * h, int K, const int8_t * const * panels, float (*acc)[kPanel], float *) {
#ifdef LINGALIGN_X86
    if (convert_in_registers()) {
        matvec_panels_x86(h, K, panels, acc);
        return;
    }
#endif
    matvec_panels(h, K, panels, acc);
}

// float16: converted in registers with AVX2, FMA and F16C; elsewhere kDecodeRowBlock rows of
// each panel at a time are converted into `scratch` and accumulated by the float32 code.
inline void matvec_group(const float * h, int K, const uint16_t * const * panels, float (*acc)[kPanel],
                         float * scratch) {
#ifdef LINGALIGN_X86
    if (convert_in_registers()) {
        matvec_panels_x86(h, K, panels, acc);
        return;
    }
#endif
    for (int j0 = 0; j0 < K; j0 += kDecodeRowBlock) {
        const int nj = std::min(kDecodeRowBlock, K - j0);
        const float * converted[kDecodePanels];
        for (int q = 0; q < kDecodePanels; ++q) {
            float * dst = scratch + (size_t) q * kDecodeRowBlock * kPanel;
            to_floats(panels[q] + (size_t) j0 * kPanel, nj * kPanel, dst);
            converted[q] = dst;
        }
        matvec_panels(h + j0, nj, converted, acc);
    }
}

// y[c0:c1] = h @ M[:, c0:c1] for one row h (decode), M packed (float32, float16 or int8), c0 a
// multiple of kPanel: kDecodePanels panels at a time, each a contiguous stream; `scratch` is
// panel_scratch_floats(K) floats (unused for float32).
template <typename T>
static void matvec_packed(const float * h, int K, const T * P, int ncols, int c0, int c1, float * y, float * scratch) {
    constexpr int group = kDecodePanels * kPanel;
    int p0 = c0;
#ifdef LINGALIGN_X86
    if (use_avx512_float()) {
        constexpr int wide = kWideDecodePanels * kPanel;
        for (; p0 + wide <= c1; p0 += wide) {
            const T * panels[kWideDecodePanels];
            for (int q = 0; q < kWideDecodePanels; ++q) {
                panels[q] = P + (size_t) (p0 + q * kPanel) * K;
            }
            float acc[kWideDecodePanels][kPanel] = {};
            matvec_panels_avx512(h, K, panels, acc);
            std::copy(&acc[0][0], &acc[0][0] + wide, y + p0);
        }
    }
#endif
    for (; p0 + group <= c1; p0 += group) {
        const T * panels[kDecodePanels];
        for (int q = 0; q < kDecodePanels; ++q) {
            panels[q] = P + (size_t) (p0 + q * kPanel) * K;
        }
        float acc[kDecodePanels][kPanel] = {};
        matvec_group(h, K, panels, acc, scratch);
        for (int q = 0; q < kDecodePanels; ++q) {
            std::copy(acc[q], acc[q] + kPanel, y + p0 + q * kPanel);
        }
    }
    matmul_packed(&h, 1, K, P, ncols, p0, c1, y, ncols, scratch);  // the last panels, the narrow one included
}

} // namespace lingalign
