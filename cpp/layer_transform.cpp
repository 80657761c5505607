#include "layer_transform.h"

#include "panels.h"

namespace lingalign {

size_t TensorView::size() const {
    size_t n = 1;
    for (size_t s : shape) {
        n *= s;
    }
    return n;
}

namespace {

const char * dtype_name(DType t) {
    switch (t) {
        case DType::F32: return "float32";
        case DType::F16: return "float16";
        case DType::I8: return "int8";
        case DType::I32: return "int32";
    }
    return "?";
}

std::string shape_text(const std::vector<size_t> & shape) {
    std::string out = "[";
    for (size_t k = 0; k < shape.size(); ++k) {
        out += (k ? ", " : "") + std::to_string(shape[k]);
    }
    return out + "]";
}

// Checks what a layer transform's tensors must be; every message names the layer.
class Checker {
public:
    Checker(int layer, const std::map<std::string, TensorView> & tensors) : layer_(layer), tensors_(tensors) {}

    [[noreturn]] void fail(const std::string & what) const {
        throw LayerError("layer " + std::to_string(layer_) + ": " + what);
    }

    bool has(const std::string & name) const { return tensors_.count(name) != 0; }

    // The tensor `name`, of one of the element types allowed and the given shape.
    const TensorView & get(const std::string & name, std::vector<DType> types, std::vector<size_t> shape) const {
        auto it = tensors_.find(name);
        if (it == tensors_.end()) {
            fail("needs the tensor " + name);
        }
        const TensorView & t = it->second;
        bool type_ok = false;
        for (DType d : types) {
            type_ok = type_ok || d == t.dtype;
        }
        if (!type_ok) {
            fail(name + " is " + dtype_name(t.dtype) + ", expected " + dtype_name(types[0]) +
                 (types.size() > 1 ? std::string(" or ") + dtype_name(types[1]) : ""));
        }
        if (t.shape != shape) {
            fail(name + " has shape " + shape_text(t.shape) + ", expected " + shape_text(shape));
        }
        if (t.data == nullptr && t.size() > 0) {
            fail(name + " has no data");
        }
        return t;
    }

    // No tensor but the listed ones.
    void only(std::vector<std::string> allowed) const {
        for (const auto & kv : tensors_) {
            bool ok = false;
            for (const auto & a : allowed) {
                ok = ok || a == kv.first;
            }
            if (!ok) {
                fail("the tensor " + kv.first + " does not belong to this kind of transform");
            }
        }
    }

private:
    int layer_;
    const std::map<std::string, TensorView> & tensors_;
};

template <typename T> std::vector<T> copy_of(const TensorView & t) {
    const T * p = static_cast<const T *>(t.data);
    return std::vector<T>(p, p + t.size());
}

// M [K x ncols] in the kernels' panel layout (kernels.h).
template <typename T> std::vector<T> packed(const TensorView & t, int K, int ncols) {
    std::vector<T> out((size_t) K * ncols);
    pack_panels(static_cast<const T *>(t.data), K, ncols, out.data());
    return out;
}

std::vector<float> optional_bias(const Checker & c, size_t d) {
    return c.has("bias") ? copy_of<float>(c.get("bias", {DType::F32}, {d})) : std::vector<float>();
}

} // namespace

LayerTransform LayerTransform::make(int layer, Kind kind, int d_int, int n_ff,
                                    const std::map<std::string, TensorView> & tensors) {
    const Checker c(layer, tensors);
    if (d_int <= 0) {
        c.fail("the model width must be positive");
    }
    const size_t d = (size_t) d_int;
    LayerTransform lt;
    lt.kind = kind;
    switch (kind) {
        case Kind::AFFINE: {
            if (c.has("map")) {
                c.only({"map", "bias"});
                const TensorView & m = c.get("map", {DType::F32, DType::F16}, {d, d});
                if (m.dtype == DType::F16) {
                    lt.precision = Precision::F16;
                    lt.matrix_h = packed<uint16_t>(m, d_int, d_int);
                } else {
                    lt.matrix = packed<float>(m, d_int, d_int);
                }
            } else if (c.has("delta_q8")) {
                c.only({"delta_q8", "delta_scale", "bias"});
                lt.precision = Precision::Q8;
                lt.matrix_q = packed<int8_t>(c.get("delta_q8", {DType::I8}, {d, d}), d_int, d_int);
                lt.scale = copy_of<float>(c.get("delta_scale", {DType::F32}, {d}));
            } else if (c.has("delta_q4")) {
                c.only({"delta_q4", "delta_scale", "bias"});
                if (d % 2 != 0) {
                    c.fail("4-bit maps need an even n_embd, the model has " + std::to_string(d));
                }
                lt.precision = Precision::Q4;
                const TensorView & q = c.get("delta_q4", {DType::I8}, {d, d / 2});
                // the file's I8 tensor holds two unsigned nibbles per byte: the same bits as uint8
                lt.matrix_q4 = pack_q4_panels(static_cast<const uint8_t *>(q.data), d_int, d_int);
                lt.scale = copy_of<float>(c.get("delta_scale", {DType::F32}, {d}));
            } else {
                c.fail("an affine transform needs a map, delta_q8 or delta_q4");
            }
            lt.bias = optional_bias(c, d);
            break;
        }
        case Kind::LOWRANK: {
            c.only({"lr_u", "lr_vt", "bias"});
            auto u_it = tensors.find("lr_u");
            if (u_it == tensors.end() || u_it->second.shape.size() != 2) {
                c.fail("a low-rank map needs lr_u [d, rank] and lr_vt [rank, d]");
            }
            const size_t r = u_it->second.shape[1];
            if (r < 1 || r > d) {
                c.fail("rank " + std::to_string(r) + " must be in 1.." + std::to_string(d));
            }
            const TensorView & u = c.get("lr_u", {DType::F32, DType::F16}, {d, r});
            const TensorView & vt = c.get("lr_vt", {u.dtype}, {r, d});
            lt.rank = (int) r;
            if (u.dtype == DType::F16) {
                lt.precision = Precision::F16;
                lt.lr_u_h = packed<uint16_t>(u, d_int, lt.rank);
                lt.lr_vt_h = packed<uint16_t>(vt, lt.rank, d_int);
            } else {
                lt.lr_u = packed<float>(u, d_int, lt.rank);
                lt.lr_vt = packed<float>(vt, lt.rank, d_int);
            }
            lt.bias = optional_bias(c, d);
            break;
        }
        case Kind::ADDITIVE:
            c.only({"vector"});
            lt.vector = copy_of<float>(c.get("vector", {DType::F32}, {d}));
            break;
        case Kind::SHIFT:
            c.only({"shift"});
            lt.vector = copy_of<float>(c.get("shift", {DType::F32}, {d}));
            break;
        case Kind::CLAMP: {
            c.only({"clamp_index", "clamp_value"});
            if (n_ff <= 0) {
                c.fail("neuron clamps need the model's FFN activation tensor, which is unknown for this model");
            }
            auto it = tensors.find("clamp_index");
            const size_t k = it != tensors.end() && it->second.shape.size() == 1 ? it->second.shape[0] : 0;
            if (k == 0) {
                c.fail("a clamp needs a non-empty 1-D clamp_index");
            }
            lt.index = copy_of<int32_t>(c.get("clamp_index", {DType::I32}, {k}));
            lt.value = copy_of<float>(c.get("clamp_value", {DType::F32}, {k}));
            std::vector<uint8_t> seen((size_t) n_ff, 0);
            for (int32_t i : lt.index) {
                if (i < 0 || i >= n_ff) {
                    c.fail("neuron " + std::to_string(i) + " out of range (the FFN has " + std::to_string(n_ff) +
                           " neurons)");
                }
                if (seen[(size_t) i]++) {
                    c.fail("neuron " + std::to_string(i) + " is clamped twice");
                }
            }
            break;
        }
        default:
            c.fail("unknown transform kind " + std::to_string((int) kind));
    }
    return lt;
}

size_t LayerTransform::map_bytes() const {
    return (matrix.size() + lr_u.size() + lr_vt.size() + scale.size()) * sizeof(float) +
           (matrix_h.size() + lr_u_h.size() + lr_vt_h.size()) * sizeof(uint16_t) + matrix_q.size() +
           matrix_q4.size();
}

} // namespace lingalign
