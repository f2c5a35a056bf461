// `tern config check FILE [--skip-ports]`: validates a config the way a node starting with
// it would (schema, values that contradict each other, environment overrides), and what
// only the machine can tell: every file it names can be read and every port it listens on
// is free. Nothing is started. Exit 0 when the node would start with it, 78 (EX_CONFIG)
// when not, 2 on bad usage.
import { parseArgs } from "node:util";
import { ConfigError, loadConfig } from "./config.ts";
import { machineProblems } from "./config-check.ts";

const usage = `usage: tern config check FILE [--skip-ports]

  Checks FILE (and the TERN_* environment overrides) without starting a node: the
  schema, values that contradict each other, files that cannot be read, and ports
  already in use (--skip-ports: not the ports, e.g. for the config of a running node).`;

export const runConfig = async (args: ReadonlyArray<string>): Promise<number> => {
  const [sub, ...rest] = args;
  let parsed;
  try {
    parsed = parseArgs({ args: [...rest], allowPositionals: true, options: { "skip-ports": { type: "boolean" } } });
  } catch (error) {
    console.error(`tern: ${(error as Error).message}\n${usage}`);
    return 2;
  }
  const file = parsed.positionals[0];
  if (sub !== "check" || file === undefined || parsed.positionals.length > 1) {
    console.error(usage);
    return sub === "--help" ? 0 : 2;
  }
  try {
    const config = await loadConfig(file, process.env);
    const problems = (await machineProblems(config)).filter((problem) => !(parsed.values["skip-ports"] && (problem.startsWith("listen.") || problem.startsWith("http.listen"))));
    if (problems.length > 0) {
      console.error(`tern: ${file} cannot be used here:\n${problems.map((problem) => `  ${problem}`).join("\n")}`);
      return 78;
    }
    console.log(`${file}: ok (node ${config.nodeId}, cluster ${config.cluster})`);
    return 0;
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    console.error(`tern: ${error.message}`);
    return 78;
  }
};
