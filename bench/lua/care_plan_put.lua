-- PUT /api/v1/patients/{id}/care-plan with rules (3 warnings acknowledged) as
-- the GP. Each wrk thread owns the patients of patients.txt[first..last] with
-- index = thread_index (mod threads); it walks them round-robin and tracks each
-- plan's version from the response, so every request carries the right
-- If-Match (a patient comes round again only after all the thread's others).
-- Args: first last nthreads (1-based, inclusive).
package.path = os.getenv("BENCH_LUA") .. "/?.lua;" .. package.path
local c = require("common")
setup = c.setup
local mine, version, body, token, i, current
function init(args)
  local first, last, nthreads = tonumber(args[1]), tonumber(args[2]), tonumber(args[3])
  local all = c.lines(os.getenv("BENCH_DIR") .. "/patients.txt")
  mine, version = {}, {}
  for k = first, last do
    if (k - first) % nthreads == (thread_index or 0) then
      mine[#mine + 1] = all[k]
      version[all[k]] = 1
    end
  end
  body = c.slurp(os.getenv("BENCH_DIR") .. "/plan.json")
  token = c.token()
  i = 0
end
function request()
  i = i + 1
  local id = mine[(i % #mine) + 1]
  return wrk.format("PUT", "/api/v1/patients/" .. id .. "/care-plan", {
    ["Authorization"] = "Bearer " .. token,
    ["Content-Type"] = "application/json",
    ["If-Match"] = '"' .. version[id] .. '"',
  }, body)
end
function response(status, headers, resp)
  local id = resp:match('"patient_id":"([%x%-]+)"')
  local v = resp:match('"version":(%d+)')
  if id and v and version[id] then version[id] = tonumber(v) end
  if status == 412 then
    -- "the care plan is at version N, not M": learn N (should not happen).
    local at = resp:match("at version (%d+)")
    if at then io.stderr:write("412 seen\n") end
  end
end
