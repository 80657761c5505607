// A transform prepared for one model shape: a LayerTransform per layer, checked and packed once.
// A hook selects one (or none) per request in O(1); it is immutable once handed to a hook, and
// shared (std::shared_ptr) by every hook and Python object that holds it.
#pragma once

#include "layer_transform.h"

#include <cstddef>
#include <map>
#include <string>
#include <vector>

namespace lingalign {

class PreparedTransform {
public:
    // For models of width n_embd with n_layer layers and an FFN activation n_ff wide (0: unknown).
    PreparedTransform(int n_embd, int n_layer, int n_ff);

    int n_embd() const { return n_embd_; }
    int n_layer() const { return n_layer_; }
    int n_ff() const { return n_ff_; }

    // Sets (or replaces) a layer's transform; see LayerTransform::make for the errors.
    // generated_only: it acts on generated tokens only (LayerTransform::generated_only).
    void set_layer(int layer, Kind kind, const std::map<std::string, TensorView> & tensors, bool generated_only);
    const LayerTransform & layer(int il) const { return layers_[(size_t) il]; }
    std::vector<int> layers() const;  // the layers with a transform
    size_t map_bytes(int layer) const;
    bool empty() const;
    // Whether some layer acts on a batch whose applied tokens are (or, if not `generated`, are
    // not) generated ones: a transform of generated-only layers leaves prompt batches alone.
    bool acts_on(bool generated) const;

private:
    void check_layer(int layer) const;

    int n_embd_;
    int n_layer_;
    int n_ff_;
    std::vector<LayerTransform> layers_;
};

} // namespace lingalign
