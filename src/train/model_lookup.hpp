// Finds the TrainableModel behind a Lua value: the models of src/nn ("skyrun.Model" userdata).
#pragma once

#include <lua.hpp>

#include <memory>
#include <string>

#include "train/engine.hpp"

namespace sky::train {

// The model at idx, or nullptr when the value is no model this build knows.
std::shared_ptr<TrainableModel> model_lookup(lua_State* L, int idx);

// Copies the weights saved in folder (model.safetensors) into the model at idx, in place (resume,
// load_best_model_at_end). Throws naming the folder when they do not fit.
void model_load_weights(lua_State* L, int idx, const std::string& folder);

}  // namespace sky::train
