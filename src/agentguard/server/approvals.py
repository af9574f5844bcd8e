"""Governed revive: which revives need more than one person, and for how long a request waits.

A rule is ``N`` (every revive needs N distinct people: the requester and N-1 approvers) or
``PATTERN=N``. A pattern is ``[ORG/]TARGET``: ``TARGET`` is ``*`` (any target) or
``TYPE:ID``, where ``ID`` may hold ``*`` and ``?`` wildcards (``agent:payments*``); ``ORG/``
limits the rule to one organization (``acme/*``, ``acme/agent:payments*``; the part before
the first ``/`` is an organization only if it holds no ``:``). When several rules match a
revive, the largest N applies (the strictest); ``1`` or no matching rule: a revive is
immediate, as without approvals.

    ReviveApprovals.parse(["agent:payments*=2", "acme/*=3"])
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from fnmatch import fnmatchcase

from ..errors import InvalidInputError
from ..targets import TARGET_TYPES

REVIVE_APPROVALS_ENV = "AGENTGUARD_REVIVE_APPROVALS"  # the rules, separated by ';'
REVIVE_REQUEST_TTL_ENV = "AGENTGUARD_REVIVE_REQUEST_TTL"  # seconds a request waits
DEFAULT_REQUEST_TTL = timedelta(hours=1)
MAX_PEOPLE = 10
_RULE = re.compile(r"^(?:(?P<pattern>.+)=)?(?P<people>[0-9]+)$")


@dataclass(frozen=True)
class ApprovalRule:
    """Revives of the targets ``pattern`` matches need ``people`` distinct people."""

    organization: str | None  # None: every organization
    target_type: str | None  # None: any target
    target_id: str  # a pattern with * and ?
    people: int

    def matches(self, organization_id: str, target_type: str, target_id: str) -> bool:
        if self.organization is not None and self.organization != organization_id:
            return False
        if self.target_type is None:
            return True
        return self.target_type == target_type and fnmatchcase(target_id, self.target_id)

    def __str__(self) -> str:
        org = f"{self.organization}/" if self.organization is not None else ""
        target = "*" if self.target_type is None else f"{self.target_type}:{self.target_id}"
        return f"{org}{target}={self.people}"


class ReviveApprovals:
    """The rules, and how long a request waits for its approvals before it expires."""

    def __init__(
        self, rules: Iterable[ApprovalRule] = (), *, ttl: timedelta = DEFAULT_REQUEST_TTL
    ) -> None:
        self.rules = tuple(rules)
        if ttl <= timedelta(0) or ttl > timedelta(days=30):
            raise InvalidInputError("revive_request_ttl", "must be more than 0 and at most 30 days")
        self.ttl = ttl

    @classmethod
    def parse(
        cls, specs: str | Iterable[str], *, ttl: timedelta = DEFAULT_REQUEST_TTL
    ) -> ReviveApprovals:
        """Rules from specs (a string may hold several, separated by ``;``)."""
        if isinstance(specs, str):
            specs = specs.split(";")
        return cls([parse_rule(s) for s in specs if s.strip()], ttl=ttl)

    def people_for(self, organization_id: str, target_type: str, target_id: str) -> int:
        """How many distinct people a revive of the target needs (1: no approval)."""
        target = (organization_id, target_type, target_id)
        return max((r.people for r in self.rules if r.matches(*target)), default=1)

    def __bool__(self) -> bool:
        return any(r.people > 1 for r in self.rules)

    def __str__(self) -> str:
        return "; ".join(str(r) for r in self.rules)


def parse_rule(spec: str) -> ApprovalRule:
    """One rule: ``N`` or ``[ORG/]TARGET=N`` (see the module's docstring)."""
    text = spec.strip()
    m = _RULE.match(text)
    if m is None:
        raise InvalidInputError(
            "revive_approvals",
            f"{spec!r} is not a rule such as 2, agent:payments*=2, acme/*=2 or "
            "acme/agent:payments*=2",
        )
    people = int(m["people"])
    if not 1 <= people <= MAX_PEOPLE:
        raise InvalidInputError(
            "revive_approvals", f"{spec!r}: the number of people must be 1..{MAX_PEOPLE}"
        )
    pattern = (m["pattern"] or "*").strip()
    organization: str | None = None
    head, slash, rest = pattern.partition("/")
    if slash and ":" not in head:
        if not head or head != head.strip():
            raise InvalidInputError("revive_approvals", f"{spec!r}: an empty organization")
        organization, pattern = head, rest
    if pattern == "*":
        return ApprovalRule(organization, None, "*", people)
    target_type, colon, target_id = pattern.partition(":")
    if not colon or not target_type or not target_id:
        raise InvalidInputError(
            "revive_approvals",
            f"{spec!r}: a target is * or TYPE:ID (ID may hold * and ?), e.g. agent:payments*",
        )
    if target_type not in TARGET_TYPES:
        raise InvalidInputError(
            "revive_approvals",
            f"{spec!r}: the target type must be one of {', '.join(TARGET_TYPES)}",
        )
    return ApprovalRule(organization, target_type, target_id, people)
