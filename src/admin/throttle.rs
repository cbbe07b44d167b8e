//! How often a user who is not an admin may change things through the admin API. Each change
//! (a key minted, renamed, disabled…) rebuilds the configuration snapshot on every replica, so
//! an unbounded stream of them from one account would keep every replica busy rebuilding.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::limit::Buckets;

/// Changes per second a user who is not an admin may make (and at most this many at once).
pub const CHANGES_PER_SECOND: f64 = 5.0;

/// Each user's budget of changes.
#[derive(Default)]
pub struct ChangeBudget(Buckets);

impl ChangeBudget {
    /// Takes one change from the user's budget, or says how long until one is there.
    pub fn take(&self, user_id: &str) -> Result<(), Duration> {
        self.0.take(user_id, CHANGES_PER_SECOND)
    }
}

/// Failed logins a username may have in a row before each further try must wait.
const FREE_FAILURES: u32 = 5;
/// The longest wait between tries of a username whose logins keep failing: long enough that a
/// password cannot be guessed at the speed of its hash, short enough that someone failing on
/// purpose keeps its owner out for a minute at most after they stop.
const MAX_LOGIN_WAIT: Duration = Duration::from_secs(60);
/// Usernames remembered; past it the map starts afresh.
const MAX_NAMES: usize = 100_000;
/// What of a username is remembered (a body may name a long one).
const NAME_BYTES: usize = 256;

/// Failed logins by username, per replica: past [FREE_FAILURES] in a row, each try of that name
/// waits (1 s, doubling up to [MAX_LOGIN_WAIT]) before its password is even checked. A success
/// forgets the name.
#[derive(Default)]
pub struct LoginFailures(Mutex<HashMap<String, (u32, Instant)>>);

impl LoginFailures {
    /// Whether `username` may try now; how long until it may, when not.
    pub fn check(&self, username: &str, now: Instant) -> Result<(), Duration> {
        match self.0.lock().get(name(username)) {
            Some(&(failures, last)) if failures >= FREE_FAILURES => {
                let wait = MAX_LOGIN_WAIT.min(Duration::from_secs(1 << (failures - FREE_FAILURES).min(6)));
                match wait.checked_sub(now.saturating_duration_since(last)) {
                    Some(left) if !left.is_zero() => Err(left),
                    _ => Ok(()),
                }
            }
            _ => Ok(()),
        }
    }

    pub fn failed(&self, username: &str, now: Instant) {
        let mut map = self.0.lock();
        if map.len() >= MAX_NAMES && !map.contains_key(name(username)) {
            map.clear();
        }
        let entry = map.entry(name(username).to_string()).or_insert((0, now));
        *entry = (entry.0.saturating_add(1), now);
    }

    pub fn succeeded(&self, username: &str) {
        self.0.lock().remove(name(username));
    }
}

fn name(username: &str) -> &str {
    let mut end = username.len().min(NAME_BYTES);
    while !username.is_char_boundary(end) {
        end -= 1;
    }
    &username[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_username_that_keeps_failing_waits_longer_and_longer() {
        let logins = LoginFailures::default();
        let t0 = Instant::now();
        for _ in 0..FREE_FAILURES {
            assert!(logins.check("root", t0).is_ok());
            logins.failed("root", t0);
        }
        assert_eq!(logins.check("root", t0), Err(Duration::from_secs(1)));
        assert!(logins.check("admin", t0).is_ok(), "another name is not held");
        let t1 = t0 + Duration::from_secs(1);
        assert!(logins.check("root", t1).is_ok());
        logins.failed("root", t1);
        assert_eq!(logins.check("root", t1), Err(Duration::from_secs(2)));
        for i in 0..20 {
            logins.failed("root", t1 + Duration::from_secs(i));
        }
        assert_eq!(logins.check("root", t1 + Duration::from_secs(19)), Err(MAX_LOGIN_WAIT));
        logins.succeeded("root");
        assert!(logins.check("root", t1 + Duration::from_secs(19)).is_ok());
        // A name cut inside a character is cut before it.
        let long = "é".repeat(200);
        logins.failed(&long, t0);
        assert_eq!(name(&long).len(), NAME_BYTES);
    }

    #[test]
    fn each_user_has_a_budget_of_their_own() {
        let budget = ChangeBudget::default();
        for _ in 0..5 {
            assert!(budget.take("u1").is_ok());
        }
        let wait = budget.take("u1").unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_millis(200), "{wait:?}");
        assert!(budget.take("u2").is_ok());
    }
}
