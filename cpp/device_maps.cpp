#include "device_maps.h"

#include "layer_transform.h"
#include "panels.h"

#include <ggml-alloc.h>
#include <ggml-backend.h>
#include <ggml.h>

#include <algorithm>

namespace lingalign {

DeviceMaps::DeviceMaps(int n_layer) : layers_((size_t) n_layer) {}

DeviceMaps::~DeviceMaps() {
    stop();
}

void DeviceMaps::stop() {
    forget_all();
    if (galloc_) {
        ggml_gallocr_free(galloc_);
        galloc_ = nullptr;
    }
    if (backend_) {
        ggml_backend_free(backend_);
        backend_ = nullptr;
    }
    device_ = nullptr;
}

void DeviceMaps::set_mode(Mode mode) {
    // The backend and weights stay: turning the path off and on again (lingalign bench does, every
    // turn) must not upload the maps again. start() lets go of them if they were made for
    // another mode.
    mode_ = mode;
    failure_.clear();  // a new choice gets a new try
}

std::string DeviceMaps::status() const {
    if (!failure_.empty()) {
        return "off: " + failure_;
    }
    if (mode_ == OFF) {
        return "off";
    }
    return device_ && started_for_ == mode_ ? std::string("active on ") + ggml_backend_dev_name(device_) : "ready";
}

void DeviceMaps::turn_off(const std::string & why) {
    failure_ = why;
}

void DeviceMaps::release(Weights & w) {
    if (w.buffer) {
        ggml_backend_buffer_free(w.buffer);
    }
    if (w.ctx) {
        ggml_free(w.ctx);
    }
    w = Weights();
}

void DeviceMaps::forget(int il) {
    if (il >= 0 && il < (int) layers_.size()) {
        release(layers_[il].residual);
        release(layers_[il].ffn);
    }
}

void DeviceMaps::forget_all() {
    for (int il = 0; il < (int) layers_.size(); ++il) {
        forget(il);
    }
}

bool DeviceMaps::start(ggml_tensor * t, bool host) {
    if (backend_ && started_for_ != mode_) {
        stop();  // ggml's CPU backend, started for mode 2, must not keep mode 1 off the GPU
    }
    // The device that owns the tensor's buffer; ggml's CPU buffers name none, so a host tensor
    // (EVERYWHERE, for tests) goes to the CPU backend.
    ggml_backend_dev_t dev = nullptr;
    if (t->buffer) {
        dev = ggml_backend_buft_get_device(ggml_backend_buffer_get_type(t->buffer));
    }
    if (host && (dev == nullptr || ggml_backend_dev_type(dev) != GGML_BACKEND_DEVICE_TYPE_CPU)) {
        dev = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
    }
    if (dev == nullptr) {
        turn_off(std::string(t->name) + "'s buffer names no ggml device");
        return false;
    }
    if (backend_ && dev == device_) {
        return true;
    }
    if (backend_) {
        // Another device than the one whose backend we hold (a model split over two GPUs): this
        // tensor takes the round trip.
        return false;
    }
    backend_ = ggml_backend_dev_init(dev, nullptr);
    if (backend_ == nullptr) {
        turn_off(std::string("could not start a ggml backend on ") + ggml_backend_dev_name(dev));
        return false;
    }
    galloc_ = ggml_gallocr_new(ggml_backend_get_default_buffer_type(backend_));
    if (galloc_ == nullptr) {
        turn_off("could not create a graph allocator");
        return false;
    }
    device_ = dev;
    started_for_ = mode_;
    return true;
}

bool DeviceMaps::upload(Weights & w, const LayerTransform & layer, int width) {
    const LayerTransform * lt = &layer;
    ggml_init_params params = {ggml_tensor_overhead() * 4, nullptr, true};
    w.ctx = ggml_init(params);
    if (w.ctx == nullptr) {
        return false;
    }
    const int d = width;
    std::vector<float> a32, b32, bias32;
    std::vector<ggml_fp16_t> a16, b16;
    if (lt->kind == Kind::CLAMP) {
        a32.assign((size_t) d, 0.0f);
        b32.assign((size_t) d, 0.0f);
        for (size_t k = 0; k < lt->index.size(); ++k) {
            a32[(size_t) lt->index[k]] = 1.0f;
            b32[(size_t) lt->index[k]] = lt->value[k];
        }
        w.a = ggml_new_tensor_1d(w.ctx, GGML_TYPE_F32, d);
        w.b = ggml_new_tensor_1d(w.ctx, GGML_TYPE_F32, d);
    } else if (lt->kind == Kind::ADDITIVE) {
        bias32 = lt->vector;
    } else if (lt->kind == Kind::LOWRANK) {
        const int r = lt->rank;
        // y = h + alpha (h U Vt + b): ggml wants U^T [r x d] and V = Vt^T [d x r].
        const bool half = lt->precision == Precision::F16;
        if (half) {
            a16.resize((size_t) d * r);
            b16.resize((size_t) d * r);
            transpose_panels(lt->lr_u_h.data(), d, r, a16.data());
            transpose_panels(lt->lr_vt_h.data(), r, d, b16.data());
        } else {
            a32.resize((size_t) d * r);
            b32.resize((size_t) d * r);
            transpose_panels(lt->lr_u.data(), d, r, a32.data());
            transpose_panels(lt->lr_vt.data(), r, d, b32.data());
        }
        const ggml_type type = half ? GGML_TYPE_F16 : GGML_TYPE_F32;
        w.a = ggml_new_tensor_2d(w.ctx, type, d, r);
        w.b = ggml_new_tensor_2d(w.ctx, type, r, d);
        bias32 = lt->bias;
    } else {
        // AFFINE: y = h M (then blended with h); AFFINE_Q8/Q4: y = h (Q * scale), M - I.
        if (lt->precision == Precision::F32) {
            a32.resize((size_t) d * d);
            transpose_panels(lt->matrix.data(), d, d, a32.data());
        } else if (lt->precision == Precision::F16) {
            a16.resize((size_t) d * d);
            transpose_panels(reinterpret_cast<const ggml_fp16_t *>(lt->matrix_h.data()), d, d, a16.data());
        } else {
            a16.resize((size_t) d * d);
            std::vector<float> row((size_t) d);
            const int Kp = q4_padded_rows(d);
            std::vector<int8_t> q8t;
            if (lt->precision == Precision::Q8) {
                q8t.resize((size_t) d * d);
                transpose_panels(lt->matrix_q.data(), d, d, q8t.data());
            }
            for (int i = 0; i < d; ++i) {
                for (int j = 0; j < d; ++j) {
                    const int q = lt->precision == Precision::Q8 ? q8t[(size_t) i * d + j]
                                                                        : q4_panel_value(lt->matrix_q4.data(), Kp, j, i);
                    row[(size_t) j] = (float) q * lt->scale[(size_t) i];
                }
                ggml_fp32_to_fp16_row(row.data(), a16.data() + (size_t) i * d, d);
            }
        }
        w.a = ggml_new_tensor_2d(w.ctx, a32.empty() ? GGML_TYPE_F16 : GGML_TYPE_F32, d, d);
        bias32 = lt->bias;
    }
    if (!bias32.empty()) {
        w.bias = ggml_new_tensor_1d(w.ctx, GGML_TYPE_F32, d);
    }
    w.buffer = ggml_backend_alloc_ctx_tensors(w.ctx, backend_);
    if (w.buffer == nullptr) {
        return false;
    }
    auto put = [](ggml_tensor * dst, const void * src) {
        if (dst) {
            ggml_backend_tensor_set(dst, src, 0, ggml_nbytes(dst));
        }
    };
    put(w.a, a32.empty() ? (const void *) a16.data() : (const void *) a32.data());
    put(w.b, b32.empty() ? (const void *) b16.data() : (const void *) b32.data());
    put(w.bias, bias32.data());
    return true;
}

int DeviceMaps::apply(ggml_tensor * t, int il, const LayerTransform & lt, float alpha,
                      const std::vector<std::pair<int, int>> & runs, int n_threads) {
    const bool ffn_site = lt.kind == Kind::CLAMP;
    const bool host = t->buffer == nullptr || ggml_backend_buffer_is_host(t->buffer);
    // a shift's norm restore is not built as a graph here: the round trip serves it
    if (lt.kind == Kind::SHIFT || !wants(host) || runs.empty() || t->buffer == nullptr || !start(t, host)) {
        return 0;
    }
    // ggml_backend_tensor_alloc asserts (aborts) unless the memory lies in the buffer: check first.
    const char * base = (const char *) ggml_backend_buffer_get_base(t->buffer);
    const char * data = (const char *) t->data;
    if (data == nullptr || data < base || data + ggml_nbytes(t) > base + ggml_backend_buffer_get_size(t->buffer)) {
        return 0;
    }
    const int width = (int) t->ne[0];
    Weights & w = ffn_site ? layers_[il].ffn : layers_[il].residual;
    if (w.ctx == nullptr && !upload(w, lt, width)) {
        release(w);
        turn_off("could not put layer " + std::to_string(il) + "'s map on " + ggml_backend_dev_name(device_));
        return 0;
    }
    if (ggml_backend_dev_type(device_) == GGML_BACKEND_DEVICE_TYPE_CPU) {
        // ggml's CPU backend would otherwise take every core; use the context's threads.
        auto set_threads = (ggml_backend_set_n_threads_t) ggml_backend_reg_get_proc_address(
            ggml_backend_dev_backend_reg(device_), "ggml_backend_set_n_threads");
        if (set_threads) {
            set_threads(backend_, n_threads);
        }
    }

    // At most 9 nodes a run (the low-rank map with a bias), and their tensors.
    const size_t max_nodes = 9 * runs.size() + 8;
    graph_meta_.resize(ggml_tensor_overhead() * (2 * max_nodes + 8) + ggml_graph_overhead_custom(max_nodes, false));
    ggml_init_params params = {graph_meta_.size(), graph_meta_.data(), true};
    ggml_context * ctx = ggml_init(params);
    if (ctx == nullptr) {
        turn_off("could not make a ggml context");
        return 0;
    }
    // x: the tensor's own memory, described in our context.
    ggml_tensor * x = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, width, t->ne[1]);
    bool ok = ggml_backend_tensor_alloc(t->buffer, x, t->data) == GGML_STATUS_SUCCESS;
    ggml_cgraph * gf = ggml_new_graph_custom(ctx, max_nodes, false);
    for (size_t k = 0; ok && k < runs.size(); ++k) {
        const int r0 = runs[k].first, n = runs[k].second - runs[k].first;
        ggml_tensor * h = ggml_view_2d(ctx, x, width, n, x->nb[1], (size_t) r0 * x->nb[1]);
        ggml_tensor * out = nullptr;
        if (ffn_site) {
            // z (1 - alpha m) + alpha m v: at alpha 1 exactly v on the clamped neurons, and
            // exactly z elsewhere at any alpha.
            out = ggml_add(ctx, ggml_mul(ctx, h, ggml_scale_bias(ctx, w.a, -alpha, 1.0f)), ggml_scale(ctx, w.b, alpha));
        } else if (lt.kind == Kind::ADDITIVE) {
            out = ggml_add(ctx, h, ggml_scale(ctx, w.bias, alpha));
        } else {
            ggml_tensor * y = lt.kind == Kind::LOWRANK ? ggml_mul_mat(ctx, w.b, ggml_mul_mat(ctx, w.a, h))
                                                                 : ggml_mul_mat(ctx, w.a, h);
            if (w.bias) {
                y = ggml_add(ctx, y, w.bias);
            }
            if (lt.kind == Kind::AFFINE && (lt.precision == Precision::F32 || lt.precision == Precision::F16)) {
                y = ggml_sub(ctx, y, h);  // h + alpha (h M + b - h)
            }
            out = ggml_add(ctx, h, ggml_scale(ctx, y, alpha));
        }
        ggml_build_forward_expand(gf, ggml_cpy(ctx, out, h));
    }
    for (int i = 0; ok && i < ggml_graph_n_nodes(gf); ++i) {
        ggml_tensor * node = ggml_graph_node(gf, i);
        if (!ggml_backend_supports_op(backend_, node)) {
            turn_off(std::string(ggml_backend_dev_name(device_)) + " cannot run " + ggml_op_desc(node));
            ggml_free(ctx);
            return 0;
        }
    }
    if (!ok || !ggml_gallocr_alloc_graph(galloc_, gf)) {
        ggml_free(ctx);
        turn_off(std::string("could not allocate a graph on ") + ggml_backend_dev_name(device_));
        return 0;
    }
    const bool computed = ggml_backend_graph_compute(backend_, gf) == GGML_STATUS_SUCCESS;
    ggml_free(ctx);
    if (!computed) {
        // The rows may be half written: the caller reports an error, and the hook keeps to the
        // round trip from now on.
        turn_off(std::string("a graph on ") + ggml_backend_dev_name(device_) + " failed");
        return -1;
    }
    return 1;
}

} // namespace lingalign
