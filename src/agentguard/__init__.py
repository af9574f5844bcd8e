"""agentguard: an embeddable kill switch for AI agents."""

from ._version import __version__
from .actions import guarded_action, is_guarded
from .errors import (
    AgentGuardError,
    AgentGuardWarning,
    AlreadyKilledError,
    GuardNotConfiguredError,
    InvalidInputError,
    KillStateUnavailableError,
    NotKilledError,
    PolicyViolationError,
)
from .guard import Guard, configure, get_guard
from .inflight import Call, current_call
from .records import (
    AuditEntry,
    CallCounts,
    Intervention,
    InterventionType,
    KillChange,
    KillStatus,
    KillSwitch,
    Snapshot,
)
from .rules import BudgetRule, ErrorRateRule, LoopRule, RateRule, Rule
from .scope import Scope, current_scope, enter_scope, exit_scope, scope
from .store import KillStore, MemoryStore
from .targets import TargetType

__all__ = [
    "AgentGuardError",
    "AgentGuardWarning",
    "AlreadyKilledError",
    "AuditEntry",
    "BudgetRule",
    "Call",
    "ErrorRateRule",
    "LoopRule",
    "RateRule",
    "Rule",
    "CallCounts",
    "Guard",
    "GuardNotConfiguredError",
    "Intervention",
    "InterventionType",
    "InvalidInputError",
    "KillChange",
    "KillStateUnavailableError",
    "KillStatus",
    "KillStore",
    "KillSwitch",
    "MemoryStore",
    "NotKilledError",
    "PolicyViolationError",
    "Scope",
    "Snapshot",
    "TargetType",
    "__version__",
    "configure",
    "current_call",
    "current_scope",
    "enter_scope",
    "exit_scope",
    "get_guard",
    "guarded_action",
    "is_guarded",
    "scope",
]
