//! The allocation formula of DESIGN.md: other channels' fences laid over
//! their warehouses, ATP, the published figure with its explanation, and
//! sourcing (which warehouses ship an admitted order).

use super::{Catalog, ChannelCode, DomainError, Effective, Pool, Shortfall, Sku};

fn free_at(pools: &[Pool], w: usize) -> i64 {
    pools.get(w).map_or(0, Pool::free)
}

/// The result of laying every other channel's fence over its warehouses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Laid {
    /// `protected(w)` by warehouse index.
    pub protected: Vec<i64>,
    /// What each fenced channel laid, by warehouse index, in declared order.
    pub by_channel: Vec<(usize, Vec<i64>)>,
}

/// Step 1 of the formula: for every channel except `except`, in declared
/// order, lay its fence over its warehouses in priority order, each warehouse
/// giving at most its free units not already laid.
pub fn lay_fences(rules: &[Effective], pools: &[Pool], except: usize, warehouses: usize) -> Laid {
    let mut protected = vec![0i64; warehouses];
    let mut by_channel = Vec::new();
    for rule in rules.iter().filter(|r| r.channel != except && r.fence > 0) {
        let mut left = rule.fence;
        let mut laid = vec![0i64; warehouses];
        for &w in &rule.warehouses {
            if left == 0 {
                break;
            }
            let room = (free_at(pools, w) - protected[w]).max(0);
            let take = room.min(left);
            protected[w] += take;
            laid[w] += take;
            left -= take;
        }
        by_channel.push((rule.channel, laid));
    }
    Laid {
        protected,
        by_channel,
    }
}

/// Units of each warehouse of `W(c)` that channel `c` may take: free minus
/// what other channels' fences protect. Pairs of (warehouse, units).
fn unprotected(
    rules: &[Effective],
    pools: &[Pool],
    channel: usize,
    warehouses: usize,
) -> Vec<(usize, i64)> {
    let laid = lay_fences(rules, pools, channel, warehouses);
    rules[channel]
        .warehouses
        .iter()
        .map(|&w| (w, (free_at(pools, w) - laid.protected[w]).max(0)))
        .collect()
}

/// Step 2: `ATP(c)`, what channel `c` may still reserve of this SKU.
/// `rules` is [`Catalog::effective_all`] for the SKU.
pub fn atp(rules: &[Effective], pools: &[Pool], channel: usize, warehouses: usize) -> i64 {
    unprotected(rules, pools, channel, warehouses)
        .iter()
        .map(|(_, u)| u)
        .sum()
}

/// One step of the formula as shown to a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExplainStep {
    pub step: &'static str,
    pub value: i64,
    pub detail: String,
}

/// A channel's availability of one SKU, with the steps that produced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Availability {
    pub channel: usize,
    pub atp: i64,
    pub published: i64,
    pub explain: Vec<ExplainStep>,
}

/// Steps 1 to 3 for channel `channel`: ATP, the published figure, and the
/// explanation naming the rule that set each step.
pub fn availability(
    catalog: &Catalog,
    sku: &Sku,
    rules: &[Effective],
    pools: &[Pool],
    channel: usize,
) -> Availability {
    let n = catalog.warehouses.len();
    let rule = &rules[channel];
    let code = &catalog.channels[channel].code;
    let src = |i: usize| rule.sources[i].describe(code, sku);
    let mut explain = Vec::new();

    let free: i64 = rule.warehouses.iter().map(|&w| free_at(pools, w)).sum();
    let names: Vec<&str> = rule
        .warehouses
        .iter()
        .map(|&w| catalog.warehouses[w].code.as_str())
        .collect();
    explain.push(ExplainStep {
        step: "free",
        value: free,
        detail: format!(
            "{} ({})",
            if names.is_empty() {
                "no warehouse".into()
            } else {
                names.join(",")
            },
            src(0)
        ),
    });

    let laid = lay_fences(rules, pools, channel, n);
    for (other, per_w) in &laid.by_channel {
        let on_mine: i64 = rule.warehouses.iter().map(|&w| per_w[w]).sum();
        if on_mine > 0 {
            let o = &rules[*other];
            let ocode = &catalog.channels[*other].code;
            explain.push(ExplainStep {
                step: "protected",
                value: -on_mine,
                detail: format!(
                    "fence {ocode} ({} of {}, {})",
                    on_mine,
                    o.fence,
                    o.sources[1].describe(ocode, sku)
                ),
            });
        }
    }

    let atp: i64 = rule
        .warehouses
        .iter()
        .map(|&w| (free_at(pools, w) - laid.protected[w]).max(0))
        .sum();
    explain.push(ExplainStep {
        step: "atp",
        value: atp,
        detail: String::new(),
    });

    let shared = atp * i64::from(rule.share_percent) / 100;
    explain.push(ExplainStep {
        step: "share",
        value: shared,
        detail: format!("{}% ({})", rule.share_percent, src(2)),
    });
    let mut published = shared - rule.buffer;
    explain.push(ExplainStep {
        step: "buffer",
        value: -rule.buffer,
        detail: src(3),
    });
    if rule.max_published > 0 {
        let capped = published > rule.max_published;
        published = published.min(rule.max_published);
        explain.push(ExplainStep {
            step: "max_published",
            value: rule.max_published,
            detail: format!(
                "{} ({})",
                if capped { "capped" } else { "not reached" },
                src(4)
            ),
        });
    }
    published = published.max(0);
    if rule.min_published > 0 {
        let below = published < rule.min_published;
        if below {
            published = 0;
        }
        explain.push(ExplainStep {
            step: "min_published",
            value: rule.min_published,
            detail: format!(
                "{} ({})",
                if below { "below: shown as 0" } else { "met" },
                src(5)
            ),
        });
    }
    explain.push(ExplainStep {
        step: "published",
        value: published,
        detail: String::new(),
    });
    Availability {
        channel,
        atp,
        published,
        explain,
    }
}

/// One line of an order as sourcing sees it.
#[derive(Debug, Clone, Copy)]
pub struct OrderLine<'a> {
    pub sku: &'a Sku,
    pub quantity: i64,
    /// The SKU's pools, by warehouse index.
    pub pools: &'a [Pool],
    /// [`Catalog::effective_all`] for the SKU.
    pub rules: &'a [Effective],
}

/// Units of line `line` to take from warehouse `warehouse`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    pub line: usize,
    pub warehouse: usize,
    pub quantity: i64,
}

/// Admission and sourcing of one order for channel `channel`.
///
/// Admitted when every line fits in the channel's ATP; otherwise the error
/// names every short line. Admitted orders ship from the first warehouse (in
/// the order of the channel's default rule) that can ship every line whole
/// from its unprotected units, else each line is split over its `W(c)` in
/// priority order. Placements come line by line, in priority order.
pub fn source_order(
    catalog: &Catalog,
    channel: usize,
    lines: &[OrderLine<'_>],
) -> Result<Vec<Placement>, DomainError> {
    let n = catalog.warehouses.len();
    let room: Vec<Vec<(usize, i64)>> = lines
        .iter()
        .map(|l| unprotected(l.rules, l.pools, channel, n))
        .collect();

    let shorts: Vec<Shortfall> = lines
        .iter()
        .zip(&room)
        .filter_map(|(l, r)| {
            let available: i64 = r.iter().map(|(_, u)| u).sum();
            (l.quantity > available).then(|| Shortfall {
                sku: l.sku.clone(),
                wanted: l.quantity,
                available,
            })
        })
        .collect();
    if !shorts.is_empty() {
        let channel: ChannelCode = catalog.channels[channel].code.clone();
        return Err(DomainError::Insufficient { channel, shorts });
    }

    let single = catalog
        .default_warehouse_order(channel)
        .into_iter()
        .find(|&w| {
            lines
                .iter()
                .zip(&room)
                .all(|(l, r)| r.iter().any(|&(rw, units)| rw == w && units >= l.quantity))
        });
    if let Some(w) = single {
        return Ok((0..lines.len())
            .map(|line| Placement {
                line,
                warehouse: w,
                quantity: lines[line].quantity,
            })
            .collect());
    }

    let mut out = Vec::new();
    for (line, (l, r)) in lines.iter().zip(&room).enumerate() {
        let mut left = l.quantity;
        for &(warehouse, units) in r {
            if left == 0 {
                break;
            }
            let quantity = units.min(left);
            if quantity > 0 {
                out.push(Placement {
                    line,
                    warehouse,
                    quantity,
                });
                left -= quantity;
            }
        }
        debug_assert_eq!(left, 0, "admitted line must be fully placed");
    }
    Ok(out)
}
