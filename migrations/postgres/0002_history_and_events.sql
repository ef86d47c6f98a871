-- Rule history and the channels' level-change logs.

-- Every PutRule and DeleteRule, for RuleHistory: who, when, the rule before
-- and after, and why. Append-only.
CREATE TABLE rule_history (
    -- In commit order, like ledger ids (see there).
    id          BIGINT GENERATED ALWAYS AS IDENTITY CONSTRAINT rule_history_pk PRIMARY KEY,
    at_ms       BIGINT NOT NULL,
    changed_by  TEXT   NOT NULL,
    comment     TEXT   NOT NULL,
    channel     TEXT COLLATE "C" NOT NULL,
    -- '' is the channel default, as in rules.
    sku         TEXT COLLATE "C" NOT NULL DEFAULT '',
    -- The rule as JSON; NULL before: there was none; NULL after: deleted.
    before_json JSONB CONSTRAINT rule_history_before_json
        CHECK (before_json IS NULL OR jsonb_typeof(before_json) = 'object'),
    after_json  JSONB CONSTRAINT rule_history_after_json
        CHECK (after_json IS NULL OR jsonb_typeof(after_json) = 'object')
);
CREATE INDEX rule_history_by_rule ON rule_history (channel, sku, id);

CREATE FUNCTION rule_history_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the rule history is append-only'
        USING ERRCODE = 'restrict_violation';
END;
$$;

CREATE TRIGGER rule_history_no_update BEFORE UPDATE ON rule_history
    FOR EACH ROW EXECUTE FUNCTION rule_history_refuse_change();
CREATE TRIGGER rule_history_no_delete BEFORE DELETE ON rule_history
    FOR EACH ROW EXECUTE FUNCTION rule_history_refuse_change();
CREATE TRIGGER rule_history_no_truncate BEFORE TRUNCATE ON rule_history
    FOR EACH STATEMENT EXECUTE FUNCTION rule_history_refuse_change();

-- What each channel was told it can sell of each SKU, change by change.
-- seq grows per channel without gaps and survives restarts: a watcher that
-- reconnects with its last seq is sent what came after.
CREATE TABLE channel_events (
    channel   TEXT COLLATE "C" NOT NULL,
    seq       BIGINT NOT NULL CONSTRAINT channel_events_seq_positive CHECK (seq > 0),
    sku       TEXT COLLATE "C" NOT NULL,
    published BIGINT NOT NULL,
    atp       BIGINT NOT NULL,
    at_ms     BIGINT NOT NULL,
    CONSTRAINT channel_events_pk PRIMARY KEY (channel, seq)
);
-- The newest event per (channel, sku): what the channel was last told.
CREATE INDEX channel_events_by_sku ON channel_events (channel, sku, seq);
