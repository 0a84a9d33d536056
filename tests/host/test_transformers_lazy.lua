-- The transformers module resolves HuggingFace names lazily and explains what it lacks.
local T = require "testlib"

T.test("a misspelt name gets a suggestion", function()
  local transformers = require "transformers"
  T.raises(function() return transformers.AutoTokenzier end, "did you mean 'AutoTokenizer'?")
end)

T.test("requiring transformers loads no submodule", function()
  require "transformers"
  for name in pairs(package.loaded) do
    T.ok(not name:match("^transformers%."), "loaded " .. name)
  end
end)

T.run()
