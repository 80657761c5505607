// Transforms applied where a tensor lives: on the ggml backend that owns its buffer (CUDA, Metal),
// as a small ggml graph, instead of copying the rows to the host, applying the map on the CPU and
// copying them back (the hook's default for device memory).
//
// Each layer's map goes to the device once, as a ggml weight (float32 maps as F32, the others as
// F16, transposed for ggml_mul_mat), on first use, and is dropped when the layer's transform
// changes. Each served tensor then costs one graph on a backend of our own for the same device:
// llama.cpp has synchronized its own backend before calling the callback, and
// ggml_backend_graph_compute returns once ours is done, so the next node reads the new rows.
//
// Anything this path cannot do (a backend it cannot start, an op the backend lacks, a failed
// allocation or compute) turns it off for the hook, with the reason kept in status(); the hook
// then takes the round trip, which is always there.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

struct ggml_tensor;
struct ggml_context;
struct ggml_backend;
struct ggml_backend_device;
struct ggml_backend_buffer;
struct ggml_gallocr;

namespace lingalign {

struct LayerTransform;

class DeviceMaps {
public:
    enum Mode {
        OFF = 0,         // device tensors take the host round trip
        DEVICE = 1,      // device tensors are transformed on their device
        EVERYWHERE = 2,  // host tensors too, on ggml's CPU backend: tests run this path without a GPU
    };

    explicit DeviceMaps(int n_layer);
    ~DeviceMaps();
    DeviceMaps(const DeviceMaps &) = delete;
    DeviceMaps & operator=(const DeviceMaps &) = delete;

    void set_mode(Mode mode);
    Mode mode() const { return mode_; }
    // Whether a tensor (host memory or not) is for this path now.
    bool wants(bool host) const { return failure_.empty() && (mode_ == EVERYWHERE || (mode_ == DEVICE && !host)); }
    // "off", "ready", "active on <device>", or why it turned itself off.
    std::string status() const;

    // h' for the rows [first, second) of each run of t ([width, rows], contiguous F32), in place
    // on t's device: the residual map or vector of lt, or its clamp (the FFN site). Returns 1 when
    // done; 0, with t unchanged, when this path cannot serve it (the caller takes the round
    // trip); -1 when the device failed while computing (t may be half written; status() says).
    int apply(ggml_tensor * t, int il, const LayerTransform & lt, float alpha,
              const std::vector<std::pair<int, int>> & runs, int n_threads);
    // The layer's transform changed: its device weights are stale.
    void forget(int il);
    void forget_all();

private:
    struct Weights {
        ggml_context * ctx = nullptr;
        ggml_backend_buffer * buffer = nullptr;
        ggml_tensor * a = nullptr;     // map (transposed), low-rank U^T, or clamp keep-mask
        ggml_tensor * b = nullptr;     // low-rank V, or clamp values
        ggml_tensor * bias = nullptr;  // bias or additive vector
    };
    struct Layer {
        Weights residual, ffn;
    };

    bool start(ggml_tensor * t, bool host);
    void stop();  // frees the weights, the allocator and the backend
    bool upload(Weights & w, const LayerTransform & lt, int width);
    void release(Weights & w);
    void turn_off(const std::string & why);

    Mode mode_ = OFF;
    Mode started_for_ = OFF;  // the mode backend_ was started in
    std::string failure_;
    ggml_backend_device * device_ = nullptr;
    ggml_backend * backend_ = nullptr;
    ggml_gallocr * galloc_ = nullptr;
    std::vector<Layer> layers_;
    std::vector<uint8_t> graph_meta_;  // ggml context memory for each graph's tensors
};

} // namespace lingalign
