// Request builders for tests that need control over the bytes on the wire: hand-built
// multipart bodies, chunked (streamed) bodies, and raw HTTP/1.1 over a socket for headers
// that fetch refuses to send (wrong, negative or non-numeric Content-Length, ...).

import net from "node:net";

/**
 * A `multipart/form-data` body, byte for byte. `parts` are `{ name, filename?, type?, body,
 * headers? }`; `close: false` leaves out the closing delimiter.
 */
export function multipartBody(boundary, parts, { close = true } = {}) {
  const chunks = [];
  for (const part of parts) {
    let disposition = `form-data; name="${part.name}"`;
    if (part.filename !== undefined) disposition += `; filename="${part.filename}"`;
    const lines = [`--${boundary}`, `Content-Disposition: ${disposition}`];
    if (part.type) lines.push(`Content-Type: ${part.type}`);
    lines.push(...(part.headers ?? []));
    chunks.push(Buffer.from(`${lines.join("\r\n")}\r\n\r\n`), Buffer.from(part.body ?? ""), Buffer.from("\r\n"));
  }
  if (close) chunks.push(Buffer.from(`--${boundary}--\r\n`));
  return Buffer.concat(chunks);
}

/** A body of unknown length: `bytes` as a stream of `chunkSize` chunks (sent chunked). */
export function chunkedStream(bytes, chunkSize = 1024) {
  let offset = 0;
  return new ReadableStream({
    pull(controller) {
      if (offset >= bytes.length) {
        controller.close();
        return;
      }
      controller.enqueue(new Uint8Array(bytes.subarray(offset, offset + chunkSize)));
      offset += chunkSize;
    },
  });
}

/** One chunk of `Transfer-Encoding: chunked` framing. */
export function chunk(bytes) {
  return Buffer.concat([Buffer.from(`${bytes.length.toString(16)}\r\n`), bytes, Buffer.from("\r\n")]);
}

/** The last chunk of `Transfer-Encoding: chunked` framing. */
export const LAST_CHUNK = Buffer.from("0\r\n\r\n");

/**
 * Sends a raw HTTP/1.1 request to `url` (a URL object: its host and port are used) and
 * resolves with `{ status, headers, body }` (`headers` is a `Headers`, `body` a Buffer).
 * `head` is the request line and headers without the final blank line; `Host` and
 * `Connection: close` are added. The socket is half-closed after the body, so a server
 * waiting for more bytes sees the end of the stream.
 */
export function rawRequest(url, head, body = Buffer.alloc(0), { timeoutMs = 5000 } = {}) {
  const request = Buffer.concat([
    Buffer.from(`${head}\r\nHost: ${url.host}\r\nConnection: close\r\n\r\n`, "latin1"),
    Buffer.from(body),
  ]);
  return new Promise((resolve, reject) => {
    const socket = net.connect(Number(url.port), url.hostname);
    const received = [];
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`raw request timed out: ${head.split("\r\n")[0]}`));
    }, timeoutMs);
    socket.on("connect", () => socket.end(request));
    socket.on("data", (data) => received.push(data));
    socket.on("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
    socket.on("close", () => {
      clearTimeout(timer);
      try {
        resolve(parseResponse(Buffer.concat(received)));
      } catch (e) {
        reject(e);
      }
    });
  });
}

/** Parses one HTTP/1.1 response. */
export function parseResponse(bytes) {
  const end = bytes.indexOf("\r\n\r\n");
  if (end < 0) throw new Error(`no complete response: ${JSON.stringify(bytes.toString("latin1"))}`);
  const [statusLine, ...lines] = bytes.subarray(0, end).toString("latin1").split("\r\n");
  const status = Number(statusLine.split(" ")[1]);
  const headers = new Headers();
  for (const line of lines) {
    const colon = line.indexOf(":");
    headers.append(line.slice(0, colon).trim(), line.slice(colon + 1).trim());
  }
  let body = bytes.subarray(end + 4);
  if (/chunked/i.test(headers.get("transfer-encoding") ?? "")) {
    const parts = [];
    let at = 0;
    for (;;) {
      const lineEnd = body.indexOf("\r\n", at);
      const size = parseInt(body.subarray(at, lineEnd).toString("latin1"), 16);
      if (!size) break;
      parts.push(body.subarray(lineEnd + 2, lineEnd + 2 + size));
      at = lineEnd + 2 + size + 2;
    }
    body = Buffer.concat(parts);
  } else if (headers.has("content-length")) {
    body = body.subarray(0, Number(headers.get("content-length")));
  }
  return { status, headers, body };
}
