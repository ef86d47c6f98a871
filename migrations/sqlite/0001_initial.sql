-- The embedded store's schema. It records what the engine decided, so that
-- memory can be rebuilt at start and after a failed commit; nothing here
-- decides allocation. Checks only restate what the domain already enforces,
-- so a row the engine would never write is refused instead of loaded later.
--
-- Codes (SKU, warehouse, channel, order id) are TEXT as validated by the
-- domain: they never contain ',' and are never empty.
--
-- No foreign keys: built-in channels and warehouses declared in the config
-- need not have a row here, and the store records what the engine decided
-- rather than checking it.

-- Stock locations. Their declared order is the default warehouse priority
-- and the index of a warehouse in a SKU's pools, so it must survive restarts.
CREATE TABLE warehouses (
    code     TEXT    NOT NULL CONSTRAINT warehouses_pk PRIMARY KEY,
    name     TEXT    NOT NULL,
    -- Declared order: max + 1 on first insert, kept when renamed.
    position INTEGER NOT NULL CONSTRAINT warehouses_position_unique UNIQUE
);

-- Channels. Their declared order is the order fences are laid in.
CREATE TABLE channels (
    code     TEXT    NOT NULL CONSTRAINT channels_pk PRIMARY KEY,
    name     TEXT    NOT NULL,
    -- Declared order: max + 1 on first insert, kept when renamed.
    position INTEGER NOT NULL CONSTRAINT channels_position_unique UNIQUE
);

-- Allocation rules: a channel's default and its per-SKU overrides. A NULL
-- field is unset and inherits (from the default, else the built-in value).
CREATE TABLE rules (
    channel       TEXT    NOT NULL,
    -- '' is the channel default. Not NULL: NULLs are distinct in a primary
    -- key, which would let a channel hold two defaults.
    sku           TEXT    NOT NULL DEFAULT '',
    -- Warehouse codes in priority order, comma-separated; '' inherits.
    warehouses    TEXT    NOT NULL DEFAULT '',
    fence         INTEGER CONSTRAINT rules_fence_not_negative CHECK (fence >= 0),
    share_percent INTEGER CONSTRAINT rules_share_percent_range CHECK (share_percent BETWEEN 1 AND 100),
    buffer        INTEGER CONSTRAINT rules_buffer_not_negative CHECK (buffer >= 0),
    max_published INTEGER CONSTRAINT rules_max_published_not_negative CHECK (max_published >= 0),
    min_published INTEGER CONSTRAINT rules_min_published_not_negative CHECK (min_published >= 0),
    -- When the rule was last put, for operators reading the table.
    updated_at_ms INTEGER NOT NULL,
    CONSTRAINT rules_pk PRIMARY KEY (channel, sku)
);

-- One SKU in one warehouse. Written as deltas, so a batch that commits after
-- an earlier one failed is still correct on its own. on_hand and reserved
-- have no range check: a count below reserved is a recorded shortfall, and
-- the engine, not the store, decides what is allowed.
CREATE TABLE pools (
    sku       TEXT    NOT NULL,
    warehouse TEXT    NOT NULL,
    on_hand   INTEGER NOT NULL,
    reserved  INTEGER NOT NULL,
    -- Number of changes applied to the pool (1 after its first): the
    -- compare-and-set token of SetStock, counted the same way as the engine.
    version   INTEGER NOT NULL CONSTRAINT pools_version_positive CHECK (version >= 1),
    CONSTRAINT pools_pk PRIMARY KEY (sku, warehouse)
) WITHOUT ROWID;

-- Every change to a pool, append-only: the audit trail of stock movements.
CREATE TABLE ledger (
    -- Ids only grow and are never reused, and with SQLite's single writer
    -- they are handed out in commit order: a reader paging by "after id"
    -- never misses or repeats a line.
    id             INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    at_ms          INTEGER NOT NULL,
    sku            TEXT    NOT NULL,
    warehouse      TEXT    NOT NULL,
    kind           TEXT    NOT NULL CONSTRAINT ledger_kind_known
        CHECK (kind IN ('reserve', 'release', 'expire', 'fulfill', 'restock', 'adjust', 'count')),
    on_hand_delta  INTEGER NOT NULL,
    reserved_delta INTEGER NOT NULL,
    -- Levels after the change as the engine saw them: the trail can be read
    -- without replaying it.
    on_hand_after  INTEGER NOT NULL,
    reserved_after INTEGER NOT NULL,
    -- The movement's or release's free-text reason.
    reason         TEXT    NOT NULL DEFAULT '',
    -- What caused it: channel/order_id, a movement, shipment or refund id.
    reference      TEXT    NOT NULL DEFAULT ''
);

-- The ledger of one SKU, in order.
CREATE INDEX ledger_by_sku ON ledger (sku, id);

CREATE TRIGGER ledger_no_update BEFORE UPDATE ON ledger
BEGIN
    SELECT RAISE(ABORT, 'the ledger is append-only: its lines cannot be changed');
END;

CREATE TRIGGER ledger_no_delete BEFORE DELETE ON ledger
BEGIN
    SELECT RAISE(ABORT, 'the ledger is append-only: its lines cannot be deleted');
END;

-- Reservations, open and closed: closed ones answer replayed Reserve,
-- Fulfill and Restock calls. The row is replaced whole on every change; its
-- nested parts are JSON because they are only ever read back whole.
CREATE TABLE reservations (
    channel          TEXT    NOT NULL,
    order_id         TEXT    NOT NULL,
    -- The id clients see; unique across channels.
    id               TEXT    NOT NULL CONSTRAINT reservations_id_unique UNIQUE,
    status           TEXT    NOT NULL CONSTRAINT reservations_status_known
        CHECK (status IN ('HELD', 'CONFIRMED', 'FULFILLED', 'RELEASED', 'EXPIRED')),
    created_at_ms    INTEGER NOT NULL,
    -- When a HELD reservation expires; 0 once confirmed or never held.
    expires_at_ms    INTEGER NOT NULL,
    -- [[sku, quantity], ...] as first requested, sorted by SKU: replays must match.
    lines_json       TEXT    NOT NULL CONSTRAINT reservations_lines_json CHECK (json_valid(lines_json)),
    -- [{sku, warehouse, quantity, fulfilled, released, restocked}, ...]
    allocations_json TEXT    NOT NULL CONSTRAINT reservations_allocations_json CHECK (json_valid(allocations_json)),
    -- Shipment ids already applied: Fulfill is idempotent on them.
    shipments_json   TEXT    NOT NULL CONSTRAINT reservations_shipments_json CHECK (json_valid(shipments_json)),
    -- Refunds already applied, with what each restocked: Restock replays them.
    refunds_json     TEXT    NOT NULL CONSTRAINT reservations_refunds_json CHECK (json_valid(refunds_json)),
    CONSTRAINT reservations_pk PRIMARY KEY (channel, order_id)
);

-- Applied AdjustStock/SetStock movement ids: those calls are idempotent on
-- them. A duplicate id fails the insert, and with it the whole commit.
CREATE TABLE movements (
    movement_id TEXT NOT NULL CONSTRAINT movements_pk PRIMARY KEY,
    -- The movement's parameters, so a reuse of the id with others is caught.
    fingerprint TEXT NOT NULL
) WITHOUT ROWID;
