/*
 * protocol.h - the wire contract shared by mcpd, mcplocal and mcpctl.
 *
 * Route paths, header names, SSE frame names and protocol defaults live here
 * so that every program spells them the same way. See docs/protocol.md.
 */
#ifndef MCP_PROTOCOL_H
#define MCP_PROTOCOL_H

#define MCP_API_PREFIX "/api/v1"
#define MCP_ROUTE_LLMS "/api/v1/llms"
#define MCP_ROUTE_USAGE "/api/v1/usage"
#define MCP_ROUTE_REGISTER "/api/v1/llms/_provider-register"
#define MCP_ROUTE_STREAM "/api/v1/llms/_provider-stream"
#define MCP_ROUTE_HEARTBEAT "/api/v1/llms/_provider-heartbeat"
#define MCP_ROUTE_TASK_PREFIX "/api/v1/llms/_provider-task/"
#define MCP_ROUTE_RESULTS "/api/v1/llms/_provider-results"
/* What mcpd offers in its hello frame's "features". */
#define MCP_FEATURE_RESULT_STREAM "result-stream"
#define MCP_ROUTE_HEALTHZ "/healthz"
#define MCP_ROUTE_READYZ "/readyz"
#define MCP_ROUTE_METRICS "/metrics"
#define MCP_ROUTE_OPENAI_CHAT "/v1/chat/completions"
#define MCP_ROUTE_OPENAI_MODELS "/v1/models"
#define MCP_ROUTE_OPENAI_COMPLETIONS "/v1/completions"
#define MCP_ROUTE_OPENAI_EMBEDDINGS "/v1/embeddings"
#define MCP_ROUTE_OPENAI_RESPONSES "/v1/responses"
#define MCP_ROUTE_ANTHROPIC_MESSAGES "/v1/messages"

#define MCP_HEADER_SESSION "x-mcpctl-provider-session"

#define MCP_EVENT_HELLO "hello"
#define MCP_EVENT_TASK "task"
#define MCP_EVENT_CANCEL "cancel"
#define MCP_EVENT_ERROR "error"

#define MCP_TASK_INFER "infer"
#define MCP_TASK_WAKE "wake"

#define MCP_STATUS_ACTIVE "active"
#define MCP_STATUS_INACTIVE "inactive"
#define MCP_STATUS_HIBERNATING "hibernating"

#define MCP_KIND_VIRTUAL "virtual"
#define MCP_KIND_PUBLIC "public"

/* Protocol defaults, in milliseconds. */
#define MCP_DEFAULT_HEARTBEAT_INTERVAL_MS (30 * 1000)
#define MCP_DEFAULT_HEARTBEAT_TIMEOUT_MS (90 * 1000)
#define MCP_DEFAULT_GC_INTERVAL_MS (60 * 1000)
#define MCP_DEFAULT_INACTIVE_RETENTION_MS (4 * 3600 * 1000)
#define MCP_DEFAULT_PING_INTERVAL_MS (20 * 1000)

/* Llm names: 1-100 chars of [A-Za-z0-9._-], starting with an alphanumeric. */
#define MCP_NAME_MAX 100
#define MCP_NAME_BUF (MCP_NAME_MAX + 1)

/* Returns 1 when name is a valid Llm name, else 0. */
int mcp_name_valid(const char *name);

#endif
