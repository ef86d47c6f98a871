//! What both stores do to a batch before writing it: the changes of one
//! pool within a batch folded into one row, so a hot SKU costs one UPDATE
//! per batch whatever the number of orders in it.

/// One pool's changes within a batch, folded in op order.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct PoolFold {
    /// The last count's on_hand plus the deltas after it; None: no count.
    pub(super) set: Option<i64>,
    /// Sum of on_hand deltas (meaningful only while `set` is None).
    pub(super) on_hand: i64,
    /// Sum of reserved deltas: a count leaves reserved alone.
    pub(super) reserved: i64,
    /// Number of ops: each bumps the version by one.
    pub(super) bumps: i64,
}

impl PoolFold {
    pub(super) fn delta(&mut self, on_hand: i64, reserved: i64) {
        match &mut self.set {
            Some(v) => *v += on_hand,
            None => self.on_hand += on_hand,
        }
        self.reserved += reserved;
        self.bumps += 1;
    }

    pub(super) fn count(&mut self, on_hand: i64) {
        self.set = Some(on_hand);
        self.bumps += 1;
    }

    /// The on_hand to write: the count's figure, or the delta to add.
    pub(super) fn on_hand_value(&self) -> i64 {
        self.set.unwrap_or(self.on_hand)
    }
}

/// Folds every pool op of `ops`, in op order; the result is sorted by pool
/// (SKU, warehouse), so every commit touches rows in one order.
pub(super) fn fold_pools(ops: &[super::Op]) -> Vec<((&str, &str), PoolFold)> {
    use super::Op;
    let mut pools: std::collections::HashMap<(&str, &str), PoolFold> =
        std::collections::HashMap::new();
    for op in ops {
        match op {
            Op::PoolDelta {
                sku,
                warehouse,
                on_hand,
                reserved,
            } => pools
                .entry((sku.as_str(), warehouse.as_str()))
                .or_default()
                .delta(*on_hand, *reserved),
            Op::PoolSetOnHand {
                sku,
                warehouse,
                on_hand,
            } => pools
                .entry((sku.as_str(), warehouse.as_str()))
                .or_default()
                .count(*on_hand),
            _ => {}
        }
    }
    let mut out: Vec<_> = pools.into_iter().collect();
    out.sort_unstable_by_key(|(key, _)| *key);
    out
}
