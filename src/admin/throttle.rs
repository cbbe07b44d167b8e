//! How often a user who is not an admin may change things through the admin API. Each change
//! (a key minted, renamed, disabled…) rebuilds the configuration snapshot on every replica, so
//! an unbounded stream of them from one account would keep every replica busy rebuilding.

use std::time::Duration;

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

#[cfg(test)]
mod tests {
    use super::*;

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
