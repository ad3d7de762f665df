//! Where flows come from, off the drawing path: a file read on its own thread, or a server
//! followed by a tokio task that reconnects with backoff. Both send batches of flows and
//! status changes through a bounded channel; the UI drains it between frames.

use std::io::Read;
use std::time::Duration;

use hubble::client;
use hubble::cmd::server::ServerOpts;
use hubble::source::{Line, LineReader, parse_line};
use hubble_api::flow::{Flow, FlowFilter};
use hubble_api::observer::{GetFlowsRequest, get_flows_response::ResponseTypes};
use tokio::sync::mpsc;

use crate::app::SourceStatus;

/// Flows per message.
pub const BATCH: usize = 1024;

/// What a source tells the UI.
#[derive(Debug)]
pub enum SourceEvent {
    Flows(Vec<Flow>),
    /// Events the server (or ring) lost.
    Lost(u64),
    /// An input line that is not a flow.
    Invalid(String),
    Status(SourceStatus),
}

/// Reads JSON lines (what `hubble observe -o json` writes) and sends the flows in batches.
/// Ends at the end of the input, or when the UI is gone.
pub fn read_file(name: String, input: Box<dyn Read + Send>, tx: mpsc::Sender<SourceEvent>) {
    let send = |ev| tx.blocking_send(ev).is_ok();
    if !send(SourceEvent::Status(SourceStatus::ReadingFile(name.clone()))) {
        return;
    }
    let mut reader = LineReader::new(input);
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let line = match reader.next_line() {
            Ok(Some(l)) => l,
            Ok(None) => break,
            Err(e) => {
                send(SourceEvent::Flows(std::mem::take(&mut batch)));
                send(SourceEvent::Status(SourceStatus::Failed(format!(
                    "reading {name}: {e}"
                ))));
                return;
            }
        };
        let parsed = match line {
            Line::Data(n, bytes) => parse_line(n, bytes),
            Line::TooLong(n) => Err(hubble::source::LineError::TooLong(n)),
        };
        match parsed {
            Ok(Some(resp)) => match resp.response_types {
                Some(ResponseTypes::Flow(f)) => {
                    batch.push(f);
                    if batch.len() == BATCH
                        && !send(SourceEvent::Flows(std::mem::replace(
                            &mut batch,
                            Vec::with_capacity(BATCH),
                        )))
                    {
                        return;
                    }
                }
                Some(ResponseTypes::LostEvents(l))
                    if !send(SourceEvent::Lost(l.num_events_lost)) =>
                {
                    return;
                }
                _ => {}
            },
            Ok(None) => {}
            Err(e) => {
                if !send(SourceEvent::Invalid(format!("{name}: {e}"))) {
                    return;
                }
            }
        }
    }
    if !batch.is_empty() {
        send(SourceEvent::Flows(batch));
    }
    send(SourceEvent::Status(SourceStatus::FileDone(name)));
}

/// How the server is followed.
#[derive(Debug, Clone)]
pub struct ServerSource {
    /// `--server`, `--timeout` and the TLS flags, as the hubble CLI reads them.
    pub opts: ServerOpts,
    /// Flows asked for when first connecting (the history to fill), before following.
    pub backfill: u64,
    pub whitelist: Vec<FlowFilter>,
    pub blacklist: Vec<FlowFilter>,
}

/// Backoff between connection attempts: 1 s, doubling, at most 30 s.
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_secs((1u64 << attempt.saturating_sub(1).min(5)).min(30))
}

/// Follows the server until the UI goes away: connects, streams, and on any error says so,
/// waits the backoff and reconnects, asking only for flows newer than the last one received.
pub async fn follow_server(src: ServerSource, tx: mpsc::Sender<SourceEvent>) {
    let mut attempt: u32 = 0;
    let mut since: Option<hubble_api::pbjson_types::Timestamp> = None;
    loop {
        attempt += 1;
        if tx
            .send(SourceEvent::Status(SourceStatus::Connecting {
                server: src.opts.server.clone(),
                attempt,
            }))
            .await
            .is_err()
        {
            return;
        }
        let err = match stream_once(&src, &tx, &mut since, &mut attempt).await {
            Ok(()) => "the server ended the stream".to_string(),
            Err(e) => e,
        };
        if tx.is_closed() {
            return;
        }
        let wait = backoff(attempt);
        let _ = tx
            .send(SourceEvent::Status(SourceStatus::Retrying {
                error: err,
                in_secs: wait.as_secs(),
            }))
            .await;
        tokio::time::sleep(wait).await;
    }
}

async fn stream_once(
    src: &ServerSource,
    tx: &mpsc::Sender<SourceEvent>,
    since: &mut Option<hubble_api::pbjson_types::Timestamp>,
    attempt: &mut u32,
) -> Result<(), String> {
    let ch = src.opts.connect().await.map_err(|e| e.to_string())?;
    let req = GetFlowsRequest {
        number: if since.is_some() { 0 } else { src.backfill },
        follow: true,
        since: *since,
        whitelist: src.whitelist.clone(),
        blacklist: src.blacklist.clone(),
        ..GetFlowsRequest::default()
    };
    let mut stream = client::get_flows(ch, req)
        .await
        .map_err(|e| e.to_string())?;
    *attempt = 0;
    let _ = tx
        .send(SourceEvent::Status(SourceStatus::Connected {
            server: src.opts.server.clone(),
        }))
        .await;
    let last = *since;
    loop {
        // Gather what has already arrived into one batch; wait only when nothing is ready.
        let mut batch = Vec::new();
        let mut item = stream.next().await;
        loop {
            match item {
                None => {
                    flush(tx, &mut batch).await?;
                    return Ok(());
                }
                Some(Err(e)) => {
                    flush(tx, &mut batch).await?;
                    return Err(e.to_string());
                }
                Some(Ok(resp)) => match resp.response_types {
                    Some(ResponseTypes::Flow(f)) => {
                        // After a reconnect, `since` repeats flows of the last timestamp.
                        if let (Some(l), Some(t)) = (last, f.time)
                            && (t.seconds, t.nanos) <= (l.seconds, l.nanos)
                        {
                        } else {
                            if let Some(t) = f.time {
                                *since = Some(t);
                            }
                            batch.push(f);
                        }
                    }
                    Some(ResponseTypes::LostEvents(l)) => {
                        tx.send(SourceEvent::Lost(l.num_events_lost))
                            .await
                            .map_err(|_| "closed".to_string())?;
                    }
                    _ => {}
                },
            }
            if batch.len() >= BATCH {
                break;
            }
            item = match stream.try_next() {
                std::task::Poll::Ready(i) => i,
                std::task::Poll::Pending => break,
            };
        }
        flush(tx, &mut batch).await?;
    }
}

async fn flush(tx: &mpsc::Sender<SourceEvent>, batch: &mut Vec<Flow>) -> Result<(), String> {
    if batch.is_empty() {
        return Ok(());
    }
    tx.send(SourceEvent::Flows(std::mem::take(batch)))
        .await
        .map_err(|_| "the UI is gone".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(4), Duration::from_secs(8));
        assert_eq!(backoff(20), Duration::from_secs(30));
    }

    #[test]
    fn file_source_sends_flows_invalid_lines_and_end() {
        let data = format!(
            "{}\nnot json\n{}\n",
            std::fs::read_to_string(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../fixtures/flows/demo.jsonl"
            ))
            .unwrap()
            .lines()
            .next()
            .unwrap(),
            r#"{"lost_events":{"source":"HUBBLE_RING_BUFFER","num_events_lost":"3"}}"#
        );
        let (tx, mut rx) = mpsc::channel(16);
        read_file(
            "t".into(),
            Box::new(std::io::Cursor::new(data.into_bytes())),
            tx,
        );
        let mut evs = Vec::new();
        while let Ok(e) = rx.try_recv() {
            evs.push(format!("{e:?}").chars().take(30).collect::<String>());
        }
        assert!(evs[0].starts_with("Status(ReadingFile"), "{evs:?}");
        assert!(evs[1].starts_with("Invalid(\"t: line 2"), "{evs:?}");
        assert!(evs[2].starts_with("Lost(3)"), "{evs:?}");
        assert!(evs[3].starts_with("Flows(["), "{evs:?}");
        assert!(evs[4].starts_with("Status(FileDone"), "{evs:?}");
    }
}
