//! Builders shared by the domain's unit and property tests: codes that are
//! known to be valid, catalogs in a given declared order, rules and pools.

use super::{
    Allocation, Catalog, Channel, ChannelCode, OrderId, Pool, Reservation, Rule, Sku, Status,
    Warehouse, WarehouseCode,
};

pub fn sku(code: &str) -> Sku {
    Sku::parse(code).expect("test SKU is valid")
}

pub fn wh(code: &str) -> WarehouseCode {
    WarehouseCode::parse(code).expect("test warehouse is valid")
}

pub fn ch(code: &str) -> ChannelCode {
    ChannelCode::parse(code).expect("test channel is valid")
}

pub fn order(code: &str) -> OrderId {
    OrderId::parse(code).expect("test order id is valid")
}

pub fn whs(codes: &[&str]) -> Vec<WarehouseCode> {
    codes.iter().map(|c| wh(c)).collect()
}

/// A catalog declaring these warehouses and channels in this order, no rules.
pub fn catalog(warehouses: &[&str], channels: &[&str]) -> Catalog {
    let mut catalog = Catalog::default();
    for w in warehouses {
        catalog.upsert_warehouse(Warehouse {
            code: wh(w),
            name: w.to_string(),
        });
    }
    for c in channels {
        catalog.upsert_channel(Channel {
            code: ch(c),
            name: c.to_string(),
        });
    }
    catalog
}

/// A channel default rule with every field unset.
pub fn default_rule(channel: &str) -> Rule {
    Rule {
        channel: Some(ch(channel)),
        ..Rule::default()
    }
}

/// A SKU rule with every field unset.
pub fn sku_rule(channel: &str, code: &str) -> Rule {
    Rule {
        channel: Some(ch(channel)),
        sku: Some(sku(code)),
        ..Rule::default()
    }
}

/// Checks and stores each rule, failing the test on a rule the catalog refuses.
pub fn with_rules(mut catalog: Catalog, rules: Vec<Rule>) -> Catalog {
    for rule in rules {
        catalog.check_rule(&rule).expect("test rule is valid");
        catalog.put_rule(rule);
    }
    catalog
}

/// Pools with these units on hand and nothing reserved, by warehouse index.
pub fn pools(on_hand: &[i64]) -> Vec<Pool> {
    on_hand
        .iter()
        .map(|&on_hand| Pool {
            on_hand,
            reserved: 0,
            version: 0,
        })
        .collect()
}

/// A reservation of 3 × SKU-A from WH-EAST and 2 × SKU-B split over WH-EAST
/// and WH-WEST, nothing shipped or released, in `status`.
pub fn reservation_with(status: Status) -> Reservation {
    let alloc = |s: &str, w: &str, quantity: i64| Allocation::new(sku(s), wh(w), quantity);
    let mut r = Reservation::new(
        "res_1".to_string(),
        ch("shopify"),
        order("1001"),
        vec![(sku("SKU-A"), 3), (sku("SKU-B"), 2)],
        vec![
            alloc("SKU-A", "WH-EAST", 3),
            alloc("SKU-B", "WH-EAST", 1),
            alloc("SKU-B", "WH-WEST", 1),
        ],
        1_000,
        if status == Status::Held { 60 } else { 0 },
    );
    r.status = status;
    r
}
