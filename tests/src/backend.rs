//! Real nginx backends, one per namespace and host address.

use std::{net::Ipv4Addr, path::PathBuf, time::Duration};

use anyhow::{Context as _, Result};
use rand::RngCore as _;

use crate::{Daemon, NS_PREFIX, Netns, Testbed, sha256_hex};

/// An object a backend serves.
#[derive(Debug, Clone)]
pub struct Object {
    /// URL path, `/obj/<size>`.
    pub path: String,
    pub size: usize,
    /// Hex sha256 of this backend's copy.
    pub sha256: String,
}

/// One nginx backend in its own namespace.
pub struct Backend {
    /// `b1`, `b2`, ...; also the `X-Backend` header value.
    pub name: String,
    pub ns: Netns,
    pub addr: Ipv4Addr,
    /// The gateway's address on this backend's link.
    pub gateway_addr: Ipv4Addr,
    /// The gateway's interface toward this backend (same as `name`).
    pub gateway_iface: String,
    pub port: u16,
    pub objects: Vec<Object>,
    /// nginx's folder: config, logs, web root.
    pub dir: PathBuf,
    nginx: Option<Daemon>,
}

impl Backend {
    /// Creates backend number `index` (1-based): namespace, link to the
    /// gateway on 192.0.2.(4i+1)/30 <-> 192.0.2.(4i+2)/30, objects, nginx.
    pub(crate) fn create(
        bed: &Testbed,
        index: usize,
        sizes: &[usize],
        directives: &str,
    ) -> Result<Self> {
        let name = format!("b{index}");
        let ns = Netns::create(&format!("{NS_PREFIX}{}-{name}", bed.id))?;
        let host = u8::try_from(4 * index).context("backend index too large")?;
        let gateway_addr = Ipv4Addr::new(192, 0, 2, host + 1);
        let addr = Ipv4Addr::new(192, 0, 2, host + 2);

        let gw = &bed.gateway;
        gw.ip(&[
            "link", "add", "name", &name, "type", "veth", "peer", "name", "eth0", "netns", &ns.name,
        ])?;
        gw.ip(&["addr", "add", &format!("{gateway_addr}/30"), "dev", &name])?;
        gw.ip(&["link", "set", "dev", &name, "up"])?;
        ns.ip(&["addr", "add", &format!("{addr}/30"), "dev", "eth0"])?;
        ns.ip(&["link", "set", "dev", "eth0", "up"])?;
        ns.ip(&["route", "add", "default", "via", &gateway_addr.to_string()])?;

        let dir = bed.dir.join(&name);
        let mut backend = Self {
            name,
            ns,
            addr,
            gateway_addr,
            gateway_iface: String::new(),
            port: 80,
            objects: Vec::new(),
            dir,
            nginx: None,
        };
        backend.gateway_iface.clone_from(&backend.name);
        backend.write_objects(sizes)?;
        backend.start_nginx(directives)?;
        Ok(backend)
    }

    fn write_objects(&mut self, sizes: &[usize]) -> Result<()> {
        let root = self.dir.join("www/obj");
        std::fs::create_dir_all(&root)?;
        let mut rng = rand::rng();
        for &size in sizes {
            let mut data = vec![0u8; size];
            rng.fill_bytes(&mut data);
            std::fs::write(root.join(size.to_string()), &data)?;
            self.objects.push(Object {
                path: format!("/obj/{size}"),
                size,
                sha256: sha256_hex(&data),
            });
        }
        Ok(())
    }

    fn start_nginx(&mut self, directives: &str) -> Result<()> {
        let d = self.dir.display();
        for sub in ["logs", "tmp"] {
            std::fs::create_dir_all(self.dir.join(sub))?;
        }
        // `user root`: the workers must read the scratch folder. Logs carry
        // the connection serial so tests can count backend connections.
        let conf = format!(
            r#"user root;
worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/logs/error.log warn;
events {{ worker_connections 4096; }}
http {{
    log_format dist '$remote_addr:$remote_port conn=$connection req=$connection_requests '
                    '"$request" $status $body_bytes_sent';
    access_log {d}/logs/access.log dist;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    default_type application/octet-stream;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    sendfile on;
    server {{
        listen {addr}:{port} reuseport;
        root {d}/www;
        add_header X-Backend {name} always;
        {directives}
        location = /health {{ access_log off; return 200 "{name}\n"; }}
        location /echo {{ return 200 "{name} $request_method $request_uri\n"; }}
        location = /204 {{ return 204; }}
        # gzip on the fly has no length in advance: a chunked response.
        location /gz/ {{ alias {d}/www/obj/; gzip on; gzip_types *; gzip_min_length 0; }}
        location / {{ }}
    }}
}}
"#,
            addr = self.addr,
            port = self.port,
            name = self.name,
        );
        let conf_path = self.dir.join("nginx.conf");
        std::fs::write(&conf_path, conf)?;
        let mut cmd = self.ns.command("nginx");
        cmd.arg("-c").arg(&conf_path).arg("-p").arg(&self.dir);
        self.nginx = Some(Daemon::spawn(
            &format!("nginx {}", self.name),
            cmd,
            self.dir.join("logs/nginx.out"),
        )?);
        Ok(())
    }

    /// Waits until nginx accepts connections.
    pub(crate) fn wait_ready(&mut self) -> Result<()> {
        let url = format!("http://{}:{}/health", self.addr, self.port);
        let Some(nginx) = self.nginx.as_mut() else {
            anyhow::bail!("nginx {} not started", self.name);
        };
        let ns = &self.ns;
        nginx.wait_until(Duration::from_secs(10), || ns.http_ok(&url))
    }

    /// Stops nginx.
    pub(crate) fn stop(&mut self) {
        if let Some(mut nginx) = self.nginx.take() {
            // SIGTERM is nginx's fast shutdown.
            nginx.stop();
        }
    }

    /// The object of `size` bytes.
    #[must_use]
    pub fn object(&self, size: usize) -> Option<&Object> {
        self.objects.iter().find(|o| o.size == size)
    }

    /// nginx's access log lines so far.
    #[must_use]
    pub fn access_log(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("logs/access.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// `http://addr:port`
    #[must_use]
    pub fn url(&self) -> String {
        format!("http://{}:{}", self.addr, self.port)
    }
}
