// The architectures (internal to src/nn): one factory per family, and the dispatch on
// model_type. Each arch_<family>.cpp declares its parameters with HF's names and implements
// forward with HF's arithmetic.
#pragma once

#include <memory>

#include "nn/model.hpp"

namespace sky::nn {

std::shared_ptr<Model> arch_gpt2_create(const ModelConfig& c, ModelHead head);
std::shared_ptr<Model> arch_llama_create(const ModelConfig& c, ModelHead head);  // llama, mistral, qwen2, qwen3
std::shared_ptr<Model> arch_bert_create(const ModelConfig& c, ModelHead head);   // bert, distilbert

// nullptr for an unknown model_type.
std::shared_ptr<Model> arch_create(const ModelConfig& c, ModelHead head);

}  // namespace sky::nn
