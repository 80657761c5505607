// The per-context intervention object handed to llama.cpp as cb_eval_user_data.
//
// llama.cpp calls eval_callback(t, ask=true) for every graph node to learn which nodes we want
// to see, then eval_callback(t, ask=false) once such a node is computed. We ask only for the
// residual-stream tensors `l_out-<il>` of layers that the selected transform changes or that
// are being captured, and nothing at all while idle, so an idle hook leaves the graph unsplit
// (vanilla speed).
//
// With set_ffn() the hook also serves one MLP tensor per layer, the activation that feeds the
// down projection (`ffn_geglu-<il>` in gemma3, `ffn_swiglu-<il>` in llama and qwen2): neuron
// clamps are applied there and neuron activations can be captured from it.
//
// Transforms are prepared elsewhere (PreparedTransform: checked and packed once); the hook
// holds a shared reference to the selected one and switches in O(1). Which token each row is
// comes from the announced batch (BatchRows); capture accumulates in Capture; the arithmetic is
// RowKernels' (host memory) or DeviceMaps' (a ggml graph on the tensor's own device).
#pragma once

#include "batch_rows.h"
#include "capture.h"
#include "prepared_transform.h"
#include "row_kernels.h"

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

struct ggml_tensor;

namespace lingalign {

class DeviceMaps;

class Hook {
public:
    Hook(int n_embd, int n_layer);
    ~Hook();
    Hook(const Hook &) = delete;
    Hook & operator=(const Hook &) = delete;

    int n_embd() const { return n_embd_; }
    int n_layer() const { return n_layer_; }
    int n_ff() const;

    // The FFN activation tensor's name prefix ("ffn_geglu") and width; needed before clamps or
    // FFN capture, and before preparing transforms with clamps for this hook.
    void set_ffn(const std::string & tensor_prefix, int n_ff);

    // Use `prepared` (null: none) at strength alpha from the next decode on: O(1). Throws
    // std::invalid_argument if it was prepared for another model shape or alpha is not finite.
    void select(std::shared_ptr<const PreparedTransform> prepared, float alpha);
    std::shared_ptr<const PreparedTransform> selected() const;
    float alpha() const;
    std::vector<int> active_layers() const;
    // Whether a batch must be announced: when capturing, or when some of its tokens are to be
    // transformed (`applies`; `generated`: they are generated tokens) and a transform acts on
    // them. Otherwise the callback requests no tensor and llama.cpp runs its graph unsplit.
    bool wants_batch(bool applies, bool generated) const;

    void set_threads(int n_threads);
    int threads() const;

    // Batch announcement, one call per llama_decode (see BatchRows).
    void set_batch(int n_ubatch, const uint8_t * flags, const int32_t * slots, size_t n_tokens);
    void set_batch_from_logits(int n_ubatch, const int8_t * logits, size_t n_tokens, int apply, bool generated);
    int end_batch();  // how many requested tensors the callback saw in the batch

    // Capture the chosen layers at `site` (see Capture).
    void start_capture(const std::vector<int> & layers, int n_slots, bool stop_after_last, int site);
    void stop_capture();
    int capture_width() const;
    std::vector<int> capture_layers() const;
    void capture_results(std::vector<double> & sums, std::vector<int64_t> & counts, std::vector<float> & last) const;

    // Diagnostics since the last call of each (which clears it): the first error the callback
    // saw (or ""), rows transformed, wall time spent applying transforms, and how the callback
    // reached the tensors' data: in host memory, through a copy from device memory and back,
    // or transformed on the device (set_device_maps).
    struct TensorPaths {
        int64_t host = 0;
        int64_t round_trip = 0;
        int64_t device = 0;
    };
    std::string take_error();
    int64_t take_rows_transformed();
    double take_apply_seconds();
    TensorPaths take_tensor_paths();

    // Tensors in device memory: 0 = copied to the host, transformed there and copied back (the
    // default); 1 = transformed on their device by a small ggml graph (device_maps.h); 2 = host
    // tensors too, on ggml's CPU backend, so that tests cover that path without a GPU.
    void set_device_maps(int mode);
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
    bool transforms(int il, int site) const;  // the selected transform acts on this node
    // Rows of runs_ between t's memory and data ([rows x width] on the host), either way.
    void copy_runs(ggml_tensor * t, float * data, int width, bool to_tensor) const;
    bool apply_on_device(ggml_tensor * t, int il, int n_apply, bool * failed);
    // Whether t is the contiguous F32 [width, rows] tensor expected (else the error is recorded).
    bool check_tensor(const ggml_tensor * t, int width, int site);
    // t's rows in host memory: t->data itself (*direct), or a copy of every row (all_rows) or of
    // the rows runs_ selects.
    float * host_rows(ggml_tensor * t, int width, bool all_rows, bool * direct);
    // The selected transform of layer il on the rows runs_ selects (n_apply of them).
    void transform_runs(float * data, int width, int il, int n_apply);
    void fail(const std::string & message);                  // mutex_ held
    void fail_locked(const std::string & message) noexcept;  // takes mutex_

    const int n_embd_;
    const int n_layer_;

    mutable std::mutex mutex_;  // Python may select transforms from another thread

    std::shared_ptr<const PreparedTransform> prepared_;  // null: none
    float alpha_ = 1.0f;
    std::string ffn_prefix_;  // "ffn_geglu-" once set_ffn() was called
    int n_ff_ = 0;

    BatchRows batch_;
    Capture capture_;
    RowKernels kernels_;
    std::unique_ptr<DeviceMaps> device_maps_;
    bool host_round_trip_ = false;

    // scratch, reused across calls
    std::vector<float> row_buffer_;  // device tensors are copied here
    std::vector<float *> row_ptrs_;
    std::vector<std::pair<int, int>> runs_;  // rows to transform, as [first, end) runs

    std::string error_;
    int64_t rows_transformed_ = 0;
    double apply_seconds_ = 0.0;
    TensorPaths tensor_paths_;
};

} // namespace lingalign
