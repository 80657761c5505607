// Capture: the rows of chosen layers accumulated per slot (a sentence), as a float64 sum over the
// pooled tokens and the last token's row, at one site (the residual stream or the FFN
// activation). No llama.cpp dependency.
#pragma once

#include "batch_rows.h"

#include <cstdint>
#include <vector>

namespace lingalign {

// Which tensor of a layer a node is; the FFN activation is computed before the layer's l_out.
enum Site : int {
    SITE_FFN = 0,
    SITE_RESIDUAL = 1,
};

class Capture {
public:
    // Starts a capture of `layers` (sorted and made unique here; each in 0..n_layer) into n_slots
    // slots of `width` values. stop_after_last: the callback may skip the rest of the graph once
    // the last captured layer is read (only for contexts whose logits nobody reads).
    void start(const std::vector<int> & layers, int n_layer, int n_slots, int site, int width, bool stop_after_last);
    void stop();

    bool active() const { return active_; }
    int n_slots() const { return n_slots_; }
    int width() const { return width_; }
    const std::vector<int> & layers() const { return layers_; }
    // Whether layer il at `site` is captured.
    bool wants(int il, int site) const { return active_ && site == site_ && index_[(size_t) il] >= 0; }
    // Whether the graph may stop after this node (the last captured one).
    bool ends_at(int il, int site) const { return active_ && stop_after_last_ && site == site_ && il == layers_.back(); }

    // Each row's token adds it to its slot's sum (ROW_POOL) or stores it as the slot's last row
    // (ROW_LAST), for captured layer il; data is [rows x width].
    void add_rows(const float * data, int il, const BatchRows & batch);

    // [n_slots][layers][width] sums, [n_slots][layers] counts, [n_slots][layers][width] last rows.
    const std::vector<double> & sums() const { return sums_; }
    const std::vector<int64_t> & counts() const { return counts_; }
    const std::vector<float> & last() const { return last_; }

private:
    bool active_ = false;
    bool stop_after_last_ = false;
    int site_ = SITE_RESIDUAL;
    int width_ = 0;
    int n_slots_ = 0;
    std::vector<int> index_;  // layer -> index into layers_, or -1
    std::vector<int> layers_;
    std::vector<double> sums_;
    std::vector<int64_t> counts_;
    std::vector<float> last_;
};

} // namespace lingalign
