//! A fault-injecting HTTP/1.1 server for testing HTTP clients, on
//! `127.0.0.1:0` only.
//!
//! A handler decides each reply from the request and its position: a JSON
//! answer with any status and headers, a stall before answering, a body cut
//! short, a redirect, or a dropped connection. Every request is recorded
//! (method, path, headers, body, arrival time) for the test to inspect. The
//! server answers at most [`FaultServer::MAX_REQUESTS`] requests (later
//! connections are closed unanswered), one connection per request
//! (`Connection: close`), and stops when dropped.
//!
//! Only the standard library: no JSON parser here (the tests parse bodies),
//! and the canned OpenAI-shaped answers are formatted by hand.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A request as the server received it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// Its position, from 0.
    pub index: usize,
    /// `POST`, `GET`, ...
    pub method: String,
    /// The request target, e.g. `/v1/chat/completions`.
    pub path: String,
    /// Header names (lower case) and values, in order.
    pub headers: Vec<(String, String)>,
    /// The body as text.
    pub body: String,
    /// When the request was complete.
    pub at: Instant,
}

impl RecordedRequest {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_str())
    }
}

/// What the server does with one request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// A complete response.
    Respond {
        /// The status code.
        status: u16,
        /// Extra headers.
        headers: Vec<(String, String)>,
        /// The body (sent as `application/json`).
        body: String,
    },
    /// Wait, then do the inner reply (the client may have given up meanwhile).
    Stall {
        /// How long to wait before answering.
        delay: Duration,
        /// What to answer then.
        then: Box<Reply>,
    },
    /// A 200 whose `Content-Length` promises the whole body but only the
    /// first `sent` bytes arrive before the connection closes.
    Truncated {
        /// The full body (its length is announced).
        body: String,
        /// Bytes actually sent.
        sent: usize,
    },
    /// Close the connection without answering.
    Drop,
}

impl Reply {
    /// `200` with a JSON body.
    pub fn ok(body: impl Into<String>) -> Self {
        Reply::Respond { status: 200, headers: Vec::new(), body: body.into() }
    }

    /// An OpenAI-style error: `{"error": {"message": ...}}` with `status`.
    pub fn error(status: u16, message: &str) -> Self {
        Reply::Respond {
            status,
            headers: Vec::new(),
            body: format!(r#"{{"error":{{"message":{},"type":"test_error"}}}}"#, json_string(message)),
        }
    }

    /// `self` with an extra header.
    pub fn with_header(self, name: &str, value: &str) -> Self {
        match self {
            Reply::Respond { status, mut headers, body } => {
                headers.push((name.to_string(), value.to_string()));
                Reply::Respond { status, headers, body }
            }
            other => other,
        }
    }

    /// A redirect to `location` with `status` (e.g. 307).
    pub fn redirect(status: u16, location: &str) -> Self {
        Reply::Respond { status, headers: vec![("Location".into(), location.into())], body: String::new() }
    }

    /// Wait `delay`, then answer `then`.
    pub fn stall(delay: Duration, then: Reply) -> Self {
        Reply::Stall { delay, then: Box::new(then) }
    }
}

type Handler = dyn Fn(&RecordedRequest) -> Reply + Send + Sync;

struct Shared {
    handler: Box<Handler>,
    requests: Mutex<Vec<RecordedRequest>>,
    count: AtomicUsize,
    stop: AtomicBool,
}

/// The server. See the module documentation.
pub struct FaultServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl FaultServer {
    /// Requests answered at most; later ones are closed unanswered.
    pub const MAX_REQUESTS: usize = 1000;

    /// Start a server whose replies `handler` decides.
    pub fn start(handler: impl Fn(&RecordedRequest) -> Reply + Send + Sync + 'static) -> Self {
        let listener = match TcpListener::bind("127.0.0.1:0") {
            Ok(l) => l,
            Err(e) => panic!("cannot bind a test server on 127.0.0.1: {e}"),
        };
        let addr = match listener.local_addr() {
            Ok(a) => a,
            Err(e) => panic!("test server address: {e}"),
        };
        let shared = Arc::new(Shared {
            handler: Box::new(handler),
            requests: Mutex::new(Vec::new()),
            count: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        });
        let accept_shared = shared.clone();
        let accept = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if accept_shared.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let shared = accept_shared.clone();
                std::thread::spawn(move || serve(stream, &shared));
            }
        });
        Self { addr, shared, accept: Some(accept) }
    }

    /// Start a server that answers with `script`, in order, then with `rest` forever.
    pub fn scripted(script: Vec<Reply>, rest: impl Fn(&RecordedRequest) -> Reply + Send + Sync + 'static) -> Self {
        Self::start(move |request| script.get(request.index).cloned().unwrap_or_else(|| rest(request)))
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The requests received so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        match self.shared.requests.lock() {
            Ok(r) => r.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// How many requests arrived so far.
    pub fn request_count(&self) -> usize {
        self.requests().len()
    }
}

impl Drop for FaultServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect(self.addr);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

fn serve(stream: TcpStream, shared: &Shared) {
    if shared.stop.load(Ordering::SeqCst) {
        return;
    }
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let Some(mut request) = read_request(&stream) else { return };
    let index = shared.count.fetch_add(1, Ordering::SeqCst);
    if index >= FaultServer::MAX_REQUESTS {
        return;
    }
    request.index = index;
    let reply = (shared.handler)(&request);
    match shared.requests.lock() {
        Ok(mut r) => r.push(request),
        Err(poisoned) => poisoned.into_inner().push(request),
    }
    write_reply(&stream, reply);
}

fn read_request(stream: &TcpStream) -> Option<RecordedRequest> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let mut headers = Vec::new();
    let mut header_bytes = 0usize;
    loop {
        let mut h = String::new();
        let n = reader.read_line(&mut h).ok()?;
        header_bytes += n;
        if n == 0 || header_bytes > 64 * 1024 {
            return None;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let length: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
        .min(16 << 20);
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).ok()?;
    Some(RecordedRequest {
        index: 0,
        method,
        path,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
        at: Instant::now(),
    })
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        301 => "Moved Permanently",
        302 => "Found",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        409 => "Conflict",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

fn write_reply(mut stream: &TcpStream, reply: Reply) {
    match reply {
        Reply::Respond { status, headers, body } => {
            let mut head = format!(
                "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
                reason(status),
                body.len()
            );
            for (k, v) in headers {
                head.push_str(&format!("{k}: {v}\r\n"));
            }
            head.push_str("\r\n");
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(body.as_bytes());
            let _ = stream.flush();
        }
        Reply::Stall { delay, then } => {
            std::thread::sleep(delay);
            write_reply(stream, *then);
        }
        Reply::Truncated { body, sent } => {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body.as_bytes()[..sent.min(body.len())]);
            let _ = stream.flush();
        }
        Reply::Drop => {}
    }
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

/// `text` as a JSON string literal.
pub fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A `/chat/completions` answer with one choice per text.
pub fn chat_completion(texts: &[&str]) -> String {
    let choices: Vec<String> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| {
            format!(
                r#"{{"index":{i},"message":{{"role":"assistant","content":{}}},"finish_reason":"stop"}}"#,
                json_string(t)
            )
        })
        .collect();
    format!(
        r#"{{"id":"chatcmpl-test","object":"chat.completion","choices":[{}],"usage":{{"prompt_tokens":5,"completion_tokens":{},"total_tokens":{}}}}}"#,
        choices.join(","),
        texts.len(),
        5 + texts.len()
    )
}

/// A `/completions` answer with one choice.
pub fn text_completion(text: &str) -> String {
    format!(
        r#"{{"id":"cmpl-test","object":"text_completion","choices":[{{"index":0,"text":{},"finish_reason":"length"}}],"usage":{{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}}}"#,
        json_string(text)
    )
}

/// An `/embeddings` answer with one vector per entry of `vectors`, listed in reverse order (with indices).
pub fn embeddings(vectors: &[Vec<f32>]) -> String {
    let items: Vec<String> = vectors
        .iter()
        .enumerate()
        .rev()
        .map(|(i, v)| {
            let values: Vec<String> = v.iter().map(|x| format!("{x:?}")).collect();
            format!(r#"{{"object":"embedding","index":{i},"embedding":[{}]}}"#, values.join(","))
        })
        .collect();
    format!(r#"{{"object":"list","data":[{}]}}"#, items.join(","))
}
