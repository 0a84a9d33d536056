-- transformers.data_collator: HF's collators. Each turns a list of rows (tables of numbers and
-- lists of numbers) into a Batch of padded tensors, natively (skyrun.train's collate). Columns that
-- are not numbers (text) are left out, as remove_unused_columns would drop them.

local M = {}

local function native() return require "skyrun.train" end

local Collator = {}
Collator.__index = Collator
Collator.__name = "DataCollator"

function Collator:__call(rows)
  if type(rows) ~= "table" then error(self.name .. ": expected a list of rows, got " .. type(rows), 2) end
  return native().collate(rows, self.opts)
end

function Collator:__tostring() return self.name end

-- HF's tokenizers carry pad_token_id and padding_side; ours are read the same way.
local function tokenizer_pad(tok, who)
  if tok == nil then error(who .. " needs a tokenizer (its pad_token_id decides the padding)", 3) end
  local ok, pad = pcall(function() return tok.pad_token_id end)
  if not ok then pad = nil end
  local side = "right"
  local ok2, s = pcall(function() return tok.padding_side end)
  if ok2 and (s == "left" or s == "right") then side = s end
  return pad, side
end

local function split_args(a, b)
  -- DataCollatorX(tok, {opts}) or DataCollatorX{tokenizer = tok, ...}
  if type(a) == "table" and getmetatable(a) == nil and b == nil and (a.tokenizer ~= nil or next(a) == nil) then
    local opts = {}
    for k, v in pairs(a) do if k ~= "tokenizer" then opts[k] = v end end
    return a.tokenizer, opts
  end
  return a, b or {}
end

--- DataCollatorWithPadding(tokenizer, {padding = true, pad_to_multiple_of = n}): pads every list
--- column to the longest row (input_ids with the pad id, attention_mask 0, labels -100).
function M.DataCollatorWithPadding(a, b)
  local tok, opts = split_args(a, b)
  require("sky.core").check_options(opts, { padding = "any", pad_to_multiple_of = "integer", return_tensors = "string",
    max_length = "integer" }, "DataCollatorWithPadding", 3)
  if opts.padding ~= nil and opts.padding ~= true and opts.padding ~= "longest" then
    error("not supported yet: DataCollatorWithPadding padding=" .. tostring(opts.padding) .. " (only padding to the longest)", 2)
  end
  if opts.return_tensors ~= nil and opts.return_tensors ~= "pt" then
    error("not supported yet: return_tensors='" .. opts.return_tensors .. "' (batches are LibTorch tensors)", 2)
  end
  local pad, side = tokenizer_pad(tok, "DataCollatorWithPadding")
  return setmetatable({ name = "DataCollatorWithPadding", tokenizer = tok, opts = {
    mode = "pad", pad_token_id = pad or 0, pad_to_multiple_of = opts.pad_to_multiple_of, padding_side = side,
    where = "DataCollatorWithPadding" } }, Collator)
end

--- DataCollatorForLanguageModeling(tokenizer, {mlm = false}): pads to the longest row; labels are
--- input_ids with every pad-id position set to -100 (the model shifts them).
function M.DataCollatorForLanguageModeling(a, b)
  local tok, opts = split_args(a, b)
  require("sky.core").check_options(opts, { mlm = "boolean", mlm_probability = "number", pad_to_multiple_of = "integer",
    return_tensors = "string" }, "DataCollatorForLanguageModeling", 3)
  if opts.mlm ~= false then
    error("not supported yet: DataCollatorForLanguageModeling with mlm=true (masked LM); pass { mlm = false } for causal LM", 2)
  end
  local pad, side = tokenizer_pad(tok, "DataCollatorForLanguageModeling")
  if pad == nil then
    error("This tokenizer does not have a padding token: set tokenizer.pad_token = tokenizer.eos_token before padding", 2)
  end
  return setmetatable({ name = "DataCollatorForLanguageModeling", tokenizer = tok, opts = {
    mode = "lm", pad_token_id = pad, pad_to_multiple_of = opts.pad_to_multiple_of, padding_side = side,
    where = "DataCollatorForLanguageModeling" } }, Collator)
end

--- default_data_collator(rows): stacks rows of equal length ("label" becomes "labels").
M.default_data_collator = setmetatable({ name = "default_data_collator", opts = { mode = "stack",
  where = "default_data_collator" } }, Collator)

function M.is_collator(v) return getmetatable(v) == Collator end

return M
