//! Request rate limits per user and per org, by GCRA (the generic cell rate algorithm): a
//! key may burst up to its whole window's allowance, then earns requests back evenly over
//! the window. Each key costs one timestamp, its "theoretical arrival time" (TAT).
//!
//! A request is counted only if both limits let it through: the user's and the org's
//! allowance are checked first and charged together, so a request refused by one limit
//! uses up nothing of the other.
//!
//! Memory stays bounded: a key back at its full allowance carries no information and is
//! dropped, by a periodic sweep and, when more than `max_tracked_keys` are held, by a sweep
//! inside a request. The in-request sweep is amortised: after one, the next waits until the
//! table has grown by half again, so a crowd of active users (which no sweep can drop)
//! costs O(1) per request rather than a scan of the whole table each time.

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rustc_hash::FxHashMap;

use crate::config::RateLimitConfig;

/// A refused request: which limit, and when to retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limited {
    /// `user` or `org`.
    pub scope: &'static str,
    /// The limit that was hit, e.g. `100 requests per 60 s`.
    pub limit: String,
    /// Whole seconds until a request would pass (at least 1).
    pub retry_after_secs: u64,
}

/// One limit's rule: a request every `interval`, bursts up to `tolerance / interval`.
#[derive(Debug, Clone, Copy)]
struct Gcra {
    interval: u64,
    tolerance: u64,
}

impl Gcra {
    /// `per` requests per `window_secs`; `None` (no limit) when `per` is zero.
    fn new(per: u32, window_secs: u64) -> Option<Gcra> {
        let per = u64::from(NonZeroU32::new(per)?.get());
        let window = window_secs.max(1).saturating_mul(1_000_000_000);
        let interval = (window / per).max(1);
        Some(Gcra {
            interval,
            tolerance: interval.saturating_mul(per),
        })
    }

    /// The key's new TAT if a request at `now` is allowed, else how long until it would be.
    fn admit(&self, tat: Option<u64>, now: u64) -> Result<u64, u64> {
        let new = tat.map_or(now, |t| t.max(now)) + self.interval;
        if new - now <= self.tolerance {
            Ok(new)
        } else {
            Err(new - self.tolerance - now)
        }
    }
}

/// The TATs of one limit's keys.
#[derive(Debug)]
struct Table {
    rule: Gcra,
    tats: FxHashMap<String, u64>,
    /// Sweep inside a request once the table is larger than this.
    sweep_above: usize,
    /// Full scans of the table so far.
    scans: u64,
}

impl Table {
    fn new(rule: Gcra, cap: usize) -> Self {
        Table {
            rule,
            tats: FxHashMap::default(),
            sweep_above: cap,
            scans: 0,
        }
    }

    /// Drops keys back at their full allowance, then sets the next in-request sweep to
    /// when the table has grown by half (and never below `cap`).
    fn sweep(&mut self, now: u64, cap: usize) {
        self.tats.retain(|_, tat| *tat > now);
        self.scans += 1;
        let n = self.tats.len();
        self.sweep_above = cap.max(n.saturating_add(n / 2));
    }

    fn sweep_if_over(&mut self, now: u64, cap: usize) {
        if self.tats.len() > self.sweep_above {
            self.sweep(now, cap);
        }
    }
}

/// The per-user and per-org limiters.
pub struct RateLimits {
    users: Option<Mutex<Table>>,
    orgs: Option<Mutex<Table>>,
    config: RateLimitConfig,
    epoch: Instant,
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimits")
            .field("config", &self.config)
            .finish()
    }
}

impl RateLimits {
    /// Limiters for the configuration (a zero allowance disables that limit).
    pub fn new(config: &RateLimitConfig) -> Self {
        let cap = config.max_tracked_keys.max(1);
        let make = |per, window| {
            if !config.enabled {
                return None;
            }
            Gcra::new(per, window).map(|rule| Mutex::new(Table::new(rule, cap)))
        };
        RateLimits {
            users: make(config.per_user, config.per_user_window_secs),
            orgs: make(config.per_org, config.per_org_window_secs),
            config: config.clone(),
            epoch: Instant::now(),
        }
    }

    fn now(&self) -> u64 {
        // Starts at one window so that "back at full allowance" (TAT <= now) is never
        // confused with time zero.
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX / 2) + 1_000_000_000
    }

    fn cap(&self) -> usize {
        self.config.max_tracked_keys.max(1)
    }

    /// Counts one request of `user` in `org`; `Err` if a limit is exceeded, in which case
    /// neither limit is charged.
    pub fn check(&self, org: &str, user: &str) -> Result<(), Limited> {
        self.check_at(org, user, self.now())
    }

    fn check_at(&self, org: &str, user: &str, now: u64) -> Result<(), Limited> {
        let cap = self.cap();
        // Lock order: users, then orgs.
        let mut users = self.users.as_ref().map(|t| t.lock());
        let mut user_grant = None;
        if let Some(table) = users.as_deref_mut() {
            table.sweep_if_over(now, cap);
            let key = format!("{org}\u{0}{user}");
            match table.rule.admit(table.tats.get(&key).copied(), now) {
                Ok(tat) => user_grant = Some((key, tat)),
                Err(wait) => {
                    return Err(Limited {
                        scope: "user",
                        limit: format!(
                            "{} requests per {} s per user",
                            self.config.per_user, self.config.per_user_window_secs
                        ),
                        retry_after_secs: secs_up(wait),
                    });
                }
            }
        }
        if let Some(orgs) = &self.orgs {
            let mut table = orgs.lock();
            table.sweep_if_over(now, cap);
            match table.rule.admit(table.tats.get(org).copied(), now) {
                Ok(tat) => {
                    table.tats.insert(org.to_owned(), tat);
                }
                Err(wait) => {
                    return Err(Limited {
                        scope: "org",
                        limit: format!(
                            "{} requests per {} s per organization",
                            self.config.per_org, self.config.per_org_window_secs
                        ),
                        retry_after_secs: secs_up(wait),
                    });
                }
            }
        }
        if let (Some(table), Some((key, tat))) = (users.as_deref_mut(), user_grant) {
            table.tats.insert(key, tat);
        }
        Ok(())
    }

    /// Drops state of keys that are back to a full allowance (call periodically).
    pub fn sweep(&self) {
        self.sweep_at(self.now());
    }

    fn sweep_at(&self, now: u64) {
        for table in [&self.users, &self.orgs].into_iter().flatten() {
            let mut t = table.lock();
            t.sweep(now, self.cap());
            t.tats.shrink_to_fit();
        }
    }

    /// Number of users currently tracked.
    pub fn tracked_users(&self) -> usize {
        self.users.as_ref().map_or(0, |u| u.lock().tats.len())
    }

    /// How many times the user table has been scanned whole (sweeps), for tests and
    /// diagnostics.
    pub fn user_table_scans(&self) -> u64 {
        self.users.as_ref().map_or(0, |u| u.lock().scans)
    }
}

fn secs_up(nanos: u64) -> u64 {
    let d = Duration::from_nanos(nanos);
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    s.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    fn config(per_user: u32, per_org: u32) -> RateLimitConfig {
        RateLimitConfig {
            per_user,
            per_org,
            ..RateLimitConfig::default()
        }
    }

    #[test]
    fn user_limit_allows_the_window_then_refuses() {
        let r = RateLimits::new(&config(100, 10_000));
        for i in 0..100 {
            assert!(r.check("acme", "alice").is_ok(), "request {i}");
        }
        let refused = r.check("acme", "alice").unwrap_err();
        assert_eq!(refused.scope, "user");
        assert!((1..=60).contains(&refused.retry_after_secs));
        // Other users are not affected.
        assert!(r.check("acme", "bob").is_ok());
    }

    #[test]
    fn allowance_comes_back_evenly_over_the_window() {
        let r = RateLimits::new(&config(2, 0));
        let t0 = 10 * SEC;
        assert!(r.check_at("acme", "alice", t0).is_ok());
        assert!(r.check_at("acme", "alice", t0).is_ok());
        let refused = r.check_at("acme", "alice", t0).unwrap_err();
        assert_eq!(refused.retry_after_secs, 30);
        // One request back after half the window, not two.
        assert!(r.check_at("acme", "alice", t0 + 30 * SEC).is_ok());
        assert!(r.check_at("acme", "alice", t0 + 30 * SEC).is_err());
    }

    #[test]
    fn org_limit_covers_all_users() {
        let r = RateLimits::new(&config(100, 5));
        for u in 0..5 {
            assert!(r.check("acme", &format!("u{u}")).is_ok());
        }
        assert_eq!(r.check("acme", "u9").unwrap_err().scope, "org");
        assert!(r.check("globex", "u9").is_ok());
    }

    #[test]
    fn a_request_refused_by_the_org_limit_costs_the_user_nothing() {
        // Users: 2 per hour. Org: 4 per 4 s, so it recovers long before a user would.
        let r = RateLimits::new(&RateLimitConfig {
            per_user: 2,
            per_user_window_secs: 3600,
            per_org: 4,
            per_org_window_secs: 4,
            ..RateLimitConfig::default()
        });
        let t0 = 10 * SEC;
        for u in 0..4 {
            assert!(r.check_at("acme", &format!("u{u}"), t0).is_ok());
        }
        for _ in 0..5 {
            assert_eq!(r.check_at("acme", "bob", t0).unwrap_err().scope, "org");
        }
        // Once the org has room again, bob still has his whole allowance.
        let later = t0 + 2 * SEC;
        assert!(r.check_at("acme", "bob", later).is_ok());
        assert!(r.check_at("acme", "bob", later).is_ok());
        assert_eq!(r.check_at("acme", "bob", later).unwrap_err().scope, "user");
    }

    #[test]
    fn a_request_refused_by_the_user_limit_costs_the_org_nothing() {
        let r = RateLimits::new(&config(1, 3));
        let t0 = 10 * SEC;
        assert!(r.check_at("acme", "alice", t0).is_ok());
        for _ in 0..10 {
            assert_eq!(r.check_at("acme", "alice", t0).unwrap_err().scope, "user");
        }
        assert!(r.check_at("acme", "bob", t0).is_ok());
        assert!(r.check_at("acme", "carol", t0).is_ok());
    }

    #[test]
    fn disabled_limits_never_refuse() {
        let r = RateLimits::new(&RateLimitConfig {
            enabled: false,
            per_user: 1,
            ..RateLimitConfig::default()
        });
        for _ in 0..10 {
            assert!(r.check("acme", "alice").is_ok());
        }
    }

    #[test]
    fn memory_is_bounded_by_sweeps() {
        let r = RateLimits::new(&RateLimitConfig {
            per_user: 1000,
            per_user_window_secs: 1,
            max_tracked_keys: 50,
            ..RateLimitConfig::default()
        });
        let t0 = 10 * SEC;
        for u in 0..500 {
            r.check_at("acme", &format!("user{u}"), t0).unwrap();
        }
        // Five milliseconds later every one of them is back at full allowance: as new
        // users arrive, a sweep inside a request drops the old ones.
        for u in 0..500 {
            r.check_at("acme", &format!("late{u}"), t0 + 5_000_000)
                .unwrap();
        }
        assert!(r.tracked_users() < 1000, "{}", r.tracked_users());
        r.sweep_at(t0 + 5 * SEC);
        assert_eq!(r.tracked_users(), 0);
    }

    #[test]
    fn many_active_users_do_not_rescan_the_table_on_every_request() {
        // Long windows: nobody is ever back at full allowance, so no sweep can drop
        // anything, and a scan per request over the cap would be 9,900 scans.
        let r = RateLimits::new(&RateLimitConfig {
            per_user: 100,
            per_user_window_secs: 3600,
            max_tracked_keys: 100,
            ..RateLimitConfig::default()
        });
        let t0 = 10 * SEC;
        for u in 0..10_000 {
            r.check_at("acme", &format!("user{u}"), t0).unwrap();
        }
        assert_eq!(r.tracked_users(), 10_000);
        let scans = r.user_table_scans();
        assert!(scans <= 20, "{scans} scans of the user table");
    }
}
