-- The mixed load of bench/load_bench.py for wrk (run with one connection a thread:
-- `wrk -t N -c N`), so that each thread's request() and response() alternate and
-- the time between them is that request's latency, per kind of request.
--
--   LOAD_MIX_OUT=OUT wrk -t50 -c50 -d30s -s bench/load_mix.lua http://127.0.0.1:PORT -- TARGETS SEED
--
-- TARGETS (written by load_bench.py), one line each, tab-separated:
--   weight <kind> <percent>         how often each kind is picked
--   <kind> <path> [<page token>]    the paths of a kind (get, first, deep, blob, stats)
-- The kind "next" has no paths: it follows the nextPageToken of the thread's last
-- List answer (a client paging on), or is a first page when there is none.
-- OUT (an environment variable: wrk's done() has no script arguments) receives one line per request, "<kind> <microseconds> <status>" (status 0:
-- the connection failed before an answer), then "wrk <requests> <duration us>
-- <connect> <read> <write> <timeout>" from wrk's own summary.

local ffi = require("ffi")
ffi.cdef [[
  typedef struct { long tv_sec; long tv_nsec; } load_timespec;
  int clock_gettime(int clock, load_timespec *ts);
]]
local CLOCK_MONOTONIC = 1
local ts = ffi.new("load_timespec")

local function now_us()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
  return tonumber(ts.tv_sec) * 1000000 + tonumber(ts.tv_nsec) / 1000
end

local LISTS = { first = true, next = true, deep = true }
local TOKEN_TAIL = 1024

local function encode(text)
  return (string.gsub(text, "[^%w%-%._~]", function(c)
    return string.format("%%%02X", string.byte(c))
  end))
end

local function read_targets(file)
  local targets, weights = {}, {}
  for line in io.lines(file) do
    local fields = {}
    for field in string.gmatch(line, "[^\t]+") do
      fields[#fields + 1] = field
    end
    if fields[1] == "weight" then
      weights[#weights + 1] = { fields[2], tonumber(fields[3]) }
    elseif #fields >= 2 then
      local list = targets[fields[1]] or {}
      list[#list + 1] = { fields[2], fields[3] }
      targets[fields[1]] = list
    end
  end
  return targets, weights
end

-- main state: number the threads so each seeds its own random sequence
local threads = {}
function setup(thread)
  thread:set("thread_id", #threads + 1)
  threads[#threads + 1] = thread
end

-- thread states
local targets, weights, total_weight
local pending_kind, pending_base, started, next_base, next_token
samples = {} -- read by done() through thread:get

-- wrk calls request() once more on its first thread, before any connection, to check
-- the request it builds: that one is never sent, and no answer to it is due.
local checking

function init(args)
  checking = thread_id == 1
  targets, weights = read_targets(args[1])
  total_weight = 0
  for _, w in ipairs(weights) do
    total_weight = total_weight + w[2]
  end
  math.randomseed(tonumber(args[2] or "1") * 1000 + thread_id)
end

local function pick()
  local r = math.random() * total_weight
  for _, w in ipairs(weights) do
    r = r - w[2]
    if r < 0 then
      return w[1]
    end
  end
  return weights[#weights][1]
end

local function record(kind, status, micros)
  samples[#samples + 1] = kind .. " " .. string.format("%.0f", micros) .. " " .. status
end

function request()
  if pending_kind then -- no answer came: the connection failed and wrk reconnected
    record(pending_kind, 0, now_us() - started)
  end
  local kind = pick()
  local base, token
  if kind == "next" and next_base then
    base, token = next_base, next_token
  else
    if kind == "next" then
      kind = "first"
    end
    local list = targets[kind]
    local target = list[math.random(#list)]
    base, token = target[1], target[2]
  end
  if checking then
    checking = false
  else
    pending_kind, pending_base = kind, base
  end
  local path = base
  if token then
    path = base .. "&pageToken=" .. encode(token)
  end
  started = now_us()
  return wrk.format("GET", path)
end

function response(status, headers, body)
  local micros = now_us() - started
  record(pending_kind, status, micros)
  if LISTS[pending_kind] and status == 200 then
    -- the token ends the answer (the API writes it last): scan the tail, not 100 images
    local token = string.match(string.sub(body, -TOKEN_TAIL), '"nextPageToken"%s*:%s*"([^"]+)"')
    if token then
      next_base, next_token = pending_base, token
    else
      next_base, next_token = nil, nil
    end
  end
  pending_kind = nil
end

function done(summary, latency, requests)
  local out = assert(io.open(assert(os.getenv("LOAD_MIX_OUT"), "LOAD_MIX_OUT is not set"), "w"))
  for _, thread in ipairs(threads) do
    local lines = thread:get("samples")
    if lines and #lines > 0 then
      out:write(table.concat(lines, "\n"), "\n")
    end
  end
  local e = summary.errors
  out:write(string.format("wrk %d %d %d %d %d %d\n", summary.requests, summary.duration,
    e.connect, e.read, e.write, e.timeout))
  out:close()
end
