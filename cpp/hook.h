// The per-context intervention object handed to llama.cpp as cb_eval_user_data.
//
// llama.cpp calls eval_callback(t, ask=true) for every graph node to learn which nodes we want
// to see, then eval_callback(t, ask=false) once such a node is computed. We ask only for the
// residual-stream tensors `l_out-<il>` of layers that have a transform or are being captured,
// and nothing at all while idle, so an idle hook leaves the graph unsplit (vanilla speed).
//
// With set_ffn() the hook also serves one MLP tensor per layer, the activation that feeds the
// down projection (`ffn_geglu-<il>` in gemma3, `ffn_swiglu-<il>` in llama and qwen2): neuron
// clamps are applied there and neuron activations can be captured from it.
//
// The callback is not told which tokens a node's rows belong to. The Python side announces
// each decode with set_batch() (one flag byte per token of the llama_batch); with one KV
// stream llama.cpp splits the batch into n_ubatch-sized ubatches in batch order
// (split_simple), and the last layer keeps only the rows of tokens that have an output.
// From that, row r of a node maps to a known token, and every mismatch is reported as an
// error instead of guessing.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <map>
#include <string>
#include <vector>

struct ggml_tensor;

namespace lingalign {

class ThreadPool;
class DeviceMaps;

// One flag byte per token of the announced batch.
enum RowFlag : uint8_t {
    ROW_OUTPUT = 1,  // token has an output (logits): its row survives into the last layer
    ROW_APPLY = 2,   // the position policy selects this token for the transforms
    ROW_POOL = 4,    // capture: include this token in the mean (BOS is left out)
    ROW_LAST = 8,    // capture: last token of its sentence
};

// Which tensor of a layer a node is; the FFN activation is computed before the layer's l_out.
enum Site : int {
    SITE_FFN = 0,
    SITE_RESIDUAL = 1,
};

// do(z_m = value_m) for the listed neurons of a layer's FFN activation (language expert neurons).
struct NeuronClamp {
    std::vector<int32_t> index;
    std::vector<float> value;
};

struct LayerTransform {
    // AFFINE_Q8: y = h + (h @ Q) * scale + b, Q [d*d] int8 with one scale per column: the
    // difference M - I of a map quantized to 8 bits (a quarter of float32's bytes per token).
    // AFFINE_Q4: the same with Q in -8..7, two values per byte (an eighth); h is quantized to
    // int8 per block of 32 for the integer dot products (kernels_q4.h).
    enum Kind { NONE, AFFINE, AFFINE_Q8, AFFINE_Q4, LOWRANK, ADDITIVE } kind = NONE;
    // float32 maps use matrix/lr_u/lr_vt; float16 maps (half = true) the *_h copies instead
    // (IEEE binary16 bit patterns), converted to float32 in the kernels, accumulated in float32.
    // All are stored packed by column panels (kernels.h: pack_panels), not row-major.
    bool half = false;
    std::vector<float> matrix;  // AFFINE: [d*d], y = h @ M
    std::vector<float> lr_u;    // LOWRANK: [d*r], M = I + U @ Vt
    std::vector<float> lr_vt;   // LOWRANK: [r*d]
    std::vector<uint16_t> matrix_h, lr_u_h, lr_vt_h;
    std::vector<int8_t> matrix_q;  // AFFINE_Q8: [d*d]
    std::vector<uint8_t> matrix_q4;  // AFFINE_Q4: padded panels (kernels_q4.h: pack_q4_panels)
    std::vector<float> scale;      // AFFINE_Q8, AFFINE_Q4: [d]
    int rank = 0;
    std::vector<float> bias;    // AFFINE, LOWRANK: [d] or empty
    std::vector<float> vector;  // ADDITIVE: [d]
};

class Hook {
public:
    Hook(int n_embd, int n_layer);
    ~Hook();
    Hook(const Hook &) = delete;
    Hook & operator=(const Hook &) = delete;

    int n_embd() const { return n_embd_; }
    int n_layer() const { return n_layer_; }

    // Transforms. Shapes are checked; a bad shape throws std::invalid_argument.
    void set_affine(int layer, const float * matrix, size_t matrix_len, const float * bias, size_t bias_len);
    void set_lowrank(int layer, const float * u, size_t u_len, const float * vt, size_t vt_len, int rank,
                     const float * bias, size_t bias_len);
    // The same with float16 storage: IEEE binary16 bit patterns, half the bytes read per row.
    // The bias stays float32.
    void set_affine_f16(int layer, const uint16_t * matrix, size_t matrix_len, const float * bias, size_t bias_len);
    void set_lowrank_f16(int layer, const uint16_t * u, size_t u_len, const uint16_t * vt, size_t vt_len, int rank,
                         const float * bias, size_t bias_len);
    // y = h + (h @ Q) * scale + b: an 8-bit map difference Q [d x d] with a scale per column.
    void set_affine_q8(int layer, const int8_t * q, size_t q_len, const float * scale, size_t scale_len,
                       const float * bias, size_t bias_len);
    // The same in 4 bits: q [d x d/2] bytes, byte [j, k] holding Q[j, 2k] + 8 in its low
    // nibble and Q[j, 2k+1] + 8 in its high one (the file layout); d must be even.
    void set_affine_q4(int layer, const uint8_t * q, size_t q_len, const float * scale, size_t scale_len,
                       const float * bias, size_t bias_len);
    void set_additive(int layer, const float * vector, size_t len);
    // Bytes of the map or factors stored for a layer (0 for none, an additive vector or a clamp).
    size_t map_bytes(int layer) const;
    // The FFN activation tensor's name prefix ("ffn_geglu") and width; needed before clamps or
    // FFN capture. Indices are checked against n_ff here and against the tensor at run time.
    void set_ffn(const std::string & tensor_prefix, int n_ff);
    void set_clamp(int layer, const int32_t * index, size_t n_index, const float * value, size_t n_value);
    void clear_layer(int layer);  // its map or vector and its clamp
    void clear_transforms();
    void set_alpha(float alpha);
    float alpha() const;
    std::vector<int> active_layers() const;
    // Whether a batch must be announced with set_batch: when capturing, or when some of its
    // tokens are to be transformed (`applies`) and a transform is active. Otherwise the
    // callback requests no tensor and llama.cpp runs its graph unsplit.
    bool wants_batch(bool applies) const;

    // Threads for the map kernel (the context's n_threads: llama.cpp's own sit idle meanwhile).
    void set_threads(int n_threads);
    int threads() const;

    // Batch announcement, one call per llama_decode. slots (may be null) maps each token to
    // a capture slot (sentence index) or -1.
    void set_batch(int n_ubatch, const uint8_t * flags, const int32_t * slots, size_t n_tokens);
    // The same for a generation batch, flags made here from the llama_batch's own logits bytes
    // (ROW_OUTPUT where nonzero) and the position policy's choice: ROW_APPLY on no token
    // (APPLY_NONE), every token (APPLY_ALL) or the last (APPLY_LAST). Every decoded token passes
    // through this, so it spares Python the numpy work (about 0.1 ms a token, cold caches).
    enum { APPLY_NONE = 0, APPLY_ALL = 1, APPLY_LAST = 2 };
    void set_batch_from_logits(int n_ubatch, const int8_t * logits, size_t n_tokens, int apply);
    // Ends the announced batch; returns how many requested tensors the callback saw in it.
    int end_batch();

    // Capture: accumulate the chosen layers' rows per slot. stop_after_last lets the callback
    // skip the rest of the graph (the output head) once the last captured layer is read; only
    // for contexts whose logits nobody reads.
    // site chooses the tensor: the residual stream (width n_embd) or the FFN activation (n_ff).
    void start_capture(const std::vector<int> & layers, int n_slots, bool stop_after_last, int site = SITE_RESIDUAL);
    void stop_capture();
    int capture_width() const;
    // Results, [n_slots][n_capture_layers][width] and [n_slots][n_capture_layers].
    void capture_results(std::vector<double> & sums, std::vector<int64_t> & counts, std::vector<float> & last) const;
    std::vector<int> capture_layers() const;

    // First error seen by the callback since the last call, or "" (clears it).
    std::string take_error();
    // Number of rows the transforms changed since the last call (clears it); for tests.
    int64_t take_rows_transformed();
    // Wall time the callback spent applying transforms since the last call (clears it): what
    // the intervention itself costs, apart from the rest of the decode.
    double take_apply_seconds();
    // How the callback reached the data of the tensors it served since the last call (clears
    // them): in host memory, or in device memory (CUDA, Metal) through a copy to the host and
    // back. For tests and benchmarks on GPU builds.
    struct TensorPaths {
        int64_t host = 0;
        int64_t round_trip = 0;
        int64_t device = 0;  // transformed where it lives, by a ggml graph (set_device_maps)
    };
    TensorPaths take_tensor_paths();

    // Tensors in device memory: 0 = copied to the host, transformed there and copied back (the
    // default, tested on CUDA); 1 = transformed on their device by a small ggml graph
    // (device_maps.h); 2 = host tensors too, on ggml's CPU backend, so that tests cover that
    // path without a GPU. Capture always reads the rows on the host.
    void set_device_maps(int mode);
    // "off", "ready", "active on <device>", or why the device path turned itself off.
    std::string device_maps_status() const;
    // Serve host tensors as device tensors are served, through ggml_backend_tensor_get/set (a
    // copy and back): lets tests cover the round trip without a GPU.
    void set_host_round_trip(bool on);

    // The function llama.cpp calls. Never throws: errors are stored for take_error().
    static bool eval_callback(ggml_tensor * t, bool ask, void * user_data);

private:
    bool on_ask(const ggml_tensor * t);
    bool on_data(ggml_tensor * t);
    int parse_site(const char * name, int * site) const;  // il of "l_out-<il>" or "<ffn>-<il>", or -1
    int parse_layer(const char * digits) const;
    bool has_transform(int il, int site) const;  // a map or vector (residual site) or a clamp (FFN site)
    void copy_runs(ggml_tensor * t, float * data, int width, bool to_tensor) const;
    void transform_rows(float * data, int width, int site, const LayerTransform & lt, const NeuronClamp & clamp,
                        int n_apply);
    void capture_rows(const float * data, long long n_rows, int width, int il);
    void apply_affine(float * const * rows, int n, const LayerTransform & lt);
    void apply_lowrank(float * const * rows, int n, const LayerTransform & lt);
    void store_layer(int layer, LayerTransform lt);  // takes mutex_
    bool layer_active(int il) const;  // a map, vector or clamp is set (mutex_ held)
    // Calls task(t) for t in [0, n_tasks) on the kernel threads; returns when all are done.
    void run_tasks(int n_tasks, const std::function<void(int)> & task);
    // Y [n x ncols] = rows [n x K] @ M [K x ncols], M packed by panels (float32, float16 bit
    // patterns or int8), on the kernel threads when the work is large enough.
    template <typename T> void multiply(const float * const * rows, int n, int K, const T * M, int ncols, float * Y);
    // How many tasks share Y [n x ncols] = rows [n x K] @ M, each taking whole units of *unit
    // columns (task_columns in hook.cpp says which).
    int column_tasks(int n, int K, int ncols, int * unit) const;
    // Y [n x d] = rows @ Q for a 4-bit map: the rows quantized per block, then integer dots.
    void multiply_q4(const float * const * rows, int n, const LayerTransform & lt, float * Y);
    void fail(const std::string & message);           // mutex_ held
    void fail_locked(const std::string & message) noexcept;  // takes mutex_

    const int n_embd_;
    const int n_layer_;

    mutable std::mutex mutex_;  // Python may change transforms from another thread

    std::vector<LayerTransform> layers_;
    std::vector<NeuronClamp> clamps_;  // per layer; empty index = none
    std::string ffn_prefix_;           // "ffn_geglu-" once set_ffn() was called
    int n_ff_ = 0;
    float alpha_ = 1.0f;

    // announced batch
    bool batch_active_ = false;
    bool batch_applies_ = false;  // some token has ROW_APPLY
    int n_ubatch_ = 0;
    std::vector<uint8_t> flags_;
    std::vector<int32_t> slots_;
    std::vector<int32_t> output_prefix_;  // number of ROW_OUTPUT tokens before token i
    int ubatch_index_ = -1;
    int last_key_seen_ = 0;  // 2 * il + site of the previous node: a smaller key starts a new ubatch
    int visits_ = 0;

    // capture
    bool capturing_ = false;
    bool stop_after_last_ = false;
    int capture_site_ = SITE_RESIDUAL;
    int capture_width_ = 0;
    int n_slots_ = 0;
    std::vector<int> capture_layer_index_;  // layer -> index into captured layers, or -1
    std::vector<int> capture_layers_;
    std::vector<double> sums_;
    std::vector<int64_t> counts_;
    std::vector<float> last_;

    // scratch, reused across calls
    std::vector<float> row_buffer_;  // device tensors are copied here
    std::vector<float *> row_ptrs_;
    std::vector<int32_t> row_tokens_;
    std::vector<float> map_out_;  // [rows x d] results of the map, grown as needed
    std::vector<float> low_out_;  // [rows x rank] for low-rank maps
    std::vector<const float *> low_ptrs_;
    std::vector<float> half_scratch_;  // float16 maps: converted panel rows, one block per task
    std::vector<int8_t> q4_rows_;      // 4-bit maps: the rows quantized per block of 32
    std::vector<float> q4_scales_;     // and their scales
    std::vector<int32_t> q4_sums_;     // and the sums of their int8 values
    int n_threads_ = 1;
    std::unique_ptr<ThreadPool> pool_;  // without OpenMP: the kernel threads
    std::unique_ptr<DeviceMaps> device_maps_;
    bool host_round_trip_ = false;
    std::vector<std::pair<int, int>> runs_;  // rows to transform, as [first, end) runs

    std::string error_;
    int64_t rows_transformed_ = 0;
    double apply_seconds_ = 0.0;
    TensorPaths tensor_paths_;
};

// IEEE binary16 -> float32 for n values, with the conversion the kernels use (F16C where the
// CPU has it), or the portable one; for tests.
void half_to_float_array(const uint16_t * src, size_t n, float * dst, bool portable);
// How the kernels run: false = with the AVX2, AVX-512 and F16C code where the CPU has it
// (default), true = with the portable code only (tests); process-wide.
void set_portable_kernels(bool portable);
// Whether the SIMD code may use AVX-512 and VNNI (default) or stops at AVX2 (tests); process-wide.
void set_wide_kernels(bool wide);
// Whether this CPU has AVX-512 or VNNI code for the kernels to use.
bool wide_kernels_available();
// The code the kernels run now, on this CPU: "float_prompt" and "float_decode" (avx512, avx2 or
// portable; float32, float16 and int8 maps) and "q4_prompt" (avxvnni, avx512vnni, avx2 or
// portable).
std::map<std::string, std::string> kernel_paths();
// The VNNI variants of the 4-bit prompt kernel this CPU can run ("avxvnni", "avx512vnni").
std::vector<std::string> q4_vnni_available();
// Force one of them ("auto" = the best; the default); process-wide, for tests.
void set_q4_vnni(const std::string & which);
// Whether the kernels convert halves with F16C now.
bool half_conversion_uses_f16c();
// Y [n x d] = rows [n x d] @ Q for a 4-bit map q [d x d/2] in the file layout, with the hook's
// kernel (rows quantized per block of 32, integer dots; no scales), on one thread; for tests.
void q4_multiply_rows(const float * rows, int n, int d, const uint8_t * q, float * Y, bool portable);

} // namespace lingalign
