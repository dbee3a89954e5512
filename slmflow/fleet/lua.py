"""The job store's atomic steps, as Redis Lua scripts (each runs alone on the server)."""

__all__ = ["ACQUIRE", "CANCEL", "CREATE", "FENCED_PUT", "FENCED_XADD", "RELEASE", "RENEW", "REQUEUE"]

# A record is a hash: `status` (plain, so scripts can compare-and-set it) and `data` (the JSON).
# Atomically: the first submit under a key creates the record; later ones get the first job id.
CREATE = """
local existing = redis.call('GET', KEYS[1])
if existing then return existing end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
redis.call('HSET', KEYS[2], 'status', 'queued', 'data', ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[3])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1])
return ARGV[1]
"""
# Write only while holding the lease, and never over a cancellation: KEYS[1]=lease, KEYS[2]=job.
FENCED_PUT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if redis.call('HGET', KEYS[2], 'status') == 'cancelled' then return -1 end
redis.call('HSET', KEYS[2], 'status', ARGV[2], 'data', ARGV[3])
return 1
"""
FENCED_XADD = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('XADD', KEYS[2], '*', 'event', ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[3])
return 1
"""
RENEW = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
return 1
"""
ACQUIRE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], token, 'PX', ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[3])
return token
"""
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
redis.call('ZREM', KEYS[2], ARGV[2])
return 1
"""
# Cancel a queued job at once; a running one gets a flag its worker acts on.
CANCEL = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return -1 end
if status == 'queued' then
  redis.call('HSET', KEYS[1], 'status', 'cancelled', 'cancelled_at', ARGV[1])
  return 1
end
if status == 'running' then
  redis.call('SET', KEYS[2], '1', 'EX', ARGV[2])
  return 2
end
return 0
"""
# Queue a paused job again with a human answer, only if it is still waiting for one.
REQUEUE = """
if redis.call('HGET', KEYS[1], 'status') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'status', 'queued', 'data', ARGV[2])
return 1
"""
