// 8-bit and UTF-8 mail for hosts that did not announce 8BITMIME (RFC 6152) or SMTPUTF8
// (RFC 6531). A single-part message whose header section is ASCII is re-encoded as
// quoted-printable, which keeps its meaning; anything else (multipart bodies, 8-bit
// headers, UTF-8 addresses) cannot be converted here and fails with a 5.6.x status.
import { isAscii as isAsciiBytes } from "node:buffer";
import { encode as encodeQp, wrap as wrapQp } from "nodemailer/lib/qp";
import { headerSectionEnd } from "./dsn.ts";

/** Any octet above 127. Node's native scan: every outbound message is checked, and a loop in JS cost ~1.5% of relay CPU. */
export const hasEightBit = (bytes: Uint8Array): boolean => !isAsciiBytes(bytes);

export const isAscii = (text: string): boolean => /^[\x00-\x7f]*$/.test(text);

export type Downgrade = { readonly ok: true; readonly body: Buffer } | { readonly ok: false; readonly detail: string };

/** The message as 7-bit, or why it cannot be (the recipients fail with RFC 3463 5.6.3: conversion required but not supported). */
export const downgradeTo7bit = (message: Uint8Array): Downgrade => {
  const bytes = Buffer.from(message.buffer, message.byteOffset, message.byteLength);
  const end = headerSectionEnd(bytes);
  const header = bytes.subarray(0, end);
  const unsupported = (detail: string) => ({ ok: false, detail }) as const;
  if (hasEightBit(header)) return unsupported("8-bit header fields");
  const headerText = header.toString("latin1");
  const contentType = fieldValue(headerText, "content-type")?.toLowerCase() ?? "text/plain";
  if (contentType.startsWith("multipart/") || contentType.startsWith("message/")) return unsupported(`8-bit ${contentType.split(";")[0]} body`);
  const body = bytes.subarray(end);
  const encoded = wrapQp(encodeQp(body), 76).replace(/\r?\n/g, "\r\n");
  const kept = unfoldedFields(headerText).filter((field) => !/^content-transfer-encoding:/i.test(field));
  const mime = /^mime-version:/im.test(headerText) ? [] : ["MIME-Version: 1.0"];
  const newHeader = [...kept, ...mime, "Content-Transfer-Encoding: quoted-printable"].join("\r\n") + "\r\n\r\n";
  return { ok: true, body: Buffer.concat([Buffer.from(newHeader, "latin1"), Buffer.from(encoded.endsWith("\r\n") ? encoded : `${encoded}\r\n`, "latin1")]) };
};

/** Header fields, each with its continuation lines, without the blank line that ends them. */
const unfoldedFields = (headerText: string): string[] => {
  const fields: string[] = [];
  for (const line of headerText.replace(/\r\n\r\n$|\r\n$/, "").split("\r\n")) {
    if (line === "") continue;
    if (/^[ \t]/.test(line) && fields.length > 0) fields[fields.length - 1] += `\r\n${line}`;
    else fields.push(line);
  }
  return fields;
};

const fieldValue = (headerText: string, name: string): string | undefined => {
  const field = unfoldedFields(headerText).find((f) => f.toLowerCase().startsWith(`${name}:`));
  return field?.slice(name.length + 1).replace(/\r\n[ \t]+/g, " ").trim();
};
