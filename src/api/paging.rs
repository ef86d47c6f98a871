//! Paging of the reads that can grow without bound (API.md "Reading at
//! scale"): page sizes, and the opaque page tokens the server issues. A
//! token names the last item of the page it ends plus a check, so a token
//! the server did not issue (typed by hand, cut short, from another call)
//! is refused rather than read as some other position. Tokens carry no
//! server state: they survive restarts and failovers.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use sha2::{Digest, Sha256};
use tonic::Status;

use crate::domain::Sku;

/// SKUs per page of GetStock / GetAvailability when none is asked for.
pub const DEFAULT_SKU_PAGE: usize = 1000;
/// Most SKUs per page of GetStock / GetAvailability.
pub const MAX_SKU_PAGE: usize = 10_000;
/// Most SKUs a GetStock / GetAvailability may name.
pub const MAX_NAMED_SKUS: usize = 1000;
/// Reservations per page of ListReservations when none is asked for.
pub const DEFAULT_RESERVATION_PAGE: usize = 100;
/// Most reservations per page of ListReservations.
pub const MAX_RESERVATION_PAGE: usize = 1000;
/// Ledger lines per ListMovements when no limit is given.
pub const DEFAULT_MOVEMENTS: usize = 100;
/// Most ledger lines per ListMovements.
pub const MAX_MOVEMENTS: usize = 1000;
/// Most items of one BatchSetStock.
pub const MAX_BATCH_ITEMS: usize = 10_000;

/// `requested` (0: `default`), refused beyond `max` or below 0.
pub fn size(field: &str, requested: i32, default: usize, max: usize) -> Result<usize, Status> {
    match requested {
        0 => Ok(default),
        n if n < 0 => Err(Status::invalid_argument(format!(
            "{field} must not be negative, got {n}"
        ))),
        n if n as usize > max => Err(Status::invalid_argument(format!(
            "{field} may be at most {max}, got {n}"
        ))),
        n => Ok(n as usize),
    }
}

/// The check that makes a token one this server issued.
fn check(kind: &str, body: &str) -> String {
    let digest = Sha256::digest(format!("stockpool page token {kind}\n{body}").as_bytes());
    digest[..6].iter().map(|b| format!("{b:02x}")).collect()
}

/// A token for the page after the one ending at `body`, for calls of `kind`.
pub fn issue(kind: &str, body: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{kind}|{}|{body}", check(kind, body)))
}

/// The body of a token issued by [`issue`] for `kind`; empty: None.
pub fn read(kind: &str, token: &str) -> Result<Option<String>, Status> {
    if token.is_empty() {
        return Ok(None);
    }
    let refused = || {
        Status::invalid_argument(
            "page_token is not one this server issued for this call: pass the \
             next_page_token of the previous page unchanged, or none for the first page",
        )
    };
    let raw = URL_SAFE_NO_PAD.decode(token).map_err(|_| refused())?;
    let text = String::from_utf8(raw).map_err(|_| refused())?;
    let mut parts = text.splitn(3, '|');
    let (Some(k), Some(c), Some(body)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(refused());
    };
    if k != kind || c != check(kind, body) {
        return Err(refused());
    }
    Ok(Some(body.to_string()))
}

/// The last SKU of the previous page, from a GetStock/GetAvailability token.
pub fn read_sku(kind: &str, token: &str) -> Result<Option<Sku>, Status> {
    read(kind, token)?
        .map(|s| {
            Sku::parse(s.as_str()).map_err(|_| Status::invalid_argument("page_token is malformed"))
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_issued_token_reads_back_to_what_it_names() {
        let t = issue("stock", "TEE-BLK-M");
        assert_eq!(read("stock", &t).unwrap().as_deref(), Some("TEE-BLK-M"));
        assert_eq!(read("stock", "").unwrap(), None);
    }

    #[test]
    fn a_token_not_issued_or_issued_for_another_call_is_refused() {
        let t = issue("stock", "TEE");
        assert!(read("availability", &t).is_err());
        assert!(read("stock", "not-a-token").is_err());
        let forged = URL_SAFE_NO_PAD.encode("stock|000000000000|TEE");
        let e = read("stock", &forged).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains("next_page_token"), "{}", e.message());
    }

    #[test]
    fn a_page_size_of_zero_is_the_default_and_beyond_the_most_is_refused() {
        assert_eq!(size("page_size", 0, 1000, 10_000).unwrap(), 1000);
        assert_eq!(size("page_size", 10_000, 1000, 10_000).unwrap(), 10_000);
        let e = size("page_size", 10_001, 1000, 10_000).unwrap_err();
        assert!(e.message().contains("at most 10000"), "{}", e.message());
        assert!(size("page_size", -1, 1000, 10_000).is_err());
    }
}
