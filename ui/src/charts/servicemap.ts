// The service map: a layered drawing of dependency edges, left (callers) to right (callees).

import { s } from '../dom';
import type { Dependency } from '../api';
import { ERROR_COLOR, serviceColor } from '../colors';
import { formatCount } from '../format';

export type NodeKind = 'service' | 'database' | 'messaging' | 'peer';

export interface MapNode {
  name: string;
  kind: NodeKind;
  depth: number;
  /** Position of the node's center. */
  x: number;
  y: number;
  callsIn: number;
  callsOut: number;
}

const NODE_WIDTH = 168;
const NODE_HEIGHT = 48;
const COLUMN_GAP = 170;
const ROW_GAP = 38;
const MARGIN = 28;

function kindOf(childType: string): NodeKind {
  return childType === 'database' || childType === 'messaging' || childType === 'peer' ? childType : 'service';
}

/** Nodes with their layer (longest path from a caller-only node, cycles broken). */
function layer(edges: Dependency[]): Map<string, MapNode> {
  const nodes = new Map<string, MapNode>();
  const node = (name: string, kind: NodeKind) => {
    let existing = nodes.get(name);
    if (!existing) {
      existing = { name, kind, depth: 0, x: 0, y: 0, callsIn: 0, callsOut: 0 };
      nodes.set(name, existing);
    } else if (kind === 'service') {
      existing.kind = 'service';
    }
    return existing;
  };
  const outgoing = new Map<string, string[]>();
  for (const edge of edges) {
    node(edge.parent, 'service').callsOut += edge.callCount;
    node(edge.child, kindOf(edge.childType)).callsIn += edge.callCount;
    if (edge.parent !== edge.child) outgoing.set(edge.parent, [...(outgoing.get(edge.parent) ?? []), edge.child]);
  }
  // Depth-first search from every node, in name order, skipping back edges (cycles).
  const state = new Map<string, 'open' | 'done'>();
  const order: string[] = [];
  const visit = (name: string) => {
    state.set(name, 'open');
    for (const child of outgoing.get(name) ?? []) {
      if (!state.has(child)) visit(child);
    }
    state.set(name, 'done');
    order.push(name);
  };
  const names = [...nodes.keys()].sort();
  const hasIncoming = new Set(edges.filter((edge) => edge.parent !== edge.child).map((edge) => edge.child));
  for (const name of names.filter((candidate) => !hasIncoming.has(candidate))) if (!state.has(name)) visit(name);
  for (const name of names) if (!state.has(name)) visit(name);
  // Reverse post-order is a topological order of the forward edges.
  const position = new Map(order.map((name, index) => [name, order.length - index]));
  for (const name of [...order].reverse()) {
    const parent = nodes.get(name)!;
    for (const child of outgoing.get(name) ?? []) {
      if (position.get(child)! > position.get(name)!) {
        const target = nodes.get(child)!;
        target.depth = Math.max(target.depth, parent.depth + 1);
      }
    }
  }
  return nodes;
}

/** Orders each layer by the mean position of its neighbours, a few sweeps each way. */
function orderLayers(nodes: Map<string, MapNode>, edges: Dependency[]): MapNode[][] {
  const layers: MapNode[][] = [];
  for (const node of [...nodes.values()].sort((a, b) => a.name.localeCompare(b.name))) {
    (layers[node.depth] ??= []).push(node);
  }
  const neighbours = new Map<string, string[]>();
  for (const edge of edges) {
    neighbours.set(edge.parent, [...(neighbours.get(edge.parent) ?? []), edge.child]);
    neighbours.set(edge.child, [...(neighbours.get(edge.child) ?? []), edge.parent]);
  }
  const index = new Map<string, number>();
  const reindex = () => layers.forEach((nodesOfLayer) => nodesOfLayer.forEach((node, at) => index.set(node.name, at)));
  reindex();
  for (let sweep = 0; sweep < 4; sweep += 1) {
    const range = sweep % 2 === 0 ? layers.map((_, at) => at) : layers.map((_, at) => layers.length - 1 - at);
    for (const at of range) {
      const current = layers[at] ?? [];
      const reference = sweep % 2 === 0 ? at - 1 : at + 1;
      const center = (node: MapNode) => {
        const linked = (neighbours.get(node.name) ?? []).filter((name) => nodes.get(name)?.depth === reference);
        if (linked.length === 0) return index.get(node.name)!;
        return linked.reduce((sum, name) => sum + index.get(name)!, 0) / linked.length;
      };
      const centers = new Map(current.map((node) => [node.name, center(node)]));
      current.sort((a, b) => centers.get(a.name)! - centers.get(b.name)! || a.name.localeCompare(b.name));
      reindex();
    }
  }
  return layers;
}

function truncate(text: string, max: number): string {
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

function nodeShape(node: MapNode, color: string): SVGElement {
  const left = node.x - NODE_WIDTH / 2;
  const top = node.y - NODE_HEIGHT / 2;
  const right = left + NODE_WIDTH;
  const bottom = top + NODE_HEIGHT;
  switch (node.kind) {
    case 'database': {
      const ry = 7;
      return s('path', {
        class: 'node-shape',
        d: `M${left},${top + ry} A${NODE_WIDTH / 2},${ry} 0 0 1 ${right},${top + ry} V${bottom - ry} A${NODE_WIDTH / 2},${ry} 0 0 1 ${left},${bottom - ry} Z M${left},${top + ry} A${NODE_WIDTH / 2},${ry} 0 0 0 ${right},${top + ry}`,
        stroke: color,
      });
    }
    case 'messaging': {
      const cut = 14;
      return s('path', {
        class: 'node-shape',
        d: `M${left + cut},${top} H${right - cut} L${right},${node.y} L${right - cut},${bottom} H${left + cut} L${left},${node.y} Z`,
        stroke: color,
      });
    }
    case 'peer':
      return s('rect', { class: 'node-shape node-peer', x: left, y: top, width: NODE_WIDTH, height: NODE_HEIGHT, rx: 6, stroke: color, 'stroke-dasharray': '5 4' });
    default:
      return s('rect', { class: 'node-shape', x: left, y: top, width: NODE_WIDTH, height: NODE_HEIGHT, rx: 10, stroke: color });
  }
}

interface Route {
  d: string;
  labelX: number;
  labelY: number;
}

/**
 * The path of one edge. Forward edges run from the caller's right side to the callee's
 * left side; back edges (calls to an earlier column) run from the caller's left side,
 * through the gap beside it (and, past one column, along a band below every node), to
 * the callee's right side, so they never cross a node. `mutual` (the callee calls back)
 * moves both edges of the pair apart.
 */
function route(from: MapNode, to: MapNode, mutual: boolean, bandY: number): Route {
  const shift = mutual ? 9 : 0;
  if (from === to) {
    const x0 = from.x - 24;
    const x1 = from.x + 24;
    const y0 = from.y - NODE_HEIGHT / 2;
    return { d: `M${x0},${y0} C${x0 - 10},${y0 - 44} ${x1 + 10},${y0 - 44} ${x1},${y0 - 2}`, labelX: from.x, labelY: y0 - 36 };
  }
  if (to.depth > from.depth) {
    const x0 = from.x + NODE_WIDTH / 2;
    const x3 = to.x - NODE_WIDTH / 2 - 2;
    const y0 = from.y - shift;
    const y3 = to.y - shift;
    const bend = (x3 - x0) / 2;
    return { d: `M${x0},${y0} C${x0 + bend},${y0} ${x3 - bend},${y3} ${x3},${y3}`, labelX: (x0 + x3) / 2, labelY: (y0 + y3) / 2 - (shift ? 4 : 0) };
  }
  const x0 = from.x - NODE_WIDTH / 2;
  const x3 = to.x + NODE_WIDTH / 2 + 2;
  const y0 = from.y + shift;
  const y3 = to.y + shift;
  if (from.depth - to.depth === 1) {
    const bend = (x0 - x3) / 2;
    return { d: `M${x0},${y0} C${x0 - bend},${y0} ${x3 + bend},${y3} ${x3},${y3}`, labelX: (x0 + x3) / 2, labelY: (y0 + y3) / 2 + (shift ? 4 : 0) };
  }
  // Down the gap left of the caller, along the band, up the gap right of the callee.
  const gapOut = x0 - COLUMN_GAP / 2;
  const gapIn = x3 + COLUMN_GAP / 2;
  const r = 12;
  const d = [
    `M${x0},${y0}`,
    `H${gapOut + r}`,
    `Q${gapOut},${y0} ${gapOut},${y0 + r}`,
    `V${bandY - r}`,
    `Q${gapOut},${bandY} ${gapOut - r},${bandY}`,
    `H${gapIn + r}`,
    `Q${gapIn},${bandY} ${gapIn},${bandY - r}`,
    `V${y3 + r}`,
    `Q${gapIn},${y3} ${gapIn - r},${y3}`,
    `H${x3}`,
  ].join(' ');
  return { d, labelX: (gapOut + gapIn) / 2, labelY: bandY };
}

const KIND_COLORS: Record<Exclude<NodeKind, 'service'>, string> = {
  database: '#8fa3bf',
  messaging: '#d4a5ff',
  peer: '#9aa0a6',
};

/** Draws the map; `href` gives a link for service nodes. */
export function serviceMap(edges: Dependency[], href: (service: string) => string): SVGSVGElement {
  const nodes = layer(edges);
  const layers = orderLayers(nodes, edges);
  const tallest = Math.max(...layers.map((nodesOfLayer) => nodesOfLayer?.length ?? 0));
  // Room above for self-call loops, and below for back edges that skip columns.
  const topPad = edges.some((edge) => edge.parent === edge.child) ? 44 : 0;
  const longBackEdges = edges.some((edge) => nodes.get(edge.child)!.depth < nodes.get(edge.parent)!.depth - 1);
  const bodyHeight = tallest * NODE_HEIGHT + (tallest - 1) * ROW_GAP;
  const bandY = MARGIN + topPad + bodyHeight + 30;
  const height = MARGIN * 2 + topPad + bodyHeight + (longBackEdges ? 48 : 12);
  const width = MARGIN * 2 + layers.length * NODE_WIDTH + (layers.length - 1) * COLUMN_GAP;
  layers.forEach((nodesOfLayer, depth) => {
    const layerHeight = nodesOfLayer.length * NODE_HEIGHT + (nodesOfLayer.length - 1) * ROW_GAP;
    nodesOfLayer.forEach((node, at) => {
      node.x = MARGIN + NODE_WIDTH / 2 + depth * (NODE_WIDTH + COLUMN_GAP);
      node.y = MARGIN + topPad + (bodyHeight - layerHeight) / 2 + NODE_HEIGHT / 2 + at * (NODE_HEIGHT + ROW_GAP);
    });
  });

  const svg = s('svg', {
    class: 'chart service-map',
    viewBox: `0 0 ${width} ${height}`,
    width,
    height,
    role: 'img',
    'aria-label': 'Service dependency map',
  });
  svg.append(
    s(
      'defs',
      null,
      s('marker', { id: 'arrow', viewBox: '0 0 10 10', refX: 9, refY: 5, markerUnits: 'userSpaceOnUse', markerWidth: 11, markerHeight: 11, orient: 'auto-start-reverse' }, s('path', { d: 'M0,0 L10,5 L0,10 z', class: 'arrow-head' })),
      s('marker', { id: 'arrow-error', viewBox: '0 0 10 10', refX: 9, refY: 5, markerUnits: 'userSpaceOnUse', markerWidth: 11, markerHeight: 11, orient: 'auto-start-reverse' }, s('path', { d: 'M0,0 L10,5 L0,10 z', fill: ERROR_COLOR })),
    ),
  );

  const pairs = new Set(edges.map((edge) => `${edge.parent}>${edge.child}`));
  const maxCalls = Math.max(...edges.map((edge) => edge.callCount), 1);
  const edgeGroup = s('g', { class: 'edges' });
  const labelGroup = s('g', { class: 'edge-labels' });
  for (const edge of edges) {
    const from = nodes.get(edge.parent)!;
    const to = nodes.get(edge.child)!;
    const { d, labelX, labelY } = route(from, to, pairs.has(`${edge.child}>${edge.parent}`), bandY);
    const failing = edge.errorCount > 0;
    const strokeWidth = 1.2 + 3 * Math.sqrt(edge.callCount / maxCalls);
    edgeGroup.append(
      s(
        'path',
        {
          class: failing ? 'edge edge-error' : 'edge',
          d,
          'stroke-width': strokeWidth.toFixed(2),
          'marker-end': failing ? 'url(#arrow-error)' : 'url(#arrow)',
          'data-parent': edge.parent,
          'data-child': edge.child,
        },
        s('title', null, `${edge.parent} → ${edge.child}: ${edge.callCount} calls, ${edge.errorCount} errors`),
      ),
    );
    const calls = `${formatCount(edge.callCount)} calls`;
    const errors = failing ? `${formatCount(edge.errorCount)} err` : '';
    const labelWidth = calls.length * 6.6 + (errors ? errors.length * 6.6 + 8 : 0) + 10;
    const label = s('g', { class: 'edge-label', transform: `translate(${labelX.toFixed(1)},${labelY.toFixed(1)})` });
    label.append(
      s('rect', { x: -labelWidth / 2, y: -9, width: labelWidth, height: 18, rx: 9 }),
      s(
        'text',
        { x: 0, y: 0, 'text-anchor': 'middle', 'dominant-baseline': 'central' },
        s('tspan', null, calls),
        errors ? s('tspan', { class: 'edge-errors', dx: 8 }, errors) : null,
      ),
    );
    labelGroup.append(label);
  }

  const nodeGroup = s('g', { class: 'nodes' });
  for (const node of nodes.values()) {
    const color = node.kind === 'service' ? serviceColor(node.name) : KIND_COLORS[node.kind];
    const group = s('g', { class: `node node-${node.kind}`, 'data-name': node.name, 'data-kind': node.kind, style: `--service: ${color}` });
    group.append(
      s('title', null, `${node.name} (${node.kind})\n${node.callsIn} calls in, ${node.callsOut} calls out`),
      nodeShape(node, color),
      s('circle', { cx: node.x - NODE_WIDTH / 2 + 14, cy: node.y - 7, r: 4, fill: color }),
      s('text', { class: 'node-name', x: node.x - NODE_WIDTH / 2 + 24, y: node.y - 7, 'dominant-baseline': 'central' }, truncate(node.name, 19)),
      s('text', { class: 'node-kind', x: node.x - NODE_WIDTH / 2 + 24, y: node.y + 10, 'dominant-baseline': 'central' }, node.kind),
    );
    if (node.kind === 'service') {
      const link = s('a', { href: href(node.name) });
      link.append(group);
      nodeGroup.append(link);
    } else {
      nodeGroup.append(group);
    }
  }
  svg.append(edgeGroup, nodeGroup, labelGroup);
  return svg;
}
