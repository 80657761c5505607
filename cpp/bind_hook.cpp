// lingalign._core.Hook: the callback's state for one llama.cpp context (hook.h).
#include "bindings.h"
#include "hook.h"

#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <memory>
#include <optional>

namespace py = pybind11;

namespace lingalign {

namespace {

template <typename T> using CArray = py::array_t<T, py::array::c_style | py::array::forcecast>;

template <typename T> py::array_t<T> to_array(std::vector<T> && v, std::vector<py::ssize_t> shape) {
    auto * holder = new std::vector<T>(std::move(v));
    py::capsule owner(holder, [](void * p) { delete static_cast<std::vector<T> *>(p); });
    return py::array_t<T>(shape, holder->data(), owner);
}

} // namespace

void bind_hook(py::module_ & m) {
    py::class_<Hook>(m, "Hook")
        .def(py::init<int, int>(), py::arg("n_embd"), py::arg("n_layer"))
        .def_property_readonly("n_embd", &Hook::n_embd)
        .def_property_readonly("n_layer", &Hook::n_layer)
        .def_property_readonly("n_ff", &Hook::n_ff, "Width of the FFN activation (0 until set_ffn).")
        .def_property_readonly("address", [](Hook & h) { return (uintptr_t) &h; },
                               "Address to pass as cb_eval_user_data.")
        .def("set_ffn", &Hook::set_ffn, py::arg("tensor_prefix"), py::arg("n_ff"),
             "Name prefix (e.g. 'ffn_geglu') and width of the FFN activation tensor that clamps and FFN capture use.")
        .def(
            "select",
            [](Hook & h, std::shared_ptr<PreparedTransform> prepared, float alpha) {
                h.select(std::move(prepared), alpha);
            },
            py::arg("prepared").none(true), py::arg("alpha") = 1.0f,
            "Use a Prepared transform (None: none) at strength alpha from the next decode on, in O(1).")
        .def_property_readonly("alpha", &Hook::alpha)
        .def("active_layers", &Hook::active_layers)
        .def("wants_batch", &Hook::wants_batch, py::arg("applies"), py::arg("generated") = false)
        .def_property("threads", &Hook::threads, &Hook::set_threads)
        .def(
            "set_batch",
            [](Hook & h, int n_ubatch, CArray<uint8_t> flags, std::optional<CArray<int32_t>> slots) {
                if (slots && slots->size() != flags.size()) {
                    throw py::value_error("slots and flags differ in length");
                }
                h.set_batch(n_ubatch, flags.data(), slots ? slots->data() : nullptr, (size_t) flags.size());
            },
            py::arg("n_ubatch"), py::arg("flags"), py::arg("slots") = py::none())
        .def(
            "set_batch_from_logits",
            [](Hook & h, int n_ubatch, uintptr_t logits_address, size_t n_tokens, int apply, bool generated) {
                h.set_batch_from_logits(n_ubatch, reinterpret_cast<const int8_t *>(logits_address), n_tokens, apply,
                                        generated);
            },
            py::arg("n_ubatch"), py::arg("logits_address"), py::arg("n_tokens"), py::arg("apply"),
            py::arg("generated") = false,
            "set_batch for a llama_batch about to be decoded: logits_address is its int8 logits array "
            "(ctypes address), apply one of APPLY_NONE, APPLY_ALL, APPLY_LAST; generated: its tokens are "
            "generated ones (ROW_GENERATED).")
        .def("end_batch", &Hook::end_batch)
        .def("start_capture", &Hook::start_capture, py::arg("layers"), py::arg("n_slots"),
             py::arg("stop_after_last") = false, py::arg("site") = (int) SITE_RESIDUAL)
        .def_property_readonly("capture_width", &Hook::capture_width)
        .def("stop_capture", &Hook::stop_capture)
        .def(
            "capture_results",
            [](const Hook & h) {
                std::vector<double> sums;
                std::vector<int64_t> counts;
                std::vector<float> last;
                h.capture_results(sums, counts, last);
                const py::ssize_t n_cap = (py::ssize_t) h.capture_layers().size();
                const py::ssize_t d = h.capture_width();
                const py::ssize_t n_slots = n_cap ? (py::ssize_t) counts.size() / n_cap : 0;
                return py::make_tuple(to_array(std::move(sums), {n_slots, n_cap, d}),
                                      to_array(std::move(counts), {n_slots, n_cap}),
                                      to_array(std::move(last), {n_slots, n_cap, d}));
            },
            "(sums float64 [slots, layers, d], counts int64 [slots, layers], last float32 [slots, layers, d])")
        .def("capture_layers", &Hook::capture_layers)
        .def("take_error", &Hook::take_error)
        .def("take_rows_transformed", &Hook::take_rows_transformed)
        .def("take_apply_seconds", &Hook::take_apply_seconds,
             "Seconds spent applying transforms since the last call (clears it).")
        .def(
            "take_tensor_paths",
            [](Hook & h) {
                const Hook::TensorPaths p = h.take_tensor_paths();
                py::dict d;
                d["host"] = p.host;
                d["round_trip"] = p.round_trip;
                d["device"] = p.device;
                return d;
            },
            "Tensors served since the last call (clears it), by how their data was reached: "
            "{'host': n, 'round_trip': n, 'device': n}.")
        .def("set_device_maps", &Hook::set_device_maps, py::arg("mode"),
             "0: device tensors take a host round trip (default); 1: they are transformed on their "
             "device by a ggml graph; 2: host tensors too, on ggml's CPU backend (tests).")
        .def("device_maps_status", &Hook::device_maps_status)
        .def("set_host_round_trip", &Hook::set_host_round_trip, py::arg("on"),
             "Serve host tensors through a copy to a buffer and back, as device tensors are (tests).");
}

} // namespace lingalign
