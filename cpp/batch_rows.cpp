#include "batch_rows.h"

#include <algorithm>
#include <cstdio>
#include <stdexcept>

namespace lingalign {

void BatchRows::set(int n_ubatch, const uint8_t * flags, const int32_t * slots, size_t n_tokens, int n_slots) {
    if (n_ubatch <= 0) {
        throw std::invalid_argument("n_ubatch must be positive");
    }
    if (flags == nullptr && n_tokens > 0) {
        throw std::invalid_argument("the batch has no flags");
    }
    if (slots != nullptr) {
        for (size_t i = 0; i < n_tokens; ++i) {
            if (slots[i] >= n_slots) {
                throw std::out_of_range("capture slot " + std::to_string(slots[i]) + " out of range (" +
                                        std::to_string(n_slots) + " slots)");
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
    applies_ = false;
    applies_generated_ = false;
    const uint8_t generated = ROW_APPLY | ROW_GENERATED;
    for (size_t i = 0; i < n_tokens; ++i) {
        output_prefix_[i + 1] = output_prefix_[i] + ((flags_[i] & ROW_OUTPUT) ? 1 : 0);
        applies_ = applies_ || (flags_[i] & ROW_APPLY);
        applies_generated_ = applies_generated_ || (flags_[i] & generated) == generated;
    }
    ubatch_index_ = -1;
    last_key_ = 0;
    visits_ = 0;
    active_ = true;
}

void BatchRows::set_from_logits(int n_ubatch, const int8_t * logits, size_t n_tokens, int apply, bool generated) {
    if (apply != APPLY_NONE && apply != APPLY_ALL && apply != APPLY_LAST) {
        throw std::invalid_argument("apply must be APPLY_NONE, APPLY_ALL or APPLY_LAST");
    }
    if (logits == nullptr && n_tokens > 0) {
        throw std::invalid_argument("the batch has no logits array");
    }
    std::vector<uint8_t> flags(n_tokens);
    for (size_t i = 0; i < n_tokens; ++i) {
        const bool applies = apply == APPLY_ALL || (apply == APPLY_LAST && i + 1 == n_tokens);
        flags[i] = (uint8_t) ((logits[i] != 0 ? ROW_OUTPUT : 0) | (applies ? ROW_APPLY : 0) | (generated ? ROW_GENERATED : 0));
    }
    set(n_ubatch, flags.data(), nullptr, n_tokens, 0);
}

int BatchRows::end() {
    active_ = false;
    return visits_;
}

bool BatchRows::map_rows(int key, const char * name, long long n_rows, std::string * error) {
    ++visits_;
    // Each ubatch visits the requested nodes in graph order: layer by layer, FFN before l_out.
    if (ubatch_index_ < 0 || key <= last_key_) {
        ++ubatch_index_;
    }
    last_key_ = key;
    char buf[256];
    const long long n_tokens = (long long) flags_.size();
    const long long ub_start = (long long) ubatch_index_ * n_ubatch_;
    if (ub_start >= n_tokens) {
        std::snprintf(buf, sizeof(buf),
                      " seen in ubatch %d, but the announced batch has only %lld tokens (n_ubatch %d): "
                      "llama.cpp split the batch in an unexpected way",
                      ubatch_index_, n_tokens, n_ubatch_);
        *error = std::string(name) + buf;
        return false;
    }
    const long long ub_n = std::min<long long>(n_ubatch_, n_tokens - ub_start);
    const long long n_out = output_prefix_[(size_t) (ub_start + ub_n)] - output_prefix_[(size_t) ub_start];
    const bool all_rows = n_rows == ub_n;
    if (!all_rows && n_rows != n_out) {
        std::snprintf(buf, sizeof(buf), " has %lld rows; expected %lld (ubatch tokens) or %lld (outputs)", n_rows,
                      ub_n, n_out);
        *error = std::string(name) + buf;
        return false;
    }
    row_tokens_.resize((size_t) n_rows);
    if (all_rows) {
        for (long long r = 0; r < n_rows; ++r) {
            row_tokens_[(size_t) r] = (int32_t) (ub_start + r);
        }
    } else {
        size_t r = 0;
        for (long long i = ub_start; i < ub_start + ub_n; ++i) {
            if (flags_[(size_t) i] & ROW_OUTPUT) {
                row_tokens_[r++] = (int32_t) i;
            }
        }
    }
    return true;
}

int BatchRows::apply_runs(std::vector<std::pair<int, int>> & runs, bool generated_only) const {
    runs.clear();
    const uint8_t wanted = generated_only ? (uint8_t) (ROW_APPLY | ROW_GENERATED) : (uint8_t) ROW_APPLY;
    int n_apply = 0;
    for (int r = 0; r < (int) row_tokens_.size(); ++r) {
        if ((flags_[(size_t) row_tokens_[(size_t) r]] & wanted) == wanted) {
            if (!runs.empty() && runs.back().second == r) {
                runs.back().second = r + 1;
            } else {
                runs.emplace_back(r, r + 1);
            }
            ++n_apply;
        }
    }
    return n_apply;
}

} // namespace lingalign
