-- Pools: rows with the same pool_name serve one model together. Routing a
-- call that names a pool reads its members by pool_name.
CREATE INDEX llm_pool_name ON Llm (pool_name);
