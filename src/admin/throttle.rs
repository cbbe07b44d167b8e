//! How often a user who is not an admin may change things through the admin API. Each change
//! (a key minted, renamed, disabled…) rebuilds the configuration snapshot on every replica, so
//! an unbounded stream of them from one account would keep every replica busy rebuilding.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv6Addr};
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
/// Failed logins one client address may have (whatever the names) before each further try from it
/// must wait: more than a username's, as several people may share an address (a NAT, a bastion).
const FREE_ADDRESS_FAILURES: u32 = 20;
/// An address with no failure for this long starts afresh. A success does not clear it: one
/// account of one's own would otherwise launder guesses at everyone else's.
const ADDRESS_MEMORY: Duration = Duration::from_secs(15 * 60);
/// The longest wait between tries of a username whose logins keep failing: long enough that a
/// password cannot be guessed at the speed of its hash, short enough that someone failing on
/// purpose keeps its owner out for a minute at most after they stop.
const MAX_LOGIN_WAIT: Duration = Duration::from_secs(60);
/// Usernames (and addresses) remembered; past it the map starts afresh.
const MAX_NAMES: usize = 100_000;
/// What of a username is remembered (a body may name a long one).
const NAME_BYTES: usize = 256;

/// Failed logins per replica, by username and by client address: past [FREE_FAILURES] in a row
/// for a name, or [FREE_ADDRESS_FAILURES] from an address, each try waits (1 s, doubling up to
/// [MAX_LOGIN_WAIT]) before its password is even checked. The address's count stops a client that
/// tries a few passwords on each of many names (password spraying), which a count per name alone
/// lets through. A success forgets the name, and lets that name past its address's wait from then
/// on: someone failing on purpose from a shared address (a NAT, the reverse proxy in front of the
/// admin port) cannot keep out the people who signed in from it before.
///
/// A try counts as a failure from the moment it is let in ([`LoginFailures::begin`]) until it
/// succeeds: tries sent in parallel all wait for a password slot, and counting them only once
/// checked would let every one of them past the limit.
#[derive(Default)]
pub struct LoginFailures(Mutex<Tallies>);

#[derive(Default)]
struct Tallies {
    names: Tally<String>,
    addresses: Tally<IpAddr>,
    /// Names that signed in from an address (as counted), by that address.
    known: HashSet<(String, IpAddr)>,
}

impl LoginFailures {
    /// Lets a try of `username` from `from` in now, counted as failed until [`Self::succeeded`];
    /// or says how long until one may be.
    pub fn begin(&self, username: &str, from: Option<IpAddr>, now: Instant) -> Result<LoginTry, Duration> {
        let mut t = self.0.lock();
        let name = name(username);
        let at = from.map(address);
        let from = at.filter(|a| !t.known.contains(&(name.to_string(), *a)));
        let by_name = t.names.wait(name, FREE_FAILURES, None, now);
        let by_address = from.and_then(|a| t.addresses.wait(&a, FREE_ADDRESS_FAILURES, Some(ADDRESS_MEMORY), now));
        if let Some(wait) = by_name.max(by_address) {
            return Err(wait);
        }
        let name_before = t.names.0.get(name).copied();
        t.names.failed(name.to_string(), FREE_FAILURES, None, now);
        let address_before = from.and_then(|a| t.addresses.0.get(&a).copied());
        if let Some(a) = from {
            t.addresses.failed(a, FREE_ADDRESS_FAILURES, Some(ADDRESS_MEMORY), now);
        }
        Ok(LoginTry {
            name: name.to_string(),
            at,
            counted_at: from,
            before: (name_before, address_before),
            counted: (
                t.names.0.get(name).copied(),
                from.and_then(|a| t.addresses.0.get(&a).copied()),
            ),
        })
    }

    /// A try let in by [`Self::begin`] succeeded: the name is forgotten, the failure its try
    /// counted at the address taken back, and the name known at the address from now on.
    pub fn succeeded(&self, attempt: LoginTry) {
        let mut t = self.0.lock();
        t.names.0.remove(&attempt.name);
        if let Some(entry) = attempt.counted_at.and_then(|a| t.addresses.0.get_mut(&a)) {
            entry.0 = entry.0.saturating_sub(1);
        }
        let Some(a) = attempt.at else { return };
        if t.known.len() >= MAX_NAMES {
            t.known.clear();
        }
        t.known.insert((attempt.name, a));
    }

    /// A try let in by [`Self::begin`] that checked no password (the database or the password
    /// slots failed it): its failure is taken back, name and address, as if it never came.
    pub fn abandon(&self, attempt: LoginTry) {
        let mut t = self.0.lock();
        take_back(&mut t.names, attempt.name, attempt.before.0, attempt.counted.0);
        if let Some(a) = attempt.counted_at {
            take_back(&mut t.addresses, a, attempt.before.1, attempt.counted.1);
        }
    }
}

/// Undoes one counted failure of `key`: the entry as it was before (its count and the time of its
/// last failure, or no entry), when nothing changed it since; one failure fewer otherwise.
fn take_back<K: std::hash::Hash + Eq>(tally: &mut Tally<K>, key: K, before: Option<Entry>, counted: Option<Entry>) {
    let now = tally.0.get(&key).copied();
    match (now, before) {
        (Some(_), Some(before)) if now == counted => {
            tally.0.insert(key, before);
        }
        (Some(_), None) if now == counted => {
            tally.0.remove(&key);
        }
        _ => {
            if let Some(entry) = tally.0.get_mut(&key) {
                entry.0 = entry.0.saturating_sub(1);
            }
        }
    }
}

/// A login try let in, counted as failed until it succeeds.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a try that succeeds is handed back to `succeeded`"]
pub struct LoginTry {
    name: String,
    /// The client's address as counted, if known.
    at: Option<IpAddr>,
    /// That address, when the try counted there (a name known at it does not).
    counted_at: Option<IpAddr>,
    /// The name's and the address's entries before the try, and as the try left them.
    before: (Option<Entry>, Option<Entry>),
    counted: (Option<Entry>, Option<Entry>),
}

/// A tally's entry: failures in a row, and the time of the last.
type Entry = (u32, Instant);

/// Failures in a row and the time of the last, by key.
struct Tally<K>(HashMap<K, (u32, Instant)>);

impl<K> Default for Tally<K> {
    fn default() -> Self {
        Self(HashMap::new())
    }
}

impl<K: std::hash::Hash + Eq> Tally<K> {
    /// How long `key` must still wait, when past its `free` failures; a key whose last failure is
    /// older than `memory` is forgotten.
    fn wait<Q>(&self, key: &Q, free: u32, memory: Option<Duration>, now: Instant) -> Option<Duration>
    where
        K: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        let &(failures, last) = self.0.get(key)?;
        let since = now.saturating_duration_since(last);
        if failures < free || memory.is_some_and(|m| since >= m) {
            return None;
        }
        let wait = MAX_LOGIN_WAIT.min(Duration::from_secs(1 << (failures - free).min(6)));
        wait.checked_sub(since).filter(|left| !left.is_zero())
    }

    /// One more failure of `key`. A full table first lets go of the keys still within their
    /// `free` failures (which hold nobody back), so flooding it with fresh names or addresses
    /// does not wipe the counts that matter.
    fn failed(&mut self, key: K, free: u32, memory: Option<Duration>, now: Instant) {
        if self.0.len() >= MAX_NAMES && !self.0.contains_key(&key) {
            self.0.retain(|_, &mut (failures, _)| failures >= free);
            // Little let go of: start afresh rather than scan the table again on the next name.
            if self.0.len() >= MAX_NAMES - MAX_NAMES / 10 {
                self.0.clear();
            }
        }
        let entry = self.0.entry(key).or_insert((0, now));
        let forgotten = memory.is_some_and(|m| now.saturating_duration_since(entry.1) >= m);
        let failures = if forgotten { 0 } else { entry.0 };
        *entry = (failures.saturating_add(1), now);
    }
}

fn name(username: &str) -> &str {
    let mut end = username.len().min(NAME_BYTES);
    while !username.is_char_boundary(end) {
        end -= 1;
    }
    &username[..end]
}

/// The address a client is counted under: an IPv6 client's /64, which one subscriber usually holds
/// whole (counting each address would give them 2^64 fresh starts).
fn address(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_username_that_keeps_failing_waits_longer_and_longer() {
        let logins = LoginFailures::default();
        let t0 = Instant::now();
        // Tries in flight count already: five let in at once, the sixth waits.
        for _ in 0..FREE_FAILURES {
            assert!(logins.begin("root", None, t0).is_ok());
        }
        assert_eq!(logins.begin("root", None, t0), Err(Duration::from_secs(1)));
        assert!(logins.begin("admin", None, t0).is_ok(), "another name is not held");
        let t1 = t0 + Duration::from_secs(1);
        assert!(logins.begin("root", None, t1).is_ok());
        assert_eq!(logins.begin("root", None, t1), Err(Duration::from_secs(2)));
        let mut t = t1;
        for _ in 0..20 {
            t += MAX_LOGIN_WAIT;
            assert!(logins.begin("root", None, t).is_ok());
        }
        assert_eq!(logins.begin("root", None, t), Err(MAX_LOGIN_WAIT));
        let attempt = logins.begin("root", None, t + MAX_LOGIN_WAIT).unwrap();
        logins.succeeded(attempt);
        assert!(logins.begin("root", None, t + MAX_LOGIN_WAIT).is_ok());
        // A name cut inside a character is cut before it.
        let long = "é".repeat(200);
        assert!(logins.begin(&long, None, t0).is_ok());
        assert_eq!(name(&long).len(), NAME_BYTES);
    }

    #[test]
    fn an_address_that_tries_many_names_waits_too() {
        let logins = LoginFailures::default();
        let spray: IpAddr = "203.0.113.9".parse().unwrap();
        let other: IpAddr = "198.51.100.1".parse().unwrap();
        let t0 = Instant::now();
        // One's own account signs in first (its try counted, then taken back).
        logins.succeeded(logins.begin("mine", Some(spray), t0).unwrap());
        for i in 0..FREE_ADDRESS_FAILURES {
            assert!(logins.begin(&format!("user{i}"), Some(spray), t0).is_ok());
        }
        assert_eq!(logins.begin("fresh", Some(spray), t0), Err(Duration::from_secs(1)));
        assert!(
            logins.begin("fresh", Some(other), t0).is_ok(),
            "another address is not held"
        );
        // A name that signed in from the address before is not kept out by others' failures, and
        // its success does not clear the address for other names.
        logins.succeeded(logins.begin("mine", Some(spray), t0).unwrap());
        assert!(logins.begin("fresh", Some(spray), t0).is_err());
        // Quiet for long enough, it starts afresh.
        let later = t0 + ADDRESS_MEMORY;
        assert!(logins.begin("fresh", Some(spray), later).is_ok());
        assert!(logins.begin("fresh2", Some(spray), later).is_ok());
        // An IPv6 client is counted by its /64.
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        for i in 0..FREE_ADDRESS_FAILURES {
            assert!(logins.begin(&format!("v6user{i}"), Some(a), t0).is_ok());
        }
        assert!(logins.begin("x", Some(b), t0).is_err());
        assert!(logins.begin("x", Some("2001:db8:1:3::1".parse().unwrap()), t0).is_ok());
    }

    /// A try that checked no password (a database or slot error) is not held against the name.
    #[test]
    fn a_try_that_checked_nothing_is_taken_back() {
        let logins = LoginFailures::default();
        let from: IpAddr = "203.0.113.7".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..FREE_FAILURES * 2 {
            logins.abandon(logins.begin("root", Some(from), t0).unwrap());
        }
        assert!(logins.begin("root", Some(from), t0).is_ok());
        // A name waiting after its failures keeps its wait as it was: an abandoned try does not
        // start it again.
        let t1 = t0 + Duration::from_secs(1);
        for _ in 0..FREE_FAILURES {
            let _ = logins.begin("admin", None, t0);
        }
        let late = t1 + Duration::from_millis(500);
        logins.abandon(logins.begin("admin", None, t1).unwrap());
        assert!(logins.begin("admin", None, late).is_ok(), "the wait still ran from t0");
    }

    /// Flooding the table with fresh names lets go of those that hold nobody back, not of a name
    /// past its free failures.
    #[test]
    fn a_full_table_keeps_the_names_that_wait() {
        let logins = LoginFailures::default();
        let t0 = Instant::now();
        for _ in 0..FREE_FAILURES {
            assert!(logins.begin("root", None, t0).is_ok());
        }
        for i in 0..MAX_NAMES {
            let _ = logins.begin(&format!("flood{i}"), None, t0);
        }
        assert!(logins.begin("root", None, t0).is_err());
        assert!(logins.0.lock().names.0.len() < MAX_NAMES);
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
