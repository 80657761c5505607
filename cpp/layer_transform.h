// One layer's transform as the hook applies it: an explicit kind, a precision, and the tensors
// of that kind packed for the kernels. Made once from named tensors (the transform file's
// names: map, delta_q8, delta_q4, delta_scale, lr_u, lr_vt, bias, vector, clamp_index,
// clamp_value) whose element type says the precision; shapes are checked here, values were
// checked by the Python side when the transform was made.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace lingalign {

// A layer transform that does not fit the model (shape, element type, tensor name, neuron
// index); the message names the layer. Python sees lingalign._core.LayerError (a ValueError).
class LayerError : public std::invalid_argument {
public:
    using std::invalid_argument::invalid_argument;
};

enum class Kind : int {
    NONE = 0,
    AFFINE = 1,    // h' = h + alpha (h M + b - h)
    LOWRANK = 2,   // h' = h + alpha (h U Vt + b), M = I + U Vt
    ADDITIVE = 3,  // h' = h + alpha v
    CLAMP = 4,     // z_m' = z_m + alpha (value_m - z_m) on the FFN activation's listed neurons
    SHIFT = 5,     // h' = (h + alpha v) |h| / |h + alpha v|: a language vector that keeps each state's norm
};

// Storage of a map or low-rank factors. Q8: M = I + Q * scale, Q int8 [d x d] with a scale per
// column; Q4: the same with Q in -8..7, two per byte (the file layout; h is quantized to int8 per
// block of 32 for integer dot products, kernels_q4.h).
enum class Precision : int { F32 = 0, F16 = 1, Q8 = 2, Q4 = 3 };

enum class DType : int { F32, F16, I8, I32 };

// A tensor as the caller holds it: C-contiguous data of one element type, and its shape.
struct TensorView {
    const void * data = nullptr;
    DType dtype = DType::F32;
    std::vector<size_t> shape;

    size_t size() const;
};

struct LayerTransform {
    Kind kind = Kind::NONE;
    Precision precision = Precision::F32;
    int rank = 0;
    // Maps and factors are stored packed by column panels (kernels.h: pack_panels), in the
    // vector of their precision: float32 in matrix / lr_u / lr_vt, float16 bit patterns in the
    // *_h copies, int8 in matrix_q, 4-bit panels in matrix_q4 (kernels_q4.h: pack_q4_panels).
    std::vector<float> matrix, lr_u, lr_vt;
    std::vector<uint16_t> matrix_h, lr_u_h, lr_vt_h;
    std::vector<int8_t> matrix_q;
    std::vector<uint8_t> matrix_q4;
    std::vector<float> scale;   // Q8, Q4: [d]
    std::vector<float> bias;    // AFFINE, LOWRANK: [d] or empty
    std::vector<float> vector;  // ADDITIVE, SHIFT: [d]
    std::vector<int32_t> index;  // CLAMP: neurons
    std::vector<float> value;    // CLAMP: their values
    // Acts only on generated tokens (ROW_GENERATED) among those the position policy selects:
    // a staged transform's output-language layers, which must not move the prompt.
    bool generated_only = false;

    // The layer transform of `kind` from named tensors, for a model of width d whose FFN
    // activation is n_ff wide (0: unknown, no clamps). Throws LayerError naming the layer.
    static LayerTransform make(int layer, Kind kind, int d, int n_ff, const std::map<std::string, TensorView> & tensors);

    // Whether it acts on the residual stream (maps, vectors) rather than on the FFN activation.
    bool on_residual() const {
        return kind == Kind::AFFINE || kind == Kind::LOWRANK || kind == Kind::ADDITIVE || kind == Kind::SHIFT;
    }
    // Bytes of the map or factors (0 for a vector or a clamp).
    size_t map_bytes() const;
};

} // namespace lingalign
