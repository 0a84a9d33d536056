-- Writes seed inputs for the wire fuzz target (src/wire/fuzz_wire.cpp) into ./corpus:
--   mkdir corpus && skyrun tests/wire/fuzz_seeds.lua && ./fuzz_wire -max_total_time=300 corpus/
-- The first byte of each seed selects the target's mode (0 value, 1 frames, 2 handshake text).
local wire = require "sky.wire"
local seeds = {
  1, -0.0, 0/0, 1/0, 2^53, "bytes\0\255", true, false, {}, {1, 2, nil, 4}, {a = {b = {c = "d"}}},
  9007199254740993LL, 18446744073709551615ULL, setmetatable({x = 1}, {__index = {y = 2}}),
  {[true] = 1, [2.5] = "x", ["key with space"] = {}},
}
local cyc = {}; cyc.self = cyc; cyc[1] = cyc; seeds[#seeds + 1] = cyc
local shared = {1}; seeds[#seeds + 1] = {shared, shared, k = shared}
local up = 1; seeds[#seeds + 1] = {function() up = up + 1 return up end, function() return up end}
seeds[#seeds + 1] = string.format
seeds[#seeds + 1] = string
for i, v in ipairs(seeds) do
  local b = wire.encode(v)
  local f = io.open("corpus/v" .. i, "wb") f:write("\0" .. b) f:close()
  f = io.open("corpus/f" .. i, "wb") f:write("\1" .. wire.frame(4, b) .. wire.frame(5, b)) f:close()
end
local f = io.open("corpus/hello", "wb") f:write("\2" .. wire.hello()) f:close()

-- Frames a hostile worker sends (tests/lib/hostile_worker.lua): code where data is expected,
-- headers that are missing or malformed, kinds only the driver sends. The driver refuses each.
local K = wire.kinds
wire.register("FILE*", function() return function() return 1 end, "argument" end)
local dir = os.tmpname()
os.remove(dir)
os.execute("mkdir -p " .. dir)
local mf = io.open(dir .. "/sky_fuzz_mod.lua", "w") mf:write("return {}") mf:close()
package.path = dir .. "/?.lua;" .. package.path
local module_with_source = require "sky_fuzz_mod"
local hostile = {
  ready_module = wire.frame(K.READY, wire.encode({ pid = 1, extra = module_with_source })),
  ready_reducer = wire.frame(K.READY, wire.encode({ pid = 1, extra = io.stderr })),
  ready_cfunction = wire.frame(K.READY, wire.encode({ pid = 1, extra = os.execute })),
  result_function = wire.frame(K.RESULT, "7:" .. wire.encode({ true, { n = 1, function() end } })),
  result_metatable = wire.frame(K.RESULT, "7:" .. wire.encode({ true, { n = 1, setmetatable({}, { __index = print }) } })),
  batch_reducer = wire.frame(K.BATCH_RESULT, "1:1:" .. wire.encode({ n = 1, values = { io.stderr } })),
  result_data = wire.frame(K.RESULT, "12:" .. wire.encode({ true, { n = 2, "ok", { 1, 2 } } })),
  result_noid = wire.frame(K.RESULT, wire.encode({ true, { n = 0 } })),
  result_badid = wire.frame(K.RESULT, "00:" .. wire.encode(true)) .. wire.frame(K.RESULT, "-1:x"),
  batch_nobase = wire.frame(K.BATCH_RESULT, "3:" .. wire.encode({ n = 0, values = {} })),
  driver_kinds = wire.frame(K.TASK, "1:" .. wire.encode({ fn = print })) .. wire.frame(K.SETUP, "") .. wire.frame(99, "x"),
  call_function = wire.frame(K.CALL, "4:" .. wire.encode({ op = "put", value = function() end })),
  call_noid = wire.frame(K.CALL, wire.encode({ op = "get" })),
  zero_length = "\0\0\0\0\5",
}
for name, bytes in pairs(hostile) do
  f = io.open("corpus/hostile_" .. name, "wb") f:write("\1" .. bytes) f:close()
end
os.execute("rm -rf " .. dir)
