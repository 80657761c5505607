// pybind11 module lingalign._core: the Hook class and the facts Python needs to install it.
#include "hook.h"

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <optional>

namespace py = pybind11;
using lingalign::Hook;

#ifndef LINGALIGN_LLAMA_CPP_VERSION
#  error "LINGALIGN_LLAMA_CPP_VERSION must be defined by the build (the llama-cpp-python version compiled against)"
#endif

template <typename T>
using CArray = py::array_t<T, py::array::c_style | py::array::forcecast>;

static py::array_t<double> to_array(std::vector<double> && v, std::vector<py::ssize_t> shape) {
    auto * holder = new std::vector<double>(std::move(v));
    py::capsule owner(holder, [](void * p) { delete static_cast<std::vector<double> *>(p); });
    return py::array_t<double>(shape, holder->data(), owner);
}

// float16 numpy arrays are passed to the hook as their IEEE binary16 bit patterns.
static bool is_half(const py::array & a) {
    return a.dtype().kind() == 'f' && a.dtype().itemsize() == 2;
}

// A C-contiguous, native-order float16 copy or view of `a`, and its bits.
static py::array half_array(const py::array & a) {
    return py::module_::import("numpy").attr("ascontiguousarray")(a, "float16");
}

static const uint16_t * half_bits(const py::array & a) {
    return static_cast<const uint16_t *>(a.data());
}

PYBIND11_MODULE(_core, m) {
    m.doc() = "lingalign's C++ hook for llama.cpp's graph-evaluation callback (private; use the lingalign package)";
    m.attr("LLAMA_CPP_VERSION") = LINGALIGN_LLAMA_CPP_VERSION;
    m.attr("ROW_OUTPUT") = (int) lingalign::ROW_OUTPUT;
    m.attr("ROW_APPLY") = (int) lingalign::ROW_APPLY;
    m.attr("ROW_POOL") = (int) lingalign::ROW_POOL;
    m.attr("ROW_LAST") = (int) lingalign::ROW_LAST;
    m.attr("APPLY_NONE") = (int) lingalign::Hook::APPLY_NONE;
    m.attr("APPLY_ALL") = (int) lingalign::Hook::APPLY_ALL;
    m.attr("APPLY_LAST") = (int) lingalign::Hook::APPLY_LAST;
    m.attr("SITE_RESIDUAL") = (int) lingalign::SITE_RESIDUAL;
    m.attr("SITE_FFN") = (int) lingalign::SITE_FFN;
    m.attr("CALLBACK_ADDRESS") = (uintptr_t) &Hook::eval_callback;

    m.def("half_to_float",
          [](py::array bits, bool portable) {
              const auto b = py::array_t<uint16_t, py::array::c_style | py::array::forcecast>::ensure(bits);
              if (!b) {
                  throw py::type_error("half_to_float needs an array of uint16 bit patterns");
              }
              py::array_t<float> out(b.size());
              lingalign::half_to_float_array(b.data(), (size_t) b.size(), out.mutable_data(), portable);
              return out;
          },
          py::arg("bits"), py::arg("portable") = true,
          "float32 values of IEEE binary16 bit patterns (uint16), with the kernels' conversion (for tests).");
    m.def("set_portable_kernels", &lingalign::set_portable_kernels, py::arg("portable"),
          "Kernels run only their portable code instead of the AVX2, AVX-512 and F16C code "
          "(process-wide; for tests).");
    m.def("set_wide_kernels", &lingalign::set_wide_kernels, py::arg("wide"),
          "Kernels may use AVX-512 and VNNI where the CPU has them (default), or stop at AVX2 "
          "(process-wide; for tests).");
    m.def("wide_kernels_available", &lingalign::wide_kernels_available);
    m.def("kernel_paths", &lingalign::kernel_paths,
          "The code the map kernels run on this CPU: float_prompt, float_decode, q4_prompt.");
    m.def("q4_vnni_available", &lingalign::q4_vnni_available);
    m.def("set_q4_vnni", &lingalign::set_q4_vnni, py::arg("which"),
          "The 4-bit prompt kernel uses this VNNI variant: 'auto' (default), 'avxvnni' or "
          "'avx512vnni' (process-wide; for tests).");
    m.def("half_conversion_uses_f16c", &lingalign::half_conversion_uses_f16c);
    m.def("q4_multiply",
          [](CArray<float> rows, CArray<int8_t> q, bool portable) {
              if (rows.ndim() != 2 || q.ndim() != 2 || q.shape(0) != rows.shape(1) || q.shape(1) * 2 != q.shape(0)) {
                  throw py::value_error("q4_multiply needs rows [n, d] and q [d, d/2]");
              }
              const int n = (int) rows.shape(0), d = (int) rows.shape(1);
              py::array_t<float> out({n, d});
              lingalign::q4_multiply_rows(rows.data(), n, d, reinterpret_cast<const uint8_t *>(q.data()),
                                          out.mutable_data(), portable);
              return out;
          },
          py::arg("rows"), py::arg("q"), py::arg("portable") = false,
          "rows @ Q for a 4-bit map in the file layout, as the hook's kernel computes it: the rows "
          "quantized to int8 per block of 32, then integer dot products (for tests; no scales).");

    py::class_<Hook>(m, "Hook")
        .def(py::init<int, int>(), py::arg("n_embd"), py::arg("n_layer"))
        .def_property_readonly("n_embd", &Hook::n_embd)
        .def_property_readonly("n_layer", &Hook::n_layer)
        .def_property_readonly("address", [](Hook & h) { return (uintptr_t) &h; },
                               "Address to pass as cb_eval_user_data.")
        .def("set_affine",
             [](Hook & h, int layer, py::array matrix, std::optional<CArray<float>> bias) {
                 if (matrix.ndim() != 2) {
                     throw py::value_error("layer " + std::to_string(layer) + ": map must be 2-D");
                 }
                 const float * b = bias ? bias->data() : nullptr;
                 const size_t bn = bias ? (size_t) bias->size() : 0;
                 if (is_half(matrix)) {
                     const py::array m16 = half_array(matrix);
                     h.set_affine_f16(layer, half_bits(m16), (size_t) m16.size(), b, bn);
                 } else {
                     const CArray<float> m32 = CArray<float>::ensure(matrix);
                     if (!m32) {
                         throw py::type_error("layer " + std::to_string(layer) + ": map must be a numeric array");
                     }
                     h.set_affine(layer, m32.data(), (size_t) m32.size(), b, bn);
                 }
             },
             py::arg("layer"), py::arg("matrix"), py::arg("bias") = py::none(),
             "A float16 matrix is stored as float16 (converted in the kernel, accumulated in float32); "
             "any other dtype as float32.")
        .def("set_lowrank",
             [](Hook & h, int layer, py::array u, py::array vt, std::optional<CArray<float>> bias) {
                 if (u.ndim() != 2 || vt.ndim() != 2 || u.shape(1) != vt.shape(0)) {
                     throw py::value_error("layer " + std::to_string(layer) +
                                           ": low-rank factors must be 2-D, [d, r] and [r, d]");
                 }
                 if (is_half(u) != is_half(vt)) {
                     throw py::value_error("layer " + std::to_string(layer) +
                                           ": low-rank factors must both be float16 or neither");
                 }
                 const float * b = bias ? bias->data() : nullptr;
                 const size_t bn = bias ? (size_t) bias->size() : 0;
                 const int rank = (int) u.shape(1);
                 if (is_half(u)) {
                     const py::array u16 = half_array(u), vt16 = half_array(vt);
                     h.set_lowrank_f16(layer, half_bits(u16), (size_t) u16.size(), half_bits(vt16), (size_t) vt16.size(),
                                       rank, b, bn);
                 } else {
                     const CArray<float> u32 = CArray<float>::ensure(u), vt32 = CArray<float>::ensure(vt);
                     if (!u32 || !vt32) {
                         throw py::type_error("layer " + std::to_string(layer) +
                                              ": low-rank factors must be numeric arrays");
                     }
                     h.set_lowrank(layer, u32.data(), (size_t) u32.size(), vt32.data(), (size_t) vt32.size(), rank, b, bn);
                 }
             },
             py::arg("layer"), py::arg("u"), py::arg("vt"), py::arg("bias") = py::none(),
             "Float16 factors (both) are stored as float16; any other dtype as float32.")
        .def("set_affine_q8",
             [](Hook & h, int layer, CArray<int8_t> q, CArray<float> scale, std::optional<CArray<float>> bias) {
                 if (q.ndim() != 2 || scale.ndim() != 1) {
                     throw py::value_error("layer " + std::to_string(layer) +
                                           ": an 8-bit map needs a 2-D int8 array and a 1-D scale");
                 }
                 h.set_affine_q8(layer, q.data(), (size_t) q.size(), scale.data(), (size_t) scale.size(),
                                 bias ? bias->data() : nullptr, bias ? (size_t) bias->size() : 0);
             },
             py::arg("layer"), py::arg("q"), py::arg("scale"), py::arg("bias") = py::none(),
             "y = h + (h @ q) * scale + bias: an 8-bit map difference (int8 [d, d]) with a scale per column.")
        .def("set_affine_q4",
             [](Hook & h, int layer, CArray<int8_t> q, CArray<float> scale, std::optional<CArray<float>> bias) {
                 if (q.ndim() != 2 || scale.ndim() != 1) {
                     throw py::value_error("layer " + std::to_string(layer) +
                                           ": a 4-bit map needs a 2-D array of bytes and a 1-D scale");
                 }
                 // the file's I8 tensor holds two unsigned nibbles per byte: the same bits as uint8
                 h.set_affine_q4(layer, reinterpret_cast<const uint8_t *>(q.data()), (size_t) q.size(), scale.data(),
                                 (size_t) scale.size(), bias ? bias->data() : nullptr, bias ? (size_t) bias->size() : 0);
             },
             py::arg("layer"), py::arg("q"), py::arg("scale"), py::arg("bias") = py::none(),
             "y = h + (h @ q) * scale + bias for a 4-bit map difference: q [d, d/2] bytes (int8 or uint8), "
             "byte [j, k] holding q[j, 2k] + 8 in its low nibble and q[j, 2k+1] + 8 in its high one.")
        .def("map_bytes", &Hook::map_bytes, py::arg("layer"),
             "Bytes of the map or low-rank factors stored for a layer (0 if none).")
        .def("set_additive",
             [](Hook & h, int layer, CArray<float> vector) {
                 h.set_additive(layer, vector.data(), (size_t) vector.size());
             },
             py::arg("layer"), py::arg("vector"))
        .def("set_ffn", &Hook::set_ffn, py::arg("tensor_prefix"), py::arg("n_ff"),
             "Name prefix (e.g. 'ffn_geglu') and width of the FFN activation tensor that clamps and FFN capture use.")
        .def("set_clamp",
             [](Hook & h, int layer, CArray<int32_t> index, CArray<float> value) {
                 if (index.ndim() != 1 || value.ndim() != 1) {
                     throw py::value_error("layer " + std::to_string(layer) + ": clamp indices and values must be 1-D");
                 }
                 h.set_clamp(layer, index.data(), (size_t) index.size(), value.data(), (size_t) value.size());
             },
             py::arg("layer"), py::arg("index"), py::arg("value"))
        .def("clear_layer", &Hook::clear_layer, py::arg("layer"))
        .def("clear_transforms", &Hook::clear_transforms)
        .def_property("alpha", &Hook::alpha, &Hook::set_alpha)
        .def("active_layers", &Hook::active_layers)
        .def("wants_batch", &Hook::wants_batch, py::arg("applies"))
        .def_property("threads", &Hook::threads, &Hook::set_threads)
        .def("set_batch",
             [](Hook & h, int n_ubatch, CArray<uint8_t> flags, std::optional<CArray<int32_t>> slots) {
                 if (slots && slots->size() != flags.size()) {
                     throw py::value_error("slots and flags differ in length");
                 }
                 h.set_batch(n_ubatch, flags.data(), slots ? slots->data() : nullptr, (size_t) flags.size());
             },
             py::arg("n_ubatch"), py::arg("flags"), py::arg("slots") = py::none())
        .def(
            "set_batch_from_logits",
            [](Hook & h, int n_ubatch, uintptr_t logits_address, size_t n_tokens, int apply) {
                h.set_batch_from_logits(n_ubatch, reinterpret_cast<const int8_t *>(logits_address), n_tokens, apply);
            },
            py::arg("n_ubatch"), py::arg("logits_address"), py::arg("n_tokens"), py::arg("apply"),
            "set_batch for a llama_batch about to be decoded: logits_address is its int8 logits array "
            "(ctypes address), apply one of APPLY_NONE, APPLY_ALL, APPLY_LAST.")
        .def("end_batch", &Hook::end_batch)
        .def("start_capture", &Hook::start_capture, py::arg("layers"), py::arg("n_slots"),
             py::arg("stop_after_last") = false, py::arg("site") = (int) lingalign::SITE_RESIDUAL)
        .def_property_readonly("capture_width", &Hook::capture_width)
        .def("stop_capture", &Hook::stop_capture)
        .def("capture_results",
             [](const Hook & h) {
                 std::vector<double> sums;
                 std::vector<int64_t> counts;
                 std::vector<float> last;
                 h.capture_results(sums, counts, last);
                 const py::ssize_t n_cap = (py::ssize_t) h.capture_layers().size();
                 const py::ssize_t d = h.capture_width();
                 const py::ssize_t n_slots = n_cap ? (py::ssize_t) counts.size() / n_cap : 0;
                 py::array_t<int64_t> c({n_slots, n_cap});
                 std::copy(counts.begin(), counts.end(), c.mutable_data());
                 py::array_t<float> l({n_slots, n_cap, d});
                 std::copy(last.begin(), last.end(), l.mutable_data());
                 return py::make_tuple(to_array(std::move(sums), {n_slots, n_cap, d}), c, l);
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
            "{'host': n, 'round_trip': n, 'device': n}: in host memory, in device memory copied to the "
            "host and back, or transformed on the device (set_device_maps).")
        .def("set_device_maps", &Hook::set_device_maps, py::arg("mode"),
             "0: device tensors take a host round trip (default); 1: they are transformed on their "
             "device by a ggml graph; 2: host tensors too, on ggml's CPU backend (tests).")
        .def("device_maps_status", &Hook::device_maps_status)
        .def("set_host_round_trip", &Hook::set_host_round_trip,
             "Serve host tensors through a copy to a buffer and back, as device tensors are (tests).");
}
