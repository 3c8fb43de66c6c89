"""A circuit breaker per gateway account, its state shared by every process through Redis.

States: ``closed`` (calls flow; outcomes go into a sliding time window), ``open`` (calls are
refused until a cool-down has passed), ``half_open`` (a bounded number of trial calls flow;
``half_open_successes`` consecutive successes close the breaker, one failure reopens it).

Why it is written here and not taken from a library: the two maintained Python breakers that
keep state in Redis do not do what the issue asks, across processes.

* pybreaker (``CircuitRedisStorage``) opens after ``fail_max`` *consecutive* failures: there is no
  failure *rate* over a sliding time window and no minimum number of calls. Its transitions are
  read-modify-write sequences over several Redis keys, guarded by a ``threading.RLock`` that
  only serialises one process (and is held for the whole call), so half-open admits one trial
  per process rather than a bounded number overall; ``opened_at`` comes from each worker's own
  clock (danielfm/pybreaker issues #26 and #44).
* purgatory (``SyncRedisUnitOfWork``) also opens after ``threshold`` consecutive failures (no
  rate, no window, no minimum calls); its half-open state lets every caller through and closes
  on the first success; its cool-down is measured with each process's own ``time.time()``.

So every transition here is one Lua script, which Redis runs atomically: no two processes can
interleave a read and a write of the same breaker. Time comes from the Redis server (``TIME``
inside the script), so workers whose clocks disagree still agree on windows and cool-downs.

Redis layout per breaker, all keys of one breaker share the hash tag ``{name}`` (one slot on a
Redis Cluster):

* ``aegispay:breaker:{name}:state`` hash: ``state``, ``opened_at`` (ms), ``successes``
  (consecutive half-open successes).
* ``aegispay:breaker:{name}:window`` hash of time buckets, ``<bucket>:c`` calls and
  ``<bucket>:f`` failures. The window is cut into ``WINDOW_BUCKETS`` buckets, so its memory is
  bounded whatever the call volume; expired buckets are deleted whenever the window is read.
* ``aegispay:breaker:{name}:trials`` sorted set of half-open trial leases scored by expiry (ms).
  A trial whose worker died before reporting is forgotten when its lease expires, so a crashed
  worker cannot wedge the breaker in half-open.

``allow()`` returns a plain bool, so a reported outcome cannot name the trial it ends: any
outcome reported in half-open ends the oldest trial lease. The count of trials in flight stays
exact; a call admitted while the breaker was still closed and reporting during half-open ends
one trial early, so at most that many extra trials can be admitted (bounded by the bulkhead).
Outcomes reported while the breaker is open come from calls admitted before it opened and are
ignored: they must not extend the cool-down.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from functools import cached_property
from typing import Any

from django.conf import settings
from django_redis import get_redis_connection

KEY_PREFIX = "aegispay:breaker:"
# The sliding window is cut into this many time buckets (bounded memory, 1/60 resolution).
WINDOW_BUCKETS = 60
# An idle breaker's keys expire after this long without a write; closed is the right state to
# come back to after a day without a single call.
IDLE_TTL_SECONDS = 24 * 3600


class BreakerState(StrEnum):
    """The state of a circuit breaker."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class BreakerSnapshot:
    """A consistent read of one breaker (for the admin and for routing).

    ``calls`` and ``failures`` are the outcomes in the current sliding window; ``opened_at`` is
    when the breaker last opened (None while closed); ``half_open_trials`` is the number of
    trial calls in flight.
    """

    state: BreakerState
    failures: int
    calls: int
    opened_at: datetime | None
    half_open_trials: int = 0

    @property
    def failure_rate(self) -> float:
        """Failures / calls in the window (0.0 when there were no calls)."""
        return self.failures / self.calls if self.calls else 0.0


# Shared head of every script (here and in gateways/resilience.py): arguments, Redis server
# time, window totals and the lazy open -> half_open transition. KEYS: state, window, trials.
PRELUDE = """
local state_key, window_key, trials_key = KEYS[1], KEYS[2], KEYS[3]
local failure_rate = tonumber(ARGV[1])
local minimum_calls = tonumber(ARGV[2])
local window_ms = tonumber(ARGV[3])
local open_ms = tonumber(ARGV[4])
local max_trials = tonumber(ARGV[5])
local successes_needed = tonumber(ARGV[6])
local trial_lease_ms = tonumber(ARGV[7])
local buckets = tonumber(ARGV[8])
local idle_ttl_ms = tonumber(ARGV[9])

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- Stored as an integer string: Lua's default number format would round it.
local now_text = string.format('%d', now)
local width = math.max(1, math.floor(window_ms / buckets))
local current_bucket = math.floor(now / width)
local oldest_bucket = current_bucket - math.ceil(window_ms / width) + 1

local function window_totals()
    local fields = redis.call('HGETALL', window_key)
    local calls, failures, stale = 0, 0, {}
    for i = 1, #fields, 2 do
        local field = fields[i]
        local sep = string.find(field, ':', 1, true)
        local bucket = tonumber(string.sub(field, 1, sep - 1))
        if bucket < oldest_bucket then
            stale[#stale + 1] = field
        elseif string.sub(field, sep + 1) == 'c' then
            calls = calls + tonumber(fields[i + 1])
        else
            failures = failures + tonumber(fields[i + 1])
        end
    end
    if #stale > 0 then
        redis.call('HDEL', window_key, unpack(stale))
    end
    return calls, failures
end

local function touch()
    redis.call('PEXPIRE', state_key, idle_ttl_ms)
end

local function open_breaker()
    redis.call('HSET', state_key, 'state', 'open', 'opened_at', now_text, 'successes', 0)
    redis.call('DEL', trials_key)
    touch()
end

local function current_state()
    local state = redis.call('HGET', state_key, 'state')
    if not state then
        return 'closed'
    end
    if state == 'open' then
        local opened_at = tonumber(redis.call('HGET', state_key, 'opened_at')) or 0
        if now >= opened_at + open_ms then
            redis.call('HSET', state_key, 'state', 'half_open', 'successes', 0)
            redis.call('DEL', trials_key)
            touch()
            return 'half_open'
        end
    end
    return state
end
"""

_SNAPSHOT = (
    PRELUDE
    + """
local state = current_state()
local calls, failures = window_totals()
redis.call('ZREMRANGEBYSCORE', trials_key, '-inf', now)
local trials = redis.call('ZCARD', trials_key)
local opened_at = redis.call('HGET', state_key, 'opened_at') or ''
if state == 'closed' then
    opened_at = ''
end
return {state, failures, calls, opened_at, trials}
"""
)

# Each operation as a Lua function over the prelude's locals, so that a script of another
# module can run it with its own work in the same round trip (gateways/resilience.py: the
# breaker's check with the bulkhead's slot, the bulkhead's release with the outcome).

# allow(token): 1 when a call may go now; in half-open, reserves a trial lease ``token``.
ALLOW_FUNCTION = """
local function allow(token)
    local state = current_state()
    if state == 'closed' then
        return 1
    end
    if state == 'open' then
        return 0
    end
    redis.call('ZREMRANGEBYSCORE', trials_key, '-inf', now)
    if redis.call('ZCARD', trials_key) >= max_trials then
        return 0
    end
    redis.call('ZADD', trials_key, now + trial_lease_ms, token)
    redis.call('PEXPIRE', trials_key, trial_lease_ms + 1000)
    return 1
end
"""

# record(failed): the state after recording an outcome.
RECORD_FUNCTION = """
local function record(failed)
    local state = current_state()
    if state == 'open' then
        return state
    end
    if state == 'half_open' then
        redis.call('ZPOPMIN', trials_key)
        if failed then
            open_breaker()
            return 'open'
        end
        local successes = redis.call('HINCRBY', state_key, 'successes', 1)
        touch()
        if successes >= successes_needed then
            redis.call('DEL', window_key, trials_key)
            redis.call('HSET', state_key, 'state', 'closed', 'successes', 0)
            redis.call('HDEL', state_key, 'opened_at')
            return 'closed'
        end
        return 'half_open'
    end
    redis.call('HINCRBY', window_key, current_bucket .. ':c', 1)
    if failed then
        redis.call('HINCRBY', window_key, current_bucket .. ':f', 1)
    end
    redis.call('PEXPIRE', window_key, window_ms + 2 * width)
    local calls, failures = window_totals()
    if calls >= minimum_calls and failures / calls >= failure_rate then
        open_breaker()
        return 'open'
    end
    return 'closed'
end
"""

# cancel(): gives back the oldest half-open trial lease (a call admitted but never made).
CANCEL_FUNCTION = """
local function cancel()
    if current_state() == 'half_open' then
        redis.call('ZPOPMIN', trials_key)
    end
end
"""

# ARGV[10]: a fresh trial token.
_ALLOW = PRELUDE + ALLOW_FUNCTION + "return allow(ARGV[10])\n"

# ARGV[10]: 'success' or 'failure'. Returns the state after recording.
_RECORD = PRELUDE + RECORD_FUNCTION + "return record(ARGV[10] == 'failure')\n"

_CANCEL = PRELUDE + CANCEL_FUNCTION + "cancel()\nreturn 1\n"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class CircuitBreaker:
    """A circuit breaker named ``name`` (a gateway account), its state in Redis.

    Every instance with the same name, in any process, is the same breaker. Each method is one
    atomic Redis script; none holds a lock between calls. Raises ``ValueError`` for
    out-of-range parameters; Redis errors (``redis.RedisError``) propagate.

    * closed -> open when, with at least ``minimum_calls`` outcomes in the last
      ``window_seconds``, failures / calls >= ``failure_rate_threshold``;
    * open -> half_open once ``open_seconds`` have passed since it opened;
    * half_open admits at most ``half_open_max_calls`` trial calls in flight (each trial lease
      lasts ``trial_lease_seconds``, default settings ``BREAKER_TRIAL_LEASE_SECONDS``);
      ``half_open_successes`` consecutive successes close it and clear the window, one failure
      reopens it with a new cool-down.
    """

    def __init__(
        self,
        name: str,
        *,
        failure_rate_threshold: float,
        minimum_calls: int,
        window_seconds: float,
        open_seconds: float,
        half_open_max_calls: int,
        half_open_successes: int,
        redis: Any | None = None,
        trial_lease_seconds: float | None = None,
    ) -> None:
        if not 0 < failure_rate_threshold <= 1:
            raise ValueError("failure_rate_threshold must be in (0, 1]")
        if minimum_calls < 1 or half_open_max_calls < 1 or half_open_successes < 1:
            raise ValueError(
                "minimum_calls, half_open_max_calls and half_open_successes must be >= 1"
            )
        if window_seconds <= 0 or open_seconds <= 0:
            raise ValueError("window_seconds and open_seconds must be > 0")
        if trial_lease_seconds is None:
            trial_lease_seconds = _default_trial_lease_seconds()
        if trial_lease_seconds <= 0:
            raise ValueError("trial_lease_seconds must be > 0")
        self.name = name
        self.failure_rate_threshold = float(failure_rate_threshold)
        self.minimum_calls = int(minimum_calls)
        self.window_seconds = float(window_seconds)
        self.open_seconds = float(open_seconds)
        self.half_open_max_calls = int(half_open_max_calls)
        self.half_open_successes = int(half_open_successes)
        self.trial_lease_seconds = float(trial_lease_seconds)
        self._redis = redis if redis is not None else get_redis_connection("default")
        base = f"{KEY_PREFIX}{{{name}}}"
        self._keys = [f"{base}:state", f"{base}:window", f"{base}:trials"]
        self._args: list[str | int | float] = [
            repr(self.failure_rate_threshold),
            self.minimum_calls,
            max(1, round(self.window_seconds * 1000)),
            max(1, round(self.open_seconds * 1000)),
            self.half_open_max_calls,
            self.half_open_successes,
            max(1, round(self.trial_lease_seconds * 1000)),
            WINDOW_BUCKETS,
            max(IDLE_TTL_SECONDS * 1000, 2 * round(self.open_seconds * 1000)),
        ]

    # Scripts are registered on first use: the router builds a breaker per candidate only to
    # read its keys and settings, and registering (a SHA-1 each) showed in its profile.
    @cached_property
    def _snapshot(self) -> Any:
        return self._redis.register_script(_SNAPSHOT)

    @cached_property
    def _allow(self) -> Any:
        return self._redis.register_script(_ALLOW)

    @cached_property
    def _record(self) -> Any:
        return self._redis.register_script(_RECORD)

    @cached_property
    def _cancel(self) -> Any:
        return self._redis.register_script(_CANCEL)

    def __repr__(self) -> str:
        return f"CircuitBreaker(name={self.name!r})"

    @property
    def keys(self) -> tuple[str, ...]:
        """The Redis keys that hold this breaker (for inspection and clean-up); ``PRELUDE``'s
        KEYS, in order."""
        return tuple(self._keys)

    @property
    def arguments(self) -> tuple[str | int | float, ...]:
        """``PRELUDE``'s ARGV (1 to 9): this breaker's settings, for a script that runs one of
        its functions."""
        return tuple(self._args)

    @property
    def redis(self) -> Any:
        """The Redis client this breaker's state is read and written through."""
        return self._redis

    def state(self) -> BreakerState:
        """The current state; an open breaker whose cool-down has passed is half_open."""
        return self.snapshot().state

    def allow(self) -> bool:
        """Whether a call may go to the gateway now.

        closed: True. open: False. half_open: True only while fewer than
        ``half_open_max_calls`` trials are in flight, and then a trial slot is reserved
        atomically; end it with ``record_success``/``record_failure``, or give it back with
        ``cancel`` when the call is not made after all.
        """
        return bool(self._allow(keys=self._keys, args=[*self._args, uuid.uuid4().hex]))

    def record_success(self) -> BreakerState:
        """Record a healthy answer; returns the state after it (closes a half-open breaker
        after ``half_open_successes`` consecutive successes)."""
        return BreakerState(_text(self._record(keys=self._keys, args=[*self._args, "success"])))

    def record_failure(self) -> BreakerState:
        """Record a failed call; returns the state after it (may open the breaker, and always
        reopens a half-open one)."""
        return BreakerState(_text(self._record(keys=self._keys, args=[*self._args, "failure"])))

    def cancel(self) -> None:
        """Give back a half-open trial slot that ``allow()`` reserved for a call never made.

        A no-op when the breaker is not half-open.
        """
        self._cancel(keys=self._keys, args=self._args)

    def reset(self) -> None:
        """Forget everything: the breaker is closed with an empty window."""
        self._redis.delete(*self._keys)

    def snapshot(self) -> BreakerSnapshot:
        """State, window totals, when it opened and trials in flight, read atomically."""
        state, failures, calls, opened_at, trials = self._snapshot(keys=self._keys, args=self._args)
        opened_text = _text(opened_at)
        return BreakerSnapshot(
            state=BreakerState(_text(state)),
            failures=int(failures),
            calls=int(calls),
            opened_at=(
                datetime.fromtimestamp(int(opened_text) / 1000, tz=UTC) if opened_text else None
            ),
            half_open_trials=int(trials),
        )


def _default_trial_lease_seconds() -> float:
    timeout = float(getattr(settings, "GATEWAY_TIMEOUT_SECONDS", 10.0))
    return float(getattr(settings, "BREAKER_TRIAL_LEASE_SECONDS", timeout + 5))


def breaker_for(gateway: str) -> CircuitBreaker:
    """The breaker of gateway account ``gateway``, configured from settings.

    Settings (defaults): ``BREAKER_FAILURE_RATE`` (0.5), ``BREAKER_MINIMUM_CALLS`` (10),
    ``BREAKER_WINDOW_SECONDS`` (60), ``BREAKER_OPEN_SECONDS`` (30),
    ``BREAKER_HALF_OPEN_MAX_CALLS`` (3), ``BREAKER_HALF_OPEN_SUCCESSES`` (2),
    ``BREAKER_TRIAL_LEASE_SECONDS`` (``GATEWAY_TIMEOUT_SECONDS`` + 5).
    """
    return CircuitBreaker(
        gateway,
        failure_rate_threshold=float(getattr(settings, "BREAKER_FAILURE_RATE", 0.5)),
        minimum_calls=int(getattr(settings, "BREAKER_MINIMUM_CALLS", 10)),
        window_seconds=float(getattr(settings, "BREAKER_WINDOW_SECONDS", 60)),
        open_seconds=float(getattr(settings, "BREAKER_OPEN_SECONDS", 30)),
        half_open_max_calls=int(getattr(settings, "BREAKER_HALF_OPEN_MAX_CALLS", 3)),
        half_open_successes=int(getattr(settings, "BREAKER_HALF_OPEN_SUCCESSES", 2)),
        trial_lease_seconds=_default_trial_lease_seconds(),
    )
