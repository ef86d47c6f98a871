//! The allocation formula of DESIGN.md: other channels' fences laid over
//! their warehouses, ATP, the published figure with its explanation, and
//! sourcing (which warehouses ship an admitted order).

use smallvec::SmallVec;

use super::{Catalog, ChannelCode, DomainError, Effective, InvalidInput, Pool, Shortfall, Sku};

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
    let mut by_channel: Vec<(usize, Vec<i64>)> = fenced(rules, except)
        .map(|r| (r.channel, vec![0i64; warehouses]))
        .collect();
    lay(rules, pools, except, &mut protected, |k, w, take| {
        by_channel[k].1[w] += take
    });
    Laid {
        protected,
        by_channel,
    }
}

/// The channels whose fences are laid against channel `except`.
fn fenced(rules: &[Effective], except: usize) -> impl Iterator<Item = &Effective> {
    rules
        .iter()
        .filter(move |r| r.channel != except && r.fence > 0)
}

/// Step 1 itself: adds what each fence of [`fenced`] protects to
/// `protected` (by warehouse index) and reports every unit laid as
/// (the fence's position in [`fenced`], warehouse, units).
fn lay(
    rules: &[Effective],
    pools: &[Pool],
    except: usize,
    protected: &mut [i64],
    mut laid: impl FnMut(usize, usize, i64),
) {
    for (k, rule) in fenced(rules, except).enumerate() {
        let mut left = rule.fence;
        for &w in &rule.warehouses {
            if left == 0 {
                break;
            }
            let room = (free_at(pools, w) - protected[w]).max(0);
            let take = room.min(left);
            protected[w] += take;
            laid(k, w, take);
            left -= take;
        }
    }
}

/// What one channel may take of one SKU, by warehouse: held inline, as a
/// decision computes it for every line of every order.
type Room = SmallVec<[(usize, i64); 8]>;

/// Units of each warehouse of `W(c)` that channel `c` may take: free minus
/// what other channels' fences protect. Pairs of (warehouse, units).
fn unprotected(rules: &[Effective], pools: &[Pool], channel: usize, warehouses: usize) -> Room {
    let mut protected: SmallVec<[i64; 8]> = smallvec::smallvec![0; warehouses];
    lay(rules, pools, channel, &mut protected, |_, _, _| {});
    rules[channel]
        .warehouses
        .iter()
        .map(|&w| (w, (free_at(pools, w) - protected[w]).max(0)))
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

/// Step 3 alone: what a channel is shown of `atp` under `rule` (share
/// rounded down, minus buffer, capped, floored at 0, 0 below the minimum).
/// [`availability`] computes the same figure with its explanation.
pub fn published(rule: &Effective, atp: i64) -> i64 {
    let mut p = atp * i64::from(rule.share_percent) / 100 - rule.buffer;
    if rule.max_published > 0 {
        p = p.min(rule.max_published);
    }
    p = p.max(0);
    if p < rule.min_published {
        0
    } else {
        p
    }
}

/// ATP and published figure of channel `channel` without the explanation:
/// the cheap form for publishing and simulation.
pub fn levels(
    rules: &[Effective],
    pools: &[Pool],
    channel: usize,
    warehouses: usize,
) -> (i64, i64) {
    let atp = atp(rules, pools, channel, warehouses);
    (atp, published(&rules[channel], atp))
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
    debug_assert_eq!(
        published,
        self::published(rule, atp),
        "explained and compact formula agree"
    );
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
/// An order naming one SKU on two lines is refused as invalid: each line
/// would otherwise be measured against the whole ATP.
pub fn source_order(
    catalog: &Catalog,
    channel: usize,
    lines: &[OrderLine<'_>],
) -> Result<Vec<Placement>, DomainError> {
    if let Some(i) = (1..lines.len()).find(|&i| lines[..i].iter().any(|l| l.sku == lines[i].sku)) {
        return Err(InvalidInput::new(
            format!("lines[{i}].sku"),
            format!("{} is listed twice; name each SKU once", lines[i].sku),
        )
        .into());
    }
    let n = catalog.warehouses.len();
    let room: SmallVec<[Room; 4]> = lines
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
        .default_warehouses(channel)
        .iter()
        .copied()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::fixtures::{catalog, default_rule, pools, sku, sku_rule, whs, with_rules};
    use crate::domain::{Rule, BUILTIN_CHANNELS};

    const SHOPIFY: usize = 0;
    const AMAZON: usize = 1;
    const B2B: usize = 2;

    /// The world of API.md's example: b2b fences 50 in WH-EAST, shopify is
    /// shown 40% of its ATP minus a buffer of 5.
    fn api_example() -> Catalog {
        with_rules(
            catalog(&["WH-EAST", "WH-WEST"], &BUILTIN_CHANNELS),
            vec![
                Rule {
                    share_percent: Some(40),
                    buffer: Some(5),
                    ..default_rule("shopify")
                },
                Rule {
                    warehouses: whs(&["WH-EAST"]),
                    fence: Some(50),
                    ..default_rule("b2b")
                },
            ],
        )
    }

    fn published(catalog: &Catalog, pools: &[Pool], channel: usize) -> i64 {
        let sku = sku("TEE");
        availability(catalog, &sku, &catalog.effective_all(&sku), pools, channel).published
    }

    fn atp_of(catalog: &Catalog, pools: &[Pool], channel: usize) -> i64 {
        atp(
            &catalog.effective_all(&sku("TEE")),
            pools,
            channel,
            catalog.warehouses.len(),
        )
    }

    /// A single-channel-of-interest catalog where shopify's default rule is `rule`.
    fn shopify_with(rule: Rule) -> Catalog {
        with_rules(catalog(&["WH-EAST"], &BUILTIN_CHANNELS), vec![rule])
    }

    #[test]
    fn explain_steps_match_the_api_example() {
        let catalog = api_example();
        let sku = sku("TEE");
        let a = availability(
            &catalog,
            &sku,
            &catalog.effective_all(&sku),
            &pools(&[100, 20]),
            SHOPIFY,
        );
        let steps: Vec<(&str, i64)> = a.explain.iter().map(|s| (s.step, s.value)).collect();
        assert_eq!(
            steps,
            vec![
                ("free", 120),
                ("protected", -50),
                ("atp", 70),
                ("share", 28),
                ("buffer", -5),
                ("published", 23)
            ]
        );
        let details: Vec<&str> = a.explain.iter().map(|s| s.detail.as_str()).collect();
        assert_eq!(
            details,
            vec![
                "WH-EAST,WH-WEST (built-in default)",
                "fence b2b (50 of 50, b2b default rule)",
                "",
                "40% (shopify default rule)",
                "shopify default rule",
                "",
            ]
        );
        assert_eq!((a.channel, a.atp, a.published), (SHOPIFY, 70, 23));
    }

    #[test]
    fn explain_names_the_sku_rule_that_set_a_step() {
        let catalog = with_rules(
            api_example(),
            vec![Rule {
                share_percent: Some(50),
                ..sku_rule("shopify", "TEE")
            }],
        );
        let sku = sku("TEE");
        let a = availability(
            &catalog,
            &sku,
            &catalog.effective_all(&sku),
            &pools(&[100, 20]),
            SHOPIFY,
        );
        let share = a.explain.iter().find(|s| s.step == "share").unwrap();
        assert_eq!(
            (share.value, share.detail.as_str()),
            (35, "50% (shopify rule for TEE)")
        );
    }

    #[test]
    fn a_channels_own_fence_does_not_reduce_its_own_atp() {
        let catalog = api_example();
        assert_eq!(atp_of(&catalog, &pools(&[100, 20]), B2B), 100);
    }

    #[test]
    fn a_fence_protects_only_units_in_the_fenced_channels_warehouses() {
        let catalog = with_rules(
            api_example(),
            vec![Rule {
                warehouses: whs(&["WH-WEST"]),
                ..default_rule("amazon")
            }],
        );
        assert_eq!(atp_of(&catalog, &pools(&[100, 20]), AMAZON), 20);
        assert_eq!(atp_of(&catalog, &pools(&[40, 20]), SHOPIFY), 20);
    }

    #[test]
    fn fences_are_laid_in_declared_channel_order_until_free_runs_out() {
        let catalog = with_rules(
            catalog(&["WH-EAST"], &["a", "b", "c"]),
            vec![
                Rule {
                    fence: Some(10),
                    ..default_rule("a")
                },
                Rule {
                    fence: Some(10),
                    ..default_rule("b")
                },
            ],
        );
        let rules = catalog.effective_all(&sku("TEE"));
        let laid = lay_fences(&rules, &pools(&[15]), 2, 1);
        assert_eq!(laid.by_channel, vec![(0, vec![10]), (1, vec![5])]);
        assert_eq!(laid.protected, vec![15]);
        assert_eq!(atp(&rules, &pools(&[15]), 2, 1), 0);
        assert_eq!(atp(&rules, &pools(&[15]), 0, 1), 5, "b protects 10 from a");
        assert_eq!(atp(&rules, &pools(&[15]), 1, 1), 5, "a protects 10 from b");
    }

    #[test]
    fn a_fence_is_laid_over_its_warehouses_in_priority_order() {
        let catalog = with_rules(
            catalog(&["WH-EAST", "WH-WEST"], &BUILTIN_CHANNELS),
            vec![Rule {
                warehouses: whs(&["WH-WEST", "WH-EAST"]),
                fence: Some(30),
                ..default_rule("b2b")
            }],
        );
        let laid = lay_fences(
            &catalog.effective_all(&sku("TEE")),
            &pools(&[100, 20]),
            SHOPIFY,
            2,
        );
        assert_eq!(laid.by_channel, vec![(B2B, vec![10, 20])]);
        assert_eq!(laid.protected, vec![10, 20]);
    }

    #[test]
    fn lay_fences_skips_the_excepted_channel_and_channels_without_a_fence() {
        let catalog = api_example();
        let laid = lay_fences(
            &catalog.effective_all(&sku("TEE")),
            &pools(&[100, 20]),
            B2B,
            2,
        );
        assert!(laid.by_channel.is_empty());
        assert_eq!(laid.protected, vec![0, 0]);
    }

    #[test]
    fn a_fence_covers_only_free_units_not_reserved_ones() {
        let catalog = api_example();
        let pools = vec![
            Pool {
                on_hand: 100,
                reserved: 80,
                version: 3,
            },
            Pool {
                on_hand: 20,
                reserved: 0,
                version: 1,
            },
        ];
        assert_eq!(
            atp_of(&catalog, &pools, SHOPIFY),
            20,
            "b2b's fence takes all 20 free units in WH-EAST"
        );
        assert_eq!(atp_of(&catalog, &pools, B2B), 20);
    }

    #[test]
    fn atp_counts_only_the_channels_warehouses() {
        let catalog = with_rules(
            api_example(),
            vec![Rule {
                warehouses: whs(&["WH-WEST"]),
                ..sku_rule("amazon", "TEE")
            }],
        );
        assert_eq!(atp_of(&catalog, &pools(&[100, 20]), AMAZON), 20);
    }

    #[test]
    fn a_pool_reserved_beyond_its_stock_adds_nothing_to_atp() {
        let catalog = catalog(&["WH-EAST", "WH-WEST"], &BUILTIN_CHANNELS);
        let pools = vec![
            Pool {
                on_hand: 5,
                reserved: 9,
                version: 0,
            },
            Pool {
                on_hand: 7,
                reserved: 2,
                version: 0,
            },
        ];
        assert_eq!(atp_of(&catalog, &pools, SHOPIFY), 5);
    }

    #[test]
    fn a_warehouse_without_a_pool_counts_as_empty() {
        let catalog = catalog(&["WH-EAST", "WH-WEST"], &BUILTIN_CHANNELS);
        assert_eq!(atp_of(&catalog, &pools(&[12]), SHOPIFY), 12);
    }

    #[test]
    fn the_share_is_rounded_down() {
        let catalog = shopify_with(Rule {
            share_percent: Some(50),
            ..default_rule("shopify")
        });
        assert_eq!(published(&catalog, &pools(&[9]), SHOPIFY), 4);
        let catalog = shopify_with(Rule {
            share_percent: Some(1),
            ..default_rule("shopify")
        });
        assert_eq!(published(&catalog, &pools(&[99]), SHOPIFY), 0);
    }

    #[test]
    fn published_never_goes_below_zero_when_the_buffer_exceeds_atp() {
        let catalog = shopify_with(Rule {
            buffer: Some(10),
            ..default_rule("shopify")
        });
        assert_eq!(published(&catalog, &pools(&[4]), SHOPIFY), 0);
        assert_eq!(published(&catalog, &pools(&[14]), SHOPIFY), 4);
    }

    #[test]
    fn published_is_capped_at_max_published() {
        let catalog = shopify_with(Rule {
            max_published: Some(25),
            ..default_rule("shopify")
        });
        let sku = sku("TEE");
        let a = availability(
            &catalog,
            &sku,
            &catalog.effective_all(&sku),
            &pools(&[100]),
            SHOPIFY,
        );
        assert_eq!((a.atp, a.published), (100, 25));
        let cap = a
            .explain
            .iter()
            .find(|s| s.step == "max_published")
            .unwrap();
        assert_eq!(
            (cap.value, cap.detail.as_str()),
            (25, "capped (shopify default rule)")
        );
        assert_eq!(published(&catalog, &pools(&[10]), SHOPIFY), 10);
    }

    #[test]
    fn a_max_published_of_zero_means_no_cap() {
        let catalog = shopify_with(Rule {
            max_published: Some(0),
            ..default_rule("shopify")
        });
        let sku = sku("TEE");
        let a = availability(
            &catalog,
            &sku,
            &catalog.effective_all(&sku),
            &pools(&[1000]),
            SHOPIFY,
        );
        assert_eq!(a.published, 1000);
        assert!(a.explain.iter().all(|s| s.step != "max_published"));
    }

    #[test]
    fn published_is_zero_below_min_published() {
        let catalog = shopify_with(Rule {
            min_published: Some(5),
            ..default_rule("shopify")
        });
        let sku = sku("TEE");
        let a = availability(
            &catalog,
            &sku,
            &catalog.effective_all(&sku),
            &pools(&[4]),
            SHOPIFY,
        );
        assert_eq!((a.atp, a.published), (4, 0));
        let floor = a
            .explain
            .iter()
            .find(|s| s.step == "min_published")
            .unwrap();
        assert_eq!(floor.detail, "below: shown as 0 (shopify default rule)");
        assert_eq!(
            published(&catalog, &pools(&[5]), SHOPIFY),
            5,
            "reaching the minimum shows the figure"
        );
    }

    #[test]
    fn min_published_is_compared_after_share_buffer_and_cap() {
        let catalog = shopify_with(Rule {
            share_percent: Some(50),
            buffer: Some(2),
            max_published: Some(6),
            min_published: Some(7),
            ..default_rule("shopify")
        });
        assert_eq!(published(&catalog, &pools(&[100]), SHOPIFY), 0);
    }

    #[test]
    fn explain_says_when_a_channel_has_no_warehouse() {
        let catalog = catalog(&[], &BUILTIN_CHANNELS);
        let sku = sku("TEE");
        let a = availability(&catalog, &sku, &catalog.effective_all(&sku), &[], SHOPIFY);
        assert_eq!(a.explain[0].detail, "no warehouse (built-in default)");
        assert_eq!((a.atp, a.published), (0, 0));
    }

    fn line<'a>(
        sku: &'a Sku,
        quantity: i64,
        pools: &'a [Pool],
        rules: &'a [Effective],
    ) -> OrderLine<'a> {
        OrderLine {
            sku,
            quantity,
            pools,
            rules,
        }
    }

    #[test]
    fn sourcing_prefers_one_warehouse_that_ships_the_whole_order() {
        let catalog = catalog(&["WH-EAST", "WH-WEST"], &BUILTIN_CHANNELS);
        let (tee, mug) = (sku("TEE"), sku("MUG"));
        let (tee_rules, mug_rules) = (catalog.effective_all(&tee), catalog.effective_all(&mug));
        let (tee_pools, mug_pools) = (pools(&[10, 10]), pools(&[1, 5]));
        let lines = [
            line(&tee, 3, &tee_pools, &tee_rules),
            line(&mug, 2, &mug_pools, &mug_rules),
        ];
        let placed = source_order(&catalog, SHOPIFY, &lines).unwrap();
        assert_eq!(
            placed,
            vec![
                Placement {
                    line: 0,
                    warehouse: 1,
                    quantity: 3
                },
                Placement {
                    line: 1,
                    warehouse: 1,
                    quantity: 2
                }
            ]
        );
    }

    #[test]
    fn sourcing_tries_single_warehouses_in_the_channel_default_order() {
        let catalog = with_rules(
            catalog(&["WH-EAST", "WH-WEST"], &BUILTIN_CHANNELS),
            vec![Rule {
                warehouses: whs(&["WH-WEST", "WH-EAST"]),
                ..default_rule("shopify")
            }],
        );
        let tee = sku("TEE");
        let (rules, stock) = (catalog.effective_all(&tee), pools(&[10, 10]));
        let placed = source_order(&catalog, SHOPIFY, &[line(&tee, 4, &stock, &rules)]).unwrap();
        assert_eq!(
            placed,
            vec![Placement {
                line: 0,
                warehouse: 1,
                quantity: 4
            }]
        );
    }

    #[test]
    fn sourcing_splits_each_line_in_priority_order_when_no_warehouse_ships_everything() {
        let catalog = catalog(&["WH-EAST", "WH-WEST", "WH-NORTH"], &BUILTIN_CHANNELS);
        let (tee, mug) = (sku("TEE"), sku("MUG"));
        let (tee_rules, mug_rules) = (catalog.effective_all(&tee), catalog.effective_all(&mug));
        let (tee_pools, mug_pools) = (pools(&[2, 0, 5]), pools(&[0, 4, 0]));
        let lines = [
            line(&tee, 6, &tee_pools, &tee_rules),
            line(&mug, 3, &mug_pools, &mug_rules),
        ];
        let placed = source_order(&catalog, SHOPIFY, &lines).unwrap();
        assert_eq!(
            placed,
            vec![
                Placement {
                    line: 0,
                    warehouse: 0,
                    quantity: 2
                },
                Placement {
                    line: 0,
                    warehouse: 2,
                    quantity: 4
                },
                Placement {
                    line: 1,
                    warehouse: 1,
                    quantity: 3
                },
            ]
        );
    }

    #[test]
    fn sourcing_never_takes_units_another_channel_fenced() {
        let catalog = api_example();
        let tee = sku("TEE");
        let (rules, stock) = (catalog.effective_all(&tee), pools(&[60, 20]));
        let placed = source_order(&catalog, SHOPIFY, &[line(&tee, 25, &stock, &rules)]).unwrap();
        assert_eq!(
            placed,
            vec![
                Placement {
                    line: 0,
                    warehouse: 0,
                    quantity: 10
                },
                Placement {
                    line: 0,
                    warehouse: 1,
                    quantity: 15
                }
            ]
        );
    }

    #[test]
    fn sourcing_uses_only_the_warehouses_a_sku_rule_allows() {
        let catalog = with_rules(
            catalog(&["WH-EAST", "WH-WEST"], &BUILTIN_CHANNELS),
            vec![Rule {
                warehouses: whs(&["WH-WEST"]),
                ..sku_rule("shopify", "TEE")
            }],
        );
        let tee = sku("TEE");
        let (rules, stock) = (catalog.effective_all(&tee), pools(&[50, 3]));
        let placed = source_order(&catalog, SHOPIFY, &[line(&tee, 3, &stock, &rules)]).unwrap();
        assert_eq!(
            placed,
            vec![Placement {
                line: 0,
                warehouse: 1,
                quantity: 3
            }]
        );
        let err = source_order(&catalog, SHOPIFY, &[line(&tee, 4, &stock, &rules)]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "not enough stock for channel shopify: TEE wanted 4, available 3"
        );
    }

    #[test]
    fn reserve_is_refused_when_it_would_eat_another_channels_fence() {
        let catalog = api_example();
        let tee = sku("TEE");
        let (rules, stock) = (catalog.effective_all(&tee), pools(&[100, 20]));
        assert!(source_order(&catalog, SHOPIFY, &[line(&tee, 70, &stock, &rules)]).is_ok());
        let err = source_order(&catalog, SHOPIFY, &[line(&tee, 71, &stock, &rules)]).unwrap_err();
        assert_eq!(
            err,
            DomainError::Insufficient {
                channel: catalog.channels[SHOPIFY].code.clone(),
                shorts: vec![Shortfall {
                    sku: tee.clone(),
                    wanted: 71,
                    available: 70
                }],
            }
        );
    }

    #[test]
    fn an_order_naming_a_sku_twice_is_refused_rather_than_counted_against_atp_twice() {
        let catalog = catalog(&["WH-EAST"], &BUILTIN_CHANNELS);
        let tee = sku("TEE");
        let (rules, stock) = (catalog.effective_all(&tee), pools(&[70]));
        let lines = [
            line(&tee, 60, &stock, &rules),
            line(&tee, 60, &stock, &rules),
        ];
        let err = source_order(&catalog, SHOPIFY, &lines).unwrap_err();
        assert_eq!(
            err.to_string(),
            "lines[1].sku TEE is listed twice; name each SKU once"
        );
    }

    #[test]
    fn an_order_that_does_not_fit_names_each_short_sku_with_wanted_and_available() {
        let catalog = catalog(&["WH-EAST"], &BUILTIN_CHANNELS);
        let (tee, mug, cap) = (sku("TEE"), sku("MUG"), sku("CAP"));
        let rules = catalog.effective_all(&tee);
        let (tee_pools, mug_pools, cap_pools) = (pools(&[2]), pools(&[10]), pools(&[0]));
        let lines = [
            line(&tee, 5, &tee_pools, &rules),
            line(&mug, 1, &mug_pools, &rules),
            line(&cap, 1, &cap_pools, &rules),
        ];
        let err = source_order(&catalog, AMAZON, &lines).unwrap_err();
        assert_eq!(err.to_string(), "not enough stock for channel amazon: TEE wanted 5, available 2; CAP wanted 1, available 0");
    }
}
