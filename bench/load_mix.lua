-- The mixed load of bench/load_bench.py for wrk (run with one connection a thread:
-- `wrk -t N -c N`), so that each thread's calls of request() follow its answers one by
-- one and the time from one call to the next is that request's latency, per kind.
--
--   LOAD_MIX_OUT=OUT wrk -t50 -c50 -d30s -s bench/load_mix.lua http://127.0.0.1:PORT -- TARGETS SEED
--
-- There is no response() callback: with one, wrk buffers every answer and copies it into
-- Lua (a List page is ~137 KB), which cost more CPU than PostgreSQL's share of a request.
-- wrk calls request() once an answer is complete (when the connection can be written
-- again), so the time between two calls is the first one's latency; it counts answers of
-- status 400 and above itself, without their kind.
--
-- TARGETS (written by load_bench.py), one line each, tab-separated:
--   weight <kind> <percent>          how often each kind is picked
--   <kind> <path>                    the paths of get, blob and stats
--   page <n> <path> <after>          List page n (numbered from 1): its path with its page
--                                    token, and the number of the page after it (0: none known)
--   pick <kind> <n>                  List page n is one of kind first or deep
-- The kind "next" has no picks: it is the page after the thread's last List page (a
-- client paging on, the token its answer gave), or a first page when there is none.
-- LOAD_MIX_INTERVAL_US (optional, load_bench.py's --rate): each client then sends its
-- requests on a schedule, one every that many microseconds (the first at a random point of
-- the first interval, so that the clients do not send in waves), waiting for each answer
-- as before: wrk calls delay() once an answer is complete, which times it, and request()
-- when the pause is over. A client whose answer came after its next slot sends at once
-- and its schedule starts again from there: it never sends a backlog in a burst, so the
-- rate a slow server gets is lower than the one asked for (the row's requests/s says so).
-- OUT (an environment variable: wrk's done() has no script arguments) receives one line
-- per request, "<kind> <microseconds>" (the last of each thread is not timed; one whose
-- connection failed is timed to its reconnection, and counted among the errors), then "wrk <requests> <duration us> <connect> <read> <write> <timeout> <status>"
-- from wrk's own summary (the errors: socket errors, and answers of status >= 400).

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

local function read_targets(file)
  local paths, pages, weights = {}, {}, {}
  for line in io.lines(file) do
    local fields = {}
    for field in string.gmatch(line, "[^\t]+") do
      fields[#fields + 1] = field
    end
    if fields[1] == "weight" then
      weights[#weights + 1] = { fields[2], tonumber(fields[3]) }
    elseif fields[1] == "page" then
      local after = tonumber(fields[4])
      pages[tonumber(fields[2])] = { fields[3], after > 0 and after or nil }
    elseif fields[1] == "pick" then
      local list = paths[fields[2]] or {}
      list[#list + 1] = tonumber(fields[3])
      paths[fields[2]] = list
    elseif #fields >= 2 then
      local list = paths[fields[1]] or {}
      list[#list + 1] = fields[2]
      paths[fields[1]] = list
    end
  end
  return paths, pages, weights
end

-- main state: number the threads so each seeds its own random sequence
local threads = {}
function setup(thread)
  thread:set("thread_id", #threads + 1)
  threads[#threads + 1] = thread
end

-- thread states
local paths, pages, weights, total_weight
local pending_kind, started, following
-- read by done() through thread:get: the kind and the microseconds of each answer
kinds, micros = {}, {}

-- wrk calls request() once more on its first thread, before any connection, to check
-- the request it builds: that one is never sent, and no answer to it is due.
local checking

function init(args)
  checking = thread_id == 1
  paths, pages, weights = read_targets(args[1])
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

local function answered(now)
  if pending_kind then -- the answer to the last request is complete
    kinds[#kinds + 1] = pending_kind
    micros[#micros + 1] = now - started
    pending_kind = nil
  end
end

local interval_us = tonumber(os.getenv("LOAD_MIX_INTERVAL_US") or "0")
local next_slot

if interval_us > 0 then
  function delay()
    local now = now_us()
    answered(now)
    if next_slot == nil then
      next_slot = now + math.random() * interval_us
    else
      next_slot = math.max(next_slot + interval_us, now)
    end
    return math.floor((next_slot - now) / 1000) -- milliseconds, as wrk takes them
  end
end

function request()
  answered(now_us())
  local kind = pick()
  local path, after
  if LISTS[kind] then
    local n
    if kind == "next" and following then
      n = following
    else
      if kind == "next" then
        kind = "first"
      end
      local list = paths[kind]
      n = list[math.random(#list)]
    end
    path, after = pages[n][1], pages[n][2]
  else
    local list = paths[kind]
    path = list[math.random(#list)]
  end
  if checking then
    checking = false
  else
    pending_kind = kind
    if LISTS[kind] then
      following = after
    end
  end
  started = now_us()
  return wrk.format("GET", path)
end

function done(summary, latency, requests)
  local out = assert(io.open(assert(os.getenv("LOAD_MIX_OUT"), "LOAD_MIX_OUT is not set"), "w"))
  for _, thread in ipairs(threads) do
    local k, m = thread:get("kinds"), thread:get("micros")
    local lines = {}
    for i = 1, #k do
      lines[i] = string.format("%s %.0f", k[i], m[i])
    end
    if #lines > 0 then
      out:write(table.concat(lines, "\n"), "\n")
    end
  end
  local e = summary.errors
  out:write(string.format("wrk %d %d %d %d %d %d %d\n", summary.requests, summary.duration,
    e.connect, e.read, e.write, e.timeout, e.status))
  out:close()
end
