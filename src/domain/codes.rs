//! Validated identifiers and quantities. Parsing happens once, at the
//! boundary; past it the core never re-checks.

use std::fmt;
use std::sync::Arc;

use super::InvalidInput;

/// Longest accepted code (SKU, warehouse, channel, order id).
pub const MAX_CODE_LEN: usize = 64;
/// Largest quantity accepted on one line or one stock movement, and the
/// most one pool may hold on hand.
pub const MAX_QUANTITY: i64 = 1_000_000_000;
/// Longest accepted free text (reasons, comments, names, and the ids of
/// shipments, refunds and movements), in characters.
pub const MAX_TEXT_LEN: usize = 200;

/// What a free-text field may hold besides printable characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextKind {
    /// One line: names, authors and idempotency keys. No control character.
    Line,
    /// A note a person wrote (a reason, a comment): tabs and line breaks are
    /// kept, no other control character.
    Note,
}

/// Checks free text before it reaches a store: at most [`MAX_TEXT_LEN`]
/// characters and no control character (NUL, escape sequences, DEL, C1)
/// beyond what `kind` allows. Both stores then accept exactly the same
/// input (Postgres cannot store NUL at all).
pub fn check_text(field: &str, raw: &str, kind: TextKind) -> Result<(), InvalidInput> {
    let chars = raw.chars().count();
    if chars > MAX_TEXT_LEN {
        return Err(InvalidInput::new(
            field,
            format!("is {chars} characters long; at most {MAX_TEXT_LEN} are allowed"),
        ));
    }
    let allowed = |c: char| kind == TextKind::Note && matches!(c, '\t' | '\n' | '\r');
    if let Some((at, bad)) = raw
        .chars()
        .enumerate()
        .find(|(_, c)| c.is_control() && !allowed(*c))
    {
        let what = match kind {
            TextKind::Line => "control characters",
            TextKind::Note => "control characters other than tabs and line breaks",
        };
        return Err(InvalidInput::new(
            field,
            format!(
                "contains the control character U+{:04X} at character {}; {what} are not allowed",
                bad as u32,
                at + 1
            ),
        ));
    }
    Ok(())
}

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

/// A code is shared, not copied: a SKU or an order id is cloned into every
/// op, ledger line and allocation of a write, and a clone of an `Arc<str>`
/// is a reference count where a `String` was an allocation and a copy.
macro_rules! code_type {
    ($(#[$doc:meta])* $name:ident, $field:literal, $extra:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(Arc<str>);

        impl $name {
            /// Validates `raw`; the error names the field and what is wrong.
            pub fn parse(raw: impl Into<String>) -> Result<Self, InvalidInput> {
                let raw = raw.into();
                check_code($field, &raw, $extra)?;
                Ok(Self(raw.into()))
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
                code.0.to_string()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_validation_names_the_field_and_the_problem() {
        let empty = Sku::parse("").unwrap_err();
        assert_eq!(empty.field, "sku");
        assert_eq!(empty.to_string(), "sku must not be empty");

        let spaced = WarehouseCode::parse("WH EAST").unwrap_err();
        assert_eq!(spaced.field, "warehouse");
        assert_eq!(
            spaced.problem,
            r#""WH EAST" contains ' '; use letters, digits, '-', '_' or '.'"#
        );

        let long = ChannelCode::parse("c".repeat(MAX_CODE_LEN + 1)).unwrap_err();
        assert_eq!(
            long.to_string(),
            "channel is 65 characters long; at most 64 are allowed"
        );
    }

    #[test]
    fn a_code_of_exactly_the_maximum_length_is_accepted() {
        let code = "a".repeat(MAX_CODE_LEN);
        assert_eq!(Sku::parse(code.clone()).unwrap().as_str(), code);
    }

    #[test]
    fn code_length_is_counted_in_characters_not_bytes() {
        let err = Sku::parse("é".repeat(40)).unwrap_err();
        assert!(err.problem.contains("contains 'é'"), "{err}");
    }

    #[test]
    fn letters_digits_dash_underscore_and_dot_make_a_valid_code() {
        for raw in ["TEE-BLK-M", "wh_2", "v1.2", "B2B"] {
            assert_eq!(Sku::parse(raw).unwrap().to_string(), raw);
        }
    }

    #[test]
    fn order_ids_accept_hash_colon_and_slash_but_skus_do_not() {
        assert!(OrderId::parse("#1001:a/b").is_ok());
        assert!(Sku::parse("#1001").is_err());
        assert!(Sku::parse("a:b").is_err());
        let err = OrderId::parse("1001?").unwrap_err();
        assert_eq!(err.field, "order_id");
        assert!(
            err.problem
                .ends_with("use letters, digits, '-', '_', '.', '#', ':' or '/'"),
            "{err}"
        );
    }

    #[test]
    fn quantities_must_be_at_least_one_and_at_most_the_maximum() {
        assert_eq!(Quantity::parse("lines[0].quantity", 1).unwrap().get(), 1);
        assert_eq!(
            Quantity::parse("q", MAX_QUANTITY).unwrap().get(),
            MAX_QUANTITY
        );
        assert_eq!(
            Quantity::parse("lines[0].quantity", 0)
                .unwrap_err()
                .to_string(),
            "lines[0].quantity must be at least 1, got 0"
        );
        assert_eq!(
            Quantity::parse("q", -3).unwrap_err().problem,
            "must be at least 1, got -3"
        );
        assert_eq!(
            Quantity::parse("q", MAX_QUANTITY + 1).unwrap_err().problem,
            "1000000001 is more than the 1000000000 allowed"
        );
    }

    #[test]
    fn an_error_can_be_located_inside_a_larger_request() {
        let err = Sku::parse("").unwrap_err().at("lines[2]");
        assert_eq!(err.to_string(), "lines[2].sku must not be empty");
    }

    #[test]
    fn free_text_refuses_nul_and_other_control_characters_naming_the_field() {
        let err = check_text("reason", "dam\0age", TextKind::Note).unwrap_err();
        assert_eq!(err.field, "reason");
        assert_eq!(
            err.problem,
            "contains the control character U+0000 at character 4; control characters other than tabs and line breaks are not allowed"
        );
        for bad in ["\u{1b}[31m", "a\u{7f}", "\u{85}", "x\u{9b}y"] {
            assert!(
                check_text("comment", bad, TextKind::Note).is_err(),
                "{bad:?}"
            );
        }
        assert!(check_text("movement_id", "a\tb", TextKind::Line).is_err());
        assert!(check_text("name", "a\nb", TextKind::Line).is_err());
    }

    #[test]
    fn free_text_keeps_tabs_line_breaks_and_any_printable_character() {
        for ok in [
            "",
            "receipt PO-1",
            "Lieferung für Köln ✓",
            "line 1\r\nline 2\tend",
        ] {
            assert!(check_text("comment", ok, TextKind::Note).is_ok(), "{ok:?}");
        }
        assert!(check_text("shipment_id", "1Z999AA1 #2/3", TextKind::Line).is_ok());
    }

    #[test]
    fn free_text_is_at_most_the_maximum_length_in_characters() {
        assert!(check_text("reason", &"é".repeat(MAX_TEXT_LEN), TextKind::Note).is_ok());
        assert_eq!(
            check_text("reason", &"é".repeat(MAX_TEXT_LEN + 1), TextKind::Note)
                .unwrap_err()
                .to_string(),
            "reason is 201 characters long; at most 200 are allowed"
        );
    }

    #[test]
    fn codes_serialize_as_plain_strings_and_refuse_invalid_ones() {
        let sku = Sku::parse("TEE-BLK-M").unwrap();
        assert_eq!(serde_json::to_string(&sku).unwrap(), r#""TEE-BLK-M""#);
        assert_eq!(serde_json::from_str::<Sku>(r#""TEE-BLK-M""#).unwrap(), sku);
        assert!(serde_json::from_str::<Sku>(r#""TEE BLK""#).is_err());
    }
}
