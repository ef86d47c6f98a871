//! `stockpool backup`: a consistent copy of the SQLite store taken while a
//! server runs on it; restored, it serves the same state.

use std::process::Command;

use stockpool::api::pb;

use crate::helpers::{spawn_app, spawn_app_with};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_while_serving_restores_to_a_server_with_the_same_state() {
    let mut app = spawn_app().await;
    for i in 0..50 {
        app.set_stock(&format!("B-{i}"), "WH-WEST", 10 + i).await;
    }
    app.reserve("shopify", "O-1", &[("B-1", 3)], 0)
        .await
        .unwrap();
    app.reserve("amazon", "O-2", &[("B-2", 1)], 600)
        .await
        .unwrap();
    let before = app.fingerprint().await;
    let out_dir = tempfile::tempdir().unwrap();
    let file = out_dir.path().join("copy.db");
    let data_dir = app.data_dir();
    let backup = |file: std::path::PathBuf| {
        let data_dir = data_dir.clone();
        tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_stockpool"))
                .arg("backup")
                .arg("--data-dir")
                .arg(&data_dir)
                .arg(&file)
                .output()
                .unwrap()
        })
    };
    // The server is running: its latest commits may be in the WAL only.
    let out = backup(file.clone()).await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("stockpool.db"));
    // A second backup to the same file is refused, the first left intact.
    let again = backup(file.clone()).await.unwrap();
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));

    let restored = tempfile::tempdir().unwrap();
    std::fs::copy(&file, restored.path().join("stockpool.db")).unwrap();
    let dir = restored.path().to_path_buf();
    let mut copy = spawn_app_with(move |c| {
        c.store = stockpool::config::StoreConfig::Sqlite { data_dir: dir };
    })
    .await;
    assert_eq!(copy.fingerprint().await, before);
    let r = copy
        .inventory
        .get_reservation(pb::GetReservationRequest {
            channel: "amazon".into(),
            order_id: "O-2".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status, pb::ReservationStatus::Held as i32);
}

#[tokio::test]
async fn a_backup_of_a_directory_without_a_store_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = tokio::task::spawn_blocking({
        let dir = dir.path().to_path_buf();
        move || {
            Command::new(env!("CARGO_BIN_EXE_stockpool"))
                .arg("backup")
                .arg("--data-dir")
                .arg(&dir)
                .arg(dir.join("copy.db"))
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no store to back up"), "{stderr}");
}
