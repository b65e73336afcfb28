//! The real HTTP client of the testbed: curl in the client namespace.

use std::collections::BTreeMap;

use anyhow::{Context as _, Result};

use crate::{Testbed, sha256_hex};

/// One response as the client received it.
#[derive(Debug, Clone)]
pub struct Response {
    pub url: String,
    pub status: u16,
    /// Header names lower-cased; the last value wins.
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
    /// New TCP connections curl opened for this transfer (0: reused).
    pub new_connections: u32,
}

impl Response {
    /// The `X-Backend` header, or "".
    #[must_use]
    pub fn backend(&self) -> &str {
        self.headers.get("x-backend").map_or("", String::as_str)
    }

    /// Hex sha256 of the body.
    #[must_use]
    pub fn sha256(&self) -> String {
        sha256_hex(&self.body)
    }
}

/// One request for [`Testbed::curl_requests`].
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub url: String,
    /// curl options for this request only (`-b`, `-H`, `-X`, ...).
    pub args: Vec<String>,
}

impl Request {
    #[must_use]
    pub fn get(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            args: Vec::new(),
        }
    }

    /// Adds curl options.
    #[must_use]
    pub fn with(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|a| (*a).to_owned()));
        self
    }
}

impl Testbed {
    /// Sends the requests in order with one curl process. curl keeps one
    /// connection cache across `--next`, so HTTP/1.1 requests to one
    /// address share one keep-alive connection.
    pub fn curl_requests(&self, requests: &[Request]) -> Result<Vec<Response>> {
        let dir = self.dir.join(format!("curl-{}", rand::random::<u32>()));
        std::fs::create_dir_all(&dir)?;
        let mut cmd = self.client.command("curl");
        for (i, req) in requests.iter().enumerate() {
            if i > 0 {
                cmd.arg("--next");
            }
            cmd.args(["-s", "--http1.1", "--max-time", "60"]);
            // One record per transfer on stdout: status, new connections,
            // and the headers as JSON (`%{header_json}`, one per transfer).
            cmd.args([
                "-w",
                "\\n@@ %{http_code} %{num_connects}\\n%{header_json}\\n@@end\\n",
            ]);
            cmd.args(&req.args);
            cmd.arg("-o").arg(dir.join(format!("{i}.body")));
            cmd.arg(&req.url);
        }
        let out = cmd
            .output()
            .context("running curl in the client namespace")?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let records: Vec<&str> = stdout
            .split("\n@@ ")
            .skip(1)
            .filter_map(|r| r.split_once("\n@@end").map(|(rec, _)| rec))
            .collect();
        anyhow::ensure!(
            records.len() == requests.len(),
            "curl finished {} of {} transfers ({}): {}",
            records.len(),
            requests.len(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let mut responses = Vec::with_capacity(requests.len());
        for (i, (req, record)) in requests.iter().zip(records).enumerate() {
            let (line, json) = record.split_once('\n').unwrap_or((record, "{}"));
            let mut it = line.split_whitespace();
            let status = it.next().unwrap_or("0").parse().unwrap_or(0);
            let new_connections = it.next().unwrap_or("0").parse().unwrap_or(0);
            // header_json: {"name": ["value", ...], ...}, names lower-case.
            let headers = serde_json::from_str::<serde_json::Value>(json)
                .ok()
                .and_then(|v| v.as_object().cloned())
                .unwrap_or_default()
                .into_iter()
                .filter_map(|(k, v)| {
                    let last = v.as_array()?.last()?.as_str()?.to_owned();
                    Some((k.to_ascii_lowercase(), last))
                })
                .collect();
            let body = std::fs::read(dir.join(format!("{i}.body"))).unwrap_or_default();
            responses.push(Response {
                url: req.url.clone(),
                status,
                headers,
                body,
                new_connections,
            });
        }
        let _ = std::fs::remove_dir_all(&dir);
        Ok(responses)
    }

    /// GETs every URL in order over keep-alive connections.
    pub fn curl_many(&self, urls: &[String], extra_args: &[&str]) -> Result<Vec<Response>> {
        let requests: Vec<Request> = urls
            .iter()
            .map(|u| Request::get(u.clone()).with(extra_args))
            .collect();
        self.curl_requests(&requests)
    }

    /// GETs one URL.
    pub fn curl(&self, url: &str) -> Result<Response> {
        let mut r = self.curl_many(&[url.to_owned()], &[])?;
        r.pop().context("curl returned nothing")
    }
}
