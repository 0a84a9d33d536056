-- jobs/finetune.lua: the main job. It will fine-tune a sequence classifier on the local pool
-- once the Trainer lands (issue 8). Until then it says so and shows what this build can do.
local sky = require "sky"
local core = require "sky.core"

print("skyrun " .. sky.version .. ": jobs/finetune.lua")
print("This job will fine-tune a DistilBERT-style classifier on the local pool; the Trainer is")
print("not built yet, so for now it only reports the runtime it would train with:")
io.write(core.torch_describe())
