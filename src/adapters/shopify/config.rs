//! `stockpool adapter shopify --config FILE`: the TOML file, with the two
//! secrets from the environment (they win over the file).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The Admin API version the adapter speaks.
pub const API_VERSION: &str = "2026-04";
/// Quantities per `inventorySetQuantities` (Shopify's limit).
pub const MAX_BATCH: usize = 250;

/// Which topic turns a Shopify order into a reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub enum ReserveOn {
    /// Every order, at once (`orders/create`).
    #[serde(rename = "orders/create")]
    Create,
    /// Once paid (`orders/paid`, or an `orders/updated` showing it paid).
    #[serde(rename = "orders/paid")]
    Paid,
}

/// The file as written.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    shop: String,
    location_id: String,
    admin_url: Option<String>,
    channel: Option<String>,
    reserve_on: Option<ReserveOn>,
    webhook_addr: Option<String>,
    metrics_addr: Option<String>,
    state_dir: Option<PathBuf>,
    reconcile_interval_s: Option<u64>,
    batch_size: Option<usize>,
    timeout_ms: Option<u64>,
    max_backoff_ms: Option<u64>,
    client_secret: Option<String>,
    access_token: Option<String>,
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct ShopifyConfig {
    /// `your-shop.myshopify.com`.
    pub shop: String,
    /// `https://<shop>` unless set (a proxy, or a test's fake).
    pub admin_url: String,
    /// The location whose quantities the adapter sets, as a GID.
    pub location_id: String,
    /// The stockpool channel (default `shopify`).
    pub channel: String,
    pub reserve_on: ReserveOn,
    /// Where Shopify's webhooks are received.
    pub webhook_addr: SocketAddr,
    /// `/metrics`, `/healthz`, `/readyz`, `/unapplied`.
    pub metrics_addr: SocketAddr,
    /// The adapter's own state (`shopify.db`).
    pub state_dir: PathBuf,
    /// Compare every mapped item with stockpool's level this often (0: at
    /// start only).
    pub reconcile_interval: Duration,
    /// Quantities per mutation, at most 250.
    pub batch_size: usize,
    /// Per call to Shopify.
    pub timeout: Duration,
    /// Longest wait between retries while Shopify is down.
    pub max_backoff: Duration,
    /// The app's client secret: the webhook HMAC key.
    pub client_secret: String,
    /// The Admin API access token.
    pub access_token: String,
}

fn addr(key: &str, value: Option<String>, default: &str) -> anyhow::Result<SocketAddr> {
    let text = value.unwrap_or_else(|| default.to_string());
    text.parse()
        .map_err(|e| anyhow::anyhow!("{key} = {text:?}: not an address like 127.0.0.1:8081 ({e})"))
}

impl ShopifyConfig {
    /// Reads `path`; `STOCKPOOL_SHOPIFY_CLIENT_SECRET` and
    /// `STOCKPOOL_SHOPIFY_ACCESS_TOKEN` override the file's secrets.
    pub fn load(path: &Path) -> anyhow::Result<ShopifyConfig> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
        Self::parse(
            &text,
            std::env::var("STOCKPOOL_SHOPIFY_CLIENT_SECRET").ok(),
            std::env::var("STOCKPOOL_SHOPIFY_ACCESS_TOKEN").ok(),
        )
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    pub fn parse(
        text: &str,
        secret: Option<String>,
        token: Option<String>,
    ) -> anyhow::Result<ShopifyConfig> {
        let f: File = toml::from_str(text)?;
        let shop = f.shop.trim().to_string();
        if shop.is_empty() || shop.contains('/') || !shop.contains('.') {
            anyhow::bail!(
                "shop = {shop:?}: expected the shop's domain, like your-shop.myshopify.com"
            );
        }
        let location_id = match f.location_id.trim() {
            id if id.starts_with("gid://shopify/Location/") => id.to_string(),
            id if !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) => {
                format!("gid://shopify/Location/{id}")
            }
            id => anyhow::bail!(
                "location_id = {id:?}: expected a location id (123456789) or gid://shopify/Location/123456789"
            ),
        };
        let admin_url = f
            .admin_url
            .unwrap_or_else(|| format!("https://{shop}"))
            .trim_end_matches('/')
            .to_string();
        if !(admin_url.starts_with("https://") || admin_url.starts_with("http://")) {
            anyhow::bail!("admin_url = {admin_url:?}: expected https://...");
        }
        let client_secret = secret
            .or(f.client_secret)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| anyhow::anyhow!("the app's client secret is missing: set STOCKPOOL_SHOPIFY_CLIENT_SECRET (or client_secret)"))?;
        let access_token = token
            .or(f.access_token)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| anyhow::anyhow!("the Admin API access token is missing: set STOCKPOOL_SHOPIFY_ACCESS_TOKEN (or access_token)"))?;
        let batch_size = f.batch_size.unwrap_or(MAX_BATCH);
        if !(1..=MAX_BATCH).contains(&batch_size) {
            anyhow::bail!(
                "batch_size = {batch_size}: must be 1..=250 (Shopify's limit per mutation)"
            );
        }
        Ok(ShopifyConfig {
            shop,
            admin_url,
            location_id,
            channel: f.channel.unwrap_or_else(|| "shopify".into()),
            reserve_on: f.reserve_on.unwrap_or(ReserveOn::Create),
            webhook_addr: addr("webhook_addr", f.webhook_addr, "127.0.0.1:8081")?,
            metrics_addr: addr("metrics_addr", f.metrics_addr, "127.0.0.1:9465")?,
            state_dir: f
                .state_dir
                .unwrap_or_else(|| PathBuf::from("./data/shopify")),
            reconcile_interval: Duration::from_secs(f.reconcile_interval_s.unwrap_or(600)),
            batch_size,
            timeout: Duration::from_millis(f.timeout_ms.unwrap_or(10_000).max(1)),
            max_backoff: Duration::from_millis(f.max_backoff_ms.unwrap_or(5_000).max(50)),
            client_secret,
            access_token,
        })
    }

    /// The Admin GraphQL endpoint.
    pub fn graphql_url(&self) -> String {
        format!("{}/admin/api/{API_VERSION}/graphql.json", self.admin_url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minimal_file_takes_the_documented_defaults_and_the_secrets_from_the_environment() {
        let c = ShopifyConfig::parse(
            "shop = \"demo.myshopify.com\"\nlocation_id = \"655441491\"\n",
            Some("secret".into()),
            Some("shpat_x".into()),
        )
        .unwrap();
        assert_eq!(c.location_id, "gid://shopify/Location/655441491");
        assert_eq!(
            c.graphql_url(),
            "https://demo.myshopify.com/admin/api/2026-04/graphql.json"
        );
        assert_eq!(
            (c.channel.as_str(), c.reserve_on, c.batch_size),
            ("shopify", ReserveOn::Create, 250)
        );
        assert_eq!(c.reconcile_interval, Duration::from_secs(600));
    }

    #[test]
    fn wrong_values_are_refused_with_the_key_that_is_wrong() {
        let err = |text: &str| {
            ShopifyConfig::parse(text, Some("s".into()), Some("t".into()))
                .unwrap_err()
                .to_string()
        };
        assert!(err("shop = \"demo\"\nlocation_id = \"1\"").contains("shop ="));
        assert!(err("shop = \"a.myshopify.com\"\nlocation_id = \"x1\"").contains("location_id"));
        assert!(
            err("shop = \"a.myshopify.com\"\nlocation_id = \"1\"\nbatch_size = 300")
                .contains("batch_size")
        );
        assert!(err(
            "shop = \"a.myshopify.com\"\nlocation_id = \"1\"\nreserve_on = \"orders/fulfilled\""
        )
        .contains("reserve_on"));
        assert!(ShopifyConfig::parse(
            "shop = \"a.myshopify.com\"\nlocation_id = \"1\"",
            None,
            Some("t".into())
        )
        .unwrap_err()
        .to_string()
        .contains("STOCKPOOL_SHOPIFY_CLIENT_SECRET"));
    }
}
