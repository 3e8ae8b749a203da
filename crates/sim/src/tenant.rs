//! Runtime state of the simulator: the tenants (fixed at start-up, so looking one up takes no
//! lock) and, per tenant, its resources, statistics and faults behind their own locks. No lock is
//! shared between tenants.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use tokio_util::sync::CancellationToken;

use crate::config::{Mode, SimConfig, TenantConfig};
use crate::faults::{Bucket, FaultConfig};
use crate::modes::{github, salesforce};
use crate::stats::Stats;
use crate::store::Store;

/// State shared by every tenant of the simulator: what a real provider keeps across customers.
#[derive(Debug, Default)]
pub struct Shared {
    /// Salesforce usernames are unique across every org in the world: lower-cased username →
    /// (tenant id, user id), over all salesforce tenants of this simulator.
    pub salesforce_usernames: Mutex<HashMap<String, (String, String)>>,
}

impl Shared {
    /// The Salesforce username registry.
    pub fn salesforce_usernames(&self) -> MutexGuard<'_, HashMap<String, (String, String)>> {
        unpoison(self.salesforce_usernames.lock())
    }
}

/// Per-mode runtime state beyond users and groups.
#[derive(Debug)]
pub enum ModeState {
    /// Plain SCIM and AWS keep nothing extra.
    None,
    /// GitHub: rate-limit windows, suspended logins, hard-deleted users.
    Github(Box<github::State>),
    /// Salesforce: issued OAuth tokens and the rolling request allocation.
    Salesforce(Box<salesforce::State>),
}

/// One simulated tenant.
#[derive(Debug)]
pub struct Tenant {
    /// Configuration at start-up (faults there are the initial faults).
    pub config: TenantConfig,
    /// Users and groups.
    store: RwLock<Store>,
    /// Request statistics.
    stats: Mutex<Stats>,
    /// Live faults.
    faults: RwLock<FaultConfig>,
    /// Rate-limit bucket.
    bucket: Mutex<Bucket>,
    /// What every tenant shares (Salesforce's global usernames).
    pub shared: Arc<Shared>,
    /// The mode's own state.
    pub ext: ModeState,
}

/// Recovers the data of a poisoned lock: a panicking handler must not take the tenant down.
fn unpoison<G>(r: Result<G, std::sync::PoisonError<G>>) -> G {
    r.unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Tenant {
    /// A fresh tenant that shares nothing with others.
    pub fn new(config: TenantConfig) -> Self {
        Self::with_shared(config, Arc::new(Shared::default()))
    }

    /// A fresh tenant sharing `shared` with the other tenants of a simulator.
    pub fn with_shared(config: TenantConfig, shared: Arc<Shared>) -> Self {
        let faults = config.faults.clone();
        let ext = match config.mode {
            Mode::Github => ModeState::Github(Box::new(github::State::new(&config))),
            Mode::Salesforce => ModeState::Salesforce(Box::new(salesforce::State::new(&config))),
            Mode::Scim | Mode::Aws => ModeState::None,
        };
        let store = crate::modes::fresh_store(&config);
        Self {
            config,
            store: RwLock::new(store),
            stats: Mutex::new(Stats::default()),
            faults: RwLock::new(faults),
            bucket: Mutex::new(Bucket::default()),
            shared,
            ext,
        }
    }

    /// The tenant id.
    pub fn id(&self) -> &str {
        &self.config.id
    }

    /// Shared access to resources.
    pub fn read(&self) -> RwLockReadGuard<'_, Store> {
        unpoison(self.store.read())
    }

    /// Exclusive access to resources.
    pub fn write(&self) -> RwLockWriteGuard<'_, Store> {
        unpoison(self.store.write())
    }

    /// The statistics.
    pub fn stats(&self) -> MutexGuard<'_, Stats> {
        unpoison(self.stats.lock())
    }

    /// A copy of the live faults.
    pub fn faults(&self) -> FaultConfig {
        unpoison(self.faults.read()).clone()
    }

    /// Replaces the live faults (and restarts the rate-limit bucket). Revoking the token also
    /// forgets every OAuth token issued so far, as a provider-side revocation does.
    pub fn set_faults(&self, faults: FaultConfig) {
        if faults.token_revoked
            && let ModeState::Salesforce(sf) = &self.ext
        {
            sf.revoke_all();
        }
        *unpoison(self.faults.write()) = faults;
        unpoison(self.bucket.lock()).reset();
    }

    /// Whether the live faults say the token is revoked (a cheap check for the gate).
    pub fn token_revoked(&self) -> bool {
        unpoison(self.faults.read()).token_revoked
    }

    /// The rate-limit bucket.
    pub fn bucket(&self) -> MutexGuard<'_, Bucket> {
        unpoison(self.bucket.lock())
    }

    /// Forgets every resource, statistic and mode state (tokens, windows, deleted users,
    /// claimed usernames), re-seeds the start-up data and restores the start-up faults.
    pub fn reset(&self) {
        *self.write() = crate::modes::fresh_store(&self.config);
        if self.config.mode == Mode::Salesforce {
            self.shared
                .salesforce_usernames()
                .retain(|_, (tenant, _)| tenant != self.id());
        }
        match &self.ext {
            ModeState::Github(g) => g.reset(),
            ModeState::Salesforce(sf) => sf.reset(),
            ModeState::None => {}
        }
        *self.stats() = Stats::default();
        self.set_faults(self.config.faults.clone());
    }
}

/// Everything a request handler can reach.
#[derive(Debug)]
pub struct App {
    /// Tenants by id.
    pub tenants: HashMap<String, Arc<Tenant>>,
    /// Tenant ids in configuration order (for listings).
    pub order: Vec<String>,
    /// Cancelled at shutdown, so hangs end instead of holding the drain.
    pub shutdown: CancellationToken,
}

impl App {
    /// Builds the tenants of a (validated) configuration.
    pub fn new(config: SimConfig, shutdown: CancellationToken) -> Self {
        let order = config.tenants.iter().map(|t| t.id.clone()).collect();
        let shared = Arc::new(Shared::default());
        let tenants = config
            .tenants
            .into_iter()
            .map(|t| {
                (
                    t.id.clone(),
                    Arc::new(Tenant::with_shared(t, shared.clone())),
                )
            })
            .collect();
        Self {
            tenants,
            order,
            shutdown,
        }
    }

    /// A tenant by id.
    pub fn tenant(&self, id: &str) -> Option<&Arc<Tenant>> {
        self.tenants.get(id)
    }
}
