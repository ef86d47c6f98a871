//! Every message, field, enum, enum value, service and RPC of the public
//! protos carries a comment (the contract is read by other teams, and
//! grpcurl `describe` shows these comments), and `buf lint` with the
//! repository's buf.yaml finds nothing when buf is installed.

use std::path::Path;

/// `file:line: what` for each declaration without a comment line right
/// above it (or a trailing `//` on the same line).
fn uncommented(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut missing = Vec::new();
    for (i, raw) in lines.iter().enumerate() {
        let line = raw.trim();
        if line.starts_with("//") || line.is_empty() || line == "}" {
            continue;
        }
        if line.starts_with("syntax")
            || line.starts_with("package")
            || line.starts_with("option ")
            || line.starts_with("import ")
            || line.starts_with("reserved ")
        {
            continue;
        }
        let declares = line.starts_with("message ")
            || line.starts_with("enum ")
            || line.starts_with("service ")
            || line.starts_with("rpc ")
            || line.ends_with(';') && line.contains('=');
        if !declares {
            continue;
        }
        let above = i.checked_sub(1).map(|j| lines[j].trim()).unwrap_or("");
        if !above.starts_with("//") && !line.contains("//") {
            missing.push(format!("{}:{}: {line}", path.display(), i + 1));
        }
    }
    missing
}

#[test]
fn every_message_field_enum_value_and_rpc_of_the_protos_has_a_comment() {
    let mut missing = Vec::new();
    for entry in std::fs::read_dir("proto/stockpool/v1").unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "proto") {
            missing.extend(uncommented(&path));
        }
    }
    assert!(
        missing.is_empty(),
        "{} without a comment:\n{}",
        missing.len(),
        missing.join("\n")
    );
}

#[test]
fn buf_lint_with_the_repositorys_rules_finds_nothing() {
    let Ok(out) = std::process::Command::new("buf").args(["lint"]).output() else {
        if std::env::var_os("CI").is_some() {
            panic!("buf is not installed: .ci/run installs it (npm @bufbuild/buf)");
        }
        eprintln!("SKIPPED: buf is not installed (npm install -g @bufbuild/buf)");
        return;
    };
    assert!(
        out.status.success(),
        "buf lint:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
