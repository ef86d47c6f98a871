//! The process's memory allocator: mimalloc (its v2 line, without
//! transparent huge pages) for every binary that links the library: the
//! server, the adapters, the client, the tests and the benches.
//!
//! A write allocates and frees dozens of small blocks (codes, ops, the
//! reservation, the gRPC frames) on both worker threads. With glibc's
//! allocator half of the in-process engine's time went to its free lists;
//! with mimalloc the engine reserves about twice as fast and the server
//! spends about a fifth less CPU per gRPC call (README, "How fast").
//! Huge pages are off: in a VM, zeroing a fresh 2 MiB page on first touch
//! was a fifth of the engine's profile, and start-up was slower with them.
//!
//! mimalloc keeps freed pages mapped for a while before it returns them, so
//! a large temporary stays resident after it is freed: the start-up load
//! therefore streams the stored pools into the engine instead of listing
//! them first (1M SKUs: 87 bytes per pool resident, against 126 with glibc
//! and the list; `cargo bench --bench startup`).

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
