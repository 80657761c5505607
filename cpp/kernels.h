// Row kernels for the residual-stream transforms. Header-only, no llama.cpp dependency.
//
// Convention (numpy-natural, the one the fitting code uses): a map M is [n_embd x n_embd]
// row-major and sends a row vector h to y = h @ M, i.e. y[i] = sum_j h[j] * M[j*d + i].
//
// Y = H @ M is computed panel by panel: a panel is kPanel columns of M ([d x kPanel], 40 KB
// for d = 640, stays in L2 while every block of kRows rows streams past it), and the
// micro-kernel keeps a kRows x kPanel tile of Y in registers (8 AVX registers). Panels are
// independent, which is how the work is split between threads.
//
// Maps may be stored as IEEE float16 (half the bytes to stream per token). The f16 kernels
// convert M to float32 (F16C where the CPU has it, a portable exact conversion elsewhere) into a
// small buffer and run the float32 code above on it, so every product and sum is the one the
// float32 kernel computes for the same (float16-representable) values: identical results.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#  include <immintrin.h>
#  define LINGALIGN_F16C 1
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

constexpr int kRows = 4;    // rows of H per micro-kernel call
constexpr int kPanel = 16;  // columns of M per panel

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

// Y[:, c0:c1] = H @ M[:, c0:c1] for a few rows (decode): streams M row by row, contiguous,
// which the prefetcher follows best when the map does not fit in cache. Y is [n x ncols].
// Same exactness as matmul_columns.
LINGALIGN_MULTIVERSION
static void matmul_few_rows(const float * const * rows, int n, int K, const float * M, int ncols, int c0, int c1,
                            float * Y) {
    for (int k = 0; k < n; ++k) {
        std::fill(Y + (size_t) k * ncols + c0, Y + (size_t) k * ncols + c1, 0.0f);
    }
    for (int j = 0; j < K; ++j) {
        const float * m = M + (size_t) j * ncols;
        for (int k = 0; k < n; ++k) {
            const float a = rows[k][j];
            float * y = Y + (size_t) k * ncols;
            for (int i = c0; i < c1; ++i) {
                y[i] += a * m[i];
            }
        }
    }
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

// Half -> float conversion for the kernels: 0 = F16C where the CPU has it, 1 = always the
// portable conversion (tests use it to cover the path other CPUs take).
inline std::atomic<int> & half_conversion_mode() {
    static std::atomic<int> mode{0};
    return mode;
}

#ifdef LINGALIGN_F16C
inline bool cpu_has_f16c() {
    static const bool has = [] {
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx") && __builtin_cpu_supports("f16c");
    }();
    return has;
}

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
#ifdef LINGALIGN_F16C
    if (half_conversion_mode().load(std::memory_order_relaxed) == 0 && cpu_has_f16c()) {
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

// matmul_columns for a float16 M: each panel M[:, p0:p0+kPanel] is converted into `panel`
// ([K x kPanel] floats, the caller's scratch) and multiplied by matmul_columns itself.
static void matmul_columns_f16(const float * const * rows, int n, int K, const uint16_t * M, int ldm, int c0, int c1,
                               float * Y, int ldy, float * panel) {
    for (int p0 = c0; p0 < c1; p0 += kPanel) {
        const int pw = std::min(kPanel, c1 - p0);
        halves_to_floats(M + p0, (size_t) ldm, K, pw, panel);
        matmul_columns(rows, n, K, panel, pw, 0, pw, Y + p0, ldy);
    }
}

// Y[k][c0:c1] += rows[k][j] * m[0:c1-c0] for the n rows: one step of matmul_few_rows.
LINGALIGN_MULTIVERSION
static void axpy_rows(const float * const * rows, int n, int j, const float * m, int ncols, int c0, int c1,
                      float * Y) {
    for (int k = 0; k < n; ++k) {
        const float a = rows[k][j];
        float * y = Y + (size_t) k * ncols + c0;
        for (int i = 0; i < c1 - c0; ++i) {
            y[i] += a * m[i];
        }
    }
}

// matmul_few_rows for a float16 M: each row's columns c0..c1 are converted into `row` (c1 - c0
// floats, the caller's scratch) before the same accumulation step.
static void matmul_few_rows_f16(const float * const * rows, int n, int K, const uint16_t * M, int ncols, int c0,
                                int c1, float * Y, float * row) {
    for (int k = 0; k < n; ++k) {
        std::fill(Y + (size_t) k * ncols + c0, Y + (size_t) k * ncols + c1, 0.0f);
    }
    for (int j = 0; j < K; ++j) {
        halves_to_floats(M + (size_t) j * ncols + c0, (size_t) ncols, 1, c1 - c0, row);
        axpy_rows(rows, n, j, row, ncols, c0, c1, Y);
    }
}

// h' = h + alpha * (y + b - h) for columns c0..c1 of every row (b may be null).
LINGALIGN_MULTIVERSION
static void blend_columns(float * const * rows, int n, const float * Y, const float * b, float alpha, int d, int c0,
                          int c1) {
    for (int k = 0; k < n; ++k) {
        float * h = rows[k];
        const float * y = Y + (size_t) k * d;
        for (int i = c0; i < c1; ++i) {
            const float target = b ? y[i] + b[i] : y[i];
            h[i] = h[i] + alpha * (target - h[i]);
        }
    }
}

// h' = h + alpha * (delta + b) for every row (b may be null): the low-rank map's update.
LINGALIGN_MULTIVERSION
static void add_delta_rows(float * const * rows, int n, const float * D, const float * b, float alpha, int d) {
    for (int k = 0; k < n; ++k) {
        float * h = rows[k];
        const float * delta = D + (size_t) k * d;
        for (int i = 0; i < d; ++i) {
            h[i] += alpha * (b ? delta[i] + b[i] : delta[i]);
        }
    }
}

// h' = h + alpha * v for every row.
LINGALIGN_MULTIVERSION
static void apply_additive_rows(float * const * rows, int n, const float * v, float alpha, int d) {
    for (int k = 0; k < n; ++k) {
        float * h = rows[k];
        for (int i = 0; i < d; ++i) {
            h[i] += alpha * v[i];
        }
    }
}

// z_m <- z_m + alpha * (value_m - z_m) for the clamped neurons; alpha 1 stores the value exactly
// (z + (v - z) can differ from v in the last bit).
static void apply_clamp_rows(float * const * rows, int n, const int32_t * index, const float * value, int k,
                             float alpha) {
    for (int r = 0; r < n; ++r) {
        float * z = rows[r];
        if (alpha == 1.0f) {
            for (int j = 0; j < k; ++j) {
                z[index[j]] = value[j];
            }
        } else {
            for (int j = 0; j < k; ++j) {
                z[index[j]] += alpha * (value[j] - z[index[j]]);
            }
        }
    }
}

} // namespace lingalign
