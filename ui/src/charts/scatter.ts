// Search results as dots: start time (x) against duration (y), errors in red.

import { s } from '../dom';
import { ERROR_COLOR } from '../colors';
import { formatAxisDuration, formatClock, formatHourMinute } from '../format';
import { chartSvg, xAxis, yAxis, type Box } from './axes';
import { linearScale, niceMax, niceTicks, timeTicks } from './scale';

export interface ScatterPoint {
  /** Unix ms. */
  time: number;
  /** Microseconds. */
  duration: number;
  error: boolean;
  /** Dot size hint, e.g. the span count. */
  weight: number;
  label: string;
  onClick?: () => void;
}

const WIDTH = 960;
const HEIGHT = 190;

export function scatterPlot(points: ScatterPoint[]): SVGSVGElement {
  const svg = chartSvg(WIDTH, HEIGHT, 'scatter', 'Trace durations over time');
  const box: Box = { left: 64, right: WIDTH - 16, top: 12, bottom: HEIGHT - 26 };
  const times = points.map((point) => point.time);
  let t0 = Math.min(...times);
  let t1 = Math.max(...times);
  const pad = Math.max((t1 - t0) * 0.04, 15_000);
  t0 -= pad;
  t1 += pad;
  const yMax = niceMax(Math.max(...points.map((point) => point.duration)) * 1.05);
  const x = linearScale([t0, t1], [box.left, box.right]);
  const y = linearScale([0, yMax], [box.bottom, box.top]);
  const ticks = timeTicks(t0, t1, 8);
  const withSeconds = ticks.some((tick) => tick % 60_000 !== 0);
  svg.append(
    yAxis(y, niceTicks(0, yMax, 4), box, formatAxisDuration),
    xAxis(x, ticks, box, (value) => (withSeconds ? formatClock(value) : formatHourMinute(value))),
  );
  const maxWeight = Math.max(...points.map((point) => point.weight), 1);
  const dots = s('g', { class: 'dots' });
  // Errors last, so they are drawn on top.
  for (const point of [...points].sort((a, b) => Number(a.error) - Number(b.error))) {
    const radius = 4 + 4 * Math.sqrt(point.weight / maxWeight);
    const dot = s(
      'circle',
      {
        class: point.error ? 'dot dot-error' : 'dot',
        cx: x(point.time).toFixed(1),
        cy: y(point.duration).toFixed(1),
        r: radius.toFixed(1),
        fill: point.error ? ERROR_COLOR : 'var(--accent)',
        tabindex: point.onClick ? 0 : undefined,
      },
      s('title', null, point.label),
    );
    if (point.onClick) {
      const open = point.onClick;
      dot.addEventListener('click', open);
      dot.addEventListener('keydown', (event) => {
        if ((event as KeyboardEvent).key === 'Enter') open();
      });
    }
    dots.append(dot);
  }
  svg.append(dots);
  return svg;
}
