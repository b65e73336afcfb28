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

impl Testbed {
    /// GETs every URL in order with one curl process, reusing one
    /// keep-alive connection where the server allows it (HTTP/1.1).
    pub fn curl_many(&self, urls: &[String], extra_args: &[&str]) -> Result<Vec<Response>> {
        let dir = self.dir.join(format!("curl-{}", rand::random::<u32>()));
        std::fs::create_dir_all(&dir)?;
        let mut cmd = self.client.command("curl");
        cmd.args(["-s", "--http1.1", "--max-time", "60"]);
        // One record per transfer on stdout: status, new connections, and
        // the headers as JSON (`-D` is not per URL, `%{header_json}` is).
        cmd.args([
            "-w",
            "\\n@@ %{http_code} %{num_connects}\\n%{header_json}\\n@@end\\n",
        ]);
        cmd.args(extra_args);
        // Plain URL lists (no `--next`) share one connection cache, which
        // is what keep-alive needs.
        for (i, url) in urls.iter().enumerate() {
            cmd.arg("-o").arg(dir.join(format!("{i}.body")));
            cmd.arg(url);
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
            records.len() == urls.len(),
            "curl finished {} of {} transfers ({}): {}",
            records.len(),
            urls.len(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let mut responses = Vec::with_capacity(urls.len());
        for (i, (url, record)) in urls.iter().zip(records).enumerate() {
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
                url: url.clone(),
                status,
                headers,
                body,
                new_connections,
            });
        }
        let _ = std::fs::remove_dir_all(&dir);
        Ok(responses)
    }

    /// GETs one URL.
    pub fn curl(&self, url: &str) -> Result<Response> {
        let mut r = self.curl_many(&[url.to_owned()], &[])?;
        r.pop().context("curl returned nothing")
    }
}
