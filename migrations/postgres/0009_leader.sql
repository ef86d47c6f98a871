-- High availability: the lease that makes one of several `stockpool serve`
-- processes on this database the active one, and the fencing epoch every
-- commit checks (src/store/lease.rs explains the protocol and why a deposed
-- server can never commit after its successor took over).

-- One row. `epoch` is raised by every takeover and never goes down; the
-- holder renews `expires_at` (the database's clock) while it is active.
CREATE TABLE leader (
    id SMALLINT NOT NULL DEFAULT 1,
    -- 0: nobody ever held it.
    epoch BIGINT NOT NULL,
    -- Who holds it, for people: host, process id, gRPC address.
    holder TEXT NOT NULL,
    -- The holder's lease session (pg_backend_pid and its backend_start):
    -- once that session is gone (the process exited or was killed, its
    -- connection died), a standby takes over without waiting for the expiry.
    holder_pid INTEGER,
    holder_backend_start TIMESTAMPTZ,
    acquired_at TIMESTAMPTZ,
    renewed_at TIMESTAMPTZ,
    -- Past this, by the database's clock, a standby may take over.
    expires_at TIMESTAMPTZ NOT NULL,
    CONSTRAINT leader_pk PRIMARY KEY (id),
    CONSTRAINT leader_one_row CHECK (id = 1),
    CONSTRAINT leader_epoch_not_negative CHECK (epoch >= 0)
);

INSERT INTO leader (id, epoch, holder, expires_at) VALUES (1, 0, '', '-infinity');

-- The fencing step, the first statement of every commit's transaction: a
-- share lock on the leader row while it still holds `expected`, else the
-- transaction fails with SQLSTATE SPF01 (and writes nothing). A takeover's
-- UPDATE of the row conflicts with the share lock, so it waits for every
-- commit of the old epoch in flight, and every later one fails here.
CREATE FUNCTION stockpool_fence(expected BIGINT) RETURNS VOID
LANGUAGE plpgsql AS $$
DECLARE
    current_epoch BIGINT;
    current_holder TEXT;
BEGIN
    PERFORM 1 FROM leader WHERE id = 1 AND epoch = expected FOR SHARE;
    IF NOT FOUND THEN
        SELECT epoch, holder INTO current_epoch, current_holder FROM leader WHERE id = 1;
        RAISE EXCEPTION 'fenced: this server was active at epoch %, and epoch % is held by %',
            expected, current_epoch, current_holder
            USING ERRCODE = 'SPF01';
    END IF;
END
$$;
