// Small but valid image bodies, unique per call so that each upload is its own image.

import { randomBytes } from "node:crypto";

const PNG_MAGIC = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
const JPEG_MAGIC = Buffer.from([0xff, 0xd8, 0xff, 0xe0]);

/** 64×64 in IHDR: the upload reads the size, and refuses more than MAX_PIXELS. */
const IHDR_64 = Buffer.from("\0\0\0\rIHDR\0\0\0\x40\0\0\0\x40", "latin1");

/** A PNG-signed body (64×64 in its header) with random content: sniffing and the pixel check
 *  only read the header. */
export function png(size = 256) {
  return Buffer.concat([PNG_MAGIC, IHDR_64, randomBytes(Math.max(0, size - 24))]).subarray(0, Math.max(size, 8));
}

/** A JPEG-signed body with random content. */
export function jpeg(size = 256) {
  return Buffer.concat([JPEG_MAGIC, randomBytes(Math.max(0, size - 4))]);
}

/** A GIF-signed body: a 1×1 screen and image descriptor, then random bytes. */
export function gif(size = 64) {
  const header = Buffer.from("GIF89a\x01\0\x01\0\0\0\0\x2c\0\0\0\0\x01\0\x01\0", "latin1");
  return Buffer.concat([header, randomBytes(Math.max(0, size - header.length))]).subarray(0, Math.max(size, 6));
}

/** A WebP-signed body. */
export function webp(size = 64) {
  return Buffer.concat([Buffer.from("RIFF"), Buffer.alloc(4), Buffer.from("WEBPVP8 "), randomBytes(Math.max(0, size - 16))]);
}
