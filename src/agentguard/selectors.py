"""Labels and selector kills: ``Guard(labels={"env": "prod"})`` and a kill of target type
``selector`` with a Kubernetes-style equality selector such as ``env=prod,tool=send_email``.

A selector is normalised to one canonical string (pairs sorted by key), so one selector is one
active kill. Its keys are labels of a guard or the call's own ``agent``, ``run``, ``mission`` and
``tool``. A guard matches the label part against its fixed labels once per kill (not per call)
and indexes the call part by the call keys it names (:class:`SelectorView`), so a call is
checked with one dict look-up per shape of selector, whatever the number of selector kills.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import NamedTuple

from .errors import InvalidInputError
from .records import KillSwitch
from .scope import Scope
from .targets import CALL_KEYS, LABEL_KEY, LABEL_RULE, LABEL_VALUE, Pairs, parse_selector

MAX_LABELS = 32


def validate_labels(labels: object, field: str = "labels") -> dict[str, str]:
    """A guard's labels, checked: at most 32, keys and values as Kubernetes labels', and no key
    that a selector reads from the call (agent, run, mission, tool)."""
    if labels is None:
        return {}
    if not isinstance(labels, Mapping):
        raise InvalidInputError(field, f"must be a mapping of names to values; got {labels!r}")
    if len(labels) > MAX_LABELS:
        raise InvalidInputError(field, f"must hold at most {MAX_LABELS} labels; got {len(labels)}")
    checked: dict[str, str] = {}
    for key, value in labels.items():
        if not isinstance(key, str) or not LABEL_KEY.match(key):
            raise InvalidInputError(f"{field}.{key}", f"a label key must be {LABEL_RULE}")
        if key in CALL_KEYS:
            raise InvalidInputError(
                f"{field}.{key}",
                f"{key!r} is a key of the call itself (agent, run, mission, tool), not a label",
            )
        if not isinstance(value, str) or not LABEL_VALUE.match(value):
            raise InvalidInputError(f"{field}.{key}", f"a label value must be {LABEL_RULE}")
        checked[key] = value
    return dict(sorted(checked.items()))


class Selector(NamedTuple):
    """A selector split into the labels it needs and the call keys (sorted) it names."""

    labels: Pairs
    shape: tuple[str, ...]  # the call keys, e.g. ("agent", "tool")
    values: tuple[str, ...]  # their values, in the same order

    @classmethod
    def of(cls, target_id: str) -> Selector:
        pairs = parse_selector(target_id)
        call = [(k, v) for k, v in pairs if k in CALL_KEYS]
        return cls(
            labels=tuple((k, v) for k, v in pairs if k not in CALL_KEYS),
            shape=tuple(k for k, _ in call),
            values=tuple(v for _, v in call),
        )

    def selects_labels(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.labels)

    def selects(self, labels: Mapping[str, str], name: str, scope: Scope) -> bool:
        """Whether a call of action ``name`` under ``scope`` of a guard with ``labels`` is
        selected (for one call: the calls in flight a kill stops)."""
        return self.selects_labels(labels) and all(
            call_value(k, name, scope) == v for k, v in zip(self.shape, self.values, strict=True)
        )


def call_value(key: str, name: str, scope: Scope) -> str | None:
    """The call's value of a selector's call key."""
    if key == "tool":
        return name
    if key == "agent":
        return scope.agent_id
    if key == "run":
        return scope.run_id
    return scope.mission_id


class SelectorView:
    """The selector kills of an index that select a guard's labels, keyed by the call keys they
    name: ``{("agent", "tool"): {("mailer", "send_email"): kill}}``; ``()`` selects every call.

    Built from the index's selector table at one revision; each kill's selector is parsed and
    matched against the labels once (kept by kill switch id between revisions).
    """

    __slots__ = ("revision", "by_shape", "_seen")

    def __init__(
        self,
        revision: int,
        kills: Iterable[KillSwitch],
        labels: Mapping[str, str],
        seen: dict[str, Selector | None] | None = None,
    ) -> None:
        self.revision = revision
        known = seen or {}
        self._seen: dict[str, Selector | None] = {}
        by_shape: dict[tuple[str, ...], dict[tuple[str, ...], KillSwitch]] = {}
        for ks in kills:
            if ks.id in known:
                selector = known[ks.id]
            else:
                try:
                    parsed = Selector.of(ks.target_id)
                except InvalidInputError:
                    parsed = None  # not a selector this version reads: it selects nothing here
                selector = parsed if parsed is not None and parsed.selects_labels(labels) else None
            self._seen[ks.id] = selector
            if selector is not None:
                by_shape.setdefault(selector.shape, {})[selector.values] = ks
        self.by_shape = by_shape

    def next(
        self, revision: int, kills: Iterable[KillSwitch], labels: Mapping[str, str]
    ) -> SelectorView:
        """The view at a later revision, reusing what was matched already."""
        return SelectorView(revision, kills, labels, self._seen)

    def blocking(self, name: str, scope: Scope) -> KillSwitch | None:
        """The selector kill that selects this call, if any: one look-up per shape."""
        for shape, table in self.by_shape.items():
            values = tuple(call_value(k, name, scope) for k in shape)
            ks = table.get(values)  # type: ignore[arg-type]
            if ks is not None:
                return ks
        return None


EMPTY_VIEW = SelectorView(-1, (), {})
