// `--timeout MS`, which every operator command takes: how long to wait for the cluster's
// answer. One reading for all of them, so a bad value is refused the same way everywhere
// (exit 2) instead of becoming NaN in some.

/** Whole milliseconds above 0, or `fallback` when not given; undefined when the text is not that. */
export const timeoutOption = (text: string | undefined, fallback: number): number | undefined => {
  if (text === undefined) return fallback;
  const ms = Number(text);
  return Number.isInteger(ms) && ms > 0 ? ms : undefined;
};

/** What a command says of a value `timeoutOption` refused. */
export const badTimeout = (text: string | undefined): string => `--timeout ${text}: expected milliseconds`;
