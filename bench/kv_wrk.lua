-- wrk script for bench/kv_bench.py --load wrk: the same closed-loop KV load as
-- the asyncio load generator, from wrk's C event loops instead of Python.
--
-- Thread i connects to node i (mod the node count) of KV_WRK_NODES
-- ("host:port,host:port,..."), so the connections are spread over every node
-- as the asyncio generator spreads its requests. Arguments after "--":
--   protocol  "raftkv" (PUT/GET /v1/kv/KEY) or "etcd" (POST /v3/kv/put, /v3/kv/range)
--   op        "put", "get" (linearizable) or "stale"
--   keys      random keys out of key000000 .. key(keys-1)
--   value     the JSON value of a put (raftkv), sent as is; etcd gets it base64-encoded
--   seed      per-run seed; each thread adds its number
--   statuses  optional: "statuses" also counts the answers by HTTP status (costs a
--             Lua call per answer) and adds them to the JSON line as "statuses"
-- Every request for every key is built once, in init(), as wrk's docs advise.
-- done() prints one JSON line: requests, errors, duration and latency percentiles (µs).

local nodes = {}
local next_thread = 0
local threads = {}

function setup(thread)
   if #nodes == 0 then
      for hostport in string.gmatch(os.getenv("KV_WRK_NODES") or "", "[^,]+") do
         local host, port = string.match(hostport, "^(.+):(%d+)$")
         table.insert(nodes, wrk.lookup(host, port)[1])
      end
   end
   thread.addr = nodes[next_thread % #nodes + 1]
   thread:set("thread_no", next_thread)
   table.insert(threads, thread)
   next_thread = next_thread + 1
end

local b64chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

local function base64(data)
   local out = {}
   for i = 1, #data, 3 do
      local a, b, c = string.byte(data, i, i + 2)
      local n = a * 65536 + (b or 0) * 256 + (c or 0)
      local quad = {}
      for j = 3, 0, -1 do
         local k = math.floor(n / 64 ^ j) % 64
         table.insert(quad, string.sub(b64chars, k + 1, k + 1))
      end
      if not b then quad[3] = "=" end
      if not c then quad[4] = "=" end
      table.insert(out, table.concat(quad))
   end
   return table.concat(out)
end

local requests = {}
local count = 0

function init(args)
   local protocol, op, keys, value, seed = args[1], args[2], tonumber(args[3]), args[4], tonumber(args[5])
   math.randomseed(seed * 1000 + (thread_no or 0))
   local json = { ["Content-Type"] = "application/json" }
   local v = base64(value)
   for i = 0, keys - 1 do
      local key = string.format("key%06d", i)
      local req
      if protocol == "raftkv" then
         if op == "put" then
            req = wrk.format("PUT", "/v1/kv/" .. key, json, value)
         elseif op == "stale" then
            req = wrk.format("GET", "/v1/kv/" .. key .. "?consistency=stale", {}, nil)
         else
            req = wrk.format("GET", "/v1/kv/" .. key, {}, nil)
         end
      else
         local k = base64(key)
         if op == "put" then
            req = wrk.format("POST", "/v3/kv/put", json, '{"key":"' .. k .. '","value":"' .. v .. '"}')
         elseif op == "stale" then
            req = wrk.format("POST", "/v3/kv/range", json, '{"key":"' .. k .. '","serializable":true}')
         else
            req = wrk.format("POST", "/v3/kv/range", json, '{"key":"' .. k .. '"}')
         end
      end
      requests[i + 1] = req
   end
   count = keys
   if args[6] == "statuses" then
      statuses = {}
      response = function(status, _, _)
         statuses[status] = (statuses[status] or 0) + 1
      end
   end
end

function request()
   return requests[math.random(count)]
end

function done(summary, latency, _)
   local e = summary.errors
   local by_status = {}
   for _, thread in ipairs(threads) do
      for status, n in pairs(thread:get("statuses") or {}) do
         by_status[status] = (by_status[status] or 0) + n
      end
   end
   local parts = {}
   for status, n in pairs(by_status) do
      table.insert(parts, string.format('"%d": %d', status, n))
   end
   io.write(string.format(
      '{"requests": %d, "duration_us": %d, "errors": {"connect": %d, "read": %d, "write": %d, '
         .. '"status": %d, "timeout": %d}, "p50_us": %d, "p99_us": %d, "max_us": %d, "mean_us": %.1f, '
         .. '"statuses": {%s}}\n',
      summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
      latency:percentile(50.0), latency:percentile(99.0), latency.max, latency.mean,
      table.concat(parts, ", ")))
end
