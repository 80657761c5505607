#include "prepared_transform.h"

#include <stdexcept>

namespace lingalign {

PreparedTransform::PreparedTransform(int n_embd, int n_layer, int n_ff)
    : n_embd_(n_embd), n_layer_(n_layer), n_ff_(n_ff) {
    if (n_embd <= 0 || n_layer <= 0 || n_ff < 0) {
        throw std::invalid_argument("n_embd and n_layer must be positive, n_ff >= 0");
    }
    layers_.resize((size_t) n_layer);
}

void PreparedTransform::check_layer(int layer) const {
    if (layer < 0 || layer >= n_layer_) {
        throw LayerError("unknown layer " + std::to_string(layer) + ": the model has layers 0.." +
                         std::to_string(n_layer_ - 1));
    }
}

void PreparedTransform::set_layer(int layer, Kind kind, const std::map<std::string, TensorView> & tensors,
                                  bool generated_only) {
    check_layer(layer);
    layers_[(size_t) layer] = LayerTransform::make(layer, kind, n_embd_, n_ff_, tensors);
    layers_[(size_t) layer].generated_only = generated_only;
}

std::vector<int> PreparedTransform::layers() const {
    std::vector<int> out;
    for (int il = 0; il < n_layer_; ++il) {
        if (layers_[(size_t) il].kind != Kind::NONE) {
            out.push_back(il);
        }
    }
    return out;
}

size_t PreparedTransform::map_bytes(int layer) const {
    check_layer(layer);
    return layers_[(size_t) layer].map_bytes();
}

bool PreparedTransform::empty() const {
    for (const auto & lt : layers_) {
        if (lt.kind != Kind::NONE) {
            return false;
        }
    }
    return true;
}

bool PreparedTransform::acts_on(bool generated) const {
    for (const auto & lt : layers_) {
        if (lt.kind != Kind::NONE && (generated || !lt.generated_only)) {
            return true;
        }
    }
    return false;
}

} // namespace lingalign
