-- GET /api/v1/patients/{id}/analgesic-plan as the pharmacist, patients round-robin.
package.path = os.getenv("BENCH_LUA") .. "/?.lua;" .. package.path
local c = require("common")
setup = c.setup
local ids, headers, i
function init(args)
  ids = c.lines(os.getenv("BENCH_DIR") .. "/patients.txt")
  headers = { ["Authorization"] = "Bearer " .. c.token() }
  i = (thread_index or 0) * 7919
end
function request()
  i = i + 1
  local id = ids[(i % #ids) + 1]
  return wrk.format("GET", "/api/v1/patients/" .. id .. "/analgesic-plan", headers)
end
