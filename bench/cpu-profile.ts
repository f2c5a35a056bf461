// Summarises a V8 .cpuprofile (from `node --cpu-prof`) by function and by file: self time
// (where the CPU was) and inclusive time (what was running under a frame), so a profile of
// a bench run reads as a short table instead of a flame graph.
//   npx tsx bench/cpu-profile.ts FILE.cpuprofile [--top N] [--by function|file|package|owner] [--skip S]
//     [--under PATTERN | --callers PATTERN [--depth N]]
// --skip leaves out the first S seconds (the node's start); --under shows what the time
// below matching frames went to, --callers where matching frames were called from.
// --by owner charges each sample to the innermost module of Tern's own (actors/, nodes/,
// cluster/, protocol/) on its stack: what that module costs with the libraries it calls.
// Run a bench with TERN_NODE_EXEC_ARGV="--cpu-prof --cpu-prof-dir=DIR" to get profiles.
//
// The samples are wall time of the node's main thread: time the thread spent descheduled
// inside a system call (a write that woke the sink, which then ran on this core) counts
// for that call. Pin the node to a core of its own (taskset) for figures closer to CPU time.
import { readdirSync, readFileSync, statSync } from "node:fs";
import { tmpdir, userInfo } from "node:os";
import { join } from "node:path";

export interface CallFrame { readonly functionName: string; readonly url: string; readonly lineNumber: number; readonly columnNumber: number }
interface ProfileNode { readonly id: number; readonly callFrame: CallFrame; readonly children?: ReadonlyArray<number> }
interface Profile {
  readonly nodes: ReadonlyArray<ProfileNode>;
  readonly samples: ReadonlyArray<number>;
  readonly timeDeltas: ReadonlyArray<number>;
  readonly startTime: number;
  readonly endTime: number;
}

type Grouping = "function" | "file" | "package" | "owner";

const shortUrl = (url: string) =>
  url
    .replace(/^file:\/\//, "")
    .replace(/^.*\/node_modules\//, "~/")
    .replace(/^\/work\/[^/]+\//, "");

const packageOf = (url: string) => {
  if (url === "") return "(native)";
  if (url.startsWith("node:")) return "node:" + url.slice(5).split("/")[0];
  const match = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (match) return match[1]!;
  return shortUrl(url).split("/").slice(0, 2).join("/");
};

// A node runs from the bundle (dist/build-…/chunks/*.js), where esbuild starts each module
// it inlined with a comment naming its source ("// actors/queue/spool.ts",
// "// node_modules/effect/dist/internal/effect.js"): a frame's line in a chunk maps back to
// the module it came from.
const bundleModules = new Map<string, ReadonlyArray<readonly [number, string]>>();
const MODULE_COMMENT = /^\/\/ (\S+\.(?:ts|js|mjs|cjs|json))$/;

/** The source module of a frame in a bundle chunk, or undefined when the frame is not in one. */
const bundleModuleOf = (frame: CallFrame): string | undefined => {
  if (!frame.url.startsWith("file://") || !/\/dist\/(?:build-[^/]+\/)?(?:chunks\/)?[^/]+\.js$/.test(frame.url)) return undefined;
  const path = frame.url.slice("file://".length);
  let starts = bundleModules.get(path);
  if (!starts) {
    const found: Array<readonly [number, string]> = [];
    try {
      readFileSync(path, "utf8")
        .split("\n")
        .forEach((text, line) => {
          const match = MODULE_COMMENT.exec(text);
          if (match) found.push([line, match[1]!]);
        });
    } catch {
      // a build removed since the run: chunk names only
    }
    bundleModules.set(path, (starts = found));
  }
  let module: string | undefined;
  for (const [line, name] of starts) {
    if (line > frame.lineNumber) break;
    module = name;
  }
  return module;
};

/** Tern's own source modules (not a library's). */
export const OWN_MODULE = /^(?:actors|nodes|cluster|protocol)\//;

// tsx compiles each .ts file to one line of JS, so a profile's positions in our own code
// say nothing until mapped back: its cache (tmpdir/tsx-UID) keeps each compiled file with
// its source map. The newest cache entry for a source is taken as the one that ran.
const base64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/** Generated (line, column) → original line, from a source map's `mappings`. */
const decodeMappings = (mappings: string) => {
  const lines: Array<Array<readonly [number, number]>> = [];
  let originalLine = 0;
  for (const generatedLine of mappings.split(";")) {
    const segments: Array<readonly [number, number]> = [];
    let column = 0;
    for (const segment of generatedLine.split(",")) {
      if (segment === "") continue;
      const values: number[] = [];
      let value = 0;
      let shift = 0;
      for (const char of segment) {
        const digit = base64.indexOf(char);
        value += (digit & 31) << shift;
        if (digit & 32) shift += 5;
        else {
          values.push(value & 1 ? -(value >>> 1) : value >>> 1);
          value = 0;
          shift = 0;
        }
      }
      column += values[0]!;
      if (values.length >= 4) {
        originalLine += values[2]!;
        segments.push([column, originalLine]);
      }
    }
    lines.push(segments);
  }
  return lines;
};

const tsxCache = (() => {
  let bySource: Map<string, { file: string; mtime: number }> | undefined;
  return () => {
    if (bySource) return bySource;
    bySource = new Map();
    const dir = join(tmpdir(), `tsx-${userInfo().uid}`);
    let files: string[] = [];
    try {
      files = readdirSync(dir);
    } catch {
      return bySource;
    }
    for (const name of files) {
      if (name.endsWith(".pipe")) continue; // tsx's IPC sockets live there too
      const file = join(dir, name);
      const text = readFileSync(file, "utf8");
      const match = /"sources":\["([^"]+)"\]/.exec(text.slice(-2000));
      if (!match) continue;
      const mtime = statSync(file).mtimeMs;
      const known = bySource.get(match[1]!);
      if (!known || known.mtime < mtime) bySource.set(match[1]!, { file, mtime });
    }
    return bySource;
  };
})();

const mapped = new Map<string, { mappings: Array<Array<readonly [number, number]>>; source: string[] } | null>();
const mappingFor = (path: string) => {
  if (!mapped.has(path)) {
    const entry = tsxCache().get(path);
    if (!entry) mapped.set(path, null);
    else {
      const cached = JSON.parse(readFileSync(entry.file, "utf8")) as { map: { mappings: string } };
      let source: string[] = [];
      try {
        source = readFileSync(path, "utf8").split("\n");
      } catch {
        // the source moved; lines only
      }
      mapped.set(path, { mappings: decodeMappings(cached.map.mappings), source });
    }
  }
  return mapped.get(path)!;
};

/**
 * What a function is called in its source: the declaration or Effect.fn label on the line
 * where it starts, else that line's text (an arrow passed along, a generator in Effect.gen).
 */
const nameAt = (source: string[], line: number) => {
  const text = source[line] ?? "";
  const patterns = [/Effect\.fn(?:Untraced)?\("([^"]+)"/, /^\s*(?:export\s+)?(?:const|let|function\*?|class)\s+([\w$]+)/, /^\s*(?:readonly\s+|async\s+|\*\s*)?([\w$]+)\s*(?:[:=]\s*(?:async\s*)?(?:<[^>]*>)?\(|\()/];
  for (const pattern of patterns) {
    const match = pattern.exec(text);
    if (match) return match[1]!;
  }
  return `"${text.trim().slice(0, 40)}"`;
};

const ownFrame = (frame: CallFrame) => {
  if (!frame.url.startsWith("file://") || frame.url.includes("/node_modules/") || !frame.url.endsWith(".ts")) return undefined;
  const path = frame.url.slice("file://".length);
  const mapping = mappingFor(path);
  if (!mapping) return undefined;
  const segments = mapping.mappings[frame.lineNumber] ?? [];
  let line: number | undefined;
  for (const [column, original] of segments) {
    if (column > frame.columnNumber) break;
    line = original;
  }
  if (line === undefined) return undefined;
  return `${nameAt(mapping.source, line)} ${shortUrl(frame.url)}:${line + 1}`;
};

export const keyOf = (frame: CallFrame, by: Exclude<Grouping, "owner">) => {
  const module = bundleModuleOf(frame);
  switch (by) {
    case "function":
      if (module !== undefined) return `${frame.functionName || "(anonymous)"} ${module.replace(/^node_modules\//, "~/")} (${shortUrl(frame.url).split("/").pop()}:${frame.lineNumber + 1})`;
      return ownFrame(frame) ?? `${frame.functionName || "(anonymous)"} ${shortUrl(frame.url)}${frame.url ? `:${frame.lineNumber + 1}` : ""}`;
    case "file":
      if (module !== undefined) return module.replace(/^node_modules\//, "~/");
      return frame.url ? shortUrl(frame.url) : frame.functionName;
    case "package":
      if (module !== undefined) return packageOf(module);
      return frame.url ? packageOf(frame.url) : frame.functionName;
  }
};

/** The innermost of Tern's own modules on a sample's stack, or "(no own frame)". */
const ownerOf = (byId: ReadonlyMap<number, ProfileNode>, parent: ReadonlyMap<number, number>, id: number) => {
  for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) {
    const file = keyOf(byId.get(at)!.callFrame, "file");
    if (OWN_MODULE.test(file)) return file;
  }
  return "(no own frame)";
};

export const summarise = (profile: Profile, by: Grouping) => {
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const parent = new Map<number, number>();
  for (const node of profile.nodes) for (const child of node.children ?? []) parent.set(child, node.id);
  // Time per sample: the delta to the next sample is the time spent in this one.
  const selfMicros = new Map<number, number>();
  for (let i = 0; i < profile.samples.length; i++) {
    const delta = profile.timeDeltas[i + 1] ?? 0;
    selfMicros.set(profile.samples[i]!, (selfMicros.get(profile.samples[i]!) ?? 0) + delta);
  }
  const self = new Map<string, number>();
  const inclusive = new Map<string, number>();
  let total = 0;
  for (const [id, micros] of selfMicros) {
    total += micros;
    const node = byId.get(id)!;
    if (by === "owner") {
      // Idle and the profiler's own frames stay apart from "(no own frame)".
      const key = node.callFrame.url === "" && node.callFrame.functionName.startsWith("(") ? node.callFrame.functionName : ownerOf(byId, parent, id);
      self.set(key, (self.get(key) ?? 0) + micros);
      continue;
    }
    const key = keyOf(node.callFrame, by);
    self.set(key, (self.get(key) ?? 0) + micros);
    // Each key counts once per stack, however often it recurses.
    const seen = new Set<string>();
    for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) {
      const k = keyOf(byId.get(at)!.callFrame, by);
      if (seen.has(k)) continue;
      seen.add(k);
      inclusive.set(k, (inclusive.get(k) ?? 0) + micros);
    }
  }
  return { total, self, inclusive };
};

/** What the time under frames matching `pattern` went to: self time by function (or file, package). */
export const under = (profile: Profile, pattern: string, by: Grouping) => {
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const parent = new Map<number, number>();
  for (const node of profile.nodes) for (const child of node.children ?? []) parent.set(child, node.id);
  const self = new Map<string, number>();
  let total = 0;
  for (let i = 0; i < profile.samples.length; i++) {
    const delta = profile.timeDeltas[i + 1] ?? 0;
    let inside = false;
    for (let at: number | undefined = profile.samples[i]!; at !== undefined && !inside; at = parent.get(at))
      inside = keyOf(byId.get(at)!.callFrame, "function").includes(pattern);
    if (!inside) continue;
    const key = by === "owner" ? ownerOf(byId, parent, profile.samples[i]!) : keyOf(byId.get(profile.samples[i]!)!.callFrame, by);
    self.set(key, (self.get(key) ?? 0) + delta);
    total += delta;
  }
  return { total, rows: [...self].sort((a, b) => b[1] - a[1]) };
};

/** Where the time of frames matching `pattern` came from: the stack of our own or named frames above it, `depth` deep. */
export const callers = (profile: Profile, pattern: string, depth: number) => {
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const parent = new Map<number, number>();
  for (const node of profile.nodes) for (const child of node.children ?? []) parent.set(child, node.id);
  const stacks = new Map<string, number>();
  for (let i = 0; i < profile.samples.length; i++) {
    const delta = profile.timeDeltas[i + 1] ?? 0;
    let at: number | undefined = profile.samples[i]!;
    let hit: number | undefined;
    for (; at !== undefined; at = parent.get(at))
      if (keyOf(byId.get(at)!.callFrame, "function").includes(pattern)) {
        hit = at;
        break;
      }
    if (hit === undefined) continue;
    const path: string[] = [];
    for (let up = parent.get(hit); up !== undefined && path.length < depth; up = parent.get(up)) {
      const frame = byId.get(up)!.callFrame;
      if (frame.url.startsWith("node:") || frame.url === "" || frame.url.includes("/effect/")) continue;
      path.push(keyOf(frame, "function"));
    }
    const key = path.join(" < ");
    stacks.set(key, (stacks.get(key) ?? 0) + delta);
  }
  return [...stacks].sort((a, b) => b[1] - a[1]);
};

/** The profile without its first `seconds` (the node's start: module loading and compiling). */
const withoutStart = (profile: Profile, seconds: number): Profile => {
  if (seconds <= 0) return profile;
  let at = 0;
  const timeDeltas = profile.timeDeltas.map((delta) => {
    at += delta;
    return at < seconds * 1e6 ? 0 : delta;
  });
  return { ...profile, timeDeltas };
};

/** `| head` closes the pipe early: that ends the output, not with a stack trace. */
export const quietOnClosedPipe = () =>
  process.stdout.on("error", (error: NodeJS.ErrnoException) => {
    if (error.code === "EPIPE") process.exit(0);
    throw error;
  });

const main = () => {
  quietOnClosedPipe();
  const args = process.argv.slice(2);
  const option = (name: string) => {
    const at = args.indexOf(name);
    return at >= 0 ? args.splice(at, 2)[1] : undefined;
  };
  const top = Number(option("--top") ?? 25);
  const by = (option("--by") ?? "function") as Grouping;
  const callersOf = option("--callers");
  const underOf = option("--under");
  const depth = Number(option("--depth") ?? 3);
  const skip = Number(option("--skip") ?? 0);
  for (const file of args) {
    const profile = withoutStart(JSON.parse(readFileSync(file, "utf8")) as Profile, skip);
    if (underOf !== undefined) {
      const { total, rows } = under(profile, underOf, by);
      console.log(`${file}: ${(total / 1000).toFixed(0)} ms under frames matching "${underOf}", self time by ${by}`);
      for (const [key, micros] of rows.slice(0, top)) console.log(`  ${(micros / 1000).toFixed(0).padStart(7)}  ${key}`);
      continue;
    }
    if (callersOf !== undefined) {
      console.log(`${file}: time in frames matching "${callersOf}", by the callers above them (node, effect and native frames skipped)`);
      for (const [stack, micros] of callers(profile, callersOf, depth).slice(0, top))
        console.log(`  ${(micros / 1000).toFixed(0).padStart(7)}  ${stack}`);
      continue;
    }
    const { total, self, inclusive } = summarise(profile, by);
    const idle = [...self].filter(([k]) => k.startsWith("(idle)")).reduce((s, [, v]) => s + v, 0);
    const busy = total - idle;
    const ms = (micros: number) => (micros / 1000).toFixed(0).padStart(7);
    const pct = (micros: number) => ((100 * micros) / busy).toFixed(1).padStart(5) + "%";
    console.log(`${file}: ${(total / 1e6).toFixed(1)} s sampled, ${(busy / 1e6).toFixed(1)} s busy (percentages of busy)`);
    console.log(`\n  self ms   self%  (by ${by})`);
    for (const [key, micros] of [...self].filter(([k]) => !k.startsWith("(idle)")).sort((a, b) => b[1] - a[1]).slice(0, top))
      console.log(`  ${ms(micros)}  ${pct(micros)}  ${key}`);
    // By owner each sample has one key, so its inclusive table would repeat the self one.
    if (by !== "owner") {
      console.log(`\n  incl ms  incl%  (by ${by})`);
      for (const [key, micros] of [...inclusive].filter(([k]) => !k.startsWith("(idle)") && !k.startsWith("(root)")).sort((a, b) => b[1] - a[1]).slice(0, top))
        console.log(`  ${ms(micros)}  ${pct(micros)}  ${key}`);
    }
    console.log("");
  }
};

if (import.meta.url === `file://${process.argv[1]}`) main();
