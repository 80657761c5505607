// pybind11 module lingalign._core: lingalign's C++ hook for llama.cpp's graph-evaluation
// callback (private; use the lingalign package).
#include "batch_rows.h"
#include "bindings.h"
#include "capture.h"
#include "hook.h"
#include "layer_transform.h"

#include <cstdint>

namespace py = pybind11;

#ifndef LINGALIGN_LLAMA_CPP_VERSION
#  error "LINGALIGN_LLAMA_CPP_VERSION must be defined by the build (the llama-cpp-python version compiled against)"
#endif

PYBIND11_MODULE(_core, m) {
    using namespace lingalign;
    m.doc() = "lingalign's C++ hook for llama.cpp's graph-evaluation callback (private; use the lingalign package)";
    m.attr("LLAMA_CPP_VERSION") = LINGALIGN_LLAMA_CPP_VERSION;
    m.attr("CALLBACK_ADDRESS") = (uintptr_t) &Hook::eval_callback;
    m.attr("ROW_OUTPUT") = (int) ROW_OUTPUT;
    m.attr("ROW_APPLY") = (int) ROW_APPLY;
    m.attr("ROW_GENERATED") = (int) ROW_GENERATED;
    m.attr("ROW_POOL") = (int) ROW_POOL;
    m.attr("ROW_LAST") = (int) ROW_LAST;
    m.attr("APPLY_NONE") = (int) APPLY_NONE;
    m.attr("APPLY_ALL") = (int) APPLY_ALL;
    m.attr("APPLY_LAST") = (int) APPLY_LAST;
    m.attr("SITE_RESIDUAL") = (int) SITE_RESIDUAL;
    m.attr("SITE_FFN") = (int) SITE_FFN;
    m.attr("KIND_AFFINE") = (int) Kind::AFFINE;
    m.attr("KIND_LOWRANK") = (int) Kind::LOWRANK;
    m.attr("KIND_ADDITIVE") = (int) Kind::ADDITIVE;
    m.attr("KIND_CLAMP") = (int) Kind::CLAMP;
    m.attr("KIND_SHIFT") = (int) Kind::SHIFT;
    py::register_exception<LayerError>(m, "LayerError", PyExc_ValueError);

    bind_prepared(m);
    bind_hook(m);
    py::module_ testing = m.def_submodule("testing", "Kernel switches and probes for lingalign's tests (process-wide).");
    bind_testing(testing);
}
