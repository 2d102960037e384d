-- Tokens that expire, admin tokens, and when each token was last used.
-- expires_at: NULL never expires. last_used_at: NULL never used; mcpd keeps
-- it in memory and writes it in batches, so it lags by a few seconds.
ALTER TABLE ApiToken ADD COLUMN expires_at INTEGER;
ALTER TABLE ApiToken ADD COLUMN last_used_at INTEGER;
ALTER TABLE ApiToken ADD COLUMN admin INTEGER NOT NULL DEFAULT 0 CHECK (admin IN (0, 1));
-- Tokens made before admin tokens existed: those of the owner "admin" (what
-- `make run` creates first, and what the README calls the admin token)
-- become admin tokens; every other one stays an ordinary token.
UPDATE ApiToken SET admin = 1 WHERE owner = 'admin';
