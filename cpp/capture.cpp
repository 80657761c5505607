#include "capture.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>

namespace lingalign {

void Capture::start(const std::vector<int> & layers, int n_layer, int n_slots, int site, int width,
                    bool stop_after_last) {
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
        if (il < 0 || il >= n_layer) {
            throw std::out_of_range("unknown layer " + std::to_string(il) + ": the model has layers 0.." +
                                    std::to_string(n_layer - 1));
        }
    }
    site_ = site;
    width_ = width;
    layers_ = sorted;
    index_.assign((size_t) n_layer, -1);
    for (size_t k = 0; k < sorted.size(); ++k) {
        index_[(size_t) sorted[k]] = (int) k;
    }
    n_slots_ = n_slots;
    const size_t cells = (size_t) n_slots * sorted.size();
    sums_.assign(cells * (size_t) width, 0.0);
    counts_.assign(cells, 0);
    last_.assign(cells * (size_t) width, 0.0f);
    stop_after_last_ = stop_after_last;
    active_ = !sorted.empty();
}

void Capture::stop() {
    active_ = false;
    std::fill(index_.begin(), index_.end(), -1);
    layers_.clear();
    n_slots_ = 0;
    sums_.clear();
    sums_.shrink_to_fit();
    counts_.clear();
    last_.clear();
    last_.shrink_to_fit();
}

void Capture::add_rows(const float * data, int il, const BatchRows & batch) {
    const size_t n_cap = layers_.size();
    const size_t ci = (size_t) index_[(size_t) il];
    const std::vector<int32_t> & tokens = batch.row_tokens();
    const size_t width = (size_t) width_;
    for (size_t r = 0; r < tokens.size(); ++r) {
        const int32_t tok = tokens[r];
        const int32_t slot = batch.slot(tok);
        if (slot < 0) {
            continue;
        }
        const float * row = data + r * width;
        const size_t cell = (size_t) slot * n_cap + ci;
        if (batch.flags(tok) & ROW_POOL) {
            double * acc = sums_.data() + cell * width;
            for (size_t i = 0; i < width; ++i) {
                acc[i] += row[i];
            }
            counts_[cell] += 1;
        }
        if (batch.flags(tok) & ROW_LAST) {
            std::memcpy(last_.data() + cell * width, row, width * sizeof(float));
        }
    }
}

} // namespace lingalign
