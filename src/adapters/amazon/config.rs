//! `stockpool adapter amazon --config FILE`: the TOML file, with the three
//! Login with Amazon secrets from the environment (they win over the file).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One operation's usage plan: requests per second restored, and burst.
#[derive(Debug, Clone, Copy, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    /// Requests per second restored.
    pub rate: f64,
    /// Requests that may go at once from a full bucket.
    pub burst: u32,
}

/// The usage plans the adapter paces itself by (SP-API's documented
/// defaults; an account's own plan may differ, see
/// `x-amzn-RateLimit-Limit`).
#[derive(Debug, Clone, PartialEq)]
pub struct Rates {
    /// Orders API v0: one call a minute sustained.
    pub get_orders: Rate,
    /// Orders API v0, once per new order (and per page of items).
    pub get_order_items: Rate,
    /// Listings Items 2021-08-01: one SKU's level per call.
    pub patch_listings_item: Rate,
    /// Listings Items 2021-08-01: the read-back of an accepted patch.
    pub get_listings_item: Rate,
    /// Feeds 2021-06-30, once per feed.
    pub create_feed_document: Rate,
    /// Feeds 2021-06-30, once per feed: the slowest plan of all.
    pub create_feed: Rate,
    /// Feeds 2021-06-30: the status reads while a feed is processed.
    pub get_feed: Rate,
    /// Feeds 2021-06-30: the processing report's address.
    pub get_feed_document: Rate,
    /// Tokens 2021-03-01: the Restricted Data Token for `buyer_info`.
    pub create_restricted_data_token: Rate,
}

impl Default for Rates {
    fn default() -> Rates {
        let r = |rate, burst| Rate { rate, burst };
        Rates {
            get_orders: r(0.0167, 20),
            get_order_items: r(0.5, 30),
            // Current docs: burst 5; older ones said 10.
            patch_listings_item: r(5.0, 5),
            get_listings_item: r(5.0, 10),
            create_feed_document: r(0.5, 15),
            create_feed: r(0.0083, 15),
            get_feed: r(2.0, 15),
            get_feed_document: r(0.0222, 10),
            create_restricted_data_token: r(1.0, 10),
        }
    }
}

/// The file as written.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    region: Option<String>,
    endpoint: Option<String>,
    lwa_url: Option<String>,
    seller_id: String,
    marketplace_id: String,
    channel: Option<String>,
    metrics_addr: Option<String>,
    state_dir: Option<PathBuf>,
    poll_interval_ms: Option<u64>,
    page_size: Option<u32>,
    overlap_s: Option<u64>,
    data_delay_ms: Option<u64>,
    start_back_s: Option<u64>,
    hold_s: Option<u32>,
    include_afn: Option<bool>,
    buyer_info: Option<bool>,
    feed_threshold: Option<usize>,
    feed_poll_ms: Option<u64>,
    verify_after_ms: Option<u64>,
    verify_attempts: Option<u32>,
    timeout_ms: Option<u64>,
    max_backoff_ms: Option<u64>,
    #[serde(default)]
    sku_map: BTreeMap<String, String>,
    #[serde(default)]
    rates: BTreeMap<String, Rate>,
    #[serde(default)]
    prices_include_tax: BTreeMap<String, bool>,
    client_id: Option<String>,
    client_secret: Option<String>,
    refresh_token: Option<String>,
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct AmazonConfig {
    /// The SP-API endpoint: the region's unless set (a proxy, a sandbox,
    /// a test's fake).
    pub endpoint: String,
    /// Login with Amazon's token endpoint.
    pub lwa_url: String,
    /// The seller (merchant token) whose listings are patched.
    pub seller_id: String,
    /// The marketplace orders are read from and listings written to.
    pub marketplace_id: String,
    /// The stockpool channel (default `amazon`).
    pub channel: String,
    /// `/metrics`, `/healthz`, `/readyz`, `/unapplied`.
    pub metrics_addr: SocketAddr,
    /// The adapter's own state (`amazon.db`).
    pub state_dir: PathBuf,
    /// Time between getOrders polls (default 60 s: its sustained rate).
    pub poll_interval: Duration,
    /// Orders per getOrders page (`MaxResultsPerPage`, 1..=100).
    pub page_size: u32,
    /// How far back each poll reaches before the last one's end: Amazon's
    /// data lags, an order updated just before may show up late.
    pub overlap: Duration,
    /// The two-minute rule: `LastUpdatedBefore` is at least this far in
    /// the past (default 120 s as documented; tests shorten it).
    pub data_delay: Duration,
    /// On the very first start, how far back orders are read.
    pub start_back: Duration,
    /// The hold of a Pending (unpaid) order's reservation; one still
    /// Pending near the end is held again.
    pub hold: Duration,
    /// Also reserve orders Amazon fulfils from its own stock (AFN/FBA).
    pub include_afn: bool,
    /// Read business buyers' `BuyerInfo` (getOrders with a Restricted Data
    /// Token): needs the app's Tax Invoicing / Tax Remittance (PII) role,
    /// so off by default.
    pub buyer_info: bool,
    /// Amazon SellerSKU → stockpool SKU, where they differ (one to one:
    /// the SKU's level is written to that listing).
    pub sku_map: BTreeMap<String, String>,
    /// Above this many SKUs due, one JSON_LISTINGS_FEED instead of patches.
    pub feed_threshold: usize,
    /// How often a submitted feed's status is read.
    pub feed_poll: Duration,
    /// How long after an accepted patch its listing is read back.
    pub verify_after: Duration,
    /// Read-backs before an accepted patch that did not take is sent again.
    pub verify_attempts: u32,
    /// The usage plans the adapter paces itself by.
    pub rates: Rates,
    /// Whether Amazon's `ItemPrice` in this marketplace includes the tax
    /// (VAT marketplaces) or not (US sales tax is added on top): the
    /// `prices_include_tax` of every Reserve. From `[prices_include_tax]`
    /// when it names the marketplace, else from [`tax_included`].
    pub prices_include_tax: bool,
    /// Per call to Amazon.
    pub timeout: Duration,
    /// Longest wait between retries while Amazon is down.
    pub max_backoff: Duration,
    /// The app's LWA client id.
    pub client_id: String,
    /// The app's LWA client secret.
    pub client_secret: String,
    /// The seller's refresh token (it authorises the app for the seller).
    pub refresh_token: String,
}

/// Whether `ItemPrice` includes the tax, for the marketplaces whose rule
/// the adapter knows: VAT marketplaces (prices shown and charged with VAT)
/// true, North and South America (tax added at checkout) false. `None`
/// for any other: the config has to say.
pub fn tax_included(marketplace_id: &str) -> Option<bool> {
    match marketplace_id {
        // UK, DE, FR, IT, ES, NL, SE, PL, BE, TR.
        "A1F83G8C2ARO7P" | "A1PA6795UKMFR9" | "A13V1IB3VIYZZH" | "APJ6JRA9NG5V4"
        | "A1RKKUPIHCS9HS" | "A1805IZSGTT6HS" | "A2NODRKZP88ZB9" | "A1C3SOZRARQ6R3"
        | "AMEN7PMS3EDWL" | "A33AVAJ2PDY3EV" => Some(true),
        // US, CA, MX, BR.
        "ATVPDKIKX0DER" | "A2EUQ1WTGCTBG2" | "A1AM78C64UM0Y8" | "A2Q3Y263D00KWC" => Some(false),
        _ => None,
    }
}

fn addr(key: &str, value: Option<String>, default: &str) -> anyhow::Result<SocketAddr> {
    let text = value.unwrap_or_else(|| default.to_string());
    text.parse()
        .map_err(|e| anyhow::anyhow!("{key} = {text:?}: not an address like 127.0.0.1:9466 ({e})"))
}

fn url(key: &str, text: String) -> anyhow::Result<String> {
    let text = text.trim().trim_end_matches('/').to_string();
    if !(text.starts_with("https://") || text.starts_with("http://"))
        || text.parse::<hyper::Uri>().is_err()
    {
        anyhow::bail!(
            "{key} = {text:?}: expected a URL like https://sellingpartnerapi-eu.amazon.com"
        );
    }
    Ok(text)
}

/// The three secrets, each from its variable when set.
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    /// `STOCKPOOL_AMAZON_CLIENT_ID`.
    pub client_id: Option<String>,
    /// `STOCKPOOL_AMAZON_CLIENT_SECRET`.
    pub client_secret: Option<String>,
    /// `STOCKPOOL_AMAZON_REFRESH_TOKEN`.
    pub refresh_token: Option<String>,
}

impl Secrets {
    pub fn from_env() -> Secrets {
        Secrets {
            client_id: std::env::var("STOCKPOOL_AMAZON_CLIENT_ID").ok(),
            client_secret: std::env::var("STOCKPOOL_AMAZON_CLIENT_SECRET").ok(),
            refresh_token: std::env::var("STOCKPOOL_AMAZON_REFRESH_TOKEN").ok(),
        }
    }
}

impl AmazonConfig {
    /// Reads `path`; the secrets come from `STOCKPOOL_AMAZON_CLIENT_ID`,
    /// `STOCKPOOL_AMAZON_CLIENT_SECRET`, `STOCKPOOL_AMAZON_REFRESH_TOKEN`.
    pub fn load(path: &Path) -> anyhow::Result<AmazonConfig> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
        Self::parse(&text, Secrets::from_env())
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    pub fn parse(text: &str, secrets: Secrets) -> anyhow::Result<AmazonConfig> {
        let f: File = toml::from_str(text)?;
        let region = f.region.unwrap_or_else(|| "na".into());
        let regional = match region.as_str() {
            "na" => "https://sellingpartnerapi-na.amazon.com",
            "eu" => "https://sellingpartnerapi-eu.amazon.com",
            "fe" => "https://sellingpartnerapi-fe.amazon.com",
            other => anyhow::bail!("region = {other:?}: expected na, eu or fe"),
        };
        let endpoint = url("endpoint", f.endpoint.unwrap_or_else(|| regional.into()))?;
        let lwa_url = url(
            "lwa_url",
            f.lwa_url
                .unwrap_or_else(|| "https://api.amazon.com/auth/o2/token".into()),
        )?;
        let seller_id = f.seller_id.trim().to_string();
        if seller_id.is_empty() || !seller_id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            anyhow::bail!(
                "seller_id = {seller_id:?}: expected the merchant token, like A2EXAMPLE1SELLER"
            );
        }
        let marketplace_id = f.marketplace_id.trim().to_string();
        if marketplace_id.is_empty() || !marketplace_id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            anyhow::bail!("marketplace_id = {marketplace_id:?}: expected a marketplace id, like ATVPDKIKX0DER");
        }
        let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
        for (from, to) in &f.sku_map {
            if let Some(other) = seen.insert(to, from) {
                anyhow::bail!("sku_map: {other:?} and {from:?} both map to {to:?}: one Amazon listing per stockpool SKU (its level is written to that listing)");
            }
            if !crate::adapters::valid_sku(to) {
                anyhow::bail!("sku_map: {from:?} = {to:?}: not a SKU stockpool accepts (at most 64 letters, digits, -, _, .)");
            }
        }
        let mut rates = Rates::default();
        for (op, rate) in &f.rates {
            if !(rate.rate > 0.0 && rate.rate.is_finite()) || rate.burst == 0 {
                anyhow::bail!("rates.{op}: rate must be > 0 and burst at least 1");
            }
            let slot = match op.as_str() {
                "getOrders" => &mut rates.get_orders,
                "getOrderItems" => &mut rates.get_order_items,
                "patchListingsItem" => &mut rates.patch_listings_item,
                "getListingsItem" => &mut rates.get_listings_item,
                "createFeedDocument" => &mut rates.create_feed_document,
                "createFeed" => &mut rates.create_feed,
                "getFeed" => &mut rates.get_feed,
                "getFeedDocument" => &mut rates.get_feed_document,
                "createRestrictedDataToken" => &mut rates.create_restricted_data_token,
                other => anyhow::bail!("rates.{other}: not an operation the adapter calls (getOrders, getOrderItems, patchListingsItem, getListingsItem, createFeedDocument, createFeed, getFeed, getFeedDocument, createRestrictedDataToken)"),
            };
            *slot = *rate;
        }
        let secret = |value: Option<String>, file: Option<String>, var: &str, what: &str| {
            value
                .or(file)
                .filter(|s| !s.is_empty())
                .ok_or_else(|| anyhow::anyhow!("the {what} is missing: set {var}"))
        };
        let client_id = secret(
            secrets.client_id,
            f.client_id,
            "STOCKPOOL_AMAZON_CLIENT_ID",
            "LWA client id",
        )?;
        let client_secret = secret(
            secrets.client_secret,
            f.client_secret,
            "STOCKPOOL_AMAZON_CLIENT_SECRET",
            "LWA client secret",
        )?;
        let refresh_token = secret(
            secrets.refresh_token,
            f.refresh_token,
            "STOCKPOOL_AMAZON_REFRESH_TOKEN",
            "LWA refresh token",
        )?;
        let page_size = f.page_size.unwrap_or(100);
        if !(1..=100).contains(&page_size) {
            anyhow::bail!("page_size = {page_size}: getOrders pages hold 1 to 100 orders");
        }
        let hold_s = f.hold_s.unwrap_or(86_400);
        if hold_s == 0 {
            anyhow::bail!("hold_s = 0: a Pending order needs a hold (seconds, at least 1)");
        }
        for id in f.prices_include_tax.keys() {
            if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
                anyhow::bail!(
                    "prices_include_tax: {id:?} is not a marketplace id, like A1PA6795UKMFR9"
                );
            }
        }
        let prices_include_tax = match f
            .prices_include_tax
            .get(&marketplace_id)
            .copied()
            .or_else(|| tax_included(&marketplace_id))
        {
            Some(included) => included,
            None => anyhow::bail!(
                "marketplace {marketplace_id}: the adapter does not know whether its ItemPrice includes tax; say so under [prices_include_tax] as {marketplace_id} = true (VAT included) or false (tax added on top)"
            ),
        };
        Ok(AmazonConfig {
            endpoint,
            lwa_url,
            seller_id,
            marketplace_id,
            channel: f.channel.unwrap_or_else(|| "amazon".into()),
            metrics_addr: addr("metrics_addr", f.metrics_addr, "127.0.0.1:9466")?,
            state_dir: f
                .state_dir
                .unwrap_or_else(|| PathBuf::from("./data/amazon")),
            poll_interval: Duration::from_millis(f.poll_interval_ms.unwrap_or(60_000).max(10)),
            page_size,
            overlap: Duration::from_secs(f.overlap_s.unwrap_or(300)),
            data_delay: Duration::from_millis(f.data_delay_ms.unwrap_or(120_000)),
            start_back: Duration::from_secs(f.start_back_s.unwrap_or(3_600)),
            hold: Duration::from_secs(u64::from(hold_s)),
            include_afn: f.include_afn.unwrap_or(false),
            buyer_info: f.buyer_info.unwrap_or(false),
            sku_map: f.sku_map,
            feed_threshold: f.feed_threshold.unwrap_or(500).max(1),
            feed_poll: Duration::from_millis(f.feed_poll_ms.unwrap_or(30_000).max(10)),
            verify_after: Duration::from_millis(f.verify_after_ms.unwrap_or(5_000)),
            verify_attempts: f.verify_attempts.unwrap_or(5).max(1),
            rates,
            prices_include_tax,
            timeout: Duration::from_millis(f.timeout_ms.unwrap_or(10_000).max(1)),
            max_backoff: Duration::from_millis(f.max_backoff_ms.unwrap_or(30_000).max(50)),
            client_id,
            client_secret,
            refresh_token,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets() -> Secrets {
        Secrets {
            client_id: Some("amzn1.application-oa2-client.x".into()),
            client_secret: Some("s".into()),
            refresh_token: Some("Atzr|r".into()),
        }
    }

    #[test]
    fn a_minimal_file_takes_the_region_endpoint_and_the_documented_rates() {
        let c = AmazonConfig::parse(
            "region = \"eu\"\nseller_id = \"A2EXAMPLE\"\nmarketplace_id = \"A1PA6795UKMFR9\"\n",
            secrets(),
        )
        .unwrap();
        assert_eq!(c.endpoint, "https://sellingpartnerapi-eu.amazon.com");
        assert_eq!(c.lwa_url, "https://api.amazon.com/auth/o2/token");
        assert_eq!(c.channel, "amazon");
        assert_eq!(
            c.rates.get_orders,
            Rate {
                rate: 0.0167,
                burst: 20
            }
        );
        assert_eq!(
            c.rates.patch_listings_item,
            Rate {
                rate: 5.0,
                burst: 5
            }
        );
        assert_eq!(c.data_delay, Duration::from_secs(120));
        assert!(!c.include_afn);
        assert!(
            !c.buyer_info,
            "BuyerInfo needs the PII role: off unless asked"
        );
    }

    #[test]
    fn the_example_file_is_valid_and_says_the_documented_defaults() {
        let c = AmazonConfig::parse(
            include_str!("../../../examples/amazon-adapter.toml"),
            secrets(),
        )
        .unwrap();
        assert_eq!(c.rates, Rates::default());
        assert_eq!(
            c.sku_map.get("TEE-BLK-M-FBM").map(String::as_str),
            Some("TEE-BLK-M")
        );
        assert_eq!(c.poll_interval, Duration::from_secs(60));
        assert!(c.prices_include_tax, "Amazon.de prices include VAT");
    }

    #[test]
    fn prices_include_tax_follows_the_marketplace_unless_the_file_says_otherwise() {
        let parse = |marketplace: &str, table: &str| {
            AmazonConfig::parse(
                &format!("seller_id = \"A1\"\nmarketplace_id = \"{marketplace}\"\n{table}"),
                secrets(),
            )
        };
        assert!(
            parse("A1F83G8C2ARO7P", "").unwrap().prices_include_tax,
            "UK"
        );
        assert!(
            parse("A33AVAJ2PDY3EV", "").unwrap().prices_include_tax,
            "TR"
        );
        assert!(
            !parse("ATVPDKIKX0DER", "").unwrap().prices_include_tax,
            "US"
        );
        assert!(
            !parse("A2Q3Y263D00KWC", "").unwrap().prices_include_tax,
            "BR"
        );
        let overridden = parse(
            "ATVPDKIKX0DER",
            "[prices_include_tax]\nATVPDKIKX0DER = true\n",
        );
        assert!(overridden.unwrap().prices_include_tax);
        let other = parse(
            "A1VC38T7YXB528",
            "[prices_include_tax]\nA1VC38T7YXB528 = true\n",
        );
        assert!(other.unwrap().prices_include_tax, "JP, from the file");
        let unknown = parse(
            "A1VC38T7YXB528",
            "[prices_include_tax]\nATVPDKIKX0DER = true\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            unknown.contains("marketplace A1VC38T7YXB528")
                && unknown.contains("[prices_include_tax]"),
            "{unknown}"
        );
        let bad = parse("ATVPDKIKX0DER", "[prices_include_tax]\n\"US 1\" = true\n")
            .unwrap_err()
            .to_string();
        assert!(bad.contains("prices_include_tax"), "{bad}");
    }

    #[test]
    fn wrong_values_are_refused_with_the_key_that_is_wrong() {
        let err = |extra: &str| {
            AmazonConfig::parse(
                &format!("seller_id = \"A1\"\nmarketplace_id = \"M1\"\n{extra}"),
                secrets(),
            )
            .unwrap_err()
            .to_string()
        };
        assert!(err("region = \"mars\"").contains("region"));
        assert!(err("endpoint = \"ftp://x\"").contains("endpoint"));
        assert!(err("hold_s = 0").contains("hold_s"));
        assert!(err("page_size = 101").contains("page_size"));
        assert!(
            err("[rates]\npatchListingsItem = { rate = 0.0, burst = 5 }")
                .contains("rates.patchListingsItem")
        );
        assert!(err("[rates]\nputItem = { rate = 1.0, burst = 5 }").contains("rates.putItem"));
        assert!(err("[sku_map]\n\"AMZ 1\" = \"BAD SKU\"").contains("sku_map"));
        assert!(err("[sku_map]\nA1 = \"TEE\"\nA2 = \"TEE\"").contains("both map to"));
        let missing = AmazonConfig::parse(
            "seller_id = \"A1\"\nmarketplace_id = \"M1\"\n",
            Secrets::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(missing.contains("STOCKPOOL_AMAZON_CLIENT_ID"), "{missing}");
    }
}
