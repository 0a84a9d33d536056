-- Our tokenizers against HuggingFace tokenizers 0.23.2 (npm), on every tokenizer file under
-- ../shared/data/tokenizers: ids, tokens, offsets, decode with and without special tokens, pairs
-- with truncation, batches with truncation and padding. Inputs: all of tinyshakespeare (as
-- 8-line strings) plus, per tokenizer, its own slice of a seeded fuzz set (mixed scripts, emoji, combining marks,
-- whitespace runs with \r\n and NBSP, control chars, contractions, digit runs, special-token
-- look-alikes); FUZZ_PER_TOKENIZER x 15 files = 112,500 fuzz strings in all.
-- The npm package is installed once under the build folder (build/tokenize-hf); without npm the
-- test is skipped (exit 77) with the reason.
local T = require "testlib"

local SEED = 20261203
local FUZZ_PER_TOKENIZER = 7500

local build = assert(os.getenv("SKYRUN_BUILD_ROOT"), "SKYRUN_BUILD_ROOT not set")
local src = assert(os.getenv("SKYRUN_SOURCE_ROOT"), "SKYRUN_SOURCE_ROOT not set")
local data = assert(os.getenv("SKYRUN_SHARED_DATA"), "SKYRUN_SHARED_DATA not set")
local q = T.shell_quote
local scratch = build .. "/tokenize-hf"
local compare_bin = build .. "/tests/tokenize/tok_compare"
local script = src .. "/tests/tokenize/hf_reference.js"

local function skip(why)
  print("SKIP: " .. why)
  io.stdout:flush()
  os.exit(77)
end

local function ensure_hf_tokenizers()
  local pkg = scratch .. "/node_modules/tokenizers/package.json"
  local f = io.open(pkg)
  if f then
    local text = f:read("*a")
    f:close()
    if text:find('"version": "0.23.2"', 1, true) then return end
  end
  local _, _, code = T.sh("command -v node && command -v npm")
  if code ~= 0 then skip("node/npm not found: cannot run HF tokenizers 0.23.2 for the comparison") end
  T.exec("mkdir -p " .. q(scratch))
  local out, err, c = T.sh(string.format("cd %s && timeout 600 npm install --no-audit --no-fund --loglevel=error tokenizers@0.23.2", q(scratch)))
  if c ~= 0 then skip("npm could not install tokenizers@0.23.2 (npm unreachable?): " .. (err ~= "" and err or out):sub(1, 400)) end
end

ensure_hf_tokenizers()

local files = {}
local ls = T.sh("ls " .. q(data .. "/tokenizers") .. "/*.json")
for path in ls:gmatch("[^\n]+") do
  if not path:find("tokenizer_config", 1, true) then files[#files + 1] = path end
end
table.sort(files)
T.ok(#files >= 15, "tokenizer files found in " .. data .. "/tokenizers")

local function exists(p)
  local f = io.open(p)
  if f then f:close() return true end
  return false
end

-- HF's results depend only on the reference script, the files and the seed: they are kept under
-- the build folder, keyed by a digest of those, so a rerun only runs ours.
local args = {}
for _, p in ipairs(files) do args[#args + 1] = q(p) end
local digest = T.sh(string.format("cat %s %s | md5sum | cut -c1-16", q(script), table.concat(args, " "))):gsub("%s+", "")
local work = string.format("%s/refs-%s-%d-%d", scratch, digest, SEED, FUZZ_PER_TOKENIZER)
local t0 = os.time()
if not exists(work .. "/done") then
  T.exec("rm -rf " .. q(work) .. " && mkdir -p " .. q(work))
  local out, err, code = T.sh(string.format("cd %s && NODE_PATH=%s node %s all %d %d %s %s %s", q(scratch),
    q(scratch .. "/node_modules"), q(script), SEED, FUZZ_PER_TOKENIZER, q(data .. "/text/tinyshakespeare.txt"), q(work),
    table.concat(args, " ")))
  if code ~= 0 then error("hf_reference.js failed: " .. err .. out) end
  T.write_file(work .. "/done", "")
  print(string.format("# HF tokenizers reference over %d files in %ds", #files, os.time() - t0))
else
  print("# HF tokenizers reference reused from " .. work)
end

for _, path in ipairs(files) do
  local name = path:match("([^/]+)%.json$")
  T.test(name .. " gives HF's ids, tokens, offsets and decodes", function()
    local inputs = work .. "/" .. name .. ".inputs.jsonl"
    if exists(work .. "/" .. name .. ".loaderr") then
      -- HF refuses this file: ours must refuse it too, with a message naming the field.
      local out = T.sh(string.format("%s %s %s /dev/null", q(compare_bin), q(path), q(inputs)))
      T.contains(out, "LOAD ERROR", name .. " loads in ours but not in HF (" .. T.read_file(work .. "/" .. name .. ".loaderr") .. ")")
      print("# " .. name .. ": both refuse it; ours says: " .. out:match("LOAD ERROR ([^\n]*)"))
      return
    end
    local out, err, code = T.sh(string.format("%s %s %s %s 3", q(compare_bin), q(path), q(inputs), q(work .. "/" .. name .. ".ref")))
    local summary = out:match("SUMMARY[^\n]*")
    print("# " .. name .. ": " .. tostring(summary))
    if code ~= 0 then
      local detail = out
      local lines = out:match("BADLINES ([^\n]*)")
      if lines then
        local theirs = T.sh(string.format("cd %s && NODE_PATH=%s node %s dump %s %s %s", q(scratch), q(scratch .. "/node_modules"),
          q(script), q(path), q(inputs), lines))
        detail = detail .. "\nHF:\n" .. theirs
      end
      error(string.format("%s differs from HF tokenizers:\n%s%s", name, detail, err), 0)
    end
  end)
end

T.run()
