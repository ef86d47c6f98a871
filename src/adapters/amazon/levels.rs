//! Levels out: every SKU due in the adapter's state is set on its Amazon
//! listing as `fulfillment_availability` (channel `DEFAULT`, quantity =
//! stockpool's published level), coalesced per SKU.
//!
//! - A small backlog goes by `patchListingsItem`, one SKU per call, paced
//!   by the operation's bucket (5/s, burst 5 by default). Amazon answers
//!   `ACCEPTED` and applies later: accepted is not applied. Each accepted
//!   SKU is read back (`getListingsItem`, `includedData=fulfillmentAvailability`)
//!   `verify_after` later; only a read showing the quantity settles it. One
//!   still showing something else after `verify_attempts` reads is sent
//!   again. `INVALID` (issues) and a SKU with no listing are logged,
//!   counted and settled: sending them again would not help.
//! - Above `feed_threshold` SKUs due, one `JSON_LISTINGS_FEED` carries them
//!   all (up to 10,000 messages): createFeedDocument, upload, createFeed,
//!   getFeed until `DONE`, then the processing report (getFeedDocument):
//!   a message with an `ERROR` issue is settled as failed; every other one
//!   is accepted, which again is not applied (Amazon can accept a message
//!   and not apply it): its SKU goes to the read-backs like an accepted
//!   patch, and one that does not show its quantity is sent again. A
//!   GZIP-compressed report (not read) sends every SKU of the feed to the
//!   read-backs. A feed `CANCELLED` or `FATAL` leaves everything due.
//! - Read-backs are paced by getListingsItem's bucket and go at most a
//!   bucketful per round, between the rounds' writes, so thousands of them
//!   after a feed never hold up newer levels; a SKU whose level moved on
//!   meanwhile is not read back (its newer write will be).
//!
//! A SKU whose level moved on while its write was in flight is written
//! again at its newer level; nothing stale is ever settled as written.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::Method;
use serde_json::{json, Value};

use super::config::AmazonConfig;
use super::orders::now_ms;
use super::spapi::{enc, SpApi, SpError};
use crate::adapters::metrics;
use crate::adapters::state::{LevelRow, StateDb};

/// Messages per feed at most (Amazon's limit for JSON_LISTINGS_FEED).
const FEED_MAX: usize = 10_000;
/// Rows looked at per round.
const ROUND: i64 = 20_000;

/// An accepted patch waiting to be seen applied.
#[derive(Debug, Clone)]
struct Awaiting {
    row: LevelRow,
    check_at: Instant,
    reads: u32,
}

/// The levels side: patches, feeds, read-backs.
pub struct Writer {
    api: Arc<SpApi>,
    /// The levels due (coalesced per SKU) and what was written.
    db: StateDb,
    config: AmazonConfig,
    /// Accepted patches not yet seen applied, by SKU. In memory only: after
    /// a restart those SKUs are still due and are sent again (an absolute
    /// quantity: sending it twice changes nothing).
    awaiting: HashMap<String, Awaiting>,
    /// stockpool SKU → the Amazon SellerSKU of its listing (the reverse
    /// of `sku_map`; a SKU not in it is listed under its own code).
    listing_of: HashMap<String, String>,
}

/// The patch that sets a listing's quantity.
fn patches(quantity: i64) -> Value {
    json!([{
        "op": "replace",
        "path": "/attributes/fulfillment_availability",
        "value": [{ "fulfillment_channel_code": "DEFAULT", "quantity": quantity.max(0) }]
    }])
}

/// The DEFAULT channel's quantity in a getListingsItem answer.
fn default_quantity(item: &Value) -> Option<i64> {
    item.get("fulfillmentAvailability")?
        .as_array()?
        .iter()
        .find(|f| f.get("fulfillmentChannelCode").and_then(Value::as_str) == Some("DEFAULT"))?
        .get("quantity")?
        .as_i64()
}

impl Writer {
    pub fn new(config: &AmazonConfig, api: Arc<SpApi>, db: StateDb) -> Writer {
        Writer {
            api,
            db,
            config: config.clone(),
            awaiting: HashMap::new(),
            listing_of: config
                .sku_map
                .iter()
                .map(|(seller, sku)| (sku.clone(), seller.clone()))
                .collect(),
        }
    }

    /// The SellerSKU of `sku`'s listing.
    fn listing<'a>(&'a self, sku: &'a str) -> &'a str {
        self.listing_of.get(sku).map(String::as_str).unwrap_or(sku)
    }

    fn item_path(&self, sku: &str) -> String {
        format!(
            "/listings/2021-08-01/items/{}/{}?marketplaceIds={}",
            enc(&self.config.seller_id),
            enc(self.listing(sku)),
            enc(&self.config.marketplace_id)
        )
    }

    async fn mark(&self, done: &[(String, u64)]) -> Result<(), SpError> {
        if done.is_empty() {
            return Ok(());
        }
        self.db
            .written(done)
            .await
            .map_err(|e| SpError::Unavailable(format!("the adapter's state: {e}")))
    }

    fn applied(&self, row: &LevelRow) {
        metrics::writes(&self.config.channel, "written", 1);
        if row.fresh && row.at_ms > 0 {
            metrics::lag(&self.config.channel, (now_ms() - row.at_ms) as f64 / 1000.0);
        }
    }

    /// One round: read back what is due for it, then the feed or patches.
    pub async fn settle(&mut self) -> Result<usize, SpError> {
        let rows = self
            .db
            .due(ROUND)
            .await
            .map_err(|e| SpError::Unavailable(format!("the adapter's state: {e}")))?;
        metrics::pending(&self.config.channel, rows.len() as i64);
        // An awaited SKU whose level moved on is due again at the new level.
        let current: HashMap<&str, u64> = rows.iter().map(|r| (r.sku.as_str(), r.seq)).collect();
        self.awaiting
            .retain(|sku, a| current.get(sku.as_str()) == Some(&a.row.seq));
        let mut done = self.verify().await?;
        let due: Vec<LevelRow> = rows
            .into_iter()
            .filter(|r| !self.awaiting.contains_key(&r.sku))
            .collect();
        if due.len() > self.config.feed_threshold {
            let n = due.len().min(FEED_MAX);
            done += self.feed(&due[..n]).await?;
        } else if !due.is_empty() {
            done += self.patch(&due).await?;
        }
        if done == 0 && !self.awaiting.is_empty() {
            // Only read-backs left: wait for the first one, briefly.
            let first = self.awaiting.values().map(|a| a.check_at).min();
            let wait = first
                .map(|t| t.saturating_duration_since(Instant::now()))
                .unwrap_or_default()
                .min(Duration::from_millis(250));
            tokio::time::sleep(wait).await;
            return Ok(1);
        }
        Ok(done)
    }

    /// Patches SKUs while the bucket has tokens (at least one), so a
    /// backlog growing meanwhile is seen at the next round.
    async fn patch(&mut self, due: &[LevelRow]) -> Result<usize, SpError> {
        let tokens = self
            .api
            .tokens("patchListingsItem")
            .unwrap_or(f64::from(self.config.rates.patch_listings_item.burst));
        let n = (tokens.floor().max(1.0) as usize).min(due.len());
        let mut settled = Vec::new();
        for row in &due[..n] {
            let body = json!({ "productType": "PRODUCT", "patches": patches(row.published) });
            let path = format!("{}&includedData=issues", self.item_path(&row.sku));
            match self
                .api
                .call("patchListingsItem", Method::PATCH, &path, Some(&body))
                .await
            {
                Ok(answer) => match answer.get("status").and_then(Value::as_str) {
                    Some("ACCEPTED") => {
                        self.awaiting.insert(
                            row.sku.clone(),
                            Awaiting {
                                row: row.clone(),
                                check_at: Instant::now() + self.config.verify_after,
                                reads: 0,
                            },
                        );
                    }
                    other => {
                        let issues = answer.get("issues").cloned().unwrap_or(Value::Null);
                        tracing::warn!(channel = %self.config.channel, sku = %row.sku, status = ?other, %issues, "Amazon refused the listing's quantity; skipped");
                        metrics::writes(&self.config.channel, "failed", 1);
                        settled.push((row.sku.clone(), row.seq));
                    }
                },
                Err(e) if e.is_not_found() => {
                    tracing::warn!(channel = %self.config.channel, sku = %row.sku, "no Amazon listing has this SKU: its level is skipped");
                    metrics::writes(&self.config.channel, "unmapped", 1);
                    settled.push((row.sku.clone(), row.seq));
                }
                Err(SpError::Refused {
                    status: 400,
                    code,
                    message,
                    ..
                }) => {
                    tracing::warn!(channel = %self.config.channel, sku = %row.sku, %code, %message, "Amazon refused the patch; skipped");
                    metrics::writes(&self.config.channel, "failed", 1);
                    settled.push((row.sku.clone(), row.seq));
                }
                Err(e) => {
                    self.mark(&settled).await?;
                    return Err(e);
                }
            }
        }
        self.mark(&settled).await?;
        Ok(n)
    }

    /// Reads back every accepted patch due for it.
    async fn verify(&mut self) -> Result<usize, SpError> {
        let now = Instant::now();
        let ready: Vec<String> = self
            .awaiting
            .iter()
            .filter(|(_, a)| a.check_at <= now)
            .map(|(s, _)| s.clone())
            // As many as the bucket holds now (at least one): a long list
            // of read-backs never holds up the next levels.
            .take(
                self.api
                    .tokens("getListingsItem")
                    .unwrap_or(f64::from(self.config.rates.get_listings_item.burst))
                    .floor()
                    .max(1.0) as usize,
            )
            .collect();
        let mut count = 0;
        for sku in ready {
            let path = format!(
                "{}&includedData=fulfillmentAvailability",
                self.item_path(&sku)
            );
            let read = self
                .api
                .call("getListingsItem", Method::GET, &path, None)
                .await;
            let Some(mut a) = self.awaiting.remove(&sku) else {
                continue;
            };
            count += 1;
            let seen = match read {
                Ok(item) => default_quantity(&item),
                Err(e) if e.is_not_found() => None,
                Err(e) => {
                    self.awaiting.insert(sku, a);
                    return Err(e);
                }
            };
            if seen == Some(a.row.published.max(0)) {
                self.applied(&a.row);
                self.mark(&[(sku, a.row.seq)]).await?;
                continue;
            }
            a.reads += 1;
            if a.reads >= self.config.verify_attempts {
                // Accepted but not applied: it stays due, sent again.
                metrics::stale_retry(&self.config.channel, 1);
                tracing::info!(channel = %self.config.channel, %sku, wanted = a.row.published, ?seen, "an accepted quantity did not take on Amazon; sending it again");
                continue;
            }
            a.check_at = Instant::now() + self.config.verify_after;
            self.awaiting.insert(sku, a);
        }
        Ok(count)
    }

    /// One JSON_LISTINGS_FEED for `due`, followed to its report.
    async fn feed(&mut self, due: &[LevelRow]) -> Result<usize, SpError> {
        let channel = self.config.channel.clone();
        let messages: Vec<Value> = due
            .iter()
            .enumerate()
            .map(|(i, r)| {
                json!({
                    "messageId": i + 1,
                    "sku": self.listing(&r.sku),
                    "operationType": "PATCH",
                    "productType": "PRODUCT",
                    "patches": patches(r.published),
                })
            })
            .collect();
        let document = json!({
            "header": { "sellerId": self.config.seller_id, "version": "2.0", "issueLocale": "en_US" },
            "messages": messages,
        });
        let content_type = "application/json; charset=UTF-8";
        let created = self
            .api
            .call(
                "createFeedDocument",
                Method::POST,
                "/feeds/2021-06-30/documents",
                Some(&json!({ "contentType": content_type })),
            )
            .await?;
        let (Some(doc_id), Some(url)) = (
            created.get("feedDocumentId").and_then(Value::as_str),
            created.get("url").and_then(Value::as_str),
        ) else {
            return Err(SpError::Unavailable(format!(
                "createFeedDocument answered without feedDocumentId and url: {created}"
            )));
        };
        self.api
            .document(
                Method::PUT,
                url,
                Some(content_type),
                Bytes::from(document.to_string()),
            )
            .await?;
        let feed = self
            .api
            .call(
                "createFeed",
                Method::POST,
                "/feeds/2021-06-30/feeds",
                Some(&json!({
                    "feedType": "JSON_LISTINGS_FEED",
                    "marketplaceIds": [self.config.marketplace_id],
                    "inputFeedDocumentId": doc_id,
                })),
            )
            .await?;
        let Some(feed_id) = feed
            .get("feedId")
            .and_then(Value::as_str)
            .map(str::to_string)
        else {
            return Err(SpError::Unavailable(format!(
                "createFeed answered without feedId: {feed}"
            )));
        };
        metrics::feed(&channel, "submitted");
        tracing::info!(%channel, feed_id = %feed_id, skus = due.len(), "levels sent as one JSON_LISTINGS_FEED");
        let report_id = loop {
            tokio::time::sleep(self.config.feed_poll).await;
            let status = self
                .api
                .call(
                    "getFeed",
                    Method::GET,
                    &format!("/feeds/2021-06-30/feeds/{}", enc(&feed_id)),
                    None,
                )
                .await?;
            match status.get("processingStatus").and_then(Value::as_str) {
                Some("DONE") => {
                    break status
                        .get("resultFeedDocumentId")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                }
                Some("CANCELLED") | Some("FATAL") => {
                    metrics::feed(&channel, "failed");
                    return Err(SpError::Unavailable(format!(
                        "feed {feed_id} ended {}",
                        status["processingStatus"]
                    )));
                }
                _ => continue,
            }
        };
        let mut errors: HashMap<u64, String> = HashMap::new();
        if let Some(report_id) = report_id {
            let doc = self
                .api
                .call(
                    "getFeedDocument",
                    Method::GET,
                    &format!("/feeds/2021-06-30/documents/{}", enc(&report_id)),
                    None,
                )
                .await?;
            if doc.get("compressionAlgorithm").and_then(Value::as_str) == Some("GZIP") {
                // A report the adapter cannot read: every SKU of the feed is
                // read back, none is known refused.
                tracing::warn!(%channel, feed_id = %feed_id, "the processing report is GZIP-compressed, which the adapter does not read; reading every SKU back");
                metrics::feed(&channel, "done");
                self.await_all(due, &HashMap::new());
                return Ok(due.len());
            }
            let url = doc.get("url").and_then(Value::as_str).unwrap_or("");
            let bytes = self
                .api
                .document(Method::GET, url, None, Bytes::new())
                .await?;
            let report: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            for issue in report
                .get("issues")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if issue.get("severity").and_then(Value::as_str) == Some("ERROR") {
                    if let Some(id) = issue.get("messageId").and_then(Value::as_u64) {
                        let text = format!(
                            "{}: {}",
                            issue.get("code").and_then(Value::as_str).unwrap_or(""),
                            issue.get("message").and_then(Value::as_str).unwrap_or("")
                        );
                        errors.insert(id, text);
                    }
                }
            }
        }
        let refused = self.await_all(due, &errors);
        self.mark(&refused).await?;
        metrics::feed(&channel, "done");
        Ok(due.len())
    }

    /// After a feed is `DONE`: the messages the report refused (`errors`
    /// by messageId) are given back to be settled as failed; every other
    /// SKU waits for its read-back, like an accepted patch.
    fn await_all(&mut self, due: &[LevelRow], errors: &HashMap<u64, String>) -> Vec<(String, u64)> {
        let at = Instant::now() + self.config.verify_after;
        let mut refused = Vec::new();
        for (i, row) in due.iter().enumerate() {
            if let Some(why) = errors.get(&(i as u64 + 1)) {
                tracing::warn!(channel = %self.config.channel, sku = %row.sku, why = %why, "the feed's report refused this SKU's quantity; skipped");
                metrics::writes(&self.config.channel, "failed", 1);
                refused.push((row.sku.clone(), row.seq));
                continue;
            }
            self.awaiting.insert(
                row.sku.clone(),
                Awaiting {
                    row: row.clone(),
                    check_at: at,
                    reads: 0,
                },
            );
        }
        refused
    }
}

impl crate::adapters::writer::Rounds for Writer {
    type Error = SpError;
    fn round(&mut self) -> impl std::future::Future<Output = Result<usize, SpError>> + Send {
        self.settle()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_channels_quantity_is_read_from_fulfillment_availability() {
        let item = json!({ "sku": "A", "fulfillmentAvailability": [
            { "fulfillmentChannelCode": "AMAZON_NA", "quantity": 9 },
            { "fulfillmentChannelCode": "DEFAULT", "quantity": 4 } ] });
        assert_eq!(default_quantity(&item), Some(4));
        assert_eq!(default_quantity(&json!({ "sku": "A" })), None);
        assert_eq!(patches(-2)[0]["value"][0]["quantity"], 0);
    }
}
