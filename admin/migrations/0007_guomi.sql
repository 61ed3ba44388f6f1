-- 国密: the algorithm new admin audit records are chained with (`settings.algorithms.audit_chain`).
-- Records before the first switch are HMAC-SHA256; a switch is itself a chained record
-- (action `audit.chain-algorithm`), computed with the algorithm it switches to.
ALTER TABLE audit_head ADD COLUMN alg TEXT NOT NULL DEFAULT 'hmac-sha256';
