-- Parity with HF transformers 5.17 for distilbert (fixtures: tests/fixtures/models/{distilbert-cls}).
package.path = os.getenv("SKYRUN_SOURCE_ROOT") .. "/tests/nn/?.lua;" .. package.path
local T = require "testlib"
local N = require "nn_testing"

N.parity_tests("distilbert-cls", "cls")

T.run()
