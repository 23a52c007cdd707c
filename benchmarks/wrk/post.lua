-- wrk script: POST transactions with a txn_id unique per request.
--   wrk ... -s post.lua URL -- <nonce> [batch_items]
-- txn_id = <nonce>-<thread>-4000-8000-<counter>, so every request of every thread of
-- every run is new; batch_items > 0 sends a JSON array of that many transactions.

local thread_count = 0
local nonce = 0
local batch = 0
local counter = 0

function setup(thread)
  thread:set("thread_no", thread_count)
  thread_count = thread_count + 1
end

function init(args)
  thread_no = thread_no or 0
  nonce = tonumber(args[1]) or 0
  batch = tonumber(args[2]) or 0
  math.randomseed(nonce + thread_no * 7919)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end

local function item()
  counter = counter + 1
  local cents = math.random(100, 2000000)
  return string.format(
    '{"txn_id":"%08x-%04x-4000-8000-%012x","user_id":"user_%d","amount":%d.%02d,'
      .. '"currency":"INR","merchant_type":"general","source_ip":"10.%d.%d.%d"}',
    nonce, thread_no, counter, math.random(0, 999),
    math.floor(cents / 100), cents % 100,
    math.random(0, 255), math.random(0, 255), math.random(1, 254))
end

function request()
  local body
  if batch > 0 then
    local items = {}
    for i = 1, batch do items[i] = item() end
    body = "[" .. table.concat(items, ",") .. "]"
  else
    body = item()
  end
  return wrk.format(nil, nil, nil, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect_errors":%d,'
      .. '"read_errors":%d,"write_errors":%d,"status_errors":%d,"timeouts":%d,'
      .. '"p50_us":%.0f,"p90_us":%.0f,"p95_us":%.0f,"p99_us":%.0f,"max_us":%.0f,'
      .. '"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(95), latency:percentile(99), latency.max, latency.mean))
end
