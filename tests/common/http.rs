//! A tiny HTTP/1.1 client over hyper-util's pooled client: single requests and concurrent load.

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::{HeaderMap, Request};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// A keep-alive HTTP/1.1 client; clone it freely (the pool is shared).
pub type Client = HyperClient<HttpConnector, Empty<Bytes>>;

/// Per-request deadline, so a hung proxy fails the test instead of stalling it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

pub fn client() -> Client {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    HyperClient::builder(TokioExecutor::new()).build(connector)
}

/// `GET http://addr/` with `Host: host` and extra headers → (status, body).
pub async fn get(addr: SocketAddr, host: &str, headers: &[(&str, &str)]) -> anyhow::Result<(u16, String)> {
    get_with(&client(), addr, host, "/", headers).await
}

/// `GET http://addr{path}` on a given client (reusing its connections).
pub async fn get_with(
    client: &Client,
    addr: SocketAddr,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<(u16, String)> {
    let resp = get_response(client, addr, host, path, headers).await?;
    Ok((resp.status, resp.body))
}

/// A whole answer: status, headers (for `set-cookie` and the like) and body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

/// [`get_with`], keeping the response headers.
pub async fn get_response(
    client: &Client,
    addr: SocketAddr,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<Response> {
    get_response_within(client, addr, host, path, headers, REQUEST_TIMEOUT).await
}

/// [`get_response`] with its own deadline (for answers that are slow on purpose).
pub async fn get_response_within(
    client: &Client,
    addr: SocketAddr,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    deadline: Duration,
) -> anyhow::Result<Response> {
    let mut req = Request::get(format!("http://{addr}{path}")).header("host", host);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let req = req.body(Empty::new()).context("building request")?;
    let exchange = async {
        let resp = client.request(req).await.context("sending request")?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.context("reading body")?.to_bytes();
        anyhow::Ok(Response { status, headers, body: String::from_utf8_lossy(&body).into_owned() })
    };
    tokio::time::timeout(deadline, exchange).await.context("request timed out")?
}

/// What a load run saw. `by_body` counts 2xx answers by body (a backend answers its name).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counts {
    pub by_body: BTreeMap<String, usize>,
    /// Requests that got no HTTP answer (connection refused or reset, timeout).
    pub errors: usize,
    pub non_2xx: usize,
}

impl Counts {
    /// 2xx answers with this body.
    pub fn of(&self, body: &str) -> usize {
        self.by_body.get(body).copied().unwrap_or(0)
    }

    pub fn ok(&self) -> usize {
        self.by_body.values().sum()
    }

    pub fn total(&self) -> usize {
        self.ok() + self.errors + self.non_2xx
    }

    pub fn add(&mut self, result: anyhow::Result<(u16, String)>) {
        match result {
            Ok((status, body)) if (200..300).contains(&status) => *self.by_body.entry(body).or_default() += 1,
            Ok(_) => self.non_2xx += 1,
            Err(_) => self.errors += 1,
        }
    }

    pub fn merge(&mut self, other: Counts) {
        for (body, n) in other.by_body {
            *self.by_body.entry(body).or_default() += n;
        }
        self.errors += other.errors;
        self.non_2xx += other.non_2xx;
    }
}

/// `n` GETs of `http://addr/` with `Host: host`, `concurrency` at a time over keep-alive
/// connections.
pub async fn load(addr: SocketAddr, host: &str, n: usize, concurrency: usize) -> Counts {
    load_with(addr, host, &[], n, concurrency).await
}

/// [`load`] with extra request headers.
pub async fn load_with(addr: SocketAddr, host: &str, headers: &[(&str, &str)], n: usize, concurrency: usize) -> Counts {
    let client = client();
    let next = Arc::new(AtomicUsize::new(0));
    let headers: Arc<Vec<(String, String)>> =
        Arc::new(headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
    let workers: Vec<_> = (0..concurrency.max(1))
        .map(|_| {
            let (client, next, headers, host) = (client.clone(), next.clone(), headers.clone(), host.to_string());
            tokio::spawn(async move {
                let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                let mut counts = Counts::default();
                while next.fetch_add(1, Ordering::Relaxed) < n {
                    counts.add(get_with(&client, addr, &host, "/", &headers).await);
                }
                counts
            })
        })
        .collect();
    let mut total = Counts::default();
    for worker in workers {
        total.merge(worker.await.expect("load worker panicked"));
    }
    total
}
