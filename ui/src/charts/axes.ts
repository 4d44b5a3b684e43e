// Axis and grid drawing shared by the charts.

import { s } from '../dom';
import type { Scale } from './scale';

export interface Box {
  left: number;
  right: number;
  top: number;
  bottom: number;
}

/** Horizontal grid lines with labels on the left, for a value scale. */
export function yAxis(scale: Scale, ticks: number[], box: Box, label: (value: number) => string): SVGGElement {
  const group = s('g', { class: 'axis axis-y' });
  for (const tick of ticks) {
    const y = scale(tick);
    group.append(
      s('line', { class: 'grid', x1: box.left, x2: box.right, y1: y, y2: y }),
      s('text', { x: box.left - 6, y, 'text-anchor': 'end', 'dominant-baseline': 'middle' }, label(tick)),
    );
  }
  return group;
}

/** Tick marks with labels under the plot, for a time or value scale. */
export function xAxis(scale: Scale, ticks: number[], box: Box, label: (value: number) => string): SVGGElement {
  const group = s('g', { class: 'axis axis-x' });
  group.append(s('line', { class: 'domain', x1: box.left, x2: box.right, y1: box.bottom, y2: box.bottom }));
  for (const tick of ticks) {
    const x = scale(tick);
    group.append(
      s('line', { class: 'tick', x1: x, x2: x, y1: box.bottom, y2: box.bottom + 4 }),
      s('text', { x, y: box.bottom + 16, 'text-anchor': 'middle' }, label(tick)),
    );
  }
  return group;
}

/** A responsive SVG: fixed coordinate system, scaled to the container's width. */
export function chartSvg(width: number, height: number, className: string, title?: string): SVGSVGElement {
  const svg = s('svg', {
    class: `chart ${className}`,
    viewBox: `0 0 ${width} ${height}`,
    preserveAspectRatio: 'xMidYMid meet',
    role: 'img',
    'aria-label': title,
  });
  if (title) svg.append(s('title', null, title));
  return svg;
}
