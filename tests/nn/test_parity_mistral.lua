-- Parity with HF transformers 5.17 for mistral (fixtures: tests/fixtures/models/{mistral}).
package.path = os.getenv("SKYRUN_SOURCE_ROOT") .. "/tests/nn/?.lua;" .. package.path
local T = require "testlib"
local N = require "nn_testing"

N.parity_tests("mistral", "causal")

T.run()
