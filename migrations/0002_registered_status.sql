-- The status a row was registered with (active or hibernating): a row that
-- went inactive when its stream closed comes back to it when the stream is
-- bound again, so a sleeping backend is still woken before its first call.
ALTER TABLE Llm ADD COLUMN registered_status TEXT NOT NULL DEFAULT 'active'
    CHECK (registered_status IN ('active', 'hibernating'));
