use super::*;

/// `GET /containers/json` as dockerd 20.10 answers (API 1.41; fields of moby's swagger
/// ContainerSummary), trimmed to two containers.
const LIST: &str = r#"[
  {"Id": "4f08fa526ab11b59bf6924646e8aeb1d9645064419fec2770285c61443b0695c",
   "Names": ["/client"], "Image": "hubble-e2e/busybox",
   "ImageID": "sha256:758b6c9ff6d28dd043ddc794751aa4304886ab21b0c3f5459790d8c6ae2d681b",
   "Command": "sleep 3600", "Created": 1796486473, "Ports": [],
   "Labels": {"app": "client"}, "State": "running", "Status": "Up 2 seconds",
   "HostConfig": {"NetworkMode": "testnet"},
   "NetworkSettings": {"Networks": {"testnet": {
     "IPAMConfig": null, "Links": null, "Aliases": null,
     "NetworkID": "bfaf39984be8294ba97dafb0a1fa4e858c443cc205591f6671d653969c21b628",
     "EndpointID": "17499c54923cf608152ed82bd93594d9fe19ecb41a31cf8030f7e743820f9fba",
     "Gateway": "10.250.66.1", "IPAddress": "10.250.66.3", "IPPrefixLen": 24,
     "IPv6Gateway": "", "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0,
     "MacAddress": "02:42:0a:fa:42:03", "DriverOpts": null}}},
   "Mounts": []},
  {"Id": "9c1d", "Names": ["/db"], "Image": "postgres", "Command": "postgres",
   "Created": 1796486400, "Ports": [], "Labels": {}, "State": "running",
   "Status": "Up 1 minute", "HostConfig": {"NetworkMode": "host"},
   "NetworkSettings": {"Networks": {"host": {"IPAddress": ""}}}, "Mounts": []}
]"#;

/// `GET /containers/{id}/json` of a compose service's container (fields of moby's
/// swagger ContainerInspectResponse; most left out).
const INSPECT: &str = r#"{
  "Id": "780be223a0034d87a41aa498cf0f203993748db1cf2df2e1d5c7b6a5550982de",
  "Created": "2026-12-05T16:01:12.5Z", "Path": "httpd", "Args": ["-f", "-p", "8080"],
  "State": {"Status": "running", "Running": true, "Paused": false, "Restarting": false,
            "OOMKilled": false, "Dead": false, "Pid": 16689, "ExitCode": 0, "Error": "",
            "StartedAt": "2026-12-05T16:01:13.040462245Z",
            "FinishedAt": "0001-01-01T00:00:00Z"},
  "Image": "sha256:758b", "Name": "/shop-web-1", "RestartCount": 0,
  "HostConfig": {"NetworkMode": "shop_default", "Privileged": false},
  "Config": {"Hostname": "780be223a003", "Image": "hubble-e2e/busybox",
             "Labels": {"app": "web",
                        "com.docker.compose.project": "shop",
                        "com.docker.compose.service": "web",
                        "com.docker.compose.config-hash": "0123abcd",
                        "com.docker.compose.container-number": "1",
                        "com.docker.compose.oneoff": "False"}},
  "NetworkSettings": {"Bridge": "", "SandboxID": "a017e27c37fa",
    "SandboxKey": "/var/run/docker/netns/a017e27c37fa",
    "Networks": {"shop_default": {"NetworkID": "bfaf", "Gateway": "10.250.66.1",
      "IPAddress": "10.250.66.2", "IPPrefixLen": 24, "GlobalIPv6Address": "fd00::2",
      "MacAddress": "02:42:0a:fa:42:02"}}}
}"#;

fn inspect() -> api::Inspect {
    serde_json::from_str(INSPECT).unwrap()
}

#[test]
fn the_listing_gives_ids_names_and_labels() {
    let l: Vec<api::Summary> = serde_json::from_str(LIST).unwrap();
    assert_eq!(l.len(), 2);
    assert_eq!(
        l[0].id,
        "4f08fa526ab11b59bf6924646e8aeb1d9645064419fec2770285c61443b0695c"
    );
    assert_eq!(l[0].names, ["/client"]);
    assert_eq!(l[0].labels.get("app").map(String::as_str), Some("client"));
    assert_eq!(l[0].state, "running");
    assert!(l[1].labels.is_empty());
}

#[test]
fn inspect_gives_pid_labels_network_mode_and_addresses() {
    let i = inspect();
    assert_eq!(i.name, "/shop-web-1");
    assert!(i.state.running);
    assert_eq!(i.state.pid, 16689);
    assert_eq!(i.host_config.network_mode, "shop_default");
    let labels = i.config.labels.as_ref().unwrap();
    assert_eq!(labels.get("app").map(String::as_str), Some("web"));
    let nets = i.network_settings.networks.as_ref().unwrap();
    assert_eq!(nets["shop_default"].ip_address, "10.250.66.2");
    assert_eq!(nets["shop_default"].global_ipv6_address, "fd00::2");
    // Labels may be null.
    let bare: api::Inspect = serde_json::from_str(
        r#"{"Id":"x","Name":"/x","State":{"Running":true,"Pid":7},"Config":{"Labels":null},
            "HostConfig":{"NetworkMode":"default"},"NetworkSettings":{"Networks":null}}"#,
    )
    .unwrap();
    assert_eq!(bare.config.labels, None);
    assert_eq!(bare.state.pid, 7);
}

#[test]
fn a_compose_container_is_in_its_project_with_the_service_as_workload() {
    let c = candidate(&inspect()).unwrap().unwrap();
    assert_eq!(
        c.key,
        "docker:780be223a0034d87a41aa498cf0f203993748db1cf2df2e1d5c7b6a5550982de"
    );
    assert_eq!(c.name, "shop-web-1");
    assert_eq!(c.namespace, "shop");
    assert_eq!(
        c.workload,
        Some(("DockerComposeService".to_string(), "web".to_string()))
    );
    // Compose's bookkeeping labels are left out, its project and service kept.
    assert_eq!(
        c.labels,
        [
            "container:app=web",
            "container:com.docker.compose.project=shop",
            "container:com.docker.compose.service=web",
        ]
    );
    assert_eq!(c.pid, 16689);
    let ep = endpoint(
        &c,
        "veth2b64095".into(),
        vec!["10.250.66.2".parse().unwrap()],
    );
    assert_eq!(ep.pod_name, "shop-web-1");
    assert_eq!(ep.namespace, "shop");
    assert_eq!(ep.ifname, "veth2b64095");
    assert!(ep.attach);
    assert!(ep.l7.iter().all(|v| v.port == 53 && !v.ingress));
}

#[test]
fn a_plain_container_is_in_the_docker_namespace_without_workload() {
    let mut i = inspect();
    i.config.labels = Some(BTreeMap::from([("app".to_string(), "web".to_string())]));
    let c = candidate(&i).unwrap().unwrap();
    assert_eq!(c.namespace, "docker");
    assert_eq!(c.workload, None);
    assert_eq!(c.labels, ["container:app=web"]);
    i.config.labels = None;
    assert!(candidate(&i).unwrap().unwrap().labels.is_empty());
}

#[test]
fn very_long_label_values_are_left_out() {
    let labels = BTreeMap::from([
        ("big".to_string(), "x".repeat(MAX_LABEL_VALUE + 1)),
        ("ok".to_string(), "x".repeat(MAX_LABEL_VALUE)),
    ]);
    let l = endpoint_labels(&labels);
    assert_eq!(l.len(), 1);
    assert!(l[0].starts_with("container:ok="));
}

#[test]
fn host_network_and_shared_network_containers_are_skipped_with_a_reason() {
    let mut i = inspect();
    i.host_config.network_mode = "host".into();
    assert_eq!(candidate(&i), Err("uses the host network".to_string()));
    i.host_config.network_mode = "container:abc".into();
    assert_eq!(
        candidate(&i),
        Err("shares the network of container abc".to_string())
    );
    i.host_config.network_mode = "none".into();
    assert!(candidate(&i).is_err());
    // Not running: nothing to say.
    i.state.running = false;
    assert_eq!(candidate(&i), Ok(None));
}

#[test]
fn container_start_die_and_destroy_events_resync() {
    // `GET /events` lines as dockerd 20.10 writes them (moby's swagger EventMessage, with
    // the deprecated status/id/from).
    let lines = [
        (
            r#"{"status":"start","id":"4f08","from":"hubble-e2e/busybox","Type":"container","Action":"start","Actor":{"ID":"4f08","Attributes":{"app":"client","image":"hubble-e2e/busybox","name":"client"}},"scope":"local","time":1796486473,"timeNano":1796486473040462245}"#,
            true,
        ),
        (
            r#"{"status":"die","id":"4f08","Type":"container","Action":"die","Actor":{"ID":"4f08","Attributes":{"exitCode":"137"}},"scope":"local","time":1796486480,"timeNano":1796486480000000000}"#,
            true,
        ),
        (
            r#"{"Type":"container","Action":"destroy","Actor":{"ID":"4f08","Attributes":{}},"scope":"local","time":1,"timeNano":1}"#,
            true,
        ),
        (
            r#"{"Type":"container","Action":"exec_start: wget -q -O- http://10.250.66.2:8080/","Actor":{"ID":"4f08","Attributes":{}},"scope":"local","time":1,"timeNano":1}"#,
            false,
        ),
        (
            r#"{"Type":"network","Action":"connect","Actor":{"ID":"bfaf","Attributes":{"container":"4f08"}},"scope":"local","time":1,"timeNano":1}"#,
            false,
        ),
    ];
    for (l, resync) in lines {
        let e: api::Event = serde_json::from_str(l).unwrap();
        assert_eq!(is_resync_event(&e), resync, "{l}");
    }
    let e: api::Event = serde_json::from_str(lines[0].0).unwrap();
    assert_eq!(e.actor.id, "4f08");
}

#[test]
fn the_event_stream_is_cut_into_lines() {
    let mut buf = BytesMut::from(&b"{\"a\":1}\n\n{\"b\""[..]);
    let lines = api::take_lines(&mut buf).unwrap();
    assert_eq!(lines, [bytes::Bytes::from_static(b"{\"a\":1}")]);
    assert_eq!(&buf[..], b"{\"b\"");
    buf.extend_from_slice(b":2}\n");
    assert_eq!(api::take_lines(&mut buf).unwrap().len(), 1);
    assert!(buf.is_empty());
    let mut big = BytesMut::from(&vec![b'x'; api::MAX_EVENT_LINE + 1][..]);
    assert!(api::take_lines(&mut big).is_err());
}

#[test]
fn the_events_path_filters_containers() {
    let p = api::events_path();
    assert!(p.starts_with("/v1.41/events?filters="));
    let q = p.split_once('=').unwrap().1;
    assert_eq!(
        q.replace("%7B", "{")
            .replace("%7D", "}")
            .replace("%22", "\"")
            .replace("%3A", ":")
            .replace("%5B", "[")
            .replace("%5D", "]"),
        r#"{"type":["container"]}"#
    );
}

#[test]
fn the_report_says_containers_and_endpoints() {
    let r = SyncReport {
        containers: 3,
        endpoints: 1,
    };
    assert_eq!(r.to_string(), "3 containers; 1 endpoint");
}

#[test]
fn a_missing_socket_is_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("nope.sock");
    let e = Client::new(&sock, CALL_TIMEOUT).err().unwrap();
    assert_eq!(e, format!("no socket at {}", sock.display()));
}

/// A fake dockerd on a unix socket: answers the list and inspect of one container, refuses
/// an unknown one with 404 and fails another with 500.
#[tokio::test]
async fn the_client_lists_and_inspects_over_http() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("docker.sock");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut req = Vec::new();
                let mut b = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = s.read(&mut b).await.unwrap();
                    if n == 0 {
                        return;
                    }
                    req.extend_from_slice(&b[..n]);
                }
                let line = String::from_utf8_lossy(&req)
                    .lines()
                    .next()
                    .unwrap()
                    .to_string();
                let (status, body) = if line.starts_with("GET /v1.41/containers/json ") {
                    ("200 OK", LIST.to_string())
                } else if line.starts_with("GET /v1.41/containers/4f08/json ") {
                    ("200 OK", INSPECT.to_string())
                } else if line.starts_with("GET /v1.41/containers/boom/json ") {
                    (
                        "500 Internal Server Error",
                        r#"{"message":"boom"}"#.to_string(),
                    )
                } else {
                    (
                        "404 Not Found",
                        r#"{"message":"No such container: gone"}"#.to_string(),
                    )
                };
                let resp = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    let c = Client::new(&path, CALL_TIMEOUT).unwrap();
    assert_eq!(c.containers().await.unwrap().len(), 2);
    assert_eq!(c.inspect("4f08").await.unwrap().unwrap().state.pid, 16689);
    assert_eq!(c.inspect("gone").await.unwrap(), None);
    let e = c.inspect("boom").await.unwrap_err();
    assert!(e.ends_with("500 Internal Server Error: boom"), "{e}");
}
