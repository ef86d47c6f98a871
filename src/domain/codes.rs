//! Validated identifiers and quantities. Parsing happens once, at the
//! boundary; past it the core never re-checks.

use std::fmt;

use super::InvalidInput;

/// Longest accepted code (SKU, warehouse, channel, order id).
pub const MAX_CODE_LEN: usize = 64;
/// Largest quantity accepted on one line or one stock movement.
pub const MAX_QUANTITY: i64 = 1_000_000_000;

fn check_code(field: &str, raw: &str, extra: &[char]) -> Result<(), InvalidInput> {
    if raw.is_empty() {
        return Err(InvalidInput::new(field, "must not be empty"));
    }
    let chars = raw.chars().count();
    if chars > MAX_CODE_LEN {
        return Err(InvalidInput::new(
            field,
            format!("is {chars} characters long; at most {MAX_CODE_LEN} are allowed"),
        ));
    }
    if let Some(bad) = raw
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') || extra.contains(c)))
    {
        let symbols: Vec<String> = ['-', '_', '.']
            .iter()
            .chain(extra)
            .map(|c| format!("{c:?}"))
            .collect();
        let (last, rest) = symbols.split_last().expect("three symbols at least");
        return Err(InvalidInput::new(
            field,
            format!(
                "{raw:?} contains {bad:?}; use letters, digits, {} or {last}",
                rest.join(", ")
            ),
        ));
    }
    Ok(())
}

macro_rules! code_type {
    ($(#[$doc:meta])* $name:ident, $field:literal, $extra:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Validates `raw`; the error names the field and what is wrong.
            pub fn parse(raw: impl Into<String>) -> Result<Self, InvalidInput> {
                let raw = raw.into();
                check_code($field, &raw, $extra)?;
                Ok(Self(raw))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidInput;
            fn try_from(raw: String) -> Result<Self, InvalidInput> {
                Self::parse(raw)
            }
        }

        impl From<$name> for String {
            fn from(code: $name) -> String {
                code.0
            }
        }
    };
}

code_type!(
    /// A sellable item's code, e.g. `TEE-BLK-M`.
    Sku, "sku", &[]
);
code_type!(
    /// A stock location's code, e.g. `WH-EAST`.
    WarehouseCode, "warehouse", &[]
);
code_type!(
    /// Where orders come from, e.g. `shopify`.
    ChannelCode, "channel", &[]
);
code_type!(
    /// The channel's own order reference; unique per channel. Channels use
    /// `#`, `:` and `/` in order names, so those are allowed too.
    OrderId, "order_id", &['#', ':', '/']
);

/// A strictly positive count of units, at most [`MAX_QUANTITY`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Quantity(i64);

impl Quantity {
    pub fn parse(field: &str, raw: i64) -> Result<Self, InvalidInput> {
        if raw <= 0 {
            return Err(InvalidInput::new(
                field,
                format!("must be at least 1, got {raw}"),
            ));
        }
        if raw > MAX_QUANTITY {
            return Err(InvalidInput::new(
                field,
                format!("{raw} is more than the {MAX_QUANTITY} allowed"),
            ));
        }
        Ok(Self(raw))
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
