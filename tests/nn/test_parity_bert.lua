-- Parity with HF transformers 5.17 for bert (fixtures: tests/fixtures/models/{bert,bert-cls}).
package.path = os.getenv("SKYRUN_SOURCE_ROOT") .. "/tests/nn/?.lua;" .. package.path
local T = require "testlib"
local N = require "nn_testing"

N.parity_tests("bert", "base")
N.parity_tests("bert-cls", "cls")

T.run()
