-- wrk script for benches/introspect.rs: POST /connect/introspect with one live access token.
--
-- Environment (set by the bench):
--   MYDATA_BENCH_TOKEN  the access token to introspect (base64url, so safe in a form body)
--   MYDATA_BENCH_BASIC  base64("resource_id:resource_secret") for Authorization: Basic
--
-- No response() callback: wrk then skips body inspection, as in the peer's script, so both
-- servers are driven the same way. Non-2xx answers are counted by wrk itself (errors.status).
local token = os.getenv("MYDATA_BENCH_TOKEN")
local basic = os.getenv("MYDATA_BENCH_BASIC")
if token == nil or token == "" or basic == nil or basic == "" then
  error("MYDATA_BENCH_TOKEN and MYDATA_BENCH_BASIC must be set")
end

wrk.method = "POST"
wrk.body = "token=" .. token
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Authorization"] = "Basic " .. basic

-- One line the bench parses; latencies in milliseconds.
function done(summary, latency, requests)
  local secs = summary.duration / 1000000
  local errs = summary.errors
  io.write(string.format(
    "MYDATA_WRK requests=%d seconds=%.3f rps=%.1f p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f max_ms=%.3f non2xx=%d socket_errors=%d\n",
    summary.requests, secs, summary.requests / secs,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000,
    errs.status, errs.connect + errs.read + errs.write + errs.timeout))
end
