-- slmflow reference data: small online shop for the support_triage job.
-- Reference date: 2026-11-24. Load with sqlite3.executescript().
PRAGMA foreign_keys = ON;

DROP TABLE IF EXISTS changes;
DROP TABLE IF EXISTS cases;
DROP TABLE IF EXISTS payments;
DROP TABLE IF EXISTS orders;
DROP TABLE IF EXISTS refund_policy;
DROP TABLE IF EXISTS customers;

CREATE TABLE customers (
    id      TEXT PRIMARY KEY,
    name    TEXT NOT NULL,
    email   TEXT NOT NULL UNIQUE,
    segment TEXT NOT NULL CHECK (segment IN ('consumer', 'business', 'vip'))
);

CREATE TABLE refund_policy (
    category        TEXT PRIMARY KEY,
    window_days     INTEGER NOT NULL,
    requires_return INTEGER NOT NULL CHECK (requires_return IN (0, 1)),
    notes           TEXT
);

CREATE TABLE orders (
    id           TEXT PRIMARY KEY,
    customer_id  TEXT NOT NULL REFERENCES customers (id),
    placed_on    TEXT NOT NULL,  -- ISO date
    status       TEXT NOT NULL CHECK (status IN ('processing', 'shipped', 'delivered', 'cancelled', 'returned')),
    total        REAL NOT NULL,
    item         TEXT NOT NULL,
    delivered_on TEXT,           -- ISO date, NULL if not delivered
    category     TEXT NOT NULL REFERENCES refund_policy (category)
);

CREATE TABLE payments (
    id         TEXT PRIMARY KEY,
    order_id   TEXT NOT NULL REFERENCES orders (id),
    amount     REAL NOT NULL,
    method     TEXT NOT NULL CHECK (method IN ('card', 'paypal', 'gift_card')),
    card_last4 TEXT,
    status     TEXT NOT NULL CHECK (status IN ('captured', 'refunded', 'failed')),
    created_at TEXT NOT NULL
);

CREATE TABLE cases (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    order_id       TEXT,
    customer_email TEXT,
    intent         TEXT NOT NULL,
    summary        TEXT NOT NULL,
    request_key    TEXT UNIQUE,  -- the call that opened it (slmflow's ToolContext.key): opened once
    created_at     TEXT DEFAULT CURRENT_TIMESTAMP
);

-- Order changes made by the order_change job (cancellations, returns), each once per approved call.
CREATE TABLE changes (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    order_id    TEXT NOT NULL REFERENCES orders (id),
    kind        TEXT NOT NULL CHECK (kind IN ('cancel', 'return')),
    reason      TEXT NOT NULL,
    request_key TEXT NOT NULL UNIQUE,
    created_at  TEXT DEFAULT CURRENT_TIMESTAMP
);

CREATE INDEX idx_orders_customer ON orders (customer_id);
CREATE INDEX idx_payments_order ON payments (order_id);

INSERT INTO customers (id, name, email, segment) VALUES
    ('C001', 'Maria Lopez', 'maria.lopez@example.com', 'consumer'),
    ('C002', 'James Carter', 'james.carter@example.com', 'consumer'),
    ('C003', 'Aisha Khan', 'aisha.khan@example.com', 'vip'),
    ('C004', 'Tom Becker', 'tom.becker@example.com', 'business'),
    ('C005', 'Lena Novak', 'lena.novak@example.com', 'consumer'),
    ('C006', 'David Osei', 'david.osei@example.com', 'consumer'),
    ('C007', 'Sophie Martin', 'sophie.martin@example.com', 'vip'),
    ('C008', 'Raj Patel', 'raj.patel@example.com', 'business'),
    ('C009', 'Emily Chen', 'emily.chen@example.com', 'consumer'),
    ('C010', 'Lukas Weber', 'lukas.weber@example.com', 'consumer'),
    ('C011', 'Grace Kim', 'grace.kim@example.com', 'consumer'),
    ('C012', 'Omar Haddad', 'omar.haddad@example.com', 'business'),
    ('C013', 'Hannah Schmidt', 'hannah.schmidt@example.com', 'consumer'),
    ('C014', 'Carlos Mendes', 'carlos.mendes@example.com', 'vip'),
    ('C015', 'Nina Ivanova', 'nina.ivanova@example.com', 'consumer');

INSERT INTO refund_policy (category, window_days, requires_return, notes) VALUES
    ('standard', 30, 1, 'Unused items in original packaging; refund to original payment method.'),
    ('electronics', 14, 1, 'Must be returned with all accessories; opened items may incur 10% restocking fee.'),
    ('clothing', 45, 1, 'Unworn with tags attached; free exchanges for size.'),
    ('final_sale', 0, 0, 'Clearance items are not refundable unless damaged or wrong item.'),
    ('damaged', 60, 0, 'Items arriving damaged or defective; counted from delivery, photo evidence required, no return needed.'),
    ('digital', 0, 0, 'Gift cards and digital goods are non-refundable once delivered.');

INSERT INTO orders (id, customer_id, placed_on, status, total, item, delivered_on, category) VALUES
    ('ORD-10001', 'C001', '2026-01-12', 'delivered', 32.00, 'Scented candle trio', '2026-01-16', 'standard'),
    ('ORD-10002', 'C010', '2026-09-04', 'delivered', 119.00, 'Leather ankle boots (43)', '2026-09-10', 'clothing'),
    ('ORD-10003', 'C014', '2026-03-15', 'delivered', 54.99, 'Cordless electric kettle', '2026-03-20', 'electronics'),
    ('ORD-10004', 'C002', '2026-02-20', 'delivered', 22.50, 'Bamboo cutting board', '2026-02-25', 'standard'),
    ('ORD-10005', 'C002', '2026-08-08', 'delivered', 89.90, 'Stoneware dinner set (12 pcs)', '2026-08-14', 'standard'),
    ('ORD-10006', 'C003', '2026-09-28', 'delivered', 39.99, 'Ceramic planter (large)', '2026-10-05', 'standard'),
    ('ORD-10007', 'C005', '2026-04-02', 'delivered', 15.00, 'Digital gift card', '2026-04-02', 'digital'),
    ('ORD-10008', 'C009', '2026-10-28', 'delivered', 45.00, 'Running jacket (M)', '2026-11-02', 'clothing'),
    ('ORD-10009', 'C006', '2026-06-10', 'returned', 74.95, 'Yoga mat + strap', '2026-06-15', 'standard'),
    ('ORD-10010', 'C004', '2026-09-24', 'delivered', 318.00, 'Ergonomic office chair', '2026-09-30', 'standard'),
    ('ORD-10011', 'C007', '2026-07-01', 'cancelled', 42.00, 'Silk pillowcase', NULL, 'clothing'),
    ('ORD-10012', 'C001', '2026-11-05', 'delivered', 59.99, 'Linen throw blanket', '2026-11-10', 'standard'),
    ('ORD-10013', 'C005', '2026-10-20', 'delivered', 27.80, 'Herbal tea sampler', '2026-10-30', 'standard'),
    ('ORD-10014', 'C013', '2026-11-15', 'delivered', 34.95, 'Hand-blown glass vase', '2026-11-20', 'standard'),
    ('ORD-10015', 'C008', '2026-05-11', 'delivered', 560.00, 'Standing desk frame', '2026-05-15', 'standard'),
    ('ORD-10016', 'C014', '2026-11-12', 'delivered', 28.00, 'Espresso cups, set of 4 (blue)', '2026-11-17', 'standard'),
    ('ORD-10017', 'C011', '2026-10-01', 'delivered', 19.99, 'Phone case', '2026-10-06', 'electronics'),
    ('ORD-10018', 'C015', '2026-11-06', 'delivered', 96.50, 'Desk organizer + LED lamp bundle', '2026-11-12', 'standard'),
    ('ORD-10019', 'C006', '2026-11-16', 'delivered', 129.00, 'Noise-cancelling headphones', '2026-11-21', 'electronics'),
    ('ORD-10020', 'C005', '2026-11-08', 'delivered', 79.90, 'Cast iron skillet', '2026-11-13', 'standard'),
    ('ORD-10021', 'C007', '2026-11-10', 'delivered', 24.50, 'Clearance wool scarf', '2026-11-15', 'final_sale'),
    ('ORD-10022', 'C012', '2026-08-19', 'cancelled', 145.00, 'Printer toner (4-pack)', NULL, 'electronics'),
    ('ORD-10023', 'C012', '2026-11-11', 'delivered', 38.40, 'A3 printer paper (5 reams)', '2026-11-16', 'standard'),
    ('ORD-10024', 'C011', '2026-10-01', 'delivered', 16.00, 'Coffee subscription - monthly', '2026-10-04', 'standard'),
    ('ORD-10025', 'C002', '2026-10-22', 'delivered', 67.25, 'Garden hose reel', '2026-11-04', 'standard'),
    ('ORD-10026', 'C008', '2026-11-02', 'delivered', 249.00, 'Dual monitor arm', '2026-11-07', 'electronics'),
    ('ORD-10027', 'C003', '2026-11-01', 'shipped', 112.00, 'Cashmere beanie & gloves set', NULL, 'clothing'),
    ('ORD-10028', 'C009', '2026-07-14', 'delivered', 58.00, 'Trail running shoes', '2026-07-18', 'clothing'),
    ('ORD-10029', 'C009', '2026-11-03', 'shipped', 23.99, 'Reusable water bottle', NULL, 'standard'),
    ('ORD-10030', 'C008', '2026-11-13', 'delivered', 149.99, 'Bluetooth speaker', '2026-11-18', 'electronics'),
    ('ORD-10031', 'C001', '2026-11-17', 'shipped', 44.90, 'Cotton bath towels (set of 2)', NULL, 'standard'),
    ('ORD-10032', 'C015', '2026-11-14', 'delivered', 18.75, 'Notebook set (A5)', '2026-11-19', 'standard'),
    ('ORD-10033', 'C010', '2026-11-19', 'shipped', 89.00, 'Wireless mouse & keyboard', NULL, 'electronics'),
    ('ORD-10034', 'C013', '2026-11-21', 'processing', 52.30, 'Kids'' watercolor set', NULL, 'standard'),
    ('ORD-10035', 'C012', '2026-11-22', 'processing', 189.00, 'Ergonomic footrest (x3)', NULL, 'standard'),
    ('ORD-10036', 'C011', '2026-11-23', 'processing', 74.00, 'Weighted blanket (7 kg)', NULL, 'standard'),
    ('ORD-10037', 'C006', '2026-11-22', 'processing', 36.50, 'Plant mister & soil kit', NULL, 'standard'),
    ('ORD-10038', 'C004', '2026-11-20', 'processing', 212.40, 'Conference speakerphone', NULL, 'electronics'),
    ('ORD-10039', 'C015', '2026-10-10', 'delivered', 49.00, 'Ceramic mug set (final sale)', '2026-10-15', 'final_sale'),
    ('ORD-10040', 'C007', '2026-11-23', 'processing', 64.50, 'Silk sleep mask & pillowcase', NULL, 'clothing'),
    ('ORD-10041', 'C014', '2026-10-12', 'delivered', 139.00, 'Smartwatch charger + strap', '2026-10-17', 'electronics'),
    ('ORD-10042', 'C003', '2026-11-18', 'delivered', 210.00, 'Wool area rug (160x230)', '2026-11-22', 'standard');

-- Notable payments: double charges on ORD-10020, ORD-10026 (card twice) and ORD-10032 (paypal + card);
-- failed payments on ORD-10038 (twice), ORD-10040, and ORD-10029 (paypal failed, then card captured).
INSERT INTO payments (id, order_id, amount, method, card_last4, status, created_at) VALUES
    ('PAY-00001', 'ORD-10001', 32.00, 'gift_card', NULL, 'captured', '2026-01-12 10:01:00'),
    ('PAY-00002', 'ORD-10002', 119.00, 'card', '8830', 'captured', '2026-09-04 10:02:00'),
    ('PAY-00003', 'ORD-10003', 54.99, 'card', '7716', 'captured', '2026-03-15 10:03:00'),
    ('PAY-00004', 'ORD-10004', 22.50, 'card', '1881', 'captured', '2026-02-20 10:04:00'),
    ('PAY-00005', 'ORD-10005', 89.90, 'card', '1881', 'captured', '2026-08-08 10:05:00'),
    ('PAY-00006', 'ORD-10006', 39.99, 'card', '7305', 'captured', '2026-09-28 10:06:00'),
    ('PAY-00007', 'ORD-10007', 15.00, 'card', '3398', 'captured', '2026-04-02 10:07:00'),
    ('PAY-00008', 'ORD-10008', 45.00, 'card', '2256', 'captured', '2026-10-28 10:08:00'),
    ('PAY-00009', 'ORD-10009', 74.95, 'card', '4417', 'refunded', '2026-06-10 10:09:00'),
    ('PAY-00010', 'ORD-10010', 318.00, 'card', '5120', 'captured', '2026-09-24 10:10:00'),
    ('PAY-00011', 'ORD-10011', 42.00, 'card', '9021', 'refunded', '2026-07-01 10:11:00'),
    ('PAY-00012', 'ORD-10012', 59.99, 'card', '4242', 'captured', '2026-11-05 10:12:00'),
    ('PAY-00013', 'ORD-10013', 27.80, 'card', '3398', 'captured', '2026-10-20 10:13:00'),
    ('PAY-00014', 'ORD-10014', 34.95, 'card', '0392', 'captured', '2026-11-15 10:14:00'),
    ('PAY-00015', 'ORD-10015', 560.00, 'card', '6604', 'captured', '2026-05-11 10:15:00'),
    ('PAY-00016', 'ORD-10016', 28.00, 'card', '7716', 'captured', '2026-11-12 10:16:00'),
    ('PAY-00017', 'ORD-10017', 19.99, 'paypal', NULL, 'captured', '2026-10-01 10:17:00'),
    ('PAY-00018', 'ORD-10018', 96.50, 'card', '6145', 'captured', '2026-11-06 10:18:00'),
    ('PAY-00019', 'ORD-10019', 129.00, 'card', '4417', 'captured', '2026-11-16 10:19:00'),
    ('PAY-00020', 'ORD-10020', 79.90, 'card', '3398', 'captured', '2026-11-08 14:20:31'),
    ('PAY-00021', 'ORD-10020', 79.90, 'card', '3398', 'captured', '2026-11-08 14:20:58'),
    ('PAY-00022', 'ORD-10021', 24.50, 'card', '9021', 'captured', '2026-11-10 10:21:00'),
    ('PAY-00023', 'ORD-10022', 145.00, 'card', '5789', 'refunded', '2026-08-19 10:22:00'),
    ('PAY-00024', 'ORD-10023', 38.40, 'card', '5789', 'captured', '2026-11-11 10:23:00'),
    ('PAY-00025', 'ORD-10024', 16.00, 'gift_card', NULL, 'captured', '2026-10-01 10:24:00'),
    ('PAY-00026', 'ORD-10025', 67.25, 'card', '1881', 'captured', '2026-10-22 10:25:00'),
    ('PAY-00027', 'ORD-10026', 249.00, 'card', '6604', 'captured', '2026-11-02 14:20:31'),
    ('PAY-00028', 'ORD-10026', 249.00, 'card', '6604', 'captured', '2026-11-02 14:20:58'),
    ('PAY-00029', 'ORD-10027', 112.00, 'card', '7305', 'captured', '2026-11-01 10:27:00'),
    ('PAY-00030', 'ORD-10028', 58.00, 'paypal', NULL, 'captured', '2026-07-14 10:28:00'),
    ('PAY-00031', 'ORD-10029', 23.99, 'paypal', NULL, 'failed', '2026-11-03 09:40:12'),
    ('PAY-00032', 'ORD-10029', 23.99, 'card', '2256', 'captured', '2026-11-03 09:43:55'),
    ('PAY-00033', 'ORD-10030', 149.99, 'card', '6604', 'captured', '2026-11-13 10:30:00'),
    ('PAY-00034', 'ORD-10031', 44.90, 'card', '4242', 'captured', '2026-11-17 10:31:00'),
    ('PAY-00035', 'ORD-10032', 18.75, 'paypal', NULL, 'captured', '2026-11-14 19:01:09'),
    ('PAY-00036', 'ORD-10032', 18.75, 'card', '6145', 'captured', '2026-11-14 19:03:40'),
    ('PAY-00037', 'ORD-10033', 89.00, 'card', '8830', 'captured', '2026-11-19 10:33:00'),
    ('PAY-00038', 'ORD-10034', 52.30, 'card', '0392', 'captured', '2026-11-21 10:34:00'),
    ('PAY-00039', 'ORD-10035', 189.00, 'card', '5789', 'captured', '2026-11-22 10:35:00'),
    ('PAY-00040', 'ORD-10036', 74.00, 'card', '1467', 'captured', '2026-11-23 10:36:00'),
    ('PAY-00041', 'ORD-10037', 36.50, 'card', '4417', 'captured', '2026-11-22 10:37:00'),
    ('PAY-00042', 'ORD-10038', 212.40, 'card', '5120', 'failed', '2026-11-20 18:02:11'),
    ('PAY-00043', 'ORD-10038', 212.40, 'card', '5120', 'failed', '2026-11-20 18:05:47'),
    ('PAY-00044', 'ORD-10039', 49.00, 'card', '6145', 'captured', '2026-10-10 10:39:00'),
    ('PAY-00045', 'ORD-10040', 64.50, 'card', '9021', 'failed', '2026-11-23 21:14:03'),
    ('PAY-00046', 'ORD-10041', 139.00, 'card', '7716', 'captured', '2026-10-12 10:41:00'),
    ('PAY-00047', 'ORD-10042', 210.00, 'paypal', NULL, 'captured', '2026-11-18 10:42:00');
