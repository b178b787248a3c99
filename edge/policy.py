"""Access policy: ``AccessPolicy.check(person_id) -> Verdict``.

Recognising a face is not the same as letting the person in.  After the
recognition loop grants a track, the door asks the policy whether this person
may use this door right now.  Everything needed is on the door (the cache
holds groups and validity), so the policy keeps working offline.

Checks, in order, each with the reason a denial event carries:

- the person is in the cache: ``not_enrolled``;
- their validity period covers now: ``person_not_yet_valid``, ``person_expired``;
- one of the door's rules admits one of their groups now, in the site's time
  zone (holidays replace the normal rules): ``group_not_allowed`` when no
  rule ever admits their groups, ``outside_schedule`` when one does but not now;
- anti-passback, when on: ``anti_passback`` (hard mode only; soft mode grants
  and marks the grant as a violation).

A person standing at the door produces one grant per ``cooldown_seconds``:
later grants within the cooldown are ``suppressed`` (no event, no new pulse).

Passes at the area's other door units arrive as signed passages relayed by
central (:class:`edge.sync.DoorSync` checks them) and are taken in with
:meth:`AccessPolicy.record_remote`; offline, each unit knows only its own.

Passes are kept only as long as they matter: those from before the last
anti-passback reset are dropped, and so are those of a person who leaves the
door cache (revoked or forgotten; :func:`edge.cache.when_removed`).
"""

import datetime as dt
import logging
import threading
import time
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from edge import cache

logger = logging.getLogger(__name__)

ENTRY = "entry"
EXIT = "exit"


# Declared with the cache, so that removing a person from it removes their passes.
Passage = cache.Passage


@dataclass(frozen=True)
class Verdict:
    """The policy's answer for one recognised person.

    ``allowed`` False means deny with ``reason``; ``suppressed`` means allowed
    but within the person's cooldown (emit nothing, do not pulse again);
    ``details`` go into the grant event (direction, anti-passback flags).
    """

    allowed: bool
    reason: str = None
    suppressed: bool = False
    details: dict = field(default_factory=dict)


@dataclass(frozen=True)
class PersonFacts:
    """What the policy needs to know about a person."""

    groups: tuple = ()
    valid_from: dt.datetime = None
    valid_until: dt.datetime = None


def _utc(value):
    """Naive datetimes from SQLite are UTC."""
    if value is None:
        return None
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def cache_person_lookup(person_id):
    """Look a person up in the door's SQLite cache."""
    person = cache.Person.get_or_none(cache.Person.person_id == person_id)
    if person is None:
        return None
    return PersonFacts(tuple(person.groups), _utc(person.valid_from), _utc(person.valid_until))


class Schedule:
    """Weekly windows and holidays of one door, evaluated in the site's time zone.

    Wall-clock windows are compared with the local time of the instant, so a
    DST change moves the window with the clocks, as people expect.
    """

    def __init__(self, rules, holidays, timezone):
        self.rules = list(rules)
        self.holidays = {h.date: h for h in holidays}
        self.zone = ZoneInfo(timezone)

    def _rules_for(self, day):
        """(rules, every_day) for a local date: a holiday's rules ignore weekdays."""
        holiday = self.holidays.get(day)
        return (holiday.rules, True) if holiday is not None else (self.rules, False)

    def active_rules(self, instant):
        """The rules whose window contains ``instant`` (an aware datetime)."""
        local = instant.astimezone(self.zone)
        minute = local.hour * 60 + local.minute
        today, yesterday = local.date(), local.date() - dt.timedelta(days=1)
        active = []
        rules, every_day = self._rules_for(today)
        for rule in rules:
            start, end = rule.minutes()
            if not (every_day or today.weekday() in rule.day_numbers()):
                continue
            if (start < end and start <= minute < end) or (end <= start and minute >= start):
                active.append(rule)
        # A window that wraps past midnight started on the previous day.
        rules, every_day = self._rules_for(yesterday)
        for rule in rules:
            start, end = rule.minutes()
            if end <= start and minute < end and (every_day or yesterday.weekday() in rule.day_numbers()):
                active.append(rule)
        return active

    def admits(self, groups, instant):
        """(allowed, reason) for a person in ``groups`` at ``instant``."""
        groups = set(groups)
        if any(not r.groups or groups & set(r.groups) for r in self.active_rules(instant)):
            return True, None
        local_day = instant.astimezone(self.zone).date()
        candidates = list(self.rules) + list(self._rules_for(local_day)[0])
        if any(not r.groups or groups & set(r.groups) for r in candidates):
            return False, "outside_schedule"
        return False, "group_not_allowed"

    def last_reset(self, instant, reset_hhmm):
        """The latest daily reset instant at or before ``instant``."""
        local = instant.astimezone(self.zone)
        hour, minute = int(reset_hhmm[:2]), int(reset_hhmm[3:])
        for days_back in (0, 1):
            day = local.date() - dt.timedelta(days=days_back)
            # Compared as UTC instants: two times in one ZoneInfo compare by wall
            # clock, and a reset inside the spring-forward gap (02:30) is 03:30
            # summer time, later than 03:10 on that clock.
            candidate = dt.datetime.combine(day, dt.time(hour, minute), tzinfo=self.zone).astimezone(dt.timezone.utc)
            if candidate <= instant:
                return candidate
        return candidate


class AccessPolicy:
    """Decide whether a recognised person may pass this door now.

    :param policy: the ``policy`` section (:class:`config.policy.PolicySection`).
    :param timezone: the site's IANA time zone.
    :param person_lookup: ``person_id -> PersonFacts | None``; the door cache by default.
    :param persist: keep anti-passback state in the door cache (survives restarts).
    :param clock: ``() -> aware UTC datetime``, for tests.
    """

    def __init__(self, policy, timezone, *, person_lookup=cache_person_lookup, persist=True,
                 clock=None):
        self.policy = policy
        self.schedule = Schedule(policy.rules, policy.holidays, timezone)
        self.person_lookup = person_lookup
        self.persist = persist
        self.clock = clock or (lambda: dt.datetime.now(dt.timezone.utc))
        self._last_grant = {}
        self._passages = {}
        self._mutex = threading.Lock()
        self._pruned_to = None
        if persist:
            cache.database.create_tables([Passage])
            for row in Passage.select().where(Passage.area == policy.area):
                self._passages[row.person_id] = (row.direction, _utc(row.at))
        # Held weakly by the cache: a policy that goes stops listening.
        cache.when_removed(self.forget_people)

    @classmethod
    def from_config(cls, door_config):
        """The policy of a whole :class:`config.door.DoorConfig` (cache must be open)."""
        return cls(door_config.policy, door_config.site.timezone)

    def check(self, person_id, now=None):
        """Return the :class:`Verdict` for ``person_id`` at ``now`` and record the pass."""
        now = now or self.clock()
        facts = self.person_lookup(person_id)
        if facts is None:
            return Verdict(False, "not_enrolled")
        if facts.valid_from is not None and now < facts.valid_from:
            return Verdict(False, "person_not_yet_valid")
        if facts.valid_until is not None and now > facts.valid_until:
            return Verdict(False, "person_expired")
        allowed, reason = self.schedule.admits(facts.groups, now)
        if not allowed:
            return Verdict(False, reason)
        with self._mutex:
            self._prune(now)
            last = self._last_grant.get(person_id)
            if last is not None and (time.monotonic() - last) < self.policy.cooldown_seconds:
                return Verdict(True, suppressed=True)
            direction, violation = self._direction(person_id, now)
            if violation and self.policy.anti_passback == "hard":
                return Verdict(False, "anti_passback", details={"direction": direction})
            self._last_grant[person_id] = time.monotonic()
            self._record(person_id, direction, now)
        details = {"direction": direction, "area": self.policy.area}
        if violation:
            details["anti_passback_violation"] = True
            logger.warning("anti-passback violation (soft) in area %s (the event names the person)",
                           self.policy.area)
        return Verdict(True, details=details)

    def record_remote(self, person_id, direction, at):
        """Take a pass at another door unit of this area into account; True if the state changed.

        ``direction`` is ``entry`` or ``exit`` and ``at`` the aware time of
        that pass (the other door's event time).  The state changes only if
        ``at`` is newer than what this door already knows for the person, so
        a late, duplicated or replayed older passage can never roll it back.
        The caller has checked the passage's signature and area
        (:class:`edge.sync.DoorSync`).
        """
        if direction not in (ENTRY, EXIT):
            raise ValueError(f"a passage direction is entry or exit, not {direction!r}")
        at = _utc(at)
        if self.person_lookup(person_id) is None:
            # Not enrolled here (or removed, and the relay is late): this door
            # would deny them anyway, and keeps nothing about them.
            return False
        with self._mutex:
            self._prune(self.clock())
            last = self._passages.get(person_id)
            if last is not None and at <= last[1]:
                return False
            self._record(person_id, direction, at)
        logger.info("learnt a remote %s in area %s", direction, self.policy.area)
        return True

    def forget_people(self, person_ids):
        """Drop everything this policy knows about ``person_ids`` (revoked or forgotten people).

        Their passes go from memory and from the door cache, and so do their
        cooldowns.  :func:`edge.cache.when_removed` calls this when people
        leave the cache.
        """
        person_ids = list(person_ids)
        with self._mutex:
            for person_id in person_ids:
                self._passages.pop(person_id, None)
                self._last_grant.pop(person_id, None)
            if self.persist:
                for start in range(0, len(person_ids), 500):
                    Passage.delete().where(Passage.person_id.in_(person_ids[start:start + 500])).execute()

    def last_passage(self, person_id):
        """``(direction, at)`` of the person's latest known pass in this area, or None."""
        with self._mutex:
            return self._passages.get(person_id)

    def _direction(self, person_id, now):
        """(direction of this pass, whether it violates anti-passback)."""
        last = self._passages.get(person_id)
        if last is not None and last[1] < self.schedule.last_reset(now, self.policy.anti_passback_reset):
            last = None
        role = self.policy.role
        if role == "both":
            if self.policy.direction == "alternate":
                direction = EXIT if last is not None and last[0] == ENTRY else ENTRY
            else:
                direction = self.policy.direction
        else:
            direction = role
        violation = (self.policy.anti_passback != "off" and direction == ENTRY
                     and last is not None and last[0] == ENTRY)
        return direction, violation

    def _prune(self, now):
        """Drop the passes from before the last anti-passback reset: they decide nothing any more.

        Runs once per reset period, on the first check or relayed pass after
        the reset (the caller holds the mutex).
        """
        reset = self.schedule.last_reset(now, self.policy.anti_passback_reset)
        if self._pruned_to is not None and reset <= self._pruned_to:
            return
        self._pruned_to = reset
        for person_id in [p for p, (_, at) in self._passages.items() if at < reset]:
            del self._passages[person_id]
        if self.persist:
            Passage.delete().where(Passage.at < reset.replace(tzinfo=None)).execute()

    def _record(self, person_id, direction, now):
        self._passages[person_id] = (direction, now)
        if self.persist:
            Passage.insert(person_id=person_id, area=self.policy.area, direction=direction,
                           at=now.astimezone(dt.timezone.utc).replace(tzinfo=None)
                           ).on_conflict_replace().execute()
