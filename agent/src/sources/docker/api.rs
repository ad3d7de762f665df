//! The few Docker Engine API calls the source makes (API version [`VERSION`]), HTTP/1.1
//! over the daemon's unix socket with hyper's connection-level client, and the fields of
//! their JSON answers it reads (names as in moby's `api/swagger.yaml`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde::Deserialize;

/// The API version of every path (dockerd 20.10 speaks 1.41).
pub const VERSION: &str = "v1.41";
/// The largest answer read (a listing or an inspect).
pub const MAX_RESPONSE: usize = 16 << 20;
/// The longest event line kept.
pub const MAX_EVENT_LINE: usize = 1 << 20;

/// `GET /containers/json`: one running container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Summary {
    pub id: String,
    pub names: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub state: String,
}

/// `GET /containers/{id}/json`: what the source reads of a container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Inspect {
    pub id: String,
    /// With a leading `/`.
    pub name: String,
    pub state: State,
    pub config: Config,
    pub host_config: HostConfig,
    pub network_settings: NetworkSettings,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct State {
    pub running: bool,
    pub pid: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Config {
    /// `null` for a container without labels.
    pub labels: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct HostConfig {
    /// `default`, `bridge`, `host`, `none`, `container:<id>` or a network's name.
    pub network_mode: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct NetworkSettings {
    pub networks: Option<BTreeMap<String, Network>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Network {
    #[serde(rename = "IPAddress")]
    pub ip_address: String,
    #[serde(rename = "GlobalIPv6Address")]
    pub global_ipv6_address: String,
}

/// `GET /events`: one event (the deprecated lower-case `status`/`id`/`from` are ignored).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Event {
    #[serde(rename = "Type")]
    pub kind: String,
    #[serde(rename = "Action")]
    pub action: String,
    #[serde(rename = "Actor")]
    pub actor: Actor,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Actor {
    #[serde(rename = "ID")]
    pub id: String,
}

/// The path of the event stream of containers.
pub fn events_path() -> String {
    // filters={"type":["container"]}, percent-encoded.
    format!("/{VERSION}/events?filters=%7B%22type%22%3A%5B%22container%22%5D%7D")
}

/// Complete lines of `buf` (without the newline), leaving the rest in it; a line longer
/// than [`MAX_EVENT_LINE`] is an error.
pub fn take_lines(buf: &mut BytesMut) -> Result<Vec<Bytes>, String> {
    let mut out = Vec::new();
    while let Some(i) = memchr::memchr(b'\n', buf) {
        let line = buf.split_to(i + 1).freeze();
        let line = line.slice(..i);
        if !line.iter().all(u8::is_ascii_whitespace) {
            out.push(line);
        }
    }
    if buf.len() > MAX_EVENT_LINE {
        return Err(format!("an event longer than {MAX_EVENT_LINE} bytes"));
    }
    Ok(out)
}

/// The Engine API at a unix socket; each call is a connection of its own.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
    timeout: Duration,
}

impl Client {
    /// A client of the socket at `path` whose calls time out after `timeout`; the socket
    /// must be there.
    pub fn new(path: &Path, timeout: Duration) -> Result<Client, String> {
        if !path.exists() {
            return Err(format!("no socket at {}", path.display()));
        }
        Ok(Client {
            socket: path.to_path_buf(),
            timeout,
        })
    }

    /// Sends `GET path` and returns the answer's head and body once the head came.
    async fn get(&self, path: &str) -> Result<hyper::Response<Incoming>, String> {
        let shown = self.socket.display();
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|e| format!("connecting to {shown}: {e}"))?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("connecting to {shown}: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = hyper::Request::get(path)
            .header(hyper::header::HOST, "docker")
            .body(Empty::<Bytes>::new())
            .map_err(|e| format!("GET {path}: {e}"))?;
        let resp = send
            .send_request(req)
            .await
            .map_err(|e| format!("GET {path}: {e}"))?;
        Ok(resp)
    }

    /// The status and body of `GET path`, the body bounded to [`MAX_RESPONSE`], all within
    /// the call's timeout.
    async fn get_body(&self, path: &str) -> Result<(hyper::StatusCode, BytesMut), String> {
        let call = async {
            let resp = self.get(path).await?;
            let status = resp.status();
            let mut body = resp.into_body();
            let mut buf = BytesMut::new();
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| format!("GET {path}: {e}"))?;
                if let Ok(data) = frame.into_data() {
                    if buf.len() + data.len() > MAX_RESPONSE {
                        return Err(format!("GET {path}: answer over {MAX_RESPONSE} bytes"));
                    }
                    buf.extend_from_slice(&data);
                }
            }
            Ok((status, buf))
        };
        tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| format!("GET {path}: timed out"))?
    }

    /// The JSON of a successful answer to `GET path`; `None` for 404 (no such object).
    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<Option<T>, String> {
        let (status, body) = self.get_body(path).await?;
        if status == hyper::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(format!("GET {path}: {status}: {}", error_message(&body)));
        }
        serde_json::from_slice(&body)
            .map(Some)
            .map_err(|e| format!("GET {path}: {e}"))
    }

    /// The running containers.
    pub async fn containers(&self) -> Result<Vec<Summary>, String> {
        let path = format!("/{VERSION}/containers/json");
        self.get_json(&path)
            .await?
            .ok_or_else(|| format!("GET {path}: 404 Not Found"))
    }

    /// One container in full; `None` when it is gone.
    pub async fn inspect(&self, id: &str) -> Result<Option<Inspect>, String> {
        self.get_json(&format!("/{VERSION}/containers/{id}/json"))
            .await
    }

    /// The container event stream (its body), once dockerd answered.
    pub async fn events(&self) -> Result<Incoming, String> {
        let path = events_path();
        let resp = tokio::time::timeout(self.timeout, self.get(&path))
            .await
            .map_err(|_| format!("GET {path}: timed out"))??;
        if !resp.status().is_success() {
            return Err(format!("GET {path}: {}", resp.status()));
        }
        Ok(resp.into_body())
    }
}

/// The `message` of an Engine API error body, or the body itself.
fn error_message(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Error {
        message: String,
    }
    match serde_json::from_slice::<Error>(body) {
        Ok(e) => e.message,
        Err(_) => String::from_utf8_lossy(body).trim().to_string(),
    }
}
