-- ChannelStockUpdate.open (API.md "What a channel adapter needs on the
-- stream"): the units of the SKU in the channel's own open reservations,
-- stored with each level change so a resumed watch and a snapshot carry it.
-- Events written before this migration held no such figure: 0.
ALTER TABLE channel_events ADD COLUMN open BIGINT NOT NULL DEFAULT 0;
