//! The webhook payloads the adapter reads (Shopify's order, refund,
//! fulfillment and order-edit JSON), only the fields it needs, leniently:
//! ids come as numbers or strings, absent fields are empty.

use serde::Deserialize;
use serde_json::Value;

/// An id as Shopify sends it (a number, sometimes a string), as text.
pub fn id_text(v: &Value) -> Option<String> {
    match v {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

fn de_id<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let v = Value::deserialize(d)?;
    id_text(&v).ok_or_else(|| serde::de::Error::custom(format!("expected an id, got {v}")))
}

fn de_opt_id<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(id_text(&Value::deserialize(d)?))
}

fn de_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) => s,
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    })
}

#[derive(Debug, Clone, Deserialize)]
pub struct LineItem {
    #[serde(deserialize_with = "de_id")]
    pub id: String,
    #[serde(default, deserialize_with = "de_text")]
    pub sku: String,
    pub quantity: i64,
    #[serde(default, deserialize_with = "de_text")]
    pub price: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Customer {
    #[serde(default, deserialize_with = "de_opt_id")]
    pub id: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Order {
    #[serde(deserialize_with = "de_id")]
    pub id: String,
    #[serde(default, deserialize_with = "de_text")]
    pub name: String,
    #[serde(default, deserialize_with = "de_text")]
    pub currency: String,
    #[serde(default)]
    pub taxes_included: bool,
    #[serde(default, deserialize_with = "de_text")]
    pub financial_status: String,
    #[serde(default)]
    pub cancelled_at: Option<String>,
    #[serde(default)]
    pub customer: Option<Customer>,
    #[serde(default)]
    pub line_items: Vec<LineItem>,
    #[serde(default)]
    pub refunds: Vec<Refund>,
}

impl Order {
    /// Paid enough to reserve in `orders/paid` mode.
    pub fn is_paid(&self) -> bool {
        matches!(
            self.financial_status.as_str(),
            "paid" | "partially_paid" | "partially_refunded" | "refunded"
        )
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct RefundLineItem {
    #[serde(deserialize_with = "de_id")]
    pub line_item_id: String,
    pub quantity: i64,
    #[serde(default, deserialize_with = "de_text")]
    pub restock_type: String,
    #[serde(default)]
    pub line_item: Option<LineItem>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Refund {
    #[serde(deserialize_with = "de_id")]
    pub id: String,
    #[serde(deserialize_with = "de_id")]
    pub order_id: String,
    #[serde(default)]
    pub refund_line_items: Vec<RefundLineItem>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Fulfillment {
    #[serde(deserialize_with = "de_id")]
    pub id: String,
    #[serde(deserialize_with = "de_id")]
    pub order_id: String,
    #[serde(default, deserialize_with = "de_text")]
    pub status: String,
    #[serde(default)]
    pub line_items: Vec<LineItem>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct EditDelta {
    #[serde(deserialize_with = "de_id")]
    pub id: String,
    pub delta: i64,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct EditLines {
    #[serde(default)]
    pub additions: Vec<EditDelta>,
    #[serde(default)]
    pub removals: Vec<EditDelta>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct OrderEdit {
    #[serde(deserialize_with = "de_id")]
    pub id: String,
    #[serde(deserialize_with = "de_id")]
    pub order_id: String,
    #[serde(default)]
    pub line_items: EditLines,
}

/// `orders/edited` wraps the edit.
#[derive(Debug, Clone, Deserialize)]
pub struct OrderEdited {
    pub order_edit: OrderEdit,
}
