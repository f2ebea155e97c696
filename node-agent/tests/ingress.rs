//! HTTPS ingress through a real Caddy driven by its admin API: each test starts its own Caddy
//! on free loopback ports with its own storage (so its own local CA). The routes are checked
//! as Caddy reports them; one test boots the busybox test guest on a NAT network and fetches
//! its page over HTTPS by host name with curl, trusting only that Caddy's CA.

mod common;

use std::time::{Duration, Instant};

use common::{caddy::Caddy, *};
use decloud_node_agent::{
    Agent, Config, ConfigLayer, Error, Hypervisor, Identity, IngressConfig, IngressTls, node_tag,
    test_guest::{ADDRESS_MARKER, HTTP_PORT},
};
use decloud_sdk::agent_protocol::{
    self, AckOutcome, Command, CommandAction, IngressRoute, VmSpec, VmState,
};
use serde_json::{Value, json};

/// The seed templates with an HTTP port, and that port.
const SEED_WEB_TEMPLATES: [&str; 3] = ["vscode-server", "web-proxy-browser", "stable-diffusion"];

/// The guest ports a seed template marks `http`.
fn seed_http_ports(template: &str) -> Vec<u16> {
    let path = format!(
        "{}/../templates/seed/{template}/template.toml",
        env!("CARGO_MANIFEST_DIR")
    );
    let manifest: toml::Value = toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    manifest["ports"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["protocol"].as_str() == Some("http"))
        .map(|p| u16::try_from(p["port"].as_integer().unwrap()).unwrap())
        .collect()
}

fn ingress_config(caddy: &Caddy) -> IngressConfig {
    IngressConfig {
        admin: caddy.admin.clone(),
        listen: format!("127.0.0.1:{}", caddy.https_port),
        tls: IngressTls::Internal,
        acme_email: None,
        acme_ca: None,
    }
}

/// This node's routes as Caddy reports them: (host, upstream), sorted.
fn served(caddy: &Caddy, tag: &str) -> Vec<(String, String)> {
    let config = caddy.config();
    let mut routes: Vec<(String, String)> = config
        .pointer(&format!("/apps/http/servers/decloud-{tag}/routes"))
        .and_then(Value::as_array)
        .map(|routes| {
            routes
                .iter()
                .map(|r| {
                    (
                        r.pointer("/match/0/host/0")
                            .unwrap()
                            .as_str()
                            .unwrap()
                            .to_owned(),
                        r.pointer("/handle/0/upstreams/0/dial")
                            .unwrap()
                            .as_str()
                            .unwrap()
                            .to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    routes.sort();
    routes
}

/// The hosts of this node's TLS policy and its issuer module, as Caddy reports them.
fn policy(caddy: &Caddy, tag: &str) -> Option<(Vec<String>, String)> {
    let config = caddy.config();
    let policies = config
        .pointer("/apps/tls/automation/policies")?
        .as_array()?;
    let ours = policies
        .iter()
        .find(|p| p["@id"].as_str() == Some(&format!("decloud-{tag}-tls")))?;
    let mut subjects: Vec<String> = ours["subjects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect();
    subjects.sort();
    Some((subjects, ours["issuers"][0]["module"].as_str()?.to_owned()))
}

async fn upstream(agent: &Agent, vm: &str, port: u16) -> String {
    let ip = agent.store().attachment(vm).await.unwrap().unwrap().ip;
    format!("{ip}:{port}")
}

fn web_spec(id: &str, routes: &[(&str, u16)]) -> VmSpec {
    let mut spec = spec(id, "blank");
    spec.ingress = routes
        .iter()
        .map(|(host, guest)| IngressRoute {
            host: (*host).into(),
            guest: *guest,
        })
        .collect();
    spec
}

#[tokio::test]
async fn seed_web_ports_get_routes_that_follow_their_vms_and_survive_a_restart() {
    let mut caddy = Caddy::start();
    let dir = data_dir();
    let machine = "ingress-seed";
    // Keeps the test driver's state while the agent is closed and opened again.
    let _keep = Hypervisor::open("test:///default").unwrap();
    let mut config = test_driver_config(dir.path(), machine);
    config.ingress = Some(ingress_config(&caddy));
    let agent = open_agent(config.clone()).await;
    let tag = node_tag(&agent.identity().node_id);
    agent.reconcile().await.unwrap();
    assert!(served(&caddy, &tag).is_empty());

    let mut expected = Vec::new();
    for template in SEED_WEB_TEMPLATES {
        let ports = seed_http_ports(template);
        assert!(!ports.is_empty(), "{template} has no http port");
        let hosts: Vec<String> = ports
            .iter()
            .map(|p| format!("{template}-{p}.apps.test"))
            .collect();
        let routes: Vec<(&str, u16)> = hosts
            .iter()
            .map(String::as_str)
            .zip(ports.clone())
            .collect();
        let report = agent.create_vm(web_spec(template, &routes)).await.unwrap();
        assert_eq!(report.state, VmState::Running);
        // An HTTP port gets no direct forward unless asked for.
        assert!(report.forwards.is_empty(), "{:?}", report.forwards);
        for (host, port) in hosts.into_iter().zip(ports) {
            expected.push((host, upstream(&agent, template, port).await));
        }
    }
    expected.sort();
    assert_eq!(served(&caddy, &tag), expected);
    let all_hosts: Vec<String> = expected.iter().map(|(h, _)| h.clone()).collect();
    assert_eq!(
        policy(&caddy, &tag),
        Some((all_hosts.clone(), "internal".into()))
    );

    // Refused with nothing changed: a bad host name, a host another VM has, one named twice.
    let before = caddy.config();
    let taken = expected[0].0.clone();
    for (id, routes, reason) in [
        (
            "bad-1",
            vec![("Web.apps.test", 80)],
            "not a lowercase DNS name",
        ),
        (
            "bad-2",
            vec![("web_1.apps.test", 80)],
            "not a lowercase DNS name",
        ),
        ("bad-3", vec![("localhost", 80)], "not a lowercase DNS name"),
        ("bad-4", vec![(taken.as_str(), 80)], "already served for vm"),
        (
            "bad-5",
            vec![("twice.apps.test", 80), ("twice.apps.test", 81)],
            "named twice",
        ),
        ("bad-6", vec![("zero.apps.test", 0)], "guest port 0"),
    ] {
        let err = agent.create_vm(web_spec(id, &routes)).await.unwrap_err();
        assert!(
            matches!(&err, Error::InvalidSpec(m) if m.contains(reason)),
            "{id}: {err}"
        );
        assert!(agent.store().vm(id).await.unwrap().is_none());
    }
    assert_eq!(caddy.config(), before);

    // A stopped VM's route goes; started again, it comes back.
    agent.stop_vm("vscode-server").await.unwrap();
    let without: Vec<(String, String)> = expected
        .iter()
        .filter(|(h, _)| !h.starts_with("vscode-server-"))
        .cloned()
        .collect();
    assert_eq!(served(&caddy, &tag), without);
    assert_eq!(
        policy(&caddy, &tag).unwrap().0,
        without.iter().map(|(h, _)| h.clone()).collect::<Vec<_>>()
    );
    agent.start_vm("vscode-server").await.unwrap();
    assert_eq!(served(&caddy, &tag), expected);

    // Caddy restarted without its saved configuration: the next observation round puts the
    // routes back.
    caddy.restart();
    assert!(served(&caddy, &tag).is_empty());
    agent.observe().await.unwrap();
    assert_eq!(served(&caddy, &tag), expected);

    // The agent goes away; meanwhile one of its routes is lost, a route of this node for a
    // VM it has no record of appears, and the operator adds a site of their own.
    agent.close().await;
    drop(agent);
    let server = format!("/config/apps/http/servers/decloud-{tag}/routes");
    let routes = caddy
        .config()
        .pointer(&format!("/apps/http/servers/decloud-{tag}/routes"))
        .unwrap()
        .clone();
    let lost = routes
        .as_array()
        .unwrap()
        .iter()
        .position(|r| {
            r.pointer("/match/0/host/0")
                .unwrap()
                .as_str()
                .unwrap()
                .starts_with("web-proxy-browser-")
        })
        .unwrap();
    caddy.admin_request("DELETE", &format!("{server}/{lost}"), None);
    caddy.admin_request(
        "POST",
        &server,
        Some(&json!({
            "@id": format!("decloud-{tag}-ghost-ghost.apps.test"),
            "match": [{ "host": ["ghost.apps.test"] }],
            "handle": [{ "handler": "reverse_proxy", "upstreams": [{ "dial": "192.168.123.99:80" }] }],
            "terminal": true,
        })),
    );
    let operator_site = json!({
        "listen": [format!("127.0.0.1:{}", common::caddy::free_port())],
        "routes": [{ "handle": [{ "handler": "static_response", "body": "operator" }] }],
    });
    caddy.admin_request(
        "POST",
        "/config/apps/http/servers/operator-site",
        Some(&operator_site),
    );
    assert_ne!(served(&caddy, &tag), expected);

    let agent = open_agent(config.clone()).await;
    let report = agent.reconcile().await.unwrap();
    let lost_host = expected
        .iter()
        .find(|(h, _)| h.starts_with("web-proxy-browser-"))
        .unwrap()
        .0
        .clone();
    assert_eq!(report.routes_added, vec![lost_host]);
    assert_eq!(report.routes_removed, vec!["ghost.apps.test".to_owned()]);
    assert_eq!(served(&caddy, &tag), expected);
    assert_eq!(
        caddy.config().pointer("/apps/http/servers/operator-site"),
        Some(&operator_site)
    );

    // Deleted VMs take their routes along; with none left the server and policy go too.
    for template in SEED_WEB_TEMPLATES {
        agent.delete_vm(template).await.unwrap();
    }
    let config_after = caddy.config();
    assert!(
        config_after
            .pointer(&format!("/apps/http/servers/decloud-{tag}"))
            .is_none(),
        "{config_after}"
    );
    assert_eq!(policy(&caddy, &tag), None);
    assert_eq!(
        config_after.pointer("/apps/http/servers/operator-site"),
        Some(&operator_site)
    );
}

/// Runs one `SetIngress` command through the agent's command path: its acknowledgement.
async fn set_ingress(agent: &Agent, id: &str, vm: &str, routes: &[(&str, u16)]) -> AckOutcome {
    let ack = agent
        .execute(Command {
            id: id.into(),
            action: CommandAction::SetIngress {
                vm_id: vm.into(),
                routes: routes
                    .iter()
                    .map(|(host, guest)| IngressRoute {
                        host: (*host).into(),
                        guest: *guest,
                    })
                    .collect(),
            },
        })
        .await
        .unwrap();
    ack.outcome
}

#[tokio::test]
async fn set_ingress_changes_a_vms_routes_in_every_state_and_refuses_with_nothing_changed() {
    let caddy = Caddy::start();
    let dir = data_dir();
    let mut config = test_driver_config(dir.path(), "ingress-set");
    config.ingress = Some(ingress_config(&caddy));
    let agent = open_agent(config).await;
    let tag = node_tag(&agent.identity().node_id);
    agent.reconcile().await.unwrap();
    agent
        .create_vm(web_spec("set-a", &[("a-80.apps.test", 80)]))
        .await
        .unwrap();
    agent
        .create_vm(web_spec("set-b", &[("b-80.apps.test", 80)]))
        .await
        .unwrap();
    let (a80, a8080, b80) = (
        upstream(&agent, "set-a", 80).await,
        upstream(&agent, "set-a", 8080).await,
        upstream(&agent, "set-b", 80).await,
    );

    // A running VM: a renamed route and a new port are served at once, and kept in its spec.
    let outcome = set_ingress(
        &agent,
        "ingress-1",
        "set-a",
        &[("myapp.apps.test", 80), ("a-8080.apps.test", 8080)],
    )
    .await;
    assert!(
        matches!(outcome, AckOutcome::Done { vm: Some(ref r), .. } if r.state == VmState::Running),
        "{outcome:?}"
    );
    let mut want = vec![
        ("a-8080.apps.test".to_owned(), a8080.clone()),
        ("b-80.apps.test".to_owned(), b80.clone()),
        ("myapp.apps.test".to_owned(), a80.clone()),
    ];
    assert_eq!(served(&caddy, &tag), want);
    let record = agent.store().vm("set-a").await.unwrap().unwrap();
    assert_eq!(record.spec.ingress.len(), 2);

    // Refused, nothing changed: another VM's host, a host twice, a bad host, port 0, no VM.
    let before = caddy.config();
    for (n, vm, routes, reason) in [
        (
            2,
            "set-a",
            vec![("b-80.apps.test", 80)],
            "already served for vm set-b",
        ),
        (
            3,
            "set-a",
            vec![("x.apps.test", 80), ("x.apps.test", 81)],
            "named twice",
        ),
        (
            4,
            "set-a",
            vec![("X.apps.test", 80)],
            "not a lowercase DNS name",
        ),
        (5, "set-a", vec![("x.apps.test", 0)], "guest port 0"),
        (6, "set-z", vec![("x.apps.test", 80)], "no vm with id"),
    ] {
        let outcome = set_ingress(&agent, &format!("ingress-{n}"), vm, &routes).await;
        assert!(
            matches!(&outcome, AckOutcome::Failed { error } if error.contains(reason)),
            "{n}: {outcome:?}"
        );
    }
    assert_eq!(caddy.config(), before);
    assert_eq!(
        agent
            .store()
            .vm("set-a")
            .await
            .unwrap()
            .unwrap()
            .spec
            .ingress,
        record.spec.ingress
    );

    // A stopped VM takes its new routes along when it starts again.
    agent.stop_vm("set-a").await.unwrap();
    let outcome = set_ingress(&agent, "ingress-7", "set-a", &[("later.apps.test", 80)]).await;
    assert!(matches!(outcome, AckOutcome::Done { .. }), "{outcome:?}");
    assert_eq!(
        served(&caddy, &tag),
        vec![("b-80.apps.test".to_owned(), b80.clone())]
    );
    agent.start_vm("set-a").await.unwrap();
    want = vec![
        ("b-80.apps.test".to_owned(), b80),
        (
            "later.apps.test".to_owned(),
            upstream(&agent, "set-a", 80).await,
        ),
    ];
    assert_eq!(served(&caddy, &tag), want);

    // No routes at all; a repeated command id is not run again.
    let outcome = set_ingress(&agent, "ingress-8", "set-a", &[]).await;
    assert!(matches!(outcome, AckOutcome::Done { .. }), "{outcome:?}");
    assert_eq!(served(&caddy, &tag), want[..1].to_vec());
    set_ingress(&agent, "ingress-7", "set-a", &[("later.apps.test", 80)]).await;
    assert_eq!(served(&caddy, &tag), want[..1].to_vec());
    for vm in ["set-a", "set-b"] {
        agent.delete_vm(vm).await.unwrap();
    }
    assert!(served(&caddy, &tag).is_empty());
}

#[tokio::test]
async fn a_second_agent_on_the_same_caddy_keeps_its_own_routes() {
    let caddy = Caddy::start();
    let (dir_a, dir_b) = (data_dir(), data_dir());
    let mut config_a = test_driver_config(dir_a.path(), "ingress-two-a");
    config_a.ingress = Some(ingress_config(&caddy));
    let mut config_b = test_driver_config(dir_b.path(), "ingress-two-b");
    let mut ingress_b = ingress_config(&caddy);
    ingress_b.listen = format!("127.0.0.1:{}", common::caddy::free_port());
    config_b.ingress = Some(ingress_b);
    let a = open_agent(config_a).await;
    let b = open_agent(config_b).await;
    let (tag_a, tag_b) = (
        node_tag(&a.identity().node_id),
        node_tag(&b.identity().node_id),
    );
    a.reconcile().await.unwrap();
    b.reconcile().await.unwrap();
    a.create_vm(web_spec("two-a", &[("two-a.apps.test", 80)]))
        .await
        .unwrap();
    b.create_vm(web_spec("two-b", &[("two-b.apps.test", 8080)]))
        .await
        .unwrap();
    assert_eq!(
        served(&caddy, &tag_a),
        vec![("two-a.apps.test".into(), upstream(&a, "two-a", 80).await)]
    );
    assert_eq!(
        served(&caddy, &tag_b),
        vec![("two-b.apps.test".into(), upstream(&b, "two-b", 8080).await)]
    );
    // Reconciling one node leaves the other's routes alone.
    let report = a.sync_ingress().await.unwrap();
    assert!(
        report.added.is_empty() && report.removed.is_empty(),
        "{report:?}"
    );
    a.delete_vm("two-a").await.unwrap();
    assert!(served(&caddy, &tag_a).is_empty());
    assert_eq!(served(&caddy, &tag_b).len(), 1);
    b.delete_vm("two-b").await.unwrap();
}

#[test]
fn an_ingress_config_with_a_bad_address_is_refused() {
    let layer: ConfigLayer =
        toml::from_str("[ingress]\nadmin = \"no-port\"\nlisten = \":443\"\n").unwrap();
    let err =
        Config::resolve(Some(layer), ConfigLayer::default(), ConfigLayer::default()).unwrap_err();
    assert!(err.to_string().contains("admin"), "{err}");
    let layer: ConfigLayer = toml::from_str(
        "[ingress]\nadmin = \"127.0.0.1:2019\"\ntls = \"acme\"\nacme_email = \"ops@example.org\"\n",
    )
    .unwrap();
    let config =
        Config::resolve(Some(layer), ConfigLayer::default(), ConfigLayer::default()).unwrap();
    let ingress = config.ingress.unwrap();
    assert_eq!(
        (ingress.tls, ingress.listen.as_str()),
        (IngressTls::Acme, ":443")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_guest_web_page_is_served_over_https_at_its_host_name() {
    require_libvirtd();
    let caddy = Caddy::start();
    let dir = data_dir();
    let machine = "ingress-real";
    let network = "dcingress";
    let node_id = agent_protocol::node_id(agent_protocol::machine_id(machine), OPERATOR);
    let _cleanup = HostCleanup {
        node_id,
        network: network.into(),
        extra_rules: vec![],
    };
    let toml_text = format!(
        "{}\n{}",
        nat_vm_config_toml(
            dir.path(),
            machine,
            None,
            network,
            "192.168.237.0/24",
            "43700-43709",
        ),
        caddy.ingress_toml()
    );
    let layer: ConfigLayer = toml::from_str(&toml_text).unwrap();
    let config =
        Config::resolve(Some(layer), ConfigLayer::default(), ConfigLayer::default()).unwrap();
    let (identity, _) = Identity::load_or_create(&config).unwrap();
    let tag = node_tag(&identity.node_id);
    let agent = Agent::open(config, identity, resources()).await.unwrap();
    agent.reconcile().await.unwrap();

    let value = unique_value();
    let host = "site-80.apps.test";
    let mut spec = test_guest_spec("site", &value);
    spec.ingress = vec![IngressRoute {
        host: host.into(),
        guest: HTTP_PORT,
    }];
    let report = agent.create_vm(spec).await.unwrap();
    assert!(report.forwards.is_empty());
    assert_eq!(
        served(&caddy, &tag),
        vec![(host.to_owned(), format!("192.168.237.2:{HTTP_PORT}"))],
        "sync now: {:?}\ncaddy log:\n{}",
        agent.sync_ingress().await,
        caddy.log()
    );
    wait_for_console(
        &agent.vm_dir("site").join("console.log"),
        &format!("{ADDRESS_MARKER}192.168.237.2"),
        Duration::from_secs(240),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        match caddy.https_get(host, "/") {
            Ok((200, body)) => {
                assert_eq!(body.trim(), value);
                break;
            }
            other => assert!(
                Instant::now() < deadline,
                "no page through the ingress: {other:?}\ncaddy log:\n{}",
                caddy.log()
            ),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Another name is not served: Caddy has no certificate and no route for it.
    assert!(caddy.https_get("other.apps.test", "/").is_err());

    agent.stop_vm("site").await.unwrap();
    assert!(served(&caddy, &tag).is_empty());
    assert!(caddy.https_get(host, "/").is_err());
    agent.delete_vm("site").await.unwrap();
    assert!(
        caddy
            .config()
            .pointer(&format!("/apps/http/servers/decloud-{tag}"))
            .is_none()
    );
}
