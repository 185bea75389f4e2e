/** Training curves as SVG, drawn by Vega-Lite (loss and kNN top-1 against optimizer steps). */
import * as vega from "vega";
import * as vl from "vega-lite";

/** One point of a curve. */
export interface CurvePoint {
  step: number;
  value: number;
  /** Series name (a method, or a metric). */
  series: string;
}

/** A line chart per panel, stacked vertically, rendered to an SVG string. */
export async function renderCurves(
  panels: { title: string; yTitle: string; points: CurvePoint[] }[],
): Promise<string> {
  const spec = {
    $schema: "https://vega.github.io/schema/vega-lite/v5.json",
    vconcat: panels.map((panel) => ({
      title: panel.title,
      width: 520,
      height: 220,
      data: { values: panel.points },
      mark: { type: "line", point: panel.points.length < 60 },
      encoding: {
        x: { field: "step", type: "quantitative", title: "optimizer step" },
        y: { field: "value", type: "quantitative", title: panel.yTitle, scale: { zero: false } },
        color: { field: "series", type: "nominal", title: null },
      },
    })),
  };
  // deno-lint-ignore no-explicit-any
  const compiled = vl.compile(spec as any).spec;
  const view = new vega.View(vega.parse(compiled), { renderer: "none" });
  const svg = await view.toSVG();
  view.finalize();
  return svg;
}
