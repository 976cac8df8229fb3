-- wrk script for benches/introspect.rs: a short, unmeasured check run after the measurement.
-- It sends the same request as introspect.lua and reads every answer: a good one is a 200
-- whose body says "active":true. Anything else is counted as bad.
--
-- Environment: MYDATA_BENCH_TOKEN, MYDATA_BENCH_BASIC (see introspect.lua).
local token = os.getenv("MYDATA_BENCH_TOKEN")
local basic = os.getenv("MYDATA_BENCH_BASIC")
if token == nil or token == "" or basic == nil or basic == "" then
  error("MYDATA_BENCH_TOKEN and MYDATA_BENCH_BASIC must be set")
end

wrk.method = "POST"
wrk.body = "token=" .. token
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Authorization"] = "Basic " .. basic

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

-- Per-thread counters (each wrk thread has its own Lua state).
good = 0
bad = 0
last_bad = ""

function response(status, headers, body)
  if status == 200 and body ~= nil and string.find(body, '"active":true', 1, true) then
    good = good + 1
  else
    bad = bad + 1
    last_bad = tostring(status) .. " " .. string.sub(body or "", 1, 80)
  end
end

function done(summary, latency, requests)
  local g, b, sample = 0, 0, ""
  for _, t in ipairs(threads) do
    g = g + t:get("good")
    b = b + t:get("bad")
    local s = t:get("last_bad")
    if s ~= nil and s ~= "" then sample = s end
  end
  io.write(string.format("MYDATA_CHECK good=%d bad=%d sample=%s\n", g, b, sample))
end
