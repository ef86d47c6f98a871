//! Compiles `proto/stockpool/v1/*.proto` with protox (pure Rust: no system
//! `protoc`) and writes the file descriptor set that server reflection serves.

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/stockpool/v1/inventory.proto",
        "proto/stockpool/v1/admin.proto",
    ];
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=migrations");

    let fds = protox::compile(protos, ["proto"])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    std::fs::write(
        out.join("stockpool_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    // Messages serialize to JSON for the CLI's `-o json`; enum fields by
    // their proto names rather than numbers.
    tonic_prost_build::configure()
        .message_attribute(".stockpool.v1", "#[derive(serde::Serialize)]")
        .field_attribute(
            ".stockpool.v1.Reservation.status",
            "#[serde(serialize_with = \"crate::api::pb_json::reservation_status\")]",
        )
        .field_attribute(
            ".stockpool.v1.ListReservationsRequest.statuses",
            "#[serde(skip)]",
        )
        .field_attribute(
            ".stockpool.v1.OutboxEntry.state",
            "#[serde(serialize_with = \"crate::api::pb_json::outbox_state\")]",
        )
        .field_attribute(
            ".stockpool.v1.ListOutboxRequest.state",
            "#[serde(serialize_with = \"crate::api::pb_json::outbox_state\")]",
        )
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
