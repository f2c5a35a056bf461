// The boundaries of issue 10, checked on the import statements of the source tree:
// actors/ does not reach into the node (nodes/) or the harnesses (bench/, test/), test/
// does not import bench/, and no two modules import each other, directly or around a loop.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { projectRoot } from "../../nodes/launcher.ts";

const FOLDERS = ["actors", "nodes", "cluster", "protocol", "bench", "test"];

/** Module cycles known and being removed (each entry: the members, sorted). None today. */
const KNOWN_CYCLES: ReadonlyArray<string> = [];

const sourceFiles = (dir: string): string[] =>
  readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return sourceFiles(path);
    return entry.name.endsWith(".ts") ? [path] : [];
  });

/** Every relative import and re-export of every file, type-only ones included, as project paths. */
const imports = (): Map<string, string[]> => {
  const graph = new Map<string, string[]>();
  for (const file of FOLDERS.flatMap((folder) => sourceFiles(join(projectRoot, folder)))) {
    const text = readFileSync(file, "utf8");
    const targets = [...text.matchAll(/^\s*(?:import|export)\s[^;]*?\sfrom\s+"(\.{1,2}\/[^"]+)"/gms), ...text.matchAll(/^\s*import\s+"(\.{1,2}\/[^"]+)"/gm)]
      .map((match) => relative(projectRoot, resolve(dirname(file), match[1]!)));
    graph.set(relative(projectRoot, file), targets);
  }
  return graph;
};

/** actors/<folder> is a module; so is each other top-level folder (tests: test/<folder>). */
const moduleOf = (path: string): string => {
  const [top, next] = path.split("/");
  return (top === "actors" || top === "test") && next !== undefined && !next.endsWith(".ts") ? `${top}/${next}` : top!;
};

/** Strongly connected components with more than one member (Tarjan). */
const cycles = (graph: ReadonlyMap<string, ReadonlySet<string>>): string[][] => {
  let counter = 0;
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const found: string[][] = [];
  const visit = (node: string) => {
    index.set(node, counter);
    low.set(node, counter++);
    stack.push(node);
    onStack.add(node);
    for (const next of graph.get(node) ?? []) {
      if (!index.has(next)) {
        visit(next);
        low.set(node, Math.min(low.get(node)!, low.get(next)!));
      } else if (onStack.has(next)) low.set(node, Math.min(low.get(node)!, index.get(next)!));
    }
    if (low.get(node) === index.get(node)) {
      const component: string[] = [];
      let member: string;
      do {
        member = stack.pop()!;
        onStack.delete(member);
        component.push(member);
      } while (member !== node);
      if (component.length > 1) found.push(component.sort());
    }
  };
  for (const node of graph.keys()) if (!index.has(node)) visit(node);
  return found;
};

test("nothing in actors/, protocol/ or cluster/ imports the node, the benchmarks or the tests", () => {
  const offending = [...imports()].flatMap(([file, targets]) =>
    /^(actors|protocol|cluster)\//.test(file) ? targets.filter((t) => /^(nodes|bench|test)\//.test(t)).map((t) => `${file} -> ${t}`) : [],
  );
  assert.deepEqual(offending, []);
});

test("nothing in test/ imports bench/ (both use nodes/launcher.ts)", () => {
  const offending = [...imports()].flatMap(([file, targets]) =>
    file.startsWith("test/") ? targets.filter((t) => t.startsWith("bench/")).map((t) => `${file} -> ${t}`) : [],
  );
  assert.deepEqual(offending, []);
});

test("no import cycle between files", () => {
  const graph = new Map([...imports()].map(([file, targets]) => [file, new Set(targets)]));
  assert.deepEqual(cycles(graph), []);
});

test("no import cycle between modules (actors/<folder>, nodes, cluster, protocol) beyond the known ones", () => {
  const graph = new Map<string, Set<string>>();
  for (const [file, targets] of imports()) {
    if (/^(bench|test)\//.test(file)) continue;
    const from = moduleOf(file);
    const edges = graph.get(from) ?? new Set<string>();
    for (const target of targets) if (moduleOf(target) !== from) edges.add(moduleOf(target));
    graph.set(from, edges);
  }
  const found = cycles(graph).map((cycle) => cycle.join(" "));
  assert.deepEqual(found.filter((cycle) => !KNOWN_CYCLES.includes(cycle)), []);
  assert.deepEqual(KNOWN_CYCLES.filter((cycle) => !found.includes(cycle)), [], "a known cycle is gone: remove it from KNOWN_CYCLES");
});
