//! The hostile corpus: files that make a decoder repeat work that grows with what the file
//! repeats (scans, chunks, blocks, frames) rather than with its pixels, and mutations of real
//! files, each at most [`MAX_FILE`] bytes. Every one must decode or fail within a bound:
//! a deterministic work measure where one exists (scans counted, bytes read), and CPU time
//! of the test's thread (Linux `schedstat`, not wall-clock time, so a busy machine does not
//! count) under [`CPU_BOUND_MS`] (see the README's security section for the figures).

use super::*;
use proptest::prelude::*;
use shared::image::header::{jpeg_scans, MAX_PROGRESSIVE_SCANS, MAX_SEQUENTIAL_SCANS};
use std::borrow::Cow;
use std::io::Cursor;

/// The largest file of the corpus.
const MAX_FILE: usize = 256 << 10;

/// CPU time any input of the corpus may take to decode or fail, natively: about 20 times the
/// worst case measured in a release build (0.8 s: a 49 MP sequential JPEG with its 4 scans),
/// and about 5 times the worst in a debug build (5.5 s: `shared` itself is not optimised
/// there, the codecs are). Without the scan limit the bomb alone took 4.1 s in release.
const CPU_BOUND_MS: u64 = if cfg!(debug_assertions) {
    30_000
} else {
    15_000
};

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
    gradient_jpeg(w, h, true)
}

/// A `w × h` 4:2:0 JPEG of a smooth gradient.
fn gradient_jpeg(w: u16, h: u16, progressive: bool) -> Vec<u8> {
    let pixels: Vec<u8> = (0..u32::from(h))
        .flat_map(|y| (0..u32::from(w)).flat_map(move |x| [(x / 16) as u8, (y / 16) as u8, 128]))
        .collect();
    let mut out = Vec::new();
    let mut encoder = jpeg_encoder::Encoder::new(&mut out, 75);
    encoder.set_sampling_factor(jpeg_encoder::SamplingFactor::F_2_2);
    encoder.set_progressive(progressive);
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
    resized(
        &repeated_scan(&progressive_jpeg(640, 480), repeats, data),
        w,
        h,
    )
}

/// `jpeg` with its frame header saying `w × h`: the scans are cut short anyway (a decoder
/// fills the rest of each with zeros, walking every block), so a small encoded file stands
/// for a large one without encoding megapixels.
fn resized(jpeg: &[u8], w: u16, h: u16) -> Vec<u8> {
    let mut out = jpeg.to_vec();
    let sof = out
        .windows(2)
        .position(|m| m == [0xFF, 0xC0] || m == [0xFF, 0xC2])
        .unwrap();
    out[sof + 5..sof + 7].copy_from_slice(&h.to_be_bytes());
    out[sof + 7..sof + 9].copy_from_slice(&w.to_be_bytes());
    out
}

/// `base`'s headers, then its first scan header and `data` bytes of that scan, `repeats`
/// times, then EOI.
fn repeated_scan(base: &[u8], repeats: usize, data: usize) -> Vec<u8> {
    let sos = first_sos(base);
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

/// CRC-32 of PNG chunks.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

/// A PNG chunk with its length and CRC.
fn png_chunk(name: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut out = (data.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(name);
    out.extend_from_slice(data);
    out.extend_from_slice(&crc32(&out[4..]).to_be_bytes());
    out
}

/// A `w × h` 8-bit greyscale PNG of zeros, with the `png` crate's best compression (about
/// 1000:1: 49 megapixels in some 50 KB), its data split into IDAT chunks of `idat` bytes.
fn zero_png(w: u32, h: u32) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut encoder = ::png::Encoder::new(&mut out, w, h);
        encoder.set_color(::png::ColorType::Grayscale);
        encoder.set_compression(::png::Compression::High);
        let mut writer = encoder.write_header().unwrap();
        let mut stream = writer.stream_writer().unwrap();
        let row = vec![0u8; w as usize];
        for _ in 0..h {
            io::Write::write_all(&mut stream, &row).unwrap();
        }
        stream.finish().unwrap();
    }
    out
}

/// Splits a PNG's chunks: (name, data) in order (no CRC check: the files are ours).
fn png_chunks(png: &[u8]) -> Vec<([u8; 4], Vec<u8>)> {
    let mut chunks = Vec::new();
    let mut pos = 8;
    while pos + 12 <= png.len() {
        let len = u32::from_be_bytes(png[pos..pos + 4].try_into().unwrap()) as usize;
        let name: [u8; 4] = png[pos + 4..pos + 8].try_into().unwrap();
        chunks.push((name, png[pos + 8..pos + 8 + len].to_vec()));
        pos += 12 + len;
    }
    chunks
}

/// A PNG made of `chunks` (IHDR first, IEND last).
fn png_of_chunks(chunks: &[([u8; 4], Vec<u8>)]) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    for (name, data) in chunks {
        out.extend_from_slice(&png_chunk(name, data));
    }
    out
}

/// `png` with `extra` chunks inserted before its first IDAT.
fn png_with_chunks_before_idat(png: &[u8], extra: &[([u8; 4], Vec<u8>)]) -> Vec<u8> {
    let chunks = png_chunks(png);
    let at = chunks.iter().position(|(n, _)| n == b"IDAT").unwrap();
    let mut all = chunks[..at].to_vec();
    all.extend_from_slice(extra);
    all.extend_from_slice(&chunks[at..]);
    png_of_chunks(&all)
}

/// `png` with its image data re-split into IDAT chunks of `size` bytes.
fn png_with_idat_size(png: &[u8], size: usize) -> Vec<u8> {
    let chunks = png_chunks(png);
    let data: Vec<u8> = chunks
        .iter()
        .filter(|(n, _)| n == b"IDAT")
        .flat_map(|(_, d)| d.clone())
        .collect();
    let mut all: Vec<_> = chunks
        .iter()
        .filter(|(n, _)| n == b"IHDR")
        .cloned()
        .collect();
    all.extend(data.chunks(size).map(|c| (*b"IDAT", c.to_vec())));
    all.push((*b"IEND", Vec::new()));
    png_of_chunks(&all)
}

/// A 1 × 1 greyscale PNG whose zlib stream goes on, after the image's one row, with about
/// `zeros` bytes more of compressed zeros: a deflate bomb behind a tiny image. The stream is
/// that of a zero image 1024 rows high (filter byte and pixel of the first row are zeros too).
fn png_with_trailing_deflate(zeros: usize) -> Vec<u8> {
    let wide = zero_png(u32::try_from(zeros / 1024).unwrap().max(1), 1024);
    let mut chunks = png_chunks(&wide);
    let ihdr = &mut chunks[0].1;
    ihdr[..8].copy_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1]);
    png_of_chunks(&chunks)
}

/// A `w × h` one-frame GIF of one colour (LZW compresses it to almost nothing), with
/// `comments` comment extensions before the frame and `frames` more frames after it.
fn gif_with_repeats(w: u16, h: u16, comments: usize, frames: usize) -> Vec<u8> {
    let palette = [0, 0, 0, 255, 255, 255];
    let mut out = Vec::new();
    {
        let mut encoder = ::gif::Encoder::new(&mut out, w, h, &palette).unwrap();
        for _ in 0..comments {
            encoder
                .write_raw_extension(::gif::Extension::Comment.into(), &[b"hello"])
                .unwrap();
        }
        let frame = ::gif::Frame {
            width: w,
            height: h,
            buffer: Cow::Owned(vec![0; usize::from(w) * usize::from(h)]),
            ..Default::default()
        };
        encoder.write_frame(&frame).unwrap();
        let small = ::gif::Frame {
            width: 1,
            height: 1,
            buffer: Cow::Owned(vec![1]),
            ..Default::default()
        };
        for _ in 0..frames {
            encoder.write_frame(&small).unwrap();
        }
    }
    out
}

/// A lossless `w × h` WebP of one colour.
fn one_colour_webp(w: u32, h: u32) -> Vec<u8> {
    let mut out = Vec::new();
    image_webp::WebPEncoder::new(&mut out)
        .encode(
            &vec![40u8; (w * h * 3) as usize],
            w,
            h,
            image_webp::ColorType::Rgb8,
        )
        .unwrap();
    out
}

/// A WebP with `count` unknown chunks of 4 bytes after its image chunk, and the RIFF size
/// fixed.
fn webp_with_chunks(webp: &[u8], count: usize) -> Vec<u8> {
    let mut out = webp.to_vec();
    for _ in 0..count {
        out.extend_from_slice(b"ZZZZ\x04\0\0\0abcd");
    }
    let riff = (out.len() - 8) as u32;
    out[4..8].copy_from_slice(&riff.to_le_bytes());
    out
}

/// The crafted part of the corpus: (what, file), each at most [`MAX_FILE`].
fn crafted() -> Vec<(&'static str, Vec<u8>)> {
    let text = |n: usize| (*b"tEXt", format!("k{n}\0v").into_bytes());
    let small_png = zero_png(640, 480);
    vec![
        (
            "JPEG: scan bomb, 1000 repeats",
            scan_bomb(4000, 3000, 1000, 100),
        ),
        (
            "JPEG: 64 scans of 4000x3000 (the most accepted)",
            scan_bomb(4000, 3000, MAX_PROGRESSIVE_SCANS as usize, 100),
        ),
        (
            "JPEG: 4 scans of 7000x7000 baseline (the most accepted)",
            resized(
                &repeated_scan(
                    &gradient_jpeg(640, 480, false),
                    MAX_SEQUENTIAL_SCANS as usize,
                    100,
                ),
                7000,
                7000,
            ),
        ),
        (
            "JPEG: 5 scans of 7000x7000 baseline",
            resized(
                &repeated_scan(
                    &gradient_jpeg(640, 480, false),
                    MAX_SEQUENTIAL_SCANS as usize + 1,
                    100,
                ),
                7000,
                7000,
            ),
        ),
        ("PNG: 49 MP of zeros (pixel work)", zero_png(7000, 7000)),
        (
            "PNG: 12000 tEXt chunks",
            png_with_chunks_before_idat(&small_png, &(0..12_000).map(text).collect::<Vec<_>>()),
        ),
        (
            "PNG: one 200 KB zTXt",
            png_with_chunks_before_idat(
                &small_png,
                &[(*b"zTXt", {
                    let mut d = b"k\0\0".to_vec();
                    d.extend(std::iter::repeat_n(0x55, 200_000));
                    d
                })],
            ),
        ),
        (
            "PNG: 1-byte IDAT chunks",
            png_with_idat_size(&zero_png(2000, 2000), 1),
        ),
        (
            "PNG: a deflate bomb behind a 1x1 image",
            png_with_trailing_deflate(150 << 20),
        ),
        (
            "GIF: 49 MP of one colour (pixel work)",
            gif_with_repeats(7000, 7000, 0, 0),
        ),
        (
            "GIF: 20000 comments before the frame",
            gif_with_repeats(64, 64, 20_000, 0),
        ),
        (
            "GIF: 10000 frames after the first",
            gif_with_repeats(64, 64, 0, 10_000),
        ),
        (
            "WebP: 2400x2400 lossless of one colour (pixel work)",
            one_colour_webp(2400, 2400),
        ),
        (
            "WebP: 20000 unknown chunks",
            webp_with_chunks(&one_colour_webp(64, 64), 20_000),
        ),
    ]
}

#[test]
fn the_crafted_corpus_stays_within_its_bounds() {
    for (what, file) in crafted() {
        let cost = within_bounds(what, &file);
        eprintln!("{what}, {} bytes: {cost:?}", file.len());
    }
}

/// Small real files of every format, to mutate.
fn seeds() -> &'static [Vec<u8>] {
    static SEEDS: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
    SEEDS.get_or_init(|| {
        vec![
            gradient_jpeg(96, 64, false),
            gradient_jpeg(96, 64, true),
            zero_png(96, 64),
            gif_with_repeats(96, 64, 2, 2),
            one_colour_webp(96, 64),
            include_bytes!("testdata/lossy-alpha.webp").to_vec(),
            include_bytes!("testdata/lossy-exif.webp").to_vec(),
            turned_jpeg(gradient_jpeg(96, 64, false)),
            turned_webp(include_bytes!("testdata/lossy-exif.webp")),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Real files with a range repeated (a scan, a chunk, a block, a frame: whatever the cut
    /// holds), bytes flipped, and cut short, up to 256 KiB: each decodes or fails within the
    /// bounds.
    #[test]
    fn mutated_real_files_stay_within_their_bounds(
        seed in 0usize..9,
        range in (any::<prop::sample::Index>(), 1usize..400),
        repeats in 1usize..3000,
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        cut in proptest::option::of(any::<prop::sample::Index>()),
    ) {
        let seed = &seeds()[seed];
        let start = range.0.index(seed.len());
        let end = (start + range.1).min(seed.len());
        let piece = &seed[start..end];
        let repeats = repeats.min((MAX_FILE - seed.len()) / piece.len().max(1));
        let mut file = seed[..end].to_vec();
        for _ in 0..repeats {
            file.extend_from_slice(piece);
        }
        file.extend_from_slice(&seed[end..]);
        for (at, value) in flips {
            let i = at.index(file.len());
            file[i] ^= value;
        }
        if let Some(cut) = cut {
            file.truncate(cut.index(file.len() + 1));
        }
        within_bounds("mutated", &file);
    }
}

/// `jpeg` with an APP1 `Exif` segment saying orientation 6 (big-endian TIFF), so that the
/// mutations reach the orientation parser and the turn.
fn turned_jpeg(jpeg: Vec<u8>) -> Vec<u8> {
    let payload: &[u8] =
        b"Exif\0\0MM\0\x2a\0\0\0\x08\0\x01\x01\x12\0\x03\0\0\0\x01\0\x06\0\0\0\0\0\0";
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xE1, 0, payload.len() as u8 + 2]);
    out.extend_from_slice(payload);
    out.extend_from_slice(&jpeg[2..]);
    out
}

/// The WebP with an `EXIF` chunk, its orientation set to 6.
fn turned_webp(webp: &[u8]) -> Vec<u8> {
    let mut out = webp.to_vec();
    if let Some(at) = out.windows(4).position(|w| w == b"EXIF") {
        out[at + 8 + 6 + 8 + 2 + 8] = 6;
    }
    out
}
