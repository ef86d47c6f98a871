-- The row-lock transaction an ERP would run to reserve one unit of a hot SKU,
-- the baseline "How fast" in the README compares stockpool with:
--
--   createdb -h 127.0.0.1 -U postgres erpbench
--   psql -h 127.0.0.1 -U postgres -d erpbench -c "
--     CREATE TABLE stock (sku text PRIMARY KEY, free bigint NOT NULL);
--     INSERT INTO stock VALUES ('HOT', 1000000000);
--     CREATE TABLE reservations (id bigserial PRIMARY KEY, sku text NOT NULL,
--       qty bigint NOT NULL, at timestamptz NOT NULL DEFAULT now());"
--   pgbench -h 127.0.0.1 -U postgres -n -c 64 -j 2 -T 15 -f benches/erp_row_lock.sql erpbench
BEGIN;
UPDATE stock SET free = free - 1 WHERE sku = 'HOT' AND free >= 1;
INSERT INTO reservations (sku, qty) VALUES ('HOT', 1);
COMMIT;
