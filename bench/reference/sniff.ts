// The image type check the TS upload variants share: the magic bytes of the four formats
// the pipeline accepts, as `crates/shared/src/image/format.rs` reads them.

const TYPES = {
  jpeg: { mime: "image/jpeg", ext: "jpg" },
  png: { mime: "image/png", ext: "png" },
  gif: { mime: "image/gif", ext: "gif" },
  webp: { mime: "image/webp", ext: "webp" },
} as const;
export type ImageType = (typeof TYPES)[keyof typeof TYPES];

/** Recognises JPEG, PNG, GIF and WebP from their magic bytes. */
export function sniff(b: Uint8Array): ImageType | null {
  const ascii = (start: number, text: string) =>
    [...text].every((c, i) => b[start + i] === c.charCodeAt(0));
  if (b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff) return TYPES.jpeg;
  if (b[0] === 0x89 && ascii(1, "PNG\r\n\x1a\n")) return TYPES.png;
  if (ascii(0, "GIF8") && (b[4] === 0x37 || b[4] === 0x39) && b[5] === 0x61) return TYPES.gif;
  if (ascii(0, "RIFF") && ascii(8, "WEBP")) return TYPES.webp;
  return null;
}
