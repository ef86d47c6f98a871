//! What the configuration names in Odoo, checked once Odoo answers: each
//! stockpool warehouse's Odoo warehouse, and the partners, fiscal
//! positions, pricelists (with their currencies), sales teams and companies
//! of the channels. A record Odoo does not have (or has archived) is named
//! with the setting that names it: at start it stops the server; later
//! (when Odoo was down at start) it dead-letters the pushes that need it.
//! Nothing falls back to a silent default.

use std::collections::{BTreeMap, HashMap};

use serde_json::{json, Value};

use super::push::many2one_id;
use super::rpc::{OdooClient, RpcError};
use super::{OdooConfig, WarehouseRef};
use crate::domain::WarehouseCode;

/// An Odoo warehouse short name (`stock.warehouse.code`) is a
/// `Char(size=5)`: a longer code can never match one.
pub const MAX_WAREHOUSE_CODE: usize = 5;

/// Why the configuration cannot be used with this Odoo.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SetupError {
    /// It names something Odoo does not have (or cannot have): each problem
    /// on its own line, with the setting that names it.
    #[error("{0}")]
    Config(String),
    /// Odoo could not be asked.
    #[error(transparent)]
    Unreachable(#[from] RpcError),
}

/// An Odoo warehouse as found for a stockpool warehouse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OdooWarehouse {
    pub id: i64,
    pub code: String,
    pub name: String,
}

/// What Odoo holds for the configuration, checked.
#[derive(Debug, Clone, Default)]
pub struct Setup {
    /// The Odoo warehouse of each stockpool warehouse Odoo has.
    pub warehouses: BTreeMap<WarehouseCode, OdooWarehouse>,
    /// Stockpool warehouses that are not mapped and whose code Odoo does
    /// not have: not in Odoo (their orders are dead-lettered, their stock
    /// is not read).
    pub absent: Vec<WarehouseCode>,
    /// The currency (ISO code) of each configured pricelist.
    pub pricelist_currency: HashMap<i64, String>,
}

/// How a stockpool warehouse is looked up: `(setting, reference)`.
fn lookup(config: &OdooConfig, w: &WarehouseCode) -> (String, WarehouseRef) {
    match config.warehouses.get(w) {
        Some(r) => (format!("odoo.warehouses.{w}"), r.clone()),
        None => (
            format!("warehouse {w}"),
            WarehouseRef::Code(w.as_str().to_string()),
        ),
    }
}

/// The checks that need no Odoo: a warehouse looked up by a code longer
/// than an Odoo short name can be is a configuration error.
pub fn check_codes(config: &OdooConfig, declared: &[WarehouseCode]) -> Result<(), SetupError> {
    let problems: Vec<String> = declared
        .iter()
        .filter(|w| !config.warehouses.contains_key(*w))
        .filter(|w| w.as_str().chars().count() > MAX_WAREHOUSE_CODE)
        .map(|w| {
            format!(
                "warehouse {w} is not under [odoo.warehouses], and its code is longer than the {MAX_WAREHOUSE_CODE} characters of an Odoo warehouse short name, so Odoo can never match it: add `{w} = \"<short name>\"` or `{w} = <id>` to odoo.warehouses"
            )
        })
        .collect();
    for w in config.warehouses.keys() {
        if !declared.contains(w) {
            tracing::warn!(warehouse = %w, "odoo.warehouses names a warehouse stockpool does not declare; ignored");
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(SetupError::Config(problems.join("\n")))
    }
}

/// Active rows of `model` with these ids, by id.
async fn read(
    client: &OdooClient,
    model: &str,
    ids: &[i64],
    fields: &[&str],
) -> Result<HashMap<i64, Value>, RpcError> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows = client
        .execute_kw(
            model,
            "search_read",
            json!([[["id", "in", ids]]]),
            json!({"fields": fields}),
        )
        .await?;
    Ok(rows
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| Some((r.get("id")?.as_i64()?, r.clone())))
        .collect())
}

fn text(row: &Value, field: &str) -> String {
    row.get(field)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// Finds every stockpool warehouse's Odoo warehouse.
async fn warehouses(
    client: &OdooClient,
    config: &OdooConfig,
    declared: &[WarehouseCode],
    problems: &mut Vec<String>,
) -> Result<(BTreeMap<WarehouseCode, OdooWarehouse>, Vec<WarehouseCode>), RpcError> {
    let fields = ["id", "code", "name"];
    let as_warehouse = |row: &Value| OdooWarehouse {
        id: row.get("id").and_then(Value::as_i64).unwrap_or(0),
        code: text(row, "code"),
        name: text(row, "name"),
    };
    let mut ids = Vec::new();
    let mut codes = Vec::new();
    for w in declared {
        match lookup(config, w).1 {
            WarehouseRef::Id(id) => ids.push(id),
            WarehouseRef::Code(c) if c.chars().count() <= MAX_WAREHOUSE_CODE => codes.push(c),
            WarehouseRef::Code(_) => {}
        }
    }
    let by_id = read(client, "stock.warehouse", &ids, &fields).await?;
    let by_code = if codes.is_empty() {
        Vec::new()
    } else {
        client
            .execute_kw(
                "stock.warehouse",
                "search_read",
                json!([[["code", "in", codes]]]),
                json!({"fields": fields}),
            )
            .await?
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    let mut found = BTreeMap::new();
    let mut absent = Vec::new();
    for w in declared {
        let (setting, reference) = lookup(config, w);
        let mapped = config.warehouses.contains_key(w);
        match reference {
            WarehouseRef::Id(id) => match by_id.get(&id) {
                None => problems.push(format!(
                    "{setting}: Odoo has no warehouse with id {id} (or it is archived); use an id from Inventory > Configuration > Warehouses"
                )),
                Some(row) => {
                    found.insert(w.clone(), as_warehouse(row));
                }
            },
            WarehouseRef::Code(code) => {
                let matches: Vec<&Value> = by_code
                    .iter()
                    .filter(|row| text(row, "code") == code)
                    .collect();
                match matches[..] {
                    [] if mapped => problems.push(format!(
                        "{setting}: Odoo has no warehouse with short name {code:?}"
                    )),
                    [] => absent.push(w.clone()),
                    [row] => {
                        found.insert(w.clone(), as_warehouse(row));
                    }
                    _ => problems.push(format!(
                        "{setting}: {} Odoo warehouses have short name {code:?} (ids {}); map it by id",
                        matches.len(),
                        matches
                            .iter()
                            .filter_map(|r| r.get("id").and_then(Value::as_i64))
                            .map(|id| id.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )),
                }
            }
        }
    }
    let mut by_odoo: BTreeMap<i64, Vec<&WarehouseCode>> = BTreeMap::new();
    for (w, o) in &found {
        by_odoo.entry(o.id).or_default().push(w);
    }
    for (id, ours) in by_odoo.into_iter().filter(|(_, v)| v.len() > 1) {
        let ours: Vec<String> = ours.iter().map(|w| w.to_string()).collect();
        problems.push(format!(
            "stockpool warehouses {} all map to Odoo warehouse {id}: its stock would be counted more than once",
            ours.join(" and ")
        ));
    }
    Ok((found, absent))
}

/// One record the configuration names: the setting, the model, the id.
struct Named {
    setting: String,
    model: &'static str,
    what: &'static str,
    id: i64,
}

/// Checks every record the configuration names (it must exist and be
/// active); returns the pricelists' currencies.
async fn records(
    client: &OdooClient,
    config: &OdooConfig,
    problems: &mut Vec<String>,
) -> Result<HashMap<i64, String>, RpcError> {
    let mut named = Vec::new();
    let mut channels: Vec<_> = config.channels.iter().collect();
    channels.sort_by(|a, b| a.0.cmp(b.0));
    for (code, c) in &channels {
        let at = |f: &str| format!("odoo.channels.{code}.{f}");
        let mut add = |setting: String, model, what, id: Option<i64>| {
            if let Some(id) = id {
                named.push(Named {
                    setting,
                    model,
                    what,
                    id,
                });
            }
        };
        add(at("partner"), "res.partner", "contact", c.partner);
        let mut customers: Vec<_> = c.customers.iter().collect();
        customers.sort();
        for (customer, id) in customers {
            add(
                at(&format!("customers.{:?}", customer.as_str())),
                "res.partner",
                "contact",
                Some(*id),
            );
        }
        add(
            at("fiscal_position"),
            "account.fiscal.position",
            "fiscal position",
            c.fiscal_position,
        );
        add(
            at("pricelist"),
            "product.pricelist",
            "pricelist",
            c.pricelist,
        );
        let mut pricelists: Vec<_> = c.pricelists.iter().collect();
        pricelists.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        for (currency, id) in pricelists {
            add(
                at(&format!("pricelists.{currency}")),
                "product.pricelist",
                "pricelist",
                Some(*id),
            );
        }
        add(at("team"), "crm.team", "sales team", c.team);
        add(at("company"), "res.company", "company", c.company);
    }
    let mut rows: HashMap<&str, HashMap<i64, Value>> = HashMap::new();
    for model in [
        "res.partner",
        "account.fiscal.position",
        "product.pricelist",
        "crm.team",
        "res.company",
    ] {
        let mut ids: Vec<i64> = named
            .iter()
            .filter(|n| n.model == model)
            .map(|n| n.id)
            .collect();
        ids.sort_unstable();
        ids.dedup();
        let fields: &[&str] = match model {
            "product.pricelist" => &["id", "name", "currency_id"],
            _ => &["id", "name"],
        };
        rows.insert(model, read(client, model, &ids, fields).await?);
    }
    for n in &named {
        if !rows.get(n.model).is_some_and(|r| r.contains_key(&n.id)) {
            problems.push(format!(
                "{}: Odoo has no active {} with id {}",
                n.setting, n.what, n.id
            ));
        }
    }
    // The pricelists' currencies, by ISO code.
    let pricelists = rows.remove("product.pricelist").unwrap_or_default();
    let currency_of: HashMap<i64, i64> = pricelists
        .iter()
        .filter_map(|(id, row)| Some((*id, many2one_id(row.get("currency_id"))?)))
        .collect();
    let mut currency_ids: Vec<i64> = currency_of.values().copied().collect();
    currency_ids.sort_unstable();
    currency_ids.dedup();
    let currencies = read(client, "res.currency", &currency_ids, &["id", "name"]).await?;
    let pricelist_currency: HashMap<i64, String> = currency_of
        .into_iter()
        .filter_map(|(p, c)| Some((p, text(currencies.get(&c)?, "name"))))
        .collect();
    for (code, c) in &channels {
        let mut pricelists: Vec<_> = c.pricelists.iter().collect();
        pricelists.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        for (currency, id) in pricelists {
            if let Some(actual) = pricelist_currency.get(id) {
                if actual != currency.as_str() {
                    problems.push(format!(
                        "odoo.channels.{code}.pricelists.{currency}: Odoo's pricelist {id} is in {actual}, not {currency}"
                    ));
                }
            }
        }
    }
    Ok(pricelist_currency)
}

/// Asks Odoo for everything the configuration names and checks it; logs
/// each warehouse's mapping. Every problem found is reported at once.
pub async fn check(
    client: &OdooClient,
    config: &OdooConfig,
    declared: &[WarehouseCode],
) -> Result<Setup, SetupError> {
    check_codes(config, declared)?;
    let mut problems = Vec::new();
    let (warehouses, absent) = warehouses(client, config, declared, &mut problems).await?;
    let pricelist_currency = records(client, config, &mut problems).await?;
    if !problems.is_empty() {
        return Err(SetupError::Config(problems.join("\n")));
    }
    for (w, o) in &warehouses {
        tracing::info!(warehouse = %w, odoo_id = o.id, odoo_code = %o.code, odoo_name = %o.name, "warehouse mapped to Odoo");
    }
    for w in &absent {
        tracing::warn!(warehouse = %w, "Odoo has no warehouse with this short name and odoo.warehouses does not map it: its orders will be dead-lettered and its stock is not read from Odoo");
    }
    Ok(Setup {
        warehouses,
        absent,
        pricelist_currency,
    })
}

/// Finds one stockpool warehouse's Odoo warehouse (a warehouse declared
/// after start). None: Odoo does not have it.
pub async fn find_warehouse(
    client: &OdooClient,
    config: &OdooConfig,
    w: &WarehouseCode,
) -> Result<Result<OdooWarehouse, String>, RpcError> {
    if let Err(SetupError::Config(problem)) = check_codes(config, std::slice::from_ref(w)) {
        return Ok(Err(problem));
    }
    let mut problems = Vec::new();
    let (mut found, _) = warehouses(client, config, std::slice::from_ref(w), &mut problems).await?;
    Ok(match found.remove(w) {
        Some(o) => Ok(o),
        None if problems.is_empty() => Err(format!(
            "Odoo has no warehouse with short name {:?} for stockpool warehouse {w}: map it under [odoo.warehouses] by its short name or id",
            w.as_str()
        )),
        None => Err(problems.join("\n")),
    })
}
