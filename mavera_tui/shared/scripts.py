"""The Lua scripts that keep one key's shared state in Redis.

Every script runs atomically, reads the time with Redis ``TIME`` (milliseconds, with
fractions; never a caller's clock, so hosts whose clocks disagree still agree on the
window), and touches only keys under one prefix ``mavera:{<hash>}:`` (``KEYS[1]``): one hash
tag, so one cluster slot. Times go back as strings (Redis truncates Lua numbers to integers).

The keys under the prefix:

``win``        sorted set: the fleet's admissions (member = lease id, score = Redis time,
               moved to the write); counted for a window (and the margin), kept for two
``leases``     sorted set: live leases (score = expiry); ``linfo`` hash: lease -> "ep|reserved"
``slots:<ep>`` sorted set: leases holding a capped endpoint's slots (score = expiry)
``resv``       the credits reserved by live leases; ``balance``: the last balance read,
               less what was charged since; ``balread``: hash, that read (``at``: Redis
               time of its admission, ``by``, ``credits``, ``fields``: the rest of the
               answer, ``until``: when it is too old to adopt); both expire one lease time
               after the fleet's last call, and ``balread`` is dropped by a 402
``balclaim``   the process reading the balance for the fleet (PX: renewed while it reads)
``park_at``    Redis time of the last 402 (a read admitted before it is contradicted)
``queued``     hash: process -> "jobs waiting to be sent|Redis time" (for a free read)
``foreign``    what the server counted beyond the fleet's log (expires after a window)
``foreign2``   the most counted beyond it since ``foreign`` was set (takes over as it expires)
``limit``      the limit the server's headers say; ``hold``: the key-wide 429 hold (PX);
               ``park``: the 402 park (PX)
``prio``       hash: process -> "best waiting priority|Redis time"
``need``       hash: process -> "admissions kept for its capped jobs|Redis time"
``wwait``      hash: process -> "best priority refused for the window|until (Redis time)"
``procs``      sorted set of processes by last heartbeat; ``proc:<id>``: a process's fields
``epoch``      when this state began (a Redis that lost it is noticed by the processes)
``ledger``     stream of every attempt (MAXLEN ~); ``alerts``: list of recent alerts
``wake``       pub/sub channel: what a release freed (a capped endpoint's name, or
               ``credits``), so that only processes waiting for it try again
"""

from __future__ import annotations

#: Shared prologue: the time, and the expiry of dead leases (their slots and reservations).
_PRELUDE = r"""
local p = KEYS[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local function fmt(x) return string.format('%.3f', x) end
local function expire_leases()
  local dead = redis.call('ZRANGEBYSCORE', p .. 'leases', '-inf', now, 'LIMIT', 0, 200)
  if #dead == 0 then return 0 end
  local resv = tonumber(redis.call('GET', p .. 'resv') or '0')
  for _, lease in ipairs(dead) do
    local info = redis.call('HGET', p .. 'linfo', lease)
    if info then
      local sep = string.find(info, '|', 1, true)
      local ep = string.sub(info, 1, sep - 1)
      resv = resv - tonumber(string.sub(info, sep + 1))
      redis.call('ZREM', p .. 'slots:' .. ep, lease)
      redis.call('HDEL', p .. 'linfo', lease)
    end
    redis.call('ZREM', p .. 'leases', lease)
  end
  if resv < 0 then resv = 0 end
  redis.call('SET', p .. 'resv', resv)
  return #dead
end
-- The fleet is active: the balance it keeps current by its settlements stays (and stays
-- adoptable until its age limit, checked by BALANCE_TAKE); a fleet idle for ``idle_ms``
-- (no call at all) lets it expire: nobody kept it current meanwhile.
local function touch_balance(idle_ms)
  idle_ms = math.max(1, math.floor(idle_ms))
  if redis.call('PEXPIRE', p .. 'balance', idle_ms) == 1 then
    redis.call('PEXPIRE', p .. 'balread', idle_ms)
  end
end
"""

#: Admit a batch: ARGV = proc, limit, window_ms, margin_ms, ttl_ms, best waiting priority
#: ('' none), known epoch ('' none), capped need (window admissions this process wants
#: kept for its capped jobs about to free a slot), n, queued (jobs this process has waiting
#: to be sent; '' unknown), then per job: lease, endpoint, cap (0 uncapped), priority,
#: needed credits (estimate + buffer; 0 free), reserved credits. A job of priority
#: ``FREE_PRIORITY`` (a balance read that must cost the fleet nothing) is admitted only into
#: room that no queued send of the fleet needs (see ``read_is_free``).
#: Returns: now, epoch, retry_at (when a refused job may try again; '' none), room left,
#: foreign, limit, then one code per job (see ``state.CODES``).
ADMIT = (
    _PRELUDE
    + r"""
local proc = ARGV[1]
local limit = tonumber(redis.call('GET', p .. 'limit') or ARGV[2])
local win, margin, ttl = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local best, known = ARGV[6], ARGV[7]
local need = tonumber(ARGV[8])
local n = tonumber(ARGV[9])
local J = 10  -- the jobs' arguments start after ARGV[J]
local epoch = redis.call('GET', p .. 'epoch')
if not epoch then
  epoch = fmt(now)
  redis.call('SET', p .. 'epoch', epoch)
  if known ~= '' then
    -- The state was lost (Redis restarted empty): the server still counts the last window
    -- of sends, which the log forgot. Hold every process for one window.
    redis.call('SET', p .. 'hold', 'restart', 'PX', math.floor(win + margin) + 1)
  end
end
-- The log counts the last window (and the margin), and keeps one window more: a release
-- reconciles the server's Remaining with what the fleet sent in the window before its send,
-- which the answer's latency and the release's own lag put well past the margin (pruned,
-- those sends were taken for another client's: an estimate of 78 of 120 with none).
redis.call('ZREMRANGEBYSCORE', p .. 'win', '-inf', now - 2 * win - margin)
local old = redis.call('ZCOUNT', p .. 'win', '-inf', now - win - margin)
expire_leases()
touch_balance(ttl)
-- This process's jobs waiting to be sent: those it did not ask for now, and those it asked
-- for that are not admitted (they go back to its queue); the engine's own reads are none.
local function is_job(i)
  local pr = tonumber(ARGV[J + (i - 1) * 6 + 4])
  return pr < 1073741824 and pr > -1073741824
end
local function set_queued(codes_now)
  if ARGV[10] == '' then return end
  local q = tonumber(ARGV[10])
  for i = 1, n do
    if is_job(i) and (not codes_now or codes_now[i] ~= 1) then q = q + 1 end
  end
  redis.call('HSET', p .. 'queued', proc, q .. '|' .. fmt(now))
end
set_queued(nil)
local hold = redis.call('PTTL', p .. 'hold')
local foreign = math.max(tonumber(redis.call('GET', p .. 'foreign') or '0'),
                         tonumber(redis.call('GET', p .. 'foreign2') or '0'))
local slack = 0
if foreign > 0 then slack = math.max(3, math.ceil(0.05 * foreign)) end
local count = redis.call('ZCARD', p .. 'win') - old
local room = limit - count - foreign - slack
-- The fleet-wide order: who else has higher-priority work waiting (live ones only).
if best == '' then
  redis.call('HDEL', p .. 'prio', proc)
else
  redis.call('HSET', p .. 'prio', proc, best .. '|' .. fmt(now))
end
local others = {}
local entries = redis.call('HGETALL', p .. 'prio')
for i = 1, #entries, 2 do
  local who, v = entries[i], entries[i + 1]
  local sep = string.find(v, '|', 1, true)
  local pr, seen = tonumber(string.sub(v, 1, sep - 1)), tonumber(string.sub(v, sep + 1))
  if seen < now - ttl then
    redis.call('HDEL', p .. 'prio', who)
  elseif who ~= proc then
    table.insert(others, pr)
  end
end
-- Window admissions the others keep for their capped jobs (a batch ends no earlier than
-- its capped work allows, so those slots must not idle while uncapped work takes the room).
if need > 0 then
  redis.call('HSET', p .. 'need', proc, need .. '|' .. fmt(now))
else
  redis.call('HDEL', p .. 'need', proc)
end
local others_need = 0
entries = redis.call('HGETALL', p .. 'need')
for i = 1, #entries, 2 do
  local who, v = entries[i], entries[i + 1]
  local sep = string.find(v, '|', 1, true)
  local k, seen = tonumber(string.sub(v, 1, sep - 1)), tonumber(string.sub(v, sep + 1))
  if seen < now - math.max(500, math.min(ttl, win / 10)) then  -- refreshed by calls
    redis.call('HDEL', p .. 'need', who)
  elseif who ~= proc then
    others_need = others_need + k
  end
end
-- Who is waiting for window room with higher-priority work (refused for the window at its
-- last call, until a little after the room it was told to come back for): the room goes
-- to them first, all of it, not just the last (a process that stopped asking expires).
local grace = math.max(250, win / 20)
local waiting = {}
entries = redis.call('HGETALL', p .. 'wwait')
for i = 1, #entries, 2 do
  local who, v = entries[i], entries[i + 1]
  local sep = string.find(v, '|', 1, true)
  local pr, untl = tonumber(string.sub(v, 1, sep - 1)), tonumber(string.sub(v, sep + 1))
  if untl < now then
    redis.call('HDEL', p .. 'wwait', who)
  elseif who ~= proc then
    table.insert(waiting, pr)
  end
end
-- Whether one more request now (a balance read) takes room that no queued send of the
-- fleet needs: the fleet's queued jobs (each live process's count as of its last call) all
-- fit in the room now, with one to spare. (Not "the read does not delay the fleet's last
-- send", reckoned from the queued work and the window's log: at the start of a batch the
-- processes starting with it have not all said what they queue, and that reckoning let a
-- read go first into a batch that filled its windows exactly.)
local function read_is_free(room_now)
  local q = 0
  local e = redis.call('HGETALL', p .. 'queued')
  for i = 1, #e, 2 do
    local v = e[i + 1]
    local sep = string.find(v, '|', 1, true)
    local k, seen = tonumber(string.sub(v, 1, sep - 1)), tonumber(string.sub(v, sep + 1))
    if seen < now - ttl then
      redis.call('HDEL', p .. 'queued', e[i])
    else
      q = q + k
    end
  end
  return q < room_now
end
local parked = redis.call('EXISTS', p .. 'park') == 1
local balance = redis.call('GET', p .. 'balance')
if balance then balance = tonumber(balance) end
local resv = tonumber(redis.call('GET', p .. 'resv') or '0')
local codes = {}
local window_full, slot_retry, kept = false, nil, false
for i = 1, n do
  local b = J + (i - 1) * 6
  local lease, ep, cap = ARGV[b + 1], ARGV[b + 2], tonumber(ARGV[b + 3])
  local prio, needed, reserve = tonumber(ARGV[b + 4]), tonumber(ARGV[b + 5]), tonumber(ARGV[b + 6])
  local code = 1
  local higher, pressing = 0, false
  for _, pr in ipairs(others) do if pr > prio then higher = higher + 1 end end
  for _, pr in ipairs(waiting) do if pr > prio then pressing = true end end
  if hold > 0 then
    code = 4
  elseif needed > 0 and parked then
    -- Credits before the window: a job waiting for credits keeps waiting for them
    -- whatever the window says, rather than looking queued each time it is full.
    code = 5
  elseif needed > 0 and balance and balance - resv < needed then
    code = 3
  elseif room <= 0 then
    code = 0
    window_full = true
  elseif pressing or (higher > 0 and room <= higher) then
    code = 6  -- the room is left to a process with higher-priority work waiting
  elseif cap == 0 and room <= others_need + need and prio < 1073741824 then
    -- Kept for the fleet's capped jobs, this process's too: its own loop keeps them only
    -- from its own sends' room, which at a window's turn is the whole window (the engine's
    -- own reads do not wait).
    code = 6
    kept = true
  elseif prio == -1073741824 and not read_is_free(room) then
    code = 6  -- a free read takes only room that no queued send of the fleet needs
  elseif cap > 0 and redis.call('ZCARD', p .. 'slots:' .. ep) >= cap then
    code = 2
    local first = redis.call('ZRANGE', p .. 'slots:' .. ep, 0, 0, 'WITHSCORES')
    if first[2] and (not slot_retry or tonumber(first[2]) < slot_retry) then
      slot_retry = tonumber(first[2])
    end
  end
  if code == 1 then
    redis.call('ZADD', p .. 'win', now, lease)
    redis.call('ZADD', p .. 'leases', now + ttl, lease)
    redis.call('HSET', p .. 'linfo', lease, ep .. '|' .. reserve)
    if cap > 0 then redis.call('ZADD', p .. 'slots:' .. ep, now + ttl, lease) end
    resv = resv + reserve
    room = room - 1
  end
  codes[i] = code
end
redis.call('SET', p .. 'resv', resv)
set_queued(codes)
local retry = ''
if hold > 0 then
  retry = fmt(now + hold)
elseif window_full then
  -- Room comes back when the need-th oldest admission leaves the window.
  local cur = redis.call('ZCARD', p .. 'win') - old
  local need = cur - (limit - foreign - slack) + 1
  if need >= 1 and need <= cur then
    local e = redis.call('ZRANGE', p .. 'win', old + need - 1, old + need - 1, 'WITHSCORES')
    retry = fmt(tonumber(e[2]) + win + margin)
  else
    retry = fmt(now + win / 20)  -- foreign traffic fills it: look again soon
  end
elseif kept then
  -- Uncapped work left the room to others' capped jobs: it comes back when more than
  -- that has left the window (at a window's turn, within tens of ms, as the last
  -- window's burst leaves it), not a polling pause later.
  local cur = redis.call('ZCARD', p .. 'win') - old
  local k = cur - (limit - foreign - slack - others_need - need) + 1
  if k >= 1 and k <= cur then
    local e = redis.call('ZRANGE', p .. 'win', old + k - 1, old + k - 1, 'WITHSCORES')
    retry = fmt(tonumber(e[2]) + win + margin)
  end
elseif slot_retry then
  retry = fmt(slot_retry)
end
-- This process's best job refused for the window (or yielded), for the others' order
-- (the engine's own reads are not: they are never yielded).
local wbest = nil
for i = 1, n do
  local pr = tonumber(ARGV[J + (i - 1) * 6 + 4])
  if (codes[i] == 0 or codes[i] == 6) and pr < 1073741824 and pr > -1073741824
      and (not wbest or pr > wbest) then
    wbest = pr
  end
end
if wbest then
  local untl = now
  if retry ~= '' then untl = math.max(now, tonumber(retry)) end
  redis.call('HSET', p .. 'wwait', proc, wbest .. '|' .. fmt(untl + grace))
elseif best ~= '' and tonumber(best) < 1073741824
    and redis.call('HEXISTS', p .. 'wwait', proc) == 1 then
  -- Admitted, with more queued: it drains the room it waited for (a gate probes with one
  -- job first), so the claim holds a little longer, renewed by each of its calls.
  redis.call('HSET', p .. 'wwait', proc, best .. '|' .. fmt(now + grace))
else
  redis.call('HDEL', p .. 'wwait', proc)
end
local out = {fmt(now), epoch, retry, tostring(room), tostring(foreign), tostring(limit)}
for i = 1, n do out[6 + i] = codes[i] end
return out
"""
)

#: Move admissions to when they were written: ARGV = n, then per lease: lease, delay ms
#: (from its admission to its write, measured by the process). Sent as the writes happen,
#: not with the answer: a job running longer than the window would otherwise leave the
#: window by its admission time while the server still counts it from its write.
WRITTEN = (
    _PRELUDE
    + r"""
local n = tonumber(ARGV[1])
for i = 1, n do
  local lease, delay = ARGV[2 * i], tonumber(ARGV[2 * i + 1])
  local sent = redis.call('ZSCORE', p .. 'win', lease)
  if sent and delay > 0 then redis.call('ZADD', p .. 'win', 'XX', tonumber(sent) + delay, lease) end
end
return n
"""
)

#: Release leases after their answers: ARGV = window_ms, n, margin_ms (the admission's:
#: the reconciliation below credits the fleet's sends half of it either side of the
#: window, as the server may count a send that much after its log entry), then per lease:
#: lease, credits
#: charged (-1 unknown), Remaining (-1 none), Limit (-1 none), fresh (1: the answer came
#: within a tenth of the window, so Remaining says what the server counted at the send),
#: hold ms (0 none), park ms (0 none), unsent (1: never written: forget its admission),
#: ledger entry ('' none), delay ms (from admission to the write, measured by the process
#: as a duration: its admission is moved that much later in the window, as the server
#: counted it). Idempotent: a lease released twice changes nothing the second
#: time. Returns the number of leases that were live.
RELEASE = (
    _PRELUDE
    + r"""
local win = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
local margin = tonumber(ARGV[3])
local resv = tonumber(redis.call('GET', p .. 'resv') or '0')
local freed = 0
local wake = {}  -- what the release frees that others may wait for: capped slots, credits
for i = 1, n do
  local b = 3 + (i - 1) * 10
  local lease, used = ARGV[b + 1], tonumber(ARGV[b + 2])
  local remaining, limit, fresh = tonumber(ARGV[b + 3]), tonumber(ARGV[b + 4]), ARGV[b + 5]
  local hold_ms, park_ms, unsent = tonumber(ARGV[b + 6]), tonumber(ARGV[b + 7]), ARGV[b + 8]
  local entry, delay = ARGV[b + 9], tonumber(ARGV[b + 10])
  local info = redis.call('HGET', p .. 'linfo', lease)
  if info then
    local sep = string.find(info, '|', 1, true)
    local ep = string.sub(info, 1, sep - 1)
    local reserved = tonumber(string.sub(info, sep + 1))
    resv = resv - reserved
    if redis.call('ZREM', p .. 'slots:' .. ep, lease) == 1 then wake[ep] = true end
    if reserved > 0 then wake['credits'] = true end
    redis.call('HDEL', p .. 'linfo', lease)
    redis.call('ZREM', p .. 'leases', lease)
    freed = freed + 1
    if used > 0 and redis.call('EXISTS', p .. 'balance') == 1 then
      redis.call('DECRBY', p .. 'balance', used)
    end
  end
  if limit > 0 then redis.call('SET', p .. 'limit', limit) end
  if remaining >= 0 and fresh == '1' then
    local sent = redis.call('ZSCORE', p .. 'win', lease)
    local lim = tonumber(redis.call('GET', p .. 'limit') or '0')
    -- (An answer released more than a window after its send says nothing of the window
    -- now, and the log before it may be pruned.)
    if sent and lim > 0 and now - (tonumber(sent) + delay) <= win then
      sent = tonumber(sent)
      -- What the server counted beyond what the fleet's sends could explain: those in the
      -- server's window at this send, and those that may have been, half the margin
      -- either side (the server counts a send a little after its write, a burst's last
      -- tens of ms after: a send at a window's edge saw the server still count a burst
      -- the log had just let go, and took it for 117 of 120 foreign). Not the whole
      -- margin: the fleet admits a window's turn a margin after the last one, and every
      -- answer at a turn then explained real foreign traffic away (30% foreign: an
      -- estimate of 13-26 of 36, and 429s at each turn).
      local slack = margin / 2
      local lo, hi = sent + delay - win - slack, sent + delay + math.max(50, slack)
      local fleet = redis.call('ZCOUNT', p .. 'win', lo, hi)
      local f = (lim - remaining) - fleet
      local cur = tonumber(redis.call('GET', p .. 'foreign') or '0')
      if f > 0 and f >= cur then
        redis.call('SET', p .. 'foreign', f, 'PX', math.floor(win))
        redis.call('DEL', p .. 'foreign2')
      elseif f >= math.max(4, cur / 2)
          and f >= tonumber(redis.call('GET', p .. 'foreign2') or '0') then
        -- The most seen since the largest, if of its order (another client still at it):
        -- it takes over when that one expires. The largest alone fell to 0 a window after
        -- it was seen, and the fleet sent into room the other client kept using until the
        -- next answer said so (30% foreign: 18-38 429s in ~520 requests, 4-5 with this).
        -- A stray small reading alone on the key is not kept.
        redis.call('SET', p .. 'foreign2', f, 'PX', math.floor(win))
      end
    end
  end
  if delay > 0 and unsent ~= '1' then
    local sent = redis.call('ZSCORE', p .. 'win', lease)
    if sent then redis.call('ZADD', p .. 'win', 'XX', tonumber(sent) + delay, lease) end
  end
  if unsent == '1' then redis.call('ZREM', p .. 'win', lease) end
  if hold_ms > 0 and redis.call('PTTL', p .. 'hold') < hold_ms then
    redis.call('SET', p .. 'hold', '429', 'PX', math.floor(hold_ms))
  end
  if park_ms > 0 then
    -- A 402: paid work parks, and the balance read before it is contradicted (not
    -- adoptable; a read admitted before now does not end the park either).
    redis.call('SET', p .. 'park', '402', 'PX', math.floor(park_ms))
    redis.call('SET', p .. 'park_at', fmt(now), 'PX', 86400000)
    redis.call('DEL', p .. 'balread')
  end
  if entry ~= '' then
    redis.call('XADD', p .. 'ledger', 'MAXLEN', '~', 100000, '*', 'rt', fmt(now), 'a', entry)
  end
end
if resv < 0 then resv = 0 end
redis.call('SET', p .. 'resv', resv)
for what, _ in pairs(wake) do redis.call('PUBLISH', p .. 'wake', what) end
return freed
"""
)

#: A process's heartbeat: ARGV = proc, host, pid, role, in flight, queued, best waiting
#: priority ('' none), ttl_ms, capped need, parked (1: its jobs wait for credits after a
#: 402), n, leases... Renews the process's live leases (and the 402 park while it is
#: parked: a park lasts while a parked process polls for credits, and ends a lease time
#: after the last one went), keeps the fleet's balance, records the process in the
#: registry and drops processes not seen for three lease times. Returns now and the number
#: of live processes (seen within a lease time).
HEARTBEAT = (
    _PRELUDE
    + r"""
local proc, ttl = ARGV[1], tonumber(ARGV[8])
local need = tonumber(ARGV[9])
local n = tonumber(ARGV[11])
expire_leases()
touch_balance(ttl)
redis.call('HSET', p .. 'queued', proc, ARGV[6] .. '|' .. fmt(now))
if ARGV[10] == '1' then
  local left = redis.call('PTTL', p .. 'park')
  if left > 0 and left < ttl then redis.call('PEXPIRE', p .. 'park', math.floor(ttl)) end
end
if need > 0 then
  redis.call('HSET', p .. 'need', proc, need .. '|' .. fmt(now))
else
  redis.call('HDEL', p .. 'need', proc)
end
for i = 1, n do
  local lease = ARGV[11 + i]
  if redis.call('ZSCORE', p .. 'leases', lease) then
    redis.call('ZADD', p .. 'leases', 'XX', now + ttl, lease)
    local info = redis.call('HGET', p .. 'linfo', lease)
    if info then
      local ep = string.sub(info, 1, string.find(info, '|', 1, true) - 1)
      redis.call('ZADD', p .. 'slots:' .. ep, 'XX', now + ttl, lease)
    end
  end
end
redis.call('HSET', p .. 'proc:' .. proc, 'host', ARGV[2], 'pid', ARGV[3], 'role', ARGV[4],
  'in_flight', ARGV[5], 'queued', ARGV[6], 'best', ARGV[7], 'last_seen', fmt(now),
  'ttl', fmt(ttl))
redis.call('PEXPIRE', p .. 'proc:' .. proc, math.floor(3 * ttl))
redis.call('ZADD', p .. 'procs', now, proc)
redis.call('ZREMRANGEBYSCORE', p .. 'procs', '-inf', now - 3 * ttl)
if ARGV[7] == '' then
  redis.call('HDEL', p .. 'prio', proc)
else
  redis.call('HSET', p .. 'prio', proc, ARGV[7] .. '|' .. fmt(now))
end
return {fmt(now), redis.call('ZCOUNT', p .. 'procs', now - ttl, '+inf')}
"""
)

#: A process leaves: ARGV = proc. Its registry entry and waiting priority go (its leases
#: were released one by one, or expire).
LEAVE = (
    _PRELUDE
    + r"""
redis.call('ZREM', p .. 'procs', ARGV[1])
redis.call('DEL', p .. 'proc:' .. ARGV[1])
redis.call('HDEL', p .. 'prio', ARGV[1])
redis.call('HDEL', p .. 'need', ARGV[1])
redis.call('HDEL', p .. 'wwait', ARGV[1])
redis.call('HDEL', p .. 'queued', ARGV[1])
if redis.call('GET', p .. 'balclaim') == ARGV[1] then redis.call('DEL', p .. 'balclaim') end
return 1
"""
)

#: A balance read: ARGV = credits, proc, Redis time (ms) of the read's admission ('' now),
#: the answer's other fields (JSON), age limit ms (after it, not adopted), idle ms (the fleet
#: idle this long: gone). A read admitted before the fleet's last 402 is contradicted by it
#: and changes nothing (returns 0). Else the shared balance becomes it, adoptable by the
#: fleet (``BALANCE_TAKE``), the reader's claim ends, and a positive balance ends a 402 park
#: (the poller that read it resumes its own jobs; the others are woken). Returns 1.
BALANCE = (
    _PRELUDE
    + r"""
local credits, proc = tonumber(ARGV[1]), ARGV[2]
local at = tonumber(ARGV[3]) or now
local fresh, idle = tonumber(ARGV[5]), math.max(1, math.floor(tonumber(ARGV[6])))
if redis.call('GET', p .. 'balclaim') == proc then redis.call('DEL', p .. 'balclaim') end
if at <= tonumber(redis.call('GET', p .. 'park_at') or '-1') then return 0 end
redis.call('SET', p .. 'balance', ARGV[1], 'PX', idle)
redis.call('DEL', p .. 'balread')
redis.call('HSET', p .. 'balread', 'at', fmt(at), 'by', proc, 'credits', ARGV[1],
  'fields', ARGV[4], 'until', fmt(at + fresh))
redis.call('PEXPIRE', p .. 'balread', idle)
if credits > 0 and redis.call('DEL', p .. 'park') == 1 then
  redis.call('PUBLISH', p .. 'wake', 'credits')
end
return 1
"""
)

#: A process about to read the balance: ARGV = proc, claim ms, claim ('1': claim the read
#: if nobody holds it). Returns ``{'fresh', balance now, credits read, fields, age ms, by}``
#: when the fleet has a balance to adopt (read by one of its processes within its age
#: limit, kept current since by its settlements, no 402 since, the fleet never idle for a
#: lease time since); else ``{'claimed'}`` when this process holds (or just took, or
#: renewed) the claim to read it for the fleet; ``{'wait', holder, ms left}`` when another
#: process holds it; ``{'none'}``.
BALANCE_TAKE = (
    _PRELUDE
    + r"""
local proc, claim_ms = ARGV[1], math.max(1, math.floor(tonumber(ARGV[2])))
local bal = redis.call('GET', p .. 'balance')
local m = redis.call('HMGET', p .. 'balread', 'at', 'by', 'credits', 'fields', 'until')
if bal and m[1] and tonumber(m[5]) > now then
  return {'fresh', bal, m[3], m[4], fmt(now - tonumber(m[1])), m[2]}
end
local holder = redis.call('GET', p .. 'balclaim')
if holder == proc then
  redis.call('PEXPIRE', p .. 'balclaim', claim_ms)
  return {'claimed'}
end
if holder then return {'wait', holder, tostring(redis.call('PTTL', p .. 'balclaim'))} end
if ARGV[3] == '1' then
  redis.call('SET', p .. 'balclaim', proc, 'PX', claim_ms)
  return {'claimed'}
end
return {'none'}
"""
)

#: A claim given up (the read failed, or the process stops waiting for it): ARGV = proc.
BALANCE_DROP = (
    _PRELUDE
    + r"""
if redis.call('GET', p .. 'balclaim') == ARGV[1] then redis.call('DEL', p .. 'balclaim') end
return 1
"""
)
