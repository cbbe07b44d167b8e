//! A mock LLM provider speaking OpenAI Chat Completions, Responses and the model list over plain
//! HTTP/1.1, with faults on demand: statuses, resets, slow first bytes, streams cut or stalled.
//! Written on raw TCP so that faults (a reset mid-chunk, a silent socket) are exact.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How the mock answers one request.
#[derive(Clone, Debug)]
pub enum Reply {
    /// A normal answer: JSON, or SSE when the body says `"stream": true`.
    Ok,
    Status {
        status: u16,
        retry_after: Option<u64>,
        body: String,
    },
    /// Close the connection without answering.
    Reset,
    /// Wait, then answer.
    Delay(Duration, Box<Reply>),
    /// Stream this many events, then end the body cleanly but without the terminator.
    StreamCut { after: usize },
    /// Stream this many events, then drop the socket mid-body.
    StreamAbort { after: usize },
    /// Stream this many events, then go silent with the socket open.
    StreamStall { after: usize },
}

impl Reply {
    pub fn status(status: u16) -> Self {
        Reply::Status {
            status,
            retry_after: None,
            body: json!({"error": {"message": format!("mock status {status}"), "type": "mock"}}).to_string(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

pub struct MockState {
    pub name: String,
    script: Mutex<VecDeque<Reply>>,
    default: Mutex<Reply>,
    requests: Mutex<Vec<Recorded>>,
    models: Vec<String>,
    /// Pause between stream events.
    pub event_gap: Mutex<Duration>,
    pub events: usize,
}

pub struct Mock {
    pub addr: SocketAddr,
    pub state: Arc<MockState>,
}

impl Mock {
    pub async fn start(name: &str, models: &[&str]) -> Mock {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(MockState {
            name: name.to_string(),
            script: Mutex::new(VecDeque::new()),
            default: Mutex::new(Reply::Ok),
            requests: Mutex::new(Vec::new()),
            models: models.iter().map(|m| m.to_string()).collect(),
            event_gap: Mutex::new(Duration::from_millis(5)),
            events: 5,
        });
        let st = state.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                tokio::spawn(serve_conn(sock, st.clone()));
            }
        });
        Mock { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Answers the next requests with these replies, then with the default.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.state.script.lock().extend(replies);
    }

    pub fn set_default(&self, reply: Reply) {
        *self.state.default.lock() = reply;
    }

    pub fn set_event_gap(&self, gap: Duration) {
        *self.state.event_gap.lock() = gap;
    }

    /// Completion requests received (model list fetches excluded).
    pub fn requests(&self) -> Vec<Recorded> {
        self.state
            .requests
            .lock()
            .iter()
            .filter(|r| r.method == "POST")
            .cloned()
            .collect()
    }

    pub fn hits(&self) -> usize {
        self.requests().len()
    }

    pub fn clear(&self) {
        self.state.requests.lock().clear();
    }
}

async fn serve_conn(mut sock: TcpStream, st: Arc<MockState>) {
    let mut buf = Vec::with_capacity(64 * 1024);
    loop {
        let Some(req) = read_request(&mut sock, &mut buf).await else {
            return;
        };
        let is_post = req.method == "POST";
        st.requests.lock().push(req.clone());
        let reply = if is_post {
            st.script
                .lock()
                .pop_front()
                .unwrap_or_else(|| st.default.lock().clone())
        } else {
            Reply::Ok
        };
        if !answer(&mut sock, &st, &req, reply).await {
            return;
        }
    }
}

async fn read_request(sock: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Recorded> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut parsed = httparse::Request::new(&mut headers);
        if let Ok(httparse::Status::Complete(head_len)) = parsed.parse(buf) {
            let headers: Vec<(String, String)> = parsed
                .headers
                .iter()
                .map(|h| (h.name.to_string(), String::from_utf8_lossy(h.value).to_string()))
                .collect();
            let len = headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.parse::<usize>().ok())
                .unwrap_or(0);
            let method = parsed.method.unwrap_or("").to_string();
            let path = parsed.path.unwrap_or("").to_string();
            while buf.len() < head_len + len {
                let mut chunk = [0u8; 65536];
                let n = sock.read(&mut chunk).await.ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let body = buf[head_len..head_len + len].to_vec();
            buf.drain(..head_len + len);
            return Some(Recorded {
                method,
                path,
                headers,
                body,
            });
        }
        let mut chunk = [0u8; 65536];
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn chat_completion(st: &MockState, model: &str) -> Value {
    json!({
        "id": "chatcmpl-mock", "object": "chat.completion", "created": 1, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": format!("hello from {}", st.name)}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}
    })
}

fn response_object(st: &MockState, model: &str) -> Value {
    json!({
        "id": "resp_mock", "object": "response", "created_at": 1, "status": "completed", "model": model,
        "output": [{"type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
                    "content": [{"type": "output_text", "text": format!("hello from {}", st.name), "annotations": []}]}],
        "usage": {"input_tokens": 3, "output_tokens": 3, "total_tokens": 6}
    })
}

/// The SSE events of a stream, terminator last.
fn stream_events(st: &MockState, path: &str, model: &str) -> Vec<String> {
    let mut out = Vec::new();
    if path.ends_with("/responses") {
        let full = response_object(st, model);
        let mut created = full.clone();
        created["status"] = json!("in_progress");
        created["output"] = json!([]);
        let item =
            json!({"type": "message", "id": "msg_1", "status": "in_progress", "role": "assistant", "content": []});
        let part = json!({"type": "output_text", "text": "", "annotations": []});
        let text: String = (0..st.events).map(|i| format!("tok{i} ")).collect();
        let mut evs = vec![
            json!({"type": "response.created", "response": created}),
            json!({"type": "response.output_item.added", "output_index": 0, "item": item}),
            json!({"type": "response.content_part.added", "item_id": "msg_1", "output_index": 0, "content_index": 0, "part": part}),
        ];
        for i in 0..st.events {
            evs.push(json!({"type": "response.output_text.delta", "item_id": "msg_1", "output_index": 0, "content_index": 0, "delta": format!("tok{i} "), "logprobs": []}));
        }
        let done_part = json!({"type": "output_text", "text": text, "annotations": []});
        let mut done_item = full["output"][0].clone();
        done_item["content"] = json!([done_part.clone()]);
        evs.push(json!({"type": "response.output_text.done", "item_id": "msg_1", "output_index": 0, "content_index": 0, "text": text, "logprobs": []}));
        evs.push(json!({"type": "response.content_part.done", "item_id": "msg_1", "output_index": 0, "content_index": 0, "part": done_part}));
        evs.push(json!({"type": "response.output_item.done", "output_index": 0, "item": done_item}));
        let mut completed = full.clone();
        completed["output"] = json!([done_item]);
        evs.push(json!({"type": "response.completed", "response": completed}));
        for (n, mut ev) in evs.into_iter().enumerate() {
            ev["sequence_number"] = json!(n);
            out.push(format!("event: {}\ndata: {ev}\n\n", ev["type"].as_str().unwrap_or("")));
        }
    } else {
        for i in 0..st.events {
            let chunk = json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1, "model": model,
                "choices": [{"index": 0, "delta": {"content": format!("tok{i} ")}, "finish_reason": null}]});
            out.push(format!("data: {chunk}\n\n"));
        }
        let last = json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1, "model": model,
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]});
        out.push(format!("data: {last}\n\n"));
        out.push("data: [DONE]\n\n".to_string());
    }
    out
}

async fn write_head(sock: &mut TcpStream, status: u16, content_type: &str, len: Option<usize>, extra: &str) -> bool {
    let framing = match len {
        Some(n) => format!("content-length: {n}\r\n"),
        None => "transfer-encoding: chunked\r\n".to_string(),
    };
    let head = format!("HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\n{framing}{extra}\r\n");
    sock.write_all(head.as_bytes()).await.is_ok()
}

async fn write_chunk(sock: &mut TcpStream, data: &str) -> bool {
    sock.write_all(format!("{:x}\r\n{data}\r\n", data.len()).as_bytes())
        .await
        .is_ok()
}

/// Makes the coming close an RST instead of a FIN.
#[allow(deprecated)] // SO_LINGER 0 does not block on drop; it is exactly the reset we want.
fn reset(sock: &TcpStream) {
    let _ = sock.set_linger(Some(Duration::ZERO));
}

/// Answers one request; false when the connection must close.
async fn answer(sock: &mut TcpStream, st: &MockState, req: &Recorded, reply: Reply) -> bool {
    let body = req.json();
    let model = body.get("model").and_then(Value::as_str).unwrap_or("none").to_string();
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let mut reply = reply;
    while let Reply::Delay(d, inner) = reply {
        tokio::time::sleep(d).await;
        reply = *inner;
    }
    match reply {
        Reply::Delay(..) => unreachable!(),
        Reply::Reset => {
            reset(sock);
            false
        }
        Reply::Status {
            status,
            retry_after,
            body,
        } => {
            let extra = retry_after.map(|s| format!("retry-after: {s}\r\n")).unwrap_or_default();
            write_head(sock, status, "application/json", Some(body.len()), &extra).await
                && sock.write_all(body.as_bytes()).await.is_ok()
        }
        _ if req.method == "GET" => {
            let data: Vec<_> = st
                .models
                .iter()
                .map(|m| json!({"id": m, "object": "model", "created": 0, "owned_by": st.name}))
                .collect();
            let body = json!({"object": "list", "data": data}).to_string();
            write_head(sock, 200, "application/json", Some(body.len()), "").await
                && sock.write_all(body.as_bytes()).await.is_ok()
        }
        Reply::Ok if !stream => {
            let v = if req.path.ends_with("/responses") {
                response_object(st, &model)
            } else {
                chat_completion(st, &model)
            };
            let body = v.to_string();
            write_head(sock, 200, "application/json", Some(body.len()), "").await
                && sock.write_all(body.as_bytes()).await.is_ok()
        }
        reply => {
            let events = stream_events(st, &req.path, &model);
            let (limit, ending) = match reply {
                Reply::StreamCut { after } => (after, "cut"),
                Reply::StreamAbort { after } => (after, "abort"),
                Reply::StreamStall { after } => (after, "stall"),
                _ => (events.len(), "done"),
            };
            if !write_head(sock, 200, "text/event-stream", None, "cache-control: no-cache\r\n").await {
                return false;
            }
            let gap = *st.event_gap.lock();
            for ev in events.iter().take(limit) {
                if !write_chunk(sock, ev).await {
                    return false;
                }
                let _ = sock.flush().await;
                tokio::time::sleep(gap).await;
            }
            match ending {
                "abort" => {
                    // Let the events reach the gateway first: an RST purges unread data in the kernel.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let _ = sock.write_all(b"40\r\ndata: {\"partial").await;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    reset(sock);
                    false
                }
                "stall" => {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    false
                }
                _ => sock.write_all(b"0\r\n\r\n").await.is_ok(),
            }
        }
    }
}
