//! `stockpool migrate --from sqlite://DIR --to postgres://…`: everything a
//! SQLite store holds is copied into an empty Postgres database, and a
//! server started on it serves the same state.

use std::process::Command;

use stockpool::api::pb;
use stockpool::config::StoreConfig;

use crate::helpers::spawn_app_with;
use crate::postgres::pg::TestDb;

fn migrate(from: &std::path::Path, to: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_stockpool"))
        .arg("migrate")
        .arg("--from")
        .arg(format!("sqlite://{}", from.display()))
        .args(["--to", to])
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_store_migrated_to_postgres_serves_the_same_state() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_path_buf();
    let mut app = spawn_app_with({
        let dir = dir.clone();
        move |c| c.store = StoreConfig::Sqlite { data_dir: dir }
    })
    .await;
    for i in 0..20 {
        app.set_stock(&format!("M-{i}"), "WH-WEST", 10 + i).await;
    }
    app.reserve("shopify", "O-1", &[("M-1", 3)], 0)
        .await
        .unwrap();
    app.reserve("amazon", "O-2", &[("M-2", 1)], 600)
        .await
        .unwrap();
    app.admin
        .put_rule(pb::PutRuleRequest {
            rule: Some(pb::Rule {
                channel: "shopify".into(),
                sku: "M-3".into(),
                buffer: Some(2),
                ..Default::default()
            }),
            changed_by: "test".into(),
            comment: "keep two back".into(),
        })
        .await
        .unwrap();
    let before = app.fingerprint().await;
    let rules_before = app
        .admin
        .list_rules(pb::ListRulesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .rules;
    let ledger_before = app.engine.ledger(None, 0, i64::MAX).await.unwrap();
    app.stop().await;

    let url = db.url.clone();
    let out = tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || migrate(&dir, &url)
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("ledger") && stdout.contains("rule_history"),
        "{stdout}"
    );

    let url = db.url.clone();
    let mut moved = spawn_app_with(move |c| c.store = StoreConfig::Postgres { url }).await;
    assert_eq!(moved.fingerprint().await, before);
    assert_eq!(
        moved.engine.ledger(None, 0, i64::MAX).await.unwrap(),
        ledger_before,
        "the ledger with its ids"
    );
    let rules = moved
        .admin
        .list_rules(pb::ListRulesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .rules;
    assert_eq!(rules, rules_before);
    let history = moved
        .admin
        .rule_history(pb::RuleHistoryRequest {
            channel: "shopify".into(),
            sku: "M-3".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .changes;
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].comment, "keep two back");
    let held = moved
        .inventory
        .get_reservation(pb::GetReservationRequest {
            channel: "amazon".into(),
            order_id: "O-2".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(held.status, pb::ReservationStatus::Held as i32);
    // New ledger lines continue after the copied ids.
    moved.set_stock("M-0", "WH-WEST", 1).await;
    let last = moved.engine.ledger(None, 0, i64::MAX).await.unwrap();
    assert!(last.last().unwrap().id > ledger_before.last().unwrap().id);
    moved.stop().await;

    // A second migration into the now non-empty database is refused.
    let url = db.url.clone();
    let again = tokio::task::spawn_blocking(move || migrate(&dir, &url))
        .await
        .unwrap();
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"));
}
