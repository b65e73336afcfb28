//! The peers users would pick instead of distributor (haproxy, nginx as a
//! reverse proxy), configured like distributor's two-pool example and run
//! on the testbed's gateway on the virtual IP port 80: for the benchmark and
//! for tests that compare behaviour.

use std::{fmt::Write as _, time::Duration};

use anyhow::Result;

use crate::{Daemon, Testbed, VIP};

/// Two pools as in distributor's two-pool configurations: requests whose
/// cookie `cookie_name` equals `cookie_value` go to `priority`, the rest to
/// `default`; inside a pool, the server with the fewest connections.
#[derive(Debug, Clone)]
pub struct PeerPools {
    /// `addr:port` of each server of the high-priority pool.
    pub priority: Vec<String>,
    /// `addr:port` of each server of the default pool.
    pub default: Vec<String>,
    pub cookie_name: String,
    pub cookie_value: String,
}

/// How to run haproxy.
#[derive(Debug, Clone, Copy)]
pub struct HaproxyOptions {
    /// `nbthread`.
    pub threads: usize,
    /// `option splice-response`: response bodies move through kernel pipes
    /// with splice(2) instead of being copied through the process.
    pub splice: bool,
}

impl Testbed {
    /// b1 is the priority pool (cookie `tier=gold`), the other backends the
    /// default pool.
    #[must_use]
    pub fn two_pool_peers(&self) -> PeerPools {
        let addr = |b: &crate::Backend| format!("{}:{}", b.addr, b.port);
        PeerPools {
            priority: self.backends.iter().take(1).map(addr).collect(),
            default: self.backends.iter().skip(1).map(addr).collect(),
            cookie_name: "tier".to_owned(),
            cookie_value: "gold".to_owned(),
        }
    }

    /// Starts haproxy in the foreground (`-db`) in the gateway namespace on
    /// the virtual IP port 80, and waits until it answers.
    pub fn start_haproxy(&self, pools: &PeerPools, options: HaproxyOptions) -> Result<Daemon> {
        let n = rand::random::<u32>();
        let servers = |prefix: &str, list: &[String]| -> String {
            list.iter()
                .enumerate()
                .fold(String::new(), |mut s, (i, a)| {
                    let _ = writeln!(s, "    server {prefix}{i} {a}");
                    s
                })
        };
        // No `log` line anywhere and no stats section: logging costs would
        // be measured too. Keep-alive on both sides; `http-reuse always`
        // shares idle backend connections between client connections, as
        // distributor's pool does. haproxy raises its descriptor limit to
        // fit `maxconn` (and its splice pipes): 4096 stays within a 20000
        // hard limit and is far above the benchmark's 256 connections.
        let config = format!(
            r"global
    nbthread {threads}
    maxconn 4096

defaults
    mode http
    option http-keep-alive
    http-reuse always
{splice}    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 60s

frontend fe
    bind {VIP}:80
    use_backend be_priority if {{ req.cook({cookie}) -m str {value} }}
    default_backend be_default

backend be_priority
    balance leastconn
{priority}
backend be_default
    balance leastconn
{default}",
            threads = options.threads,
            splice = if options.splice {
                "    option splice-response\n"
            } else {
                ""
            },
            cookie = pools.cookie_name,
            value = pools.cookie_value,
            priority = servers("p", &pools.priority),
            default = servers("d", &pools.default),
        );
        let path = self.write_file(&format!("haproxy-{n}.cfg"), &config)?;
        let mut cmd = self.gateway.command("haproxy");
        cmd.arg("-db").arg("-f").arg(&path);
        let mut daemon = Daemon::spawn("haproxy", cmd, self.dir.join(format!("haproxy-{n}.log")))?;
        self.wait_vip_answers(&mut daemon)?;
        Ok(daemon)
    }

    /// Starts nginx as a reverse proxy with `workers` worker processes in
    /// the gateway namespace on the virtual IP port 80, and waits until it
    /// answers.
    pub fn start_nginx_proxy(&self, pools: &PeerPools, workers: usize) -> Result<Daemon> {
        let n = rand::random::<u32>();
        let dir = self.dir.join(format!("nginx-proxy-{n}"));
        for sub in ["logs", "tmp"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        let d = dir.display();
        let servers = |list: &[String]| -> String {
            list.iter().fold(String::new(), |mut s, a| {
                let _ = writeln!(s, "        server {a};");
                s
            })
        };
        // `keepalive` is the idle upstream connections each worker keeps
        // per group; below the client concurrency nginx would close and
        // reopen backend connections under load (and run the gateway out of
        // ports), so it matches the largest benchmark concurrency.
        // `proxy_max_temp_file_size 0`: large bodies stream through the
        // memory buffers instead of being written to temporary files.
        let config = format!(
            r#"user root;
worker_processes {workers};
daemon off;
pid {d}/nginx.pid;
error_log {d}/logs/error.log error;
events {{ worker_connections 20000; }}
http {{
    access_log off;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    map $cookie_{cookie} $pool {{
        default pool_default;
        {value} pool_priority;
    }}
    upstream pool_priority {{
        least_conn;
{priority}        keepalive 256;
        keepalive_requests 1000000;
    }}
    upstream pool_default {{
        least_conn;
{default}        keepalive 256;
        keepalive_requests 1000000;
    }}
    server {{
        listen {VIP}:80;
        location / {{
            proxy_pass http://$pool;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_max_temp_file_size 0;
        }}
    }}
}}
"#,
            cookie = pools.cookie_name,
            value = pools.cookie_value,
            priority = servers(&pools.priority),
            default = servers(&pools.default),
        );
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, config)?;
        let mut cmd = self.gateway.command("nginx");
        cmd.arg("-c").arg(&conf_path).arg("-p").arg(&dir);
        let mut daemon = Daemon::spawn("nginx-proxy", cmd, dir.join("logs/nginx.out"))?;
        self.wait_vip_answers(&mut daemon)?;
        Ok(daemon)
    }

    /// Waits (up to 10 s) until `GET /health` on the virtual IP answers 200
    /// from inside the gateway namespace.
    fn wait_vip_answers(&self, daemon: &mut Daemon) -> Result<()> {
        let url = self.vip_url("/health");
        daemon.wait_until(Duration::from_secs(10), || self.gateway.http_ok(&url))
    }
}
