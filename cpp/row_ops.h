// What each kind of layer transform does to a row once the map's product is known: scale an
// int8 map's columns, blend toward the mapped row, add a low-rank delta or a vector, clamp
// neurons. Header-only, no llama.cpp dependency.
#pragma once

#include <cstddef>
#include <cmath>
#include <cstdint>

#include "kernels.h"

namespace lingalign {

// Y[k][i] *= scale[i] for every row: an int8 map's column scales, applied after the sum.
LINGALIGN_MULTIVERSION
static void scale_columns(float * Y, int n, const float * scale, int d) {
    for (int k = 0; k < n; ++k) {
        float * y = Y + (size_t) k * d;
        for (int i = 0; i < d; ++i) {
            y[i] *= scale[i];
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

// h' = (h + alpha v) * |h| / |h + alpha v| for every row: the shift's direction, the row's norm
// (norms summed in double; a row that the shift sends to zero is left at zero).
static void apply_shift_rows(float * const * rows, int n, const float * v, float alpha, int d) {
    for (int k = 0; k < n; ++k) {
        float * h = rows[k];
        double before = 0.0, after = 0.0;
        for (int i = 0; i < d; ++i) {
            before += (double) h[i] * h[i];
            h[i] += alpha * v[i];
            after += (double) h[i] * h[i];
        }
        if (after > 0.0) {
            const double scale = std::sqrt(before / after);
            for (int i = 0; i < d; ++i) {
                h[i] = (float) (h[i] * scale);
            }
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
