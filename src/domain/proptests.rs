//! Property tests: random catalogs, pools and order sequences checked
//! against the invariants of DESIGN.md's formula and sourcing, and random
//! Fulfill/Release/Restock/expiry sequences against the reservation
//! state machine's bookkeeping. Each runs twice: on small numbers, where
//! fences, shares and buffers bite, and on the largest numbers the boundary
//! accepts (a debug build panics on any overflow, so these find it).

use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;

use super::fixtures::{catalog, ch, order, sku, wh, with_rules};
use super::*;

const SKUS: [&str; 2] = ["TEE", "MUG"];
const WAREHOUSES: [&str; 4] = ["WH-0", "WH-1", "WH-2", "WH-3"];
const CHANNELS: [&str; 4] = ["ch-0", "ch-1", "ch-2", "ch-3"];

/// Which numbers a strategy draws.
#[derive(Debug, Clone, Copy)]
enum Scale {
    /// Up to a few dozen.
    Small,
    /// Small ones, and ones at and just below [`MAX_QUANTITY`], the largest
    /// quantity, count or rule value a client may send.
    Extreme,
}

/// A count of units from 0 (or `min`) to `small`, or at the top of the
/// accepted range.
fn units(scale: Scale, min: i64, small: i64) -> BoxedStrategy<i64> {
    match scale {
        Scale::Small => (min..=small).boxed(),
        Scale::Extreme => prop_oneof![
            min..=small,
            (MAX_QUANTITY - small)..=MAX_QUANTITY,
            Just(MAX_QUANTITY),
        ]
        .boxed(),
    }
}

/// A random catalog of 1-4 warehouses and 2-4 channels with random default
/// and SKU rules, and the pools of every SKU (reserved ≤ on_hand).
#[derive(Debug, Clone)]
struct World {
    catalog: Catalog,
    skus: Vec<Sku>,
    /// `pools[s][w]`: SKU `s` in warehouse `w`.
    pools: Vec<Vec<Pool>>,
}

impl World {
    fn warehouses(&self) -> usize {
        self.catalog.warehouses.len()
    }

    fn channels(&self) -> usize {
        self.catalog.channels.len()
    }

    /// [`Catalog::effective_all`] of every SKU, by SKU index.
    fn rules(&self) -> Vec<Vec<Effective>> {
        self.skus
            .iter()
            .map(|s| self.catalog.effective_all(s))
            .collect()
    }
}

/// A rule's fields, warehouses as a random subset (possibly empty) of the
/// declared ones in random priority order.
fn rule_fields(warehouses: usize, scale: Scale) -> impl Strategy<Value = Rule> {
    let subset = (
        Just((0..warehouses).collect::<Vec<_>>()).prop_shuffle(),
        0..=warehouses,
    )
        .prop_map(|(order, k)| order[..k].iter().map(|&w| wh(WAREHOUSES[w])).collect());
    (
        subset,
        option::of(units(scale, 0, 25)),
        option::of(1..=100u32),
        option::of(units(scale, 0, 8)),
        option::of(units(scale, 0, 40)),
        option::of(units(scale, 0, 10)),
    )
        .prop_map(
            |(warehouses, fence, share_percent, buffer, max_published, min_published)| Rule {
                warehouses,
                fence,
                share_percent,
                buffer,
                max_published,
                min_published,
                ..Rule::default()
            },
        )
}

fn pool(scale: Scale) -> impl Strategy<Value = Pool> {
    units(scale, 0, 40).prop_flat_map(|on_hand| {
        (0..=on_hand).prop_map(move |reserved| Pool {
            on_hand,
            reserved,
            version: 0,
        })
    })
}

fn world(scale: Scale) -> impl Strategy<Value = World> {
    (1..=4usize, 2..=4usize)
        .prop_flat_map(move |(n_w, n_c)| {
            (
                Just((n_w, n_c)),
                vec(option::of(rule_fields(n_w, scale)), n_c),
                vec(option::of(rule_fields(n_w, scale)), n_c * SKUS.len()),
                vec(vec(pool(scale), n_w), SKUS.len()),
            )
        })
        .prop_map(|((n_w, n_c), defaults, sku_rules, pools)| {
            let mut rules = Vec::new();
            for (c, rule) in defaults.into_iter().enumerate() {
                if let Some(rule) = rule {
                    rules.push(Rule {
                        channel: Some(ch(CHANNELS[c])),
                        ..rule
                    });
                }
            }
            for (i, rule) in sku_rules.into_iter().enumerate() {
                if let Some(rule) = rule {
                    let (c, s) = (i / SKUS.len(), i % SKUS.len());
                    rules.push(Rule {
                        channel: Some(ch(CHANNELS[c])),
                        sku: Some(sku(SKUS[s])),
                        ..rule
                    });
                }
            }
            World {
                catalog: with_rules(catalog(&WAREHOUSES[..n_w], &CHANNELS[..n_c]), rules),
                skus: SKUS.iter().map(|s| sku(s)).collect(),
                pools,
            }
        })
}

/// An order: a channel (taken modulo the channel count) and, per SKU, an
/// optional quantity; each SKU appears at most once.
fn orders(scale: Scale) -> impl Strategy<Value = Vec<(usize, Vec<Option<i64>>)>> {
    vec((0..4usize, wanted_quantities(scale)), 1..=8)
}

/// Per SKU, an optional quantity to order.
fn wanted_quantities(scale: Scale) -> impl Strategy<Value = Vec<Option<i64>>> {
    vec(option::of(units(scale, 1, 25)), SKUS.len())
}

/// The order's lines as (SKU index, quantity).
fn lines_of(wanted: &[Option<i64>]) -> Vec<(usize, i64)> {
    wanted
        .iter()
        .enumerate()
        .filter_map(|(s, q)| q.map(|q| (s, q)))
        .collect()
}

/// Sources `lines` for `channel` against the world's current pools.
fn source(
    world: &World,
    rules: &[Vec<Effective>],
    channel: usize,
    lines: &[(usize, i64)],
) -> Result<Vec<Placement>, DomainError> {
    let order: Vec<OrderLine<'_>> = lines
        .iter()
        .map(|&(s, quantity)| OrderLine {
            sku: &world.skus[s],
            quantity,
            pools: &world.pools[s],
            rules: &rules[s],
        })
        .collect();
    source_order(&world.catalog, channel, &order)
}

/// Units of `w` that `channel` may take: free minus other channels' fences.
fn unprotected(world: &World, rules: &[Effective], s: usize, channel: usize, w: usize) -> i64 {
    let laid = lay_fences(rules, &world.pools[s], channel, world.warehouses());
    world.pools[s][w].free() - laid.protected[w]
}

type Checked = Result<(), TestCaseError>;

fn admitted_orders_fit_atp_place_every_unit_and_never_cross_a_fence(
    mut world: World,
    orders: Vec<(usize, Vec<Option<i64>>)>,
) -> Checked {
    let rules = world.rules();
    let n_w = world.warehouses();
    for (c, wanted) in orders {
        let c = c % world.channels();
        let lines = lines_of(&wanted);
        let atps: Vec<i64> = lines
            .iter()
            .map(|&(s, _)| atp(&rules[s], &world.pools[s], c, n_w))
            .collect();
        let laid_before: Vec<Laid> = lines
            .iter()
            .map(|&(s, _)| lay_fences(&rules[s], &world.pools[s], c, n_w))
            .collect();

        match source(&world, &rules, c, &lines) {
            Ok(placements) => {
                for (i, &(s, quantity)) in lines.iter().enumerate() {
                    prop_assert!(
                        quantity <= atps[i],
                        "admitted {quantity} of SKU {s} over ATP {}",
                        atps[i]
                    );
                    let mine: Vec<&Placement> = placements.iter().filter(|p| p.line == i).collect();
                    prop_assert_eq!(mine.iter().map(|p| p.quantity).sum::<i64>(), quantity);
                    for p in mine {
                        prop_assert!(p.quantity > 0);
                        prop_assert!(rules[s][c].warehouses.contains(&p.warehouse));
                    }
                }
                let before = world.pools.clone();
                for p in &placements {
                    world.pools[lines[p.line].0][p.warehouse].reserved += p.quantity;
                }
                for (i, &(s, _)) in lines.iter().enumerate() {
                    for (w, (after, before)) in world.pools[s].iter().zip(&before[s]).enumerate() {
                        let placed: i64 = placements
                            .iter()
                            .filter(|p| p.line == i && p.warehouse == w)
                            .map(|p| p.quantity)
                            .sum();
                        prop_assert_eq!(after.reserved - before.reserved, placed);
                        prop_assert!(after.reserved <= after.on_hand);
                    }
                    let laid_after = lay_fences(&rules[s], &world.pools[s], c, n_w);
                    prop_assert_eq!(&laid_after.by_channel, &laid_before[i].by_channel);
                }
            }
            Err(DomainError::Insufficient { channel, shorts }) => {
                prop_assert_eq!(&channel, &world.catalog.channels[c].code);
                let expected: Vec<Shortfall> = lines
                    .iter()
                    .zip(&atps)
                    .filter(|(&(_, quantity), &available)| quantity > available)
                    .map(|(&(s, wanted), &available)| Shortfall {
                        sku: world.skus[s].clone(),
                        wanted,
                        available,
                    })
                    .collect();
                prop_assert!(
                    !expected.is_empty(),
                    "refused an order whose every line fits ATP"
                );
                prop_assert_eq!(shorts, expected);
            }
            Err(other) => prop_assert!(false, "unexpected refusal: {other}"),
        }
    }
    Ok(())
}

fn an_order_ships_from_the_first_warehouse_that_can_ship_it_whole_else_splits_in_priority_order(
    world: World,
    channel: usize,
    wanted: Vec<Option<i64>>,
) -> Checked {
    let c = channel % world.channels();
    let rules = world.rules();
    let lines = lines_of(&wanted);
    let Ok(placements) = source(&world, &rules, c, &lines) else {
        return Ok(());
    };
    let room = |s: usize, w: usize| {
        if rules[s][c].warehouses.contains(&w) {
            unprotected(&world, &rules[s], s, c, w)
        } else {
            0
        }
    };
    let single = world
        .catalog
        .default_warehouse_order(c)
        .into_iter()
        .find(|&w| lines.iter().all(|&(s, quantity)| room(s, w) >= quantity));
    let expected: Vec<Placement> = match single {
        Some(warehouse) => (0..lines.len())
            .map(|line| Placement {
                line,
                warehouse,
                quantity: lines[line].1,
            })
            .collect(),
        None => {
            let mut out = Vec::new();
            for (line, &(s, quantity)) in lines.iter().enumerate() {
                let mut left = quantity;
                for &warehouse in &rules[s][c].warehouses {
                    let take = room(s, warehouse).min(left);
                    if take > 0 {
                        out.push(Placement {
                            line,
                            warehouse,
                            quantity: take,
                        });
                        left -= take;
                    }
                }
            }
            out
        }
    };
    prop_assert_eq!(placements, expected);
    Ok(())
}

fn published_lies_between_zero_and_atp_and_respects_the_rule_limits(world: World) -> Checked {
    let rules = world.rules();
    for (s, sku) in world.skus.iter().enumerate() {
        for c in 0..world.channels() {
            let a = availability(&world.catalog, sku, &rules[s], &world.pools[s], c);
            let rule = &rules[s][c];
            prop_assert_eq!(
                a.atp,
                atp(&rules[s], &world.pools[s], c, world.warehouses())
            );
            prop_assert!(a.published >= 0);
            prop_assert!(a.published <= a.atp);
            if rule.max_published > 0 {
                prop_assert!(a.published <= rule.max_published);
            }
            if a.published > 0 {
                prop_assert!(a.published >= rule.min_published);
            }
            let last = a.explain.last().expect("explain has steps");
            prop_assert_eq!((last.step, last.value), ("published", a.published));
            let free_less_protected: i64 = a
                .explain
                .iter()
                .filter(|e| matches!(e.step, "free" | "protected"))
                .map(|e| e.value)
                .sum();
            prop_assert_eq!(free_less_protected, a.atp);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn admitted_orders_fit_atp_place_every_unit_and_never_cross_a_fence_on_small_numbers(
        world in world(Scale::Small),
        orders in orders(Scale::Small),
    ) {
        admitted_orders_fit_atp_place_every_unit_and_never_cross_a_fence(world, orders)?;
    }

    #[test]
    fn admitted_orders_fit_atp_place_every_unit_and_never_cross_a_fence_at_the_largest_accepted_numbers(
        world in world(Scale::Extreme),
        orders in orders(Scale::Extreme),
    ) {
        admitted_orders_fit_atp_place_every_unit_and_never_cross_a_fence(world, orders)?;
    }

    #[test]
    fn sourcing_prefers_one_warehouse_then_splits_in_priority_order_on_small_numbers(
        world in world(Scale::Small),
        channel in 0..4usize,
        wanted in wanted_quantities(Scale::Small),
    ) {
        an_order_ships_from_the_first_warehouse_that_can_ship_it_whole_else_splits_in_priority_order(world, channel, wanted)?;
    }

    #[test]
    fn sourcing_prefers_one_warehouse_then_splits_in_priority_order_at_the_largest_accepted_numbers(
        world in world(Scale::Extreme),
        channel in 0..4usize,
        wanted in wanted_quantities(Scale::Extreme),
    ) {
        an_order_ships_from_the_first_warehouse_that_can_ship_it_whole_else_splits_in_priority_order(world, channel, wanted)?;
    }

    #[test]
    fn published_lies_between_zero_and_atp_on_small_numbers(world in world(Scale::Small)) {
        published_lies_between_zero_and_atp_and_respects_the_rule_limits(world)?;
    }

    #[test]
    fn published_lies_between_zero_and_atp_at_the_largest_accepted_numbers(world in world(Scale::Extreme)) {
        published_lies_between_zero_and_atp_and_respects_the_rule_limits(world)?;
    }
}

/// One request against a reservation.
#[derive(Debug, Clone)]
enum Op {
    Confirm,
    Fulfill(Vec<LineRequest>),
    Release(Vec<LineRequest>),
    Restock(Vec<LineRequest>),
    Expire,
    /// The ERP reports a running total delivered for one allocation.
    ErpDelivered(usize, i64),
}

/// Lines over TEE, MUG and CAP (which no allocation holds), sometimes
/// naming a warehouse.
fn line_requests(scale: Scale) -> impl Strategy<Value = Vec<LineRequest>> {
    let line =
        (0..3usize, units(scale, 1, 12), option::of(0..2usize)).prop_map(|(s, q, w)| LineRequest {
            sku: sku(["TEE", "MUG", "CAP"][s]),
            quantity: Quantity::parse("quantity", q).expect("generated quantity is positive"),
            warehouse: w.map(|w| wh(WAREHOUSES[w])),
        });
    vec(line, 0..=3)
}

fn op(scale: Scale) -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => Just(Op::Confirm),
        3 => line_requests(scale).prop_map(Op::Fulfill),
        3 => line_requests(scale).prop_map(Op::Release),
        3 => line_requests(scale).prop_map(Op::Restock),
        1 => Just(Op::Expire),
        2 => (0..5usize, units(scale, 0, 12)).prop_map(|(a, n)| Op::ErpDelivered(a, n)),
    ]
}

fn allocations(scale: Scale) -> impl Strategy<Value = Vec<Allocation>> {
    vec((0..2usize, 0..2usize, units(scale, 1, 10)), 1..=5).prop_map(|v| {
        v.into_iter()
            .map(|(s, w, quantity)| Allocation::new(sku(SKUS[s]), wh(WAREHOUSES[w]), quantity))
            .collect()
    })
}

fn wanted(lines: &[LineRequest]) -> i64 {
    lines.iter().map(|l| l.quantity.get()).sum()
}

fn total(takes: &[Take]) -> i64 {
    takes.iter().map(|t| t.quantity).sum()
}

fn any_sequence_of_requests_keeps_every_allocations_counts_consistent(
    allocations: Vec<Allocation>,
    hold_seconds: u32,
    master: StockMaster,
    ops: Vec<Op>,
) -> Checked {
    let now = 1_000_000;
    let mut r = Reservation::new(
        "r".into(),
        ch("shopify"),
        order("#1"),
        Vec::new(),
        allocations,
        now,
        hold_seconds,
    );
    for (i, op) in ops.into_iter().enumerate() {
        let open_before = r.open_units();
        let held_before = r.held_units();
        match op {
            Op::Confirm => {
                let _ = r.confirm(now);
            }
            Op::Fulfill(lines) => {
                if let Ok(takes) = r.plan_fulfill(&lines, master) {
                    if master == StockMaster::Stockpool {
                        let expected = if lines.is_empty() {
                            open_before
                        } else {
                            wanted(&lines)
                        };
                        prop_assert_eq!(total(&takes), expected);
                    }
                    r.fulfill(&takes, Some(format!("ship-{i}")), master);
                    let booked = held_before - r.held_units();
                    let expected = if master == StockMaster::Stockpool {
                        total(&takes)
                    } else {
                        0
                    };
                    prop_assert_eq!(
                        booked,
                        expected,
                        "a Fulfill books on the pool only when stockpool is master"
                    );
                }
            }
            Op::Release(lines) => {
                if let Ok(takes) = r.plan_takes("release", &lines) {
                    let expected = if lines.is_empty() {
                        open_before
                    } else {
                        wanted(&lines)
                    };
                    prop_assert_eq!(total(&takes), expected);
                    r.release(&takes);
                    prop_assert_eq!(held_before - r.held_units(), total(&takes));
                }
            }
            Op::Restock(lines) => {
                if let Ok(takes) = r.plan_restock(&lines) {
                    if !lines.is_empty() {
                        prop_assert!(total(&takes) <= wanted(&lines));
                    }
                    r.restock(format!("refund-{i}"), takes);
                }
            }
            Op::Expire => {
                let was_held = r.status == Status::Held;
                let takes = r.expire();
                prop_assert_eq!(total(&takes), if was_held { open_before } else { 0 });
            }
            Op::ErpDelivered(a, n) => {
                if a < r.allocations.len() {
                    let newly = r.erp_delivered(a, n);
                    prop_assert!(newly >= 0);
                    prop_assert_eq!(held_before - r.held_units(), newly);
                }
            }
        }
        for a in &r.allocations {
            prop_assert!(a.fulfilled >= 0 && a.released >= 0, "{a:?}");
            prop_assert!(a.fulfilled + a.released <= a.quantity, "{a:?}");
            prop_assert!(0 <= a.restocked && a.restocked <= a.fulfilled, "{a:?}");
            prop_assert_eq!(a.fulfilled, a.shipped.max(a.delivered), "{:?}", a);
            prop_assert!(0 <= a.open() && a.open() <= a.held(), "{a:?}");
            if master == StockMaster::Stockpool {
                prop_assert_eq!(a.open(), a.held(), "{:?}", a);
            }
        }
        let shipped = r.allocations.iter().any(|a| a.fulfilled > 0);
        prop_assert_eq!(r.status.is_open(), r.open_units() > 0, "{:?}", r.status);
        prop_assert_eq!(
            r.status == Status::Fulfilled,
            !r.status.is_open() && shipped
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_sequence_of_requests_keeps_every_allocations_counts_consistent_on_small_numbers(
        allocations in allocations(Scale::Small),
        hold_seconds in prop_oneof![Just(0u32), Just(60u32)],
        master in prop_oneof![Just(StockMaster::Stockpool), Just(StockMaster::Erp)],
        ops in vec(op(Scale::Small), 0..=12),
    ) {
        any_sequence_of_requests_keeps_every_allocations_counts_consistent(allocations, hold_seconds, master, ops)?;
    }

    #[test]
    fn any_sequence_of_requests_keeps_every_allocations_counts_consistent_at_the_largest_accepted_numbers(
        allocations in allocations(Scale::Extreme),
        hold_seconds in prop_oneof![Just(0u32), Just(60u32), Just(MAX_HOLD_SECONDS)],
        master in prop_oneof![Just(StockMaster::Stockpool), Just(StockMaster::Erp)],
        ops in vec(op(Scale::Extreme), 0..=12),
    ) {
        any_sequence_of_requests_keeps_every_allocations_counts_consistent(allocations, hold_seconds, master, ops)?;
    }

    #[test]
    fn same_lines_holds_for_any_order_of_the_same_lines(
        (lines, shuffled) in vec((0..6usize, 1..=9i64), 0..6).prop_flat_map(|v| {
            let mut seen = std::collections::HashSet::new();
            let lines: Vec<(Sku, i64)> = v
                .into_iter()
                .filter(|(s, _)| seen.insert(*s))
                .map(|(s, q)| (sku(&format!("SKU-{s}")), q))
                .collect();
            (Just(lines.clone()), Just(lines).prop_shuffle())
        }),
    ) {
        let r = Reservation::new("r".into(), ch("shopify"), order("#1"), lines.clone(), vec![], 0, 0);
        prop_assert!(r.same_lines(&shuffled));
        let mut more = shuffled;
        more.push((sku("OTHER"), 1));
        prop_assert!(!r.same_lines(&more));
    }
}

/// One arrival at stockpool in the Odoo-master scenario, or one of Odoo's
/// own transactions (which stockpool sees only through a later notice).
#[derive(Debug, Clone)]
enum Arrival {
    /// Odoo validates a delivery of units of a reservation: its count drops
    /// and the order line's delivered total rises, in one commit.
    OdooDelivers(usize, i64),
    /// Odoo receives a return of units of reservation 0.
    OdooReceivesReturn(i64),
    /// A picking or quant notification, read after Odoo's commit:
    /// stockpool takes Odoo's current counts and delivered totals.
    Notice,
    /// The channel's Fulfill of everything it has not reported, under a
    /// shipment id (repeated ids are replays).
    ChannelFulfill(usize, &'static str),
    /// A channel refund of units of reservation 0 (Shopify's and Stripe's
    /// ids for the same return).
    ChannelRefund(&'static str, i64),
}

/// Odoo's side: what it counts on hand and has delivered per reservation.
#[derive(Debug, Clone, Copy)]
struct OdooSide {
    count: i64,
    delivered: [i64; 2],
}

/// Two reservations of one SKU in one warehouse (the first shipped in one
/// or two pickings and maybe partly returned, the second shipped or left
/// open) and every arrival, in an order where each notice comes after the
/// Odoo transaction it tells of, and Odoo's transactions keep their order.
fn arrivals() -> impl Strategy<Value = (i64, [i64; 2], Vec<Arrival>)> {
    (1..=6i64, 1..=6i64, any::<bool>(), any::<bool>(), 0..=6i64).prop_flat_map(
        |(q0, q1, split, ship_second, returned)| {
            let returned = returned.min(q0);
            let mut odoo = Vec::new();
            if split && q0 > 1 {
                odoo.push(Arrival::OdooDelivers(0, 1));
                odoo.push(Arrival::OdooDelivers(0, q0 - 1));
            } else {
                odoo.push(Arrival::OdooDelivers(0, q0));
            }
            if ship_second {
                odoo.push(Arrival::OdooDelivers(1, q1));
            }
            if returned > 0 {
                odoo.push(Arrival::OdooReceivesReturn(returned));
            }
            let mut channel = vec![Arrival::ChannelFulfill(0, "ship-0")];
            if ship_second {
                channel.push(Arrival::ChannelFulfill(1, "ship-1"));
            }
            if returned > 0 {
                channel.push(Arrival::ChannelRefund("shopify-refund-1", returned));
                channel.push(Arrival::ChannelRefund("stripe-re-1", returned));
            }
            let n_odoo = odoo.len();
            let n_channel = channel.len();
            (
                Just((q0, q1, odoo, channel)),
                vec(0..1000u32, n_odoo),
                vec((0..1000u32, 1..=3usize), n_odoo),
                vec(0..2000u32, n_channel),
                vec(any::<bool>(), n_channel),
            )
                .prop_map(
                    move |((q0, q1, odoo, channel), mut at, notices, channel_at, twice)| {
                        at.sort_unstable();
                        let mut timed: Vec<(u32, usize, Arrival)> = Vec::new();
                        for (i, (event, t)) in odoo.into_iter().zip(&at).enumerate() {
                            timed.push((*t, 0, event));
                            let (after, copies) = notices[i];
                            for c in 0..copies {
                                timed.push((t + 1 + after * (c as u32 + 1), 1, Arrival::Notice));
                            }
                        }
                        for ((event, t), again) in channel.into_iter().zip(channel_at).zip(twice) {
                            if again {
                                timed.push((t / 2 + 500, 2, event.clone()));
                            }
                            timed.push((t, 2, event));
                        }
                        timed.sort_by_key(|(t, kind, _)| (*t, *kind));
                        (20, [q0, q1], timed.into_iter().map(|(_, _, e)| e).collect())
                    },
                )
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// DESIGN.md "Odoo is the master of physical stock": picking and quant
    /// notices, the channel's Fulfill and two refunds for one return, in
    /// any order, late or repeated, end with on-hand equal to Odoo's count
    /// and reserved equal to the open units, and free is never higher on
    /// the way than it ends.
    #[test]
    fn under_odoo_as_master_any_arrival_order_ends_at_odoos_count_and_never_overstates_free(
        (on_hand, ordered, arrivals) in arrivals(),
    ) {
        let mut reservations: Vec<Reservation> = ordered
            .iter()
            .enumerate()
            .map(|(i, q)| {
                let id = format!("#{i}");
                Reservation::new(
                    id.clone(), ch("shopify"), order(&id), vec![(sku("TEE"), *q)],
                    vec![Allocation::new(sku("TEE"), wh("WH-0"), *q)], 0, 0,
                )
            })
            .collect();
        let mut pool = Pool { on_hand, reserved: ordered.iter().sum(), version: 0 };
        let mut odoo = OdooSide { count: on_hand, delivered: [0, 0] };
        let mut frees = Vec::new();
        for arrival in &arrivals {
            match arrival {
                Arrival::OdooDelivers(r, n) => {
                    odoo.count -= n;
                    odoo.delivered[*r] += n;
                    continue;
                }
                Arrival::OdooReceivesReturn(n) => {
                    odoo.count += n;
                    continue;
                }
                Arrival::Notice => {
                    let newly: i64 = reservations
                        .iter_mut()
                        .zip(odoo.delivered)
                        .map(|(r, total)| r.erp_delivered(0, total))
                        .sum();
                    let (on_hand_delta, reserved_delta) = follow_erp(&pool, odoo.count, newly);
                    pool.on_hand += on_hand_delta;
                    pool.reserved += reserved_delta;
                }
                Arrival::ChannelFulfill(r, shipment) => {
                    let res = &mut reservations[*r];
                    if !res.has_shipment(shipment) {
                        if let Ok(takes) = res.plan_fulfill(&[], StockMaster::Erp) {
                            res.fulfill(&takes, Some(shipment.to_string()), StockMaster::Erp);
                        }
                    }
                }
                Arrival::ChannelRefund(refund, n) => {
                    let res = &mut reservations[0];
                    if res.refund(refund).is_none() {
                        let line = LineRequest {
                            sku: sku("TEE"),
                            quantity: Quantity::parse("quantity", *n).unwrap(),
                            warehouse: None,
                        };
                        let takes = res.plan_restock(&[line]).unwrap();
                        res.restock(refund.to_string(), takes);
                    }
                }
            }
            let held: i64 = reservations.iter().map(Reservation::held_units).sum();
            prop_assert_eq!(pool.reserved, held, "reserved is what the reservations hold");
            frees.push(pool.free());
        }
        prop_assert_eq!(pool.on_hand, odoo.count, "on-hand ends at Odoo's count");
        let open: i64 = reservations.iter().map(Reservation::open_units).sum();
        prop_assert_eq!(pool.reserved, open, "reserved ends at the open units");
        let last = pool.free();
        for (step, free) in frees.iter().enumerate() {
            prop_assert!(*free <= last, "free {} at step {} is above its final {}: {:?}", free, step, last, arrivals);
        }
        let returned: i64 = arrivals.iter().map(|a| match a {
            Arrival::OdooReceivesReturn(n) => *n,
            _ => 0,
        }).sum();
        let shipped: i64 = odoo.delivered.iter().sum();
        prop_assert_eq!(pool.on_hand, on_hand - shipped + returned, "a return is on hand once");
        let first = &reservations[0].allocations[0];
        prop_assert!(first.restocked <= first.fulfilled, "{:?}", first);
    }
}
