// Row kernels for the residual-stream transforms. Header-only, no llama.cpp dependency.
//
// Convention (numpy-natural, the one the fitting code uses): a map M is [n_embd x n_embd]
// row-major and sends a row vector h to y = h @ M, i.e. y[i] = sum_j h[j] * M[j*d + i].
//
// Y = H @ M is computed panel by panel: a panel is kPanel columns of M ([d x kPanel], 40 KB
// for d = 640, stays in L2 while every block of kRows rows streams past it), and the
// micro-kernel keeps a kRows x kPanel tile of Y in registers (8 AVX registers). Panels are
// independent, which is how the work is split between threads.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>

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

// Y = H @ M for a few rows (decode): streams M row by row, contiguous, which the prefetcher
// follows best when the map does not fit in cache. Same exactness as matmul_columns.
LINGALIGN_MULTIVERSION
static void matmul_few_rows(const float * const * rows, int n, int K, const float * M, int ncols, float * Y) {
    std::fill(Y, Y + (size_t) n * ncols, 0.0f);
    for (int j = 0; j < K; ++j) {
        const float * m = M + (size_t) j * ncols;
        for (int k = 0; k < n; ++k) {
            const float a = rows[k][j];
            float * y = Y + (size_t) k * ncols;
            for (int i = 0; i < ncols; ++i) {
                y[i] += a * m[i];
            }
        }
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
