// Adapter from src/nn's models to TrainableModel. Until src/nn lands, no model type is known here.
#include "train/model_lookup.hpp"

namespace sky::train {

std::shared_ptr<TrainableModel> model_lookup(lua_State* L, int idx) {
  (void)L;
  (void)idx;
  return nullptr;
}

}  // namespace sky::train
