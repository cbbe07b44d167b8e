//! Live health of each upstream (a provider serving one model): latency and error-rate EWMAs that
//! scale its share of traffic, 429 cool-downs, and a circuit breaker that takes a failing upstream
//! out of rotation until a probe request succeeds.
//!
//! Local traffic updates the local state at once; what changed since the last sync is kept as a
//! `HealthDelta` that the state service pushes to the shared backend, and the merged view of every
//! replica comes back as `SharedHealth` (see `crate::state`). No request waits for that exchange.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};

/// Smoothing of the EWMAs: weight of the newest observation.
const ALPHA: f64 = 0.25;
/// Longest an open circuit waits between probes.
const MAX_OPEN: Duration = Duration::from_secs(300);
/// Longest cool-down an upstream's `Retry-After` (or its body's retry hint) can ask for: a larger
/// or absurd value would otherwise keep the upstream out of rotation, on every replica, for as long
/// as it says (or overflow the clock).
pub const MAX_RETRY_AFTER_SECS: u64 = 3600;

/// Thresholds from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct HealthPolicy {
    pub default_cooldown: Duration,
    pub failure_threshold: u32,
    pub open_for: Duration,
}

/// Why an attempt failed, as far as health is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// 429: a cool-down, not a sign of a broken upstream.
    RateLimited { retry_after: Option<Duration> },
    /// 5xx, resets, timeouts, connect errors.
    Broken,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Circuit {
    Closed,
    Open {
        until: Instant,
        backoff: Duration,
    },
    /// One probe request is in flight; everybody else stays away.
    HalfOpen {
        since: Instant,
        backoff: Duration,
    },
}

#[derive(Debug, Clone, Copy)]
struct State {
    latency_ewma_ms: Option<f64>,
    error_ewma: f64,
    cooldown_until: Option<Instant>,
    consecutive_failures: u32,
    circuit: Circuit,
    /// When a probe's answer closed the circuit, and the wait before that probe: a failure run
    /// soon after (a stream that breaks after its first event) opens it for twice as long.
    probe_closed: Option<(Instant, Duration)>,
    /// What local traffic observed since the last sync.
    pending: Pending,
}

#[derive(Debug, Clone, Copy, Default)]
struct Pending {
    successes: u32,
    failures: u32,
    latency_sum_ms: f64,
    /// A success closed an open (or probing) circuit.
    closed_circuit: bool,
}

/// What one replica's traffic did to an upstream since its last sync, in wall-clock terms so other
/// replicas can use it.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HealthDelta {
    pub successes: u32,
    pub failures: u32,
    /// Mean latency of the successes, ms.
    pub latency_ms: f64,
    /// Unix ms until which the upstream cools down after a 429; 0 for none.
    pub cooldown_until_ms: u64,
    /// Unix ms until which the circuit is open; 0 when it is not open.
    pub open_until_ms: u64,
    /// This traffic closed the circuit: a success after it had opened (a probe's, usually). Not
    /// merely "closed": another replica's ordinary traffic, under the failure threshold, must not
    /// erase an open circuit this replica has not heard of yet.
    pub closed: bool,
}

impl HealthDelta {
    /// Folds a later delta into this one (a failed push keeps its deltas for the next).
    pub fn merge(&mut self, later: &HealthDelta) {
        let n = self.successes + later.successes;
        if n > 0 {
            self.latency_ms = (self.latency_ms * f64::from(self.successes)
                + later.latency_ms * f64::from(later.successes))
                / f64::from(n);
        }
        self.successes = n;
        self.failures = self.failures.saturating_add(later.failures);
        self.cooldown_until_ms = self.cooldown_until_ms.max(later.cooldown_until_ms);
        self.open_until_ms = later.open_until_ms;
        self.closed = later.open_until_ms == 0 && (self.closed || later.closed);
    }
}

/// The merged health of an upstream over every replica's traffic.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SharedHealth {
    /// Latency EWMA, ms; negative when unknown.
    pub latency_ms: f64,
    pub error_rate: f64,
    pub cooldown_until_ms: u64,
    pub open_until_ms: u64,
}

/// Unix time in ms.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// How long a probe in flight holds its slot before it is taken for lost. Every request that ends
/// or moves on gives its probe slot back or records a verdict, so this is a safety net only; it
/// must outlast the slowest upstream answer (a probe that waits out a 60 s first-byte timeout must
/// not let a second probe, and a third, wait the same).
fn probe_lost(backoff: Duration) -> Duration {
    backoff.max(PROBE_LOST)
}

const PROBE_LOST: Duration = Duration::from_secs(300);

fn to_unix_ms(t: Instant, now: Instant, now_ms: u64) -> u64 {
    now_ms + t.saturating_duration_since(now).as_millis() as u64
}

fn to_instant(ms: u64, now: Instant, now_ms: u64) -> Instant {
    now + Duration::from_millis(ms.saturating_sub(now_ms))
}

/// What the selector may do with an upstream right now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Availability {
    /// In rotation; the factor (0, 1] scales its weight by its error rate.
    Available { error_factor: f64, latency_ms: Option<f64> },
    /// Circuit open and its wait is over: one request may probe it.
    Probe,
    /// Resting after a 429 (here or on another replica) until its `Retry-After`.
    RateLimited { until: Instant },
    /// Circuit open (or its one probe in flight).
    Unavailable { until: Option<Instant> },
}

pub struct UpstreamHealth {
    policy: HealthPolicy,
    state: Mutex<State>,
    /// A detached copy (`detached`): it never probes an open circuit, whose verdict it could not
    /// give back.
    detached: bool,
}

/// A copy of one upstream's health, for the admin API and metrics.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HealthView {
    pub latency_ewma_ms: Option<f64>,
    pub error_rate: f64,
    pub cooldown_remaining_ms: u64,
    pub consecutive_failures: u32,
    pub circuit: &'static str,
}

impl State {
    /// An upstream nothing is known of yet: in rotation, no samples.
    fn fresh() -> Self {
        State {
            latency_ewma_ms: None,
            error_ewma: 0.0,
            cooldown_until: None,
            consecutive_failures: 0,
            circuit: Circuit::Closed,
            probe_closed: None,
            pending: Pending::default(),
        }
    }
}

/// A success closes the circuit; one that a probe earned is remembered, so failing again soon after
/// waits twice the probe's wait.
fn close(s: &mut State) {
    if s.circuit != Circuit::Closed {
        s.pending.closed_circuit = true;
    }
    if let Circuit::HalfOpen { backoff, .. } = s.circuit {
        s.probe_closed = Some((Instant::now(), backoff));
    }
    s.circuit = Circuit::Closed;
}

impl UpstreamHealth {
    pub fn new(policy: HealthPolicy) -> Self {
        Self {
            policy,
            state: Mutex::new(State::fresh()),
            detached: false,
        }
    }

    /// Forgets what was learnt: a provider asked anew (another URL, headers, paths or keys) is
    /// judged afresh, not kept out of rotation for a circuit or a `Retry-After` its old
    /// configuration earned. A circuit that was open goes out to the other replicas as closed.
    pub fn reset(&self) {
        let mut s = self.state.lock();
        let was_open = s.circuit != Circuit::Closed;
        *s = State::fresh();
        s.pending.closed_circuit = was_open;
    }

    /// A copy that nothing else sees: it reads as the upstream stands now, and what is recorded on
    /// it is forgotten with it. For requests that must not judge the upstream: a token count is
    /// another endpoint (with its own rate limits at Anthropic), and its quick answers would pull
    /// the latency the model's generation is weighted by, or close a circuit generation opened.
    /// An open circuit stays out of rotation for such requests until a request that judges the
    /// upstream probes it: each copy would otherwise hold a probe slot of its own, and a burst of
    /// token counts would all reach a broken upstream at once.
    pub fn detached(&self) -> UpstreamHealth {
        UpstreamHealth {
            policy: self.policy,
            state: Mutex::new(*self.state.lock()),
            detached: true,
        }
    }

    pub fn availability(&self, now: Instant) -> Availability {
        match self.availability_to_judge(now) {
            Availability::Probe if self.detached => Availability::Unavailable { until: None },
            a => a,
        }
    }

    /// Availability to a request that judges the upstream: it may be the probe.
    fn availability_to_judge(&self, now: Instant) -> Availability {
        let s = self.state.lock();
        match s.circuit {
            Circuit::Open { until, .. } if now >= until => return Availability::Probe,
            Circuit::Open { until, .. } => return Availability::Unavailable { until: Some(until) },
            Circuit::HalfOpen { since, backoff } if now.duration_since(since) < probe_lost(backoff) => {
                return Availability::Unavailable { until: None }
            }
            // A probe that never reported back does not block the upstream forever.
            Circuit::HalfOpen { .. } => return Availability::Probe,
            Circuit::Closed => {}
        }
        if let Some(until) = s.cooldown_until.filter(|u| *u > now) {
            return Availability::RateLimited { until };
        }
        Availability::Available {
            error_factor: (1.0 - 0.9 * s.error_ewma).max(0.05),
            latency_ms: s.latency_ewma_ms,
        }
    }

    /// Claims the probe slot of an open circuit; false when another request holds it.
    pub fn try_probe(&self, now: Instant) -> bool {
        if self.detached {
            return false;
        }
        let mut s = self.state.lock();
        let backoff = match s.circuit {
            Circuit::Open { until, backoff } if now >= until => backoff,
            Circuit::HalfOpen { since, backoff } if now.duration_since(since) >= probe_lost(backoff) => backoff,
            _ => return false,
        };
        s.circuit = Circuit::HalfOpen { since: now, backoff };
        true
    }

    /// Whether the probe slot is held by the claim made at `at` (the instant given to `try_probe`).
    pub fn probe_claimed_at(&self, at: Instant) -> bool {
        matches!(self.state.lock().circuit, Circuit::HalfOpen { since, .. } if since == at)
    }

    /// Gives back the probe slot claimed at `claimed_at` by a request that got no verdict from it
    /// (it sent nothing, the client left, the upstream answered with neither a success nor a
    /// failure): the next request may probe at once, instead of the upstream staying out for a
    /// whole wait without having been judged. A slot another claim holds, or a verdict already
    /// recorded, is left alone.
    pub fn release_probe(&self, claimed_at: Instant, now: Instant) {
        let mut s = self.state.lock();
        if let Circuit::HalfOpen { since, backoff } = s.circuit {
            if since == claimed_at {
                s.circuit = Circuit::Open { until: now, backoff };
            }
        }
    }

    /// A response header arrived with a non-failure status after `latency`. Returns the count of
    /// consecutive failures it ended, for `record_cut`.
    pub fn record_success(&self, latency: Duration) -> u32 {
        self.succeed(latency, true)
    }

    /// As `record_success`, for the probe of an open circuit: the circuit stays half-open until
    /// the answer has come whole (`confirm_probe`), since a stream that breaks after its header
    /// is a failed probe (`record_cut` then doubles the wait), and no other request is let in
    /// meanwhile.
    pub fn record_probe_answer(&self, latency: Duration) -> u32 {
        self.succeed(latency, false)
    }

    /// The probe claimed at `claimed_at` had its answer whole: the circuit closes.
    pub fn confirm_probe(&self, claimed_at: Instant) {
        let mut s = self.state.lock();
        if matches!(s.circuit, Circuit::HalfOpen { since, .. } if since == claimed_at) {
            close(&mut s);
        }
    }

    fn succeed(&self, latency: Duration, close_circuit: bool) -> u32 {
        let mut s = self.state.lock();
        let ms = latency.as_secs_f64() * 1000.0;
        s.latency_ewma_ms = Some(match s.latency_ewma_ms {
            Some(prev) => prev + ALPHA * (ms - prev),
            None => ms,
        });
        s.error_ewma *= 1.0 - ALPHA;
        s.pending.successes = s.pending.successes.saturating_add(1);
        s.pending.latency_sum_ms += ms;
        let ended = std::mem::take(&mut s.consecutive_failures);
        // A cool-down stays: it is the upstream's word on when to ask again, and an answer now
        // comes from a request sent before it (none is sent during one).
        if close_circuit {
            close(&mut s);
        }
        ended
    }

    /// An answer that says nothing of the model's generation (the client's own mistake: a 400, a
    /// 413, a 422). The upstream answered, which ends a run of failures; but its quick answer is
    /// no latency sample (it would pull this upstream's share up, and any client could send
    /// such requests), and no verdict for a probe (its slot is given back, `release_probe`).
    /// Returns the failures it ended, as `record_success` does.
    pub fn record_refusal(&self) -> u32 {
        std::mem::take(&mut self.state.lock().consecutive_failures)
    }

    /// An answer whose header counted as a success (`record_success`, which returned
    /// `failures_before`) broke off mid-way: a failure that continues the run the success ended,
    /// so an upstream whose every stream breaks after its first event still opens its circuit.
    /// `probe`: the claim (`try_probe`'s instant) when the request that was cut holds the probe
    /// slot, as for `record_attempt_failure`.
    pub fn record_cut(&self, failures_before: u32, now: Instant, probe: Option<Instant>) {
        let mut s = self.state.lock();
        s.consecutive_failures = s.consecutive_failures.max(failures_before);
        self.fail(&mut s, Failure::Broken, now, probe);
    }

    /// A failure of a request that does not hold the probe slot: one sent before the circuit
    /// opened, failing while it is open or half-open, is no verdict on the probe (it neither
    /// stretches the wait nor keeps the probe's answer from closing the circuit).
    pub fn record_failure(&self, failure: Failure, now: Instant) {
        self.fail(&mut self.state.lock(), failure, now, None);
    }

    /// A failure of an attempt that may be the probe (`probe`: its claim, `try_probe`'s instant,
    /// when the attempt holds the slot): the probe's failure opens the circuit again for twice as
    /// long; any other is as `record_failure`.
    pub fn record_attempt_failure(&self, probe: Option<Instant>, failure: Failure, now: Instant) {
        self.fail(&mut self.state.lock(), failure, now, probe);
    }

    fn fail(&self, s: &mut State, failure: Failure, now: Instant, probe: Option<Instant>) {
        let probe_failed = matches!(s.circuit, Circuit::HalfOpen { since, .. } if probe == Some(since));
        s.error_ewma += ALPHA * (1.0 - s.error_ewma);
        s.pending.failures = s.pending.failures.saturating_add(1);
        match failure {
            Failure::RateLimited { retry_after } => {
                let wait = retry_after
                    .unwrap_or(self.policy.default_cooldown)
                    .min(Duration::from_secs(MAX_RETRY_AFTER_SECS));
                let until = now + wait;
                s.cooldown_until = Some(s.cooldown_until.map_or(until, |u| u.max(until)));
                if let (Circuit::HalfOpen { backoff, .. }, true) = (s.circuit, probe_failed) {
                    s.circuit = Circuit::Open { until, backoff };
                }
            }
            Failure::Broken => {
                s.consecutive_failures = s.consecutive_failures.saturating_add(1);
                s.circuit = match s.circuit {
                    // Requests sent before the circuit opened go on failing for a while: the wait
                    // is the one the opening set, not doubled by each of them.
                    open @ Circuit::Open { .. } => open,
                    // The probe failed: wait twice as long for the next one.
                    Circuit::HalfOpen { backoff, .. } if probe_failed => {
                        let backoff = (backoff * 2).min(MAX_OPEN);
                        Circuit::Open {
                            until: now + backoff,
                            backoff,
                        }
                    }
                    Circuit::Closed if s.consecutive_failures >= self.policy.failure_threshold => {
                        let backoff = match s.probe_closed {
                            // Failing again soon after a probe closed it: the wait doubles from
                            // the probe's, as for a failed probe.
                            Some((at, before)) if now.saturating_duration_since(at) < MAX_OPEN => {
                                (before * 2).min(MAX_OPEN)
                            }
                            _ => self.policy.open_for,
                        };
                        Circuit::Open {
                            until: now + backoff,
                            backoff,
                        }
                    }
                    // Another request's: the probe's own answer is the verdict.
                    other => other,
                };
            }
        }
    }

    /// What changed since the last call, or `None` when local traffic did not touch it.
    pub fn take_delta(&self, now: Instant, now_ms: u64) -> Option<HealthDelta> {
        let mut s = self.state.lock();
        let p = std::mem::take(&mut s.pending);
        // A probe's close goes out on its own too: its success may have gone out in a delta
        // while the circuit was still half-open (with the probe's deadline, which the shared view
        // keeps until a close clears it).
        if p.successes == 0 && p.failures == 0 && !p.closed_circuit {
            return None;
        }
        Some(HealthDelta {
            successes: p.successes,
            failures: p.failures,
            latency_ms: if p.successes > 0 {
                p.latency_sum_ms / f64::from(p.successes)
            } else {
                0.0
            },
            cooldown_until_ms: s
                .cooldown_until
                .filter(|u| *u > now)
                .map_or(0, |u| to_unix_ms(u, now, now_ms)),
            open_until_ms: match s.circuit {
                Circuit::Open { until, .. } => to_unix_ms(until, now, now_ms).max(now_ms + 1),
                Circuit::HalfOpen { since, backoff } => to_unix_ms(since + backoff, now, now_ms).max(now_ms + 1),
                Circuit::Closed => 0,
            },
            closed: p.closed_circuit && s.circuit == Circuit::Closed,
        })
    }

    /// Adopts the merged view of every replica: the EWMAs as they are, the later of the two
    /// cool-downs, an open circuit another replica saw, and a close another replica's probe earned.
    pub fn apply_shared(&self, shared: &SharedHealth, now: Instant, now_ms: u64) {
        let mut s = self.state.lock();
        if shared.latency_ms >= 0.0 {
            s.latency_ewma_ms = Some(shared.latency_ms);
        }
        s.error_ewma = shared.error_rate.clamp(0.0, 1.0);
        if shared.cooldown_until_ms > now_ms {
            // Bounded as a local one is: a replica whose clock runs ahead must not bench an
            // upstream on every replica for longer than any `Retry-After` could.
            let until =
                to_instant(shared.cooldown_until_ms, now, now_ms).min(now + Duration::from_secs(MAX_RETRY_AFTER_SECS));
            s.cooldown_until = Some(s.cooldown_until.map_or(until, |u| u.max(until)));
        }
        let local_activity = s.pending.successes > 0 || s.pending.failures > 0;
        if shared.open_until_ms > now_ms {
            let until = to_instant(shared.open_until_ms, now, now_ms).min(now + MAX_OPEN);
            s.circuit = match s.circuit {
                // A probe here closed it after the view was asked for: the news goes out with the
                // next delta, and the view that predates it must not undo it.
                Circuit::Closed if s.pending.closed_circuit => Circuit::Closed,
                Circuit::Closed => Circuit::Open {
                    until,
                    backoff: self.policy.open_for,
                },
                Circuit::Open { until: u, backoff } => Circuit::Open {
                    until: u.max(until),
                    backoff,
                },
                half @ Circuit::HalfOpen { .. } => half,
            };
        } else if shared.open_until_ms == 0 && !local_activity && matches!(s.circuit, Circuit::Open { .. }) {
            s.circuit = Circuit::Closed;
            s.consecutive_failures = 0;
        }
    }

    pub fn view(&self, now: Instant) -> HealthView {
        let s = *self.state.lock();
        HealthView {
            latency_ewma_ms: s.latency_ewma_ms,
            error_rate: s.error_ewma,
            cooldown_remaining_ms: s
                .cooldown_until
                .map_or(0, |u| u.saturating_duration_since(now).as_millis() as u64),
            consecutive_failures: s.consecutive_failures,
            circuit: match s.circuit {
                Circuit::Closed => "closed",
                Circuit::Open { .. } => "open",
                Circuit::HalfOpen { .. } => "half_open",
            },
        }
    }
}

/// An upstream's identity: provider id and model.
type UpstreamKey = (Arc<str>, Arc<str>);

/// Health of every upstream seen so far, keyed by provider and model.
pub struct HealthRegistry {
    policy: HealthPolicy,
    upstreams: RwLock<HashMap<UpstreamKey, Arc<UpstreamHealth>>>,
    /// How many entries each provider has for names it does not list (`get_unlisted`).
    unlisted: Mutex<HashMap<Arc<str>, usize>>,
}

/// Names a provider does not list (Azure deployments, which no `/models` names) that get a health
/// entry of their own; past them, the rest of that provider's share one (`*`), so client strings
/// cannot grow the registry without bound.
const UNLISTED_PER_PROVIDER: usize = 32;

/// The entry a provider's unlisted names share past [`UNLISTED_PER_PROVIDER`].
pub const UNLISTED_SHARED: &str = "*";

impl HealthRegistry {
    pub fn new(policy: HealthPolicy) -> Self {
        Self {
            policy,
            upstreams: RwLock::new(HashMap::new()),
            unlisted: Mutex::new(HashMap::new()),
        }
    }

    /// The health of `model` at `provider`, a name the provider does not list: its own while the
    /// provider has fewer than [`UNLISTED_PER_PROVIDER`] such names, else the shared one. One
    /// deployment's 429 or failures then do not rest the provider's other deployments.
    pub fn get_unlisted(&self, provider: &Arc<str>, model: &Arc<str>) -> Arc<UpstreamHealth> {
        if let Some(h) = self.upstreams.read().get(&(provider.clone(), model.clone())) {
            return h.clone();
        }
        let own = {
            let mut unlisted = self.unlisted.lock();
            let n = unlisted.entry(provider.clone()).or_default();
            *n += 1;
            *n <= UNLISTED_PER_PROVIDER
        };
        match own {
            true => self.get(provider, model),
            false => self.get(provider, &UNLISTED_SHARED.into()),
        }
    }

    pub fn get(&self, provider: &Arc<str>, model: &Arc<str>) -> Arc<UpstreamHealth> {
        let key = (provider.clone(), model.clone());
        if let Some(h) = self.upstreams.read().get(&key) {
            return h.clone();
        }
        self.upstreams
            .write()
            .entry(key)
            .or_insert_with(|| Arc::new(UpstreamHealth::new(self.policy)))
            .clone()
    }

    /// Every upstream with its health: (provider, model, view).
    pub fn all(&self, now: Instant) -> Vec<(Arc<str>, Arc<str>, HealthView)> {
        self.upstreams
            .read()
            .iter()
            .map(|((p, m), h)| (p.clone(), m.clone(), h.view(now)))
            .collect()
    }

    /// Every upstream's delta since the last sync, keyed `provider/model`.
    pub fn take_deltas(&self, now: Instant, now_ms: u64) -> Vec<(String, HealthDelta)> {
        self.upstreams
            .read()
            .iter()
            .filter_map(|((p, m), h)| Some((format!("{p}/{m}"), h.take_delta(now, now_ms)?)))
            .collect()
    }

    /// Applies the shared view of `provider/model` upstreams (unknown ones are created: another
    /// replica's traffic may reach this one's plans later).
    pub fn apply_shared(&self, shared: &[(String, SharedHealth)], now: Instant, now_ms: u64) {
        for (key, h) in shared {
            let Some((p, m)) = key.split_once('/') else { continue };
            self.get(&Arc::from(p), &Arc::from(m)).apply_shared(h, now, now_ms);
        }
    }

    /// Judges every upstream of `provider` afresh (see [`UpstreamHealth::reset`]).
    pub fn reset_provider(&self, provider: &str) {
        for ((p, _), h) in self.upstreams.read().iter() {
            if &**p == provider {
                h.reset();
            }
        }
    }

    /// Every upstream of `provider` with its health.
    pub fn of_provider(&self, provider: &str, now: Instant) -> Vec<(String, HealthView)> {
        let mut out: Vec<_> = self
            .upstreams
            .read()
            .iter()
            .filter(|((p, _), _)| &**p == provider)
            .map(|((_, m), h)| (m.to_string(), h.view(now)))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> HealthPolicy {
        HealthPolicy {
            default_cooldown: Duration::from_secs(5),
            failure_threshold: 3,
            open_for: Duration::from_secs(10),
        }
    }

    /// A detached copy (a token count's) never probes: a burst of counts would each take a probe
    /// slot of its own copy to a broken upstream.
    #[test]
    fn a_detached_copy_never_probes() {
        let (h, t0) = opened();
        let probe = t0 + Duration::from_secs(11);
        assert_eq!(h.availability(probe), Availability::Probe);
        let copy = h.detached();
        assert_eq!(copy.availability(probe), Availability::Unavailable { until: None });
        assert!(!copy.try_probe(probe));
        assert!(h.try_probe(probe), "the real entry's probe is untouched");
    }

    /// A reset upstream is in rotation again at once, and tells the other replicas its circuit
    /// closed (their shared view would open it again otherwise).
    #[test]
    fn a_reset_upstream_is_in_rotation_and_says_its_circuit_closed() {
        let (h, t0) = opened();
        h.record_failure(
            Failure::RateLimited {
                retry_after: Some(Duration::from_secs(60)),
            },
            t0,
        );
        assert!(!matches!(h.availability(t0), Availability::Available { .. }));
        let _ = h.take_delta(t0, 1_000);
        h.reset();
        assert!(matches!(h.availability(t0), Availability::Available { .. }));
        let delta = h.take_delta(t0, 1_000).expect("the close goes out");
        assert!(
            delta.closed && delta.open_until_ms == 0 && delta.cooldown_until_ms == 0,
            "{delta:?}"
        );
    }

    /// An upstream whose circuit opened (3 failures) at the instant returned.
    fn opened() -> (UpstreamHealth, Instant) {
        let h = UpstreamHealth::new(policy());
        let t0 = Instant::now();
        for _ in 0..3 {
            h.record_failure(Failure::Broken, t0);
        }
        (h, t0)
    }

    /// An upstream whose circuit opened (3 failures) and whose probe slot is claimed, at the
    /// instant returned.
    fn probing() -> (UpstreamHealth, Instant) {
        let (h, t0) = opened();
        let probe = t0 + Duration::from_secs(11);
        assert!(h.try_probe(probe));
        (h, probe)
    }

    #[test]
    fn rate_limit_cools_down_for_retry_after() {
        let h = UpstreamHealth::new(policy());
        let t0 = Instant::now();
        h.record_failure(
            Failure::RateLimited {
                retry_after: Some(Duration::from_secs(2)),
            },
            t0,
        );
        assert!(matches!(
            h.availability(t0 + Duration::from_secs(1)),
            Availability::RateLimited { .. }
        ));
        assert!(matches!(
            h.availability(t0 + Duration::from_secs(3)),
            Availability::Available { .. }
        ));
    }

    #[test]
    fn circuit_opens_probes_and_closes() {
        let h = UpstreamHealth::new(policy());
        let t0 = Instant::now();
        for _ in 0..3 {
            h.record_failure(Failure::Broken, t0);
        }
        assert!(matches!(h.availability(t0), Availability::Unavailable { .. }));
        let later = t0 + Duration::from_secs(11);
        assert_eq!(h.availability(later), Availability::Probe);
        assert!(h.try_probe(later));
        assert!(!h.try_probe(later), "only one probe at a time");
        assert!(matches!(h.availability(later), Availability::Unavailable { .. }));
        // A failed probe doubles the wait.
        h.record_attempt_failure(Some(later), Failure::Broken, later);
        assert!(matches!(
            h.availability(later + Duration::from_secs(15)),
            Availability::Unavailable { .. }
        ));
        let much_later = later + Duration::from_secs(21);
        assert!(h.try_probe(much_later));
        h.record_success(Duration::from_millis(10));
        assert!(matches!(h.availability(much_later), Availability::Available { .. }));
        assert_eq!(h.view(much_later).circuit, "closed");
    }

    #[test]
    fn an_answer_to_a_request_sent_before_a_429_does_not_end_its_cool_down() {
        let h = UpstreamHealth::new(policy());
        let t0 = Instant::now();
        h.record_failure(
            Failure::RateLimited {
                retry_after: Some(Duration::from_secs(30)),
            },
            t0,
        );
        h.record_success(Duration::from_millis(10));
        assert!(matches!(h.availability(t0), Availability::RateLimited { .. }));
        assert!(matches!(
            h.availability(t0 + Duration::from_secs(31)),
            Availability::Available { .. }
        ));
    }

    #[test]
    fn a_client_s_mistake_is_no_latency_sample_and_no_probe_verdict() {
        let h = UpstreamHealth::new(policy());
        let t0 = Instant::now();
        h.record_success(Duration::from_millis(2000));
        h.record_refusal();
        assert_eq!(h.view(t0).latency_ewma_ms, Some(2000.0));
        for _ in 0..3 {
            h.record_failure(Failure::Broken, t0);
        }
        let probe = t0 + Duration::from_secs(11);
        assert!(h.try_probe(probe));
        // The probe's request was the client's mistake: the circuit is not closed by it, and its
        // slot goes back for the next request to probe.
        h.record_refusal();
        assert_ne!(h.view(probe).circuit, "closed");
        h.release_probe(probe, probe);
        assert_eq!(h.availability(probe), Availability::Probe);
    }

    #[test]
    fn failing_soon_after_a_probe_closed_the_circuit_doubles_the_wait() {
        let (h, probe) = probing();
        // The probe's stream opens fine, then breaks, as every stream of this upstream does.
        let before = h.record_success(Duration::from_millis(10));
        h.record_cut(before, probe, Some(probe));
        assert_eq!(h.view(probe).circuit, "open");
        assert!(
            matches!(
                h.availability(probe + Duration::from_secs(15)),
                Availability::Unavailable { .. }
            ),
            "twice the 10 s wait"
        );
        assert_eq!(h.availability(probe + Duration::from_secs(21)), Availability::Probe);
    }

    #[test]
    fn a_probe_s_circuit_closes_when_its_answer_is_whole() {
        let (h, probe) = probing();
        h.record_probe_answer(Duration::from_millis(10));
        // Its header came; its body has not yet: nobody else is let in.
        assert!(matches!(h.availability(probe), Availability::Unavailable { .. }));
        h.confirm_probe(probe);
        assert_eq!(h.view(probe).circuit, "closed");
        // A confirmation of a claim that is no longer the probe changes nothing.
        for _ in 0..3 {
            h.record_failure(Failure::Broken, probe);
        }
        let next = probe + Duration::from_secs(30);
        assert!(h.try_probe(next));
        h.confirm_probe(probe);
        assert_ne!(h.view(next).circuit, "closed");
    }

    #[test]
    fn streams_that_break_after_their_header_open_the_circuit() {
        let h = UpstreamHealth::new(policy());
        let t0 = Instant::now();
        for _ in 0..3 {
            let before = h.record_success(Duration::from_millis(10));
            h.record_cut(before, t0, None);
        }
        assert_eq!(h.view(t0).circuit, "open");
    }

    #[test]
    fn a_probe_in_flight_keeps_its_slot_while_an_upstream_may_still_answer() {
        let (h, probe) = probing();
        // Past the circuit's 10 s wait, but a 60 s first-byte timeout may still be running.
        assert!(!h.try_probe(probe + Duration::from_secs(61)), "a second probe");
        assert!(h.try_probe(probe + PROBE_LOST), "a probe lost for good frees its slot");
    }

    #[test]
    fn another_replica_s_deadlines_are_bounded() {
        let h = UpstreamHealth::new(policy());
        let (now, now_ms) = (Instant::now(), unix_ms());
        let day = 24 * 3600 * 1000;
        h.apply_shared(
            &SharedHealth {
                latency_ms: -1.0,
                error_rate: 0.0,
                cooldown_until_ms: now_ms + day,
                open_until_ms: now_ms + day,
            },
            now,
            now_ms,
        );
        let v = h.view(now);
        assert!(v.cooldown_remaining_ms <= MAX_RETRY_AFTER_SECS * 1000, "{v:?}");
        assert_eq!(
            h.availability(now + MAX_OPEN + Duration::from_secs(1)),
            Availability::Probe
        );
    }

    #[test]
    fn a_probe_that_sent_nothing_gives_its_slot_back() {
        let h = UpstreamHealth::new(policy());
        let t0 = Instant::now();
        for _ in 0..3 {
            h.record_failure(Failure::Broken, t0);
        }
        let later = t0 + Duration::from_secs(11);
        assert!(h.try_probe(later));
        assert!(h.probe_claimed_at(later));
        assert!(
            !h.probe_claimed_at(later + Duration::from_millis(1)),
            "another request's claim"
        );
        h.release_probe(later + Duration::from_millis(1), later);
        assert!(
            matches!(h.availability(later), Availability::Unavailable { .. }),
            "another claim's release leaves this one"
        );
        h.release_probe(later, later);
        assert_eq!(h.availability(later), Availability::Probe);
        assert!(h.try_probe(later), "the next request probes");
        // A failed probe still doubles the wait it was given.
        h.record_attempt_failure(Some(later), Failure::Broken, later);
        assert!(matches!(
            h.availability(later + Duration::from_secs(19)),
            Availability::Unavailable { .. }
        ));
    }

    #[test]
    fn failures_of_requests_sent_before_the_circuit_opened_do_not_stretch_its_wait() {
        let h = UpstreamHealth::new(policy());
        let t0 = Instant::now();
        // Ten requests in flight when the upstream broke: the third failure opens the circuit,
        // the other seven come back while it is open.
        for _ in 0..10 {
            h.record_failure(Failure::Broken, t0);
        }
        let after_open_for = t0 + Duration::from_secs(11);
        assert_eq!(h.availability(after_open_for), Availability::Probe);
        // Only a failed probe doubles it.
        assert!(h.try_probe(after_open_for));
        h.record_attempt_failure(Some(after_open_for), Failure::Broken, after_open_for);
        assert!(matches!(
            h.availability(after_open_for + Duration::from_secs(19)),
            Availability::Unavailable { .. }
        ));
        assert_eq!(
            h.availability(after_open_for + Duration::from_secs(21)),
            Availability::Probe
        );
    }

    /// A request sent before the circuit opened that fails while its probe is out is no verdict
    /// on the probe: the probe's own answer closes the circuit.
    #[test]
    fn a_failure_of_another_request_while_a_probe_is_out_is_not_the_probe_s() {
        let (h, probe) = probing();
        let late = probe + Duration::from_secs(1);
        h.record_failure(Failure::Broken, late);
        h.record_cut(0, late, None);
        h.record_failure(
            Failure::RateLimited {
                retry_after: Some(Duration::from_secs(1)),
            },
            late,
        );
        assert!(h.probe_claimed_at(probe), "the probe keeps its slot");
        h.record_probe_answer(Duration::from_millis(10));
        h.confirm_probe(probe);
        assert_eq!(h.view(late).circuit, "closed");
    }

    #[test]
    fn a_cool_down_is_bounded_whatever_retry_after_says() {
        let h = UpstreamHealth::new(policy());
        let t0 = Instant::now();
        h.record_failure(
            Failure::RateLimited {
                retry_after: Some(Duration::from_secs(u64::MAX)),
            },
            t0,
        );
        let bound = Duration::from_secs(MAX_RETRY_AFTER_SECS);
        assert!(matches!(
            h.availability(t0 + bound - Duration::from_secs(1)),
            Availability::RateLimited { .. }
        ));
        assert!(matches!(h.availability(t0 + bound), Availability::Available { .. }));
    }

    #[test]
    fn errors_lower_the_factor_and_successes_restore_it() {
        let h = UpstreamHealth::new(policy());
        let now = Instant::now();
        h.record_failure(Failure::Broken, now);
        h.record_failure(Failure::Broken, now);
        let Availability::Available { error_factor: low, .. } = h.availability(now) else {
            panic!()
        };
        for _ in 0..20 {
            h.record_success(Duration::from_millis(5));
        }
        let Availability::Available { error_factor: high, .. } = h.availability(now) else {
            panic!()
        };
        assert!(low < 0.7 && high > 0.95, "{low} {high}");
    }

    #[test]
    fn deltas_go_out_and_the_shared_view_comes_back() {
        let a = UpstreamHealth::new(policy());
        let b = UpstreamHealth::new(policy());
        let (now, now_ms) = (Instant::now(), unix_ms());
        assert_eq!(a.take_delta(now, now_ms), None, "no traffic, nothing to say");
        for _ in 0..3 {
            a.record_failure(Failure::Broken, now);
        }
        let d = a.take_delta(now, now_ms).unwrap();
        assert_eq!(d.failures, 3);
        assert!(d.open_until_ms >= now_ms + 9_000 && !d.closed, "{d:?}");
        assert_eq!(a.take_delta(now, now_ms), None, "taken once");
        // Replica B learns of the open circuit from the shared view.
        let shared = crate::state::LocalBackend::default();
        let view = futures_util::FutureExt::now_or_never(crate::state::StateBackend::sync_health(
            &shared,
            &rand::random::<u64>().to_string(),
            &[("p/m".to_string(), d)],
        ))
        .unwrap()
        .unwrap();
        b.apply_shared(&view[0].1, now, now_ms);
        assert!(matches!(b.availability(now), Availability::Unavailable { .. }));
        assert_eq!(b.view(now).circuit, "open");
        // A successful probe on A closes it for B too.
        let later = now + Duration::from_secs(11);
        assert!(a.try_probe(later));
        a.record_success(Duration::from_millis(20));
        let d = a.take_delta(later, now_ms + 11_000).unwrap();
        assert!(d.closed && d.open_until_ms == 0);
        let view = futures_util::FutureExt::now_or_never(crate::state::StateBackend::sync_health(
            &shared,
            &rand::random::<u64>().to_string(),
            &[("p/m".to_string(), d)],
        ))
        .unwrap()
        .unwrap();
        b.apply_shared(&view[0].1, later, now_ms + 11_000);
        assert_eq!(b.view(later).circuit, "closed");
        assert_eq!(b.view(later).latency_ewma_ms, Some(20.0));
    }

    #[test]
    fn another_replica_s_ordinary_traffic_does_not_erase_an_open_circuit() {
        let a = UpstreamHealth::new(policy());
        let b = UpstreamHealth::new(policy());
        let (now, now_ms) = (Instant::now(), unix_ms());
        // A sees the upstream break and opens its circuit; B, in the same sync period, had a
        // failure and a success of its own there, under the threshold: its circuit never opened.
        for _ in 0..3 {
            a.record_failure(Failure::Broken, now);
        }
        b.record_failure(Failure::Broken, now);
        b.record_success(Duration::from_millis(30));
        let shared = crate::state::LocalBackend::default();
        let sync = |u: &UpstreamHealth| {
            let d = u.take_delta(now, now_ms).unwrap();
            futures_util::FutureExt::now_or_never(crate::state::StateBackend::sync_health(
                &shared,
                &rand::random::<u64>().to_string(),
                &[("p/m".to_string(), d)],
            ))
            .unwrap()
            .unwrap()
        };
        sync(&a);
        let view = sync(&b);
        assert!(view[0].1.open_until_ms > now_ms, "{view:?}");
        // And A keeps its circuit open when it reads the shared view back.
        a.apply_shared(&view[0].1, now, now_ms);
        assert!(matches!(a.availability(now), Availability::Unavailable { .. }));
    }

    #[test]
    fn a_probe_that_closes_during_a_sync_stays_closed() {
        let h = UpstreamHealth::new(policy());
        let (t0, t0_ms) = (Instant::now(), unix_ms());
        for _ in 0..3 {
            h.record_failure(Failure::Broken, t0);
        }
        let (later, later_ms) = (t0 + Duration::from_secs(11), t0_ms + 11_000);
        assert!(h.try_probe(later));
        // A sync takes the half-open state's delta; the probe succeeds before the view comes back.
        let sent = h.take_delta(later, later_ms).unwrap();
        h.record_success(Duration::from_millis(10));
        let view = SharedHealth {
            latency_ms: 10.0,
            error_rate: 0.5,
            cooldown_until_ms: 0,
            open_until_ms: sent.open_until_ms,
        };
        h.apply_shared(&view, later, later_ms);
        assert_eq!(h.view(later).circuit, "closed");
        // And the next delta says so, so the other replicas close it too.
        let next = h.take_delta(later, later_ms).unwrap();
        assert!(next.closed && next.open_until_ms == 0, "{next:?}");
    }

    /// A probe's header counted as a success went out with a sync while the circuit was half-open
    /// (with the probe's deadline); its body then came whole: the close goes out by itself, and the
    /// view read back does not open the circuit again.
    #[test]
    fn a_probe_s_close_goes_out_after_its_success_did() {
        let (h, probe) = probing();
        let probe_ms = unix_ms();
        h.record_probe_answer(Duration::from_millis(10));
        let sent = h.take_delta(probe, probe_ms).unwrap();
        assert!(sent.open_until_ms > probe_ms && !sent.closed, "{sent:?}");
        h.confirm_probe(probe);
        let close = h.take_delta(probe, probe_ms).expect("the close goes out");
        assert!(close.closed && close.open_until_ms == 0, "{close:?}");
        let shared = crate::state::LocalBackend::default();
        let mut view = None;
        for d in [sent, close] {
            view = futures_util::FutureExt::now_or_never(crate::state::StateBackend::sync_health(
                &shared,
                &rand::random::<u64>().to_string(),
                &[("p/m".to_string(), d)],
            ))
            .unwrap()
            .unwrap()
            .pop();
        }
        let (_, view) = view.unwrap();
        assert_eq!(view.open_until_ms, 0, "{view:?}");
        h.apply_shared(&view, probe, probe_ms);
        assert_eq!(h.view(probe).circuit, "closed");
    }
}
