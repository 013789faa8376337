"""The Redis backend's state changes, each one Lua script so it is atomic on the server.

Keys (prefix ``P``, ``outpaint:``)::

    P job:<id>         hash: json (the job as submitted), state, steps_done, total_steps, est_steps,
                       attempts, stalls (deliveries that stored no new step), started_at,
                       finished_at, error, user, guild, round, member, auto_prompt (JSON of the
                       AutoPrompt its worker wrote, once; absent before),
                       owner (claim token of the worker running it), entry (its work-stream entry),
                       published (key of the last event its worker published)
    P ev:<id>          stream of the job's events, entry ids 0-1, 0-2, ... (the sequence numbers)
    P img:<id>:source  the source PNG; P img:<id>:<step> the checkpoints; P img:<id>:<step>:<k>
                       candidate k (1, 2, 3) of a step generated as several (all with a TTL)
    P cancel:<id>      cancel flag of a running job
    P queue            zset of queued jobs in fair order: score round, member "<seq:016d>:<id>"
    P uq:<user>        zset of a user's queued jobs (score round)
    P active:u:<user>  set of a user's queued and running jobs (P active:g:<guild> for a guild)
    P running          set of running jobs
    P jobs             zset of all jobs by creation time
    P work             stream of deliveries, consumer group "workers"
    P dead             dead-letter stream
    P fair             hash: round (of the last dispatch), seq, u:<user> (round last served)
    P wake             list that idle workers block on
    P timings          list of recent seconds per expansion step
    P workers          zset of worker names by last sign of life

A finished job's ``job:``, ``ev:`` and image keys expire after ``result_ttl_s`` (a retry keeps the
job and its events); ``P jobs`` keeps its id until ``outpaint queue purge``.

Scripts compute most key names themselves (they learn job ids inside), so the backend needs a
standalone Redis (or one primary), not a cluster. Every script takes the prefix as ARGV[1].
"""

from __future__ import annotations

PRELUDE = r"""
local P = ARGV[1]
local WORK, GROUP = P .. 'work', 'workers'
local TERMINAL = {done = true, failed = true, cancelled = true}

local function jkey(id) return P .. 'job:' .. id end

local function now()
  local t = redis.call('TIME')
  return string.format('%d.%06d', t[1], t[2])
end

local function publish(id, json)
  return redis.call('XADD', P .. 'ev:' .. id, '0-*', 'e', json)
end

local function event_json(id, tbl)
  tbl.job_id = id
  return cjson.encode(tbl)
end

local function owns(id, token)
  return token ~= '' and redis.call('HGET', jkey(id), 'owner') == token
end

local function cancel_flag(id)
  if redis.call('EXISTS', P .. 'cancel:' .. id) == 1 then return 2 end
  return 1
end

local function ack(id)
  local entry = redis.call('HGET', jkey(id), 'entry')
  if entry and entry ~= '' then
    redis.call('XACK', WORK, GROUP, entry)
    redis.call('XDEL', WORK, entry)
    redis.call('HSET', jkey(id), 'entry', '')
  end
end

-- Ends the job with its terminal event; its record and events then expire after ttl seconds, as
-- its images do (a retry keeps them).
local function finish(id, state, err, event, ttl)
  local j = jkey(id)
  local user, guild = unpack(redis.call('HMGET', j, 'user', 'guild'))
  ack(id)
  redis.call('HSET', j, 'state', state, 'finished_at', now(), 'owner', '', 'error', err)
  redis.call('DEL', P .. 'cancel:' .. id)
  redis.call('SREM', P .. 'running', id)
  redis.call('SREM', P .. 'active:u:' .. user, id)
  if guild ~= '' then redis.call('SREM', P .. 'active:g:' .. guild, id) end
  publish(id, event)
  redis.call('EXPIRE', j, ttl)
  redis.call('EXPIRE', P .. 'ev:' .. id, ttl)
end

local function enqueue(id)
  local user, round, member = unpack(redis.call('HMGET', jkey(id), 'user', 'round', 'member'))
  redis.call('ZADD', P .. 'queue', round, member)
  redis.call('ZADD', P .. 'uq:' .. user, round, id)
  redis.call('LPUSH', P .. 'wake', '1')
  redis.call('LTRIM', P .. 'wake', 0, 63)
end

local function new_key(id)
  local j = jkey(id)
  local user = redis.call('HGET', j, 'user')
  local cur = tonumber(redis.call('HGET', P .. 'fair', 'round') or '0')
  local last = -1
  local top = redis.call('ZRANGE', P .. 'uq:' .. user, -1, -1, 'WITHSCORES')
  if top[2] then last = tonumber(top[2]) end
  local served = redis.call('HGET', P .. 'fair', 'u:' .. user)
  if served then last = math.max(last, tonumber(served)) end
  local round = math.max(cur, last + 1)
  local seq = redis.call('HINCRBY', P .. 'fair', 'seq', 1)
  redis.call('HSET', j, 'round', round, 'member', string.format('%016d:%s', seq, id))
end

local function remaining(id)
  local total, est, done = unpack(redis.call('HMGET', jkey(id), 'total_steps', 'est_steps', 'steps_done'))
  total = tonumber(total) or 0
  if total == 0 then total = tonumber(est) or 0 end
  return math.max(0, total - (tonumber(done) or 0))
end

-- Mirrors outpaint_engine.queue.fair.eta_s.
local function eta(id, step_s, workers)
  if not step_s then return nil end
  local state, member = unpack(redis.call('HMGET', jkey(id), 'state', 'member'))
  if state == 'running' then return remaining(id) * step_s end
  if state ~= 'queued' then return nil end
  local waiting = 0
  local rank = redis.call('ZRANK', P .. 'queue', member)
  if rank and rank > 0 then
    for _, m in ipairs(redis.call('ZRANGE', P .. 'queue', 0, rank - 1)) do
      waiting = waiting + remaining(string.sub(m, 18))
    end
  end
  for _, r in ipairs(redis.call('SMEMBERS', P .. 'running')) do waiting = waiting + remaining(r) end
  return (remaining(id) + waiting / math.max(1, workers)) * step_s
end

local function announce(id, step_s, workers)
  local member = redis.call('HGET', jkey(id), 'member')
  local position = redis.call('ZRANK', P .. 'queue', member) + 1
  local e = eta(id, tonumber(step_s), tonumber(workers))
  publish(id, event_json(id, {kind = 'queued', position = position, eta_s = e or cjson.null}))
  return position
end
"""

# ARGV: P, id, user, guild, json, created_at, total_steps, est_steps, step_s, workers, source PNG,
#       ttl_s -> position, 0 if the job exists (its source is left as it is)
SUBMIT = r"""
local id, user, guild = ARGV[2], ARGV[3], ARGV[4]
local j = jkey(id)
if redis.call('EXISTS', j) == 1 then return 0 end
redis.call('SET', P .. 'img:' .. id .. ':source', ARGV[11], 'EX', ARGV[12])
redis.call('HSET', j, 'json', ARGV[5], 'user', user, 'guild', guild, 'state', 'queued',
  'steps_done', 0, 'total_steps', ARGV[7], 'est_steps', ARGV[8], 'attempts', 0, 'stalls', 0,
  'started_at', '', 'finished_at', '', 'error', '', 'owner', '', 'entry', '')
new_key(id)
enqueue(id)
redis.call('SADD', P .. 'active:u:' .. user, id)
if guild ~= '' then redis.call('SADD', P .. 'active:g:' .. guild, id) end
redis.call('ZADD', P .. 'jobs', ARGV[6], id)
return announce(id, ARGV[9], ARGV[10])
"""

# ARGV: P, consumer, token, reclaim_ms, max_deliveries, failed_reason, ttl_s
#       -> {id, entry, stalls} or nil.
# Order: a job reclaimed from a silent worker, a delivery nobody read, then the fair queue. Every
# delivery counts as a stall until it stores a new step (CHECKPOINT gives it back); a job that
# stalled max_deliveries times goes to the dead letter instead.
CLAIM = r"""
local consumer, token, max, ttl = ARGV[2], ARGV[3], tonumber(ARGV[5]), ARGV[7]
redis.call('ZADD', P .. 'workers', now(), consumer)
redis.call('ZREMRANGEBYSCORE', P .. 'workers', '-inf', tonumber(now()) - 86400)

local function take(id, entry)
  local j = jkey(id)
  local state = redis.call('HGET', j, 'state')
  if not state or TERMINAL[state] then
    redis.call('XACK', WORK, GROUP, entry)
    redis.call('XDEL', WORK, entry)
    return nil
  end
  redis.call('HSET', j, 'entry', entry)
  if redis.call('EXISTS', P .. 'cancel:' .. id) == 1 then
    finish(id, 'cancelled', '', event_json(id, {kind = 'cancelled'}), ttl)
    return nil
  end
  local stalls = tonumber(redis.call('HGET', j, 'stalls') or '0')
  if stalls >= max then
    redis.call('XADD', P .. 'dead', '*', 'job', id, 'attempts', redis.call('HGET', j, 'attempts'),
      'reason', 'its worker stopped responding ' .. stalls .. ' times before storing a new expansion')
    finish(id, 'failed', ARGV[6], event_json(id, {kind = 'failed', reason = ARGV[6]}), ttl)
    return nil
  end
  redis.call('HINCRBY', j, 'attempts', 1)
  redis.call('HSET', j, 'stalls', stalls + 1, 'state', 'running', 'owner', token)
  if redis.call('HGET', j, 'started_at') == '' then redis.call('HSET', j, 'started_at', now()) end
  redis.call('SADD', P .. 'running', id)
  return {id, entry, stalls + 1}
end

local reclaimed = redis.call('XAUTOCLAIM', WORK, GROUP, consumer, ARGV[4], '0-0', 'COUNT', 1)
for _, e in ipairs(reclaimed[2]) do
  local got = take(e[2][2], e[1])
  if got then return got end
end
local unread = redis.call('XREADGROUP', 'GROUP', GROUP, consumer, 'COUNT', 1, 'STREAMS', WORK, '>')
if unread then
  for _, e in ipairs(unread[1][2]) do
    local got = take(e[2][2], e[1])
    if got then return got end
  end
end
while true do
  local top = redis.call('ZPOPMIN', P .. 'queue')
  if #top == 0 then return nil end
  local id, round = string.sub(top[1], 18), tonumber(top[2])
  local user = redis.call('HGET', jkey(id), 'user')
  redis.call('ZREM', P .. 'uq:' .. user, id)
  if round > tonumber(redis.call('HGET', P .. 'fair', 'round') or '0') then
    redis.call('HSET', P .. 'fair', 'round', round)
  end
  if round > tonumber(redis.call('HGET', P .. 'fair', 'u:' .. user) or '-1') then
    redis.call('HSET', P .. 'fair', 'u:' .. user, round)
  end
  local entry = redis.call('XADD', WORK, '*', 'job', id)
  redis.call('XREADGROUP', 'GROUP', GROUP, consumer, 'COUNT', 1, 'STREAMS', WORK, '>')
  local got = take(id, entry)
  if got then return got end
end
"""

# ARGV: P, id, token, consumer -> 0 lost, 1 alive, 2 alive and cancel requested
HEARTBEAT = r"""
local id, token, consumer = ARGV[2], ARGV[3], ARGV[4]
redis.call('ZADD', P .. 'workers', now(), consumer)
if not owns(id, token) then return 0 end
local entry = redis.call('HGET', jkey(id), 'entry')
local pending = redis.call('XPENDING', WORK, GROUP, entry, entry, 1)
if #pending == 0 or pending[1][2] ~= consumer then return 0 end
redis.call('XCLAIM', WORK, GROUP, consumer, 0, entry, 'JUSTID')
return cancel_flag(id)
"""

# ARGV: P, id, token, event json, event key[, total_steps] -> 0 lost, 1 ok, 2 ok and cancel requested.
# The key names the event within the delivery: a worker that sent it again (its first try timed out
# while Redis was frozen, and Redis ran both once it woke up) publishes it once.
PUBLISH = r"""
local id, token = ARGV[2], ARGV[3]
if not owns(id, token) then return 0 end
if redis.call('HGET', jkey(id), 'published') ~= ARGV[5] then
  if ARGV[6] then redis.call('HSET', jkey(id), 'total_steps', ARGV[6]) end
  redis.call('HSET', jkey(id), 'published', ARGV[5])
  publish(id, ARGV[4])
end
return cancel_flag(id)
"""

# ARGV: P, id, token, AutoPrompt json, Prompted json -> 0 lost, 1 ok, 2 ok and cancel requested.
# The first prompt stored stays (a write sent twice is stored and published once).
PROMPTED = r"""
local id, token = ARGV[2], ARGV[3]
if not owns(id, token) then return 0 end
if redis.call('HSETNX', jkey(id), 'auto_prompt', ARGV[4]) == 1 then publish(id, ARGV[5]) end
return cancel_flag(id)
"""

# ARGV: P, id, token, step, png, ttl_s, Expanded json, give back the delivery's stall ('1': its
#       first new step) -> 0 lost, 1 ok, 2 ok and cancel requested
CHECKPOINT = r"""
local id, token, step = ARGV[2], ARGV[3], tonumber(ARGV[4])
if not owns(id, token) then return 0 end
local done = tonumber(redis.call('HGET', jkey(id), 'steps_done'))
if step > done then
  return redis.error_reply('checkpoint of step ' .. step .. ' after ' .. done .. ' steps')
end
if step == done then
  redis.call('SET', P .. 'img:' .. id .. ':' .. step, ARGV[5], 'EX', ARGV[6])
  redis.call('HSET', jkey(id), 'steps_done', step + 1)
  if ARGV[8] == '1' then redis.call('HINCRBY', jkey(id), 'stalls', -1) end
  publish(id, ARGV[7])
end
return cancel_flag(id)
"""

# ARGV: P, id, token, step, candidate, png, ttl_s -> 0 lost, 1 ok, 2 ok and cancel requested.
# A step's candidates are stored before its checkpoint; once it is checkpointed they stay as they are.
CANDIDATE = r"""
local id, token, step = ARGV[2], ARGV[3], tonumber(ARGV[4])
if not owns(id, token) then return 0 end
if step >= tonumber(redis.call('HGET', jkey(id), 'steps_done')) then
  redis.call('SET', P .. 'img:' .. id .. ':' .. step .. ':' .. ARGV[5], ARGV[6], 'EX', ARGV[7])
end
return cancel_flag(id)
"""

# ARGV: P, id, token, state, event json, error, dead-letter detail ('' = none),
#       steps whose checkpoints now only need a short TTL, that TTL, ttl_s -> 0 lost, 1 ok
FINISH = r"""
local id, token = ARGV[2], ARGV[3]
if not owns(id, token) then return 0 end
finish(id, ARGV[4], ARGV[6], ARGV[5], ARGV[10])
for step = 0, tonumber(ARGV[8]) - 1 do
  local key = P .. 'img:' .. id .. ':' .. step
  local ttl = redis.call('TTL', key)
  if ttl > tonumber(ARGV[9]) then redis.call('EXPIRE', key, ARGV[9]) end
end
if ARGV[7] ~= '' then
  redis.call('XADD', P .. 'dead', '*', 'job', id, 'attempts', redis.call('HGET', jkey(id), 'attempts'),
    'reason', ARGV[7])
end
return 1
"""

# ARGV: P, id, token, give back the attempt ('1': a hand-back), give back the stall ('1': a
#       hand-back before any new step) -> 0 lost, 1 ok
REQUEUE = r"""
local id, token = ARGV[2], ARGV[3]
if not owns(id, token) then return 0 end
ack(id)
redis.call('HSET', jkey(id), 'state', 'queued', 'owner', '')
if ARGV[4] == '1' then redis.call('HINCRBY', jkey(id), 'attempts', -1) end
if ARGV[5] == '1' then redis.call('HINCRBY', jkey(id), 'stalls', -1) end
redis.call('SREM', P .. 'running', id)
enqueue(id)
return 1
"""

# ARGV: P, id, ttl_s -> the state before ('' if no such job)
CANCEL = r"""
local id = ARGV[2]
local j = jkey(id)
local state = redis.call('HGET', j, 'state')
if not state then return '' end
if state == 'queued' then
  local user, member = unpack(redis.call('HMGET', j, 'user', 'member'))
  redis.call('ZREM', P .. 'queue', member)
  redis.call('ZREM', P .. 'uq:' .. user, id)
  finish(id, 'cancelled', '', event_json(id, {kind = 'cancelled'}), ARGV[3])
elseif state == 'running' then
  redis.call('SET', P .. 'cancel:' .. id, '1', 'EX', ARGV[3])
end
return state
"""

# ARGV: P, id, step_s, workers -> position, or the state that forbids a retry ('' if no such job)
RETRY = r"""
local id = ARGV[2]
local j = jkey(id)
local state = redis.call('HGET', j, 'state')
if not state then return '' end
if state ~= 'failed' and state ~= 'cancelled' then return state end
local user, guild = unpack(redis.call('HMGET', j, 'user', 'guild'))
redis.call('HSET', j, 'state', 'queued', 'attempts', 0, 'stalls', 0, 'error', '', 'finished_at', '',
  'owner', '')
redis.call('PERSIST', j)
redis.call('PERSIST', P .. 'ev:' .. id)
redis.call('DEL', P .. 'cancel:' .. id)
redis.call('SADD', P .. 'active:u:' .. user, id)
if guild ~= '' then redis.call('SADD', P .. 'active:g:' .. guild, id) end
new_key(id)
enqueue(id)
return announce(id, ARGV[3], ARGV[4])
"""

# ARGV: P, id, step_s, workers -> seconds as a string, or nil
ETA = r"""
local e = eta(ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]))
if e then return tostring(e) end
return nil
"""

SCRIPTS = {
    "submit": SUBMIT,
    "claim": CLAIM,
    "heartbeat": HEARTBEAT,
    "publish": PUBLISH,
    "prompted": PROMPTED,
    "checkpoint": CHECKPOINT,
    "candidate": CANDIDATE,
    "finish": FINISH,
    "requeue": REQUEUE,
    "cancel": CANCEL,
    "retry": RETRY,
    "eta": ETA,
}
"""Script bodies by name; each runs after :data:`PRELUDE`."""
