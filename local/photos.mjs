// Large photos, made at test time (nothing is committed): real JPEG, PNG and WebP files of
// phone-camera size, generated with sharp from a seeded gradient with noise, so that they
// compress like photos (a 4000×3000 JPEG at quality 92 is about 7 MB). Also a decompression
// bomb and a corrupt JPEG whose header is valid.

import sharp from "sharp";

import { crc32, encodePng } from "./png.mjs";

/** Raw RGB pixels of a smooth, noisy picture, the same for the same seed. */
function pixels(width, height, seed) {
  const raw = Buffer.alloc(width * height * 3);
  let state = seed >>> 0 || 1;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      state = (Math.imul(state, 1103515245) + 12345) >>> 0;
      const noise = (state >>> 24) / 6;
      const i = (y * width + x) * 3;
      raw[i] = ((x * 255) / width + noise + seed) & 255;
      raw[i + 1] = ((y * 255) / height + noise) & 255;
      raw[i + 2] = ((x + y + seed * 7) % 256) + noise / 2;
    }
  }
  return sharp(raw, { raw: { width, height, channels: 3 } });
}

/** A `width`×`height` JPEG photo (default 4000×3000, about 7 MB). */
export function largeJpeg({ width = 4000, height = 3000, seed = 1, quality = 92 } = {}) {
  return pixels(width, height, seed).jpeg({ quality }).toBuffer();
}

/** A `width`×`height` PNG photo. */
export function largePng({ width = 2000, height = 1500, seed = 1 } = {}) {
  return pixels(width, height, seed).png({ compressionLevel: 1 }).toBuffer();
}

/** A `width`×`height` lossy WebP photo. */
export function largeWebp({ width = 3000, height = 2000, seed = 1 } = {}) {
  return pixels(width, height, seed).webp({ quality: 85 }).toBuffer();
}

/**
 * A decompression bomb: a small, valid PNG whose header claims `width`×`height` (default
 * 30000×30000, 900 megapixels) of one colour.
 */
export function bombPng(width = 30_000, height = 30_000) {
  const small = encodePng(1, 1, () => [0, 0, 0]);
  // IHDR's width and height sit right after the signature and the chunk's length and type.
  const bomb = Buffer.from(small);
  bomb.writeUInt32BE(width, 16);
  bomb.writeUInt32BE(height, 20);
  return fixIhdrCrc(bomb);
}

/**
 * A corrupt JPEG: a valid start and frame header (640×480), but its Huffman tables turned
 * into comments, so that its image data cannot be decoded.
 */
export async function corruptJpeg() {
  const bad = Buffer.from(await largeJpeg({ width: 640, height: 480, seed: 3 }));
  for (let i = 2; i < bad.length - 4; ) {
    const marker = bad[i + 1];
    if (marker === 0xda) break; // start of scan: the data follows
    if (marker === 0xc4) bad[i + 1] = 0xfe; // DHT -> COM
    i += 2 + bad.readUInt16BE(i + 2);
  }
  return bad;
}

function fixIhdrCrc(png) {
  png.writeUInt32BE(crc32(png.subarray(12, 29)), 29);
  return png;
}
