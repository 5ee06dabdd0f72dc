use super::*;

const NOW: u64 = 1_000_000;

fn report(name: &str, renewed_ms: u64, releases: &[(&str, &str, usize, usize)]) -> ReplicaReport {
    ReplicaReport {
        identity: name.into(),
        started_ms: 1,
        renewed_ms,
        heartbeat_ms: 1000,
        lease_ms: 3000,
        api_url: None,
        connected: 5,
        releases: releases
            .iter()
            .map(|(k, state, acked, total)| {
                let pending = (0..total - acked).map(|i| format!("p{i}")).collect();
                let proxies = Proxies { acked: *acked, total: *total, pending, ..Default::default() };
                let p = ReleaseProxies { state: state.to_string(), proxies };
                (k.to_string(), p)
            })
            .collect(),
        traffic: vec![],
    }
}

fn local(acked: usize, total: usize) -> Proxies {
    Proxies { acked, total, ..Default::default() }
}

#[test]
fn fresh_reports_add_their_proxies_acked_only_for_the_same_state() {
    let key = ObjectKey::new("default", "reviews");
    let peers = Peers::from([
        ("b".to_string(), report("b", NOW - 500, &[("default/reviews", "S", 2, 3)])),
        ("c".to_string(), report("c", NOW - 500, &[("default/reviews", "OLD", 4, 4)])),
    ]);
    let merged = merge_proxies("a", local(1, 1), &key, "S", &peers, NOW);
    assert_eq!((merged.acked, merged.total), (3, 8), "{merged:?}");
    assert_eq!(merged.pending, vec!["b/p0", "c: 4 proxies (it serves another state of this release)"]);
    let names: Vec<_> = merged.replicas.iter().map(|r| (r.name.as_str(), r.acked, r.total, r.report)).collect();
    assert_eq!(
        names,
        vec![("a", 1, 1, Freshness::Fresh), ("b", 2, 3, Freshness::Fresh), ("c", 0, 4, Freshness::Fresh)]
    );
}

#[test]
fn a_stale_report_holds_the_gate_and_an_expired_one_is_dropped() {
    let key = ObjectKey::new("default", "reviews");
    let stale = report("b", NOW - 2800, &[("default/reviews", "S", 2, 2)]);
    assert_eq!(stale.freshness(NOW), Freshness::Stale);
    let peers = Peers::from([("b".to_string(), stale)]);
    let merged = merge_proxies("a", local(1, 1), &key, "S", &peers, NOW);
    assert_eq!((merged.acked, merged.total), (1, 3), "a stale replica's proxies count as not holding the state");
    assert_eq!(merged.pending, vec!["b: 2 proxies (its report missed two heartbeats)"]);
    // What goes to the ReleasePolicy status does not change as the report ages (no write every second).
    let later = merge_proxies("a", local(1, 1), &key, "S", &peers, NOW + 150);
    assert_eq!(later.pending, merged.pending);

    let expired = report("b", NOW - 3001, &[("default/reviews", "S", 2, 2)]);
    assert_eq!(expired.freshness(NOW), Freshness::Expired);
    let peers = Peers::from([("b".to_string(), expired)]);
    let merged = merge_proxies("a", local(1, 1), &key, "S", &peers, NOW);
    assert_eq!((merged.acked, merged.total), (1, 1), "an expired replica is gone");
    assert_eq!(merged.replicas[1].report, Freshness::Expired);
}

#[test]
fn a_replica_without_the_release_yet_counts_all_its_proxies_as_waiting() {
    let key = ObjectKey::new("default", "reviews");
    let peers = Peers::from([("b".to_string(), report("b", NOW, &[]))]);
    let merged = merge_proxies("a", local(1, 1), &key, "S", &peers, NOW);
    assert_eq!((merged.acked, merged.total), (1, 6));
}

#[test]
fn fingerprints_differ_by_state_and_agree_across_calls() {
    let spec = ReleasePolicySpec { service: "reviews".into(), ..Default::default() };
    let a = ReleaseState { canary_weight: Some(2000), ..Default::default() };
    let b = ReleaseState { canary_weight: Some(5000), ..Default::default() };
    assert_eq!(fingerprint(&spec, &a), fingerprint(&spec, &a.clone()));
    assert_ne!(fingerprint(&spec, &a), fingerprint(&spec, &b));
}

fn with_traffic(mut r: ReplicaReport, requests: u64, errors: u64) -> ReplicaReport {
    let key = VersionKey::new("default", "reviews", "v3");
    let t = Totals { requests, errors, latency: Histogram::default() };
    r.traffic = vec![VersionTraffic::new(&key, &t)];
    r
}

#[test]
fn traffic_follows_report_to_report_differences() {
    let mut f = TrafficFollower::default();
    let at = |ms: u64, req: u64| Peers::from([("b".to_string(), with_traffic(report("b", ms, &[]), req, req / 10))]);
    assert!(f.follow(&at(NOW, 100), "a", NOW).is_empty(), "the first report is the baseline");
    let out = f.follow(&at(NOW + 1000, 350), "a", NOW + 1000);
    assert_eq!(out.len(), 1);
    let (now, since, deltas) = &out[0];
    assert_eq!((*now, *since), (NOW + 1000, NOW));
    assert_eq!((deltas[0].1.requests, deltas[0].1.errors), (250, 25));
    assert!(f.follow(&at(NOW + 1000, 350), "a", NOW + 1200).is_empty(), "a report already seen adds nothing");
    assert!(f.follow(&at(NOW + 1000, 350), "b", NOW + 1200).is_empty(), "its own report is not followed");

    // Restarted (a new start time): every count it reports came after its start.
    let mut restarted = with_traffic(report("b", NOW + 3000, &[]), 40, 0);
    restarted.started_ms = NOW + 2500;
    let out = f.follow(&Peers::from([("b".to_string(), restarted)]), "a", NOW + 3000);
    assert_eq!(out[0].2[0].1.requests, 40);
    assert_eq!(out[0].1, NOW + 2500);

    // After a quiet stretch (heartbeats only), new traffic is placed in the last two seconds, not spread back.
    let mut quiet = with_traffic(report("b", NOW + 9000, &[]), 40, 0);
    quiet.started_ms = NOW + 2500;
    f.follow(&Peers::from([("b".to_string(), quiet)]), "a", NOW + 9000);
    let mut busy = with_traffic(report("b", NOW + 15_000, &[]), 140, 0);
    busy.started_ms = NOW + 2500;
    let out = f.follow(&Peers::from([("b".to_string(), busy)]), "a", NOW + 15_000);
    assert_eq!((out[0].0, out[0].1, out[0].2[0].1.requests), (NOW + 15_000, NOW + 13_000, 100));
}
