// Precompiled header for the LibTorch module: the heavy headers every file there includes.
#include <torch/torch.h>
