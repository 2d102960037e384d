-- Usage accounting: per UTC day ('YYYY-MM-DD'), caller's token owner and
-- Llm, the requests relayed, those that failed, and the prompt and
-- completion tokens the backends reported. mcpd adds to the counts in
-- batches every few seconds and at shutdown.
CREATE TABLE Usage (
    day               TEXT NOT NULL,
    owner             TEXT NOT NULL,
    llm               TEXT NOT NULL,
    requests          INTEGER NOT NULL DEFAULT 0,
    errors            INTEGER NOT NULL DEFAULT 0,
    prompt_tokens     INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (day, owner, llm)
) WITHOUT ROWID;
-- A token that is not an admin's reads its own owner's rows.
CREATE INDEX usage_owner_day ON Usage (owner, day);
