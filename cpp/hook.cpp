#include "hook.h"

#include "device_maps.h"

#include "ggml-backend.h"
#include "ggml.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <utility>

namespace lingalign {

namespace {

constexpr char kResidualPrefix[] = "l_out-";
constexpr size_t kResidualPrefixLen = sizeof(kResidualPrefix) - 1;

double seconds_since(std::chrono::steady_clock::time_point start) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

} // namespace

Hook::Hook(int n_embd, int n_layer) : n_embd_(n_embd), n_layer_(n_layer) {
    if (n_embd <= 0 || n_layer <= 0) {
        throw std::invalid_argument("n_embd and n_layer must be positive");
    }
    device_maps_ = std::make_unique<DeviceMaps>(n_layer);
}

Hook::~Hook() = default;

int Hook::n_ff() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return n_ff_;
}

void Hook::set_ffn(const std::string & tensor_prefix, int n_ff) {
    if (tensor_prefix.empty() || tensor_prefix.size() > 48 || n_ff <= 0) {
        throw std::invalid_argument("set_ffn needs a tensor name (1..48 characters) and a positive width");
    }
    std::lock_guard<std::mutex> lock(mutex_);
    if (prepared_ && prepared_->n_ff() != n_ff) {
        throw std::logic_error("select no transform before changing the FFN tensor");
    }
    ffn_prefix_ = tensor_prefix + "-";
    n_ff_ = n_ff;
}

void Hook::select(std::shared_ptr<const PreparedTransform> prepared, float alpha) {
    if (!std::isfinite(alpha)) {
        throw std::invalid_argument("alpha must be a finite number");
    }
    std::lock_guard<std::mutex> lock(mutex_);
    if (prepared && (prepared->n_embd() != n_embd_ || prepared->n_layer() != n_layer_ || prepared->n_ff() != n_ff_)) {
        throw std::invalid_argument("this transform was prepared for another model shape");
    }
    if (prepared != prepared_) {
        device_maps_->forget_all();  // uploaded for the transform selected before
    }
    prepared_ = std::move(prepared);
    alpha_ = alpha;
}

std::shared_ptr<const PreparedTransform> Hook::selected() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return prepared_;
}

float Hook::alpha() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return alpha_;
}

std::vector<int> Hook::active_layers() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return prepared_ ? prepared_->layers() : std::vector<int>();
}

bool Hook::wants_batch(bool applies, bool generated) const {
    std::lock_guard<std::mutex> lock(mutex_);
    return capture_.active() || (applies && alpha_ != 0.0f && prepared_ && prepared_->acts_on(generated));
}

void Hook::set_threads(int n_threads) {
    std::lock_guard<std::mutex> lock(mutex_);
    kernels_.set_threads(n_threads);
}

int Hook::threads() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return kernels_.threads();
}

void Hook::set_batch(int n_ubatch, const uint8_t * flags, const int32_t * slots, size_t n_tokens) {
    std::lock_guard<std::mutex> lock(mutex_);
    batch_.set(n_ubatch, flags, slots, n_tokens, capture_.n_slots());
}

void Hook::set_batch_from_logits(int n_ubatch, const int8_t * logits, size_t n_tokens, int apply, bool generated) {
    std::lock_guard<std::mutex> lock(mutex_);
    batch_.set_from_logits(n_ubatch, logits, n_tokens, apply, generated);
}

int Hook::end_batch() {
    std::lock_guard<std::mutex> lock(mutex_);
    return batch_.end();
}

void Hook::start_capture(const std::vector<int> & layers, int n_slots, bool stop_after_last, int site) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (site == SITE_FFN && n_ff_ == 0) {
        throw std::logic_error("capturing FFN activations needs the model's FFN tensor (set_ffn) first");
    }
    capture_.start(layers, n_layer_, n_slots, site, site == SITE_FFN ? n_ff_ : n_embd_, stop_after_last);
}

void Hook::stop_capture() {
    std::lock_guard<std::mutex> lock(mutex_);
    capture_.stop();
}

int Hook::capture_width() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return capture_.active() ? capture_.width() : n_embd_;
}

std::vector<int> Hook::capture_layers() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return capture_.layers();
}

void Hook::capture_results(std::vector<double> & sums, std::vector<int64_t> & counts, std::vector<float> & last) const {
    std::lock_guard<std::mutex> lock(mutex_);
    sums = capture_.sums();
    counts = capture_.counts();
    last = capture_.last();
}

std::string Hook::take_error() {
    std::lock_guard<std::mutex> lock(mutex_);
    std::string e;
    e.swap(error_);
    return e;
}

int64_t Hook::take_rows_transformed() {
    std::lock_guard<std::mutex> lock(mutex_);
    return std::exchange(rows_transformed_, 0);
}

double Hook::take_apply_seconds() {
    std::lock_guard<std::mutex> lock(mutex_);
    return std::exchange(apply_seconds_, 0.0);
}

Hook::TensorPaths Hook::take_tensor_paths() {
    std::lock_guard<std::mutex> lock(mutex_);
    return std::exchange(tensor_paths_, TensorPaths());
}

void Hook::set_device_maps(int mode) {
    if (mode < DeviceMaps::OFF || mode > DeviceMaps::EVERYWHERE) {
        throw std::invalid_argument("device maps mode must be 0 (off), 1 (device tensors) or 2 (all tensors)");
    }
    std::lock_guard<std::mutex> lock(mutex_);
    device_maps_->set_mode((DeviceMaps::Mode) mode);
}

std::string Hook::device_maps_status() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return device_maps_->status();
}

void Hook::set_host_round_trip(bool on) {
    std::lock_guard<std::mutex> lock(mutex_);
    host_round_trip_ = on;
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

bool Hook::transforms(int il, int site) const {
    if (!prepared_ || alpha_ == 0.0f) {
        return false;
    }
    const LayerTransform & lt = prepared_->layer(il);
    if (lt.generated_only && !batch_.applies_generated()) {
        return false;  // not even asked for: llama.cpp then computes the layer as without the hook
    }
    return site == SITE_RESIDUAL ? lt.on_residual() : lt.kind == Kind::CLAMP;
}

bool Hook::on_ask(const ggml_tensor * t) {
    if (!batch_.active()) {
        return false;
    }
    int site = SITE_RESIDUAL;
    const int il = parse_site(t->name, &site);
    return il >= 0 && ((batch_.applies() && transforms(il, site)) || capture_.wants(il, site));
}

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

// The selected transform applied where t lives (set_device_maps). Returns whether it was served
// there; *failed when the device failed midway (the error is recorded).
bool Hook::apply_on_device(ggml_tensor * t, int il, int n_apply, bool * failed) {
    const auto start = std::chrono::steady_clock::now();
    const int done = n_apply == 0 ? 1 : device_maps_->apply(t, il, prepared_->layer(il), alpha_, runs_, kernels_.threads());
    if (done < 0) {
        fail(std::string(t->name) + ": " + device_maps_->status());
        *failed = true;
        return false;
    }
    if (done > 0) {
        ++tensor_paths_.device;
        rows_transformed_ += n_apply;
        apply_seconds_ += n_apply > 0 ? seconds_since(start) : 0.0;
    }
    return done > 0;
}

bool Hook::check_tensor(const ggml_tensor * t, int width, int site) {
    if (t->type == GGML_TYPE_F32 && t->ne[0] == width && t->ne[2] == 1 && t->ne[3] == 1 && t->nb[0] == sizeof(float) &&
        t->nb[1] == (size_t) width * sizeof(float)) {
        return true;
    }
    char buf[160];
    std::snprintf(buf, sizeof(buf), " is not a contiguous F32 [%d, tokens] tensor (type %d, ne0 %lld)", width,
                  (int) t->type, (long long) t->ne[0]);
    fail(std::string(t->name) + buf + (site == SITE_FFN ? ": the FFN width given to set_ffn does not match the model" : ""));
    return false;
}

float * Hook::host_rows(ggml_tensor * t, int width, bool all_rows, bool * direct) {
    *direct = (t->buffer == nullptr || ggml_backend_buffer_is_host(t->buffer)) && !host_round_trip_;
    if (*direct) {  // read and written through t->data
        ++tensor_paths_.host;
        return (float *) t->data;
    }
    // Device memory: a capture reads every row; a transform alone copies only the rows it
    // changes (one of a prompt's rows under positions=last), there and back.
    ++tensor_paths_.round_trip;
    row_buffer_.resize((size_t) t->ne[1] * width);
    if (all_rows) {
        ggml_backend_tensor_get(t, row_buffer_.data(), 0, row_buffer_.size() * sizeof(float));
    } else {
        copy_runs(t, row_buffer_.data(), width, false);
    }
    return row_buffer_.data();
}

void Hook::transform_runs(float * data, int width, int il, int n_apply) {
    row_ptrs_.clear();
    for (const auto & run : runs_) {
        for (int r = run.first; r < run.second; ++r) {
            row_ptrs_.push_back(data + (size_t) r * width);
        }
    }
    const auto start = std::chrono::steady_clock::now();
    kernels_.apply(row_ptrs_.data(), n_apply, width, prepared_->layer(il), alpha_);
    rows_transformed_ += n_apply;
    apply_seconds_ += seconds_since(start);
}

bool Hook::on_data(ggml_tensor * t) {
    int site = SITE_RESIDUAL;
    const int il = parse_site(t->name, &site);
    if (il < 0 || !batch_.active()) {
        return true;
    }
    const int width = site == SITE_RESIDUAL ? n_embd_ : n_ff_;
    std::string error;
    if (!batch_.map_rows(2 * il + site, t->name, t->ne[1], &error)) {
        fail(error);
        return true;
    }
    if (!check_tensor(t, width, site)) {
        return true;
    }
    // Nothing after the last captured layer is read in a capture-only context: returning false
    // skips the rest of the graph (the later layers and the output head).
    const bool keep_going = !capture_.ends_at(il, site);
    const bool capture_here = capture_.wants(il, site);
    const bool transforming = transforms(il, site);
    const int n_apply = transforming ? batch_.apply_runs(runs_, prepared_->layer(il).generated_only) : 0;
    if (t->ne[1] == 0) {
        return keep_going;
    }
    // On the tensor's own device (set_device_maps), unless a capture needs the rows on the host.
    const bool in_host_memory = t->buffer == nullptr || ggml_backend_buffer_is_host(t->buffer);
    if (transforming && !capture_here && device_maps_->wants(in_host_memory)) {
        bool failed = false;
        if (apply_on_device(t, il, n_apply, &failed) || failed) {
            return failed ? true : keep_going;
        }
    }
    bool direct = true;
    float * data = host_rows(t, width, capture_here, &direct);
    if (data == nullptr) {
        fail(std::string(t->name) + " has no data");
        return true;
    }
    if (n_apply > 0) {
        transform_runs(data, width, il, n_apply);
    }
    if (capture_here) {
        capture_.add_rows(data, il, batch_);
    }
    if (n_apply > 0 && !direct) {
        copy_runs(t, data, width, true);
    }
    return keep_going;
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
