#include "hook.h"

#include "device_maps.h"

#include "kernels.h"
#include "kernels_q4.h"
#include "thread_pool.h"

#include "ggml-backend.h"
#include "ggml.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <functional>
#include <map>
#include <type_traits>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <type_traits>

namespace lingalign {

namespace {

constexpr char kResidualPrefix[] = "l_out-";
constexpr size_t kResidualPrefixLen = sizeof(kResidualPrefix) - 1;

std::string format(const char * fmt, long long a, long long b = 0, long long c = 0, long long d = 0) {
    char buf[256];
    std::snprintf(buf, sizeof(buf), fmt, a, b, c, d);
    return buf;
}

} // namespace

Hook::Hook(int n_embd, int n_layer) : n_embd_(n_embd), n_layer_(n_layer) {
    if (n_embd <= 0 || n_layer <= 0) {
        throw std::invalid_argument("n_embd and n_layer must be positive");
    }
    device_maps_ = std::make_unique<DeviceMaps>(n_layer);
    layers_.resize(n_layer);
    clamps_.resize(n_layer);
    capture_width_ = n_embd;
    capture_layer_index_.assign(n_layer, -1);
}

Hook::~Hook() = default;

void Hook::set_threads(int n_threads) {
    if (n_threads < 1 || n_threads > 512) {
        throw std::invalid_argument("n_threads must be in 1..512");
    }
    std::lock_guard<std::mutex> lock(mutex_);
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

int Hook::threads() const {
    return n_threads_;
}

// Below this many multiply-adds a single thread is faster than a parallel region.
constexpr size_t kParallelWork = size_t(1) << 16;
void Hook::run_tasks(int n_tasks, const std::function<void(int)> & task) {
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

int Hook::column_tasks(int n, int K, int ncols, int * unit) const {
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
void Hook::multiply(const float * const * rows, int n, int K, const T * M, int ncols, float * Y) {
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

void Hook::multiply_q4(const float * const * rows, int n, const LayerTransform & lt, float * Y) {
    const int d = n_embd_;
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

void Hook::apply_affine(float * const * rows, int n, const LayerTransform & lt) {
    const int d = n_embd_;
    float * Y = grow(map_out_, (size_t) n * d);
    const float * bias = lt.bias.empty() ? nullptr : lt.bias.data();
    if (lt.kind == LayerTransform::AFFINE_Q8 || lt.kind == LayerTransform::AFFINE_Q4) {
        if (lt.kind == LayerTransform::AFFINE_Q8) {
            multiply(rows, n, d, lt.matrix_q.data(), d, Y);
        } else {
            multiply_q4(rows, n, lt, Y);
        }
        scale_columns(Y, n, lt.scale.data(), d);
        add_delta_rows(rows, n, Y, bias, alpha_, d);
        return;
    }
    if (lt.half) {
        multiply(rows, n, d, lt.matrix_h.data(), d, Y);
    } else {
        multiply(rows, n, d, lt.matrix.data(), d, Y);
    }
    // Every row is read by every task above, so the rows change only after all have finished.
    blend_columns(rows, n, Y, bias, alpha_, d, 0, d);
}

void Hook::apply_lowrank(float * const * rows, int n, const LayerTransform & lt) {
    // h' = h + alpha * (h @ U @ Vt + b): 2 d r multiply-adds per row instead of d^2.
    const int d = n_embd_;
    const int r = lt.rank;
    float * T = grow(low_out_, (size_t) n * r);
    if (lt.half) {
        multiply(rows, n, d, lt.lr_u_h.data(), r, T);
    } else {
        multiply(rows, n, d, lt.lr_u.data(), r, T);
    }
    low_ptrs_.resize(n);
    for (int k = 0; k < n; ++k) {
        low_ptrs_[k] = T + (size_t) k * r;
    }
    float * D = grow(map_out_, (size_t) n * d);
    if (lt.half) {
        multiply(low_ptrs_.data(), n, r, lt.lr_vt_h.data(), d, D);
    } else {
        multiply(low_ptrs_.data(), n, r, lt.lr_vt.data(), d, D);
    }
    add_delta_rows(rows, n, D, lt.bias.empty() ? nullptr : lt.bias.data(), alpha_, d);
}

static void check_finite(const float * v, size_t n, int layer, const char * what) {
    for (size_t i = 0; i < n; ++i) {
        if (!std::isfinite(v[i])) {
            throw std::invalid_argument("layer " + std::to_string(layer) + ": " + what + " contains NaN or Inf");
        }
    }
}

static void check_layer(int layer, int n_layer) {
    if (layer < 0 || layer >= n_layer) {
        throw std::out_of_range("unknown layer " + std::to_string(layer) + ": the model has layers 0.." +
                                std::to_string(n_layer - 1));
    }
}

// The optional bias of a map, checked: empty when there is none.
static std::vector<float> checked_bias(int layer, size_t d, const float * bias, size_t bias_len) {
    if (bias == nullptr) {
        return {};
    }
    if (bias_len != d) {
        throw std::invalid_argument("layer " + std::to_string(layer) + ": bias has " + std::to_string(bias_len) +
                                    " values, the model needs " + std::to_string(d));
    }
    check_finite(bias, bias_len, layer, "bias");
    return std::vector<float>(bias, bias + bias_len);
}

// float16: finite unless the exponent bits are all ones (Inf or NaN).
static void check_finite(const uint16_t * v, size_t n, int layer, const char * what) {
    for (size_t i = 0; i < n; ++i) {
        if ((v[i] & 0x7C00u) == 0x7C00u) {
            throw std::invalid_argument("layer " + std::to_string(layer) + ": " + what + " contains NaN or Inf");
        }
    }
}

static void check_affine_shape(int layer, size_t d, size_t matrix_len) {
    if (matrix_len != d * d) {
        throw std::invalid_argument("layer " + std::to_string(layer) + ": map has " + std::to_string(matrix_len) +
                                    " values, the model needs " + std::to_string(d) + "x" + std::to_string(d));
    }
}

static void check_lowrank_shape(int layer, size_t d, size_t u_len, size_t vt_len, int rank) {
    if (rank < 1 || (size_t) rank > d) {
        throw std::invalid_argument("layer " + std::to_string(layer) + ": rank " + std::to_string(rank) +
                                    " must be in 1.." + std::to_string(d));
    }
    if (u_len != d * rank || vt_len != d * rank) {
        throw std::invalid_argument("layer " + std::to_string(layer) + ": low-rank factors must be [" +
                                    std::to_string(d) + " x " + std::to_string(rank) + "] and [" +
                                    std::to_string(rank) + " x " + std::to_string(d) + "]");
    }
}

// A map's storage for its element type: float32, or float16 halves (`half` layers).
template <typename T> static std::vector<T> & storage(std::vector<float> & f32, std::vector<uint16_t> & f16);
template <> std::vector<float> & storage<float>(std::vector<float> & f32, std::vector<uint16_t> &) {
    return f32;
}
template <> std::vector<uint16_t> & storage<uint16_t>(std::vector<float> &, std::vector<uint16_t> & f16) {
    return f16;
}

// M [K x ncols] in the kernels' panel layout (kernels.h).
template <typename T> static std::vector<T> packed(const T * M, int K, int ncols) {
    std::vector<T> out((size_t) K * ncols);
    pack_panels(M, K, ncols, out.data());
    return out;
}

// y = h @ M + b, M [d x d], as float32 or float16: checked, then stored for the layer.
template <typename T>
static LayerTransform make_affine(int layer, size_t d, const T * matrix, size_t matrix_len, const float * bias,
                                  size_t bias_len) {
    check_affine_shape(layer, d, matrix_len);
    check_finite(matrix, matrix_len, layer, "map");
    LayerTransform lt;
    lt.kind = LayerTransform::AFFINE;
    lt.half = std::is_same<T, uint16_t>::value;
    storage<T>(lt.matrix, lt.matrix_h) = packed(matrix, (int) d, (int) d);
    lt.bias = checked_bias(layer, d, bias, bias_len);
    return lt;
}

// y = h + h @ U @ Vt + b, U [d x rank], Vt [rank x d], as float32 or float16.
template <typename T>
static LayerTransform make_lowrank(int layer, size_t d, const T * u, size_t u_len, const T * vt, size_t vt_len,
                                   int rank, const float * bias, size_t bias_len) {
    check_lowrank_shape(layer, d, u_len, vt_len, rank);
    check_finite(u, u_len, layer, "low-rank factor U");
    check_finite(vt, vt_len, layer, "low-rank factor V");
    LayerTransform lt;
    lt.kind = LayerTransform::LOWRANK;
    lt.half = std::is_same<T, uint16_t>::value;
    storage<T>(lt.lr_u, lt.lr_u_h) = packed(u, (int) d, rank);
    storage<T>(lt.lr_vt, lt.lr_vt_h) = packed(vt, rank, (int) d);
    lt.rank = rank;
    lt.bias = checked_bias(layer, d, bias, bias_len);
    return lt;
}

void Hook::store_layer(int layer, LayerTransform lt) {
    std::lock_guard<std::mutex> lock(mutex_);
    layers_[layer] = std::move(lt);
    device_maps_->forget(layer);
}

void Hook::set_device_maps(int mode) {
    if (mode < DeviceMaps::OFF || mode > DeviceMaps::EVERYWHERE) {
        throw std::invalid_argument("device maps mode must be 0 (off), 1 (device tensors) or 2 (all tensors)");
    }
    std::lock_guard<std::mutex> lock(mutex_);
    device_maps_->set_mode((DeviceMaps::Mode) mode);
}

void Hook::set_host_round_trip(bool on) {
    std::lock_guard<std::mutex> lock(mutex_);
    host_round_trip_ = on;
}

std::string Hook::device_maps_status() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return device_maps_->status();
}

void Hook::set_affine(int layer, const float * matrix, size_t matrix_len, const float * bias, size_t bias_len) {
    check_layer(layer, n_layer_);
    store_layer(layer, make_affine(layer, (size_t) n_embd_, matrix, matrix_len, bias, bias_len));
}

void Hook::set_affine_f16(int layer, const uint16_t * matrix, size_t matrix_len, const float * bias,
                          size_t bias_len) {
    check_layer(layer, n_layer_);
    store_layer(layer, make_affine(layer, (size_t) n_embd_, matrix, matrix_len, bias, bias_len));
}

void Hook::set_lowrank(int layer, const float * u, size_t u_len, const float * vt, size_t vt_len, int rank,
                       const float * bias, size_t bias_len) {
    check_layer(layer, n_layer_);
    store_layer(layer, make_lowrank(layer, (size_t) n_embd_, u, u_len, vt, vt_len, rank, bias, bias_len));
}

void Hook::set_lowrank_f16(int layer, const uint16_t * u, size_t u_len, const uint16_t * vt, size_t vt_len, int rank,
                           const float * bias, size_t bias_len) {
    check_layer(layer, n_layer_);
    store_layer(layer, make_lowrank(layer, (size_t) n_embd_, u, u_len, vt, vt_len, rank, bias, bias_len));
}

// The column scales and bias of an 8- or 4-bit map, checked; the caller adds the bytes.
static LayerTransform quantized_map(int layer, size_t d, LayerTransform::Kind kind, const float * scale,
                                    size_t scale_len, const float * bias, size_t bias_len) {
    if (scale_len != d) {
        throw std::invalid_argument("layer " + std::to_string(layer) + ": scale has " + std::to_string(scale_len) +
                                    " values, the model needs " + std::to_string(d));
    }
    check_finite(scale, scale_len, layer, "scale");
    LayerTransform lt;
    lt.kind = kind;
    lt.scale.assign(scale, scale + scale_len);
    lt.bias = checked_bias(layer, d, bias, bias_len);
    return lt;
}

void Hook::set_affine_q8(int layer, const int8_t * q, size_t q_len, const float * scale, size_t scale_len,
                         const float * bias, size_t bias_len) {
    check_layer(layer, n_layer_);
    const size_t d = (size_t) n_embd_;
    check_affine_shape(layer, d, q_len);
    LayerTransform lt = quantized_map(layer, d, LayerTransform::AFFINE_Q8, scale, scale_len, bias, bias_len);
    lt.matrix_q = packed(q, (int) d, (int) d);
    store_layer(layer, std::move(lt));
}

void Hook::set_affine_q4(int layer, const uint8_t * q, size_t q_len, const float * scale, size_t scale_len,
                         const float * bias, size_t bias_len) {
    check_layer(layer, n_layer_);
    const size_t d = (size_t) n_embd_;
    if (d % 2 != 0) {
        throw std::invalid_argument("layer " + std::to_string(layer) + ": 4-bit maps need an even n_embd, the model has " +
                                    std::to_string(d));
    }
    if (q_len != d * d / 2) {
        throw std::invalid_argument("layer " + std::to_string(layer) + ": 4-bit map has " + std::to_string(q_len) +
                                    " bytes, the model needs " + std::to_string(d) + "x" + std::to_string(d / 2));
    }
    LayerTransform lt = quantized_map(layer, d, LayerTransform::AFFINE_Q4, scale, scale_len, bias, bias_len);
    lt.matrix_q4 = pack_q4_panels(q, (int) d, (int) d);
    store_layer(layer, std::move(lt));
}

size_t Hook::map_bytes(int layer) const {
    check_layer(layer, n_layer_);
    std::lock_guard<std::mutex> lock(mutex_);
    const LayerTransform & lt = layers_[layer];
    return (lt.matrix.size() + lt.lr_u.size() + lt.lr_vt.size() + lt.scale.size()) * sizeof(float) +
           (lt.matrix_h.size() + lt.lr_u_h.size() + lt.lr_vt_h.size()) * sizeof(uint16_t) + lt.matrix_q.size() +
           lt.matrix_q4.size();
}

void Hook::set_additive(int layer, const float * vector, size_t len) {
    check_layer(layer, n_layer_);
    if (len != (size_t) n_embd_) {
        throw std::invalid_argument("layer " + std::to_string(layer) + ": vector has " + std::to_string(len) +
                                    " values, the model needs " + std::to_string(n_embd_));
    }
    check_finite(vector, len, layer, "vector");
    LayerTransform lt;
    lt.kind = LayerTransform::ADDITIVE;
    lt.vector.assign(vector, vector + len);
    store_layer(layer, std::move(lt));
}

void Hook::set_ffn(const std::string & tensor_prefix, int n_ff) {
    if (tensor_prefix.empty() || tensor_prefix.size() > 48 || n_ff <= 0) {
        throw std::invalid_argument("set_ffn needs a tensor name (1..48 characters) and a positive width");
    }
    std::lock_guard<std::mutex> lock(mutex_);
    for (const auto & c : clamps_) {
        if (!c.index.empty()) {
            throw std::logic_error("clear the neuron clamps before changing the FFN tensor");
        }
    }
    ffn_prefix_ = tensor_prefix + "-";
    n_ff_ = n_ff;
}

void Hook::set_clamp(int layer, const int32_t * index, size_t n_index, const float * value, size_t n_value) {
    check_layer(layer, n_layer_);
    std::lock_guard<std::mutex> lock(mutex_);
    if (n_ff_ == 0) {
        throw std::logic_error("neuron clamps need the model's FFN activation tensor (set_ffn) first");
    }
    if (n_index == 0 || n_index != n_value) {
        throw std::invalid_argument("layer " + std::to_string(layer) + ": a clamp needs as many values as indices (got " +
                                    std::to_string(n_index) + " and " + std::to_string(n_value) + ")");
    }
    std::vector<uint8_t> seen((size_t) n_ff_, 0);
    for (size_t k = 0; k < n_index; ++k) {
        if (index[k] < 0 || index[k] >= n_ff_) {
            throw std::out_of_range("layer " + std::to_string(layer) + ": neuron " + std::to_string(index[k]) +
                                    " out of range (the FFN has " + std::to_string(n_ff_) + " neurons)");
        }
        if (seen[index[k]]++) {
            throw std::invalid_argument("layer " + std::to_string(layer) + ": neuron " + std::to_string(index[k]) +
                                        " is clamped twice");
        }
    }
    check_finite(value, n_value, layer, "clamp values");
    NeuronClamp c;
    c.index.assign(index, index + n_index);
    c.value.assign(value, value + n_value);
    clamps_[layer] = std::move(c);
    device_maps_->forget(layer);
}

void Hook::clear_layer(int layer) {
    check_layer(layer, n_layer_);
    std::lock_guard<std::mutex> lock(mutex_);
    layers_[layer] = LayerTransform();
    clamps_[layer] = NeuronClamp();
    device_maps_->forget(layer);
}

void Hook::clear_transforms() {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto & lt : layers_) {
        lt = LayerTransform();
    }
    for (auto & c : clamps_) {
        c = NeuronClamp();
    }
    device_maps_->forget_all();
}

void Hook::set_alpha(float alpha) {
    if (!std::isfinite(alpha)) {
        throw std::invalid_argument("alpha must be a finite number");
    }
    std::lock_guard<std::mutex> lock(mutex_);
    alpha_ = alpha;
}

float Hook::alpha() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return alpha_;
}

bool Hook::layer_active(int il) const {
    return layers_[il].kind != LayerTransform::NONE || !clamps_[il].index.empty();
}

std::vector<int> Hook::active_layers() const {
    std::lock_guard<std::mutex> lock(mutex_);
    std::vector<int> out;
    for (int il = 0; il < n_layer_; ++il) {
        if (layer_active(il)) {
            out.push_back(il);
        }
    }
    return out;
}

bool Hook::wants_batch(bool applies) const {
    std::lock_guard<std::mutex> lock(mutex_);
    if (capturing_) {
        return true;
    }
    if (!applies || alpha_ == 0.0f) {
        return false;
    }
    for (int il = 0; il < n_layer_; ++il) {
        if (layer_active(il)) {
            return true;
        }
    }
    return false;
}

void Hook::set_batch(int n_ubatch, const uint8_t * flags, const int32_t * slots, size_t n_tokens) {
    if (n_ubatch <= 0) {
        throw std::invalid_argument("n_ubatch must be positive");
    }
    std::lock_guard<std::mutex> lock(mutex_);
    if (slots != nullptr) {
        for (size_t i = 0; i < n_tokens; ++i) {
            if (slots[i] >= n_slots_) {
                throw std::out_of_range("capture slot " + std::to_string(slots[i]) + " out of range (" +
                                        std::to_string(n_slots_) + " slots)");
            }
        }
    }
    n_ubatch_ = n_ubatch;
    flags_.assign(flags, flags + n_tokens);
    if (slots != nullptr) {
        slots_.assign(slots, slots + n_tokens);
    } else {
        slots_.assign(n_tokens, -1);
    }
    output_prefix_.assign(n_tokens + 1, 0);
    batch_applies_ = false;
    for (size_t i = 0; i < n_tokens; ++i) {
        output_prefix_[i + 1] = output_prefix_[i] + ((flags_[i] & ROW_OUTPUT) ? 1 : 0);
        batch_applies_ = batch_applies_ || (flags_[i] & ROW_APPLY);
    }
    ubatch_index_ = -1;
    last_key_seen_ = 0;
    visits_ = 0;
    batch_active_ = true;
}

void Hook::set_batch_from_logits(int n_ubatch, const int8_t * logits, size_t n_tokens, int apply) {
    if (apply != APPLY_NONE && apply != APPLY_ALL && apply != APPLY_LAST) {
        throw std::invalid_argument("apply must be APPLY_NONE, APPLY_ALL or APPLY_LAST");
    }
    if (logits == nullptr && n_tokens > 0) {
        throw std::invalid_argument("the batch has no logits array");
    }
    std::vector<uint8_t> flags(n_tokens);
    for (size_t i = 0; i < n_tokens; ++i) {
        const bool applies = apply == APPLY_ALL || (apply == APPLY_LAST && i + 1 == n_tokens);
        flags[i] = (uint8_t) ((logits[i] != 0 ? ROW_OUTPUT : 0) | (applies ? ROW_APPLY : 0));
    }
    set_batch(n_ubatch, flags.data(), nullptr, n_tokens);
}

int Hook::end_batch() {
    std::lock_guard<std::mutex> lock(mutex_);
    batch_active_ = false;
    return visits_;
}

void Hook::start_capture(const std::vector<int> & layers, int n_slots, bool stop_after_last, int site) {
    if (n_slots < 0) {
        throw std::invalid_argument("n_slots must be >= 0");
    }
    if (site != SITE_RESIDUAL && site != SITE_FFN) {
        throw std::invalid_argument("unknown capture site " + std::to_string(site));
    }
    std::vector<int> sorted = layers;
    std::sort(sorted.begin(), sorted.end());
    sorted.erase(std::unique(sorted.begin(), sorted.end()), sorted.end());
    for (int il : sorted) {
        check_layer(il, n_layer_);
    }
    std::lock_guard<std::mutex> lock(mutex_);
    if (site == SITE_FFN && n_ff_ == 0) {
        throw std::logic_error("capturing FFN activations needs the model's FFN tensor (set_ffn) first");
    }
    capture_site_ = site;
    capture_width_ = site == SITE_FFN ? n_ff_ : n_embd_;
    capture_layers_ = sorted;
    capture_layer_index_.assign(n_layer_, -1);
    for (size_t k = 0; k < sorted.size(); ++k) {
        capture_layer_index_[sorted[k]] = (int) k;
    }
    n_slots_ = n_slots;
    const size_t cells = (size_t) n_slots * sorted.size();
    sums_.assign(cells * capture_width_, 0.0);
    counts_.assign(cells, 0);
    last_.assign(cells * capture_width_, 0.0f);
    stop_after_last_ = stop_after_last;
    capturing_ = !sorted.empty();
}

void Hook::stop_capture() {
    std::lock_guard<std::mutex> lock(mutex_);
    capturing_ = false;
    capture_layer_index_.assign(n_layer_, -1);
    capture_layers_.clear();
    n_slots_ = 0;
    sums_.clear();
    sums_.shrink_to_fit();
    counts_.clear();
    last_.clear();
    last_.shrink_to_fit();
}

void Hook::capture_results(std::vector<double> & sums, std::vector<int64_t> & counts, std::vector<float> & last) const {
    std::lock_guard<std::mutex> lock(mutex_);
    sums = sums_;
    counts = counts_;
    last = last_;
}

int Hook::capture_width() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return capture_width_;
}

std::vector<int> Hook::capture_layers() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return capture_layers_;
}

std::string Hook::take_error() {
    std::lock_guard<std::mutex> lock(mutex_);
    std::string e;
    e.swap(error_);
    return e;
}

int64_t Hook::take_rows_transformed() {
    std::lock_guard<std::mutex> lock(mutex_);
    const int64_t n = rows_transformed_;
    rows_transformed_ = 0;
    return n;
}

double Hook::take_apply_seconds() {
    std::lock_guard<std::mutex> lock(mutex_);
    const double s = apply_seconds_;
    apply_seconds_ = 0.0;
    return s;
}

Hook::TensorPaths Hook::take_tensor_paths() {
    std::lock_guard<std::mutex> lock(mutex_);
    const TensorPaths p = tensor_paths_;
    tensor_paths_ = TensorPaths();
    return p;
}

void Hook::fail(const std::string & message) {
    if (error_.empty()) {
        error_ = message;
    }
}

void Hook::fail_locked(const std::string & message) noexcept {
    try {
        std::lock_guard<std::mutex> lock(mutex_);
        fail(message);
    } catch (...) {
    }
}

int Hook::parse_layer(const char * p) const {
    if (*p == '\0') {
        return -1;
    }
    int il = 0;
    for (; *p; ++p) {
        if (*p < '0' || *p > '9' || il > n_layer_) {
            return -1;
        }
        il = il * 10 + (*p - '0');
    }
    return il < n_layer_ ? il : -1;
}

int Hook::parse_site(const char * name, int * site) const {
    if (std::strncmp(name, kResidualPrefix, kResidualPrefixLen) == 0) {
        *site = SITE_RESIDUAL;
        return parse_layer(name + kResidualPrefixLen);
    }
    if (!ffn_prefix_.empty() && std::strncmp(name, ffn_prefix_.c_str(), ffn_prefix_.size()) == 0) {
        *site = SITE_FFN;
        return parse_layer(name + ffn_prefix_.size());
    }
    return -1;
}

bool Hook::has_transform(int il, int site) const {
    return site == SITE_RESIDUAL ? layers_[il].kind != LayerTransform::NONE : !clamps_[il].index.empty();
}

bool Hook::on_ask(const ggml_tensor * t) {
    if (!batch_active_) {
        return false;
    }
    int site = SITE_RESIDUAL;
    const int il = parse_site(t->name, &site);
    if (il < 0) {
        return false;
    }
    const bool transform = batch_applies_ && alpha_ != 0.0f && has_transform(il, site);
    const bool capture = capturing_ && capture_site_ == site && capture_layer_index_[il] >= 0;
    return transform || capture;
}

// The rows of runs_ between t's memory and data ([rows x width] on the host), either way.
void Hook::copy_runs(ggml_tensor * t, float * data, int width, bool to_tensor) const {
    const size_t row_bytes = (size_t) width * sizeof(float);
    for (const auto & run : runs_) {
        float * rows = data + (size_t) run.first * width;
        const size_t offset = run.first * row_bytes, size = (size_t) (run.second - run.first) * row_bytes;
        if (to_tensor) {
            ggml_backend_tensor_set(t, rows, offset, size);
        } else {
            ggml_backend_tensor_get(t, rows, offset, size);
        }
    }
}

// The maps, vectors or clamps of a layer on the rows runs_ selects (n_apply of them) of data,
// [rows x width] in host memory, by lingalign's CPU kernels.
void Hook::transform_rows(float * data, int width, int site, const LayerTransform & lt, const NeuronClamp & clamp,
                          int n_apply) {
    row_ptrs_.clear();
    for (const auto & run : runs_) {
        for (int r = run.first; r < run.second; ++r) {
            row_ptrs_.push_back(data + (size_t) r * width);
        }
    }
    const auto start = std::chrono::steady_clock::now();
    if (site == SITE_FFN) {
        apply_clamp_rows(row_ptrs_.data(), n_apply, clamp.index.data(), clamp.value.data(), (int) clamp.index.size(),
                         alpha_);
    } else if (lt.kind == LayerTransform::AFFINE || lt.kind == LayerTransform::AFFINE_Q8 ||
               lt.kind == LayerTransform::AFFINE_Q4) {
        apply_affine(row_ptrs_.data(), n_apply, lt);
    } else if (lt.kind == LayerTransform::LOWRANK) {
        apply_lowrank(row_ptrs_.data(), n_apply, lt);
    } else {
        apply_additive_rows(row_ptrs_.data(), n_apply, lt.vector.data(), alpha_, n_embd_);
    }
    rows_transformed_ += n_apply;
    apply_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Capture: each row's token adds it to its slot's sum (ROW_POOL) or stores it as the slot's last
// row (ROW_LAST), for captured layer il.
void Hook::capture_rows(const float * data, long long n_rows, int width, int il) {
    const size_t n_cap = capture_layers_.size();
    const size_t ci = (size_t) capture_layer_index_[il];
    for (long long r = 0; r < n_rows; ++r) {
        const int32_t tok = row_tokens_[r];
        const int32_t slot = slots_[tok];
        if (slot < 0) {
            continue;
        }
        const float * row = data + (size_t) r * width;
        const size_t cell = (size_t) slot * n_cap + ci;
        if (flags_[tok] & ROW_POOL) {
            double * acc = sums_.data() + cell * width;
            for (int i = 0; i < width; ++i) {
                acc[i] += row[i];
            }
            counts_[cell] += 1;
        }
        if (flags_[tok] & ROW_LAST) {
            std::memcpy(last_.data() + cell * width, row, width * sizeof(float));
        }
    }
}

bool Hook::on_data(ggml_tensor * t) {
    int site = SITE_RESIDUAL;
    const int il = parse_site(t->name, &site);
    if (il < 0 || !batch_active_) {
        return true;
    }
    ++visits_;
    // Each ubatch visits the requested nodes in graph order: layer by layer, FFN before l_out.
    const int key = 2 * il + site;
    if (ubatch_index_ < 0 || key <= last_key_seen_) {
        ++ubatch_index_;
    }
    last_key_seen_ = key;
    const int width = site == SITE_RESIDUAL ? n_embd_ : n_ff_;

    const long long n_tokens = (long long) flags_.size();
    const long long ub_start = (long long) ubatch_index_ * n_ubatch_;
    if (ub_start >= n_tokens) {
        fail(std::string(t->name) + format(" seen in ubatch %lld, but the announced batch has only %lld tokens "
                                           "(n_ubatch %lld): llama.cpp split the batch in an unexpected way",
                                           ubatch_index_, n_tokens, n_ubatch_));
        return true;
    }
    const long long ub_n = std::min<long long>(n_ubatch_, n_tokens - ub_start);
    const long long n_out = output_prefix_[ub_start + ub_n] - output_prefix_[ub_start];

    if (t->type != GGML_TYPE_F32 || t->ne[0] != width || t->ne[2] != 1 || t->ne[3] != 1 ||
        t->nb[0] != sizeof(float) || t->nb[1] != (size_t) width * sizeof(float)) {
        fail(std::string(t->name) + format(" is not a contiguous F32 [%lld, tokens] tensor (type %lld, ne0 %lld)",
                                           width, (long long) t->type, (long long) t->ne[0]) +
             (site == SITE_FFN ? ": the FFN width given to set_ffn does not match the model" : ""));
        return true;
    }
    const long long n_rows = t->ne[1];
    const bool all_rows = n_rows == ub_n;
    if (!all_rows && n_rows != n_out) {
        fail(std::string(t->name) +
             format(" has %lld rows; expected %lld (ubatch tokens) or %lld (outputs)", n_rows, ub_n, n_out));
        return true;
    }
    const bool keep_going =
        !(capturing_ && stop_after_last_ && site == capture_site_ && il == capture_layers_.back());
    if (n_rows == 0) {
        return keep_going;
    }

    // Token index of every row.
    row_tokens_.resize(n_rows);
    if (all_rows) {
        for (long long r = 0; r < n_rows; ++r) {
            row_tokens_[r] = (int32_t) (ub_start + r);
        }
    } else {
        long long r = 0;
        for (long long i = ub_start; i < ub_start + ub_n; ++i) {
            if (flags_[i] & ROW_OUTPUT) {
                row_tokens_[r++] = (int32_t) i;
            }
        }
    }

    const size_t n_floats = (size_t) n_rows * width;
    const bool in_host_memory = t->buffer == nullptr || ggml_backend_buffer_is_host(t->buffer);
    const bool direct = in_host_memory && !host_round_trip_;  // read and written through t->data
    const LayerTransform & lt = layers_[il];
    const NeuronClamp & clamp = clamps_[il];
    const bool transforming = has_transform(il, site) && alpha_ != 0.0f;
    const bool capture_here = capturing_ && capture_site_ == site && capture_layer_index_[il] >= 0;

    // The rows the position policy selects, as runs [first, end) of row indices.
    runs_.clear();
    int n_apply = 0;
    for (int r = 0; transforming && r < (int) n_rows; ++r) {
        if (flags_[row_tokens_[r]] & ROW_APPLY) {
            if (!runs_.empty() && runs_.back().second == r) {
                runs_.back().second = r + 1;
            } else {
                runs_.emplace_back(r, r + 1);
            }
            ++n_apply;
        }
    }

    // On the tensor's own device (set_device_maps), unless a capture needs the rows on the host.
    if (transforming && !capture_here && device_maps_->wants(in_host_memory)) {
        const auto start = std::chrono::steady_clock::now();
        const int done = n_apply == 0 ? 1
                                      : device_maps_->apply(t, il, site == SITE_FFN, lt, clamp, alpha_, runs_, n_threads_);
        if (done < 0) {
            fail(std::string(t->name) + ": " + device_maps_->status());
            return true;
        }
        if (done > 0) {
            ++tensor_paths_.device;
            rows_transformed_ += n_apply;
            if (n_apply > 0) {
                apply_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
            }
            return keep_going;
        }
        // Not served there: the round trip below.
    }

    float * data = nullptr;
    if (direct) {
        data = (float *) t->data;
        ++tensor_paths_.host;
    } else {
        // Device memory: a capture reads every row; a transform alone copies only the rows it
        // changes (one of a prompt's rows under positions=last), there and back.
        ++tensor_paths_.round_trip;
        row_buffer_.resize(n_floats);
        data = row_buffer_.data();
        if (capture_here) {
            ggml_backend_tensor_get(t, data, 0, n_floats * sizeof(float));
        } else {
            copy_runs(t, data, width, false);
        }
    }
    if (data == nullptr) {
        fail(std::string(t->name) + " has no data");
        return true;
    }

    if (n_apply > 0) {
        transform_rows(data, width, site, lt, clamp, n_apply);
    }
    if (capture_here) {
        capture_rows(data, n_rows, width, il);
    }

    if (n_apply > 0 && !direct) {
        copy_runs(t, data, width, true);
    }
    // Nothing after the last captured layer is read in a capture-only context: returning false
    // skips the rest of the graph (the later layers and the output head).
    return keep_going;
}

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

bool Hook::eval_callback(ggml_tensor * t, bool ask, void * user_data) {
    Hook * self = static_cast<Hook *>(user_data);
    if (self == nullptr || t == nullptr) {
        return ask ? false : true;
    }
    try {
        std::lock_guard<std::mutex> lock(self->mutex_);
        return ask ? self->on_ask(t) : self->on_data(t);
    } catch (const std::exception & e) {
        self->fail_locked(std::string("lingalign hook: ") + e.what());
    } catch (...) {
        self->fail_locked("lingalign hook: unknown error");
    }
    // Asked: do not request the node. Data: keep computing, the error is raised after decode.
    return ask ? false : true;
}

} // namespace lingalign
