//! Continuous background load: a few tasks each sending requests at a steady pace over keep-alive connections,
//! counting answers by body, non-2xx answers and connection errors, until stopped. The release tests run one
//! under every step so a single failed request anywhere in a flow shows.

use super::http::{Counts, client, get_with};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

/// A running load. [`LoadLoop::stop`] ends it and returns what it saw.
pub struct LoadLoop {
    running: Arc<AtomicBool>,
    workers: Vec<JoinHandle<Counts>>,
    started: Instant,
}

/// What a stopped [`LoadLoop`] measured.
#[derive(Debug)]
pub struct LoadReport {
    pub counts: Counts,
    pub elapsed: Duration,
}

impl LoadReport {
    /// Requests answered or failed per second, over the whole run.
    pub fn rate(&self) -> f64 {
        self.counts.total() as f64 / self.elapsed.as_secs_f64()
    }

    /// One line for the test log: the rate and the failures.
    pub fn summary(&self) -> String {
        format!(
            "{} requests in {:.1} s = {:.0}/s; non-2xx {}, connection errors {}; by version {:?}",
            self.counts.total(),
            self.elapsed.as_secs_f64(),
            self.rate(),
            self.counts.non_2xx,
            self.counts.errors,
            self.counts.by_body
        )
    }
}

impl LoadLoop {
    /// `tasks` loops, each sending GET `/` with `Host: host` to `addr` at most `per_task` times a second (a steady
    /// pace rather than flat out, so the load does not starve Envoy and Sluice of the machine's two cores).
    pub fn start(addr: SocketAddr, host: &str, tasks: usize, per_task: u32) -> LoadLoop {
        let running = Arc::new(AtomicBool::new(true));
        let period = Duration::from_secs(1) / per_task.max(1);
        let workers = (0..tasks.max(1))
            .map(|_| {
                let (running, host, http) = (running.clone(), host.to_string(), client());
                tokio::spawn(async move {
                    let mut tick = tokio::time::interval(period);
                    tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
                    let mut counts = Counts::default();
                    while running.load(Ordering::Relaxed) {
                        tick.tick().await;
                        counts.add(get_with(&http, addr, &host, "/", &[]).await);
                    }
                    counts
                })
            })
            .collect();
        LoadLoop { running, workers, started: Instant::now() }
    }

    /// Stops every loop after its request in flight and sums what they saw.
    pub async fn stop(self) -> LoadReport {
        self.running.store(false, Ordering::Relaxed);
        let mut counts = Counts::default();
        for worker in self.workers {
            counts.merge(worker.await.expect("load task panicked"));
        }
        LoadReport { counts, elapsed: self.started.elapsed() }
    }
}
