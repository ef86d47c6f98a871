-- The production store's schema: the same tables as the embedded SQLite
-- store (migrations/sqlite), in Postgres types. It records what the engine
-- decided, so that memory can be rebuilt at start and after a failed commit;
-- nothing here decides allocation. Checks only restate what the domain
-- already enforces, so a row the engine would never write is refused instead
-- of loaded later.
--
-- Codes (SKU, warehouse, channel, order id) are TEXT as validated by the
-- domain: ASCII, never containing ',' and never empty. They use the "C"
-- collation: byte order, the order Rust's String and SQLite sort in, so that
-- every ORDER BY reads rows in the same order on both stores whatever the
-- database's default collation is, and comparisons in the primary keys are
-- plain byte compares.
--
-- No foreign keys: built-in channels and warehouses declared in the config
-- need not have a row here, and the store records what the engine decided
-- rather than checking it.

-- Stock locations. Their declared order is the default warehouse priority
-- and the index of a warehouse in a SKU's pools, so it must survive restarts.
CREATE TABLE warehouses (
    code     TEXT COLLATE "C" NOT NULL CONSTRAINT warehouses_pk PRIMARY KEY,
    name     TEXT   NOT NULL,
    -- Declared order: max + 1 on first insert, kept when renamed.
    position BIGINT NOT NULL CONSTRAINT warehouses_position_unique UNIQUE
);

-- Channels. Their declared order is the order fences are laid in.
CREATE TABLE channels (
    code     TEXT COLLATE "C" NOT NULL CONSTRAINT channels_pk PRIMARY KEY,
    name     TEXT   NOT NULL,
    -- Declared order: max + 1 on first insert, kept when renamed.
    position BIGINT NOT NULL CONSTRAINT channels_position_unique UNIQUE
);

-- Allocation rules: a channel's default and its per-SKU overrides. A NULL
-- field is unset and inherits (from the default, else the built-in value).
CREATE TABLE rules (
    channel       TEXT COLLATE "C" NOT NULL,
    -- '' is the channel default. Not NULL: NULLs are distinct in a primary
    -- key, which would let a channel hold two defaults.
    sku           TEXT COLLATE "C" NOT NULL DEFAULT '',
    -- Warehouse codes in priority order, comma-separated; '' inherits.
    warehouses    TEXT   NOT NULL DEFAULT '',
    fence         BIGINT CONSTRAINT rules_fence_not_negative CHECK (fence >= 0),
    share_percent BIGINT CONSTRAINT rules_share_percent_range CHECK (share_percent BETWEEN 1 AND 100),
    buffer        BIGINT CONSTRAINT rules_buffer_not_negative CHECK (buffer >= 0),
    max_published BIGINT CONSTRAINT rules_max_published_not_negative CHECK (max_published >= 0),
    min_published BIGINT CONSTRAINT rules_min_published_not_negative CHECK (min_published >= 0),
    -- When the rule was last put, for operators reading the table.
    updated_at_ms BIGINT NOT NULL,
    CONSTRAINT rules_pk PRIMARY KEY (channel, sku)
);

-- One SKU in one warehouse. Written as deltas, so a batch that commits after
-- an earlier one failed is still correct on its own. on_hand and reserved
-- have no range check: a count below reserved is a recorded shortfall, and
-- the engine, not the store, decides what is allowed.
CREATE TABLE pools (
    sku       TEXT COLLATE "C" NOT NULL,
    warehouse TEXT COLLATE "C" NOT NULL,
    on_hand   BIGINT NOT NULL,
    reserved  BIGINT NOT NULL,
    -- Number of changes applied to the pool (1 after its first): the
    -- compare-and-set token of SetStock, counted the same way as the engine.
    version   BIGINT NOT NULL CONSTRAINT pools_version_positive CHECK (version >= 1),
    CONSTRAINT pools_pk PRIMARY KEY (sku, warehouse)
);

-- Every change to a pool, append-only: the audit trail of stock movements.
CREATE TABLE ledger (
    -- Ids only grow and are never reused. Commits take one transaction-level
    -- advisory lock before writing, so ids are handed out in commit order
    -- even with a second writer on the database: a reader paging by
    -- "after id" never misses or repeats a line.
    id             BIGINT GENERATED ALWAYS AS IDENTITY CONSTRAINT ledger_pk PRIMARY KEY,
    at_ms          BIGINT NOT NULL,
    sku            TEXT COLLATE "C" NOT NULL,
    warehouse      TEXT COLLATE "C" NOT NULL,
    kind           TEXT   NOT NULL CONSTRAINT ledger_kind_known
        CHECK (kind IN ('reserve', 'release', 'expire', 'fulfill', 'restock', 'adjust', 'count')),
    on_hand_delta  BIGINT NOT NULL,
    reserved_delta BIGINT NOT NULL,
    -- Levels after the change as the engine saw them: the trail can be read
    -- without replaying it.
    on_hand_after  BIGINT NOT NULL,
    reserved_after BIGINT NOT NULL,
    -- The movement's or release's free-text reason.
    reason         TEXT   NOT NULL DEFAULT '',
    -- What caused it: channel/order_id, a movement, shipment or refund id.
    reference      TEXT   NOT NULL DEFAULT ''
);

-- The ledger of one SKU, in order.
CREATE INDEX ledger_by_sku ON ledger (sku, id);

-- Lines are never changed or removed, not even by an operator at a psql
-- prompt: the trail is only worth something if it is complete.
CREATE FUNCTION ledger_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the ledger is append-only: its lines cannot be %',
        CASE TG_OP WHEN 'UPDATE' THEN 'changed' ELSE 'deleted' END
        USING ERRCODE = 'restrict_violation';
END;
$$;

CREATE TRIGGER ledger_no_update BEFORE UPDATE ON ledger
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER ledger_no_delete BEFORE DELETE ON ledger
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
-- TRUNCATE skips row triggers; refuse it as a whole.
CREATE TRIGGER ledger_no_truncate BEFORE TRUNCATE ON ledger
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();

-- Reservations, open and closed: closed ones answer replayed Reserve,
-- Fulfill and Restock calls. The row is replaced whole on every change; its
-- nested parts are JSONB because they are only ever read back whole.
CREATE TABLE reservations (
    channel          TEXT COLLATE "C" NOT NULL,
    order_id         TEXT COLLATE "C" NOT NULL,
    -- The id clients see; unique across channels.
    id               TEXT   NOT NULL CONSTRAINT reservations_id_unique UNIQUE,
    status           TEXT   NOT NULL CONSTRAINT reservations_status_known
        CHECK (status IN ('HELD', 'CONFIRMED', 'FULFILLED', 'RELEASED', 'EXPIRED')),
    created_at_ms    BIGINT NOT NULL,
    -- When a HELD reservation expires; 0 once confirmed or never held.
    expires_at_ms    BIGINT NOT NULL,
    -- [[sku, quantity], ...] as first requested, sorted by SKU: replays must match.
    lines_json       JSONB  NOT NULL CONSTRAINT reservations_lines_json
        CHECK (jsonb_typeof(lines_json) = 'array'),
    -- [{sku, warehouse, quantity, fulfilled, released, restocked}, ...]
    allocations_json JSONB  NOT NULL CONSTRAINT reservations_allocations_json
        CHECK (jsonb_typeof(allocations_json) = 'array'),
    -- Shipment ids already applied: Fulfill is idempotent on them.
    shipments_json   JSONB  NOT NULL CONSTRAINT reservations_shipments_json
        CHECK (jsonb_typeof(shipments_json) = 'array'),
    -- Refunds already applied, with what each restocked: Restock replays them.
    refunds_json     JSONB  NOT NULL CONSTRAINT reservations_refunds_json
        CHECK (jsonb_typeof(refunds_json) = 'array'),
    CONSTRAINT reservations_pk PRIMARY KEY (channel, order_id)
);

-- Applied AdjustStock/SetStock movement ids: those calls are idempotent on
-- them. A duplicate id fails the insert, and with it the whole commit.
CREATE TABLE movements (
    movement_id TEXT COLLATE "C" NOT NULL CONSTRAINT movements_pk PRIMARY KEY,
    -- The movement's parameters, so a reuse of the id with others is caught.
    fingerprint TEXT NOT NULL
);

-- Postgres only: one row per committed batch, written first in its
-- transaction. When the connection is lost during COMMIT the client cannot
-- know whether the batch committed; it asks this table (from another
-- connection) instead of guessing, because a batch retried after it did
-- commit would apply its pool deltas twice. Rows are only read seconds after
-- they are written, so old ones are pruned now and then.
CREATE TABLE commits (
    id           UUID        NOT NULL CONSTRAINT commits_pk PRIMARY KEY,
    committed_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX commits_by_age ON commits (committed_at);
