//! The declared world: warehouses and channels in declared order, and the
//! allocation rules (channel defaults and per-SKU overrides), resolved into
//! the effective rule that the formula uses.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::OnceLock;

/// Rules are looked up for every channel on every decision: foldhash,
/// seeded per process, in place of SipHash.
type FastHash = foldhash::fast::RandomState;

use super::{ChannelCode, InvalidInput, Sku, WarehouseCode};

/// Channels that exist without being declared, in this order.
pub const BUILTIN_CHANNELS: [&str; 3] = ["shopify", "amazon", "b2b"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warehouse {
    pub code: WarehouseCode,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channel {
    pub code: ChannelCode,
    pub name: String,
}

/// How one channel may use one SKU's stock (`sku: Some`) or every SKU's
/// (`sku: None`, the channel default). `None` fields inherit.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub channel: Option<ChannelCode>,
    pub sku: Option<Sku>,
    /// Warehouses that may ship this channel's orders, in priority order;
    /// empty inherits (the default's empty means every warehouse).
    #[serde(default)]
    pub warehouses: Vec<WarehouseCode>,
    /// Units ring-fenced for this channel.
    pub fence: Option<i64>,
    /// Part of its ATP the channel is shown, 1..=100.
    pub share_percent: Option<u32>,
    /// Units held back from what the channel is shown.
    pub buffer: Option<i64>,
    /// Never show more than this (0 = no cap).
    pub max_published: Option<i64>,
    /// Show 0 when the figure would fall below this.
    pub min_published: Option<i64>,
}

/// Which rule set a field of an [`Effective`] rule: explanations name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldSource {
    /// Nobody set it: the documented default.
    Builtin,
    /// The channel's default rule.
    ChannelDefault,
    /// The SKU's own rule.
    SkuRule,
}

impl FieldSource {
    pub fn describe(self, channel: &ChannelCode, sku: &Sku) -> String {
        match self {
            FieldSource::Builtin => "built-in default".to_string(),
            FieldSource::ChannelDefault => format!("{channel} default rule"),
            FieldSource::SkuRule => format!("{channel} rule for {sku}"),
        }
    }
}

/// A channel's rule for one SKU after inheritance: every field has a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effective {
    /// Index of the channel in declared order.
    pub channel: usize,
    /// `W(c)`: warehouse indices (declared order positions), priority order.
    pub warehouses: Vec<usize>,
    pub fence: i64,
    pub share_percent: u32,
    pub buffer: i64,
    pub max_published: i64,
    pub min_published: i64,
    /// Where each field came from, in the order
    /// warehouses, fence, share_percent, buffer, max_published, min_published.
    pub sources: [FieldSource; 6],
}

/// Warehouses, channels and rules: everything the formula needs besides stock.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    /// Declared order; a warehouse's index here is its index in a SKU's pools.
    pub warehouses: Vec<Warehouse>,
    /// Declared order; fences are laid in this order.
    pub channels: Vec<Channel>,
    /// Channel default rules, by channel.
    pub defaults: HashMap<ChannelCode, Rule, FastHash>,
    /// Per-SKU rules, by channel then SKU.
    pub sku_rules: HashMap<ChannelCode, HashMap<Sku, Rule, FastHash>, FastHash>,
    /// [`Catalog::effective_all`] of a SKU no SKU rule names: the same for
    /// every such SKU, so resolved once per catalog rather than on every
    /// decision. Emptied by every method that changes the catalog (the
    /// fields above are changed only through them).
    unnamed: OnceLock<Vec<Effective>>,
    /// [`Catalog::default_warehouses`] of every channel, by channel index:
    /// read by every sourcing decision, resolved once per catalog. Emptied
    /// with `unnamed`.
    default_orders: OnceLock<Vec<Vec<usize>>>,
}

impl Catalog {
    pub fn warehouse_index(&self, code: &WarehouseCode) -> Option<usize> {
        self.warehouses.iter().position(|w| &w.code == code)
    }

    pub fn channel_index(&self, code: &ChannelCode) -> Option<usize> {
        self.channels.iter().position(|c| &c.code == code)
    }

    /// Empties what is resolved once per catalog (the rules of SKUs without
    /// their own, the channels' default warehouse orders): called by every
    /// method that changes the catalog.
    fn forget_resolved(&mut self) {
        self.unnamed = OnceLock::new();
        self.default_orders = OnceLock::new();
    }

    /// Adds or renames a warehouse; a new one goes last in declared order.
    pub fn upsert_warehouse(&mut self, warehouse: Warehouse) {
        self.forget_resolved();
        match self.warehouse_index(&warehouse.code) {
            Some(i) => self.warehouses[i] = warehouse,
            None => self.warehouses.push(warehouse),
        }
    }

    /// Adds or renames a channel; a new one goes last in declared order.
    pub fn upsert_channel(&mut self, channel: Channel) {
        self.forget_resolved();
        match self.channel_index(&channel.code) {
            Some(i) => self.channels[i] = channel,
            None => self.channels.push(channel),
        }
    }

    /// Checks a rule against the declared world and the field ranges.
    /// `rule.channel` must be set.
    pub fn check_rule(&self, rule: &Rule) -> Result<(), InvalidInput> {
        let channel = rule
            .channel
            .as_ref()
            .ok_or_else(|| InvalidInput::new("rule.channel", "must not be empty"))?;
        if self.channel_index(channel).is_none() {
            return Err(InvalidInput::new(
                "rule.channel",
                format!(
                    "{:?} is not a declared channel ({})",
                    channel.as_str(),
                    self.channel_list()
                ),
            ));
        }
        for (i, w) in rule.warehouses.iter().enumerate() {
            if self.warehouse_index(w).is_none() {
                return Err(InvalidInput::new(
                    format!("rule.warehouses[{i}]"),
                    format!(
                        "{:?} is not a declared warehouse ({})",
                        w.as_str(),
                        self.warehouse_list()
                    ),
                ));
            }
            if rule.warehouses[..i].contains(w) {
                return Err(InvalidInput::new(
                    format!("rule.warehouses[{i}]"),
                    format!("{:?} is listed twice", w.as_str()),
                ));
            }
        }
        if let Some(p) = rule.share_percent {
            if !(1..=100).contains(&p) {
                return Err(InvalidInput::new(
                    "rule.share_percent",
                    format!("must be between 1 and 100, got {p}"),
                ));
            }
        }
        for (field, value) in [
            ("rule.fence", rule.fence),
            ("rule.buffer", rule.buffer),
            ("rule.max_published", rule.max_published),
            ("rule.min_published", rule.min_published),
        ] {
            if let Some(v) = value {
                if !(0..=super::MAX_QUANTITY).contains(&v) {
                    return Err(InvalidInput::new(
                        field,
                        format!("must be between 0 and {}, got {v}", super::MAX_QUANTITY),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Stores a checked rule (replacing the one with the same channel and SKU).
    pub fn put_rule(&mut self, rule: Rule) {
        self.forget_resolved();
        let channel = rule.channel.clone().expect("checked rule has a channel");
        match rule.sku.clone() {
            None => {
                self.defaults.insert(channel, rule);
            }
            Some(sku) => {
                self.sku_rules.entry(channel).or_default().insert(sku, rule);
            }
        }
    }

    /// Removes a rule; returns it when there was one.
    pub fn delete_rule(&mut self, channel: &ChannelCode, sku: Option<&Sku>) -> Option<Rule> {
        self.forget_resolved();
        match sku {
            None => self.defaults.remove(channel),
            Some(sku) => self.sku_rules.get_mut(channel).and_then(|m| m.remove(sku)),
        }
    }

    /// The stored rule for `(channel, sku)`, if any.
    pub fn rule(&self, channel: &ChannelCode, sku: Option<&Sku>) -> Option<&Rule> {
        match sku {
            None => self.defaults.get(channel),
            Some(sku) => self.sku_rules.get(channel).and_then(|m| m.get(sku)),
        }
    }

    /// Every stored rule, channel by channel in declared order, default first,
    /// then SKU rules by SKU.
    pub fn rules(&self) -> Vec<Rule> {
        let mut out = Vec::new();
        for c in &self.channels {
            if let Some(r) = self.defaults.get(&c.code) {
                out.push(r.clone());
            }
            if let Some(m) = self.sku_rules.get(&c.code) {
                let mut skus: Vec<_> = m.values().cloned().collect();
                skus.sort_by(|a, b| a.sku.cmp(&b.sku));
                out.extend(skus);
            }
        }
        out
    }

    /// The rule channel `channel` (index in declared order) applies to `sku`.
    pub fn effective(&self, channel: usize, sku: &Sku) -> Effective {
        let code = &self.channels[channel].code;
        let default = self.defaults.get(code);
        let own = self.sku_rules.get(code).and_then(|m| m.get(sku));

        fn pick<T: Copy>(own: Option<T>, default: Option<T>, builtin: T) -> (T, FieldSource) {
            match (own, default) {
                (Some(v), _) => (v, FieldSource::SkuRule),
                (None, Some(v)) => (v, FieldSource::ChannelDefault),
                (None, None) => (builtin, FieldSource::Builtin),
            }
        }
        let field = |f: fn(&Rule) -> Option<i64>| pick(own.and_then(f), default.and_then(f), 0);

        let (warehouses, wsrc) = match (own, default) {
            (Some(r), _) if !r.warehouses.is_empty() => {
                (self.indices(&r.warehouses), FieldSource::SkuRule)
            }
            (_, Some(d)) if !d.warehouses.is_empty() => {
                (self.indices(&d.warehouses), FieldSource::ChannelDefault)
            }
            _ => ((0..self.warehouses.len()).collect(), FieldSource::Builtin),
        };
        let (fence, fsrc) = field(|r| r.fence);
        let (share_percent, ssrc) = pick(
            own.and_then(|r| r.share_percent),
            default.and_then(|r| r.share_percent),
            100,
        );
        let (buffer, bsrc) = field(|r| r.buffer);
        let (max_published, xsrc) = field(|r| r.max_published);
        let (min_published, nsrc) = field(|r| r.min_published);
        Effective {
            channel,
            warehouses,
            fence,
            share_percent,
            buffer,
            max_published,
            min_published,
            sources: [wsrc, fsrc, ssrc, bsrc, xsrc, nsrc],
        }
    }

    /// The effective rule of every channel for `sku`, in declared order.
    pub fn effective_all(&self, sku: &Sku) -> Vec<Effective> {
        (0..self.channels.len())
            .map(|c| self.effective(c, sku))
            .collect()
    }

    /// [`Self::effective_all`], borrowed from the catalog when no SKU rule
    /// names `sku` (most SKUs): a Reserve resolves no rule and allocates
    /// nothing for them.
    pub fn effective_all_shared(&self, sku: &Sku) -> Cow<'_, [Effective]> {
        if self.sku_rules.values().any(|rules| rules.contains_key(sku)) {
            return Cow::Owned(self.effective_all(sku));
        }
        Cow::Borrowed(self.unnamed.get_or_init(|| self.effective_all(sku)))
    }

    /// The channel default's warehouse order (every warehouse when unset):
    /// sourcing tries single-warehouse shipment in this order.
    pub fn default_warehouse_order(&self, channel: usize) -> Vec<usize> {
        self.default_warehouses(channel).to_vec()
    }

    /// [`Self::default_warehouse_order`], borrowed from the catalog.
    pub(crate) fn default_warehouses(&self, channel: usize) -> &[usize] {
        &self.default_orders.get_or_init(|| {
            (0..self.channels.len())
                .map(|c| self.resolve_default_warehouses(c))
                .collect()
        })[channel]
    }

    fn resolve_default_warehouses(&self, channel: usize) -> Vec<usize> {
        let code = &self.channels[channel].code;
        match self.defaults.get(code) {
            Some(d) if !d.warehouses.is_empty() => d
                .warehouses
                .iter()
                .filter_map(|c| self.warehouse_index(c))
                .collect(),
            _ => (0..self.warehouses.len()).collect(),
        }
    }

    fn indices(&self, codes: &[WarehouseCode]) -> Vec<usize> {
        codes
            .iter()
            .filter_map(|c| self.warehouse_index(c))
            .collect()
    }

    pub fn channel_list(&self) -> String {
        self.channels
            .iter()
            .map(|c| c.code.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub fn warehouse_list(&self) -> String {
        self.warehouses
            .iter()
            .map(|w| w.code.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::fixtures::{catalog, ch, default_rule, sku, sku_rule, wh, whs, with_rules};

    fn three_warehouses() -> Catalog {
        catalog(&["WH-EAST", "WH-WEST", "WH-NORTH"], &BUILTIN_CHANNELS)
    }

    #[test]
    fn a_sku_rule_overrides_the_channel_default_field_by_field() {
        let catalog = with_rules(
            three_warehouses(),
            vec![
                Rule {
                    warehouses: whs(&["WH-WEST"]),
                    fence: Some(10),
                    share_percent: Some(50),
                    buffer: Some(3),
                    ..default_rule("amazon")
                },
                Rule {
                    fence: Some(25),
                    max_published: Some(40),
                    ..sku_rule("amazon", "TEE")
                },
            ],
        );
        let e = catalog.effective(1, &sku("TEE"));
        assert_eq!(e.channel, 1);
        assert_eq!(e.warehouses, vec![1]);
        assert_eq!((e.fence, e.share_percent, e.buffer), (25, 50, 3));
        assert_eq!((e.max_published, e.min_published), (40, 0));
        use FieldSource::*;
        assert_eq!(
            e.sources,
            [
                ChannelDefault,
                SkuRule,
                ChannelDefault,
                ChannelDefault,
                SkuRule,
                Builtin
            ]
        );
    }

    #[test]
    fn a_sku_rule_applies_only_to_its_own_sku() {
        let catalog = with_rules(
            three_warehouses(),
            vec![Rule {
                fence: Some(5),
                ..sku_rule("b2b", "TEE")
            }],
        );
        assert_eq!(catalog.effective(2, &sku("TEE")).fence, 5);
        assert_eq!(catalog.effective(2, &sku("MUG")).fence, 0);
    }

    #[test]
    fn a_sku_rule_with_no_warehouses_inherits_the_defaults() {
        let catalog = with_rules(
            three_warehouses(),
            vec![
                Rule {
                    warehouses: whs(&["WH-NORTH", "WH-EAST"]),
                    ..default_rule("shopify")
                },
                Rule {
                    buffer: Some(2),
                    ..sku_rule("shopify", "TEE")
                },
            ],
        );
        let e = catalog.effective(0, &sku("TEE"));
        assert_eq!(e.warehouses, vec![2, 0]);
        assert_eq!(e.sources[0], FieldSource::ChannelDefault);
    }

    #[test]
    fn a_sku_rules_warehouses_replace_the_defaults_in_their_own_order() {
        let catalog = with_rules(
            three_warehouses(),
            vec![
                Rule {
                    warehouses: whs(&["WH-EAST"]),
                    ..default_rule("shopify")
                },
                Rule {
                    warehouses: whs(&["WH-NORTH", "WH-WEST"]),
                    ..sku_rule("shopify", "TEE")
                },
            ],
        );
        let e = catalog.effective(0, &sku("TEE"));
        assert_eq!(e.warehouses, vec![2, 1]);
        assert_eq!(e.sources[0], FieldSource::SkuRule);
    }

    #[test]
    fn a_default_with_no_warehouses_means_every_warehouse_in_declared_order() {
        let catalog = with_rules(
            three_warehouses(),
            vec![Rule {
                fence: Some(1),
                ..default_rule("b2b")
            }],
        );
        let e = catalog.effective(2, &sku("TEE"));
        assert_eq!(e.warehouses, vec![0, 1, 2]);
        assert_eq!(e.sources[0], FieldSource::Builtin);
        assert_eq!(catalog.default_warehouse_order(2), vec![0, 1, 2]);
    }

    #[test]
    fn a_channel_without_rules_gets_the_documented_defaults() {
        let e = three_warehouses().effective(0, &sku("TEE"));
        assert_eq!(e.warehouses, vec![0, 1, 2]);
        assert_eq!(
            (
                e.fence,
                e.share_percent,
                e.buffer,
                e.max_published,
                e.min_published
            ),
            (0, 100, 0, 0, 0)
        );
        assert_eq!(e.sources, [FieldSource::Builtin; 6]);
    }

    #[test]
    fn shared_rules_equal_the_resolved_ones_and_follow_every_change() {
        let mut catalog = three_warehouses();
        let (tee, mug) = (sku("TEE"), sku("MUG"));
        assert_eq!(
            *catalog.effective_all_shared(&tee),
            catalog.effective_all(&tee)
        );
        catalog.put_rule(Rule {
            fence: Some(7),
            ..default_rule("b2b")
        });
        assert_eq!(catalog.effective_all_shared(&mug)[2].fence, 7);
        catalog.put_rule(Rule {
            fence: Some(3),
            ..sku_rule("b2b", "TEE")
        });
        assert_eq!(catalog.effective_all_shared(&tee)[2].fence, 3);
        assert_eq!(catalog.effective_all_shared(&mug)[2].fence, 7);
        catalog.delete_rule(&ch("b2b"), None);
        assert_eq!(catalog.effective_all_shared(&mug)[2].fence, 0);
        catalog.upsert_warehouse(Warehouse {
            code: wh("WH-SOUTH"),
            name: "South".into(),
        });
        assert_eq!(
            catalog.effective_all_shared(&mug)[0].warehouses,
            vec![0, 1, 2, 3]
        );
        assert_eq!(
            *catalog.effective_all_shared(&tee),
            catalog.effective_all(&tee)
        );
    }

    #[test]
    fn effective_all_lists_every_channel_in_declared_order() {
        let channels: Vec<usize> = three_warehouses()
            .effective_all(&sku("TEE"))
            .iter()
            .map(|e| e.channel)
            .collect();
        assert_eq!(channels, vec![0, 1, 2]);
    }

    #[test]
    fn the_default_warehouse_order_follows_the_default_rule_not_sku_rules() {
        let catalog = with_rules(
            three_warehouses(),
            vec![
                Rule {
                    warehouses: whs(&["WH-WEST", "WH-EAST"]),
                    ..default_rule("amazon")
                },
                Rule {
                    warehouses: whs(&["WH-NORTH"]),
                    ..sku_rule("amazon", "TEE")
                },
            ],
        );
        assert_eq!(catalog.default_warehouse_order(1), vec![1, 0]);
    }

    #[test]
    fn the_default_warehouse_order_is_resolved_again_after_every_change() {
        let mut catalog = three_warehouses();
        assert_eq!(catalog.default_warehouses(1), [0, 1, 2]);
        catalog.put_rule(Rule {
            warehouses: whs(&["WH-WEST", "WH-EAST"]),
            ..default_rule("amazon")
        });
        assert_eq!(catalog.default_warehouses(1), [1, 0]);
        catalog.delete_rule(&ch("amazon"), None);
        assert_eq!(catalog.default_warehouses(1), [0, 1, 2]);
        catalog.upsert_warehouse(Warehouse {
            code: wh("WH-SOUTH"),
            name: "South".into(),
        });
        assert_eq!(catalog.default_warehouses(1), [0, 1, 2, 3]);
        catalog.upsert_channel(Channel {
            code: ch("pos"),
            name: "Shop till".into(),
        });
        assert_eq!(catalog.default_warehouses(3), [0, 1, 2, 3]);
    }

    #[test]
    fn field_sources_describe_the_rule_by_name() {
        let (c, s) = (ch("amazon"), sku("TEE"));
        assert_eq!(FieldSource::Builtin.describe(&c, &s), "built-in default");
        assert_eq!(
            FieldSource::ChannelDefault.describe(&c, &s),
            "amazon default rule"
        );
        assert_eq!(FieldSource::SkuRule.describe(&c, &s), "amazon rule for TEE");
    }

    #[test]
    fn check_rule_refuses_a_rule_without_a_channel() {
        let err = three_warehouses().check_rule(&Rule::default()).unwrap_err();
        assert_eq!(err.to_string(), "rule.channel must not be empty");
    }

    #[test]
    fn check_rule_refuses_an_unknown_channel_and_lists_the_declared_ones() {
        let err = three_warehouses()
            .check_rule(&default_rule("tiktok"))
            .unwrap_err();
        assert_eq!(err.field, "rule.channel");
        assert_eq!(
            err.problem,
            r#""tiktok" is not a declared channel (shopify, amazon, b2b)"#
        );
    }

    #[test]
    fn check_rule_refuses_an_unknown_warehouse_by_position() {
        let rule = Rule {
            warehouses: whs(&["WH-EAST", "WH-MOON"]),
            ..default_rule("b2b")
        };
        let err = three_warehouses().check_rule(&rule).unwrap_err();
        assert_eq!(err.field, "rule.warehouses[1]");
        assert_eq!(
            err.problem,
            r#""WH-MOON" is not a declared warehouse (WH-EAST, WH-WEST, WH-NORTH)"#
        );
    }

    #[test]
    fn check_rule_refuses_a_warehouse_listed_twice() {
        let rule = Rule {
            warehouses: whs(&["WH-EAST", "WH-WEST", "WH-EAST"]),
            ..default_rule("b2b")
        };
        let err = three_warehouses().check_rule(&rule).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"rule.warehouses[2] "WH-EAST" is listed twice"#
        );
    }

    #[test]
    fn check_rule_accepts_a_share_from_1_to_100_only() {
        let catalog = three_warehouses();
        let share = |p| {
            catalog.check_rule(&Rule {
                share_percent: Some(p),
                ..default_rule("shopify")
            })
        };
        assert!(share(1).is_ok());
        assert!(share(100).is_ok());
        assert_eq!(
            share(0).unwrap_err().to_string(),
            "rule.share_percent must be between 1 and 100, got 0"
        );
        assert_eq!(share(101).unwrap_err().field, "rule.share_percent");
    }

    #[test]
    fn check_rule_refuses_a_negative_fence_buffer_or_limit() {
        let catalog = three_warehouses();
        let cases = [
            (
                Rule {
                    fence: Some(-1),
                    ..default_rule("b2b")
                },
                "rule.fence",
            ),
            (
                Rule {
                    buffer: Some(-1),
                    ..default_rule("b2b")
                },
                "rule.buffer",
            ),
            (
                Rule {
                    max_published: Some(-1),
                    ..default_rule("b2b")
                },
                "rule.max_published",
            ),
            (
                Rule {
                    min_published: Some(-1),
                    ..default_rule("b2b")
                },
                "rule.min_published",
            ),
        ];
        for (rule, field) in cases {
            let err = catalog.check_rule(&rule).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("{field} must be between 0 and 1000000000, got -1")
            );
        }
        assert!(catalog
            .check_rule(&Rule {
                fence: Some(0),
                ..sku_rule("b2b", "TEE")
            })
            .is_ok());
    }

    #[test]
    fn putting_a_rule_replaces_the_one_for_the_same_channel_and_sku() {
        let mut catalog = with_rules(
            three_warehouses(),
            vec![Rule {
                fence: Some(1),
                ..sku_rule("b2b", "TEE")
            }],
        );
        catalog.put_rule(Rule {
            fence: Some(2),
            ..sku_rule("b2b", "TEE")
        });
        assert_eq!(
            catalog.rule(&ch("b2b"), Some(&sku("TEE"))).unwrap().fence,
            Some(2)
        );
        assert!(catalog.rule(&ch("b2b"), None).is_none());
    }

    #[test]
    fn deleting_a_rule_returns_it_and_restores_inheritance() {
        let mut catalog = with_rules(
            three_warehouses(),
            vec![
                Rule {
                    buffer: Some(4),
                    ..default_rule("b2b")
                },
                Rule {
                    buffer: Some(9),
                    ..sku_rule("b2b", "TEE")
                },
            ],
        );
        let gone = catalog.delete_rule(&ch("b2b"), Some(&sku("TEE"))).unwrap();
        assert_eq!(gone.buffer, Some(9));
        assert_eq!(catalog.effective(2, &sku("TEE")).buffer, 4);
        assert!(catalog.delete_rule(&ch("b2b"), Some(&sku("TEE"))).is_none());
        assert!(catalog.delete_rule(&ch("b2b"), None).is_some());
        assert_eq!(catalog.effective(2, &sku("TEE")).buffer, 0);
    }

    #[test]
    fn rules_are_listed_by_channel_in_declared_order_default_first_then_by_sku() {
        let catalog = with_rules(
            three_warehouses(),
            vec![
                sku_rule("b2b", "MUG"),
                sku_rule("shopify", "TEE"),
                default_rule("b2b"),
                sku_rule("shopify", "CAP"),
                default_rule("shopify"),
            ],
        );
        let listed: Vec<(String, Option<String>)> = catalog
            .rules()
            .iter()
            .map(|r| {
                (
                    r.channel.as_ref().unwrap().to_string(),
                    r.sku.as_ref().map(|s| s.to_string()),
                )
            })
            .collect();
        let expected = [
            ("shopify", None),
            ("shopify", Some("CAP")),
            ("shopify", Some("TEE")),
            ("b2b", None),
            ("b2b", Some("MUG")),
        ];
        let expected: Vec<(String, Option<String>)> = expected
            .iter()
            .map(|(c, s)| (c.to_string(), s.map(str::to_string)))
            .collect();
        assert_eq!(listed, expected);
    }

    #[test]
    fn upserting_renames_in_place_and_appends_new_codes_last() {
        let mut catalog = three_warehouses();
        catalog.upsert_warehouse(Warehouse {
            code: wh("WH-WEST"),
            name: "West coast".into(),
        });
        catalog.upsert_warehouse(Warehouse {
            code: wh("WH-SOUTH"),
            name: "South".into(),
        });
        catalog.upsert_channel(Channel {
            code: ch("ebay"),
            name: "eBay".into(),
        });
        assert_eq!(
            catalog.warehouse_list(),
            "WH-EAST, WH-WEST, WH-NORTH, WH-SOUTH"
        );
        assert_eq!(catalog.warehouses[1].name, "West coast");
        assert_eq!(catalog.channel_index(&ch("ebay")), Some(3));
        assert_eq!(catalog.warehouse_index(&wh("WH-MOON")), None);
    }
}
