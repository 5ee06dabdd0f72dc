//! The release console in Debian's headless Chromium (driven by `tests/browser/console.mjs` with playwright-core):
//! the tutorial's whole flow, only through the page, against Sluice, a real Envoy and two backends under continuous
//! load. From an empty task list: create `reviews-v3` (stable v1, new version v3), deliver 20% by ratio, edit it to
//! the Windows operating system rule, take over all traffic, end the task. At each step the script stops at a
//! checkpoint and this test checks the mesh: the share through Envoy, where each User-Agent goes, v1's cluster gone
//! from Envoy's config dump. Bad input is refused next to its field, a 409 is shown, and a second task is created
//! from the keyboard alone. Needs `/usr/bin/chromium` and `npm ci` in tests/browser (both from scripts/setup).
//!
//! `SLUICE_CONSOLE_SCREENSHOTS=docs/console cargo test --test heavy console_browser::` refreshes the screenshots.

use crate::common;

use common::browser::{require_browser, run_script};
use common::http::load_with;
use common::mesh::{until_release, versions_yaml};
use common::{Backend, LoadLoop, load, repo, start_envoy};
use sluice::model::ObjectKey;
use sluice::server::{Options, Sluice};
use sluice::source;
use std::time::Duration;

const NODE: &str = "envoy-console";
const WINDOWS: &str =
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36";
const LINUX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_runs_the_tutorial_from_an_empty_task_list() {
    let _serial = crate::serial().await;
    require_browser();
    let (v1, v3) = (Backend::start("v1").await, Backend::start("v3").await);
    let sluice = Sluice::start(Options::local()).await.expect("start");
    // reviews for the tutorial; details (v1, v2) for the task created from the keyboard.
    let text = versions_yaml("reviews", &[("v1", v1.port()), ("v3", v3.port())])
        + "---\n"
        + &versions_yaml("details", &[("v1", v1.port()), ("v2", v3.port())]);
    sluice.store().set_model(source::parse_str(&text, "console.yaml").expect("config parses"));
    let (envoy, listen) = start_envoy(sluice.xds_addr(), NODE, false).await;
    sluice.wait_acked(NODE, Duration::from_secs(10)).await.expect("Envoy ACKs the config");
    let traffic = LoadLoop::start(listen, "reviews", 2, 40);

    let admin = sluice.admin_addr().expect("admin port");
    let mut env = vec![("CONSOLE_URL", format!("http://{admin}/dashboard"))];
    if let Ok(dir) = std::env::var("SLUICE_CONSOLE_SCREENSHOTS") {
        env.push(("SCREENSHOTS", repo().join(dir).display().to_string()));
    }
    let seen = run_script("console.mjs", &env, Duration::from_secs(240), async |checkpoint: &str| match checkpoint {
        "ratio-20" => {
            until_release(&sluice, "reviews-v3", |v| v.status.weights.get("v3") == Some(&2000), "20% to v3").await;
            let counts = load(listen, "reviews", 2000, 8).await;
            let share = counts.of("v3") as f64 / 2000.0;
            println!("20% by ratio: {counts:?} → v3 {:.1}%", share * 100.0);
            assert_eq!(counts.ok(), 2000, "every request answered: {counts:?}");
            assert!((0.17..=0.23).contains(&share), "v3 gets 17-23% of 2,000 requests: {:.1}%", share * 100.0);
        }
        "windows" => {
            until_release(&sluice, "reviews-v3", |v| !v.spec.traffic.rules.is_empty(), "the Windows rule").await;
            let win = load_with(listen, "reviews", &[("user-agent", WINDOWS)], 200, 8).await;
            let linux = load_with(listen, "reviews", &[("user-agent", LINUX)], 200, 8).await;
            println!("Windows rule: Windows {win:?}, Linux {linux:?}");
            assert_eq!(win.of("v3"), 200, "Windows User-Agents go to v3: {win:?}");
            assert_eq!(linux.of("v1"), 200, "other User-Agents go to v1: {linux:?}");
        }
        "takeover" => {
            until_release(&sluice, "reviews-v3", |v| v.status.weights.get("v3") == Some(&10000), "take over").await;
            let all = load_with(listen, "reviews", &[("user-agent", LINUX)], 400, 8).await;
            assert_eq!(all.of("v3"), 400, "v3 takes all traffic: {all:?}");
        }
        "ended" => {
            envoy
                .wait_for(Duration::from_secs(10), |d| {
                    let text = d.to_string();
                    text.contains("outbound|9080|v3|reviews") && !text.contains("outbound|9080|v1|reviews")
                })
                .await;
            println!("after End task: v1's cluster is gone from Envoy's config dump");
        }
        "keyboard" => {
            let task = sluice.releases().get(&ObjectKey::new("default", "details-v2")).expect("details-v2");
            assert_eq!((task.spec.stable.as_str(), task.spec.canary.as_str()), ("v1", "v2"));
        }
        other => panic!("unknown checkpoint {other}"),
    })
    .await;
    assert_eq!(seen, ["ratio-20", "windows", "takeover", "ended", "keyboard"], "every checkpoint was reached");
    let report = traffic.stop().await;
    println!("load through the whole flow: {}", report.summary());
    assert_eq!((report.counts.errors, report.counts.non_2xx), (0, 0), "no request failed: {}", report.summary());
}
