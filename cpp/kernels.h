// Row kernels for the residual-stream transforms. Header-only, no llama.cpp dependency.
//
// Convention (numpy-natural, the one the fitting code uses): a map M is [n_embd x n_embd]
// row-major and sends a row vector h to y = h @ M, i.e. y[i] = sum_j h[j] * M[j*d + i].
#pragma once

#include <algorithm>
#include <cstddef>

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

// Rows processed together: each row of M is loaded once per block instead of once per row.
constexpr int kRowBlock = 4;

// rows[k] (k < n) point to rows of width d, modified in place:
//   h' = h + alpha * (h @ M + b - h)        (b may be null)
// tmp must hold kRowBlock * d floats. With M = I and b = 0 the result is bit-identical to h.
LINGALIGN_MULTIVERSION
static void apply_affine_rows(float * const * rows, int n, const float * M, const float * b,
                              float alpha, int d, float * tmp) {
    for (int r0 = 0; r0 < n; r0 += kRowBlock) {
        const int nb = std::min(kRowBlock, n - r0);
        std::fill(tmp, tmp + (size_t) nb * d, 0.0f);
        for (int j = 0; j < d; ++j) {
            const float * Mj = M + (size_t) j * d;
            for (int k = 0; k < nb; ++k) {
                const float a = rows[r0 + k][j];
                float * y = tmp + (size_t) k * d;
                for (int i = 0; i < d; ++i) {
                    y[i] += a * Mj[i];
                }
            }
        }
        for (int k = 0; k < nb; ++k) {
            float * h = rows[r0 + k];
            const float * y = tmp + (size_t) k * d;
            for (int i = 0; i < d; ++i) {
                const float target = b ? y[i] + b[i] : y[i];
                h[i] = h[i] + alpha * (target - h[i]);
            }
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

} // namespace lingalign
