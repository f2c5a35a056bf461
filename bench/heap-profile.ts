// Summarises a sampled allocation profile (bench/heap-sampling.mjs) of a node under a bench
// load: where the bytes it allocated were allocated, collected or not, so that what keeps
// the garbage collector busy reads as a short table.
//   npx tsx bench/heap-profile.ts FILE.heapprofile [--top N]
// Two tables: by allocating function (frames in the bundle mapped back to their source
// module, as bench/cpu-profile.ts does), and by the innermost function of Tern's own
// (actors/, nodes/, cluster/, protocol/) on the allocating stack.
import { readFileSync } from "node:fs";
import { OWN_MODULE, keyOf, quietOnClosedPipe, type CallFrame } from "./cpu-profile.ts";

interface HeapNode {
  readonly id: number;
  readonly callFrame: CallFrame;
  readonly children: ReadonlyArray<HeapNode>;
}
interface HeapProfile {
  readonly head: HeapNode;
  readonly samples: ReadonlyArray<{ readonly size: number; readonly nodeId: number }>;
}

export const summariseAllocations = (profile: HeapProfile) => {
  const byId = new Map<number, HeapNode>();
  const parent = new Map<number, number>();
  const visit = (node: HeapNode) => {
    byId.set(node.id, node);
    for (const child of node.children) {
      parent.set(child.id, node.id);
      visit(child);
    }
  };
  visit(profile.head);
  const bySite = new Map<string, number>();
  const byOwner = new Map<string, number>();
  let total = 0;
  for (const sample of profile.samples) {
    total += sample.size;
    const site = keyOf(byId.get(sample.nodeId)!.callFrame, "function");
    bySite.set(site, (bySite.get(site) ?? 0) + sample.size);
    let owner = "(no own frame)";
    for (let at: number | undefined = sample.nodeId; at !== undefined; at = parent.get(at)) {
      const frame = byId.get(at)!.callFrame;
      if (OWN_MODULE.test(keyOf(frame, "file"))) {
        owner = keyOf(frame, "function");
        break;
      }
    }
    byOwner.set(owner, (byOwner.get(owner) ?? 0) + sample.size);
  }
  const sorted = (map: Map<string, number>) => [...map].sort((a, b) => b[1] - a[1]);
  return { total, bySite: sorted(bySite), byOwner: sorted(byOwner) };
};

const main = () => {
  quietOnClosedPipe();
  const args = process.argv.slice(2);
  const at = args.indexOf("--top");
  const top = at >= 0 ? Number(args.splice(at, 2)[1]) : 25;
  for (const file of args) {
    const { total, bySite, byOwner } = summariseAllocations(JSON.parse(readFileSync(file, "utf8")) as HeapProfile);
    const mb = (bytes: number) => (bytes / 1e6).toFixed(1).padStart(7);
    const pct = (bytes: number) => ((100 * bytes) / total).toFixed(1).padStart(5) + "%";
    console.log(`${file}: ${(total / 1e6).toFixed(1)} MB allocated (sampled), collected or not`);
    console.log(`\n     MB   share  (by allocating function)`);
    for (const [key, bytes] of bySite.slice(0, top)) console.log(`${mb(bytes)}  ${pct(bytes)}  ${key}`);
    console.log(`\n     MB   share  (by innermost own function on the stack)`);
    for (const [key, bytes] of byOwner.slice(0, top)) console.log(`${mb(bytes)}  ${pct(bytes)}  ${key}`);
    console.log("");
  }
};

if (import.meta.url === `file://${process.argv[1]}`) main();
