//! Bearer tokens and what each role may call. With no tokens configured
//! every call is allowed (the server then only listens on loopback).

use std::collections::HashMap;
use std::sync::Arc;

use tonic::metadata::MetadataMap;
use tonic::Status;

use crate::domain::ChannelCode;

/// What a token may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Everything, Admin included.
    Ops,
    /// Stock movements and reads.
    Erp,
    /// Get* and Watch*.
    Read,
    /// Inventory calls for this channel only, plus reads.
    Channel(ChannelCode),
}

impl Role {
    /// `ops`, `erp`, `read` or `channel:<code>`.
    pub fn parse(raw: &str) -> Result<Role, String> {
        match raw {
            "ops" => Ok(Role::Ops),
            "erp" => Ok(Role::Erp),
            "read" => Ok(Role::Read),
            _ => match raw.strip_prefix("channel:") {
                Some(c) => ChannelCode::parse(c)
                    .map(Role::Channel)
                    .map_err(|e| e.to_string()),
                None => Err(format!(
                    "unknown role {raw:?}: use ops, erp, read or channel:<code>"
                )),
            },
        }
    }
}

/// What a call needs.
#[derive(Debug, Clone, Copy)]
pub enum Need<'a> {
    Read,
    Stock,
    Channel(&'a ChannelCode),
    Ops,
}

/// Configured tokens by secret.
#[derive(Debug, Clone, Default)]
pub struct Tokens(Arc<HashMap<String, Role>>);

impl Tokens {
    pub fn new(tokens: HashMap<String, Role>) -> Self {
        Tokens(Arc::new(tokens))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Refuses the call unless its bearer token's role covers `need`.
    pub fn check(&self, metadata: &MetadataMap, need: Need<'_>) -> Result<(), Status> {
        if self.0.is_empty() {
            return Ok(());
        }
        let header = metadata.get("authorization").ok_or_else(|| {
            Status::unauthenticated("missing authorization metadata: send \"Bearer <token>\"")
        })?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .ok_or_else(|| Status::unauthenticated("authorization must be \"Bearer <token>\""))?;
        let role = self
            .0
            .get(token.trim())
            .ok_or_else(|| Status::unauthenticated("unknown token"))?;
        let allowed = match (role, need) {
            (Role::Ops, _) => true,
            (_, Need::Read) => true,
            (Role::Erp, Need::Stock) => true,
            (Role::Channel(mine), Need::Channel(asked)) => mine == asked,
            _ => false,
        };
        if allowed {
            Ok(())
        } else {
            Err(Status::permission_denied(match need {
                Need::Channel(c) => format!("this token may not act for channel {c}"),
                Need::Stock => "this token may not move stock (needs role erp or ops)".to_string(),
                Need::Ops => "this token may not call Admin (needs role ops)".to_string(),
                Need::Read => unreachable!("every role may read"),
            }))
        }
    }
}
