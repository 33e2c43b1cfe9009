//! Helpers shared by the integration tests: finding the model, a tiny HTTP client, a server.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use local_ai::{server, ImageClassifier};

/// The model directory, or `None` when `LOCAL_AI_SKIP_MODEL_TESTS=1`.
///
/// Panics (fails the test) when the model is missing: a silent pass would hide a broken set-up.
pub fn model_dir() -> Option<PathBuf> {
    if std::env::var("LOCAL_AI_SKIP_MODEL_TESTS").is_ok_and(|v| v == "1") {
        eprintln!("LOCAL_AI_SKIP_MODEL_TESTS=1: skipping a test that needs the model");
        return None;
    }
    let dir = local_ai::default_model_dir();
    for f in [local_ai::WEIGHTS_FILE, local_ai::LABELS_FILE, "chelsea.png"] {
        assert!(
            dir.join(f).is_file(),
            "{} is missing: run scripts/fetch-model.sh first (or set LOCAL_AI_MODEL_DIR to its \
             output, or LOCAL_AI_SKIP_MODEL_TESTS=1 to skip the model tests)",
            dir.join(f).display()
        );
    }
    Some(dir)
}

/// Starts `server::serve` on an ephemeral loopback port in a background thread.
pub fn start_server<C: ImageClassifier + 'static>(classifier: C) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let opts = server::Options {
        log: false,
        ..server::Options::default()
    };
    std::thread::spawn(move || server::serve(listener, Arc::new(classifier), opts));
    addr
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one response (Content-Length framed) from `r`.
pub fn read_reply<R: BufRead>(r: &mut R) -> Reply {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("bad status line {line:?}"))
        .parse()
        .unwrap();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).unwrap();
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (n, v) = h.split_once(':').unwrap();
        headers.push((n.trim().to_string(), v.trim().to_string()));
    }
    let len: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.parse().unwrap())
        .unwrap_or(0);
    let mut body = vec![0; len];
    r.read_exact(&mut body).unwrap();
    Reply {
        status,
        headers,
        body,
    }
}

/// Sends one request on a new connection (`Connection: close`) and reads the reply.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    ctype: Option<&str>,
    body: &[u8],
) -> Reply {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(ct) = ctype {
        head.push_str(&format!("Content-Type: {ct}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    read_reply(&mut BufReader::new(s))
}

/// `{"model": model, "image": [bytes...]}`.
pub fn run_body(model: &str, image: &[u8]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "model": model, "image": image })).unwrap()
}
