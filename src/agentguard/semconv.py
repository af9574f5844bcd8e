"""Attribute keys of agentguard's spans and metrics, in one place.

The GenAI semantic conventions are still in development and their Python constants are
deprecated, so the strings are written here.
"""

GEN_AI_OPERATION_NAME = "gen_ai.operation.name"
GEN_AI_TOOL_NAME = "gen_ai.tool.name"
GEN_AI_TOOL_CALL_ID = "gen_ai.tool.call.id"
GEN_AI_AGENT_ID = "gen_ai.agent.id"
ERROR_TYPE = "error.type"

OPERATION_EXECUTE_TOOL = "execute_tool"

INTERVENTION_TYPE = "agentguard.intervention.type"
INTERVENTION_ID = "agentguard.intervention.id"
TARGET_TYPE = "agentguard.target.type"
TARGET_ID = "agentguard.target.id"
KILL_SWITCH_ID = "agentguard.kill_switch.id"
KILLED_BY = "agentguard.killed_by"
KILLED_AT = "agentguard.killed_at"
REASON = "agentguard.reason"
AGENT_ID = "agentguard.agent.id"
RUN_ID = "agentguard.run.id"
MISSION_ID = "agentguard.mission.id"
INSTANCE_ID = "agentguard.instance.id"
ACTION = "agentguard.action"
ACTOR = "agentguard.actor"
VERSION = "agentguard.version"
ARGUMENTS = "agentguard.tool.arguments"
CHANGE_KIND = "agentguard.change.kind"
RAN_FOR_MS = "agentguard.call.ran_for_ms"
