//! The binary as its callers use it: `serve --addr 127.0.0.1:0 --model-dir DIR --quiet` (the
//! launcher reads the URL from the first line it prints), then real requests over sockets.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_local-ai");

/// A running `local-ai serve`, stopped on drop (also when a test fails).
struct Server(Child, String);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start() -> Option<Server> {
    let dir = common::model_dir()?;
    let args = ["serve", "--addr", "127.0.0.1:0", "--quiet", "--model-dir"];
    let mut child = Command::new(BIN)
        .args(args)
        .arg(dir)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .split("listening on http://")
        .nth(1)
        .map(|a| a.trim().to_string());
    Some(Server(child, addr.unwrap_or_else(|| panic!("{line:?}"))))
}

/// Sends `head` (request line and headers) and `body`, half-closes, returns status and JSON.
fn send(server: &Server, head: &str, body: &[u8]) -> (u16, Value) {
    let mut s = TcpStream::connect(&server.1).unwrap();
    write!(s, "{head}\r\nHost: test\r\nConnection: close\r\n\r\n").unwrap();
    s.write_all(body).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    let (head, body) = reply.split_once("\r\n\r\n").unwrap();
    let status = head[9..12].parse().unwrap();
    (status, serde_json::from_str(body).unwrap())
}

fn post(server: &Server, body: &[u8]) -> (u16, Value) {
    let head = format!("POST /run HTTP/1.1\r\nContent-Length: {}", body.len());
    send(server, &head, body)
}

/// The status and Workers AI error code of an error reply, and its message.
fn error((status, body): (u16, Value)) -> (u16, u64, String) {
    let error = &body["errors"][0];
    let (code, message) = (error["code"].as_u64().unwrap(), error["message"].as_str());
    assert!(message.unwrap().starts_with(&format!("{code}: ")), "{body}");
    (status, code, message.unwrap().to_string())
}

fn local_ai(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).output().unwrap()
}

#[test]
fn serves_the_workers_ai_contract() {
    let Some(server) = start() else { return };
    let photo = std::fs::read(common::model_dir().unwrap().join("chelsea.png")).unwrap();
    // As the local `Ai` binding sends it, then as raw bytes.
    let run = json!({ "model": "@cf/microsoft/resnet-50", "image": photo }).to_string();
    let (status, top5) = post(&server, run.as_bytes());
    assert_eq!((status, top5.as_array().unwrap().len()), (200, 5), "{top5}");
    assert_eq!(top5[0]["label"], "EGYPTIAN CAT");
    let score = top5[0]["score"].as_f64().unwrap();
    assert!((score - 0.3885).abs() < 0.002, "{top5}");
    assert_eq!(post(&server, &photo), (200, top5));
    // Not an image (in JSON, raw, truncated), or bad JSON: 400 with code 3010.
    let junk = json!({ "image": b"\x89PNG\r\n\x1a\nnot really" }).to_string();
    for body in [
        junk.as_bytes(),
        b"not an image",
        &photo[..100],
        b"{\"image\": 1",
    ] {
        let (status, code, message) = error(post(&server, body));
        assert_eq!((status, code), (400, 3010));
        assert!(message.starts_with("3010: Invalid or incomplete input for the model: "));
    }
    let llama = br#"{"model": "@cf/meta/llama-3-8b-instruct", "image": []}"#;
    assert_eq!(error(post(&server, llama)).1, 5007);
    // Over 64 MiB: 413 before the body is sent (no `100 Continue`).
    let head = "POST /run HTTP/1.1\r\nContent-Length: 67108865\r\nExpect: 100-continue";
    assert_eq!(error(send(&server, head, b"")).0, 413);
    // A lying Content-Length (1 TB, never sent) gets no answer, and the server survives it.
    let mut liar = TcpStream::connect(&server.1).unwrap();
    write!(
        liar,
        "POST /run HTTP/1.1\r\nContent-Length: 1000000000000\r\n\r\n"
    )
    .unwrap();
    liar.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    assert!(liar.read(&mut [0]).is_err(), "no answer");
    assert_eq!(error(send(&server, "GET /run HTTP/1.1", b"")).0, 405);
    assert_eq!(error(send(&server, "POST /nothing HTTP/1.1", b"")).0, 404);
    let healthz = send(&server, "GET /healthz HTTP/1.1", b"");
    assert_eq!(healthz, (200, json!({ "ok": true })));
}

#[test]
fn classify_command_and_errors() {
    let Some(dir) = common::model_dir() else {
        return;
    };
    let dir = dir.to_str().unwrap();
    let out = local_ai(&["classify", &format!("{dir}/coffee.png"), "--model-dir", dir]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("0.9443  ESPRESSO"),
        "{stdout}"
    );
    let out = local_ai(&["classify", "x.png", "--model-dir", "/nonexistent"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("scripts/fetch-model.sh"));
    assert_eq!(local_ai(&["--bogus"]).status.code(), Some(2));
}
