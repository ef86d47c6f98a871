//! The pure parts of the client: order lines given on the command line
//! (`SKU=QTY[@WAREHOUSE]`), stock files (`sku,warehouse,on_hand`), and the
//! deterministic ids that make a repeated import harmless. No I/O here.

use std::collections::HashMap;
use std::fmt;

use crate::domain::{Quantity, Sku, UnitPrice, WarehouseCode, MAX_QUANTITY};

/// One `--line` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineArg {
    pub sku: String,
    pub quantity: i64,
    /// Set by `@WAREHOUSE`; never on Reserve.
    pub warehouse: Option<String>,
}

/// One `--price` argument: the unit price of one SKU of the order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceArg {
    pub sku: String,
    /// As given, checked: a non-negative decimal with at most 6 decimals.
    pub unit_price: String,
}

/// `SKU=PRICE`, e.g. `TEE-BLK-M=19.90`.
pub fn parse_price(raw: &str) -> Result<PriceArg, String> {
    let Some((sku, price)) = raw.split_once('=') else {
        return Err(format!(
            "{raw:?} is not SKU=PRICE (for example TEE-BLK-M=19.90)"
        ));
    };
    let sku = Sku::parse(sku.trim()).map_err(|e| e.to_string())?;
    let price = UnitPrice::parse("price", price.trim()).map_err(|e| e.to_string())?;
    Ok(PriceArg {
        sku: sku.to_string(),
        unit_price: price.to_string(),
    })
}

/// `SKU=QTY`, as Reserve takes it: stockpool picks the warehouses.
pub fn parse_reserve_line(raw: &str) -> Result<LineArg, String> {
    let line = parse_line(raw)?;
    if let Some(w) = &line.warehouse {
        return Err(format!(
            "reserve lines name no warehouse (got @{w}): stockpool picks the warehouses from the channel's rules"
        ));
    }
    Ok(line)
}

/// `SKU=QTY` or `SKU=QTY@WAREHOUSE`, as Release, Fulfill and Restock take it.
pub fn parse_line(raw: &str) -> Result<LineArg, String> {
    let Some((sku, rest)) = raw.split_once('=') else {
        return Err(format!(
            "{raw:?} is not SKU=QTY (for example TEE-BLK-M=2, or TEE-BLK-M=2@WH-EAST)"
        ));
    };
    let (qty, warehouse) = match rest.split_once('@') {
        Some((q, w)) => (q, Some(w.trim())),
        None => (rest, None),
    };
    let sku = Sku::parse(sku.trim()).map_err(|e| e.to_string())?;
    let qty = qty.trim();
    let quantity: i64 = qty
        .parse()
        .map_err(|_| format!("quantity {qty:?} is not a whole number"))?;
    let quantity = Quantity::parse("quantity", quantity).map_err(|e| e.to_string())?;
    let warehouse = warehouse
        .map(|w| WarehouseCode::parse(w).map_err(|e| e.to_string()))
        .transpose()?;
    Ok(LineArg {
        sku: sku.to_string(),
        quantity: quantity.get(),
        warehouse: warehouse.map(|w| w.to_string()),
    })
}

/// One data row of a stock file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StockRow {
    /// 1-based line number in the file, as an editor shows it.
    pub line: usize,
    pub sku: String,
    pub warehouse: String,
    pub on_hand: i64,
}

/// What is wrong with one line of a stock file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvProblem {
    pub line: usize,
    pub problem: String,
}

impl fmt::Display for CsvProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.problem)
    }
}

/// The header a stock file may start with.
pub const STOCK_HEADER: [&str; 3] = ["sku", "warehouse", "on_hand"];

/// Parses a stock file: lines of `sku,warehouse,on_hand`, an optional
/// header line `sku,warehouse,on_hand` first, blank lines and `#` comment
/// lines skipped, spaces around fields and `\r\n` line ends tolerated, a
/// field may be wrapped in double quotes. Every problem in the file is
/// returned, each with its line number; a file with problems yields no rows.
pub fn parse_stock_csv(text: &str) -> Result<Vec<StockRow>, Vec<CsvProblem>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut rows = Vec::new();
    let mut problems = Vec::new();
    let mut seen: HashMap<(String, String), usize> = HashMap::new();
    let mut first_content = true;
    for (i, raw) in text.split('\n').enumerate() {
        let line = i + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let fields: Vec<String> = trimmed.split(',').map(unquote).collect();
        let is_first = std::mem::replace(&mut first_content, false);
        if is_first
            && fields.len() == 3
            && fields
                .iter()
                .zip(STOCK_HEADER)
                .all(|(f, h)| f.eq_ignore_ascii_case(h))
        {
            continue;
        }
        match parse_row(line, &fields) {
            Ok(row) => {
                let key = (row.sku.clone(), row.warehouse.clone());
                if let Some(earlier) = seen.insert(key, line) {
                    problems.push(CsvProblem {
                        line,
                        problem: format!(
                            "{} in {} was already counted on line {earlier}; a file gives each SKU and warehouse once",
                            row.sku, row.warehouse
                        ),
                    });
                } else {
                    rows.push(row);
                }
            }
            Err(mut problem) => {
                let header_like = fields.len() != 3 || fields[2].parse::<i64>().is_err();
                if is_first && header_like {
                    problem.push_str(&format!(
                        " (a header line must read {})",
                        STOCK_HEADER.join(",")
                    ));
                }
                problems.push(CsvProblem { line, problem });
            }
        }
    }
    if problems.is_empty() {
        Ok(rows)
    } else {
        Err(problems)
    }
}

fn unquote(field: &str) -> String {
    let f = field.trim();
    let f = f
        .strip_prefix('"')
        .and_then(|f| f.strip_suffix('"'))
        .unwrap_or(f);
    f.trim().to_string()
}

fn parse_row(line: usize, fields: &[String]) -> Result<StockRow, String> {
    let [sku, warehouse, on_hand] = fields else {
        return Err(format!(
            "expected 3 fields sku,warehouse,on_hand, found {}",
            fields.len()
        ));
    };
    let sku = Sku::parse(sku.as_str()).map_err(|e| e.to_string())?;
    let warehouse = WarehouseCode::parse(warehouse.as_str()).map_err(|e| e.to_string())?;
    let on_hand: i64 = on_hand
        .parse()
        .map_err(|_| format!("on_hand {on_hand:?} is not a whole number"))?;
    if !(0..=MAX_QUANTITY).contains(&on_hand) {
        return Err(format!(
            "on_hand must be between 0 and {MAX_QUANTITY}, got {on_hand}"
        ));
    }
    Ok(StockRow {
        line,
        sku: sku.to_string(),
        warehouse: warehouse.to_string(),
        on_hand,
    })
}

/// FNV-1a, 64 bits: a hash that is the same on every machine and every
/// Rust release (std's hasher promises neither), rendered as 16 hex digits.
pub fn content_hash(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// The movement id of one row of an import: the same file imported again
/// sends the same ids, which the server recognises as already applied.
pub fn import_movement_id(file_hash: &str, line: usize) -> String {
    format!("import:{file_hash}:{line}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_price_is_sku_equals_a_plain_decimal() {
        assert_eq!(
            parse_price("TEE-BLK-M=19.90").unwrap(),
            PriceArg {
                sku: "TEE-BLK-M".into(),
                unit_price: "19.90".into()
            }
        );
        assert!(parse_price("TEE").unwrap_err().contains("SKU=PRICE"));
        assert!(parse_price("TEE=19,90")
            .unwrap_err()
            .contains("is not a price"));
    }

    fn line(sku: &str, quantity: i64, warehouse: Option<&str>) -> LineArg {
        LineArg {
            sku: sku.into(),
            quantity,
            warehouse: warehouse.map(Into::into),
        }
    }

    fn row(line: usize, sku: &str, warehouse: &str, on_hand: i64) -> StockRow {
        StockRow {
            line,
            sku: sku.into(),
            warehouse: warehouse.into(),
            on_hand,
        }
    }

    fn problems(text: &str) -> Vec<String> {
        parse_stock_csv(text)
            .expect_err("the file should be refused")
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn a_line_is_a_sku_and_a_quantity_joined_by_an_equals_sign() {
        assert_eq!(parse_line("TEE-BLK-M=2"), Ok(line("TEE-BLK-M", 2, None)));
    }

    #[test]
    fn a_line_may_pick_a_warehouse_after_an_at_sign() {
        assert_eq!(
            parse_line("TEE-BLK-M=2@WH-EAST"),
            Ok(line("TEE-BLK-M", 2, Some("WH-EAST")))
        );
    }

    #[test]
    fn spaces_around_the_parts_of_a_line_are_ignored() {
        assert_eq!(
            parse_line(" TEE-BLK-M = 2 @ WH-EAST "),
            Ok(line("TEE-BLK-M", 2, Some("WH-EAST")))
        );
    }

    #[test]
    fn a_line_without_an_equals_sign_is_refused_with_an_example() {
        let e = parse_line("TEE-BLK-M").unwrap_err();
        assert!(e.contains("is not SKU=QTY"), "{e}");
        assert!(e.contains("TEE-BLK-M=2@WH-EAST"), "{e}");
    }

    #[test]
    fn a_quantity_that_is_not_a_whole_number_is_refused() {
        assert_eq!(
            parse_line("TEE=1.5").unwrap_err(),
            "quantity \"1.5\" is not a whole number"
        );
    }

    #[test]
    fn a_quantity_of_zero_or_less_is_refused() {
        assert_eq!(
            parse_line("TEE=0").unwrap_err(),
            "quantity must be at least 1, got 0"
        );
        assert!(parse_line("TEE=-3").is_err());
    }

    #[test]
    fn a_sku_with_a_character_codes_do_not_allow_is_refused() {
        let e = parse_line("TEE BLK=1").unwrap_err();
        assert!(e.starts_with("sku \"TEE BLK\" contains ' '"), "{e}");
    }

    #[test]
    fn an_empty_warehouse_after_the_at_sign_is_refused() {
        assert_eq!(
            parse_line("TEE=1@").unwrap_err(),
            "warehouse must not be empty"
        );
    }

    #[test]
    fn a_reserve_line_may_not_name_a_warehouse() {
        assert_eq!(parse_reserve_line("TEE=1"), Ok(line("TEE", 1, None)));
        let e = parse_reserve_line("TEE=1@WH-EAST").unwrap_err();
        assert!(e.contains("stockpool picks the warehouses"), "{e}");
    }

    #[test]
    fn a_stock_file_with_a_header_yields_its_rows_with_their_line_numbers() {
        let text = "sku,warehouse,on_hand\nTEE-BLK-M,WH-EAST,120\nTEE-BLK-M,WH-WEST,40\n";
        assert_eq!(
            parse_stock_csv(text),
            Ok(vec![
                row(2, "TEE-BLK-M", "WH-EAST", 120),
                row(3, "TEE-BLK-M", "WH-WEST", 40)
            ])
        );
    }

    #[test]
    fn a_stock_file_needs_no_header() {
        assert_eq!(
            parse_stock_csv("TEE,WH-EAST,5"),
            Ok(vec![row(1, "TEE", "WH-EAST", 5)])
        );
    }

    #[test]
    fn the_header_is_recognised_in_any_case_and_with_spaces() {
        assert_eq!(
            parse_stock_csv(" SKU , Warehouse , ON_HAND \nTEE,WH-EAST,5"),
            Ok(vec![row(2, "TEE", "WH-EAST", 5)])
        );
    }

    #[test]
    fn blank_lines_comments_spaces_and_crlf_line_ends_are_tolerated() {
        let text = "\u{feff}sku,warehouse,on_hand\r\n\r\n# counted on Monday\r\n  TEE , WH-EAST , 7 \r\n\t\r\nMUG,WH-WEST,0\r\n";
        assert_eq!(
            parse_stock_csv(text),
            Ok(vec![
                row(4, "TEE", "WH-EAST", 7),
                row(6, "MUG", "WH-WEST", 0)
            ])
        );
    }

    #[test]
    fn fields_wrapped_in_double_quotes_are_unwrapped() {
        assert_eq!(
            parse_stock_csv("\"TEE\",\"WH-EAST\",\"3\""),
            Ok(vec![row(1, "TEE", "WH-EAST", 3)])
        );
    }

    #[test]
    fn an_empty_file_has_no_rows_and_no_problems() {
        assert_eq!(parse_stock_csv(""), Ok(vec![]));
        assert_eq!(parse_stock_csv("sku,warehouse,on_hand\n\n"), Ok(vec![]));
    }

    #[test]
    fn every_problem_in_a_stock_file_is_named_with_its_line_number() {
        let text = "sku,warehouse,on_hand\nTEE,WH-EAST,5\nTEE,WH-EAST\nMUG,WH-EAST,many\nCAP,WH-EAST,-1\nHAT,WH EAST,1\n";
        assert_eq!(
            problems(text),
            vec![
                "line 3: expected 3 fields sku,warehouse,on_hand, found 2".to_string(),
                "line 4: on_hand \"many\" is not a whole number".to_string(),
                "line 5: on_hand must be between 0 and 1000000000, got -1".to_string(),
                "line 6: warehouse \"WH EAST\" contains ' '; use letters, digits, '-', '_' or '.'"
                    .to_string(),
            ]
        );
    }

    #[test]
    fn a_sku_and_warehouse_counted_twice_is_refused_naming_both_lines() {
        assert_eq!(
            problems("TEE,WH-EAST,5\n\nTEE,WH-EAST,6\n"),
            vec![
                "line 3: TEE in WH-EAST was already counted on line 1; a file gives each SKU and warehouse once"
                    .to_string()
            ]
        );
    }

    #[test]
    fn a_first_line_that_is_neither_header_nor_row_says_what_the_header_must_be() {
        assert_eq!(
            problems("SKU,Location,Qty\nTEE,WH-EAST,5\n"),
            vec![
                "line 1: on_hand \"Qty\" is not a whole number (a header line must read sku,warehouse,on_hand)"
                    .to_string()
            ]
        );
    }

    #[test]
    fn an_empty_field_is_refused() {
        assert_eq!(
            problems("TEE,,5"),
            vec!["line 1: warehouse must not be empty".to_string()]
        );
    }

    #[test]
    fn the_content_hash_is_fixed_for_given_bytes() {
        // FNV-1a 64 reference values.
        assert_eq!(content_hash(b""), "cbf29ce484222325");
        assert_eq!(content_hash(b"a"), "af63dc4c8601ec8c");
        assert_ne!(
            content_hash(b"TEE,WH-EAST,5"),
            content_hash(b"TEE,WH-EAST,6")
        );
    }

    #[test]
    fn an_import_movement_id_names_the_file_hash_and_the_line() {
        assert_eq!(
            import_movement_id("cbf29ce484222325", 7),
            "import:cbf29ce484222325:7"
        );
    }
}
