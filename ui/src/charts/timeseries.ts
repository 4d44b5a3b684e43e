// Metrics charts over a fixed window of steps: latency lines and count bars.

import { s } from '../dom';
import { formatAxisDuration, formatCount, formatHourMinute } from '../format';
import { chartSvg, xAxis, yAxis, type Box } from './axes';
import { linearScale, niceMax, niceTicks, timeTicks } from './scale';

export interface Window {
  /** Unix ms of the first step. */
  start: number;
  /** Unix ms just after the last step. */
  end: number;
  /** Step in ms. */
  stepMs: number;
}

export interface LineSeries {
  name: string;
  color: string;
  /** Value per step start (Unix ms); missing steps leave a gap. */
  values: Map<number, number>;
}

export interface BarSeries {
  /** Bars per step start; `errors` is drawn in red over the bottom of the bar. */
  values: Map<number, { count: number; errors: number }>;
}

const WIDTH = 480;
const HEIGHT = 170;
const BOX: Box = { left: 58, right: WIDTH - 10, top: 10, bottom: HEIGHT - 24 };

function stepStarts(window: Window): number[] {
  const starts: number[] = [];
  for (let ts = window.start; ts < window.end; ts += window.stepMs) starts.push(ts);
  return starts;
}

function xScale(window: Window) {
  return linearScale([window.start, window.end], [BOX.left, BOX.right]);
}

/** Latency lines (µs) over the window, e.g. p50 and p99. */
export function latencyChart(window: Window, series: LineSeries[], title: string): SVGSVGElement {
  const svg = chartSvg(WIDTH, HEIGHT, 'timeseries latency-chart', title);
  const x = xScale(window);
  const max = niceMax(Math.max(0, ...series.flatMap((line) => [...line.values.values()])) * 1.1);
  const y = linearScale([0, max], [BOX.bottom, BOX.top]);
  svg.append(
    yAxis(y, niceTicks(0, max, 4), BOX, formatAxisDuration),
    xAxis(x, timeTicks(window.start, window.end, 6), BOX, formatHourMinute),
  );
  const center = window.stepMs / 2;
  for (const line of series) {
    // One path; a missing step starts a new segment (M) so gaps stay visible.
    let d = '';
    let previousPresent = false;
    const lonely: number[] = [];
    const starts = stepStarts(window);
    starts.forEach((ts, index) => {
      const value = line.values.get(ts);
      if (value === undefined) {
        previousPresent = false;
        return;
      }
      const px = x(ts + center).toFixed(1);
      const py = y(value).toFixed(1);
      d += `${previousPresent ? 'L' : 'M'}${px},${py}`;
      const next = starts[index + 1];
      if (!previousPresent && (next === undefined || !line.values.has(next))) lonely.push(ts);
      previousPresent = true;
    });
    if (d) svg.append(s('path', { class: 'series-line', d, stroke: line.color, fill: 'none', 'data-series': line.name }));
    // A step with no neighbours would be an invisible one-point path: mark it with a dot.
    for (const ts of lonely) {
      svg.append(s('circle', { cx: x(ts + center).toFixed(1), cy: y(line.values.get(ts)!).toFixed(1), r: 2.5, fill: line.color }));
    }
  }
  return svg;
}

/** Spans per step, with the failed part of each bar in red. */
export function countChart(window: Window, bars: BarSeries, title: string): SVGSVGElement {
  const svg = chartSvg(WIDTH, HEIGHT, 'timeseries count-chart', title);
  const x = xScale(window);
  const max = niceMax(Math.max(0, ...[...bars.values.values()].map((bar) => bar.count)) * 1.1);
  const y = linearScale([0, max], [BOX.bottom, BOX.top]);
  svg.append(
    yAxis(
      y,
      niceTicks(0, max, 4).filter((tick) => Number.isInteger(tick)),
      BOX,
      formatCount,
    ),
    xAxis(x, timeTicks(window.start, window.end, 6), BOX, formatHourMinute),
  );
  const stepWidth = x(window.start + window.stepMs) - x(window.start);
  const barWidth = Math.max(1, stepWidth * 0.72);
  const group = s('g', { class: 'bars' });
  for (const ts of stepStarts(window)) {
    const bar = bars.values.get(ts);
    if (!bar || bar.count === 0) continue;
    const left = (x(ts) + (stepWidth - barWidth) / 2).toFixed(1);
    const title = s('title', null, `${formatHourMinute(ts)}: ${bar.count} spans, ${bar.errors} errors`);
    group.append(
      s('rect', { class: 'bar', x: left, width: barWidth.toFixed(1), y: y(bar.count).toFixed(1), height: (BOX.bottom - y(bar.count)).toFixed(1) }, title),
    );
    if (bar.errors > 0) {
      group.append(
        s('rect', { class: 'bar bar-error', x: left, width: barWidth.toFixed(1), y: y(bar.errors).toFixed(1), height: (BOX.bottom - y(bar.errors)).toFixed(1) }),
      );
    }
  }
  svg.append(group);
  return svg;
}
