// Small real images of every accepted format, unique per call (so that each upload is its own
// image) and padded to an exact size with data every decoder skips: a private PNG chunk, JPEG
// comment segments, a GIF comment after the image, an unknown RIFF chunk in a WebP. They
// decode, so the tagger's normalisation treats them like photos; `garbage*()` give bodies that
// only start like an image, for tests of what the upload's sniffing alone accepts.

import { randomBytes } from "node:crypto";

import { crc32, encodePng } from "./png.mjs";

const PNG_END = 12; // the IEND chunk
/** An 8×8 greyscale baseline JPEG (made with sharp). */
const JPEG_8 = Buffer.from(
  "/9j/2wBDABALDA4MChAODQ4SERATGCgaGBYWGDEjJR0oOjM9PDkzODdASFxOQERXRTc4UG1RV19iZ2hnPk1xeXBkeFxlZ2P/wAALCAAIAAgBAREA/8QAFAABAAAAAAAAAAAAAAAAAAAABP/EABQQAQAAAAAAAAAAAAAAAAAAAAD/2gAIAQEAAD8AC//Z",
  "base64",
);
/** A 2×2 lossy WebP (made with sharp). */
const WEBP_2 = Buffer.from("UklGRjYAAABXRUJQVlA4ICoAAACwAQCdASoCAAIAAsBMJQBOgCHfwF2AAP7mzKdVMs2j3pa4a+BJWrRwAAA=", "base64");
/** A 1×1 GIF: header, one-colour table, the image, then the trailer. */
const GIF_1 = Buffer.from("R0lGODlhAQABAIAAAP///wAAACH5BAEAAAAALAAAAAABAAEAAAICRAEAOw==", "base64");

/** A real PNG of `size` bytes (at least 100): random 2×2 pixels, padded with a private chunk. */
export function png(size = 256) {
  const base = encodePng(2, 2, () => [...randomBytes(3)]);
  const room = size - base.length - 12;
  if (room < 0) throw new Error(`png(): ${size} bytes is smaller than the image (${base.length + 12})`);
  const chunk = Buffer.alloc(12 + room);
  chunk.writeUInt32BE(room, 0);
  chunk.write("prVt", 4, "latin1"); // ancillary, private: decoders skip it
  randomBytes(room).copy(chunk, 8);
  chunk.writeUInt32BE(crc32(chunk.subarray(4, 8 + room)), 8 + room);
  return Buffer.concat([base.subarray(0, base.length - PNG_END), chunk, base.subarray(base.length - PNG_END)]);
}

/** A real JPEG of `size` bytes (at least 145): an 8×8 image after comment segments. */
export function jpeg(size = 512) {
  const room = size - JPEG_8.length;
  if (room < 0 || (room > 0 && room < 4)) throw new Error(`jpeg(): ${size} bytes does not fit`);
  const count = Math.ceil(room / (4 + 65533));
  let data = room - 4 * count;
  const segments = [];
  for (let i = 0; i < count; i++) {
    const take = Math.floor(data / (count - i));
    data -= take;
    const segment = Buffer.alloc(4 + take);
    segment[0] = 0xff;
    segment[1] = 0xfe; // COM: decoders skip it
    segment.writeUInt16BE(take + 2, 2);
    randomBytes(take).copy(segment, 4);
    segments.push(segment);
  }
  return Buffer.concat([JPEG_8.subarray(0, 2), ...segments, JPEG_8.subarray(2)]);
}

/** A real GIF of `size` bytes (at least 64): a 1×1 image, then a comment of random bytes. */
export function gif(size = 64) {
  let room = size - GIF_1.length - 3; // the comment's introducer, label and terminator
  if (room < 2) throw new Error(`gif(): ${size} bytes is too small`);
  const blocks = [Buffer.from([0x21, 0xfe])];
  while (room > 0) {
    const n = Math.min(room - 1, 255);
    blocks.push(Buffer.from([n]), randomBytes(n));
    room -= n + 1;
  }
  blocks.push(Buffer.from([0]));
  return Buffer.concat([GIF_1.subarray(0, GIF_1.length - 1), ...blocks, GIF_1.subarray(GIF_1.length - 1)]);
}

/** A real WebP of `size` bytes (at least 70, even): a 2×2 lossy image and an unknown chunk. */
export function webp(size = 320) {
  const room = size - WEBP_2.length - 8;
  if (room < 0 || room % 2) throw new Error(`webp(): ${size} bytes does not fit (even sizes from ${WEBP_2.length + 8})`);
  const chunk = Buffer.alloc(8 + room);
  chunk.write("XTRA", 0, "latin1");
  chunk.writeUInt32LE(room, 4);
  randomBytes(room).copy(chunk, 8);
  const out = Buffer.concat([WEBP_2, chunk]);
  out.writeUInt32LE(out.length - 8, 4);
  return out;
}

/** A body that starts like a PNG (magic and an IHDR of 64×64) and is random after that. */
export function garbagePng(size = 256) {
  const head = Buffer.from("89504e470d0a1a0a0000000d4948445200000040000000400802000000", "hex");
  return Buffer.concat([head, randomBytes(Math.max(0, size - head.length))]);
}

/** A body that starts like a JPEG and is random after that. */
export function garbageJpeg(size = 256) {
  return Buffer.concat([Buffer.from([0xff, 0xd8, 0xff, 0xe0]), randomBytes(Math.max(0, size - 4))]);
}
