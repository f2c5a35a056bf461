// Builds a stored message's MIME tree (protocol/imap/mime.ts) with mailsplit, the MIME
// splitter WildDuck's IMAP server uses: it emits the message as nodes (headers) and body
// chunks whose bytes, joined, are the message again, so running sums give each part's
// offsets. Trees are cached by body hash (bodies are content-addressed and immutable), so
// a body's structure is computed once per node while it stays in the cache.
import { Splitter } from "@zone-eu/mailsplit";
import libmime from "libmime";
import type { MimePart } from "../../protocol/imap/mime.ts";

interface Building {
  headerStart: number;
  bodyStart: number;
  bodyEnd: number;
  type: string;
  subtype: string;
  params: Record<string, string>;
  id?: string | undefined;
  description?: string | undefined;
  encoding: string;
  md5?: string | undefined;
  disposition?: { type: string; params: Record<string, string> } | undefined;
  language?: string | undefined;
  location?: string | undefined;
  lines: number;
  children: Building[];
  /** The message inside a message/rfc822 part, already frozen (and placed). */
  embedded?: MimePart | undefined;
  endsWithLf?: boolean;
  /** A multipart whose closing boundary was seen. */
  closed?: boolean;
  parent: Building | undefined;
  /** mailsplit's node, to know which part a later node belongs under. */
  node: unknown;
}

interface SplitNode {
  readonly type: "node";
  readonly root: boolean;
  readonly parentNode: SplitNode | false;
  readonly multipart: string | false;
  readonly rfc822: boolean;
  readonly messageNode?: boolean;
  readonly headers: { get: (key: string) => string[] } | false;
  getHeaders(): Buffer;
}

type Chunk = SplitNode | { readonly type: "data" | "body"; readonly value: Buffer };

const headerValue = (node: SplitNode, key: string): string | undefined => {
  const lines = node.headers ? node.headers.get(key) : [];
  const line = lines[0];
  if (line === undefined) return undefined;
  const colon = line.indexOf(":");
  return line.slice(colon + 1).replace(/\r?\n[ \t]+/g, " ").trim();
};

const countLines = (bytes: Buffer): number => {
  let lines = 0;
  for (let i = bytes.indexOf(0x0a); i !== -1; i = bytes.indexOf(0x0a, i + 1)) lines++;
  return lines;
};

const partOf = (node: SplitNode, offset: number, parent: Building | undefined): Building => {
  const header = node.getHeaders();
  const contentType = libmime.parseHeaderValue(headerValue(node, "content-type") ?? (parent?.subtype === "digest" ? "message/rfc822" : "text/plain"));
  const [type = "text", subtype = "plain"] = contentType.value.toLowerCase().split("/");
  const dispositionText = headerValue(node, "content-disposition");
  const disposition = dispositionText ? libmime.parseHeaderValue(dispositionText) : undefined;
  return {
    headerStart: offset,
    bodyStart: offset + header.length,
    bodyEnd: offset + header.length,
    type,
    subtype,
    params: contentType.params,
    id: headerValue(node, "content-id"),
    description: headerValue(node, "content-description"),
    encoding: (headerValue(node, "content-transfer-encoding") ?? "7bit").toLowerCase(),
    md5: headerValue(node, "content-md5"),
    disposition: disposition ? { type: disposition.value.toLowerCase(), params: disposition.params } : undefined,
    language: headerValue(node, "content-language"),
    location: headerValue(node, "content-location"),
    lines: 0,
    children: [],
    parent,
    node,
  };
};

const freeze = (part: Building): MimePart => ({
  headerStart: part.headerStart,
  bodyStart: part.bodyStart,
  bodyEnd: part.bodyEnd,
  type: part.type,
  subtype: part.subtype,
  params: part.params,
  id: part.id,
  description: part.description,
  encoding: part.encoding,
  md5: part.md5,
  disposition: part.disposition,
  language: part.language,
  location: part.location,
  // A last line without its line break (the delimiter's CRLF took it) is a line too.
  lines: part.lines + (part.bodyEnd > part.bodyStart && part.endsWithLf === false ? 1 : 0),
  children: part.children.map(freeze),
  message: part.embedded,
});

/** The part that a structural chunk (preamble, boundary, epilogue) after `current` belongs to. */
const containerOf = (current: Building | undefined): Building | undefined => {
  let part = current;
  while (part !== undefined && (part.type !== "multipart" || part.closed)) part = part.parent;
  return part;
};

/**
 * The message's MIME tree; a message mailsplit cannot split is one text/plain part.
 * mailsplit chunks: `node` (a part's header), `body` (a part's content) and `data`
 * (preambles, boundaries with the CRLF before them, epilogues: the multipart's own body).
 */
const mimeTreeOf = (message: Uint8Array, base = 0): Promise<MimePart> =>
  new Promise((resolve) => {
    const bytes = Buffer.from(message.buffer, message.byteOffset, message.byteLength);
    // Embedded messages are split below, by a tree of their own, whatever their disposition.
    const splitter = new Splitter({ ignoreEmbedded: true } as never);
    const events = splitter as unknown as NodeJS.EventEmitter;
    const byNode = new Map<unknown, Building>();
    let root: Building | undefined;
    let offset = 0;
    let current: Building | undefined;
    const grow = (part: Building | undefined, end: number) => {
      for (let p = part; p !== undefined; p = p.parent) if (p.bodyEnd < end) p.bodyEnd = end;
    };
    events.on("data", (chunk: Chunk) => {
      if (chunk.type === "node") {
        const parentNode = chunk.parentNode === false ? undefined : byNode.get(chunk.parentNode);
        const part = partOf(chunk, offset, parentNode);
        byNode.set(chunk, part);
        if (parentNode === undefined) root ??= part;
        else parentNode.children.push(part);
        offset = part.bodyStart;
        grow(parentNode, offset);
        current = part;
        return;
      }
      offset += chunk.value.length;
      if (chunk.type === "body" && current !== undefined) {
        current.lines += countLines(chunk.value);
        if (chunk.value.length > 0) current.endsWithLf = chunk.value[chunk.value.length - 1] === 0x0a;
        grow(current, offset);
        return;
      }
      const container = containerOf(current);
      grow(container, offset);
      const boundary = container?.params.boundary;
      if (container !== undefined && boundary !== undefined && chunk.value.includes(`--${boundary}--`)) {
        container.closed = true;
        current = container;
      }
    });
    const fallback = (): MimePart => ({
      headerStart: base, bodyStart: base, bodyEnd: base + bytes.length, type: "text", subtype: "plain", params: {}, encoding: "7bit", lines: countLines(bytes), children: [],
    });
    events.on("end", () => {
      if (root === undefined) return resolve(fallback());
      // The root's body runs to the message's end (trailing epilogue included).
      root.bodyEnd = bytes.length;
      void embed(bytes, root).then(() => resolve(shift(freeze(root!), base)), () => resolve(fallback()));
    });
    events.on("error", () => resolve(fallback()));
    splitter.end(bytes);
  });

/** Splits each message/rfc822 part (not transfer-encoded) into a tree of its own. */
const embed = async (bytes: Buffer, part: Building): Promise<void> => {
  for (const child of part.children) await embed(bytes, child);
  if (part.type === "message" && part.subtype === "rfc822" && ["7bit", "8bit", "binary"].includes(part.encoding)) {
    part.embedded = await mimeTreeOf(bytes.subarray(part.bodyStart, part.bodyEnd), part.bodyStart);
  }
};

const shift = (part: MimePart, by: number): MimePart =>
  by === 0
    ? part
    : {
        ...part,
        headerStart: part.headerStart + by,
        bodyStart: part.bodyStart + by,
        bodyEnd: part.bodyEnd + by,
        children: part.children.map((child) => shift(child, by)),
        message: part.message && shift(part.message, by),
      };

/** Trees by body hash, least recently used dropped past `maxEntries`. */
export const makeMimeCache = (maxEntries: number) => {
  const trees = new Map<string, Promise<MimePart>>();
  return (hash: string, body: Uint8Array): Promise<MimePart> => {
    const cached = trees.get(hash);
    if (cached !== undefined) {
      trees.delete(hash);
      trees.set(hash, cached);
      return cached;
    }
    const tree = mimeTreeOf(body);
    trees.set(hash, tree);
    if (trees.size > maxEntries) trees.delete(trees.keys().next().value!);
    return tree;
  };
};
