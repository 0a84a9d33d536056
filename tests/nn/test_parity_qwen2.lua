-- Parity with HF transformers 5.17 for qwen2 (fixtures: tests/fixtures/models/{qwen2}).
package.path = os.getenv("SKYRUN_SOURCE_ROOT") .. "/tests/nn/?.lua;" .. package.path
local T = require "testlib"
local N = require "nn_testing"

N.parity_tests("qwen2", "causal")

T.run()
