//! The hostile corpus: files that make a decoder repeat work that grows with what the file
//! repeats (scans, chunks, blocks, frames) rather than with its pixels, and mutations of real
//! files, each at most [`MAX_FILE`] bytes. Every one must decode or fail within a bound:
//! a deterministic work measure where one exists (scans counted, bytes read), and CPU time
//! of the test's thread (Linux `schedstat`, not wall-clock time) under [`CPU_BOUND_MS`],
//! about 20 times the worst case measured (see the README's security section).

use super::*;
use crate::dimensions::{jpeg_scans, MAX_PROGRESSIVE_SCANS};
use proptest::prelude::*;
use std::borrow::Cow;
use std::io::Cursor;

/// The largest file of the corpus.
const MAX_FILE: usize = 256 << 10;

/// CPU time any input of the corpus may take to decode or fail, natively, in a debug build
/// (the codecs are optimised in debug builds too). About 20 times the worst case measured.
const CPU_BOUND_MS: u64 = 20_000;

/// CPU time of this thread so far, in ns (`None` where `/proc` does not say).
fn thread_cpu_ns() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// Reads through `inner`, counting the bytes handed out (the decoders' input work).
struct Counting<R> {
    inner: R,
    read: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        Ok(n)
    }
}

impl<R: BufRead> BufRead for Counting<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.inner.fill_buf()
    }

    fn consume(&mut self, amt: usize) {
        self.read += amt as u64;
        self.inner.consume(amt)
    }
}

impl<R: Seek> Seek for Counting<R> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.inner.seek(pos)
    }
}

/// What normalising one file cost.
struct Cost {
    result: Result<Normalised, ImageError>,
    /// Bytes the decoders took from the reader, all passes together.
    bytes_read: u64,
    cpu_ms: Option<u64>,
}

impl fmt::Debug for Cost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let result = match &self.result {
            Ok(Normalised::Unchanged(info)) => format!("unchanged {}x{}", info.width, info.height),
            Ok(Normalised::Jpeg { width, height, .. }) => format!("jpeg {width}x{height}"),
            Err(e) => e.to_string(),
        };
        write!(
            f,
            "{result}; {} bytes read, {:?} ms CPU",
            self.bytes_read, self.cpu_ms
        )
    }
}

fn measure(file: &[u8], limits: &Limits) -> Cost {
    let mut reader = Counting {
        inner: Cursor::new(file),
        read: 0,
    };
    let before = thread_cpu_ns();
    let result = normalise(&mut reader, file.len() as u64, limits);
    let cpu_ms = before
        .zip(thread_cpu_ns())
        .map(|(a, b)| b.saturating_sub(a) / 1_000_000);
    Cost {
        result,
        bytes_read: reader.read,
        cpu_ms,
    }
}

/// Asserts the bounds of one corpus file; returns its cost.
fn within_bounds(what: &str, file: &[u8]) -> Cost {
    assert!(file.len() <= MAX_FILE, "{what}: {} bytes", file.len());
    let cost = measure(file, &Limits::default());
    if let Err(e) = &cost.result {
        assert!(e.is_permanent(), "{what}: {e}");
    }
    // Every byte is read a few times at most: the header, the JPEG scan count, the decoder.
    let read_bound = 3 * file.len() as u64 + (2 << 20);
    assert!(
        cost.bytes_read <= read_bound,
        "{what}: read {} bytes of {}",
        cost.bytes_read,
        file.len()
    );
    if let Some(ms) = cost.cpu_ms {
        assert!(ms <= CPU_BOUND_MS, "{what}: {ms} ms of CPU");
    }
    cost
}

/// A `w × h` progressive 4:2:0 JPEG of a smooth gradient.
fn progressive_jpeg(w: u16, h: u16) -> Vec<u8> {
    let pixels: Vec<u8> = (0..u32::from(h))
        .flat_map(|y| (0..u32::from(w)).flat_map(move |x| [(x / 16) as u8, (y / 16) as u8, 128]))
        .collect();
    let mut out = Vec::new();
    let mut encoder = jpeg_encoder::Encoder::new(&mut out, 75);
    encoder.set_sampling_factor(jpeg_encoder::SamplingFactor::F_2_2);
    encoder.set_progressive(true);
    encoder
        .encode(&pixels, w, h, jpeg_encoder::ColorType::Rgb)
        .unwrap();
    out
}

/// Offset of the first SOS marker of a JPEG written by `jpeg_encoder` (no segment there holds
/// `FF DA`).
fn first_sos(jpeg: &[u8]) -> usize {
    jpeg.windows(2).position(|w| w == [0xFF, 0xDA]).unwrap()
}

/// The scan bomb of the issue: a progressive JPEG's headers, then its first scan header with
/// the first `data` bytes of that scan's entropy-coded data, `repeats` times, then EOI. Each
/// repeat makes a decoder walk every block of the image again.
fn scan_bomb(w: u16, h: u16, repeats: usize, data: usize) -> Vec<u8> {
    let base = progressive_jpeg(w, h);
    let sos = first_sos(&base);
    let header_len = usize::from(u16::from_be_bytes([base[sos + 2], base[sos + 3]]));
    let mut scan = base[sos..sos + 2 + header_len + data].to_vec();
    // No marker may start inside the cut: drop a dangling 0xFF.
    while scan.last() == Some(&0xFF) {
        scan.pop();
    }
    let mut out = base[..sos].to_vec();
    for _ in 0..repeats {
        out.extend_from_slice(&scan);
    }
    out.extend_from_slice(&[0xFF, 0xD9]);
    out
}

#[test]
fn the_scan_bomb_is_refused_before_decoding() {
    let bomb = scan_bomb(4000, 3000, 1000, 100);
    assert!(bomb.len() <= MAX_FILE, "{} bytes", bomb.len());
    // The header walk alone sees it (so does the upload's head: it is under 256 KiB).
    let err = jpeg_scans(&bomb).unwrap_err();
    assert!(err.contains("more scans"), "{err}");
    let cost = within_bounds("scan bomb", &bomb);
    eprintln!("scan bomb, {} bytes: {cost:?}", bomb.len());
    let err = cost.result.as_ref().unwrap_err();
    assert_eq!(err.code(), "invalid_image", "{err}");
    assert!(err.message().contains("more scans"), "{err}");
    // Refused from the walk: the decoder never ran (it would have read the file again).
    assert!(cost.bytes_read <= 2 * bomb.len() as u64 + 8192, "{cost:?}");
}

#[test]
fn the_scan_limit_is_exact() {
    // A real encoder's progressive file is far below the limit.
    let base = progressive_jpeg(640, 480);
    let own = jpeg_scans(&base).unwrap();
    assert!((2..=12).contains(&own.scans()) && own.ended(), "{own:?}");
    // The bomb has only its repeats: the limit, then one more.
    let at_limit = scan_bomb(640, 480, MAX_PROGRESSIVE_SCANS as usize, 20);
    assert_eq!(
        jpeg_scans(&at_limit).unwrap().scans(),
        MAX_PROGRESSIVE_SCANS
    );
    let over = scan_bomb(640, 480, MAX_PROGRESSIVE_SCANS as usize + 1, 20);
    assert!(jpeg_scans(&over).is_err());
    let limits = Limits::default();
    let over = normalise_bytes(&over, &limits).unwrap_err();
    assert!(over.message().contains("more scans"), "{over}");
    // At the limit the decoder is reached (whatever it then makes of the cut scans).
    if let Err(e) = normalise_bytes(&at_limit, &limits) {
        assert!(!e.message().contains("more scans"), "{e}");
    }
}
