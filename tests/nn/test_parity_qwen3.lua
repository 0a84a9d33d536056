-- Parity with HF transformers 5.17 for qwen3 (fixtures: tests/fixtures/models/{qwen3}).
package.path = os.getenv("SKYRUN_SOURCE_ROOT") .. "/tests/nn/?.lua;" .. package.path
local T = require "testlib"
local N = require "nn_testing"

N.parity_tests("qwen3", "causal")

T.run()
