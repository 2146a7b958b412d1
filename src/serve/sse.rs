//! `GET /events`: every cell's events log as server-sent events, starting from now (or
//! from `Last-Event-ID` / `?since=`). One tailer polls the logs for appended lines, as
//! `pas events --follow` does, and hands each event to every open stream.
//!
//! Each message is `id: <time>/<cell>/<seq>`, `event: <kind>`, `data: <the event as
//! `pas events --json` prints it>`. Ids order events by time, then cell, then position,
//! so a reconnecting client is given exactly the events after the last one it saw.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use serde_json::Value;
use tokio::sync::{broadcast, watch};

use super::reply::{blocking, ApiError, Reply};
use super::App;
use crate::clock;
use crate::error::{Error, Result};
use crate::store::events::{self, Event};
use crate::store::{LogFile, Store};

/// How often the logs are looked at for new lines.
const POLL: Duration = Duration::from_millis(200);

/// Events kept for streams that read slower than events come (older ones are skipped).
const BACKLOG: usize = 4096;

/// One event, ready to send.
#[derive(Debug, Clone)]
pub struct Item {
    /// Where it sorts: time, cell, position in the cell's log.
    pub key: (String, String, u64),
    /// Its kind (`agent.dead`).
    pub kind: String,
    /// The event as `pas events --json` prints it, with its cell.
    pub data: Value,
}

impl Item {
    fn new(cell: &str, e: &Event) -> Item {
        let mut data = serde_json::to_value(e).unwrap_or(Value::Null);
        if let Value::Object(m) = &mut data {
            m.insert("cell".into(), Value::from(cell));
        }
        Item {
            key: (e.time.clone(), cell.to_string(), e.seq),
            kind: e.kind.clone(),
            data,
        }
    }

    fn id(&self) -> String {
        format!("{}/{}/{}", self.key.0, self.key.1, self.key.2)
    }

    fn to_sse(&self) -> SseEvent {
        SseEvent::default()
            .id(self.id())
            .event(&self.kind)
            .data(self.data.to_string())
    }
}

/// Hands events from the tailer to the streams.
pub struct Hub {
    tx: broadcast::Sender<Arc<Item>>,
}

impl Hub {
    /// A hub no stream listens to yet.
    pub fn new() -> Hub {
        Hub {
            tx: broadcast::channel(BACKLOG).0,
        }
    }

    /// Events appended from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Item>> {
        self.tx.subscribe()
    }
}

/// The routes of this file.
pub fn routes() -> Router<Arc<App>> {
    Router::new().route("/events", get(stream))
}

/// Polls every cell's events log and publishes what was appended, until told to stop.
pub async fn tail(app: Arc<App>, mut stop: watch::Receiver<bool>) {
    // Starting from now: the current ends of the logs.
    let store = app.store();
    let mut offsets: BTreeMap<String, u64> =
        blocking(move || ends(&store)).await.unwrap_or_default();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = stop.changed() => return,
        }
        let store = app.store();
        let known = offsets.clone();
        let Ok((items, moved)) = blocking(move || appended(&store, known)).await else {
            continue;
        };
        offsets = moved;
        for item in items {
            // No stream listening is not an error.
            let _ = app.events.tx.send(Arc::new(item));
        }
    }
}

/// The current length of every cell's events log.
fn ends(store: &dyn Store) -> Result<BTreeMap<String, u64>> {
    let mut out = BTreeMap::new();
    for cell in store.cell_ids()? {
        let bytes = store
            .read_log(&cell, LogFile::Events, 0)
            .unwrap_or_default();
        let (_, torn) = events::split_lines(&bytes);
        out.insert(cell, (bytes.len() - torn) as u64);
    }
    Ok(out)
}

/// The events appended since `offsets` (a new cell from its start), and the new offsets.
fn appended(
    store: &dyn Store,
    mut offsets: BTreeMap<String, u64>,
) -> Result<(Vec<Item>, BTreeMap<String, u64>)> {
    let mut items = Vec::new();
    let cells = store.cell_ids()?;
    offsets.retain(|c, _| cells.contains(c));
    for cell in cells {
        let offset = offsets.get(&cell).copied().unwrap_or(0);
        let Ok((new, next)) = events::read_new(store, &cell, offset) else {
            continue;
        };
        // A log that shrank was replaced: read it again from its start next time.
        let next = if next < offset { 0 } else { next };
        items.extend(new.iter().map(|e| Item::new(&cell, e)));
        offsets.insert(cell, next);
    }
    items.sort_by(|a, b| a.key.cmp(&b.key));
    Ok((items, offsets))
}

/// Events already in the logs after `from` (time, cell, position), in order.
fn replay(
    store: &dyn Store,
    from: &(String, String, u64),
    only: Option<&str>,
) -> Result<Vec<Item>> {
    let mut items = Vec::new();
    for cell in store.cell_ids()? {
        if only.is_some_and(|o| o != cell) {
            continue;
        }
        let bytes = store.read_log(&cell, LogFile::Events, 0)?;
        items.extend(
            events::parse_all(&bytes)
                .iter()
                .map(|e| Item::new(&cell, e))
                .filter(|i| &i.key > from),
        );
    }
    items.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(items)
}

/// Where a stream starts: after the `Last-Event-ID`, at `?since=` (a duration ago or an
/// RFC 3339 time), or now (`None`).
fn start_of(
    headers: &HeaderMap,
    since: Option<&str>,
) -> std::result::Result<Option<(String, String, u64)>, Error> {
    if let Some(last) = headers.get("last-event-id").and_then(|v| v.to_str().ok()) {
        let mut parts = last.rsplitn(3, '/');
        let (Some(seq), Some(cell), Some(time)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(Error::usage(format!(
                "Last-Event-ID {last:?} is not an id this server sent"
            ))
            .hint("ids look like TIME/CELL/SEQ; reconnect without it to start from now"));
        };
        let seq = seq.parse().map_err(|_| {
            Error::usage(format!("Last-Event-ID {last:?} does not end with a number"))
        })?;
        return Ok(Some((time.to_string(), cell.to_string(), seq)));
    }
    match since {
        None => Ok(None),
        Some(text) => {
            let at = crate::cli::parse_since(text, clock::now())
                .map_err(|e| Error::usage(e.message.replace("--since", "since")))?;
            // Just before `at`: every event at or after it sorts above this key.
            Ok(Some((
                clock::stamp(at - chrono::Duration::microseconds(1)),
                String::new(),
                0,
            )))
        }
    }
}

/// `GET /events[?since=DURATION|TIME][&cell=CELL]`.
async fn stream(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(query): Query<BTreeMap<String, String>>,
) -> Reply {
    let only = query.get("cell").cloned();
    if let Some(cell) = &only {
        crate::store::check_id(crate::store::IdKind::Cell, cell).map_err(ApiError::from)?;
    }
    let start =
        start_of(&headers, query.get("since").map(String::as_str)).map_err(ApiError::from)?;
    // Subscribed before the replay is read, so nothing falls between the two.
    let live = app.events.subscribe();
    let past = match start {
        None => Vec::new(),
        Some(from) => {
            let store = app.store();
            let only = only.clone();
            blocking(move || replay(&store, &from, only.as_deref())).await?
        }
    };
    let mut seen: BTreeMap<String, u64> = BTreeMap::new();
    for item in &past {
        seen.insert(item.key.1.clone(), item.key.2);
    }
    let stop = app.stop.clone();
    let state = (past.into_iter(), live, seen, only, stop);
    let events = futures_util::stream::unfold(
        state,
        |(mut past, mut live, seen, only, mut stop)| async move {
            if let Some(item) = past.next() {
                let sse = item.to_sse();
                return Some((Ok::<_, Infallible>(sse), (past, live, seen, only, stop)));
            }
            loop {
                let item = tokio::select! {
                    received = live.recv() => received,
                    _ = stop.changed() => return None,
                };
                match item {
                    Ok(item) => {
                        let replayed = seen.get(&item.key.1).is_some_and(|s| item.key.2 <= *s);
                        let other_cell = only.as_ref().is_some_and(|o| *o != item.key.1);
                        if replayed || other_cell {
                            continue;
                        }
                        let sse = item.to_sse();
                        return Some((Ok(sse), (past, live, seen, only, stop)));
                    }
                    // A stream that fell behind skips what it missed (the ids show the gap).
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        },
    );
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}
