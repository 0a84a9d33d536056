-- Parity with HF transformers 5.17 for llama (fixtures: tests/fixtures/models/{llama,llama3-rope}).
package.path = os.getenv("SKYRUN_SOURCE_ROOT") .. "/tests/nn/?.lua;" .. package.path
local T = require "testlib"
local N = require "nn_testing"

N.parity_tests("llama", "causal")
N.parity_tests("llama3-rope", "causal")

T.run()
