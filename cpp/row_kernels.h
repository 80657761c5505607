// A layer transform applied to rows in host memory by lingalign's CPU kernels, on the kernel
// threads, with the scratch buffers the kernels reuse from call to call.
#pragma once

#include "layer_transform.h"

#include <functional>
#include <memory>
#include <vector>

namespace lingalign {

class ThreadPool;

class RowKernels {
public:
    RowKernels();
    ~RowKernels();
    RowKernels(const RowKernels &) = delete;
    RowKernels & operator=(const RowKernels &) = delete;

    // Threads for the map kernel (the context's n_threads: llama.cpp's own sit idle meanwhile).
    void set_threads(int n_threads);
    int threads() const { return n_threads_; }

    // rows[0..n) (each `width` floats: n_embd for the residual kinds, n_ff for a clamp) become
    // h' as lt says at strength alpha.
    void apply(float * const * rows, int n, int width, const LayerTransform & lt, float alpha);

private:
    void apply_affine(float * const * rows, int n, int d, const LayerTransform & lt, float alpha);
    void apply_lowrank(float * const * rows, int n, int d, const LayerTransform & lt, float alpha);
    // Calls task(t) for t in [0, n_tasks) on the kernel threads; returns when all are done.
    void run_tasks(int n_tasks, const std::function<void(int)> & task);
    // Y [n x ncols] = rows [n x K] @ M, M packed by panels (float32, float16 bit patterns or
    // int8), on the kernel threads when the work is large enough.
    template <typename T> void multiply(const float * const * rows, int n, int K, const T * M, int ncols, float * Y);
    // How many tasks share Y [n x ncols] = rows [n x K] @ M, each taking whole units of *unit columns.
    int column_tasks(int n, int K, int ncols, int * unit) const;
    // Y [n x d] = rows @ Q for a 4-bit map: the rows quantized per block, then integer dots.
    void multiply_q4(const float * const * rows, int n, int d, const LayerTransform & lt, float * Y);

    int n_threads_ = 1;
    std::unique_ptr<ThreadPool> pool_;  // without OpenMP: the kernel threads
    std::vector<float> map_out_;        // [rows x d] results of the map, grown as needed
    std::vector<float> low_out_;        // [rows x rank] for low-rank maps
    std::vector<const float *> low_ptrs_;
    std::vector<float> half_scratch_;   // float16 and int8 maps: converted panel rows, one block per task
    std::vector<int8_t> q4_rows_;       // 4-bit maps: the rows quantized per block of 32
    std::vector<float> q4_scales_;      // and their scales
    std::vector<int32_t> q4_sums_;      // and the sums of their int8 values
};

} // namespace lingalign
