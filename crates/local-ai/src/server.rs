//! The HTTP face of the classifier (`tiny_http`, one thread per request), answering like
//! Workers AI's `@cf/microsoft/resnet-50`:
//! - `POST /run` with JSON `{"model": "...", "image": [u8, ...]}` or the raw image bytes →
//!   `200 [{"label": "EGYPTIAN CAT", "score": 0.38}, ...]` (top 5); `400` with code 3010 if the
//!   body is not a decodable image (or not valid JSON), 5007 for another model, `413` (code 3006)
//!   for a body over [`MAX_BODY`].
//! - `GET /healthz` → `{"ok":true}`.
//!
//! Errors have the Workers AI shape `{"errors":[{"code":N,"message":"N: ..."}]}`.

use std::io::{Cursor, Read};
use std::sync::Arc;
use std::time::Instant;

use serde::Deserialize;
use tiny_http::{Header, Method, Request, Response, Server};

use crate::{Classifier, EMULATED_MODEL};

/// Largest accepted request body.
pub const MAX_BODY: usize = 64 << 20;

type Reply = Response<Cursor<Vec<u8>>>;

/// Answers requests until the server is dropped. Logs one line per request unless `quiet`.
pub fn serve(server: &Server, classifier: Arc<Classifier>, quiet: bool) {
    for mut request in server.incoming_requests() {
        // tiny_http 0.12 drains an unread body, when the request is dropped, into a buffer as
        // large as the declared length (upstream PR #290): a lying Content-Length could abort
        // the process. Requests that declare over 1 GiB are leaked unanswered, never dropped.
        if request.body_length().is_some_and(|n| n > 1 << 30) {
            std::mem::forget(request);
            continue;
        }
        let classifier = Arc::clone(&classifier);
        std::thread::spawn(move || {
            let started = Instant::now();
            let reply = handle(&mut request, &classifier);
            if !quiet {
                let (method, url, ms) = (request.method(), request.url(), started.elapsed());
                let status = reply.status_code().0;
                eprintln!("local-ai: {method} {url} -> {status} in {ms:.0?}");
            }
            let _ = request.respond(reply); // the client may have gone
        });
    }
}

/// The JSON body the local `Ai` binding (and Workers AI) sends.
#[derive(Deserialize)]
struct RunInput {
    model: Option<String>,
    image: Vec<u8>,
}

fn handle(request: &mut Request, classifier: &Classifier) -> Reply {
    match (request.method(), request.url()) {
        (Method::Get, "/healthz") => json(200, r#"{"ok":true}"#.into(), None),
        (Method::Post, "/run") => match read_body(request) {
            Ok(body) => run(&body, classifier),
            Err(reply) => reply,
        },
        (_, "/healthz") => json(405, error_body(405, "Method Not Allowed"), Some("GET")),
        (_, "/run") => json(405, error_body(405, "Method Not Allowed"), Some("POST")),
        _ => error(404, 404, "Not Found"),
    }
}

fn read_body(request: &mut Request) -> Result<Vec<u8>, Reply> {
    let too_large = || error(413, 3006, "Request is too large (over 64 MiB)");
    if request.body_length().is_some_and(|n| n > MAX_BODY) {
        return Err(too_large()); // before reading it, and before any `100 Continue`
    }
    let mut body = Vec::with_capacity(request.body_length().unwrap_or(0));
    let limit = MAX_BODY as u64 + 1;
    match request.as_reader().take(limit).read_to_end(&mut body) {
        Err(e) => Err(invalid_input(&format!("cannot read the body: {e}"))),
        Ok(_) if body.len() > MAX_BODY => Err(too_large()),
        Ok(_) => Ok(body),
    }
}

/// Classifies a JSON run request (anything starting with `{`) or raw image bytes.
fn run(body: &[u8], classifier: &Classifier) -> Reply {
    let image = if body.trim_ascii_start().starts_with(b"{") {
        match serde_json::from_slice::<RunInput>(body) {
            Ok(RunInput { model: Some(m), .. }) if m != EMULATED_MODEL => {
                let message = format!("No such model {m} (this stand-in serves {EMULATED_MODEL})");
                return error(400, 5007, &message);
            }
            Ok(input) => input.image,
            Err(e) => return invalid_input(&format!("bad JSON body: {e}")),
        }
    } else {
        body.to_vec()
    };
    let predictions = match classifier.classify_bytes(&image) {
        Ok(p) => p,
        Err(e) => return invalid_input(&e.to_string()),
    };
    match serde_json::to_string(&predictions) {
        Ok(text) => json(200, text, None),
        Err(e) => error(500, 5000, &e.to_string()),
    }
}

/// `400` with Workers AI's code 3010, "Invalid or incomplete input for the model".
fn invalid_input(detail: &str) -> Reply {
    let message = format!("Invalid or incomplete input for the model: {detail}");
    error(400, 3010, &message)
}

fn error(status: u16, code: u32, message: &str) -> Reply {
    json(status, error_body(code, message), None)
}

fn error_body(code: u32, message: &str) -> String {
    let message = serde_json::Value::from(format!("{code}: {message}")); // displays as JSON
    format!(r#"{{"errors":[{{"code":{code},"message":{message}}}]}}"#)
}

fn json(status: u16, body: String, allow: Option<&str>) -> Reply {
    let headers = [("Content-Type", "application/json")].into_iter();
    let headers = headers.chain(allow.map(|methods| ("Allow", methods)));
    let mut reply = Response::from_string(body).with_status_code(status);
    for (name, value) in headers {
        if let Ok(header) = Header::from_bytes(name, value) {
            reply.add_header(header);
        }
    }
    reply
}
