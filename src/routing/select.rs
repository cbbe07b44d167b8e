//! Picking the next candidate of a plan: the first tier with anything in rotation, then weighted
//! choice inside it (configured weight scaled by live health), or, for a session, its recorded
//! binding (shared by every replica) and else rendezvous hashing on the session id, so that
//! replicas agree on a new session's upstream before anything is recorded.

use std::time::{Duration, Instant};

use rand::Rng;

use super::health::Availability;
use super::table::RoutePlan;

/// A candidate as the selector saw it, for dry runs and the admin API.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Scored {
    pub index: usize,
    pub priority: u32,
    /// Configured weight × error factor × latency factor; 0 when out of rotation.
    pub effective_weight: f64,
    pub available: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Exhausted {
    /// When the earliest cooled-down candidate comes back, if any.
    pub retry_after: Option<Duration>,
    /// Every candidate is resting after a rate limit (none is broken): the client is told so.
    pub rate_limited: bool,
}

/// Scores every candidate not in `excluded`.
pub fn score(plan: &RoutePlan, excluded: &[usize], now: Instant) -> Vec<(Scored, Availability)> {
    let avail: Vec<_> = plan.candidates.iter().map(|c| c.health.availability(now)).collect();
    // Latency is weighed against the fastest candidate that competes: same tier, still eligible.
    let best_latency = |priority: u32| {
        avail
            .iter()
            .enumerate()
            .filter(|(i, _)| plan.candidates[*i].priority == priority && !excluded.contains(i))
            .filter_map(|(_, a)| match a {
                Availability::Available {
                    latency_ms: Some(l), ..
                } => Some(*l),
                _ => None,
            })
            .fold(f64::INFINITY, f64::min)
    };
    plan.candidates
        .iter()
        .enumerate()
        .filter(|(i, _)| !excluded.contains(i))
        .map(|(i, c)| {
            let a = avail[i];
            let effective_weight = match a {
                Availability::Available {
                    error_factor,
                    latency_ms,
                } => {
                    let best = best_latency(c.priority);
                    let latency_factor = match latency_ms {
                        Some(l) if l > 0.0 && best.is_finite() => (best.max(1.0) / l.max(1.0)).clamp(0.1, 1.0),
                        _ => 1.0,
                    };
                    c.weight * error_factor * latency_factor
                }
                _ => 0.0,
            };
            let scored = Scored {
                index: i,
                priority: c.priority,
                effective_weight,
                available: matches!(a, Availability::Available { .. }),
            };
            (scored, a)
        })
        .collect()
}

/// A session's stickiness: its id (hashed for new sessions) and the upstream it is bound to
/// (`provider/model`), if any.
#[derive(Debug, Clone, Copy)]
pub struct Sticky<'a> {
    pub session: &'a str,
    pub binding: Option<&'a str>,
}

/// Chooses the next candidate, or says when one may be back.
pub fn choose(
    plan: &RoutePlan,
    excluded: &[usize],
    sticky: Option<Sticky<'_>>,
    now: Instant,
) -> Result<usize, Exhausted> {
    choose_inner(plan, excluded, sticky, now, true)
}

/// What `choose` would pick, without claiming an open circuit's probe slot: for dry runs.
pub fn choose_dry(
    plan: &RoutePlan,
    excluded: &[usize],
    sticky: Option<Sticky<'_>>,
    now: Instant,
) -> Result<usize, Exhausted> {
    choose_inner(plan, excluded, sticky, now, false)
}

/// The candidate a binding names, by `provider/model`.
fn bound(plan: &RoutePlan, live: &[&Scored], binding: &str) -> Option<usize> {
    let (provider, model) = binding.split_once('/')?;
    live.iter()
        .map(|s| s.index)
        .find(|&i| &*plan.candidates[i].provider.id == provider && &*plan.candidates[i].model == model)
}

fn choose_inner(
    plan: &RoutePlan,
    excluded: &[usize],
    sticky: Option<Sticky<'_>>,
    now: Instant,
    claim_probe: bool,
) -> Result<usize, Exhausted> {
    let scored = score(plan, excluded, now);
    let mut tiers: Vec<u32> = scored.iter().map(|(s, _)| s.priority).collect();
    tiers.dedup();
    for tier in tiers {
        let in_tier = || scored.iter().filter(move |(s, _)| s.priority == tier);
        let live: Vec<&Scored> = in_tier().map(|(s, _)| s).filter(|s| s.available).collect();
        // A bound session stays where it is while that upstream is in rotation in this tier: a
        // recovering upstream is probed with other requests, not by pulling a session away.
        if let Some(pick) = sticky.and_then(|st| bound(plan, &live, st.binding?)) {
            return Ok(pick);
        }
        // An open circuit whose wait is over gets one probe request.
        for (s, a) in in_tier() {
            if *a == Availability::Probe && (!claim_probe || plan.candidates[s.index].health.try_probe(now)) {
                return Ok(s.index);
            }
        }
        if live.is_empty() {
            continue;
        }
        let pick = match sticky {
            Some(st) => rendezvous(plan, &live, st.session),
            None => weighted_random(&live),
        };
        return Ok(pick);
    }
    // Excluded candidates count too: the client wants to know when anything may answer again.
    let avail: Vec<Availability> = plan.candidates.iter().map(|c| c.health.availability(now)).collect();
    let retry_after = avail
        .iter()
        .filter_map(|a| match *a {
            Availability::Unavailable { until: Some(u) } | Availability::RateLimited { until: u } => {
                Some(u.saturating_duration_since(now))
            }
            _ => None,
        })
        .min();
    let rate_limited = !avail.is_empty() && avail.iter().all(|a| matches!(a, Availability::RateLimited { .. }));
    Err(Exhausted {
        retry_after,
        rate_limited,
    })
}

fn weighted_random(live: &[&Scored]) -> usize {
    let total: f64 = live.iter().map(|s| s.effective_weight).sum();
    let mut r = rand::rng().random::<f64>() * total;
    for s in live {
        r -= s.effective_weight;
        if r <= 0.0 {
            return s.index;
        }
    }
    live[live.len() - 1].index
}

/// Weighted rendezvous hashing over the configured (not live) weights, so every replica computes
/// the same answer; when the winner drops out, its sessions spread over the rest.
fn rendezvous(plan: &RoutePlan, live: &[&Scored], session: &str) -> usize {
    let mut best = (f64::INFINITY, live[0].index);
    for s in live {
        let c = &plan.candidates[s.index];
        let h = stable_hash(&[session.as_bytes(), c.provider.id.as_bytes(), c.model.as_bytes()]);
        // Map to (0, 1), then -ln(u)/w: the smallest score wins.
        let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        let score = -u.ln() / c.weight;
        if score < best.0 {
            best = (score, s.index);
        }
    }
    best.1
}

/// FNV-1a with a splitmix64 finaliser: stable across processes, versions and platforms.
fn stable_hash(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.iter().chain(std::iter::once(&0xffu8)) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::routing::health::{Failure, HealthPolicy, HealthRegistry};
    use crate::routing::table::RouteTable;
    use crate::upstream::ModelCatalog;

    fn plan(yaml_upstreams: &str) -> RoutePlan {
        let config: Config = serde_yaml::from_str(&format!(
            r#"
providers:
  - {{id: a, base_url: "http://127.0.0.1:1"}}
  - {{id: b, base_url: "http://127.0.0.1:2"}}
  - {{id: c, base_url: "http://127.0.0.1:3"}}
logical_models:
  - id: lm
    upstreams: {yaml_upstreams}
"#
        ))
        .unwrap();
        let health = HealthRegistry::new(HealthPolicy {
            default_cooldown: Duration::from_secs(5),
            failure_threshold: 10,
            open_for: Duration::from_secs(5),
        });
        RouteTable::build(&config, &health)
            .unwrap()
            .plan("lm", &ModelCatalog::default(), &health)
            .unwrap()
    }

    #[test]
    fn weights_shape_the_split() {
        let p = plan("[{provider: a, model: x, weight: 3}, {provider: b, model: x, weight: 1}]");
        let now = Instant::now();
        let a = (0..4000).filter(|_| choose(&p, &[], None, now).unwrap() == 0).count();
        assert!((2700..3300).contains(&a), "a got {a} of 4000");
    }

    #[test]
    fn failing_upstream_loses_share() {
        let p = plan("[{provider: a, model: x}, {provider: b, model: x}]");
        let now = Instant::now();
        for _ in 0..3 {
            p.candidates[0].health.record_failure(Failure::Broken, now);
        }
        let a = (0..4000).filter(|_| choose(&p, &[], None, now).unwrap() == 0).count();
        assert!(a < 1500, "a got {a} of 4000 while failing");
        for _ in 0..30 {
            p.candidates[0].health.record_success(Duration::from_millis(10));
            p.candidates[1].health.record_success(Duration::from_millis(10));
        }
        let a = (0..4000).filter(|_| choose(&p, &[], None, now).unwrap() == 0).count();
        assert!(a > 1800, "a got {a} of 4000 after recovering");
    }

    #[test]
    fn latency_is_weighed_within_the_tier() {
        // A 800 ms and B 1600 ms in tier 0; C, much faster, in tier 1: A:B is 2:1, as if C were
        // not there (it does not compete with them).
        let p = plan("[{provider: a, model: x}, {provider: b, model: x}, {provider: c, model: x, priority: 1}]");
        for (i, ms) in [(0, 800), (1, 1600), (2, 10)] {
            p.candidates[i].health.record_success(Duration::from_millis(ms));
        }
        let scored = score(&p, &[], Instant::now());
        let w = |i: usize| scored[i].0.effective_weight;
        assert!((w(0) / w(1) - 2.0).abs() < 0.01, "{} / {}", w(0), w(1));
        assert!(
            (w(0) - 1.0).abs() < 0.01,
            "the tier's fastest has its full weight: {}",
            w(0)
        );
    }

    #[test]
    fn lower_tier_only_when_upper_exhausted() {
        let p = plan("[{provider: a, model: x}, {provider: b, model: x, priority: 1}]");
        let now = Instant::now();
        for _ in 0..50 {
            assert_eq!(choose(&p, &[], None, now), Ok(0));
        }
        assert_eq!(choose(&p, &[0], None, now), Ok(1));
        p.candidates[0].health.record_failure(
            Failure::RateLimited {
                retry_after: Some(Duration::from_secs(9)),
            },
            now,
        );
        assert_eq!(choose(&p, &[], None, now), Ok(1));
        let e = choose(&p, &[1], None, now).unwrap_err();
        assert!(e.retry_after.unwrap() > Duration::from_secs(8));
    }

    #[test]
    fn a_bound_session_is_not_pulled_away_to_probe_a_recovering_upstream() {
        let p = plan("[{provider: a, model: x}, {provider: b, model: x}]");
        let t0 = Instant::now();
        for _ in 0..10 {
            p.candidates[0].health.record_failure(Failure::Broken, t0);
        }
        let later = t0 + Duration::from_secs(60);
        let sticky = Sticky {
            session: "s",
            binding: Some("b/x"),
        };
        assert_eq!(choose(&p, &[], Some(sticky), later), Ok(1));
        assert_eq!(
            choose(&p, &[], None, later),
            Ok(0),
            "a request without a binding probes"
        );
    }

    #[test]
    fn sessions_stick_and_move_on_failover() {
        let p = plan("[{provider: a, model: x}, {provider: b, model: x}, {provider: c, model: x}]");
        let now = Instant::now();
        let mut spread = [0usize; 3];
        for s in 0..300 {
            let id = format!("session-{s}");
            let first = choose(
                &p,
                &[],
                Some(Sticky {
                    session: &id,
                    binding: None,
                }),
                now,
            )
            .unwrap();
            for _ in 0..3 {
                assert_eq!(
                    choose(
                        &p,
                        &[],
                        Some(Sticky {
                            session: &id,
                            binding: None
                        }),
                        now
                    )
                    .unwrap(),
                    first
                );
            }
            let next = choose(
                &p,
                &[first],
                Some(Sticky {
                    session: &id,
                    binding: None,
                }),
                now,
            )
            .unwrap();
            assert_ne!(next, first);
            spread[first] += 1;
        }
        assert!(
            spread.iter().all(|&n| n > 60),
            "sessions spread over upstreams: {spread:?}"
        );
    }

    #[test]
    fn a_binding_wins_over_the_hash_while_in_rotation() {
        let p = plan("[{provider: a, model: x}, {provider: b, model: x}, {provider: c, model: x, priority: 1}]");
        let now = Instant::now();
        let hashed = choose(
            &p,
            &[],
            Some(Sticky {
                session: "s",
                binding: None,
            }),
            now,
        )
        .unwrap();
        let other = 1 - hashed;
        let name = format!("{}/x", p.candidates[other].provider.id);
        let st = Sticky {
            session: "s",
            binding: Some(&name),
        };
        assert_eq!(choose(&p, &[], Some(st), now).unwrap(), other);
        // Out of rotation (excluded): back to the hash among the rest.
        assert_eq!(choose(&p, &[other], Some(st), now).unwrap(), hashed);
        // A binding to a lower tier does not hold the session there once the upper tier is back.
        let low = Sticky {
            session: "s",
            binding: Some("c/x"),
        };
        assert_eq!(choose(&p, &[], Some(low), now).unwrap(), hashed);
        // Unknown or malformed bindings are ignored.
        let junk = Sticky {
            session: "s",
            binding: Some("nope"),
        };
        assert_eq!(choose(&p, &[], Some(junk), now).unwrap(), hashed);
    }

    #[test]
    fn hash_is_stable() {
        // Replicas and future versions must agree: pin the value (changing it moves every session).
        assert_eq!(stable_hash(&[b"s", b"a", b"x"]), 0x7c10_5bab_bb66_698c);
        assert_ne!(stable_hash(&[b"s", b"a", b"x"]), stable_hash(&[b"s", b"ax"]));
    }
}
