-- Lua numbers meeting tensors: scalar operands promote as Python numbers do in torch (an integral
-- value is an int, one with a fraction a float, neither upcasts a tensor of a wider kind), and
-- values that do not fit an integer dtype are errors instead of wrapped integers.
local T = require "testlib"
local torch = require "torch"

local function check(t, dtype, values, what)
  T.eq(t.dtype, dtype, what and (what .. " dtype") or "dtype")
  T.eq(t:tolist(), values, what)
end

T.test("an integer tensor times a fractional number is a float tensor, as in torch", function()
  check(torch.tensor { 4.0, 9.0 } * 0.5, "float32", { 2.0, 4.5 })
  check(torch.tensor { 3 } * 0.5, "float32", { 1.5 })
  check(0.5 * torch.tensor { 3 }, "float32", { 1.5 })
  check(torch.tensor { 1 } + 0.25, "float32", { 1.25 })
  check(2.5 - torch.tensor { 1 }, "float32", { 1.5 })
  check(torch.tensor { 3 }:mul(0.5), "float32", { 1.5 })
end)

T.test("powers with a fractional exponent are float; integral exponents keep integers", function()
  check(torch.tensor { 4, 9 } ^ 0.5, "float32", { 2, 3 })
  check(torch.tensor { 4, 9 }:pow(0.5), "float32", { 2, 3 })
  check(torch.tensor { 4, 9 } ^ 2, "int64", { 16, 81 })
end)

T.test("integral numbers keep the tensor's dtype; division is true division", function()
  check(torch.tensor { 4, 9 } * 2, "int64", { 8, 18 })
  check(1 - torch.tensor { 4, 9 }, "int64", { -3, -8 })
  check(torch.tensor { 4, 9 } / 2, "float32", { 2, 4.5 })
  check(torch.tensor({ 4, 9 }, { dtype = "int32" }) * 2, "int32", { 8, 18 })
  check(torch.tensor({ 1, 2 }, { dtype = "float16" }) * 2.5, "float16", { 2.5, 5 })
  check(torch.tensor({ 1, 2 }, { dtype = "float64" }) * 0.5, "float64", { 0.5, 1 })
end)

T.test("comparisons with a fractional number compare exactly", function()
  check(torch.tensor { 1, 2 }:lt(1.5), "bool", { true, false })
  check(torch.tensor { 1, 2 }:eq(1.5), "bool", { false, false })
  check(torch.tensor { 1, 2 }:ge(2), "bool", { false, true })
end)

T.test("a value that does not fit int64 is an error, not a wrapped integer", function()
  T.raises(function() torch.tensor { 2 ^ 63 } end, "torch.tensor: 9.2233720368547758e+18 does not fit int64")
  T.raises(function() torch.tensor { -2 ^ 64 } end, "does not fit int64")
  check(torch.tensor { -2 ^ 63 }, "int64", { -2 ^ 63 })
  check(torch.tensor { 2 ^ 53 }, "int64", { 2 ^ 53 })
  check(torch.tensor({ 2 ^ 63 }, { dtype = "float64" }), "float64", { 2 ^ 63 })
end)

T.test("values outside an explicit integer dtype are errors; fractions truncate as in torch", function()
  T.raises(function() torch.tensor({ 1e300 }, { dtype = "int32" }) end, "torch.tensor: 1.0000000000000001e+300 does not fit int32")
  T.raises(function() torch.tensor({ 2 ^ 31 }, { dtype = "int32" }) end, "does not fit int32")
  T.raises(function() torch.tensor({ 300 }, { dtype = "uint8" }) end, "300 does not fit uint8")
  T.raises(function() torch.tensor({ -1 }, { dtype = "uint8" }) end, "-1 does not fit uint8")
  T.raises(function() torch.tensor({ 0 / 0 }, { dtype = "int64" }) end, "does not fit int64")
  T.raises(function() torch.tensor({ math.huge }, { dtype = "int16" }) end, "inf does not fit int16")
  check(torch.tensor({ 2.5, -2.5 }, { dtype = "int64" }), "int64", { 2, -2 })
  check(torch.tensor({ 255, 0 }, { dtype = "uint8" }), "uint8", { 255, 0 })
end)

T.test("NaN and infinities make float tensors", function()
  local t = torch.tensor { 1, math.huge }
  T.eq(t.dtype, "float32")
  T.eq(t:tolist()[2], math.huge)
end)

T.run()
