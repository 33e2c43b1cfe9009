//! Real images of every format, made here with encoders (lossy WebP, which no Rust encoder
//! writes, comes from the small files in `testdata/`, made with libwebp through sharp).

use super::*;
use proptest::prelude::*;
use std::borrow::Cow;

/// A smooth test pattern: red grows left to right, green top to bottom, blue is constant.
fn gradient(x: u32, y: u32, w: u32, h: u32) -> [u8; 3] {
    let ramp = |v: u32, n: u32| (u64::from(v) * 255 / u64::from(n.max(2) - 1)) as u8;
    [ramp(x, w), ramp(y, h), 128]
}

fn rgb_pixels(w: u32, h: u32) -> Vec<u8> {
    let mut data = Vec::with_capacity(w as usize * h as usize * 3);
    for y in 0..h {
        for x in 0..w {
            data.extend_from_slice(&gradient(x, y, w, h));
        }
    }
    data
}

fn jpeg_of(
    data: &[u8],
    w: u32,
    h: u32,
    color: jpeg_encoder::ColorType,
    progressive: bool,
) -> Vec<u8> {
    let mut out = Vec::new();
    let mut encoder = jpeg_encoder::Encoder::new(&mut out, 90);
    // 4:2:0, as phone cameras write.
    encoder.set_sampling_factor(jpeg_encoder::SamplingFactor::F_2_2);
    encoder.set_progressive(progressive);
    encoder.encode(data, w as u16, h as u16, color).unwrap();
    out
}

fn jpeg(w: u32, h: u32) -> Vec<u8> {
    jpeg_of(&rgb_pixels(w, h), w, h, jpeg_encoder::ColorType::Rgb, false)
}

fn png_of(w: u32, h: u32, color: ::png::ColorType, depth: ::png::BitDepth, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut encoder = ::png::Encoder::new(&mut out, w, h);
        encoder.set_color(color);
        encoder.set_depth(depth);
        if color == ::png::ColorType::Indexed {
            encoder.set_palette(vec![255, 0, 0, 0, 0, 255]);
            encoder.set_trns(vec![255, 0]);
        }
        let mut writer = encoder.write_header().unwrap();
        writer.write_image_data(data).unwrap();
    }
    out
}

fn png(w: u32, h: u32) -> Vec<u8> {
    png_of(
        w,
        h,
        ::png::ColorType::Rgb,
        ::png::BitDepth::Eight,
        &rgb_pixels(w, h),
    )
}

/// A PNG written by hand (stored deflate blocks), so that it can be Adam7-interlaced or lie.
fn handmade_png(w: u32, h: u32, interlaced: bool, idat_rows: Option<usize>) -> Vec<u8> {
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
    fn chunk(out: &mut Vec<u8>, name: &[u8; 4], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let start = out.len();
        out.extend_from_slice(name);
        out.extend_from_slice(data);
        let crc = crc32(&out[start..]);
        out.extend_from_slice(&crc.to_be_bytes());
    }
    let mut raw = Vec::new();
    let mut rows = 0;
    let passes: &[(u32, u32, u32, u32)] = if interlaced {
        &super::decode_png::ADAM7
    } else {
        &[(0, 1, 0, 1)]
    };
    for &(x0, dx, y0, dy) in passes {
        if x0 >= w || y0 >= h {
            continue;
        }
        for y in (y0..h).step_by(dy as usize) {
            if idat_rows.is_some_and(|n| rows >= n) {
                break;
            }
            raw.push(0); // filter: none
            for x in (x0..w).step_by(dx as usize) {
                raw.extend_from_slice(&gradient(x, y, w, h));
            }
            rows += 1;
        }
    }
    let mut zlib = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = raw.chunks(65535).collect();
    for (i, block) in blocks.iter().enumerate() {
        zlib.push(u8::from(i + 1 == blocks.len()));
        let n = block.len() as u16;
        zlib.extend_from_slice(&n.to_le_bytes());
        zlib.extend_from_slice(&(!n).to_le_bytes());
        zlib.extend_from_slice(block);
    }
    if blocks.is_empty() {
        zlib.extend_from_slice(&[1, 0, 0, 0xFF, 0xFF]);
    }
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in &raw {
        a = (a + u32::from(byte)) % 65521;
        b = (b + a) % 65521;
    }
    zlib.extend_from_slice(&((b << 16) | a).to_be_bytes());
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, u8::from(interlaced)]);
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &zlib);
    chunk(&mut out, b"IEND", &[]);
    out
}

/// A one-frame GIF: a 4-colour palette, `indices` row by row in natural order.
fn gif_of(
    screen: (u16, u16),
    frame: (u16, u16, u16, u16),
    interlaced: bool,
    transparent: Option<u8>,
    indices: &[u8],
) -> Vec<u8> {
    let palette = [0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255];
    let (left, top, width, height) = frame;
    let mut buffer = Vec::with_capacity(indices.len());
    if interlaced {
        for (start, step) in [(0, 8), (4, 8), (2, 4), (1, 2)] {
            for y in (start..height as usize).step_by(step) {
                buffer.extend_from_slice(&indices[y * width as usize..][..width as usize]);
            }
        }
    } else {
        buffer.extend_from_slice(indices);
    }
    let mut out = Vec::new();
    {
        let mut encoder = ::gif::Encoder::new(&mut out, screen.0, screen.1, &palette).unwrap();
        let frame = ::gif::Frame {
            left,
            top,
            width,
            height,
            interlaced,
            transparent,
            buffer: Cow::Owned(buffer),
            ..Default::default()
        };
        encoder.write_frame(&frame).unwrap();
    }
    out
}

/// A GIF of `w × h` whose colours follow the gradient's quadrants.
fn gif(w: u16, h: u16, interlaced: bool) -> Vec<u8> {
    let indices: Vec<u8> = (0..h)
        .flat_map(|y| (0..w).map(move |x| u8::from(x >= w / 2) + 2 * u8::from(y >= h / 2)))
        .collect();
    gif_of((w, h), (0, 0, w, h), interlaced, None, &indices)
}

fn webp_lossless(w: u32, h: u32, alpha: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let (data, color) = if alpha {
        let data: Vec<u8> = rgb_pixels(w, h)
            .chunks(3)
            .flat_map(|p| [p[0], p[1], p[2], 0])
            .collect();
        (data, image_webp::ColorType::Rgba8)
    } else {
        (rgb_pixels(w, h), image_webp::ColorType::Rgb8)
    };
    image_webp::WebPEncoder::new(&mut out)
        .encode(&data, w, h, color)
        .unwrap();
    out
}

const LOSSY_WEBP: &[u8] = include_bytes!("testdata/lossy.webp"); // 1024 x 768
const LOSSY_ALPHA_WEBP: &[u8] = include_bytes!("testdata/lossy-alpha.webp"); // 96 x 64
const LOSSY_EXIF_WEBP: &[u8] = include_bytes!("testdata/lossy-exif.webp"); // 200 x 100, VP8X

/// The re-encoded JPEG, decoded by the `image` crate, with its reported size checked.
fn reencoded(
    result: Result<Normalised, ImageError>,
    source: (ImageType, u32, u32),
) -> image::RgbImage {
    match result {
        Ok(Normalised::Jpeg {
            bytes,
            width,
            height,
            source: info,
        }) => {
            assert_eq!((info.format, info.width, info.height), source);
            let img = image::load_from_memory_with_format(&bytes, image::ImageFormat::Jpeg)
                .unwrap()
                .to_rgb8();
            assert_eq!(img.dimensions(), (width, height));
            img
        }
        other => panic!("expected a re-encoded JPEG, got {other:?}"),
    }
}

/// Every output pixel is close to the gradient at the centre of its source area (4:2:0 chroma
/// blurs steep ramps of small images by a few levels).
fn assert_gradient(img: &image::RgbImage, src_w: u32, src_h: u32, tolerance: i32) {
    let (w, h) = img.dimensions();
    for (x, y, p) in img.enumerate_pixels() {
        let sx = ((f64::from(x) + 0.5) * f64::from(src_w) / f64::from(w)) as u32;
        let sy = ((f64::from(y) + 0.5) * f64::from(src_h) / f64::from(h)) as u32;
        let want = gradient(sx, sy, src_w, src_h);
        for c in 0..3 {
            let d = (i32::from(p[c]) - i32::from(want[c])).abs();
            assert!(
                d <= tolerance,
                "({x}, {y}) channel {c}: {} vs {}",
                p[c],
                want[c]
            );
        }
    }
}

fn limits() -> Limits {
    Limits::default()
}

#[test]
fn large_jpeg_photo_is_scaled_to_the_edge() {
    let file = jpeg(4000, 3000);
    let img = reencoded(
        normalise_bytes(&file, &limits()),
        (ImageType::Jpeg, 4000, 3000),
    );
    assert_eq!(img.dimensions(), (683, 512));
    assert_gradient(&img, 4000, 3000, 6);
}

#[test]
fn portrait_and_panorama_keep_their_aspect() {
    let img = reencoded(
        normalise_bytes(&jpeg(900, 1600), &limits()),
        (ImageType::Jpeg, 900, 1600),
    );
    assert_eq!(img.dimensions(), (512, 910));
    assert_gradient(&img, 900, 1600, 6);
    // 10:1: the long side stops at 4 x 512.
    let img = reencoded(
        normalise_bytes(&png(5000, 500), &limits()),
        (ImageType::Png, 5000, 500),
    );
    assert_eq!(img.dimensions(), (2048, 205));
    assert_eq!(output_size(4000, 3000, 512), (683, 512));
    assert_eq!(output_size(3000, 4000, 512), (512, 683));
    assert_eq!(output_size(512, 512, 512), (512, 512));
    assert_eq!(output_size(300, 200, 512), (300, 200));
    assert_eq!(output_size(100_000, 1, 512), (2048, 1));
    assert_eq!(output_size(1, 1, 512), (1, 1));
}

#[test]
fn small_jpeg_and_png_pass_unchanged() {
    for (file, format) in [
        (jpeg(400, 300), ImageType::Jpeg),
        (png(512, 200), ImageType::Png),
    ] {
        assert!(file.len() as u64 <= DEFAULT_PASSTHROUGH_BYTES);
        let (width, height) = if format == ImageType::Jpeg {
            (400, 300)
        } else {
            (512, 200)
        };
        assert_eq!(
            normalise_bytes(&file, &limits()),
            Ok(Normalised::Unchanged(ImageInfo {
                format,
                width,
                height
            }))
        );
    }
}

#[test]
fn small_images_that_need_re_encoding_are_not_upscaled() {
    // A small JPEG padded over the pass-through size with metadata.
    let big_small_jpeg = shared::image::header::with_app_segments(&jpeg(300, 200), 300_000);
    let img = reencoded(
        normalise_bytes(&big_small_jpeg, &limits()),
        (ImageType::Jpeg, 300, 200),
    );
    assert_eq!(img.dimensions(), (300, 200));
    assert_gradient(&img, 300, 200, 10);
    let img = reencoded(
        normalise_bytes(&gif(120, 80, false), &limits()),
        (ImageType::Gif, 120, 80),
    );
    assert_eq!(img.dimensions(), (120, 80));
    let img = reencoded(
        normalise_bytes(&webp_lossless(90, 60, false), &limits()),
        (ImageType::Webp, 90, 60),
    );
    assert_eq!(img.dimensions(), (90, 60));
    assert_gradient(&img, 90, 60, 10);
    // A lossy WebP inside the edge, and with alpha.
    let img = reencoded(
        normalise_bytes(LOSSY_EXIF_WEBP, &limits()),
        (ImageType::Webp, 200, 100),
    );
    assert_eq!(img.dimensions(), (200, 100));
    assert_gradient(&img, 200, 100, 10);
    let img = reencoded(
        normalise_bytes(LOSSY_ALPHA_WEBP, &limits()),
        (ImageType::Webp, 96, 64),
    );
    assert_eq!(img.dimensions(), (96, 64));
}

#[test]
fn every_format_is_downscaled() {
    let img = reencoded(
        normalise_bytes(&png(1600, 1200), &limits()),
        (ImageType::Png, 1600, 1200),
    );
    assert_eq!(img.dimensions(), (683, 512));
    assert_gradient(&img, 1600, 1200, 6);
    let img = reencoded(
        normalise_bytes(LOSSY_WEBP, &limits()),
        (ImageType::Webp, 1024, 768),
    );
    assert_eq!(img.dimensions(), (683, 512));
    assert_gradient(&img, 1024, 768, 10);
    let img = reencoded(
        normalise_bytes(&webp_lossless(1200, 900, false), &limits()),
        (ImageType::Webp, 1200, 900),
    );
    assert_eq!(img.dimensions(), (683, 512));
    assert_gradient(&img, 1200, 900, 6);
    let img = reencoded(
        normalise_bytes(&gif(1000, 800, true), &limits()),
        (ImageType::Gif, 1000, 800),
    );
    assert_eq!(img.dimensions(), (640, 512));
    // Quadrants: black, red / green, blue.
    for (x, y, want) in [
        (10, 10, [0, 0, 0]),
        (600, 10, [255, 0, 0]),
        (10, 500, [0, 255, 0]),
        (600, 500, [0, 0, 255]),
    ] {
        let got = img.get_pixel(x, y).0;
        assert!(
            got.iter()
                .zip(want)
                .all(|(&g, w)| (i32::from(g) - w).abs() < 8),
            "({x}, {y}): {got:?}"
        );
    }
}

#[test]
fn interlaced_png_matches_plain() {
    for (w, h) in [(1200, 700), (37, 23), (3, 1)] {
        let plain = normalise_bytes(
            &handmade_png(w, h, false, None),
            &Limits {
                passthrough_bytes: 0,
                ..limits()
            },
        );
        let interlaced = normalise_bytes(
            &handmade_png(w, h, true, None),
            &Limits {
                passthrough_bytes: 0,
                ..limits()
            },
        );
        assert_eq!(plain, interlaced, "{w}x{h}");
        let img = reencoded(interlaced, (ImageType::Png, w, h));
        if w > 16 {
            assert_gradient(&img, w, h, 10);
        }
    }
}

#[test]
fn interlaced_gif_matches_plain() {
    let plain = normalise_bytes(&gif(333, 222, false), &limits());
    let interlaced = normalise_bytes(&gif(333, 222, true), &limits());
    assert!(matches!(plain, Ok(Normalised::Jpeg { .. })));
    assert_eq!(plain, interlaced);
}

#[test]
fn colour_types_become_rgb() {
    let grey_jpeg = jpeg_of(
        &vec![77; 64 * 48],
        64,
        48,
        jpeg_encoder::ColorType::Luma,
        false,
    );
    let cmyk: Vec<u8> = (0..64 * 48).flat_map(|_| [255, 0, 0, 0]).collect(); // cyan
    let cmyk_jpeg = jpeg_of(&cmyk, 64, 48, jpeg_encoder::ColorType::Cmyk, false);
    let grey_png = png_of(
        64,
        48,
        ::png::ColorType::Grayscale,
        ::png::BitDepth::Eight,
        &vec![77; 64 * 48],
    );
    let wide: Vec<u8> = (0..64 * 48)
        .flat_map(|_| [0x40, 0x00, 0x80, 0x00, 0xC0, 0x00])
        .collect();
    let png16 = png_of(
        64,
        48,
        ::png::ColorType::Rgb,
        ::png::BitDepth::Sixteen,
        &wide,
    );
    // 1-bit palette: red and transparent blue in columns.
    let palette_png = png_of(
        64,
        48,
        ::png::ColorType::Indexed,
        ::png::BitDepth::One,
        &vec![0b1010_1010; 8 * 48],
    );
    let half_alpha: Vec<u8> = (0..64 * 48).flat_map(|_| [0, 0, 0, 128]).collect();
    let alpha_png = png_of(
        64,
        48,
        ::png::ColorType::Rgba,
        ::png::BitDepth::Eight,
        &half_alpha,
    );
    let transparent_gif = gif_of((64, 48), (0, 0, 64, 48), false, Some(1), &vec![1; 64 * 48]);
    let cases: [(&[u8], ImageType, [u8; 3]); 8] = [
        (&grey_jpeg, ImageType::Jpeg, [77; 3]),
        (&cmyk_jpeg, ImageType::Jpeg, [0, 255, 255]),
        (&grey_png, ImageType::Png, [77; 3]),
        (&png16, ImageType::Png, [0x40, 0x80, 0xC0]),
        // Red and white (transparent blue) columns, averaged by the JPEG encoder's chroma.
        (&palette_png, ImageType::Png, [255, 127, 127]),
        (&alpha_png, ImageType::Png, [127; 3]),
        (&transparent_gif, ImageType::Gif, [255; 3]),
        (&webp_lossless(64, 48, true), ImageType::Webp, [255; 3]),
    ];
    // Force re-encoding, and shrink to 32 x 24 so that neighbouring columns are averaged.
    let limits = Limits {
        passthrough_bytes: 0,
        edge: 24,
        ..limits()
    };
    for (i, (file, format, want)) in cases.into_iter().enumerate() {
        let img = reencoded(normalise_bytes(file, &limits), (format, 64, 48));
        let mean = |c: usize| {
            img.pixels().map(|p| u32::from(p[c])).sum::<u32>() / (img.width() * img.height())
        };
        for (c, &want) in want.iter().enumerate() {
            let got = mean(c) as i32;
            assert!(
                (got - i32::from(want)).abs() <= 6,
                "case {i} channel {c}: {got} vs {want}"
            );
        }
    }
}

#[test]
fn gif_frame_off_the_screen_edge() {
    // A 100 x 50 screen, a 40 x 30 black frame at (80, 30): the canvas grows to 120 x 60, and
    // all but 1200 of its 7200 pixels are white. Plain and interlaced, whole and downscaled.
    for (interlaced, edge, size) in [
        (false, 512, (120, 60)),
        (true, 512, (120, 60)),
        (false, 16, (32, 16)),
        (true, 16, (32, 16)),
    ] {
        let file = gif_of((100, 50), (80, 30, 40, 30), interlaced, None, &[0; 1200]);
        let limits = Limits { edge, ..limits() };
        let img = reencoded(normalise_bytes(&file, &limits), (ImageType::Gif, 120, 60));
        assert_eq!(img.dimensions(), size);
        let mean = img.pixels().map(|p| u32::from(p[1])).sum::<u32>() / (size.0 * size.1);
        assert!((207..=218).contains(&mean), "{interlaced} {edge}: {mean}");
    }
}

#[test]
fn progressive_jpeg_decodes_within_the_budget_and_fails_beyond() {
    let file = jpeg_of(
        &rgb_pixels(1200, 900),
        1200,
        900,
        jpeg_encoder::ColorType::Rgb,
        true,
    );
    let img = reencoded(
        normalise_bytes(&file, &limits()),
        (ImageType::Jpeg, 1200, 900),
    );
    assert_eq!(img.dimensions(), (683, 512));
    assert_gradient(&img, 1200, 900, 6);
    // Decoded at full size (1/2 would be narrower than 683): 6.5 MB of planes and output,
    // and for progressive 75 x 57 MCUs of 6 blocks of 128 bytes, 3.3 MB of coefficients.
    let tight = Limits {
        max_decode_bytes: 8 << 20,
        ..limits()
    };
    let err = normalise_bytes(&file, &tight).unwrap_err();
    assert_eq!(err.code(), "image_too_large", "{err}");
    assert!(err.message().contains("progressive JPEG"), "{err}");
    assert!(matches!(
        normalise_bytes(&jpeg(1200, 900), &tight),
        Ok(Normalised::Jpeg { .. })
    ));
}

#[test]
fn webp_beyond_the_decode_budget_is_too_large() {
    let tight = Limits {
        max_decode_bytes: 1 << 20,
        ..limits()
    };
    let err = normalise_bytes(&webp_lossless(600, 400, false), &tight).unwrap_err();
    assert_eq!(err.code(), "image_too_large", "{err}");
    // The lossy 1024 x 768 needs its planes (1.2 MB) and the downscaler (1.1 MB), not a
    // whole RGB frame (2.4 MB more).
    let tight = Limits {
        max_decode_bytes: 3 << 20,
        ..limits()
    };
    assert!(normalise_bytes(LOSSY_WEBP, &tight).is_ok());
}

#[test]
fn pixel_bombs_fail_from_the_header() {
    // IHDR claims 30000 x 30000; there is no real image data behind it.
    let bomb = handmade_png(30000, 30000, false, Some(0));
    let err = normalise_bytes(&bomb, &limits()).unwrap_err();
    assert_eq!(err.code(), "image_too_large");
    assert!(err.message().contains("30000x30000"), "{err}");
    // The same for every format's header.
    let mut jpeg_bomb = jpeg(16, 16);
    let sof = jpeg_bomb
        .windows(2)
        .position(|w| w == [0xFF, 0xC0])
        .unwrap();
    jpeg_bomb[sof + 5..sof + 9].copy_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF]);
    let mut gif_bomb = gif(16, 16, false);
    gif_bomb[6..10].copy_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF]);
    let webp_bomb = b"RIFF\x40\0\0\0WEBPVP8X\x0a\0\0\0\0\0\0\0\xff\x3f\x00\xff\x3f\x00".to_vec();
    for file in [jpeg_bomb, gif_bomb, webp_bomb] {
        assert_eq!(
            normalise_bytes(&file, &limits()).unwrap_err().code(),
            "image_too_large"
        );
    }
    // A lower limit applies.
    let small = Limits {
        max_pixels: 1000,
        ..limits()
    };
    assert_eq!(
        normalise_bytes(&png(40, 30), &small).unwrap_err().code(),
        "image_too_large"
    );
}

#[test]
fn corrupt_data_behind_a_valid_header_is_invalid() {
    fn spoil(mut file: Vec<u8>, from: usize) -> Vec<u8> {
        for (i, b) in file[from..].iter_mut().enumerate() {
            *b ^= (i as u8).wrapping_mul(151).wrapping_add(17);
        }
        file
    }
    let jpeg_file = jpeg(800, 600);
    let sos = jpeg_file
        .windows(2)
        .position(|w| w == [0xFF, 0xDA])
        .unwrap();
    let png_file = png(800, 600);
    let idat = png_file.windows(4).position(|w| w == b"IDAT").unwrap();
    let gif_file = gif(300, 200, false);
    let lzw = gif_file.len() - 40;
    let cases = [
        ("jpeg scan", spoil(jpeg_file.clone(), sos + 20)),
        ("png image data", spoil(png_file.clone(), idat + 10)),
        ("gif image data", spoil(gif_file, lzw)),
        ("webp lossless", spoil(webp_lossless(300, 200, false), 40)),
        ("not an image", b"%PDF-1.7 ...".to_vec()),
        ("empty", Vec::new()),
    ];
    for (what, file) in cases {
        let err = normalise_bytes(&file, &limits()).unwrap_err();
        assert_eq!(err.code(), "invalid_image", "{what}: {err}");
        assert!(err.is_permanent());
    }
    // Small files are checked too before they pass unchanged.
    let small = jpeg(200, 100);
    let sos = small.windows(2).position(|w| w == [0xFF, 0xDA]).unwrap();
    let err = normalise_bytes(&small[..sos + 200], &limits()).unwrap_err();
    assert_eq!(err.code(), "invalid_image", "{err}");
    let small = png(200, 100);
    let err = normalise_bytes(&spoil(small, 60), &limits()).unwrap_err();
    assert_eq!(err.code(), "invalid_image", "{err}");
}

#[test]
fn truncated_files_are_invalid() {
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("jpeg", jpeg(700, 500)),
        (
            "progressive jpeg",
            jpeg_of(
                &rgb_pixels(700, 500),
                700,
                500,
                jpeg_encoder::ColorType::Rgb,
                true,
            ),
        ),
        ("png", png(700, 500)),
        ("interlaced png", handmade_png(300, 200, true, None)),
        ("gif", gif(300, 200, true)),
        ("lossy webp", LOSSY_WEBP.to_vec()),
        ("lossless webp", webp_lossless(300, 200, true)),
    ];
    for (what, file) in files {
        for keep in [8, 20, 100, file.len() / 3, file.len() / 2, file.len() - 10] {
            let result = normalise_bytes(&file[..keep], &limits());
            match result {
                Err(ImageError::Invalid(_)) => {}
                // A progressive JPEG's early scans are a complete (blurry) image.
                Ok(_) if what == "progressive jpeg" => {}
                other => panic!("{what} cut to {keep} of {} bytes: {other:?}", file.len()),
            }
        }
    }
}

/// A reader whose reads fail after `ok` bytes.
struct Failing<'a> {
    inner: Cursor<&'a [u8]>,
    ok: u64,
}

impl Read for Failing<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.inner.position() >= self.ok {
            return Err(io::Error::other("connection reset"));
        }
        let n = buf.len().min((self.ok - self.inner.position()) as usize);
        self.inner.read(&mut buf[..n])
    }
}

impl BufRead for Failing<'_> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.inner.position() >= self.ok {
            return Err(io::Error::other("connection reset"));
        }
        let (pos, ok) = (self.inner.position() as usize, self.ok as usize);
        Ok(&self.inner.get_ref()[pos..ok.min(self.inner.get_ref().len())])
    }

    fn consume(&mut self, amt: usize) {
        self.inner.consume(amt)
    }
}

impl Seek for Failing<'_> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.inner.seek(pos)
    }
}

#[test]
fn reader_failures_are_not_blamed_on_the_image() {
    for file in [
        jpeg(800, 600),
        png(800, 600),
        gif(300, 200, false),
        LOSSY_WEBP.to_vec(),
    ] {
        let reader = Failing {
            inner: Cursor::new(&file),
            ok: file.len() as u64 / 2,
        };
        let err = normalise(reader, file.len() as u64, &limits()).unwrap_err();
        assert_eq!(err.code(), "image_read_failed", "{err}");
        assert!(!err.is_permanent());
    }
}

#[test]
fn the_reader_is_read_in_pieces() {
    // A BufReader with a tiny buffer over the file: same result as the bytes.
    for file in [
        jpeg(800, 600),
        png(800, 600),
        gif(300, 200, true),
        LOSSY_WEBP.to_vec(),
        LOSSY_EXIF_WEBP.to_vec(),
    ] {
        let reader = io::BufReader::with_capacity(7, Cursor::new(&file));
        assert_eq!(
            normalise(reader, file.len() as u64, &limits()),
            normalise_bytes(&file, &limits())
        );
    }
}

#[test]
fn jpeg_header_beyond_the_read_limit_is_left_to_the_decoder() {
    let file = shared::image::header::with_app_segments(&jpeg(1000, 800), 1_200_000);
    let img = reencoded(
        normalise_bytes(&file, &limits()),
        (ImageType::Jpeg, 1000, 800),
    );
    assert_eq!(img.dimensions(), (640, 512));
    let mut bomb = shared::image::header::with_app_segments(&jpeg(16, 16), 1_200_000);
    let sof = bomb.windows(2).rposition(|w| w == [0xFF, 0xC0]).unwrap();
    bomb[sof + 5..sof + 9].copy_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF]);
    assert_eq!(
        normalise_bytes(&bomb, &limits()).unwrap_err().code(),
        "image_too_large"
    );
}

#[test]
fn limits_from_vars() {
    assert_eq!(Limits::from_vars(None, None), Limits::default());
    let l = Limits::from_vars(Some("1000000"), Some(" 256 "));
    assert_eq!((l.max_pixels, l.edge), (1_000_000, 256));
    let l = Limits::from_vars(Some("lots"), Some("-1"));
    assert_eq!(l, Limits::default());
    // Absurd edges are clamped rather than obeyed.
    let file = jpeg(400, 300);
    let tiny = Limits {
        edge: 1,
        passthrough_bytes: 0,
        ..limits()
    };
    let img = reencoded(normalise_bytes(&file, &tiny), (ImageType::Jpeg, 400, 300));
    assert_eq!(img.dimensions(), (21, 16));
}

#[test]
fn errors_have_stable_codes() {
    assert_eq!(ImageError::TooLarge("x".into()).code(), "image_too_large");
    assert_eq!(ImageError::Invalid("x".into()).code(), "invalid_image");
    assert_eq!(
        ImageError::Invalid("bad".into()).to_string(),
        "invalid_image: bad"
    );
}

/// Small real files of every format, to mutate.
fn seeds() -> &'static [Vec<u8>] {
    static SEEDS: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
    SEEDS.get_or_init(|| {
        vec![
            jpeg(40, 30),
            jpeg_of(
                &rgb_pixels(40, 30),
                40,
                30,
                jpeg_encoder::ColorType::Rgb,
                true,
            ),
            png(40, 30),
            handmade_png(20, 12, true, None),
            gif(40, 30, true),
            webp_lossless(40, 30, true),
            LOSSY_ALPHA_WEBP.to_vec(),
            LOSSY_EXIF_WEBP.to_vec(),
        ]
    })
}

fn any_magic() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"\xff\xd8\xff".to_vec()),
        Just(
            b"\xff\xd8\xff\xc0\x00\x11\x08\x00\x20\x00\x20\x03\x01\x22\x00\x02\x11\x01\x03\x11\x01"
                .to_vec()
        ),
        Just(b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR\0\0\0\x20\0\0\0\x20".to_vec()),
        Just(b"GIF89a\x20\x00\x20\x00\x80\x00\x00".to_vec()),
        Just(b"RIFF\x00\x10\0\0WEBPVP8 ".to_vec()),
        Just(b"RIFF\x00\x10\0\0WEBPVP8L".to_vec()),
        Just(b"RIFF\x00\x10\0\0WEBPVP8X\x0a\0\0\0\x10\0\0\0\x1f\0\0\x1f\0\0".to_vec()),
    ]
}

fn outcome_is_sane(result: &Result<Normalised, ImageError>) -> bool {
    match result {
        Ok(Normalised::Jpeg {
            bytes,
            width,
            height,
            ..
        }) => !bytes.is_empty() && *width >= 1 && *height >= 1,
        Ok(Normalised::Unchanged(_)) => true,
        Err(e) => e.is_permanent(),
    }
}

proptest! {
    // 256 cases; PROPTEST_CASES=N for a longer fuzzing session.
    /// Random bytes behind each magic number never panic.
    #[test]
    fn random_bytes_behind_a_magic_number(magic in any_magic(), rest in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let mut file = magic;
        file.extend_from_slice(&rest);
        let result = normalise_bytes(&file, &limits());
        prop_assert!(outcome_is_sane(&result), "{:?}", result);
    }

    /// Real files with bytes flipped or cut never panic.
    #[test]
    fn mutated_real_files(
        seed in 0usize..8,
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
        do_cut in any::<bool>(),
    ) {
        let mut file = seeds()[seed].clone();
        for (at, value) in flips {
            let i = at.index(file.len());
            file[i] ^= value;
        }
        if do_cut {
            file.truncate(cut.index(file.len() + 1));
        }
        let limits = Limits { passthrough_bytes: 0, ..limits() };
        let result = normalise_bytes(&file, &limits);
        prop_assert!(outcome_is_sane(&result), "{:?}", result);
    }
}

#[test]
fn image_errors_map_to_tag_errors() {
    for (e, code, retry) in [
        (ImageError::TooLarge("x".into()), "image_too_large", false),
        (ImageError::Invalid("x".into()), "invalid_image", false),
        (ImageError::Read("x".into()), "storage_unavailable", true),
    ] {
        let tag = TagError::from(e.clone());
        assert_eq!(tag.code(), code);
        assert_eq!(tag.is_retryable(), retry);
        if e.is_permanent() {
            assert_eq!(tag.code(), e.code());
        }
    }
}
