-- The Odoo outbox: one row per reservation change Odoo must hear about,
-- written in the same transaction as the change itself.

CREATE TABLE outbox (
    -- Commit order (rows of one batch are inserted in the order the engine
    -- made the changes); a reservation's entries are pushed in this order.
    id                 BIGINT GENERATED ALWAYS AS IDENTITY CONSTRAINT outbox_pk PRIMARY KEY,
    created_at_ms      BIGINT NOT NULL,
    reservation_id     TEXT COLLATE "C" NOT NULL,
    channel            TEXT COLLATE "C" NOT NULL,
    order_id           TEXT COLLATE "C" NOT NULL,
    event              TEXT NOT NULL CONSTRAINT outbox_event
        CHECK (event IN ('confirmed', 'released', 'fulfilled')),
    -- What Odoo should hold after this entry, per warehouse and SKU.
    lines_json         JSONB NOT NULL CONSTRAINT outbox_lines_json
        CHECK (jsonb_typeof(lines_json) = 'array'),
    -- pending: waiting or being retried; pushed; dead: given up, see last_error.
    state              TEXT NOT NULL DEFAULT 'pending' CONSTRAINT outbox_state
        CHECK (state IN ('pending', 'pushed', 'dead')),
    attempts           INTEGER NOT NULL DEFAULT 0 CONSTRAINT outbox_attempts CHECK (attempts >= 0),
    last_error         TEXT NOT NULL DEFAULT '',
    next_attempt_at_ms BIGINT NOT NULL,
    updated_at_ms      BIGINT NOT NULL
);
-- The dispatcher's question: the oldest pending entry of each reservation.
CREATE INDEX outbox_pending ON outbox (state, reservation_id, id);
