//! Which role this process plays, active or standby, and what the active
//! one serves: the state both listeners route by.
//!
//! The listeners are bound once and serve through every change of role.
//! Health, reflection, `GetServerInfo`, `/healthz`, `/readyz` and `/metrics`
//! are answered by the process in either role; everything else goes to the
//! current [`Term`] (the engine loaded at a takeover, its Inventory and
//! Admin services, its Odoo webhook), or, without one, is refused as a
//! standby's (`api::edge`, `http::router`). The server (`server.rs`)
//! decides the role; this module only holds it. An active server whose
//! lease lapsed (Postgres unreachable) is **isolated**: its term still
//! serves reads from memory while its store refuses writes, until the
//! lease is renewed (active again) or found taken over (standby). On
//! SQLite the process is active from start to end.

use std::sync::{Arc, RwLock};

use tokio::sync::watch;

use crate::engine::Engine;
use crate::store::Standing;

/// The role of a process serving `term` (None: no term).
fn role_of(term: Option<&Term>) -> Role {
    match term.map(|t| t.engine.standing()) {
        None => Role::Standby,
        Some(Standing::Isolated(_)) => Role::Isolated,
        // A term whose tenure ended is being stepped down: still active
        // until it is gone (it serves nothing meanwhile).
        Some(_) => Role::Active,
    }
}

/// What this process does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Takes calls and runs the background work.
    Active,
    /// Waits to take over; refuses calls as `UNAVAILABLE`.
    Standby,
    /// Was active, but could not renew its lease in time (Postgres is
    /// unreachable): keeps its memory and serves reads, refuses writes as
    /// `UNAVAILABLE`, pauses its background work, and answers `/readyz`
    /// 503. Active again once a renewal gets through; standby once it
    /// learns another server took over.
    Isolated,
}

impl Role {
    /// As `GetServerInfo` and `/readyz` spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Active => "active",
            Role::Standby => "standby",
            Role::Isolated => "isolated",
        }
    }
}

/// What an active server serves during one tenure.
#[derive(Clone)]
pub struct Term {
    /// The fencing epoch of the tenure (0 on SQLite).
    pub epoch: u64,
    pub engine: Engine,
    /// The Inventory and Admin services.
    pub grpc: crate::api::TermServices,
    /// The tenure's own HTTP routes (the Odoo webhook).
    pub http: axum::Router,
}

/// The answer of `GetServerInfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInfo {
    pub version: &'static str,
    pub role: Role,
    pub store: &'static str,
    pub started_at_ms: i64,
    pub leader_epoch: u64,
}

/// The process's role and its current term. Cheap to clone.
#[derive(Clone)]
pub struct Serving {
    inner: Arc<Inner>,
}

struct Inner {
    /// "sqlite" or "postgres".
    store: &'static str,
    started_at_ms: i64,
    state: RwLock<State>,
    /// The role, for those who react to its changes (gRPC health).
    role: watch::Sender<Role>,
}

#[derive(Default)]
struct State {
    /// Set while active.
    term: Option<Term>,
    /// The active server's epoch: ours while active, the one last seen
    /// while standby.
    leader_epoch: u64,
    /// Who holds the lease, as last seen by a standby ('' unknown).
    holder: String,
}

impl Serving {
    /// A process over `store` ("sqlite" or "postgres"), standby until a
    /// term is activated.
    pub fn new(store: &'static str) -> Serving {
        let started_at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        Serving {
            inner: Arc::new(Inner {
                store,
                started_at_ms,
                state: RwLock::new(State::default()),
                role: watch::channel(Role::Standby).0,
            }),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.inner.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.inner.state.write().unwrap_or_else(|p| p.into_inner())
    }

    pub fn role(&self) -> Role {
        role_of(self.read().term.as_ref())
    }

    /// Tells those following the role (gRPC health) that it may have
    /// changed: the server calls it when its tenure lapses or is renewed.
    pub fn refresh_role(&self) {
        let role = self.role();
        self.inner.role.send_if_modified(|r| {
            let changed = *r != role;
            *r = role;
            changed
        });
    }

    /// Follows the role as it changes.
    pub fn watch_role(&self) -> watch::Receiver<Role> {
        self.inner.role.subscribe()
    }

    pub fn info(&self) -> ServerInfo {
        let state = self.read();
        ServerInfo {
            version: env!("CARGO_PKG_VERSION"),
            role: role_of(state.term.as_ref()),
            store: self.inner.store,
            started_at_ms: self.inner.started_at_ms,
            leader_epoch: state.leader_epoch,
        }
    }

    /// Serves `term` from now on.
    pub fn activate(&self, term: Term) {
        {
            let mut state = self.write();
            state.leader_epoch = term.epoch;
            state.holder = String::new();
            state.term = Some(term);
        }
        self.inner.role.send_replace(Role::Active);
    }

    /// Serves no term from now on: every call but the process's own is
    /// refused as a standby's. Returns the term that was served.
    pub fn stand_by(&self) -> Option<Term> {
        let term = self.write().term.take();
        self.inner.role.send_replace(Role::Standby);
        term
    }

    /// What a standby last saw of the lease.
    pub fn observe_leader(&self, epoch: u64, holder: &str) {
        let mut state = self.write();
        if state.term.is_none() {
            state.leader_epoch = epoch;
            if state.holder != holder {
                state.holder = holder.to_string();
            }
        }
    }

    /// The current term, while active.
    pub fn term(&self) -> Option<Term> {
        self.read().term.clone()
    }

    /// Runs `f` on the term that takes calls for its services: the current
    /// one while active, and while isolated too (its reads are served from
    /// memory; its store refuses writes). None, without running `f`, on a
    /// standby or while stepping down. `f` runs under the state's lock, so
    /// it must not call this `Serving` again.
    pub fn with_serving_term<R>(&self, f: impl FnOnce(&Term) -> R) -> Option<R> {
        self.read()
            .term
            .as_ref()
            .filter(|t| {
                matches!(
                    t.engine.standing(),
                    Standing::Current | Standing::Isolated(_)
                )
            })
            .map(f)
    }

    /// The engine of the current term, while active.
    pub fn engine(&self) -> Option<Engine> {
        self.read().term.as_ref().map(|t| t.engine.clone())
    }

    /// Why this server does not take calls right now, None when it does:
    /// it is the standby, its tenure just ended, it is isolated from
    /// Postgres, or memory is being reloaded after a failed write.
    pub fn unready(&self) -> Option<&'static str> {
        match &self.read().term {
            None => Some("standby"),
            Some(t) => match t.engine.standing() {
                Standing::Deposed(_) => Some("standby: stepping down"),
                Standing::Isolated(_) => Some(
                    "isolated: the lease could not be renewed in Postgres; writes are refused, \
                     reads are served from memory",
                ),
                Standing::Current if !t.engine.is_consistent() => {
                    Some("reloading state after a failed write")
                }
                Standing::Current => None,
            },
        }
    }

    /// The sentence a call that this server does not serve now is refused
    /// with: the isolated server's, or the standby's.
    pub fn refusal(&self) -> String {
        if let Some(Standing::Isolated(why)) =
            self.read().term.as_ref().map(|t| t.engine.standing())
        {
            return why;
        }
        self.standby_message()
    }

    /// The sentence a standby answers calls with: its role, and where the
    /// active server is when it knows.
    pub fn standby_message(&self) -> String {
        let state = self.read();
        let active = match (state.leader_epoch, state.holder.as_str()) {
            (0, _) => "no server has been active on this database yet".to_string(),
            (epoch, "") => format!("the active server holds epoch {epoch}"),
            (epoch, holder) => format!("the active server is {holder} (epoch {epoch})"),
        };
        format!(
            "this stockpool server is the standby: it takes no calls until it takes over; \
             {active}. Send calls to the active server (a load balancer that checks /readyz does)"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_standby_names_its_role_and_the_active_server_it_last_saw() {
        let serving = Serving::new("postgres");
        assert_eq!(serving.role(), Role::Standby);
        assert_eq!(serving.unready(), Some("standby"));
        assert!(serving
            .standby_message()
            .contains("no server has been active"));
        serving.observe_leader(4, "db-2 pid 77 grpc 10.0.0.2:50051");
        let message = serving.standby_message();
        assert!(
            message.starts_with("this stockpool server is the standby"),
            "{message}"
        );
        assert!(
            message.contains("db-2 pid 77") && message.contains("epoch 4"),
            "{message}"
        );
        let info = serving.info();
        assert_eq!(
            (info.role, info.store, info.leader_epoch),
            (Role::Standby, "postgres", 4)
        );
    }
}
