-- POST /api/v1/threads/{id}/messages as the pharmacist, ~120-byte body
-- (as the Synapse peer), threads round-robin.
package.path = os.getenv("BENCH_LUA") .. "/?.lua;" .. package.path
local c = require("common")
setup = c.setup
local ids, headers, i
local body = '{"body":"Patient seen at the counter, reports pain 5/10, took the evening dose at 19:00. Please confirm the new schedule."}'
function init(args)
  ids = c.lines(os.getenv("BENCH_DIR") .. "/threads.txt")
  headers = {
    ["Authorization"] = "Bearer " .. c.token(),
    ["Content-Type"] = "application/json",
  }
  i = (thread_index or 0) * 7919
end
function request()
  i = i + 1
  local id = ids[(i % #ids) + 1]
  return wrk.format("POST", "/api/v1/threads/" .. id .. "/messages", headers, body)
end
