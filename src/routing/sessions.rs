//! Session stickiness overrides. Stickiness itself is rendezvous hashing on `X-Session-Id` (no
//! state); dropping a session's binding re-salts its hash, so its next request lands wherever the
//! new hash points and sticks there. Overrides live in this process only.

use std::collections::HashMap;

use parking_lot::RwLock;

/// At most this many overrides are kept; beyond it the oldest half is forgotten.
const MAX_OVERRIDES: usize = 100_000;

#[derive(Default)]
pub struct SessionOverrides {
    salts: RwLock<HashMap<String, (u64, u64)>>,
}

impl SessionOverrides {
    /// The string the selector hashes for this session id.
    pub fn hash_key(&self, session: &str) -> String {
        match self.salts.read().get(session) {
            Some((salt, _)) => format!("{session}\u{0}{salt:016x}"),
            None => session.to_string(),
        }
    }

    /// Drops the session's current binding; returns whether it had been reset before.
    pub fn reset(&self, session: &str) -> bool {
        let mut map = self.salts.write();
        if map.len() >= MAX_OVERRIDES {
            let mut ages: Vec<u64> = map.values().map(|(_, seq)| *seq).collect();
            ages.sort_unstable();
            let cutoff = ages[ages.len() / 2];
            map.retain(|_, (_, seq)| *seq > cutoff);
        }
        let seq = map.values().map(|(_, s)| *s).max().unwrap_or(0) + 1;
        map.insert(session.to_string(), (rand::random(), seq)).is_some()
    }

    pub fn is_overridden(&self, session: &str) -> bool {
        self.salts.read().contains_key(session)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_changes_the_hash_key() {
        let s = SessionOverrides::default();
        assert_eq!(s.hash_key("abc"), "abc");
        assert!(!s.reset("abc"));
        let k1 = s.hash_key("abc");
        assert_ne!(k1, "abc");
        assert_eq!(s.hash_key("abc"), k1, "stable until the next reset");
        assert!(s.reset("abc"));
        assert_ne!(s.hash_key("abc"), k1);
    }
}
