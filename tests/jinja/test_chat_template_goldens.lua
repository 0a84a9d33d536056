-- Byte-identity with Python jinja2 as transformers sets it up, over every chat template in
-- ../shared/data/chat_templates (and the folder in SKYRUN_EXTRA_CHAT_TEMPLATES, if set) and every
-- conversation x option case of tests/jinja/conversations.json. The goldens are made now by
-- tools/chat_template_goldens.py with the python3-jinja2 that tools/setup.sh installs; renders
-- that raise in jinja2 must raise here with the same exception class and message.
local T = require "testlib"
local jinja = require "jinja.core"

local data = assert(os.getenv("SKYRUN_SHARED_DATA"), "SKYRUN_SHARED_DATA not set")
local root = assert(os.getenv("SKYRUN_SOURCE_ROOT"), "SKYRUN_SOURCE_ROOT not set")

local cached
local function goldens()
  if cached then return cached end
  local dirs = { data .. "/chat_templates" }
  local extra = os.getenv("SKYRUN_EXTRA_CHAT_TEMPLATES")
  if extra and extra ~= "" then dirs[#dirs + 1] = extra end
  local out = T.tmpdir() .. "/goldens.json"
  local quoted = {}
  for i, d in ipairs(dirs) do quoted[i] = T.shell_quote(d) end
  T.sh(string.format("python3 %s %s %s --features %s %s", T.shell_quote(root .. "/tools/chat_template_goldens.py"),
    T.shell_quote(root .. "/tests/jinja/conversations.json"), T.shell_quote(out),
    T.shell_quote(root .. "/tests/jinja/features.json"), table.concat(quoted, " ")))
  cached = jinja.json(T.read_file(out))
  return cached
end

local function split_error(msg)
  msg = tostring(msg):gsub("^[^\n]-%.lua:%d+: ", "")
  local kind, text = msg:match("^(%w+): (.*)$")
  return kind, text or tostring(msg)
end

T.test("every template renders every case as jinja2 does", function()
  local g = goldens()
  local now = g:get("now"):lua()
  -- strftime_now was pinned to this local time in Python.
  local t = os.time { year = now[1], month = now[2], day = now[3], hour = now[4], min = now[5], sec = now[6] }
  local cases = g:get("cases")
  local templates, failures, renders, raised = {}, {}, 0, 0
  local n_templates = 0
  for i = 1, cases:len() do
    local c = cases:get(i)
    local name = c:get("template"):lua()
    local tpl = templates[name]
    if tpl == nil then
      n_templates = n_templates + 1
      local ok, res = pcall(jinja.template, T.read_file((function()
        local f = data .. "/chat_templates/" .. name
        local h = io.open(f, "rb")
        if h then h:close() return f end
        return os.getenv("SKYRUN_EXTRA_CHAT_TEMPLATES") .. "/" .. name
      end)()))
      tpl = ok and res or { error = res }
      templates[name] = tpl
    end
    local conv = c:get("conversation")
    if conv:kind() == "NoneType" then
      -- jinja2 could not compile it: neither may we
      if not tpl.error then failures[#failures + 1] = name .. ": compiles here, jinja2 said " .. c:get("error"):lua() end
    elseif tpl.error then
      failures[#failures + 1] = name .. ": does not compile here: " .. tostring(tpl.error)
      break
    else
      renders = renders + 1
      local inputs = {
        messages = jinja.json(c:get("messages"):lua()), tools = jinja.json(c:get("tools"):lua()),
        documents = jinja.json(c:get("documents"):lua()), extra = jinja.json(c:get("kwargs"):lua()),
        add_generation_prompt = c:get("add_generation_prompt"):lua(),
        continue_final_message = c:get("continue_final_message"):lua(),
      }
      local ok, text, spans = pcall(tpl.render_chat, tpl, inputs,
        { now = t, track_generation = not inputs.continue_final_message })
      local where = string.format("%s / %s (agp=%s cfm=%s tools=%s)", name, conv:lua(),
        tostring(inputs.add_generation_prompt), tostring(inputs.continue_final_message), c:get("tools"):lua() ~= "null")
      local want_err = c:get("error")
      if want_err then
        raised = raised + 1
        local kind, msg = split_error(text)
        if ok then
          failures[#failures + 1] = where .. ": rendered, jinja2 raised " .. c:get("error_type"):lua() .. ": " .. want_err:lua()
        elseif msg ~= want_err:lua() or kind ~= c:get("error_type"):lua() then
          failures[#failures + 1] = string.format("%s: raised %s: %s\n   jinja2 raised %s: %s", where, tostring(kind), msg,
            c:get("error_type"):lua(), want_err:lua())
        end
      elseif not ok then
        failures[#failures + 1] = where .. ": raised " .. tostring(text)
      else
        local want = c:get("output"):lua()
        if text ~= want then
          local at = 1
          while at <= #text and text:sub(at, at) == want:sub(at, at) do at = at + 1 end
          failures[#failures + 1] = string.format("%s: differs at byte %d\n   ours:   %q\n   jinja2: %q", where, at,
            text:sub(math.max(1, at - 40), at + 60), want:sub(math.max(1, at - 40), at + 60))
        elseif not T.deep_eq(spans, c:get("spans"):lua()) then
          failures[#failures + 1] = where .. ": generation spans differ"
        end
      end
    end
  end
  print(string.format("chat templates: %d templates, %d renders (%d raise in jinja2), %d differ", n_templates,
    renders, raised, #failures))
  for k = 1, math.min(#failures, 25) do print("  " .. failures[k]) end
  T.ok(n_templates >= 20 and renders > 500, "the corpus was found")
  T.eq(#failures, 0, "renders that differ from jinja2")
end)

T.test("each feature case renders or raises as jinja2 does", function()
  local g = goldens()
  local now = g:get("now"):lua()
  local t = os.time { year = now[1], month = now[2], day = now[3], hour = now[4], min = now[5], sec = now[6] }
  local feats = g:get("features")
  local specs = jinja.json(T.read_file(root .. "/tests/jinja/features.json"))
  local failures = {}
  for i = 1, feats:len() do
    local f, spec = feats:get(i), specs:get(i)
    local name = f:get("name"):lua()
    local ok, text = pcall(function()
      local tpl = jinja.template(spec:get("template"):lua())
      return (tpl:render(spec:get("vars"), { now = t }))
    end)
    local want_err = f:get("error")
    if want_err then
      local kind, msg = split_error(text)
      local want_kind = f:get("error_type"):lua()
      if ok then
        failures[#failures + 1] = name .. ": rendered " .. string.format("%q", text) .. ", jinja2 raised " .. want_kind
      elseif kind ~= want_kind and not (want_kind == "TemplateAssertionError" and kind == "TemplateSyntaxError") then
        failures[#failures + 1] = string.format("%s: raised %s: %s; jinja2 raised %s: %s", name, tostring(kind), msg,
          want_kind, want_err:lua())
      elseif kind == "TemplateSyntaxError" then
        -- ours adds the line and column; jinja2's message is not kept word for word
        if not msg:match("%(line %d+, column %d+%)$") then failures[#failures + 1] = name .. ": no position in " .. msg end
      elseif msg ~= want_err:lua() then
        failures[#failures + 1] = string.format("%s: raised %s\n   jinja2: %s", name, msg, want_err:lua())
      end
    elseif not ok then
      failures[#failures + 1] = name .. ": raised " .. tostring(text)
    elseif text ~= f:get("output"):lua() then
      failures[#failures + 1] = string.format("%s:\n   ours:   %q\n   jinja2: %q", name, text, f:get("output"):lua())
    end
  end
  print(string.format("feature cases: %d, %d differ", feats:len(), #failures))
  for k = 1, math.min(#failures, 40) do print("  " .. failures[k]) end
  T.eq(#failures, 0, "feature cases that differ from jinja2")
end)

T.run()
