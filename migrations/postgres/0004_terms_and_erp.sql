-- Prices and customers on reservations (the ERP's books), and the same on
-- each Odoo outbox entry, so a push carries everything it writes.
--
-- Allocations need no column: their `shipped` and `delivered` counts (the
-- channel's Fulfill and the ERP's delivery, see DESIGN.md "Odoo is the
-- master of physical stock") live in allocations_json; rows written before
-- them read both as `fulfilled`.

ALTER TABLE reservations
    -- ISO 4217 code of the unit prices; '' when the channel gave none.
    ADD COLUMN currency TEXT COLLATE "C" NOT NULL DEFAULT ''
        CONSTRAINT reservations_currency_code CHECK (currency = '' OR currency ~ '^[A-Z]{3}$'),
    -- The channel's own customer or account id; '' for anonymous retail.
    ADD COLUMN customer_ref TEXT COLLATE "C" NOT NULL DEFAULT '',
    ADD COLUMN prices_include_tax BOOLEAN NOT NULL DEFAULT false,
    -- [[sku, "19.90"], ...] sorted by SKU: the price per unit of each priced
    -- line, as given. Part of the replay comparison, like lines_json.
    ADD COLUMN unit_prices_json JSONB NOT NULL DEFAULT '[]'
        CONSTRAINT reservations_unit_prices_json CHECK (jsonb_typeof(unit_prices_json) = 'array');

-- The reservation's terms when the entry was written:
-- {currency, customer_ref, prices_include_tax, unit_prices}; '{}': none.
ALTER TABLE outbox
    ADD COLUMN terms_json JSONB NOT NULL DEFAULT '{}'
        CONSTRAINT outbox_terms_json CHECK (jsonb_typeof(terms_json) = 'object');
