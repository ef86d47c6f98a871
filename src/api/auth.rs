//! Bearer tokens and what each role may call. With no tokens configured
//! every call is allowed (the server then only listens on loopback).
//!
//! A channel token reads only its own channel (its reservations, its stream,
//! its figures and rules) unless it is configured to read every channel;
//! physical stock and the lists of warehouses and channels are open to
//! every token.

use std::collections::HashMap;
use std::sync::Arc;

use http::HeaderMap;
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
    /// A read that belongs to no channel: physical stock, the catalog lists.
    Read,
    /// A read of one channel's own data: its reservations, its stream, its
    /// figures and rules.
    ReadChannel(&'a ChannelCode),
    /// A read across every channel (all channels' figures or rules, the
    /// Odoo outbox, a simulation of any rule).
    ReadAllChannels,
    Stock,
    Channel(&'a ChannelCode),
    Ops,
}

/// What one token was given.
#[derive(Debug, Clone)]
struct Grant {
    role: Role,
    /// For a channel token: whether it may read other channels too.
    reads_all_channels: bool,
}

/// Configured tokens by secret.
#[derive(Debug, Clone, Default)]
pub struct Tokens(Arc<HashMap<String, Grant>>);

impl Tokens {
    /// Channel tokens among `tokens` read their own channel only.
    pub fn new(tokens: HashMap<String, Role>) -> Self {
        Tokens(Arc::new(
            tokens
                .into_iter()
                .map(|(token, role)| {
                    let grant = Grant {
                        role,
                        reads_all_channels: false,
                    };
                    (token, grant)
                })
                .collect(),
        ))
    }

    /// Lets the channel token `token` read every channel's reservations,
    /// streams, figures and rules, as the `read` role does.
    pub fn let_read_all_channels(&mut self, token: &str) {
        if let Some(grant) = Arc::make_mut(&mut self.0).get_mut(token) {
            grant.reads_all_channels = true;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Refuses the call unless its bearer token's role covers `need`.
    /// Checks a read scoped by a request's `channel` field: a channel
    /// names one channel (a channel token may read its own), "" every
    /// channel (only with `read_all_channels`). Returns the channel named.
    pub fn check_channel_read(
        &self,
        metadata: &MetadataMap,
        channel: &str,
    ) -> Result<Option<ChannelCode>, Status> {
        let channel = if channel.is_empty() {
            None
        } else {
            Some(super::convert::channel(channel)?)
        };
        let need = channel
            .as_ref()
            .map_or(Need::ReadAllChannels, Need::ReadChannel);
        self.check(metadata, need)?;
        Ok(channel)
    }

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
        let grant = self
            .0
            .get(token.trim())
            .ok_or_else(|| Status::unauthenticated("unknown token"))?;
        let allowed = match (&grant.role, need) {
            (Role::Ops, _) => true,
            (_, Need::Read) => true,
            (Role::Channel(_), Need::ReadChannel(_) | Need::ReadAllChannels)
                if grant.reads_all_channels =>
            {
                true
            }
            (Role::Channel(mine), Need::ReadChannel(asked)) => mine == asked,
            (Role::Channel(_), Need::ReadAllChannels) => false,
            (_, Need::ReadChannel(_) | Need::ReadAllChannels) => true,
            (Role::Erp, Need::Stock) => true,
            (Role::Channel(mine), Need::Channel(asked)) => mine == asked,
            _ => false,
        };
        if allowed {
            return Ok(());
        }
        let mine = match &grant.role {
            Role::Channel(c) => Some(c),
            _ => None,
        };
        Err(Status::permission_denied(match (need, mine) {
            (Need::Channel(c), _) => format!("this token may not act for channel {c}"),
            (Need::ReadChannel(c), Some(mine)) => {
                format!("this token may not read channel {c}: it reads channel {mine} only")
            }
            (Need::ReadAllChannels, Some(mine)) => format!(
                "this token reads channel {mine} only: name that channel in the request \
                 (reading every channel needs role read, erp or ops)"
            ),
            (Need::Stock, _) => "this token may not move stock (needs role erp or ops)".to_string(),
            (Need::Ops, _) => "this token may not call Admin (needs role ops)".to_string(),
            _ => unreachable!("only channel tokens are refused reads"),
        }))
    }
}

/// With tokens configured, server reflection (which lists every method and
/// message) answers only callers with a valid token, of any role: the
/// refusal of a call to `path` with these request headers, None when it
/// may go on. Health stays open: load balancers probe it without one.
pub fn refuse_reflection(tokens: &Tokens, path: &str, headers: &HeaderMap) -> Option<Status> {
    if !path.starts_with("/grpc.reflection.") {
        return None;
    }
    let metadata = MetadataMap::from_headers(headers.clone());
    tokens.check(&metadata, Need::Read).err()
}
