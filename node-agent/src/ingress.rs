//! HTTPS ingress through a Caddy on the node, driven through Caddy's admin API: each VM's
//! HTTP and WebSocket ports are served at their host names, with TLS ending in Caddy and
//! requests passed in plain HTTP to the guest's reserved address.
//!
//! The agent owns exactly two objects of Caddy's configuration, both named after the node's
//! tag: the HTTP server `decloud-<tag>` (its listen address, one route per served port) and
//! the TLS automation policy `decloud-<tag>-tls` that names the certificate issuer for the
//! served hosts (Caddy's internal CA, or an ACME CA). Everything else in Caddy's configuration
//! belongs to the operator or to other agents and is never changed. Each change goes through
//! the admin API's path endpoints, so Caddy applies it without dropping other connections.

use std::{net::SocketAddrV4, time::Duration};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tracing::info;

use crate::error::{Error, Result};

/// How long one admin API request may take.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Who issues the certificates of the served host names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IngressTls {
    /// Caddy's local CA: for local networks and tests (clients need its root certificate).
    Internal,
    /// An ACME CA (Let's Encrypt by default): for host names public DNS points at the node.
    Acme,
}

/// The node's ingress settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngressConfig {
    /// `host:port` of Caddy's admin API, e.g. `127.0.0.1:2019`.
    pub admin: String,
    /// Address the HTTPS server listens on, e.g. `:443`.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Certificate issuer.
    #[serde(default = "default_tls")]
    pub tls: IngressTls,
    /// Contact address given to the ACME CA.
    #[serde(default)]
    pub acme_email: Option<String>,
    /// ACME directory URL; Caddy's default CA when absent.
    #[serde(default)]
    pub acme_ca: Option<String>,
}

fn default_listen() -> String {
    ":443".into()
}

fn default_tls() -> IngressTls {
    IngressTls::Internal
}

impl IngressConfig {
    /// Checks what can be checked without Caddy.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: &str| Err(Error::Config(format!("ingress: {what}")));
        match self.admin.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {}
            _ => return bad(&format!("admin {:?} must be host:port", self.admin)),
        }
        match self.listen.rsplit_once(':') {
            Some((_, port)) if port.parse::<u16>().is_ok_and(|p| p != 0) => {}
            _ => return bad(&format!("listen {:?} must be [host]:port", self.listen)),
        }
        if self.tls == IngressTls::Internal && (self.acme_email.is_some() || self.acme_ca.is_some())
        {
            return bad("acme_email and acme_ca apply only with tls = \"acme\"");
        }
        Ok(())
    }
}

/// One route the node should serve.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct IngressRule {
    /// Host name the route answers.
    pub host: String,
    /// VM the route belongs to.
    pub vm_id: String,
    /// The guest's address and HTTP port.
    pub upstream: SocketAddrV4,
}

/// A route of this node as Caddy holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedRoute {
    /// The route's `@id`.
    pub id: String,
    /// Host name it answers.
    pub host: String,
    /// Where it sends requests (`ip:port`).
    pub upstream: String,
}

/// What a reconciliation changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngressReport {
    /// Routes added (or changed), by host name.
    pub added: Vec<String>,
    /// Routes removed, by host name.
    pub removed: Vec<String>,
}

/// Whether `host` is a DNS name Caddy can serve and get a certificate for: at least two
/// labels of 1 to 63 characters of `a-z`, `0-9` and `-` (not at either end), 253 in all.
pub fn valid_host(host: &str) -> bool {
    let labels: Vec<&str> = host.split('.').collect();
    host.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

/// The node's client of Caddy's admin API.
#[derive(Debug, Clone)]
pub struct Ingress {
    config: IngressConfig,
    tag: String,
    client: reqwest::Client,
}

impl Ingress {
    /// A client for the node tagged `tag`.
    pub fn new(config: IngressConfig, tag: &str) -> Result<Self> {
        config.validate()?;
        let client = reqwest::Client::builder()
            .no_proxy()
            // A connection per request: Caddy replaces its admin listener on every config
            // change and closes the old one's connections, so a pooled connection can be dead.
            .pool_max_idle_per_host(0)
            .timeout(ADMIN_TIMEOUT)
            .build()
            .map_err(|e| Error::Ingress(e.to_string()))?;
        Ok(Self {
            config,
            tag: tag.to_owned(),
            client,
        })
    }

    /// The settings.
    pub fn config(&self) -> &IngressConfig {
        &self.config
    }

    /// Name (and `@id`) of the node's HTTP server in Caddy.
    pub fn server_name(&self) -> String {
        format!("decloud-{}", self.tag)
    }

    /// `@id` of the node's TLS automation policy.
    pub fn policy_id(&self) -> String {
        format!("decloud-{}-tls", self.tag)
    }

    /// `@id` of a route: node, VM and host name.
    fn route_id(&self, rule: &IngressRule) -> String {
        format!("decloud-{}-{}-{}", self.tag, rule.vm_id, rule.host)
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.config.admin)
    }

    async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<String> {
        let mut request = self.client.request(method.clone(), self.url(path));
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_string());
        }
        let response = request.send().await.map_err(|e| {
            Error::Ingress(format!("caddy admin api at {}: {e}", self.config.admin))
        })?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| Error::Ingress(format!("caddy admin api: {e}")))?;
        if !status.is_success() {
            return Err(Error::Ingress(format!(
                "caddy admin api {method} {path}: {status}: {}",
                text.trim()
            )));
        }
        Ok(text)
    }

    /// Caddy's whole configuration (`null` when it has none).
    pub async fn caddy_config(&self) -> Result<Value> {
        let text = self.request(reqwest::Method::GET, "/config/", None).await?;
        serde_json::from_str(&text)
            .map_err(|e| Error::Ingress(format!("caddy returned a config that is not JSON: {e}")))
    }

    /// The routes of this node that Caddy holds, by host name.
    pub async fn routes(&self) -> Result<Vec<ServedRoute>> {
        let config = self.caddy_config().await?;
        Ok(served_routes(config.pointer(&format!(
            "/apps/http/servers/{}",
            self.server_name()
        ))))
    }

    fn issuer(&self) -> Value {
        match self.config.tls {
            IngressTls::Internal => json!({ "module": "internal" }),
            IngressTls::Acme => {
                let mut issuer = json!({ "module": "acme" });
                if let Some(email) = &self.config.acme_email {
                    issuer["email"] = email.as_str().into();
                }
                if let Some(ca) = &self.config.acme_ca {
                    issuer["ca"] = ca.as_str().into();
                }
                issuer
            }
        }
    }

    fn server(&self, rules: &[IngressRule]) -> Value {
        let routes: Vec<Value> = rules
            .iter()
            .map(|r| {
                json!({
                    "@id": self.route_id(r),
                    "match": [{ "host": [r.host] }],
                    "handle": [{
                        "handler": "reverse_proxy",
                        "upstreams": [{ "dial": r.upstream.to_string() }],
                    }],
                    "terminal": true,
                })
            })
            .collect();
        json!({
            "@id": self.server_name(),
            "listen": [self.config.listen],
            // HTTPS only: plain HTTP would need port 80 on every node.
            "automatic_https": { "disable_redirects": true },
            "routes": routes,
        })
    }

    fn policy(&self, hosts: &[String]) -> Value {
        json!({
            "@id": self.policy_id(),
            "subjects": hosts,
            "issuers": [self.issuer()],
        })
    }

    /// Makes Caddy serve exactly `desired` for this node: routes of VMs no longer wanted go,
    /// missing or changed ones come; the server and the policy go when nothing is served.
    pub async fn reconcile(&self, desired: &[IngressRule]) -> Result<IngressReport> {
        let mut desired = desired.to_vec();
        desired.sort();
        desired.dedup_by(|a, b| a.host == b.host);
        let config = self.caddy_config().await?;
        let server_path = format!("/apps/http/servers/{}", self.server_name());
        let current_server = config.pointer(&server_path);
        let current_policy = config
            .pointer("/apps/tls/automation/policies")
            .and_then(Value::as_array)
            .and_then(|ps| {
                ps.iter()
                    .find(|p| p.get("@id").and_then(Value::as_str) == Some(&self.policy_id()))
            });
        let served = served_routes(current_server);
        let mut report = IngressReport::default();
        for route in &served {
            let kept = desired.iter().any(|r| {
                r.host == route.host
                    && r.upstream.to_string() == route.upstream
                    && self.route_id(r) == route.id
            });
            if !kept {
                report.removed.push(route.host.clone());
            }
        }
        for rule in &desired {
            let present = served.iter().any(|s| {
                s.host == rule.host
                    && s.upstream == rule.upstream.to_string()
                    && s.id == self.route_id(rule)
            });
            if !present {
                report.added.push(rule.host.clone());
            }
        }

        // Every host in the server's routes is in the policy at every step: a host Caddy
        // serves without a policy gets a certificate request to the default (public ACME)
        // issuers, which holds the host's certificate lock until it gives up. So the policy
        // first grows to cover old and new hosts, then the server changes, then the policy
        // shrinks to the new hosts.
        let mut covering: Vec<String> = desired.iter().map(|r| r.host.clone()).collect();
        covering.extend(
            served
                .iter()
                .filter(|s| valid_host(&s.host))
                .map(|s| s.host.clone()),
        );
        covering.sort();
        covering.dedup();
        let current_policy = current_policy.cloned();
        let current_policy = self.set_policy(current_policy, &covering).await?;
        let server = self.server(&desired);
        if desired.is_empty() {
            if current_server.is_some() {
                self.request(
                    reqwest::Method::DELETE,
                    &format!("/config{server_path}"),
                    None,
                )
                .await?;
            }
        } else if current_server != Some(&server) {
            self.ensure_object(&["apps", "http", "servers"]).await?;
            self.request(
                reqwest::Method::POST,
                &format!("/config{server_path}"),
                Some(&server),
            )
            .await?;
        }
        let hosts: Vec<String> = desired.iter().map(|r| r.host.clone()).collect();
        self.set_policy(current_policy, &hosts).await?;
        if !report.added.is_empty() || !report.removed.is_empty() {
            info!(target: "agent::ingress", added = ?report.added, removed = ?report.removed, "ingress routes reconciled");
        }
        Ok(report)
    }

    /// Makes the node's TLS policy cover exactly `hosts` (none: no policy, since a policy
    /// without subjects would cover every host). `current` is the policy Caddy holds; returns
    /// the one it holds afterwards.
    async fn set_policy(&self, current: Option<Value>, hosts: &[String]) -> Result<Option<Value>> {
        let wanted = (!hosts.is_empty()).then(|| self.policy(hosts));
        if current == wanted {
            return Ok(current);
        }
        if current.is_some() {
            self.request(
                reqwest::Method::DELETE,
                &format!("/id/{}", self.policy_id()),
                None,
            )
            .await?;
        }
        let Some(policy) = wanted else {
            return Ok(None);
        };
        self.ensure_object(&["apps", "tls", "automation"]).await?;
        let config = self.caddy_config().await?;
        match config
            .pointer("/apps/tls/automation/policies")
            .and_then(Value::as_array)
        {
            None => {
                self.request(
                    reqwest::Method::PUT,
                    "/config/apps/tls/automation/policies",
                    Some(&json!([policy])),
                )
                .await?;
            }
            Some(others) if others.is_empty() => {
                self.request(
                    reqwest::Method::POST,
                    "/config/apps/tls/automation/policies",
                    Some(&policy),
                )
                .await?;
            }
            // First in the list: a policy without subjects (a catch-all) must not shadow it.
            Some(_) => {
                self.request(
                    reqwest::Method::PUT,
                    "/config/apps/tls/automation/policies/0",
                    Some(&policy),
                )
                .await?;
            }
        }
        Ok(Some(policy))
    }

    /// Creates the objects along `path` that Caddy's configuration lacks (each empty).
    async fn ensure_object(&self, path: &[&str]) -> Result<()> {
        let config = self.caddy_config().await?;
        let config = &config;
        let mut node = Some(config).filter(|c| !c.is_null());
        for depth in 0..path.len() {
            node = node.and_then(|n| n.get(path[depth]));
            if node.is_none() {
                // Everything below is created in one object.
                let mut value = json!({});
                for key in path[depth + 1..].iter().rev() {
                    value = json!({ *key: value });
                }
                let at = if depth == 0 && config.is_null() {
                    value = json!({ path[0]: value });
                    "/config/".to_owned()
                } else {
                    format!("/config/{}", path[..=depth].join("/"))
                };
                let method = if at == "/config/" {
                    reqwest::Method::POST
                } else {
                    reqwest::Method::PUT
                };
                self.request(method, &at, Some(&value)).await?;
                return Ok(());
            }
        }
        Ok(())
    }
}

fn served_routes(server: Option<&Value>) -> Vec<ServedRoute> {
    let Some(routes) = server
        .and_then(|s| s.get("routes"))
        .and_then(Value::as_array)
    else {
        return Vec::new();
    };
    routes
        .iter()
        .map(|r| ServedRoute {
            id: r
                .get("@id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            host: r
                .pointer("/match/0/host/0")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            upstream: r
                .pointer("/handle/0/upstreams/0/dial")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_are_checked_label_by_label() {
        for good in ["web-1.apps.example.org", "a.b", "x0.y-z.example"] {
            assert!(valid_host(good), "{good}");
        }
        let long_label = format!("{}.example.org", "a".repeat(64));
        for bad in [
            "",
            "localhost",
            "Web.example.org",
            "-web.example.org",
            "web-.example.org",
            "web..example.org",
            "web_1.example.org",
            "web.example.org.",
            "*.example.org",
            long_label.as_str(),
        ] {
            assert!(!valid_host(bad), "{bad}");
        }
    }

    #[test]
    fn config_checks_addresses_and_acme_settings() {
        let config = |admin: &str, listen: &str, tls, email: Option<&str>| IngressConfig {
            admin: admin.into(),
            listen: listen.into(),
            tls,
            acme_email: email.map(Into::into),
            acme_ca: None,
        };
        assert!(
            config("127.0.0.1:2019", ":443", IngressTls::Internal, None)
                .validate()
                .is_ok()
        );
        assert!(
            config(
                "127.0.0.1:2019",
                ":443",
                IngressTls::Acme,
                Some("ops@example.org")
            )
            .validate()
            .is_ok()
        );
        for bad in [
            config("127.0.0.1", ":443", IngressTls::Internal, None),
            config("127.0.0.1:2019", "443", IngressTls::Internal, None),
            config("127.0.0.1:2019", ":0", IngressTls::Internal, None),
            config(
                "127.0.0.1:2019",
                ":443",
                IngressTls::Internal,
                Some("a@b.c"),
            ),
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }
}
