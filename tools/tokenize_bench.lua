-- Our side of tools/bench tokenizers: BENCH_TOK (tokenizer.json), BENCH_INPUTS (JSON lines of
-- strings), BENCH_THREADS; prints MB/s of input encoded (best of 3), through the Lua API.
local core = require "tokenizers.core"
local ffi = require "ffi"
ffi.cdef [[ struct bench_ts { long s, ns; }; int clock_gettime(int, struct bench_ts*); ]]
local function now() local t = ffi.new("struct bench_ts"); ffi.C.clock_gettime(1, t); return tonumber(t.s) + tonumber(t.ns) * 1e-9 end

local tok = core.from_file(os.getenv("BENCH_TOK"))
local threads = tonumber(os.getenv("BENCH_THREADS"))
-- The inputs file holds one JSON string per line; read_json takes a whole document.
local f = assert(io.open(os.getenv("BENCH_INPUTS")))
local doc = "[" .. f:read("*a"):gsub("\n$", ""):gsub("\n", ",") .. "]"
f:close()
local tmp = os.tmpname()
local w = assert(io.open(tmp, "wb"))
w:write(doc)
w:close()
local texts = core.read_json(tmp)
os.remove(tmp)
local bytes = 0
for _, s in ipairs(texts) do bytes = bytes + #s end
local opts = { threads = threads, return_attention_mask = true }
local best = math.huge
for _ = 1, 3 do
  collectgarbage()
  local t0 = now()
  tok:encode(texts, nil, opts)
  best = math.min(best, now() - t0)
end
print(string.format("%.3f", bytes / best / 1e6))
