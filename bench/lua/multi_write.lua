-- Writers for `bench/run.sh multi`: two wrk processes, one per instance, on
-- the same threads and patients. Three requests in four post a message as
-- the pharmacist (threads round-robin from an offset of this process's and
-- thread's own); the fourth puts a new version of a patient's care plan as
-- the GP, with the version last seen for it (412 when the other instance or
-- another connection wrote it first: nothing stored, not a failure).
-- done() prints one line: MULTI <tag> posted=<201s> planned=<200s>
-- stale=<412s> s5xx=<5xx> other=<other statuses> errors=<socket errors>.
-- What each 2xx acknowledged goes to $BENCH_IDS-<tag>-<thread>, one a line
-- ("m <message id>" or "p <patient id> <plan version>"), for run.sh to look
-- each one up in the database.
-- Args: tag offset.
package.path = os.getenv("BENCH_LUA") .. "/?.lua;" .. package.path
local c = require("common")
local threads = {}
function setup(thread)
  c.setup(thread)
  threads[#threads + 1] = thread
end
local threads_ids, patients, version, pharmacist, gp, plan, body, i
posted, planned, stale, s5xx, other = 0, 0, 0, 0, 0
function init(args)
  tag = args[1] or "multi"
  threads_ids = c.lines(os.getenv("BENCH_DIR") .. "/threads.txt")
  patients = c.lines(os.getenv("BENCH_DIR") .. "/patients.txt")
  version = {}
  pharmacist = c.token("PHARMACIST_TOKEN")
  gp = c.token("GP_TOKEN")
  plan = c.slurp(os.getenv("BENCH_DIR") .. "/plan.json")
  body = '{"body":"Patient seen at the counter, reports pain 5/10, took the evening dose at 19:00. Please confirm the new schedule."}'
  -- Both processes walk the same few threads and patients, shifted.
  i = tonumber(args[2] or "0") + (thread_index or 0) * 3
  ids_file = assert(io.open((os.getenv("BENCH_IDS") or "/tmp/multi-ids") .. "-" .. tag .. "-"
    .. (thread_index or 0), "w"))
end
function request()
  i = i + 1
  if i % 4 == 0 then
    local id = patients[math.floor(i / 4) % 16 + 1]
    return wrk.format("PUT", "/api/v1/patients/" .. id .. "/care-plan", {
      ["Authorization"] = "Bearer " .. gp,
      ["Content-Type"] = "application/json",
      ["If-Match"] = '"' .. (version[id] or 1) .. '"',
    }, plan)
  end
  local id = threads_ids[i % 16 + 1]
  return wrk.format("POST", "/api/v1/threads/" .. id .. "/messages", {
    ["Authorization"] = "Bearer " .. pharmacist,
    ["Content-Type"] = "application/json",
  }, body)
end
function response(status, headers, resp)
  if status == 201 then
    posted = posted + 1
    local id = resp:match('"id":"([%x%-]+)"')
    if id then ids_file:write("m ", id, "\n") end
  elseif status == 200 then
    planned = planned + 1
  elseif status == 412 then
    stale = stale + 1
  elseif status >= 500 then
    s5xx = s5xx + 1
  else
    other = other + 1
  end
  local id = resp:match('"patient_id":"([%x%-]+)"')
  local v = resp:match('"version":(%d+)')
  if id and v then version[id] = tonumber(v) end
  if status == 200 and id and v then ids_file:write("p ", id, " ", v, "\n") end
  if status == 412 then
    -- "the care plan is at version N, not M": the answer does not name the
    -- patient; move every plan last seen at M to N (a wrong guess costs one
    -- more 412, which teaches the right version).
    local at, was = resp:match("at version (%d+), not (%d+)")
    if at then
      for _, id in ipairs(patients) do
        if (version[id] or 1) == tonumber(was) then version[id] = tonumber(at) end
      end
    end
  end
end
-- Runs in the main state: each thread's file is flushed when wrk exits.
function done(summary, latency, requests)
  local t = { posted = 0, planned = 0, stale = 0, s5xx = 0, other = 0 }
  for _, thread in ipairs(threads) do
    for k, _ in pairs(t) do t[k] = t[k] + (thread:get(k) or 0) end
  end
  local e = summary.errors
  io.write(string.format("MULTI %s posted=%d planned=%d stale=%d s5xx=%d other=%d errors=%d\n",
    threads[1] and threads[1]:get("tag") or "multi", t.posted, t.planned, t.stale,
    t.s5xx, t.other, e.connect + e.read + e.write + e.timeout))
end
