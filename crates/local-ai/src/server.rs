//! A minimal blocking HTTP/1.1 server (std::net, one thread per connection) that answers like
//! Workers AI's `@cf/microsoft/resnet-50`.
//!
//! Routes:
//! - `POST /run`, `POST /`, `POST /run/@cf/microsoft/resnet-50`: body `{"model": "...",
//!   "image": [u8, ...]}` (JSON) or the raw image bytes (any other content type). Answers `200`
//!   with the top 5 `[{"label": "...", "score": 0.38}, ...]`; `400` with code 5006
//!   (`"5006: Invalid image: ..."`) for bytes that are not an image or malformed input, `400`
//!   with code 5007 for another model name, `413` for bodies over the limit.
//! - `GET /healthz`: `{"ok":true,"model":"efficientnet-lite0"}`.
//!
//! Errors have the shape `{"errors":[{"code":N,"message":"..."}]}`; HTTP-level errors use the
//! status as the code.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::json;

use crate::{ClassifyError, ImageClassifier, EMULATED_MODEL, MODEL_NAME, TOP_K};

/// Largest accepted request body (64 MiB).
pub const MAX_BODY: usize = 64 * 1024 * 1024;
/// Workers AI's code for invalid input; the message starts with `5006: Invalid image: `.
pub const CODE_INVALID_INPUT: u32 = 5006;
/// Workers AI's code for an unknown model.
pub const CODE_NO_SUCH_MODEL: u32 = 5007;
/// Code for an unexpected failure inside the model.
pub const CODE_INTERNAL: u32 = 5000;

const MAX_LINE: u64 = 16 * 1024;
const MAX_HEADERS: usize = 100;
const IO_TIMEOUT: Duration = Duration::from_secs(60);

/// Server settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// Largest accepted body, in bytes.
    pub max_body: usize,
    /// Log one line per request to stderr.
    pub log: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            max_body: MAX_BODY,
            log: true,
        }
    }
}

/// An HTTP response: status, JSON body, extra headers.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// JSON body.
    pub body: String,
    /// Extra headers (name, value).
    pub headers: Vec<(&'static str, String)>,
}

impl Response {
    fn json(status: u16, body: serde_json::Value) -> Self {
        Self {
            status,
            body: body.to_string(),
            headers: Vec::new(),
        }
    }

    /// The Workers AI error shape: `{"errors":[{"code":code,"message":message}]}`.
    pub fn error(status: u16, code: u32, message: impl Into<String>) -> Self {
        Self::json(
            status,
            json!({ "errors": [{ "code": code, "message": message.into() }] }),
        )
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        100 => "Continue",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// A parsed request.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// Method, e.g. `POST`.
    pub method: String,
    /// Path without the query string.
    pub path: String,
    /// Headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl Request {
    /// The first header called `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The JSON body of a run request, as the Workers AI binding receives it.
#[derive(Debug, Deserialize)]
struct RunInput {
    #[serde(default)]
    model: Option<String>,
    image: Vec<u8>,
}

/// Decodes `%XX` escapes in a path (invalid escapes are kept as they are).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(v) = hex {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Routes one request to a response (no I/O: the socket handling is separate).
pub fn handle<C: ImageClassifier + ?Sized>(req: &Request, classifier: &C) -> Response {
    let path = percent_decode(&req.path);
    let path = path.trim_end_matches('/');
    let run_model = if path.is_empty() || path == "/run" {
        Some(None)
    } else {
        path.strip_prefix("/run/").map(Some)
    };
    match (req.method.as_str(), path) {
        ("GET", "/healthz") => Response {
            status: 200,
            body: format!(r#"{{"ok":true,"model":"{MODEL_NAME}"}}"#),
            headers: Vec::new(),
        },
        (_, "/healthz") => {
            let mut r = Response::error(405, 405, "Method not allowed: use GET");
            r.headers.push(("Allow", "GET".into()));
            r
        }
        ("POST", _) if run_model.is_some() => run(req, run_model.flatten(), classifier),
        (_, _) if run_model.is_some() => {
            let mut r = Response::error(405, 405, "Method not allowed: use POST");
            r.headers.push(("Allow", "POST".into()));
            r
        }
        _ => Response::error(
            404,
            404,
            format!("No route for {} {}", req.method, req.path),
        ),
    }
}

fn is_json(req: &Request) -> bool {
    let ct = req.header("content-type").map(|v| {
        v.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    });
    match ct.as_deref() {
        Some("application/json") => true,
        Some(ct) if ct.ends_with("+json") => true,
        Some("" | "text/plain") | None => req
            .body
            .iter()
            .find(|b| !b.is_ascii_whitespace())
            .is_some_and(|&b| b == b'{'),
        Some(_) => false,
    }
}

fn run<C: ImageClassifier + ?Sized>(
    req: &Request,
    path_model: Option<&str>,
    classifier: &C,
) -> Response {
    let (model, image): (Option<String>, std::borrow::Cow<'_, [u8]>) = if is_json(req) {
        match serde_json::from_slice::<RunInput>(&req.body) {
            Ok(input) => (input.model, input.image.into()),
            Err(e) => {
                return Response::error(
                    400,
                    CODE_INVALID_INPUT,
                    format!("{CODE_INVALID_INPUT}: Invalid input: {e}"),
                )
            }
        }
    } else {
        (None, req.body.as_slice().into())
    };
    for m in [path_model, model.as_deref()].into_iter().flatten() {
        if m != EMULATED_MODEL {
            return Response::error(
                400,
                CODE_NO_SUCH_MODEL,
                format!(
                    "{CODE_NO_SUCH_MODEL}: No such model {m} (this local stand-in serves only {EMULATED_MODEL})"
                ),
            );
        }
    }
    match classifier.classify(&image, TOP_K) {
        Ok(preds) => match serde_json::to_string(&preds) {
            Ok(body) => Response {
                status: 200,
                body,
                headers: Vec::new(),
            },
            Err(e) => Response::error(
                500,
                CODE_INTERNAL,
                format!("{CODE_INTERNAL}: Internal error: {e}"),
            ),
        },
        Err(ClassifyError::InvalidImage(m)) => Response::error(
            400,
            CODE_INVALID_INPUT,
            format!("{CODE_INVALID_INPUT}: Invalid image: {m}"),
        ),
        Err(ClassifyError::Internal(m)) => Response::error(
            500,
            CODE_INTERNAL,
            format!("{CODE_INTERNAL}: Internal error: {m}"),
        ),
    }
}

/// A request that cannot be served; answered, then the connection is closed.
struct HttpError(Response);

fn http_err(status: u16, message: &str) -> HttpError {
    HttpError(Response::error(status, u32::from(status), message))
}

/// Reads one line (up to `MAX_LINE` bytes), without its CRLF. `Ok(None)` on a clean EOF.
fn read_line<R: BufRead>(r: &mut R) -> Result<Option<String>, HttpError> {
    let mut buf = Vec::new();
    let n = r
        .by_ref()
        .take(MAX_LINE)
        .read_until(b'\n', &mut buf)
        .map_err(|_| http_err(408, "Request timeout or read error"))?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() != Some(&b'\n') {
        if n as u64 >= MAX_LINE {
            return Err(http_err(431, "Request line or header too long"));
        }
        return Err(http_err(400, "Truncated request"));
    }
    buf.pop();
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    String::from_utf8(buf)
        .map(Some)
        .map_err(|_| http_err(400, "Request head is not UTF-8"))
}

/// Reads a request head and body. `Ok(None)` when the client closed the connection.
fn read_request<R: BufRead, W: Write>(
    r: &mut R,
    w: &mut W,
    max_body: usize,
) -> Result<Option<(Request, bool)>, HttpError> {
    // Tolerate empty lines before the request line.
    let line = loop {
        match read_line(r)? {
            None => return Ok(None),
            Some(l) if l.is_empty() => continue,
            Some(l) => break l,
        }
    };
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(http_err(400, "Malformed request line"));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(http_err(505, "Only HTTP/1.x is supported"));
    }
    let mut req = Request {
        method: method.to_string(),
        path: target.split('?').next().unwrap_or("").to_string(),
        ..Request::default()
    };
    loop {
        let Some(h) = read_line(r)? else {
            return Err(http_err(400, "Truncated request head"));
        };
        if h.is_empty() {
            break;
        }
        if req.headers.len() >= MAX_HEADERS {
            return Err(http_err(431, "Too many headers"));
        }
        let Some((name, value)) = h.split_once(':') else {
            return Err(http_err(400, "Malformed header"));
        };
        req.headers
            .push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    let connection = req.header("connection").map(str::to_ascii_lowercase);
    let keep_alive = match connection.as_deref() {
        Some(c) if c.contains("close") => false,
        Some(c) if c.contains("keep-alive") => true,
        _ => version == "HTTP/1.1",
    };
    let chunked = req
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let length = match req.header("content-length") {
        Some(v) if !chunked => Some(
            v.parse::<u64>()
                .map_err(|_| http_err(400, "Invalid Content-Length"))?,
        ),
        _ => None,
    };
    if length.is_some_and(|n| n > max_body as u64) {
        return Err(http_err(
            413,
            &format!("Request body larger than {max_body} bytes"),
        ));
    }
    if req
        .header("expect")
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
        && (chunked || length.is_some_and(|n| n > 0))
    {
        w.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .and_then(|()| w.flush())
            .map_err(|_| http_err(400, "Write error"))?;
    }
    if chunked {
        req.body = read_chunked(r, max_body)?;
    } else if let Some(n) = length {
        let mut body = Vec::new();
        let got = r
            .by_ref()
            .take(n)
            .read_to_end(&mut body)
            .map_err(|_| http_err(408, "Request timeout or read error"))?;
        if (got as u64) < n {
            return Err(http_err(400, "Body shorter than Content-Length"));
        }
        req.body = body;
    }
    Ok(Some((req, keep_alive)))
}

fn read_chunked<R: BufRead>(r: &mut R, max_body: usize) -> Result<Vec<u8>, HttpError> {
    let mut body = Vec::new();
    loop {
        let Some(line) = read_line(r)? else {
            return Err(http_err(400, "Truncated chunked body"));
        };
        let size = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size, 16).map_err(|_| http_err(400, "Bad chunk size"))?;
        if size == 0 {
            // Trailers, up to the empty line.
            loop {
                match read_line(r)? {
                    Some(l) if !l.is_empty() => continue,
                    _ => return Ok(body),
                }
            }
        }
        if body.len().saturating_add(size) > max_body {
            return Err(http_err(
                413,
                &format!("Request body larger than {max_body} bytes"),
            ));
        }
        let start = body.len();
        body.resize(start + size, 0);
        r.read_exact(&mut body[start..])
            .map_err(|_| http_err(400, "Truncated chunk"))?;
        match read_line(r)? {
            Some(l) if l.is_empty() => {}
            _ => return Err(http_err(400, "Missing CRLF after chunk")),
        }
    }
}

fn write_response<W: Write>(w: &mut W, resp: &Response, keep_alive: bool) -> io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: {}\r\n",
        resp.status,
        reason(resp.status),
        resp.body.len(),
        if keep_alive { "keep-alive" } else { "close" }
    );
    for (n, v) in &resp.headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str("\r\n");
    w.write_all(head.as_bytes())?;
    w.write_all(resp.body.as_bytes())?;
    w.flush()
}

fn log_line(req: &Request, resp: &Response, started: Instant) {
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    let detail = if resp.status == 200 && req.method == "POST" {
        serde_json::from_str::<serde_json::Value>(&resp.body)
            .ok()
            .and_then(|v| {
                let top = v.get(0)?;
                Some(format!(
                    " top: {} {:.3}",
                    top.get("label")?.as_str()?,
                    top.get("score")?.as_f64()?
                ))
            })
            .unwrap_or_default()
    } else if resp.status >= 400 {
        serde_json::from_str::<serde_json::Value>(&resp.body)
            .ok()
            .and_then(|v| Some(format!(" {}", v["errors"][0]["message"].as_str()?)))
            .unwrap_or_default()
    } else {
        String::new()
    };
    eprintln!(
        "local-ai: {} {} -> {} ({ms:.0} ms, {} bytes in){detail}",
        req.method,
        req.path,
        resp.status,
        req.body.len()
    );
}

/// Serves one connection until the client closes it, asks to close, or an error occurs.
pub fn handle_connection<C: ImageClassifier + ?Sized>(
    stream: TcpStream,
    classifier: &C,
    opts: &Options,
) {
    let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
    let _ = stream.set_nodelay(true);
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::with_capacity(64 * 1024, stream);
    loop {
        match read_request(&mut reader, &mut writer, opts.max_body) {
            Ok(None) => return,
            Ok(Some((req, keep_alive))) => {
                let started = Instant::now();
                let resp = handle(&req, classifier);
                if opts.log {
                    log_line(&req, &resp, started);
                }
                if write_response(&mut writer, &resp, keep_alive).is_err() || !keep_alive {
                    let _ = writer.shutdown(Shutdown::Write);
                    return;
                }
            }
            Err(HttpError(resp)) => {
                if opts.log {
                    eprintln!(
                        "local-ai: rejected request -> {} {}",
                        resp.status, resp.body
                    );
                }
                let _ = write_response(&mut writer, &resp, false);
                let _ = writer.shutdown(Shutdown::Write);
                // Drain a little of any unread body so the client sees the answer, not a reset.
                let _ = reader
                    .get_ref()
                    .set_read_timeout(Some(Duration::from_millis(500)));
                let _ = io::copy(&mut reader.by_ref().take(MAX_BODY as u64), &mut io::sink());
                return;
            }
        }
    }
}

/// Accepts connections forever, one thread each.
pub fn serve<C: ImageClassifier + 'static>(
    listener: TcpListener,
    classifier: Arc<C>,
    opts: Options,
) -> io::Result<()> {
    let opts = Arc::new(opts);
    for conn in listener.incoming() {
        match conn {
            Ok(stream) => {
                let c = Arc::clone(&classifier);
                let o = Arc::clone(&opts);
                let spawned = thread::Builder::new()
                    .name("local-ai-conn".into())
                    .spawn(move || handle_connection(stream, c.as_ref(), &o));
                if let Err(e) = spawned {
                    eprintln!("local-ai: cannot start a connection thread: {e}");
                }
            }
            Err(e) => {
                // e.g. too many open files: back off briefly rather than spin.
                eprintln!("local-ai: accept failed: {e}");
                thread::sleep(Duration::from_millis(50));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Prediction;

    struct Fixed;

    impl ImageClassifier for Fixed {
        fn classify(&self, image: &[u8], k: usize) -> Result<Vec<Prediction>, ClassifyError> {
            if image.starts_with(b"IMG") {
                Ok(vec![
                    Prediction {
                        label: "TABBY".into(),
                        score: 0.75
                    };
                    k.min(2)
                ])
            } else {
                Err(ClassifyError::InvalidImage("nope".into()))
            }
        }
    }

    fn req(method: &str, path: &str, ct: Option<&str>, body: &[u8]) -> Request {
        Request {
            method: method.into(),
            path: path.into(),
            headers: ct
                .map(|c| vec![("content-type".to_string(), c.to_string())])
                .unwrap_or_default(),
            body: body.to_vec(),
        }
    }

    fn code(r: &Response) -> u64 {
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        v["errors"][0]["code"].as_u64().unwrap()
    }

    #[test]
    fn routes() {
        let r = handle(&req("GET", "/healthz", None, b""), &Fixed);
        assert_eq!(
            (r.status, r.body.as_str()),
            (200, r#"{"ok":true,"model":"efficientnet-lite0"}"#)
        );
        assert_eq!(handle(&req("GET", "/nope", None, b""), &Fixed).status, 404);
        assert_eq!(handle(&req("GET", "/run", None, b""), &Fixed).status, 405);
        assert_eq!(
            handle(&req("POST", "/healthz", None, b""), &Fixed).status,
            405
        );
        for path in [
            "/",
            "/run",
            "/run/",
            "/run/@cf/microsoft/resnet-50",
            "/run/%40cf/microsoft/resnet-50",
        ] {
            let r = handle(
                &req("POST", path, Some("application/octet-stream"), b"IMG"),
                &Fixed,
            );
            assert_eq!(r.status, 200, "{path}: {}", r.body);
        }
    }

    #[test]
    fn json_and_raw_bodies() {
        let body = br#"{"model":"@cf/microsoft/resnet-50","image":[73,77,71]}"#;
        let r = handle(&req("POST", "/run", Some("application/json"), body), &Fixed);
        assert_eq!(r.status, 200);
        assert_eq!(
            r.body,
            r#"[{"label":"TABBY","score":0.75},{"label":"TABBY","score":0.75}]"#
        );
        // JSON is recognised without a content type, and the model may be omitted.
        let r = handle(&req("POST", "/", None, br#" {"image":[73,77,71]}"#), &Fixed);
        assert_eq!(r.status, 200);
        let r = handle(&req("POST", "/run", Some("image/png"), b"garbage"), &Fixed);
        assert_eq!((r.status, code(&r)), (400, 5006));
        assert!(r.body.contains("5006: Invalid image: nope"), "{}", r.body);
    }

    #[test]
    fn input_errors() {
        let r = handle(
            &req(
                "POST",
                "/run",
                Some("application/json"),
                br#"{"model":"@cf/meta/llama","image":[1]}"#,
            ),
            &Fixed,
        );
        assert_eq!((r.status, code(&r)), (400, 5007));
        assert!(r.body.contains("5007: No such model @cf/meta/llama"));
        let r = handle(&req("POST", "/run/@cf/other", None, b"IMG"), &Fixed);
        assert_eq!(code(&r), 5007);
        for bad in [
            &br#"{"image":[1,256]}"#[..],
            br#"{"model":"x"}"#,
            b"{not json",
        ] {
            let r = handle(&req("POST", "/run", Some("application/json"), bad), &Fixed);
            assert_eq!((r.status, code(&r)), (400, 5006), "{}", r.body);
        }
    }

    fn parse(raw: &[u8], max: usize) -> Result<Option<(Request, bool)>, u16> {
        let mut out = Vec::new();
        read_request(&mut io::Cursor::new(raw), &mut out, max).map_err(|e| e.0.status)
    }

    #[test]
    fn parses_requests() {
        let (r, ka) = parse(
            b"POST /run?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcEXTRA",
            100,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (r.method.as_str(), r.path.as_str(), r.body.as_slice(), ka),
            ("POST", "/run", &b"abc"[..], true)
        );
        let (r, ka) = parse(
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nT: 1\r\n\r\n",
            100,
        )
        .unwrap()
        .unwrap();
        assert_eq!((r.body.as_slice(), ka), (&b"abcde"[..], false));
        assert!(
            !parse(
                b"GET / HTTP/1.0

",
                1
            )
            .unwrap()
            .unwrap()
            .1
        );
        assert!(parse(b"", 1).unwrap().is_none());
        assert_eq!(
            parse(b"POST / HTTP/1.1\r\nContent-Length: 101\r\n\r\n", 100).unwrap_err(),
            413
        );
        assert_eq!(
            parse(
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n65\r\n",
                100
            )
            .unwrap_err(),
            413
        );
        assert_eq!(
            parse(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nab", 100).unwrap_err(),
            400
        );
        assert_eq!(
            parse(b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n", 100).unwrap_err(),
            400
        );
        assert_eq!(parse(b"BROKEN\r\n\r\n", 100).unwrap_err(), 400);
        assert_eq!(parse(b"GET / HTTP/2\r\n\r\n", 100).unwrap_err(), 505);
        let long = [
            b"GET /".as_slice(),
            &vec![b'a'; 20_000],
            b" HTTP/1.1\r\n\r\n",
        ]
        .concat();
        assert_eq!(parse(&long, 100).unwrap_err(), 431);
    }

    #[test]
    fn expect_continue_is_answered() {
        let mut out = Vec::new();
        let raw = b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nx";
        read_request(&mut io::Cursor::new(&raw[..]), &mut out, 10)
            .ok()
            .flatten()
            .unwrap();
        assert_eq!(out, b"HTTP/1.1 100 Continue\r\n\r\n");
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("/run/%40cf/a%2Fb"), "/run/@cf/a/b");
        assert_eq!(percent_decode("%4"), "%4");
        assert_eq!(percent_decode("%zz%"), "%zz%");
    }
}
