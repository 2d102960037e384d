-- Initial schema: virtual/public Llm rows, API tokens, provider sessions.
-- Timestamps are milliseconds since the Unix epoch (UTC), stamped by mcpd.

CREATE TABLE Llm (
    id                  TEXT PRIMARY KEY,
    name                TEXT NOT NULL UNIQUE,
    kind                TEXT NOT NULL CHECK (kind IN ('public', 'virtual')),
    status              TEXT NOT NULL CHECK (status IN ('active', 'inactive', 'hibernating')),
    type                TEXT NOT NULL,
    model               TEXT NOT NULL,
    tier                TEXT,
    description         TEXT,
    extra_config        TEXT NOT NULL DEFAULT '{}',
    pool_name           TEXT,
    owner               TEXT NOT NULL,
    provider_session_id TEXT,
    last_heartbeat_at   INTEGER,
    inactive_since      INTEGER,
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL
);
CREATE INDEX llm_kind_status ON Llm (kind, status);
CREATE INDEX llm_provider_session ON Llm (provider_session_id);

CREATE TABLE ApiToken (
    id         INTEGER PRIMARY KEY,
    hash       TEXT NOT NULL UNIQUE,
    owner      TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);

-- A provider session belongs to the token owner that created it.
CREATE TABLE ProviderSession (
    id           TEXT PRIMARY KEY,
    owner        TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL
);
