// Finds the TrainableModel behind a Lua value: the models of src/nn (through their binding).
#pragma once

#include <lua.hpp>

#include <memory>

#include "train/engine.hpp"

namespace sky::train {

// The model at idx, or nullptr when the value is no model this build knows.
std::shared_ptr<TrainableModel> model_lookup(lua_State* L, int idx);

}  // namespace sky::train
