// lingalign._core.testing: process-wide kernel switches and probes (kernel_switches.h), and the
// batch-row mapping on its own (batch_rows.h), for tests and benchmarks.
#include "batch_rows.h"
#include "bindings.h"
#include "kernel_switches.h"

#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <optional>
#include <string>

namespace py = pybind11;

namespace lingalign {

void bind_testing(py::module_ & t) {
    t.def(
        "half_to_float",
        [](py::array bits, bool portable) {
            const auto b = py::array_t<uint16_t, py::array::c_style | py::array::forcecast>::ensure(bits);
            if (!b) {
                throw py::type_error("half_to_float needs an array of uint16 bit patterns");
            }
            py::array_t<float> out(b.size());
            half_to_float_array(b.data(), (size_t) b.size(), out.mutable_data(), portable);
            return out;
        },
        py::arg("bits"), py::arg("portable") = true,
        "float32 values of IEEE binary16 bit patterns (uint16), with the kernels' conversion.");
    t.def("set_portable_kernels", &set_portable_kernels, py::arg("portable"),
          "Kernels run only their portable code instead of the AVX2, AVX-512 and F16C code.");
    t.def("set_wide_kernels", &set_wide_kernels, py::arg("wide"),
          "Kernels may use AVX-512 and VNNI where the CPU has them (default), or stop at AVX2.");
    t.def("wide_kernels_available", &wide_kernels_available);
    t.def("kernel_paths", &kernel_paths, "The code the map kernels run on this CPU: float_prompt, float_decode, q4_prompt.");
    t.def("q4_vnni_available", &q4_vnni_available);
    t.def("set_q4_vnni", &set_q4_vnni, py::arg("which"),
          "The 4-bit prompt kernel uses this VNNI variant: 'auto' (default), 'avxvnni' or 'avx512vnni'.");
    t.def("half_conversion_uses_f16c", &half_conversion_uses_f16c);
    t.def(
        "q4_multiply",
        [](py::array_t<float, py::array::c_style | py::array::forcecast> rows,
           py::array_t<int8_t, py::array::c_style | py::array::forcecast> q, bool portable) {
            if (rows.ndim() != 2 || q.ndim() != 2 || q.shape(0) != rows.shape(1) || q.shape(1) * 2 != q.shape(0)) {
                throw py::value_error("q4_multiply needs rows [n, d] and q [d, d/2]");
            }
            const int n = (int) rows.shape(0), d = (int) rows.shape(1);
            py::array_t<float> out({n, d});
            q4_multiply_rows(rows.data(), n, d, reinterpret_cast<const uint8_t *>(q.data()), out.mutable_data(), portable);
            return out;
        },
        py::arg("rows"), py::arg("q"), py::arg("portable") = false,
        "rows @ Q for a 4-bit map in the file layout, as the hook's kernel computes it (no scales).");

    py::class_<BatchRows>(t, "BatchRows", "Which token each row of a served tensor is (batch_rows.h).")
        .def(py::init<>())
        .def(
            "set",
            [](BatchRows & b, int n_ubatch, py::array_t<uint8_t, py::array::c_style | py::array::forcecast> flags,
               std::optional<py::array_t<int32_t, py::array::c_style | py::array::forcecast>> slots, int n_slots) {
                if (slots && slots->size() != flags.size()) {
                    throw py::value_error("slots and flags differ in length");
                }
                b.set(n_ubatch, flags.data(), slots ? slots->data() : nullptr, (size_t) flags.size(), n_slots);
            },
            py::arg("n_ubatch"), py::arg("flags"), py::arg("slots") = py::none(), py::arg("n_slots") = 0)
        .def("end", &BatchRows::end)
        .def(
            "map_rows",
            [](BatchRows & b, int key, const std::string & name, long long n_rows) {
                std::string error;
                if (!b.map_rows(key, name.c_str(), n_rows, &error)) {
                    throw py::value_error(error);
                }
                return b.row_tokens();
            },
            py::arg("key"), py::arg("name"), py::arg("n_rows"),
            "The token of each row of a node (key = 2 * layer + site); ValueError if it does not fit.")
        .def("apply_runs", [](const BatchRows & b, bool generated_only) {
            std::vector<std::pair<int, int>> runs;
            b.apply_runs(runs, generated_only);
            return runs;
        }, py::arg("generated_only") = false);
}

} // namespace lingalign
