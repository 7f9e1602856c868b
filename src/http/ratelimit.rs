//! Request rate limits per user and per org (GCRA via governor). A user may burst up to the
//! whole window's allowance, then earns requests back evenly over the window.
//!
//! Memory stays bounded: idle keys are dropped by a periodic sweep, and at once when more
//! than `max_tracked_keys` users are tracked.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

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

/// The per-user and per-org limiters.
pub struct RateLimits {
    users: Option<DefaultKeyedRateLimiter<String>>,
    orgs: Option<DefaultKeyedRateLimiter<String>>,
    config: RateLimitConfig,
    clock: DefaultClock,
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimits")
            .field("config", &self.config)
            .finish()
    }
}

fn quota(per: u32, window_secs: u64) -> Option<Quota> {
    let n = NonZeroU32::new(per)?;
    let window = Duration::from_secs(window_secs.max(1));
    Quota::with_period(window / per).map(|q| q.allow_burst(n))
}

impl RateLimits {
    /// Limiters for the configuration (a zero allowance disables that limit).
    pub fn new(config: &RateLimitConfig) -> Self {
        let make = |per, window| {
            if !config.enabled {
                return None;
            }
            quota(per, window).map(RateLimiter::keyed)
        };
        RateLimits {
            users: make(config.per_user, config.per_user_window_secs),
            orgs: make(config.per_org, config.per_org_window_secs),
            config: config.clone(),
            clock: DefaultClock::default(),
        }
    }

    /// Counts one request of `user` in `org`; `Err` if a limit is exceeded.
    pub fn check(&self, org: &str, user: &str) -> Result<(), Limited> {
        if let Some(users) = &self.users {
            let key = format!("{org}\u{0}{user}");
            if users.len() > self.config.max_tracked_keys {
                users.retain_recent();
            }
            if let Err(not_until) = users.check_key(&key) {
                return Err(Limited {
                    scope: "user",
                    limit: format!(
                        "{} requests per {} s per user",
                        self.config.per_user, self.config.per_user_window_secs
                    ),
                    retry_after_secs: secs_up(not_until.wait_time_from(self.clock.now())),
                });
            }
        }
        if let Some(orgs) = &self.orgs
            && let Err(not_until) = orgs.check_key(&org.to_owned())
        {
            return Err(Limited {
                scope: "org",
                limit: format!(
                    "{} requests per {} s per organization",
                    self.config.per_org, self.config.per_org_window_secs
                ),
                retry_after_secs: secs_up(not_until.wait_time_from(self.clock.now())),
            });
        }
        Ok(())
    }

    /// Drops state of keys that are back to a full allowance (call periodically).
    pub fn sweep(&self) {
        for l in [&self.users, &self.orgs].into_iter().flatten() {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }

    /// Number of users currently tracked.
    pub fn tracked_users(&self) -> usize {
        self.users.as_ref().map_or(0, |u| u.len())
    }
}

fn secs_up(d: Duration) -> u64 {
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    s.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn org_limit_covers_all_users() {
        let r = RateLimits::new(&config(100, 5));
        for u in 0..5 {
            assert!(r.check("acme", &format!("u{u}")).is_ok());
        }
        assert_eq!(r.check("acme", "u9").unwrap_err().scope, "org");
        assert!(r.check("globex", "u9").is_ok());
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
        for u in 0..500 {
            r.check("acme", &format!("user{u}")).unwrap();
        }
        // Entries older than the replenish time are dropped when the cap is passed.
        std::thread::sleep(Duration::from_millis(5));
        r.check("acme", "late").unwrap();
        r.sweep();
        assert!(r.tracked_users() < 500, "{}", r.tracked_users());
    }
}
