-- Parity with HF transformers 5.17 for gpt2 (fixtures: tests/fixtures/models/{gpt2}).
package.path = os.getenv("SKYRUN_SOURCE_ROOT") .. "/tests/nn/?.lua;" .. package.path
local T = require "testlib"
local N = require "nn_testing"

N.parity_tests("gpt2", "causal")

T.run()
