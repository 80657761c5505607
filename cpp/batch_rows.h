// Which token each row of a served tensor is, from the batch the Python side announced.
//
// The callback is not told which tokens a node's rows belong to. Each decode is announced first
// (one flag byte per token of the llama_batch, and a capture slot per token); with one KV stream
// llama.cpp splits the batch into n_ubatch-sized ubatches in batch order (split_simple), and the
// last layer keeps only the rows of tokens that have an output. From that, row r of a node maps
// to a known token, and every mismatch is reported as an error instead of guessing.
// No llama.cpp dependency: tests drive it directly (_core.testing.BatchRows).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace lingalign {

// One flag byte per token of the announced batch.
enum RowFlag : uint8_t {
    ROW_OUTPUT = 1,  // token has an output (logits): its row survives into the last layer
    ROW_APPLY = 2,   // the position policy selects this token for the transforms
    ROW_POOL = 4,    // capture: include this token in the mean (BOS is left out)
    ROW_LAST = 8,    // capture: last token of its sentence
    ROW_GENERATED = 16,  // a generated token (or an option scored as one): generated-only layers act on it
};

// Which tokens of a generation batch the position policy selects (set_from_logits).
enum Apply : int { APPLY_NONE = 0, APPLY_ALL = 1, APPLY_LAST = 2 };

class BatchRows {
public:
    // Announce a batch: n_ubatch, one flag per token, and (may be null) a capture slot per token
    // (-1 or < n_slots). Throws std::invalid_argument / std::out_of_range on bad input.
    void set(int n_ubatch, const uint8_t * flags, const int32_t * slots, size_t n_tokens, int n_slots);
    // The same for a generation batch: flags from the llama_batch's own logits bytes (ROW_OUTPUT
    // where nonzero), ROW_APPLY on no token, every token or the last (`apply`), and ROW_GENERATED
    // on every token of a batch of generated tokens. Every decoded token passes through this, so
    // it spares Python the numpy work.
    void set_from_logits(int n_ubatch, const int8_t * logits, size_t n_tokens, int apply, bool generated);
    // Ends the batch; returns how many nodes were served in it.
    int end();

    bool active() const { return active_; }
    bool applies() const { return applies_; }  // some token has ROW_APPLY
    // some token has ROW_APPLY and ROW_GENERATED: generated-only layers have work in this batch
    bool applies_generated() const { return applies_generated_; }

    // A node (key = 2 * layer + site, increasing through a ubatch's graph) with n_rows rows has
    // been computed: find its ubatch and the token of each row (row_tokens()). Returns false,
    // with *error saying why, when it does not fit the announced batch.
    bool map_rows(int key, const char * name, long long n_rows, std::string * error);
    const std::vector<int32_t> & row_tokens() const { return row_tokens_; }
    uint8_t flags(int32_t token) const { return flags_[(size_t) token]; }
    int32_t slot(int32_t token) const { return slots_[(size_t) token]; }
    // The rows (of the last mapped node) whose token has ROW_APPLY, and ROW_GENERATED too when
    // `generated_only`, as [first, end) runs; returns how many rows they hold.
    int apply_runs(std::vector<std::pair<int, int>> & runs, bool generated_only) const;

private:
    bool active_ = false;
    bool applies_ = false;
    bool applies_generated_ = false;
    int n_ubatch_ = 0;
    std::vector<uint8_t> flags_;
    std::vector<int32_t> slots_;
    std::vector<int32_t> output_prefix_;  // number of ROW_OUTPUT tokens before token i
    int ubatch_index_ = -1;
    int last_key_ = 0;  // key of the previous node: a smaller or equal key starts a new ubatch
    int visits_ = 0;
    std::vector<int32_t> row_tokens_;
};

} // namespace lingalign
