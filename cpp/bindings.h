// lingalign._core, one binding file per concept: bind_prepared.cpp (PreparedTransform),
// bind_hook.cpp (Hook), bind_testing.cpp (the _core.testing submodule); module.cpp makes the
// module and its constants.
#pragma once

#include <pybind11/pybind11.h>

namespace lingalign {

void bind_prepared(pybind11::module_ & m);
void bind_hook(pybind11::module_ & m);
void bind_testing(pybind11::module_ & testing);

} // namespace lingalign
