//! `hubble watch peers` and `hubble reflect` against fake servers (tonic, 127.0.0.1): the
//! lines printed for each kind of peer change, the files printed from gRPC reflection and
//! their order, and a server without the service: one error line, exit code 2.

use std::net::SocketAddr;
use std::process::{Command, Output};

use hubble_api::peer::peer_server::{Peer, PeerServer};
use hubble_api::peer::{ChangeNotification, ChangeNotificationType, NotifyRequest, Tls};
use prost_types::{FileDescriptorProto, FileDescriptorSet, ServiceDescriptorProto};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

const BIN: &str = env!("CARGO_BIN_EXE_hubble");

type Stream<T> = tokio_stream::Iter<std::vec::IntoIter<Result<T, Status>>>;

/// Announces three changes, then ends the stream.
struct FakePeers;

#[tonic::async_trait]
impl Peer for FakePeers {
    type NotifyStream = Stream<ChangeNotification>;

    async fn notify(
        &self,
        _: Request<NotifyRequest>,
    ) -> Result<Response<Self::NotifyStream>, Status> {
        let change = |t: ChangeNotificationType, name: &str, address: &str, tls: bool| {
            Ok(ChangeNotification {
                name: name.into(),
                address: address.into(),
                r#type: t as i32,
                tls: tls.then(|| Tls {
                    server_name: format!("{name}.default.hubble-grpc.cilium.io"),
                }),
            })
        };
        Ok(Response::new(tokio_stream::iter(vec![
            change(
                ChangeNotificationType::PeerAdded,
                "node-1",
                "10.0.0.1:4244",
                true,
            ),
            change(
                ChangeNotificationType::PeerUpdated,
                "node-2",
                "[fd00::2]:4244",
                false,
            ),
            change(
                ChangeNotificationType::PeerDeleted,
                "node-1",
                "10.0.0.1:4244",
                true,
            ),
        ])))
    }
}

/// Serves `router` on 127.0.0.1 from its own thread.
fn serve(router: tonic::transport::server::Router) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = tokio::net::TcpListener::from_std(listener).unwrap();
            router
                .serve_with_incoming(TcpListenerStream::new(l))
                .await
                .unwrap();
        });
    });
    addr
}

/// A server with health only: no Peer, no reflection.
fn bare() -> tonic::transport::server::Router {
    let (_, health) = tonic_health::server::health_reporter();
    tonic::transport::Server::builder().add_service(health)
}

fn hubble(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("HUBBLE_SERVER")
        .env("HUBBLE_CONFIG", "/nonexistent/hubble-test/config.yaml")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8(b.to_vec()).unwrap()
}

#[test]
fn watch_peers_prints_each_change_as_hubble() {
    let addr = serve(tonic::transport::Server::builder().add_service(PeerServer::new(FakePeers)))
        .to_string();
    let want = "\
PEER_ADDED   10.0.0.1:4244 node-1 (TLS.ServerName: node-1.default.hubble-grpc.cilium.io)
PEER_UPDATED [fd00::2]:4244 node-2
PEER_DELETED 10.0.0.1:4244 node-1 (TLS.ServerName: node-1.default.hubble-grpc.cilium.io)
";
    // Hubble's aliases too: `w` and `peer`.
    for args in [["watch", "peers"], ["w", "peer"]] {
        let o = hubble(&[args[0], args[1], "--server", &addr]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
        assert_eq!(text(&o.stdout), want);
    }
    // Hidden from the overview, as in Hubble; documented on its own.
    assert!(!text(&hubble(&["--help"]).stdout).contains("watch"));
    let help = text(&hubble(&["watch", "peers", "--help"]).stdout);
    assert!(help.contains("Watch for Hubble peers updates"), "{help}");
    assert!(help.contains("--server"), "{help}");

    let addr = serve(bare()).to_string();
    let o = hubble(&["watch", "peers", "--server", &addr]);
    assert_eq!(o.status.code(), Some(2));
    let err = text(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("Error: rpc error: code = Unimplemented"),
        "{err}"
    );
}

/// A file `name` of package `pkg` defining `service`, importing `deps`.
fn file(name: &str, pkg: &str, service: Option<&str>, deps: &[&str]) -> FileDescriptorProto {
    FileDescriptorProto {
        name: Some(name.into()),
        package: Some(pkg.into()),
        dependency: deps.iter().map(|d| d.to_string()).collect(),
        service: service
            .map(|s| ServiceDescriptorProto {
                name: Some(s.into()),
                ..Default::default()
            })
            .into_iter()
            .collect(),
        syntax: Some("proto3".into()),
        ..Default::default()
    }
}

fn reflection(files: Vec<FileDescriptorProto>) -> tonic::transport::server::Router {
    let (_, health) = tonic_health::server::health_reporter();
    let v1alpha = tonic_reflection::server::Builder::configure()
        .register_file_descriptor_set(FileDescriptorSet { file: files })
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .unwrap();
    tonic::transport::Server::builder()
        .add_service(health)
        .add_service(v1alpha)
}

fn names(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["name"].as_str().unwrap().to_string()
        })
        .collect()
}

#[test]
fn reflect_prints_each_file_once_depth_first() {
    // b imports c and d; a imports b and d: each printed once, after what imports it first.
    let addr = serve(reflection(vec![
        file("d.proto", "d", None, &[]),
        file("c.proto", "c", None, &["d.proto"]),
        file("b.proto", "b", Some("B"), &["c.proto", "d.proto"]),
        file("a.proto", "a", Some("A"), &["b.proto", "d.proto"]),
    ]))
    .to_string();
    let o = hubble(&["reflect", "--server", &addr]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    // Services in the order listed (b's file first); health and reflection left out.
    assert_eq!(names(&out), ["b.proto", "c.proto", "d.proto", "a.proto"]);
    assert_eq!(
        out.lines().next().unwrap(),
        r#"{"name":"b.proto","package":"b","dependency":["c.proto","d.proto"],"service":[{"name":"B"}],"syntax":"proto3"}"#
    );

    // An import the server does not know: what came before is printed, then one error
    // (tonic ends the stream with the status; grpc-go answers with an error response).
    let addr = serve(reflection(vec![file(
        "x.proto",
        "x",
        Some("X"),
        &["missing.proto"],
    )]))
    .to_string();
    let o = hubble(&["reflect", "--server", &addr]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(names(&text(&o.stdout)), ["x.proto"]);
    let err = text(&o.stderr);
    assert_eq!(
        err,
        "Error: rpc error: code = NotFound desc = file 'missing.proto' not found\n"
    );

    // No reflection service at all.
    let addr = serve(bare()).to_string();
    let o = hubble(&["reflect", "--server", &addr]);
    assert_eq!(o.status.code(), Some(2));
    let err = text(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("Error: rpc error: code = Unimplemented"),
        "{err}"
    );
}
