// lingalign._core.Prepared: a transform prepared for one model shape (prepared_transform.h).
#include "bindings.h"
#include "prepared_transform.h"

#include <pybind11/stl.h>

#include <memory>
#include <string>
#include <vector>

namespace py = pybind11;

namespace lingalign {

namespace {

// The element type of a buffer by its struct format code ('f' float32, 'e' float16, 'b' int8,
// 'i' int32; with or without a native byte-order prefix) and size.
DType buffer_dtype(const py::buffer_info & info, const std::string & name) {
    std::string f = info.format;
    if (!f.empty() && (f[0] == '<' || f[0] == '=' || f[0] == '@')) {
        f = f.substr(1);
    }
    if (f == "f" && info.itemsize == 4) {
        return DType::F32;
    }
    if (f == "e" && info.itemsize == 2) {
        return DType::F16;
    }
    if (f == "b" && info.itemsize == 1) {
        return DType::I8;
    }
    if ((f == "i" || f == "l") && info.itemsize == 4) {
        return DType::I32;
    }
    throw LayerError(name + ": unsupported element type '" + info.format + "' (float32, float16, int8 or int32)");
}

// A view of a C-contiguous buffer; `keep` holds the buffer_info (and so the buffer) alive.
TensorView view_of(const py::buffer & b, const std::string & name, std::vector<py::buffer_info> & keep) {
    keep.push_back(b.request());
    const py::buffer_info & info = keep.back();
    TensorView t;
    t.dtype = buffer_dtype(info, name);
    t.data = info.ptr;
    py::ssize_t stride = info.itemsize;
    for (py::ssize_t k = info.ndim - 1; k >= 0; --k) {
        if (info.shape[(size_t) k] > 1 && info.strides[(size_t) k] != stride) {
            throw LayerError(name + " is not C-contiguous");
        }
        stride *= info.shape[(size_t) k];
    }
    for (py::ssize_t s : info.shape) {
        t.shape.push_back((size_t) s);
    }
    return t;
}

} // namespace

void bind_prepared(py::module_ & m) {
    py::class_<PreparedTransform, std::shared_ptr<PreparedTransform>>(
        m, "Prepared", "A transform prepared (checked and packed) for hooks of one model shape.")
        .def(py::init<int, int, int>(), py::arg("n_embd"), py::arg("n_layer"), py::arg("n_ff") = 0)
        .def_property_readonly("n_embd", &PreparedTransform::n_embd)
        .def_property_readonly("n_layer", &PreparedTransform::n_layer)
        .def_property_readonly("n_ff", &PreparedTransform::n_ff)
        .def(
            "set_layer",
            [](PreparedTransform & p, int layer, int kind, const py::dict & tensors, bool generated_only) {
                std::vector<py::buffer_info> keep;
                keep.reserve(tensors.size());
                std::map<std::string, TensorView> views;
                for (auto item : tensors) {
                    const std::string name = py::str(item.first);
                    if (!py::isinstance<py::buffer>(item.second)) {
                        throw LayerError("layer " + std::to_string(layer) + ": " + name + " is not an array");
                    }
                    views[name] = view_of(item.second.cast<py::buffer>(), "layer " + std::to_string(layer) + ": " + name, keep);
                }
                p.set_layer(layer, (Kind) kind, views, generated_only);
            },
            py::arg("layer"), py::arg("kind"), py::arg("tensors"), py::arg("generated_only") = false,
            "Set a layer from its kind (KIND_*) and named tensors (buffers: the file's tensor names; "
            "float16 as float16); generated_only: it acts on generated tokens only. Raises LayerError "
            "naming the problem.")
        .def("layers", &PreparedTransform::layers, "The layers with a transform.")
        .def("map_bytes", &PreparedTransform::map_bytes, py::arg("layer"),
             "Bytes of the map or low-rank factors stored for a layer (0 for none, a vector or a clamp).");
}

} // namespace lingalign
