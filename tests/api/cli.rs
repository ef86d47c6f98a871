//! The command line as scripts use it: `stock import` through BatchSetStock,
//! `-o json`, a closed pipe, `--timeout`, `watch`'s exit status, shell
//! completions. Each test runs the real binary against a server on loopback.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use crate::helpers::spawn_app;

fn stockpool(server: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_stockpool"));
    c.args(["--server", server]);
    c
}

/// A stock file of `n` rows over `n` SKUs and the three warehouses.
fn stock_file(dir: &std::path::Path, n: usize) -> std::path::PathBuf {
    let path = dir.join("stock.csv");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    writeln!(f, "sku,warehouse,on_hand").unwrap();
    for i in 0..n {
        let wh = ["WH-EAST", "WH-WEST", "WH-CENTRAL"][i % 3];
        writeln!(f, "IMP-{i:06},{wh},{}", 1 + i % 50).unwrap();
    }
    f.flush().unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_import_of_12k_rows_applies_them_in_chunks_quietly_and_a_second_import_replays() {
    let mut app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let file = stock_file(dir.path(), 12_000);
    let url = app.grpc_url.clone();
    let run = move |file: std::path::PathBuf| {
        let url = url.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                stockpool(&url)
                    .args(["stock", "import"])
                    .arg(file)
                    .output()
                    .unwrap()
            })
            .await
            .unwrap()
        }
    };
    let out = run(file.clone()).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Not a terminal: no progress bar.
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("12000 rows: 12000 applied, 0 unchanged, 0 replayed, 0 failed"),
        "{}",
        stdout.lines().last().unwrap_or_default()
    );
    let levels = app.stock(&["IMP-000049", "IMP-011999"]).await;
    let on_hand = |sku: &str, wh: &str| {
        levels
            .iter()
            .find(|l| l.sku == sku && l.warehouse == wh)
            .unwrap()
            .on_hand
    };
    assert_eq!(on_hand("IMP-000049", "WH-WEST"), 50);
    assert_eq!(on_hand("IMP-011999", "WH-CENTRAL"), 1 + 11_999 % 50);
    let again = run(file).await;
    assert!(String::from_utf8_lossy(&again.stdout)
        .contains("12000 rows: 0 applied, 0 unchanged, 12000 replayed, 0 failed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_output_is_one_object_per_line_and_a_closed_pipe_ends_quietly() {
    let mut app = spawn_app().await;
    app.set_stock("J-0", "WH-EAST", 5).await;
    app.set_stock("J-1", "WH-EAST", 5).await;
    // Enough SKUs that `stock get` fills a pipe.
    let dir = tempfile::tempdir().unwrap();
    let file = stock_file(dir.path(), 3000);
    let url = app.grpc_url.clone();
    let (json, piped) = tokio::task::spawn_blocking(move || {
        let out = stockpool(&url)
            .args(["-o", "json", "stock", "import"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(out.status.success());
        let json = stockpool(&url)
            .args(["stock", "get", "J-0", "J-1", "-o", "json"])
            .output()
            .unwrap();
        // `stock get | head -1`: the reader goes away after one line.
        let mut child = stockpool(&url)
            .args(["stock", "get"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        let piped = child.wait_with_output().unwrap();
        (json, piped)
    })
    .await
    .unwrap();
    let lines: Vec<serde_json::Value> = String::from_utf8(json.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is a JSON object"))
        .collect();
    assert_eq!(lines.len(), 6, "two SKUs in three warehouses");
    assert_eq!(lines[0]["sku"], "J-0");
    assert_eq!(lines[0]["on_hand"], 5);
    assert_eq!(piped.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&piped.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_answers_is_given_up_after_the_timeout() {
    // Accepts connections and says nothing.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let _held = std::thread::spawn(move || {
        let mut kept = Vec::new();
        for s in listener.incoming().take(4) {
            kept.push(s);
        }
        std::thread::sleep(std::time::Duration::from_secs(30));
    });
    let out = tokio::task::spawn_blocking(move || {
        stockpool(&format!("http://{addr}"))
            .args(["--timeout", "0.5", "stock", "get"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("error:"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_says_why_it_ended_and_fails_when_the_server_goes_away() {
    let mut app = spawn_app().await;
    app.set_stock("W-1", "WH-EAST", 5).await;
    let mut child = stockpool(&app.grpc_url)
        .args(["watch", "shopify"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let child = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        // The header, then W-1's level.
        stdout.read_line(&mut line).unwrap();
        stdout.read_line(&mut line).unwrap();
        assert!(line.contains("W-1"), "{line}");
        (child, stdout)
    })
    .await
    .unwrap();
    app.stop().await;
    let out = tokio::task::spawn_blocking(move || child.0.wait_with_output().unwrap())
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("watch of shopify ended"), "{stderr}");
    assert!(stderr.contains("--after-seq"), "{stderr}");
}

#[test]
fn completions_are_printed_for_bash_zsh_and_fish() {
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(env!("CARGO_BIN_EXE_stockpool"))
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell}");
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.contains("reservations"), "{shell}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_start_up_line_names_version_store_addresses_counts_and_load_time_without_colour() {
    let data = tempfile::tempdir().unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_stockpool"))
        .args([
            "serve",
            "--grpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(data.path())
        .env_remove("RUST_LOG")
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap());
    let mut log = String::new();
    let serving = tokio::time::timeout(std::time::Duration::from_secs(120), async {
        let mut line = String::new();
        loop {
            line.clear();
            tokio::io::AsyncBufReadExt::read_line(&mut lines, &mut line)
                .await
                .unwrap();
            assert!(!line.is_empty(), "the server exited before serving:\n{log}");
            log.push_str(&line);
            if line.contains("stockpool serving") {
                return line.clone();
            }
        }
    })
    .await
    .expect("the server started");
    let _ = child.kill().await;
    assert!(
        !log.contains('\x1b'),
        "colour codes in a log that is not a terminal:\n{log}"
    );
    for field in [
        &format!("version=\"{}\"", env!("CARGO_PKG_VERSION")),
        "store=sqlite ",
        "grpc_addr=127.0.0.1:",
        "http_addr=127.0.0.1:",
        "skus=0",
        "reservations=0",
        "load_ms=",
    ] {
        assert!(serving.contains(field), "{field} not in: {serving}");
    }
    assert!(serving.contains("stockpool.db"), "{serving}");
    assert!(!log.contains("state loaded"), "one start-up line:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_timeout_bounds_the_start_of_a_watch_not_how_long_it_streams() {
    let mut app = spawn_app().await;
    app.set_stock("T-1", "WH-WEST", 5).await;
    let mut child = stockpool(&app.grpc_url)
        .args(["--timeout", "1", "watch", "shopify"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let header = rx.recv().await.unwrap();
    assert!(header.contains("SEQ"), "{header}");
    assert!(rx.recv().await.unwrap().contains("T-1"));
    // Well past the timeout, the stream still delivers.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    app.set_stock("T-2", "WH-WEST", 7).await;
    let next = rx.recv().await.expect("the watch still runs");
    assert!(next.contains("T-2"), "{next}");
    let _ = child.kill();
    let _ = child.wait();
}
