// Small but valid image bodies, unique per call so that each upload is its own image.

import { randomBytes } from "node:crypto";

const PNG_MAGIC = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
const JPEG_MAGIC = Buffer.from([0xff, 0xd8, 0xff, 0xe0]);

/** A PNG-signed body with random content (sniffing only promises the type). */
export function png(size = 256) {
  return Buffer.concat([PNG_MAGIC, Buffer.from("\0\0\0\rIHDR"), randomBytes(Math.max(0, size - 16))]);
}

/** A JPEG-signed body with random content. */
export function jpeg(size = 256) {
  return Buffer.concat([JPEG_MAGIC, randomBytes(Math.max(0, size - 4))]);
}

/** A GIF-signed body. */
export function gif(size = 64) {
  return Buffer.concat([Buffer.from("GIF89a"), randomBytes(Math.max(0, size - 6))]);
}

/** A WebP-signed body. */
export function webp(size = 64) {
  return Buffer.concat([Buffer.from("RIFF"), Buffer.alloc(4), Buffer.from("WEBPVP8 "), randomBytes(Math.max(0, size - 16))]);
}
