-- Rule history and the channels' level-change logs.

-- Every PutRule and DeleteRule, for RuleHistory: who, when, the rule before
-- and after, and why. Append-only.
CREATE TABLE rule_history (
    id          INTEGER NOT NULL CONSTRAINT rule_history_pk PRIMARY KEY AUTOINCREMENT,
    at_ms       INTEGER NOT NULL,
    changed_by  TEXT    NOT NULL,
    comment     TEXT    NOT NULL,
    channel     TEXT    NOT NULL,
    -- '' is the channel default, as in rules.
    sku         TEXT    NOT NULL DEFAULT '',
    -- The rule as JSON; NULL before: there was none; NULL after: deleted.
    before_json TEXT CONSTRAINT rule_history_before_json CHECK (before_json IS NULL OR json_valid(before_json)),
    after_json  TEXT CONSTRAINT rule_history_after_json CHECK (after_json IS NULL OR json_valid(after_json))
);
CREATE INDEX rule_history_by_rule ON rule_history (channel, sku, id);

CREATE TRIGGER rule_history_no_update BEFORE UPDATE ON rule_history
BEGIN SELECT RAISE(ABORT, 'the rule history is append-only'); END;
CREATE TRIGGER rule_history_no_delete BEFORE DELETE ON rule_history
BEGIN SELECT RAISE(ABORT, 'the rule history is append-only'); END;

-- What each channel was told it can sell of each SKU, change by change.
-- seq grows per channel without gaps and survives restarts: a watcher that
-- reconnects with its last seq is sent what came after.
CREATE TABLE channel_events (
    channel   TEXT    NOT NULL,
    seq       INTEGER NOT NULL CONSTRAINT channel_events_seq_positive CHECK (seq > 0),
    sku       TEXT    NOT NULL,
    published INTEGER NOT NULL,
    atp       INTEGER NOT NULL,
    at_ms     INTEGER NOT NULL,
    CONSTRAINT channel_events_pk PRIMARY KEY (channel, seq)
);
-- The newest event per (channel, sku): what the channel was last told.
CREATE INDEX channel_events_by_sku ON channel_events (channel, sku, seq);
