-- Shared by the Relais wrk scripts. Environment (set by bench/run.sh):
--   BENCH_DIR   folder with tokens.env, patients.txt, threads.txt, plan.json
--   BENCH_TOKEN which token of tokens.env to send (GP_TOKEN or PHARMACIST_TOKEN)
local M = {}

function M.lines(path)
  local out = {}
  for line in io.lines(path) do
    if line ~= "" then out[#out + 1] = line end
  end
  return out
end

-- The token `name` (default: $BENCH_TOKEN, else PHARMACIST_TOKEN).
function M.token(name)
  name = name or os.getenv("BENCH_TOKEN") or "PHARMACIST_TOKEN"
  for line in io.lines(os.getenv("BENCH_DIR") .. "/tokens.env") do
    local k, v = line:match("^([%w_]+)=(.*)$")
    if k == name then return v end
  end
  error("no " .. name .. " in tokens.env")
end

function M.slurp(path)
  local f = assert(io.open(path, "r"))
  local s = f:read("*a")
  f:close()
  return s
end

-- Gives each wrk thread its own index (setup runs in the main Lua state).
local counter = 0
function M.setup(thread)
  thread:set("thread_index", counter)
  counter = counter + 1
end

return M
