//! Heap use of `imaging`, counted by this test binary's global allocator.

mod counting_alloc;

use counting_alloc::peak;
use imaging::{normalise, normalise_bytes, Limits, Normalised};
use std::io::Cursor;

fn gradient(w: u32, h: u32) -> Vec<u8> {
    let mut data = Vec::with_capacity(w as usize * h as usize * 3);
    for y in 0..h {
        for x in 0..w {
            data.extend_from_slice(&[(x * 255 / w) as u8, (y * 255 / h) as u8, 128]);
        }
    }
    data
}

fn jpeg(w: u32, h: u32) -> Vec<u8> {
    let mut out = Vec::new();
    let mut encoder = jpeg_encoder::Encoder::new(&mut out, 90);
    encoder.set_sampling_factor(jpeg_encoder::SamplingFactor::F_2_2);
    encoder
        .encode(
            &gradient(w, h),
            w as u16,
            h as u16,
            jpeg_encoder::ColorType::Rgb,
        )
        .unwrap();
    out
}

fn png(w: u32, h: u32) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, w, h);
        encoder.set_color(png::ColorType::Rgb);
        let mut writer = encoder.write_header().unwrap();
        writer.write_image_data(&gradient(w, h)).unwrap();
    }
    out
}

const MIB: usize = 1 << 20;

/// One test, so that nothing else allocates while it measures.
#[test]
fn heap_stays_bounded() {
    let limits = Limits::default();

    // A PNG whose IHDR claims 30000 x 30000 fails from the header, after allocating only the
    // 4 KiB the header is read into.
    let mut bomb =
        b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR\0\0\x75\x30\0\0\x75\x30\x08\x02\0\0\0".to_vec();
    bomb.extend_from_slice(&[0; 4]); // CRC, never read
    let (result, used) = peak(|| normalise_bytes(&bomb, &limits));
    assert_eq!(result.unwrap_err().code(), "image_too_large");
    assert!(used <= 8 << 10, "the bomb allocated {used} bytes");

    // A 4000 x 3000 JPEG (36 MB as RGB) is decoded at 1/4 scale: a few MiB, also read
    // through a reader.
    let photo = jpeg(4000, 3000);
    let (result, used) = peak(|| normalise_bytes(&photo, &limits));
    assert!(matches!(
        result,
        Ok(Normalised::Jpeg {
            width: 683,
            height: 512,
            ..
        })
    ));
    assert!(used < 10 * MIB, "4000x3000 JPEG: {used} bytes");
    let (result, used) = peak(|| normalise(Cursor::new(&photo), photo.len() as u64, &limits));
    assert!(matches!(result, Ok(Normalised::Jpeg { .. })));
    assert!(
        used < 10 * MIB,
        "4000x3000 JPEG through a reader: {used} bytes"
    );

    // A 3000 x 2000 PNG (18 MB as RGB) is read row by row.
    let file = png(3000, 2000);
    let (result, used) = peak(|| normalise_bytes(&file, &limits));
    assert!(matches!(
        result,
        Ok(Normalised::Jpeg {
            width: 768,
            height: 512,
            ..
        })
    ));
    assert!(used < 2 * MIB, "3000x2000 PNG: {used} bytes");
}
