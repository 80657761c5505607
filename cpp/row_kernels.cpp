#include "row_kernels.h"

#include "kernels.h"
#include "kernels_q4.h"
#include "row_ops.h"
#include "thread_pool.h"

#include <algorithm>
#include <stdexcept>
#include <type_traits>

namespace lingalign {

RowKernels::RowKernels() = default;
RowKernels::~RowKernels() = default;

void RowKernels::set_threads(int n_threads) {
    if (n_threads < 1 || n_threads > 512) {
        throw std::invalid_argument("n_threads must be in 1..512");
    }
    if (n_threads_ == n_threads) {
        return;
    }
    n_threads_ = n_threads;
#ifndef _OPENMP
    pool_.reset();
    if (n_threads > 1) {
        pool_ = std::make_unique<ThreadPool>(n_threads - 1);
    }
#endif
}

// Below this many multiply-adds a single thread is faster than a parallel region.
constexpr size_t kParallelWork = size_t(1) << 16;

void RowKernels::run_tasks(int n_tasks, const std::function<void(int)> & task) {
    if (n_tasks <= 1) {
        task(0);
        return;
    }
#ifdef _OPENMP
    // ggml's CPU backend computes on OpenMP threads, which spin for a while after each graph
    // split before sleeping: this region reuses that same team, already awake, instead of
    // waking threads of our own that would compete with the spinning ones for the cores.
#pragma omp parallel for num_threads(n_tasks) schedule(static, 1)
    for (int t = 0; t < n_tasks; ++t) {
        task(t);
    }
#else
    pool_->run(n_tasks, task);
#endif
}

template <typename T> static T * grow(std::vector<T> & v, size_t n) {
    if (v.size() < n) {
        v.resize(n);
    }
    return v.data();
}

int RowKernels::column_tasks(int n, int K, int ncols, int * unit) const {
    // Tasks take whole panels (whole groups of them for decode's one row), so they never write
    // the same cache line of Y and each streams its own contiguous part of the packed map.
    *unit = n == 1 ? kDecodePanels * kPanel : kPanel;
    const int n_units = (ncols + *unit - 1) / *unit;
    return (size_t) n * K * ncols >= kParallelWork ? std::min(n_threads_, n_units) : 1;
}

// Columns [c0, c1) of task t of n_tasks, in whole units of `unit` columns.
static void task_columns(int t, int n_tasks, int ncols, int unit, int * c0, int * c1) {
    const int n_units = (ncols + unit - 1) / unit;
    *c0 = std::min(ncols, (n_units * t / n_tasks) * unit);
    *c1 = std::min(ncols, (n_units * (t + 1) / n_tasks) * unit);
}

template <typename T>
void RowKernels::multiply(const float * const * rows, int n, int K, const T * M, int ncols, float * Y) {
    int unit = 0;
    const int n_tasks = column_tasks(n, K, ncols, &unit);
    const size_t scratch_floats = std::is_same<T, float>::value ? 0 : panel_scratch_floats(K);
    float * scratch = scratch_floats > 0 ? grow(half_scratch_, scratch_floats * n_tasks) : nullptr;
    run_tasks(n_tasks, [&](int t) {
        int c0 = 0, c1 = 0;
        task_columns(t, n_tasks, ncols, unit, &c0, &c1);
        float * own = scratch != nullptr ? scratch + scratch_floats * t : nullptr;
        if (n == 1) {
            matvec_packed(rows[0], K, M, ncols, c0, c1, Y, own);
        } else {
            matmul_packed(rows, n, K, M, ncols, c0, c1, Y, ncols, own);
        }
    });
}

void RowKernels::multiply_q4(const float * const * rows, int n, int d, const LayerTransform & lt, float * Y) {
    const int Kp = q4_padded_rows(d);
    const int nb = Kp / kQ4Block;
    int8_t * hq = grow(q4_rows_, (size_t) n * Kp);
    float * hs = grow(q4_scales_, (size_t) n * nb);
    int32_t * hsum = grow(q4_sums_, (size_t) n * nb);
    const bool portable = kernel_mode().load(std::memory_order_relaxed) != 0;
    // Every task below needs every row, so the rows are quantized first (split by rows).
    const int n_quantize = n >= 16 ? std::min(n_threads_, n / 8) : 1;
    run_tasks(n_quantize, [&](int t) {
        quantize_rows(rows, n * t / n_quantize, n * (t + 1) / n_quantize, d, hq, hs, hsum, portable);
    });
    int unit = 0;
    const int n_tasks = column_tasks(n, d, d, &unit);
    run_tasks(n_tasks, [&](int t) {
        int c0 = 0, c1 = 0;
        task_columns(t, n_tasks, d, unit, &c0, &c1);
        matmul_q4(hq, hs, hsum, n, Kp, lt.matrix_q4.data(), d, c0, c1, Y, d, portable);
    });
}

void RowKernels::apply_affine(float * const * rows, int n, int d, const LayerTransform & lt, float alpha) {
    float * Y = grow(map_out_, (size_t) n * d);
    const float * bias = lt.bias.empty() ? nullptr : lt.bias.data();
    if (lt.precision == Precision::Q8 || lt.precision == Precision::Q4) {
        if (lt.precision == Precision::Q8) {
            multiply(rows, n, d, lt.matrix_q.data(), d, Y);
        } else {
            multiply_q4(rows, n, d, lt, Y);
        }
        scale_columns(Y, n, lt.scale.data(), d);
        add_delta_rows(rows, n, Y, bias, alpha, d);
        return;
    }
    if (lt.precision == Precision::F16) {
        multiply(rows, n, d, lt.matrix_h.data(), d, Y);
    } else {
        multiply(rows, n, d, lt.matrix.data(), d, Y);
    }
    // Every row is read by every task above, so the rows change only after all have finished.
    blend_columns(rows, n, Y, bias, alpha, d, 0, d);
}

void RowKernels::apply_lowrank(float * const * rows, int n, int d, const LayerTransform & lt, float alpha) {
    // h' = h + alpha * (h @ U @ Vt + b): 2 d r multiply-adds per row instead of d^2.
    const int r = lt.rank;
    const bool half = lt.precision == Precision::F16;
    float * T = grow(low_out_, (size_t) n * r);
    if (half) {
        multiply(rows, n, d, lt.lr_u_h.data(), r, T);
    } else {
        multiply(rows, n, d, lt.lr_u.data(), r, T);
    }
    low_ptrs_.resize((size_t) n);
    for (int k = 0; k < n; ++k) {
        low_ptrs_[(size_t) k] = T + (size_t) k * r;
    }
    float * D = grow(map_out_, (size_t) n * d);
    if (half) {
        multiply(low_ptrs_.data(), n, r, lt.lr_vt_h.data(), d, D);
    } else {
        multiply(low_ptrs_.data(), n, r, lt.lr_vt.data(), d, D);
    }
    add_delta_rows(rows, n, D, lt.bias.empty() ? nullptr : lt.bias.data(), alpha, d);
}

void RowKernels::apply(float * const * rows, int n, int width, const LayerTransform & lt, float alpha) {
    switch (lt.kind) {
        case Kind::AFFINE: apply_affine(rows, n, width, lt, alpha); break;
        case Kind::LOWRANK: apply_lowrank(rows, n, width, lt, alpha); break;
        case Kind::ADDITIVE: apply_additive_rows(rows, n, lt.vector.data(), alpha, width); break;
        case Kind::SHIFT: apply_shift_rows(rows, n, lt.vector.data(), alpha, width); break;
        case Kind::CLAMP:
            apply_clamp_rows(rows, n, lt.index.data(), lt.value.data(), (int) lt.index.size(), alpha);
            break;
        case Kind::NONE: break;
    }
}

} // namespace lingalign
