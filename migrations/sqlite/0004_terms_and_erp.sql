-- Prices and customers on reservations (the ERP's books), and the same on
-- each Odoo outbox entry, so a push carries everything it writes.
--
-- Allocations need no column: their `shipped` and `delivered` counts (the
-- channel's Fulfill and the ERP's delivery, see DESIGN.md "Odoo is the
-- master of physical stock") live in allocations_json; rows written before
-- them read both as `fulfilled`.

-- ISO 4217 code of the unit prices; '' when the channel gave none.
ALTER TABLE reservations ADD COLUMN currency TEXT NOT NULL DEFAULT ''
    CONSTRAINT reservations_currency_code CHECK (currency = '' OR length(currency) = 3);
-- The channel's own customer or account id; '' for anonymous retail.
ALTER TABLE reservations ADD COLUMN customer_ref TEXT NOT NULL DEFAULT '';
-- 1 when the unit prices include tax.
ALTER TABLE reservations ADD COLUMN prices_include_tax INTEGER NOT NULL DEFAULT 0
    CONSTRAINT reservations_prices_include_tax_bool CHECK (prices_include_tax IN (0, 1));
-- [[sku, "19.90"], ...] sorted by SKU: the price per unit of each priced
-- line, as given. Part of the replay comparison, like lines_json.
ALTER TABLE reservations ADD COLUMN unit_prices_json TEXT NOT NULL DEFAULT '[]'
    CONSTRAINT reservations_unit_prices_json CHECK (json_valid(unit_prices_json));

-- The reservation's terms when the entry was written:
-- {currency, customer_ref, prices_include_tax, unit_prices}; '{}': none.
ALTER TABLE outbox ADD COLUMN terms_json TEXT NOT NULL DEFAULT '{}'
    CONSTRAINT outbox_terms_json CHECK (json_valid(terms_json));
