-- wrk script of benches/ingest.rs: POSTs one signed GitHub push body with a
-- delivery id that differs per request (hookd deduplicates on
-- X-GitHub-Delivery; the HMAC covers the body only, so one signature serves
-- every request), and prints one machine-readable summary line.
--
--   wrk -t1 -c64 -d10s -s post.lua http://127.0.0.1:PORT -- BODY_FILE SIGNATURE PATH TAG
--
-- SIGNATURE is the whole header value ("sha256=<hex>"); TAG makes ids unique
-- across runs that share a database.

local body_file, signature, path, tag
local prefix, suffix
local counter = 0
local threads = {}

function setup(thread)
   thread:set("thread_id", #threads + 1)
   table.insert(threads, thread)
end

function init(args)
   body_file, signature, path, tag = args[1], args[2], args[3] or "/hooks/github", args[4] or "run"
   local f = assert(io.open(body_file, "rb"))
   local body = f:read("*a")
   f:close()
   -- Built once; each request only concatenates the id between the two halves.
   prefix = "POST " .. path .. " HTTP/1.1\r\n"
      .. "Host: 127.0.0.1\r\n"
      .. "User-Agent: GitHub-Hookshot/bench\r\n"
      .. "Content-Type: application/json\r\n"
      .. "X-GitHub-Event: push\r\n"
      .. "X-Hub-Signature-256: " .. signature .. "\r\n"
      .. "Content-Length: " .. #body .. "\r\n"
      .. "X-GitHub-Delivery: " .. tag .. "-" .. (thread_id or 0) .. "-"
   suffix = "\r\n\r\n" .. body
end

function request()
   counter = counter + 1
   return prefix .. counter .. suffix
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      "WRKSUMMARY requests=%d duration_us=%d status_errors=%d connect=%d read=%d write=%d timeout=%d p50_us=%d p99_us=%d max_us=%d\n",
      summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
      latency:percentile(50), latency:percentile(99), latency.max))
end
