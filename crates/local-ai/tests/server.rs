//! HTTP behaviour over real sockets, with a stand-in classifier (no model needed): the
//! not-an-image path still goes through the real decoder.

mod common;

use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use common::{read_reply, request, run_body, start_server};
use local_ai::{preprocess, ClassifyError, ImageClassifier, Prediction};

/// Decodes for real, then answers a fixed ranking.
struct DecodeOnly;

impl ImageClassifier for DecodeOnly {
    fn classify(&self, image: &[u8], k: usize) -> Result<Vec<Prediction>, ClassifyError> {
        preprocess::load_input(image)?;
        Ok([
            ("TABBY", 0.5),
            ("TIGER CAT", 0.3),
            ("LYNX", 0.1),
            ("A", 0.05),
            ("B", 0.02),
            ("C", 0.01),
        ]
        .iter()
        .take(k)
        .map(|&(l, s)| Prediction {
            label: l.into(),
            score: s,
        })
        .collect())
    }
}

fn png() -> Vec<u8> {
    let img = image::RgbImage::from_pixel(40, 30, image::Rgb([200, 100, 50]));
    let mut buf = std::io::Cursor::new(Vec::new());
    img.write_to(&mut buf, image::ImageFormat::Png).unwrap();
    buf.into_inner()
}

#[test]
fn healthz_and_unknown_routes() {
    let addr = start_server(DecodeOnly);
    let r = request(addr, "GET", "/healthz", None, b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, br#"{"ok":true,"model":"efficientnet-lite0"}"#);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(request(addr, "GET", "/nothing", None, b"").status, 404);
    assert_eq!(request(addr, "GET", "/run", None, b"").status, 405);
}

#[test]
fn run_with_json_and_raw_bodies() {
    let addr = start_server(DecodeOnly);
    let img = png();
    for (path, ctype, body) in [
        (
            "/run",
            Some("application/json"),
            run_body("@cf/microsoft/resnet-50", &img),
        ),
        ("/", None, run_body("@cf/microsoft/resnet-50", &img)),
        ("/run", Some("application/octet-stream"), img.clone()),
        (
            "/run/@cf/microsoft/resnet-50",
            Some("image/png"),
            img.clone(),
        ),
    ] {
        let r = request(addr, "POST", path, ctype, &body);
        assert_eq!(
            r.status,
            200,
            "{path}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let v = r.json();
        let arr = v.as_array().unwrap();
        assert_eq!(arr.len(), 5);
        assert_eq!(arr[0]["label"], "TABBY");
        assert_eq!(arr[0]["score"].as_f64().unwrap(), 0.5);
        let scores: Vec<f64> = arr.iter().map(|p| p["score"].as_f64().unwrap()).collect();
        assert!(scores.windows(2).all(|w| w[0] >= w[1]));
    }
}

#[test]
fn not_an_image_is_a_permanent_5006() {
    let addr = start_server(DecodeOnly);
    for (ctype, body) in [
        (
            Some("application/json"),
            run_body("@cf/microsoft/resnet-50", b"this is not an image"),
        ),
        (
            Some("application/octet-stream"),
            b"this is not an image".to_vec(),
        ),
        (Some("application/octet-stream"), Vec::new()),
        (Some("image/png"), png()[..40].to_vec()),
    ] {
        let r = request(addr, "POST", "/run", ctype, &body);
        assert_eq!(r.status, 400);
        let v = r.json();
        assert_eq!(v["errors"][0]["code"], 5006);
        let msg = v["errors"][0]["message"].as_str().unwrap();
        assert!(msg.starts_with("5006: Invalid image: "), "{msg}");
    }
}

#[test]
fn wrong_model_is_5007() {
    let addr = start_server(DecodeOnly);
    let r = request(
        addr,
        "POST",
        "/run",
        Some("application/json"),
        &run_body("@cf/meta/llama-3-8b-instruct", &png()),
    );
    assert_eq!(r.status, 400);
    let v = r.json();
    assert_eq!(v["errors"][0]["code"], 5007);
    assert!(v["errors"][0]["message"]
        .as_str()
        .unwrap()
        .starts_with("5007: No such model @cf/meta/llama-3-8b-instruct"));
}

#[test]
fn too_large_is_413_without_reading_the_body() {
    let addr = start_server(DecodeOnly);
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"POST /run HTTP/1.1\r\nHost: t\r\nContent-Length: 67108865\r\nExpect: 100-continue\r\n\r\n")
        .unwrap();
    let r = read_reply(&mut BufReader::new(s));
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["errors"][0]["code"], 413);
}

#[test]
fn keep_alive_chunked_and_expect_continue() {
    let addr = start_server(DecodeOnly);
    let img = png();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut reader = BufReader::new(s.try_clone().unwrap());
    // 1: Expect: 100-continue, then the body.
    write!(
        s,
        "POST /run HTTP/1.1\r\nHost: t\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        img.len()
    )
    .unwrap();
    let cont = read_reply(&mut reader);
    assert_eq!(cont.status, 100);
    s.write_all(&img).unwrap();
    let r = read_reply(&mut reader);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("connection"), Some("keep-alive"));
    // 2: same connection, chunked body.
    s.write_all(b"POST /run HTTP/1.1\r\nHost: t\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        .unwrap();
    for chunk in img.chunks(17) {
        write!(s, "{:x}\r\n", chunk.len()).unwrap();
        s.write_all(chunk).unwrap();
        s.write_all(b"\r\n").unwrap();
    }
    s.write_all(b"0\r\n\r\n").unwrap();
    assert_eq!(read_reply(&mut reader).status, 200);
    // 3: and a close.
    s.write_all(b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    let r = read_reply(&mut reader);
    assert_eq!((r.status, r.header("connection")), (200, Some("close")));
    let mut rest = Vec::new();
    assert_eq!(reader.read_to_end(&mut rest).unwrap(), 0);
}

#[test]
fn malformed_request_gets_400() {
    let addr = start_server(DecodeOnly);
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"NONSENSE\r\n\r\n").unwrap();
    assert_eq!(read_reply(&mut BufReader::new(s)).status, 400);
}

#[test]
fn cli_without_model_says_how_to_fetch_it() {
    let dir = std::env::temp_dir().join(format!("local-ai-empty-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_local-ai"))
        .args(["classify", "whatever.png", "--model-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir(&dir);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("scripts/fetch-model.sh"), "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_local-ai"))
        .arg("--bogus")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
