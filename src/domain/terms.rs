//! What a channel charged for an order, for the ERP's books: unit prices,
//! their currency, the channel's customer, and whether the prices include
//! tax. Validated once at the boundary, stored with the reservation, echoed
//! and compared on replay; allocation never looks at them.

use std::fmt;
use std::hash::{Hash, Hasher};

use super::{InvalidInput, Sku};

/// Most decimals a unit price may carry.
pub const PRICE_DECIMALS: u32 = 6;
/// Most digits before the decimal point of a unit price.
const PRICE_INTEGER_DIGITS: usize = 12;
/// Longest customer reference accepted.
pub const MAX_CUSTOMER_REF_LEN: usize = 200;

/// A non-negative decimal price per unit, exactly as precise as given (at
/// most 6 decimals). Two prices are equal when their values are: `19.9`
/// and `19.90` are the same price, shown as first given.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UnitPrice {
    /// The value in millionths.
    micros: i64,
    /// Decimals as given, for display.
    decimals: u32,
}

impl UnitPrice {
    /// Parses `raw`; `field` names it in the error. Accepted: digits,
    /// optionally a point and 1 to 6 more digits (`19`, `19.90`, `0.000001`).
    pub fn parse(field: &str, raw: &str) -> Result<UnitPrice, InvalidInput> {
        let refuse = |why: &str| {
            InvalidInput::new(
                field,
                format!("{raw:?} is not a price: {why} (write it like \"19.90\")"),
            )
        };
        let (whole, fraction) = match raw.split_once('.') {
            Some((w, f)) => (w, Some(f)),
            None => (raw, None),
        };
        if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
            return Err(refuse(
                "use digits, a point and at most 6 decimals, no sign, no exponent, no spaces",
            ));
        }
        let fraction = fraction.unwrap_or("");
        if raw.contains('.') && fraction.is_empty() {
            return Err(refuse("a point must be followed by decimals"));
        }
        if !fraction.bytes().all(|b| b.is_ascii_digit()) {
            return Err(refuse(
                "use digits, a point and at most 6 decimals, no sign, no exponent, no spaces",
            ));
        }
        if fraction.len() > PRICE_DECIMALS as usize {
            return Err(refuse(&format!(
                "it has {} decimals; at most {PRICE_DECIMALS} are allowed",
                fraction.len()
            )));
        }
        let whole = whole.trim_start_matches('0');
        if whole.len() > PRICE_INTEGER_DIGITS {
            return Err(refuse(&format!(
                "more than {PRICE_INTEGER_DIGITS} digits before the point"
            )));
        }
        let digits = |s: &str| s.bytes().fold(0i64, |n, b| n * 10 + i64::from(b - b'0'));
        let decimals = fraction.len() as u32;
        let micros =
            digits(whole) * 1_000_000 + digits(fraction) * 10i64.pow(PRICE_DECIMALS - decimals);
        Ok(UnitPrice { micros, decimals })
    }

    /// The value in millionths of the currency unit.
    pub fn micros(self) -> i64 {
        self.micros
    }

    /// The value as a float, for APIs (Odoo's) that take one. Exact to the
    /// sixth decimal for every accepted price.
    pub fn as_f64(self) -> f64 {
        self.micros as f64 / 1e6
    }
}

impl PartialEq for UnitPrice {
    fn eq(&self, other: &Self) -> bool {
        self.micros == other.micros
    }
}

impl Eq for UnitPrice {}

impl Hash for UnitPrice {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.micros.hash(state);
    }
}

impl fmt::Display for UnitPrice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.micros / 1_000_000;
        if self.decimals == 0 {
            return write!(f, "{whole}");
        }
        let fraction = (self.micros % 1_000_000) / 10i64.pow(PRICE_DECIMALS - self.decimals);
        write!(
            f,
            "{whole}.{fraction:0width$}",
            width = self.decimals as usize
        )
    }
}

impl TryFrom<String> for UnitPrice {
    type Error = InvalidInput;
    fn try_from(raw: String) -> Result<Self, InvalidInput> {
        UnitPrice::parse("unit_price", &raw)
    }
}

impl From<UnitPrice> for String {
    fn from(p: UnitPrice) -> String {
        p.to_string()
    }
}

/// ISO 4217 codes a price may be in: the current list, plus those withdrawn
/// recently enough that shops still send them. `XXX` (no currency) and
/// `XTS` (testing) are left out: neither can price a sale.
const ISO_4217: &str = "\
    AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BOV \
    BRL BSD BTN BWP BYN BZD CAD CDF CHE CHF CHW CLF CLP CNY COP COU CRC CUC CUP CVE \
    CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD \
    HNL HRK HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS KHR KMF KPW KRW KWD \
    KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN \
    MXV MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD \
    RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SLL SOS SRD SSP STN SVC SYP SZL THB TJS \
    TMT TND TOP TRY TTD TWD TZS UAH UGX USD USN UYI UYU UYW UZS VED VES VND VUV WST \
    XAF XAG XAU XBA XBB XBC XBD XCD XCG XDR XOF XPD XPF XPT XSU XUA YER ZAR ZMW ZWG \
    ZWL";

/// An ISO 4217 currency code in capitals, e.g. `EUR`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency(String);

impl Currency {
    pub fn parse(field: &str, raw: &str) -> Result<Currency, InvalidInput> {
        let shaped = raw.len() == 3 && raw.bytes().all(|b| b.is_ascii_alphabetic());
        if shaped && raw.bytes().all(|b| b.is_ascii_uppercase()) {
            if ISO_4217.split_ascii_whitespace().any(|c| c == raw) {
                return Ok(Currency(raw.to_string()));
            }
            return Err(InvalidInput::new(
                field,
                format!("{raw:?} is not an ISO 4217 currency code"),
            ));
        }
        let hint = if shaped {
            format!("; write it in capitals: {:?}", raw.to_ascii_uppercase())
        } else {
            String::new()
        };
        Err(InvalidInput::new(
            field,
            format!("{raw:?} is not an ISO 4217 currency code (three capital letters, like \"EUR\"){hint}"),
        ))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Currency {
    type Error = InvalidInput;
    fn try_from(raw: String) -> Result<Self, InvalidInput> {
        Currency::parse("currency", &raw)
    }
}

impl From<Currency> for String {
    fn from(c: Currency) -> String {
        c.0
    }
}

/// The channel's own id of the buying customer or account (a B2B account
/// number, a Shopify customer id): at most 200 characters, no control
/// characters, no surrounding spaces.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct CustomerRef(String);

impl CustomerRef {
    pub fn parse(field: &str, raw: &str) -> Result<CustomerRef, InvalidInput> {
        let chars = raw.chars().count();
        if chars == 0 {
            return Err(InvalidInput::new(field, "must not be empty"));
        }
        if chars > MAX_CUSTOMER_REF_LEN {
            return Err(InvalidInput::new(
                field,
                format!("is {chars} characters long; at most {MAX_CUSTOMER_REF_LEN} are allowed"),
            ));
        }
        if let Some(c) = raw.chars().find(|c| c.is_control()) {
            return Err(InvalidInput::new(
                field,
                format!("contains the control character {c:?}"),
            ));
        }
        if raw.trim() != raw {
            return Err(InvalidInput::new(
                field,
                format!("{raw:?} starts or ends with a space"),
            ));
        }
        Ok(CustomerRef(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CustomerRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for CustomerRef {
    type Error = InvalidInput;
    fn try_from(raw: String) -> Result<Self, InvalidInput> {
        CustomerRef::parse("customer_ref", &raw)
    }
}

impl From<CustomerRef> for String {
    fn from(c: CustomerRef) -> String {
        c.0
    }
}

/// The books' side of an order: what the channel charged and to whom. Part
/// of a Reserve's identity: a replay must carry the same terms.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct OrderTerms {
    /// The currency of the unit prices; set whenever a price is.
    pub currency: Option<Currency>,
    /// The channel's customer; None: anonymous retail.
    pub customer_ref: Option<CustomerRef>,
    /// Whether the unit prices include tax.
    pub prices_include_tax: bool,
    /// Price per unit of each priced SKU, sorted by SKU; an unpriced SKU is
    /// absent.
    pub unit_prices: Vec<(Sku, UnitPrice)>,
}

impl OrderTerms {
    /// Checks that prices come with their currency; sorts the prices.
    pub fn new(
        currency: Option<Currency>,
        customer_ref: Option<CustomerRef>,
        prices_include_tax: bool,
        mut unit_prices: Vec<(Sku, UnitPrice)>,
    ) -> Result<OrderTerms, InvalidInput> {
        if currency.is_none() {
            if let Some((sku, _)) = unit_prices.first() {
                return Err(InvalidInput::new(
                    "currency",
                    format!(
                        "must be set when a line has a price ({sku} has one): give the ISO 4217 code of the prices, like \"EUR\""
                    ),
                ));
            }
        }
        unit_prices.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(OrderTerms {
            currency,
            customer_ref,
            prices_include_tax,
            unit_prices,
        })
    }

    /// The unit price of `sku`, when the channel gave one.
    pub fn unit_price(&self, sku: &Sku) -> Option<UnitPrice> {
        self.unit_prices
            .binary_search_by(|(s, _)| s.cmp(sku))
            .ok()
            .map(|i| self.unit_prices[i].1)
    }

    /// The terms in a sentence, for a refused replay.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.unit_prices.is_empty() {
            let currency = self.currency.as_ref().map_or("", Currency::as_str);
            let prices: Vec<String> = self
                .unit_prices
                .iter()
                .map(|(s, p)| format!("{s} at {p} {currency}"))
                .collect();
            parts.push(prices.join(", "));
        } else if let Some(c) = &self.currency {
            parts.push(format!("currency {c}"));
        }
        if self.prices_include_tax {
            parts.push("prices including tax".to_string());
        }
        if let Some(c) = &self.customer_ref {
            parts.push(format!("customer {:?}", c.as_str()));
        }
        if parts.is_empty() {
            "no prices and no customer".to_string()
        } else {
            parts.join("; ")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::fixtures::sku;

    fn price(raw: &str) -> UnitPrice {
        UnitPrice::parse("lines[0].unit_price", raw).unwrap()
    }

    fn refused(raw: &str) -> String {
        UnitPrice::parse("lines[0].unit_price", raw)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn a_price_keeps_the_decimals_it_was_given_and_compares_by_value() {
        assert_eq!(price("19.90").to_string(), "19.90");
        assert_eq!(price("19.9").to_string(), "19.9");
        assert_eq!(price("19.90"), price("19.9"));
        assert_ne!(price("19.90"), price("19.91"));
        assert_eq!(price("0").to_string(), "0");
        assert_eq!(price("007.50").to_string(), "7.50");
        assert_eq!(price("0.000001").micros(), 1);
        assert_eq!(price("19.90").micros(), 19_900_000);
        assert_eq!(
            price("999999999999.999999").to_string(),
            "999999999999.999999"
        );
        assert_eq!(price("19.90").as_f64(), 19.9);
    }

    #[test]
    fn a_price_that_is_not_a_plain_non_negative_decimal_is_refused_with_the_field_named() {
        for raw in [
            "", "-1", "+1", "1e3", "1.", ".5", "1,50", " 1", "1 ", "NaN", "inf", "1.2.3", "١",
        ] {
            let e = refused(raw);
            assert!(e.starts_with("lines[0].unit_price "), "{raw:?}: {e}");
            assert!(e.contains("is not a price"), "{raw:?}: {e}");
        }
        assert!(refused("1.1234567").contains("7 decimals; at most 6"));
        assert!(refused("1000000000000").contains("more than 12 digits"));
    }

    #[test]
    fn a_currency_is_an_iso_4217_code_in_capitals() {
        assert_eq!(Currency::parse("currency", "EUR").unwrap().as_str(), "EUR");
        assert!(Currency::parse("currency", "USD").is_ok());
        let lower = Currency::parse("currency", "eur").unwrap_err().to_string();
        assert!(lower.contains("in capitals: \"EUR\""), "{lower}");
        let unknown = Currency::parse("currency", "ABC").unwrap_err().to_string();
        assert_eq!(unknown, "currency \"ABC\" is not an ISO 4217 currency code");
        for raw in ["", "EURO", "E1R", "XXX", "€"] {
            assert!(Currency::parse("currency", raw).is_err(), "{raw}");
        }
    }

    #[test]
    fn a_customer_ref_is_printable_text_of_at_most_200_characters() {
        assert!(CustomerRef::parse("customer_ref", "gid://shopify/Customer/7012").is_ok());
        assert!(CustomerRef::parse("customer_ref", &"a".repeat(200)).is_ok());
        for (raw, why) in [
            ("a\0b", "control character"),
            ("a\nb", "control character"),
            (" ACME", "starts or ends with a space"),
            (&"a".repeat(201) as &str, "at most 200"),
        ] {
            let e = CustomerRef::parse("customer_ref", raw).unwrap_err();
            assert!(e.to_string().contains(why), "{raw:?}: {e}");
        }
    }

    #[test]
    fn prices_without_a_currency_are_refused() {
        let e = OrderTerms::new(None, None, false, vec![(sku("TEE"), price("1"))]).unwrap_err();
        assert_eq!(e.field, "currency");
        assert!(e.problem.contains("TEE has one"), "{e}");
        assert!(OrderTerms::new(None, None, true, vec![]).is_ok());
    }

    #[test]
    fn terms_find_each_skus_price_whatever_order_they_came_in() {
        let eur = Currency::parse("currency", "EUR").unwrap();
        let terms = OrderTerms::new(
            Some(eur),
            None,
            false,
            vec![(sku("TEE"), price("19.90")), (sku("MUG"), price("7"))],
        )
        .unwrap();
        assert_eq!(terms.unit_price(&sku("TEE")), Some(price("19.9")));
        assert_eq!(terms.unit_price(&sku("MUG")), Some(price("7")));
        assert_eq!(terms.unit_price(&sku("CAP")), None);
        assert_eq!(terms.describe(), "MUG at 7 EUR, TEE at 19.90 EUR");
    }

    #[test]
    fn terms_serialize_prices_as_strings_and_read_back_equal() {
        let terms = OrderTerms::new(
            Some(Currency::parse("c", "EUR").unwrap()),
            Some(CustomerRef::parse("c", "ACME-1").unwrap()),
            true,
            vec![(sku("TEE"), price("19.90"))],
        )
        .unwrap();
        let json = serde_json::to_string(&terms).unwrap();
        assert!(json.contains(r#"["TEE","19.90"]"#), "{json}");
        assert_eq!(serde_json::from_str::<OrderTerms>(&json).unwrap(), terms);
        assert_eq!(
            serde_json::from_str::<OrderTerms>("{}").unwrap(),
            OrderTerms::default()
        );
    }
}
