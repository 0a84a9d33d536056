// The one place where Debian's LibTorch 1.13 and the pip wheels' LibTorch 2.x differ for us.
#pragma once

#include <torch/version.h>

#define SKY_TORCH_AT_LEAST(major, minor) \
  (TORCH_VERSION_MAJOR > (major) || (TORCH_VERSION_MAJOR == (major) && TORCH_VERSION_MINOR >= (minor)))
