//! path_matching and header_matching: a VirtualService's `match` routes each method to the expected subset.
//! The default route (`/`) always goes to subset `default`; the case's route to subset `alt`. Matchers Istio's
//! StringMatch has no word for (suffix, range) are written as the regex a user would write.

use super::fixture::{self, Backends, EMPTY, UNARY};
use std::time::Duration;

/// A VirtualService whose first route (`matches`, YAML flow list) goes to `alt`, the rest to `default`.
fn routes(matches: &str) -> String {
    format!(
        "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: echo}}\nspec:\n  \
         hosts: [echo]\n  http:\n  - match: {matches}\n    route: [{{destination: {{host: echo, subset: alt}}}}]\n  \
         - route: [{{destination: {{host: echo, subset: default}}}}]\n"
    )
}

/// For each case: the matches, then where UnaryCall and EmptyCall must go.
async fn check(cases: &[(&str, &str, &str)], node: &str, extra: &[&str]) {
    let backends = Backends::start(&["default", "alt"]);
    let base = format!("{}{}", backends.yaml("echo"), fixture::subsets(&["default", "alt"]));
    let sluice = fixture::sluice(&format!("{base}{}", routes("[{uri: {exact: /none}}]"))).await;
    let mut args = vec!["--rpc", "EmptyCall,UnaryCall"];
    args.extend(extra);
    let client = fixture::client(&sluice, node, 50, &args).await;
    let both_default = fixture::until(&client, 40, Duration::from_secs(20), "default route", |s| {
        fixture::by_peer(s, UNARY) == [("default".to_string(), 20)]
            && fixture::by_peer(s, EMPTY) == [("default".to_string(), 20)]
    })
    .await;
    assert_eq!(both_default.num_failures, 0);

    for (matches, unary, empty) in cases {
        fixture::apply(&sluice, node, &format!("{base}{}", routes(matches))).await;
        let want = |to: &str| vec![(to.to_string(), 20)];
        let got = fixture::until(&client, 40, Duration::from_secs(10), matches, |s| {
            fixture::by_peer(s, UNARY) == want(unary) && fixture::by_peer(s, EMPTY) == want(empty)
        })
        .await;
        assert_eq!(got.num_failures, 0, "{matches}: {got:?}");
        // Stable, not a passing moment: the next window agrees.
        let again = client.stats(40, 10).await;
        assert_eq!(fixture::by_peer(&again, UNARY), want(unary), "{matches}: {again:?}");
        assert_eq!(fixture::by_peer(&again, EMPTY), want(empty), "{matches}: {again:?}");
    }
    sluice.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_matching() {
    let cases = [
        ("[{uri: {exact: /grpc.testing.TestService/EmptyCall}}]", "default", "alt"),
        ("[{uri: {prefix: /grpc.testing.TestService/Unary}}]", "alt", "default"),
        (r#"[{uri: {regex: '^\/.*\/UnaryCall$'}}]"#, "alt", "default"),
        ("[{uri: {exact: /gRpC.tEsTinG.tEstseRvice/empTycaLl}, ignoreUriCase: true}]", "default", "alt"),
    ];
    check(&cases, "paths", &[]).await;
}

/// Also the third path case of the descriptions: a prefix for UnaryCall to `default` before an exact path for
/// EmptyCall to `alt`: the first matching route wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_matching_first_route_wins() {
    let backends = Backends::start(&["default", "alt"]);
    let vs = "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: echo}\nspec:\n  \
              hosts: [echo]\n  http:\n  - match: [{uri: {prefix: /grpc.testing.TestService/Unary}}]\n    \
              route: [{destination: {host: echo, subset: default}}]\n  \
              - match: [{uri: {exact: /grpc.testing.TestService/EmptyCall}}]\n    \
              route: [{destination: {host: echo, subset: alt}}]\n  \
              - route: [{destination: {host: echo, subset: default}}]\n";
    let yaml = format!("{}{}{vs}", backends.yaml("echo"), fixture::subsets(&["default", "alt"]));
    let sluice = fixture::sluice(&yaml).await;
    let client = fixture::client(&sluice, "first", 50, &["--rpc", "EmptyCall,UnaryCall"]).await;
    let got = fixture::until(&client, 40, Duration::from_secs(20), "routed", |s| s.num_failures == 0).await;
    assert_eq!(fixture::by_peer(&got, UNARY), [("default".to_string(), 20)], "{got:?}");
    assert_eq!(fixture::by_peer(&got, EMPTY), [("alt".to_string(), 20)], "{got:?}");
    sluice.shutdown().await;
}

/// EmptyCall carries `xds_md: empty_ytpme`; UnaryCall `xds_md: unary_yranu` and `xds_md_numeric: 150`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_matching() {
    let cases = [
        ("[{headers: {xds_md: {exact: empty_ytpme}}}]", "default", "alt"),
        ("[{headers: {xds_md: {prefix: un}}}]", "alt", "default"),
        // suffix `me`
        ("[{headers: {xds_md: {regex: '.*me'}}}]", "default", "alt"),
        // present
        ("[{headers: {xds_md_numeric: {}}}]", "alt", "default"),
        // invert: exact `unary_yranu` inverted
        ("[{withoutHeaders: {xds_md: {exact: unary_yranu}}}]", "default", "alt"),
        // range [100, 200)
        ("[{headers: {xds_md_numeric: {regex: '1[0-9][0-9]'}}}]", "alt", "default"),
        ("[{headers: {xds_md: {regex: '^em.*me$'}}}]", "default", "alt"),
    ];
    let metadata = "EmptyCall:xds_md:empty_ytpme,UnaryCall:xds_md:unary_yranu,UnaryCall:xds_md_numeric:150";
    check(&cases, "headers", &["--metadata", metadata]).await;
}
