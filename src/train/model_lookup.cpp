// Adapter from src/nn's models (nn/model.hpp) to the Trainer's TrainableModel.
#include "train/model_lookup.hpp"

#include <stdexcept>

#include "nn/model.hpp"
#define SKY_TRAIN_HAVE_NN 1

namespace sky::train {

#if SKY_TRAIN_HAVE_NN
namespace {

class NnModel : public TrainableModel {
 public:
  explicit NnModel(std::shared_ptr<nn::Model> m) : m_(std::move(m)) {}

  std::vector<NamedParam> named_parameters() override {
    std::vector<NamedParam> out;
    for (const auto& [name, t] : m_->named_parameters())
      if (t.is_floating_point()) out.push_back({name, t});
    return out;
  }

  ModelOutput forward(const Batch& batch, std::optional<double> num_items) override {
    nn::ForwardArgs a;
    const at::Tensor* ids = batch.find("input_ids");
    if (!ids) throw std::runtime_error("the batch has no input_ids (columns: " + columns(batch) + ")");
    a.input_ids = *ids;
    if (const at::Tensor* t = batch.find("attention_mask")) a.attention_mask = *t;
    if (const at::Tensor* t = batch.find("labels")) a.labels = *t;
    if (const at::Tensor* t = batch.find("token_type_ids")) a.token_type_ids = *t;
    if (const at::Tensor* t = batch.find("position_ids")) a.position_ids = *t;
    a.num_items_in_batch = num_items.value_or(0.0);
    a.return_logits = batch.want_logits;
    nn::ForwardOutput o = m_->forward(a);
    return {o.loss, o.logits};
  }

  void set_training(bool training) override { m_->train(training); }

  void to_device(const at::Device& d) override {
    const at::Device cur = m_->device();
    // "cuda" means the current device: a model already on cuda:0 stays where it is
    if (cur.type() != d.type() || (d.has_index() && cur.index() != d.index())) m_->to(d, std::nullopt);
  }

  // HF 5.x: these models take **kwargs, so the Trainer passes num_items_in_batch and does not
  // divide by the accumulation steps (the classification loss stays a mean over the micro-batch).
  bool accepts_loss_kwargs() const override { return true; }
  // HF 5.x counts num_items_in_batch over labels[..., 1:] for *ForCausalLM classes (their
  // loss_type, taken from the class name) and over all labels otherwise: GPT2LMHeadModel's count
  // includes each row's first label, as HF Trainer 5.17's fixture run shows (37 vs 33 items).
  bool shifts_labels() const override {
    return m_->head() == nn::ModelHead::CausalLM && m_->class_name().find("ForCausalLM") != std::string::npos;
  }

  bool loss_sums_over_items() const override { return m_->head() == nn::ModelHead::CausalLM; }

  std::pair<std::string, std::vector<std::string>> blocks() const override {
    return {m_->block_class(), m_->block_prefixes()};
  }

  bool set_block_hook(BlockHook hook, std::shared_ptr<BlockHookOwner> owner) override {
    m_->set_block_hook(std::move(hook), std::move(owner));
    return true;
  }

  std::shared_ptr<BlockHookOwner> block_hook_owner() const override {
    return std::static_pointer_cast<BlockHookOwner>(m_->block_hook_owner());
  }

  bool has_quantized_weights() const override { return m_->is_loaded_in_4bit(); }

  nn::Model& model() { return *m_; }

 private:
  static std::string columns(const Batch& b) {
    std::string s;
    for (const auto& [k, v] : b.tensors) s += (s.empty() ? "" : ", ") + k;
    return s;
  }
  std::shared_ptr<nn::Model> m_;
};

}  // namespace
#endif

#if SKY_TRAIN_HAVE_NN
// The model behind idx: a "skyrun.Model", or a PEFT model (lua/peft's PeftModel table, whose
// "_model" field holds the model with its adapters inside).
static std::shared_ptr<nn::Model> nn_model_at(lua_State* L, int idx) {
  if (auto m = nn::lua_test_model(L, idx)) return m;
  if (!lua_istable(L, idx)) return nullptr;
  lua_pushstring(L, "_model");          // [k]
  lua_rawget(L, idx < 0 ? idx - 1 : idx);  // [m]
  auto m = nn::lua_test_model(L, -1);
  lua_pop(L, 1);                        // []
  return m;
}
#endif

std::shared_ptr<TrainableModel> model_lookup(lua_State* L, int idx) {
#if SKY_TRAIN_HAVE_NN
  if (auto m = nn_model_at(L, idx)) return std::make_shared<NnModel>(m);
#endif
  (void)L;
  (void)idx;
  return nullptr;
}

void model_load_weights(lua_State* L, int idx, const std::string& folder) {
#if SKY_TRAIN_HAVE_NN
  if (auto m = nn::lua_test_model(L, idx)) {
    nn::LoadOptions o;
    o.head = m->head();
    o.dtype = nn::dtype_to_string(m->dtype());
    o.device = m->device().str();
    if (m->head() == nn::ModelHead::SequenceClassification) o.num_labels = m->config().num_labels;
    auto saved = nn::model_from_pretrained(folder, o);
    at::NoGradGuard no_grad;
    for (const auto& [name, t] : m->named_parameters()) {
      at::Tensor src = saved->parameter(name);
      if (!src.sizes().equals(t.sizes()))
        throw std::runtime_error(folder + ": parameter '" + name + "' has shape " + c10::str(src.sizes()) +
                                 ", the model's " + c10::str(t.sizes()));
      t.copy_(src);
    }
    return;
  }
#endif
  (void)L;
  (void)idx;
  throw std::runtime_error("not supported yet: loading weights from " + folder + " into this model");
}

}  // namespace sky::train
