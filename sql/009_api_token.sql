-- Bearer tokens of the REST API (/api/v1/ on the admin port). Only a hash is kept: a token is
-- 32 random bytes, so a plain sha256 is as good as a slow hash and lets a request find its row.
CREATE TABLE autoprov.api_token (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- Logged with every write the token makes, so a plain word.
    name         text NOT NULL UNIQUE CHECK (name ~ '^[A-Za-z0-9._-]{1,64}$'),
    hash         bytea NOT NULL UNIQUE CHECK (length(hash) = 32),
    read_only    boolean NOT NULL DEFAULT false,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked      boolean NOT NULL DEFAULT false
);
