// A dependency-free SVG line chart: a few series over time, one panel each.

export interface Series {
  readonly name: string;
  readonly color: string;
  /** [seconds since start, value] */
  readonly points: ReadonlyArray<readonly [number, number]>;
}

export interface Panel {
  readonly title: string;
  readonly unit: string;
  readonly series: ReadonlyArray<Series>;
}

const WIDTH = 760;
const PANEL_HEIGHT = 220;
const MARGIN = { left: 70, right: 20, top: 30, bottom: 30 };

const escape = (text: string) => text.replace(/[&<>"]/g, (c) => `&#${c.charCodeAt(0)};`);

const niceMax = (value: number) => {
  if (value <= 0) return 1;
  const magnitude = 10 ** Math.floor(Math.log10(value));
  return [1, 2, 5, 10].map((m) => m * magnitude).find((m) => m >= value) ?? value;
};

const drawPanel = (panel: Panel, top: number, maxSeconds: number): string => {
  const plotWidth = WIDTH - MARGIN.left - MARGIN.right;
  const plotHeight = PANEL_HEIGHT - MARGIN.top - MARGIN.bottom;
  const maxValue = niceMax(Math.max(0, ...panel.series.flatMap((s) => s.points.map(([, v]) => v))));
  const x = (t: number) => MARGIN.left + (maxSeconds > 0 ? (t / maxSeconds) * plotWidth : 0);
  const y = (v: number) => top + MARGIN.top + plotHeight - (v / maxValue) * plotHeight;
  const grid = [0, 0.25, 0.5, 0.75, 1]
    .map((f) => {
      const value = maxValue * f;
      return `<line x1="${MARGIN.left}" x2="${WIDTH - MARGIN.right}" y1="${y(value)}" y2="${y(value)}" stroke="#ddd"/>` +
        `<text x="${MARGIN.left - 6}" y="${y(value) + 4}" text-anchor="end" font-size="11">${Math.round(value)}</text>`;
    })
    .join("");
  const lines = panel.series
    .map((s) => `<polyline fill="none" stroke="${s.color}" stroke-width="1.5" points="${s.points.map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(" ")}"/>`)
    .join("");
  const legend = panel.series
    .map((s, i) => `<text x="${MARGIN.left + 10 + i * 170}" y="${top + 20}" font-size="12" fill="${s.color}">■ ${escape(s.name)}</text>`)
    .join("");
  const title = `<text x="${WIDTH - MARGIN.right}" y="${top + 20}" text-anchor="end" font-size="13" font-weight="bold">${escape(panel.title)} (${escape(panel.unit)})</text>`;
  const axis = `<text x="${WIDTH - MARGIN.right}" y="${top + PANEL_HEIGHT - 8}" text-anchor="end" font-size="11">${maxSeconds.toFixed(1)} s</text>` +
    `<text x="${MARGIN.left}" y="${top + PANEL_HEIGHT - 8}" font-size="11">0 s</text>`;
  return grid + lines + legend + title + axis;
};

export const renderChart = (heading: string, panels: ReadonlyArray<Panel>): string => {
  const maxSeconds = Math.max(1, ...panels.flatMap((p) => p.series.flatMap((s) => s.points.map(([t]) => t))));
  const height = 30 + panels.length * PANEL_HEIGHT;
  const body = panels.map((panel, i) => drawPanel(panel, 30 + i * PANEL_HEIGHT, maxSeconds)).join("");
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${height}" font-family="sans-serif">` +
    `<rect width="100%" height="100%" fill="white"/>` +
    `<text x="10" y="20" font-size="14" font-weight="bold">${escape(heading)}</text>${body}</svg>\n`;
};

/** Counts events per bucket: [[seconds, events per second], …]. */
export const ratePoints = (times: ReadonlyArray<number>, origin: number, bucketMs = 500): Array<[number, number]> => {
  if (times.length === 0) return [];
  const buckets = new Map<number, number>();
  for (const t of times) {
    const bucket = Math.floor((t - origin) / bucketMs);
    buckets.set(bucket, (buckets.get(bucket) ?? 0) + 1);
  }
  const last = Math.max(...buckets.keys());
  return Array.from({ length: last + 1 }, (_, b) => [((b + 1) * bucketMs) / 1000, ((buckets.get(b) ?? 0) * 1000) / bucketMs] as [number, number]);
};
