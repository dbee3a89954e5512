"""The fleet's atomic steps, as Redis Lua scripts (each runs alone on the server).

Key names come from `slmflow.fleet.keys`; each script says which KEYS and ARGV it takes. The rule
they keep together: every `queued` or `running` job is in the `active` set, scored by when the
reconciler should look at it next; a job leaves it when it ends or pauses.
"""

__all__ = [
    "ACQUIRE",
    "CANCEL",
    "CLAIM_CALL",
    "DEMAND",
    "CREATE",
    "ELECT",
    "EXPIRE_CALL",
    "FENCED_PUT",
    "FENCED_XADD",
    "FINISH_CALL",
    "RECONCILE_CHECK",
    "RECONCILE_CLAIM",
    "RECORD_CALL",
    "RELEASE",
    "RENEW",
    "RENEW_CALL",
    "REQUEUE",
    "RESOLVE_CALL",
    "WORKER_BEAT",
]

# KEYS: idem, job, jobs, active. ARGV: id, data, ttl, created, fingerprint, check_after_ms, keyed.
# The first submit under a key creates the record; later ones get the first `id|fingerprint`.
CREATE = """
local value = ARGV[1] .. '|' .. ARGV[5]
if ARGV[7] == '1' then
  local existing = redis.call('GET', KEYS[1])
  if existing then return existing end
  redis.call('SET', KEYS[1], value, 'EX', ARGV[3])
end
redis.call('HSET', KEYS[2], 'status', 'queued', 'data', ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[3])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1])
redis.call('ZADD', KEYS[4], ARGV[6], ARGV[1])
return value
"""

# KEYS: lease, fence, active, job. ARGV: ttl_ms, check_after_ms, id.
# A token if the job is runnable and nobody holds it; 0 if held; -1 if it is not queued/running.
ACQUIRE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local status = redis.call('HGET', KEYS[4], 'status')
if status ~= 'queued' and status ~= 'running' then return -1 end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], token, 'PX', ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[3])
return token
"""

# KEYS: lease, active. ARGV: token, ttl_ms, check_after_ms, id.
RENEW = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[2], 'XX', ARGV[3], ARGV[4])
return 1
"""

# KEYS: lease, active. ARGV: token, id, check_after_ms. Only the holder lets go; a job still
# active is looked at by the reconciler from `check_after_ms` on.
RELEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('ZADD', KEYS[2], 'XX', ARGV[3], ARGV[2])
return 1
"""

# KEYS: lease, job, active. ARGV: token, status, data, id, settled ('1': the job ended or paused).
# Write only while holding the lease, and never over a cancellation.
FENCED_PUT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if redis.call('HGET', KEYS[2], 'status') == 'cancelled' then return -1 end
redis.call('HSET', KEYS[2], 'status', ARGV[2], 'data', ARGV[3])
if ARGV[5] == '1' then redis.call('ZREM', KEYS[3], ARGV[4]) end
return 1
"""

# KEYS: lease, events. ARGV: token, event, ttl.
FENCED_XADD = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('XADD', KEYS[2], '*', 'event', ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[3])
return 1
"""

# KEYS: job, cancel, active. ARGV: now_iso, ttl, id.
# A queued or paused job is cancelled at once; a running one gets a flag its worker acts on.
CANCEL = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return -1 end
if status == 'queued' or status == 'needs_review' or status == 'awaiting_approval' then
  redis.call('HSET', KEYS[1], 'status', 'cancelled', 'cancelled_at', ARGV[1])
  redis.call('ZREM', KEYS[3], ARGV[3])
  return 1
end
if status == 'running' then
  redis.call('SET', KEYS[2], '1', 'EX', ARGV[2])
  return 2
end
return 0
"""

# KEYS: job, active. ARGV: expected status, data, id, check_after_ms.
# Queue a paused job again (with a reviewer's answer), only if it is still paused.
REQUEUE = """
if redis.call('HGET', KEYS[1], 'status') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'status', 'queued', 'data', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[3])
return 1
"""

# KEYS: lease, job, active. ARGV: id, now_ms.
# 0: not active any more (dropped from the set); 1: leased (looked at again when the lease would
# lapse); 2: queued or running with no lease: does a message for it exist?
RECONCILE_CHECK = """
local status = redis.call('HGET', KEYS[2], 'status')
if status ~= 'queued' and status ~= 'running' then
  redis.call('ZREM', KEYS[3], ARGV[1])
  return 0
end
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then
  redis.call('ZADD', KEYS[3], tonumber(ARGV[2]) + ttl, ARGV[1])
  return 1
end
return 2
"""

# KEYS: lease, job, active. ARGV: id, check_after_ms.
# The reconciler's claim to publish a job again: still active, still no lease.
RECONCILE_CLAIM = """
local status = redis.call('HGET', KEYS[2], 'status')
if status ~= 'queued' and status ~= 'running' then
  redis.call('ZREM', KEYS[3], ARGV[1])
  return 0
end
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
return 1
"""

# KEYS: reconciler. ARGV: me, ttl_ms. 1 if `me` is (or now becomes) the reconciler.
ELECT = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if holder then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

# KEYS: lease, call. ARGV: token, tool, arguments, job_id, step, idempotent, trace, ttl, config.
# The jobs worker records a granted, validated call before any tools worker may run it.
# Returns {state, outcome}: 'recorded' for a new call, else the state the call already has.
RECORD_CALL = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {'lost', ''} end
local state = redis.call('HGET', KEYS[2], 'state')
if state then
  -- a key names one call: the same key for another tool or other arguments is a bug, never its outcome
  if redis.call('HGET', KEYS[2], 'tool') ~= ARGV[2] or redis.call('HGET', KEYS[2], 'arguments') ~= ARGV[3] then
    return {'conflict', redis.call('HGET', KEYS[2], 'tool') or ''}
  end
  return {state, redis.call('HGET', KEYS[2], 'outcome') or ''}
end
redis.call('HSET', KEYS[2], 'tool', ARGV[2], 'arguments', ARGV[3], 'job_id', ARGV[4], 'step', ARGV[5],
           'idempotent', ARGV[6], 'trace', ARGV[7], 'config', ARGV[9], 'state', 'recorded', 'tries', 0)
redis.call('EXPIRE', KEYS[2], ARGV[8])
return {'recorded', ''}
"""

# KEYS: call, job, lease. ARGV: runner, now_ms, run_ms.
# A tools worker's claim to run a call: only a recorded call of a live (running, leased) job.
# 'run' means go; anything else is why not.
CLAIM_CALL = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return 'forged' end
if state ~= 'recorded' and state ~= 'running' then return state end
if redis.call('HGET', KEYS[2], 'status') ~= 'running' or redis.call('EXISTS', KEYS[3]) == 0 then
  return 'idle_job'
end
if state == 'running' then
  if tonumber(redis.call('HGET', KEYS[1], 'deadline')) > tonumber(ARGV[2]) then return 'busy' end
  if redis.call('HGET', KEYS[1], 'idempotent') ~= '1' then
    redis.call('HSET', KEYS[1], 'state', 'unknown')
    return 'unknown'
  end
end
redis.call('HSET', KEYS[1], 'state', 'running', 'runner', ARGV[1],
           'deadline', tonumber(ARGV[2]) + tonumber(ARGV[3]))
redis.call('HINCRBY', KEYS[1], 'tries', 1)
return 'run'
"""

# KEYS: call. ARGV: runner, deadline_ms. The runner's heartbeat: its run is alive until then.
RENEW_CALL = """
if redis.call('HGET', KEYS[1], 'state') ~= 'running' or redis.call('HGET', KEYS[1], 'runner') ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], 'deadline', ARGV[2])
return 1
"""

# KEYS: call, calldone. ARGV: runner, outcome. The first outcome of a call is kept.
FINISH_CALL = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state or state == 'done' then return 0 end
redis.call('HSET', KEYS[1], 'state', 'done', 'outcome', ARGV[2], 'finished_by', ARGV[1])
redis.call('RPUSH', KEYS[2], 1)
redis.call('EXPIRE', KEYS[2], 60)
return 1
"""

# KEYS: call. ARGV: now_ms, give_up ('1': a call nobody picked up is abandoned, never run later).
# The waiting job's view when no outcome came in time: 'recorded' (publish again), 'busy'
# (still running within its deadline), 'retry' (an idempotent run died: publish again),
# 'unknown' (a non-idempotent run died: never re-run blindly), or the settled state.
EXPIRE_CALL = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return 'gone' end
if state == 'recorded' then
  if ARGV[2] == '1' then
    redis.call('HSET', KEYS[1], 'state', 'abandoned')
    return 'abandoned'
  end
  return 'recorded'
end
if state == 'running' then
  if tonumber(redis.call('HGET', KEYS[1], 'deadline')) > tonumber(ARGV[1]) then return 'busy' end
  if redis.call('HGET', KEYS[1], 'idempotent') == '1' then
    redis.call('HSET', KEYS[1], 'state', 'recorded')
    return 'retry'
  end
  redis.call('HSET', KEYS[1], 'state', 'unknown')
  return 'unknown'
end
return state
"""

# KEYS: lease, call. ARGV: token, mode ('retry' or 'outcome'), outcome.
# A reviewer settles a call whose outcome is unknown: run it again, or here is what it returned.
RESOLVE_CALL = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 'lost' end
local state = redis.call('HGET', KEYS[2], 'state')
if state ~= 'unknown' then return state or 'gone' end
if ARGV[2] == 'retry' then
  redis.call('HSET', KEYS[2], 'state', 'recorded')
else
  redis.call('HSET', KEYS[2], 'state', 'done', 'outcome', ARGV[3], 'finished_by', 'review')
end
return 'ok'
"""

# The fleet's demand, exactly, in one script: of the active jobs (queued or running), those whose
# lease is held (running) and the rest (queued: waiting in a list, reserved by a worker, or given
# back); the oldest one's creation time; the least time left on a held lease; the live jobs
# workers' slots (expired entries dropped first).
# KEYS: active, jobs, workers. ARGV: lease key prefix, worker key prefix, now (ms).
DEMAND = """
local running, queued, oldest, least_ttl = 0, 0, false, false
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local ttl = redis.call('PTTL', ARGV[1] .. id)
  if ttl >= 0 then
    running = running + 1
    if not least_ttl or ttl < least_ttl then least_ttl = ttl end
  else
    queued = queued + 1
  end
  local created = redis.call('ZSCORE', KEYS[2], id)
  if created and (not oldest or tonumber(created) < oldest) then oldest = tonumber(created) end
end
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[3])
local slots, workers = 0, 0
for _, name in ipairs(redis.call('ZRANGE', KEYS[3], 0, -1)) do
  local s = redis.call('HGET', ARGV[2] .. name, 'slots')
  if s then
    slots = slots + tonumber(s)
    workers = workers + 1
  end
end
return {queued, running, oldest and tostring(oldest) or '', least_ttl or -1, slots, workers}
"""

# A jobs worker's heartbeat entry. KEYS: workers, worker:{name}. ARGV: name, expires at (ms),
# ttl (ms), slots, running, host, pid.
WORKER_BEAT = """
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('HSET', KEYS[2], 'slots', ARGV[4], 'running', ARGV[5], 'host', ARGV[6], 'pid', ARGV[7])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return 1
"""
